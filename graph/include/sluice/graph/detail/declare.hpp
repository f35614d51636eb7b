#pragma once

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include <sluice/dispatchers/demand.hpp>
#include <sluice/engine/options.hpp>
#include <sluice/engine/plan.hpp>
#include <sluice/engine/validate.hpp>
#include <sluice/graph/detail/graph_data.hpp>
#include <sluice/graph/function_stages.hpp>
#include <sluice/graph/options.hpp>

/// How the builder writes the plan: one stage, one subscription, one dispatcher at a time. Every
/// problem found here is kept for compile(), which reports them all at once.
namespace sluice::detail {

/// Declares a stage of `g` (`In` void for a producer, `Out` void for a consumer) with the demand
/// dispatcher; returns its number.
template <class In, class Out, class Handler>
std::size_t add_stage(GraphData& g, std::string name, StageKind kind, std::string what,
                      Handler handler, StageOptions options) {
  GraphNode n;
  std::string said;
  DispatcherFactory<EventOf<Out>> dispatcher;
  if constexpr (!std::is_void_v<Out>) dispatcher = demand_dispatcher<Out>();
  n.stage = make_stage_plan<In, Out>(std::move(name), kind, options.instances, options.producer(),
                                     std::move(handler), std::move(dispatcher), said);
  n.stage.restart = options.restart_options();
  n.what = std::move(what);
  n.options = std::move(options);
  if (!said.empty()) n.problem("dispatcher", "stage '" + n.stage.name + "': " + said);
  if (kind == StageKind::producer) {  // a producer has no input: its subscription options
    const auto& o = n.options;
    auto nothing = [&](const char* option) {
      n.problem(option, "stage '" + n.stage.name + "': " + producer_subscribes_to_nothing(option));
    };
    if (o.max_demand != default_max_demand) nothing("max_demand");
    if (o.min_demand) nothing("min_demand");
    if (o.cancel != CancelMode::permanent) nothing("cancel");
    if (o.partition) nothing("partition");
    if (o.demand != DemandControl::automatic) nothing("demand");
    if (o.selector.has_value()) nothing("selector");
  }
  if constexpr (is_function_stage<Handler>) {
    n.function_handler = true;
    if (n.options.demand == DemandControl::manual)
      n.problem("demand", "stage '" + n.stage.name + "': " + function_cannot_ask(kind, n.what));
  }
  g.nodes.push_back(std::move(n));
  return g.nodes.size() - 1;
}

/// A subscription of `g` carrying `Event`s (the Stage types have checked both ends).
template <class Event>
void link(GraphData& g, std::size_t producer, std::size_t consumer, SubscriptionOptions options) {
  g.links.push_back(make_subscription_plan<Event>(producer, consumer, g.nodes[consumer].stage,
                                                  std::move(options)));
}

/// Gives stage `id` of `g` the dispatchers `factory` makes (`name` for DOT). A factory that
/// cannot be made (invalid dispatcher options: its option_error) is reported by compile(), and
/// the stage's subscriptions then say nothing more.
template <class Event, class MakeFactory>
void use_dispatcher(GraphData& g, std::size_t id, std::string name, MakeFactory&& make) {
  auto& node = g.nodes[id];
  node.dispatcher = std::move(name);
  std::string said;
  try {
    said = set_dispatcher<Event>(node.stage, DispatcherFactory<Event>(make()));
  } catch (const option_error& e) {
    said = e.what();
    node.stage.dispatcher = nullptr;
  }
  if (!said.empty()) node.problem("dispatcher", "stage '" + node.stage.name + "': " + said);
}

}  // namespace sluice::detail
