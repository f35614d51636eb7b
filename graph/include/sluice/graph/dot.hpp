#pragma once

#include <string>

#include <sluice/graph/detail/graph_data.hpp>

namespace sluice::detail {

/// The graph as Graphviz DOT: stages (kind, instances, dispatcher), subscriptions (their
/// options), and each fused group as a dashed cluster.
inline std::string to_dot(const GraphData& g) {
  auto escaped = [](const std::string& s) {  // for inside a DOT string
    std::string q;
    for (char c : s) {
      if (c == '"' || c == '\\') q += '\\';
      q += c;
    }
    return q;
  };
  static constexpr const char* kinds[] = {"producer", "producer_consumer", "consumer"};
  std::string dot = "digraph sluice {\n  rankdir=LR;\n  node [shape=box];\n";
  for (auto& n : g.nodes) {
    const auto& s = n.stage;
    std::string label = escaped(s.name) + "\\n" + n.what;  // DOT's \n: a line break
    if (s.instances != 1) label += " x" + std::to_string(s.instances);
    if (s.kind != StageKind::consumer) label += "\\ndispatcher: " + n.dispatcher;
    if (n.options.dynamic) label += "\\ndynamic";
    dot += "  \"" + escaped(s.name) + "\" [label=\"" + label +
           "\", kind=" + kinds[static_cast<int>(s.kind)] + "];\n";
  }
  for (auto& l : g.links) {
    const auto& o = l.options;
    std::string label = "max_demand=" + std::to_string(o.max_demand) +
                        " min_demand=" + std::to_string(o.effective_min_demand());
    if (o.cancel != CancelMode::permanent)
      label += o.cancel == CancelMode::transient ? " cancel=transient" : " cancel=temporary";
    if (o.demand == DemandControl::manual) label += " demand=manual";
    if (o.partition) label += " partition=" + escaped(o.partition->to_string());
    if (o.selector.has_value()) label += " selector";
    dot += "  \"" + escaped(g.nodes[l.producer].stage.name) + "\" -> \"" +
           escaped(g.nodes[l.consumer].stage.name) + "\" [label=\"" + label + "\"];\n";
  }
  // Each fused group (engine/DESIGN.md 10) drawn as a cluster: one cell runs its stages.
  std::size_t k = 0;
  for (const auto& group : fusion_groups(plan_of(g))) {
    dot += "  subgraph cluster_fused" + std::to_string(k++) +
           " {\n    label=\"fused: one cell\";\n    style=dashed;\n";
    for (auto s : group.stages)
      dot += "    \"" + escaped(g.nodes[s].stage.name) + "\";\n";
    dot += "  }\n";
  }
  return dot + "}\n";
}

}  // namespace sluice::detail
