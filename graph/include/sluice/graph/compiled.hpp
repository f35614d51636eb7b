#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <sluice/engine/engine.hpp>
#include <sluice/engine/run.hpp>
#include <sluice/engine/stage_ref.hpp>
#include <sluice/engine/validate.hpp>
#include <sluice/graph/detail/graph_data.hpp>
#include <sluice/graph/dot.hpp>

namespace sluice {

class Graph;

/// A validated graph, ready to run (any number of times, but see run() for push sources,
/// streams and collect; each run starts from fresh copies of the stages' handlers).
class CompiledGraph {
 public:
  /// Starts a run. A graph with a push source or a stream runs once: its handle and its range
  /// belong to that run, so a second run (at the same time or later, from this compiled graph
  /// or another of the same graph) throws std::logic_error naming the stage; declare the graph
  /// again for another run. A graph with a collect sink runs one run at a time (both would
  /// write its container): a run started before the last one's collect has finished throws
  /// std::logic_error naming the stage.
  Run run(RunOptions options = {}) const {
    detail::RunClaims claims(*graph_);
    Run r = engine_->start(std::move(options));
    claims.dismiss();  // they belong to the run now
    return r;
  }
  std::string to_dot() const { return dot_; }

 private:
  friend class Graph;
  /// Validates `graph` (every problem at once, one per line, each naming the stage and the
  /// option) and makes the engine that runs it.
  explicit CompiledGraph(std::shared_ptr<detail::GraphData> graph) : graph_(std::move(graph)) {
    auto plan = detail::plan_of(*graph_);
    std::vector<std::vector<Problem>> declared;
    for (auto& n : graph_->nodes)
      declared.push_back(n.problems);
    validate(plan, declared).throw_if_any();
    engine_ = std::make_shared<const Engine>(OwnerTag{graph_->owner}, std::move(plan));
    dot_ = detail::to_dot(*graph_);
  }

  std::shared_ptr<detail::GraphData> graph_;
  std::shared_ptr<const Engine> engine_;
  std::string dot_;
};

}  // namespace sluice
