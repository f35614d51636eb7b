#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>

#include <sluice/engine/options.hpp>
#include <sluice/engine/run.hpp>
#include <sluice/graph/compiled.hpp>
#include <sluice/graph/detail/declare.hpp>
#include <sluice/graph/detail/graph_data.hpp>
#include <sluice/graph/dot.hpp>
#include <sluice/graph/options.hpp>
#include <sluice/graph/push_source.hpp>
#include <sluice/graph/sources.hpp>
#include <sluice/graph/stage.hpp>

namespace sluice {

/// A graph under construction: declare sources, then chain stages from them. Nothing runs until
/// compile() (validation, all problems at once) and run().
class Graph {
 public:
  Graph() : data_(std::make_shared<detail::GraphData>()) {}

  /// A source from sluice::from_range or sluice::from_generator.
  template <class Src>
  requires requires { Src::single_instance; }
  auto source(std::string name, Src src, StageOptions options = {})
      -> Stage<void, typename Src::Out> {
    using Out = typename Src::Out;
    const auto instances = options.instances;
    const auto id = detail::add_stage<void, Out>(*data_, std::move(name), StageKind::producer,
                                                 Src::what, std::move(src), std::move(options));
    auto& node = data_->nodes[id];
    if (Src::single_instance && instances != 1)
      node.problem("instances", "stage '" + node.stage.name +
                                    "': option instances must be 1 for from_range (each "
                                    "instance would emit the whole range), got: " +
                                    std::to_string(instances));
    return Stage<void, Out>(data_, id);
  }

  /// A source written as a class with GenStage's callbacks: `handle_demand(n, Context<Out>&)`,
  /// optionally handle_info, handle_cancel, handle_subscribe, handle_discarded.
  template <class Out, class Handler>
  Stage<void, Out> source(std::string name, Handler handler, StageOptions options = {}) {
    return Stage<void, Out>(
        data_, detail::add_stage<void, Out>(*data_, std::move(name), StageKind::producer, "class",
                                            std::move(handler), std::move(options)));
  }

  /// A source fed by application threads through the returned handle: push blocks while
  /// `capacity` events wait (back-pressure), close() ends the stream (so does destroying the
  /// handle's last copy). The graph then runs once (CompiledGraph::run).
  /// `capacity` is 1 to 2^30 (compile() reports any other).
  template <class T>
  std::pair<PushHandle<T>, Stage<void, T>> push_source(std::string name,
                                                       std::ptrdiff_t capacity = 1000,
                                                       StageOptions options = {}) {
    // An invalid capacity is reported by compile(); the state is made with a valid one (the
    // semaphore counting its free places holds at most max_capacity).
    const auto problem = detail::capacity_problem(name, capacity);
    auto state = std::make_shared<detail::PushState<T>>(problem ? std::ptrdiff_t{1} : capacity);
    const auto instances = options.instances;
    auto keeper = std::make_shared<const detail::Closer<detail::PushState<T>>>(state);
    const auto id = detail::add_stage<void, T>(
        *data_, std::move(name), StageKind::producer, "push_source",
        detail::PushSource<T>{state, std::move(keeper)}, std::move(options));
    auto& node = data_->nodes[id];
    if (problem) node.problem("capacity", *problem);
    if (instances != 1)
      node.problem("instances", "stage '" + node.stage.name +
                                    "': option instances must be 1 for a push source, got: " +
                                    std::to_string(instances));
    data_->claims.push_back({"stage '" + node.stage.name +
                             "' is a push source, fed by one handle, so its graph runs once, "
                             "and a run of it has already started (declare the graph again for "
                             "another run)"});
    return {PushHandle<T>(state), Stage<void, T>(data_, id)};
  }

  /// Validates the whole graph and prepares it to run. Throws option_error listing every
  /// problem, one per line, each naming the stage and the option.
  CompiledGraph compile() const { return CompiledGraph(data_); }

  /// compile() then run().
  Run run(RunOptions options = {}) const { return compile().run(std::move(options)); }

  /// The topology as Graphviz DOT: stages (kind, instances, dispatcher) and subscriptions (their
  /// options).
  std::string to_dot() const { return detail::to_dot(*data_); }

 private:
  std::shared_ptr<detail::GraphData> data_;
};

}  // namespace sluice
