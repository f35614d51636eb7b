#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <sluice/engine/context.hpp>
#include <sluice/engine/detail/names.hpp>
#include <sluice/engine/detail/plan.hpp>
#include <sluice/engine/detail/system.hpp>
#include <sluice/engine/detail/validate.hpp>
#include <sluice/engine/detail/wiring.hpp>
#include <sluice/engine/dispatcher.hpp>
#include <sluice/engine/handler.hpp>
#include <sluice/engine/options.hpp>
#include <sluice/engine/run.hpp>
#include <sluice/engine/stage_ref.hpp>

namespace sluice {

/// The engine-level API: declare stages and subscriptions, then start runs. The fluent builder
/// compiles into this. Declaring is single-threaded (the builder's thread); each declaration is
/// checked when it is made, so an invalid option is rejected before anything runs.
class Engine {
 public:
  Engine() = default;
  /// An engine running a graph's plan, which compile() has validated (its stages carry the
  /// graph's tag, so a Run accepts the builder's Stage objects).
  Engine(detail::OwnerTag owner, detail::Plan plan)
      : plan_(std::move(plan)), owner_(owner.value), validated_(true) {}

  /// A producer: `handler.handle_demand(n, ctx)`, optional handle_info / handle_cancel /
  /// handle_discarded.
  template <class Out, class Handler>
  StageRef<void, Out> producer(std::string name, Handler handler, DispatcherFactory<Out> dispatcher,
                               ProducerOptions options = {}, std::size_t instances = 1) {
    static_assert(handler::HandlesDemand<Handler, Out>,
                  "a producer handler needs handle_demand(std::size_t n, sluice::Context<Out>&)");
    return {declare<void, Out>(std::move(name), StageKind::producer, std::move(handler), options,
                               std::move(dispatcher), instances),
            owner_};
  }

  /// A producer_consumer: `handler.handle_events(span<In>, [SubscriptionId,] ctx)`.
  template <class In, class Out, class Handler>
  StageRef<In, Out> producer_consumer(std::string name, Handler handler,
                                      DispatcherFactory<Out> dispatcher,
                                      ProducerOptions options = {}, std::size_t instances = 1) {
    static_assert(handler::Consumes<Handler, In, Out>,
                  "a producer_consumer handler needs handle_events(std::span<In>, "
                  "sluice::Context<Out>&) (optionally with a SubscriptionId before the context)");
    return {declare<In, Out>(std::move(name), StageKind::producer_consumer, std::move(handler),
                             options, std::move(dispatcher), instances),
            owner_};
  }

  /// A consumer: `handler.handle_events(span<In>, [SubscriptionId,] ctx)`.
  template <class In, class Handler>
  StageRef<In, void> consumer(std::string name, Handler handler, std::size_t instances = 1) {
    static_assert(handler::Consumes<Handler, In, void>,
                  "a consumer handler needs handle_events(std::span<In>, sluice::Context<void>&) "
                  "(optionally with a SubscriptionId before the context)");
    return {declare<In, void>(std::move(name), StageKind::consumer, std::move(handler), {}, {},
                              instances),
            owner_};
  }

  /// Gives a declared stage a restart policy (the builder's StageOptions::restart, max_restarts
  /// and restart_window; engine/DESIGN.md 12). Throws option_error, naming the stage and the
  /// option, for numbers out of range or a handler that cannot be remade.
  template <class In, class Out>
  void supervise(StageRef<In, Out> stage, RestartOptions policy) {
    if (stage.owner() != owner_ || stage.id() >= plan_.stages.size())
      throw option_error("supervise: a StageRef of another engine");
    auto& s = plan_.stages[stage.id()];
    const auto before = s.restart;
    s.restart = policy;
    auto found = detail::stage_problems(s, [](const std::string&) { return false; });
    for (std::size_t k = 0; k < plan_.subscriptions.size() && found.empty(); ++k)
      if (plan_.subscriptions[k].consumer == stage.id())
        found = detail::subscription_problems(plan_, k);  // manual demand refuses a policy
    if (!found.empty()) {
      s.restart = before;
      detail::throw_first(found);
    }
    validated_ = false;
  }

  /// Subscribes every instance of `consumer` to every instance of `producer` (for a partition
  /// dispatcher without an explicit partition, consumer instance i takes partition i).
  template <class CIn, class COut, class PIn, class POut>
  void subscribe(StageRef<CIn, COut> consumer, StageRef<PIn, POut> producer,
                 SubscriptionOptions options = {}) {
    static_assert(!std::is_void_v<CIn>,
                  "the subscribing stage is a producer: only consumers and producer_consumers "
                  "can subscribe");
    static_assert(!std::is_void_v<POut>,
                  "the stage subscribed to is a consumer: only producers and producer_consumers "
                  "can be subscribed to");
    static_assert(
        std::is_same_v<CIn, POut>,
        "event types differ: the consumer's input type must be the producer's output type");
    if (consumer.owner() != owner_ || producer.owner() != owner_)
      throw option_error("subscribe: a StageRef of another engine");
    subscribe_by_id<POut>(consumer.id(), producer.id(), std::move(options));
  }

  /// subscribe() by stage ids, for code that keeps the types itself: the stages' event types
  /// and kinds are checked at run time (option_error) instead of at compile time.
  template <class Event>
  void subscribe_by_id(std::size_t consumer_id, std::size_t producer_id,
                       SubscriptionOptions options) {
    if (consumer_id >= plan_.stages.size() || producer_id >= plan_.stages.size())
      throw option_error("subscribe: unknown stage (a StageRef from another engine?)");
    plan_.subscriptions.push_back(detail::make_subscription_plan<Event>(
        producer_id, consumer_id, plan_.stages[consumer_id], std::move(options)));
    auto found = detail::subscription_problems(plan_, plan_.subscriptions.size() - 1);
    if (!found.empty()) {
      plan_.subscriptions.pop_back();
      detail::throw_first(found);
    }
    validated_ = false;
  }

  /// Checks the topology and starts a run. Throws option_error (every problem, one per line)
  /// before anything runs. Can be called more than once: each run gets fresh copies of the
  /// handlers and dispatchers.
  Run start(RunOptions options = {}) const;

 private:
  template <class In, class Out, class Handler>
  std::size_t declare(std::string name, StageKind kind, Handler handler, ProducerOptions options,
                      DispatcherFactory<detail::EventOf<Out>> dispatcher, std::size_t instances) {
    std::string said;
    auto stage = detail::make_stage_plan<In, Out>(std::move(name), kind, instances, options,
                                                  std::move(handler), std::move(dispatcher), said);
    detail::throw_first(detail::stage_problems(stage, [&](const std::string& n) {
      for (auto& s : plan_.stages)
        if (s.name == n) return true;
      return false;
    }));
    detail::throw_first(detail::dispatcher_problems(stage.name, said));
    plan_.stages.push_back(std::move(stage));
    validated_ = false;
    return plan_.stages.size() - 1;
  }

  detail::Plan plan_;
  std::uint64_t owner_ = detail::new_owner_tag();
  bool validated_ = false;  // the topology of plan_ as it is was checked (compile())
};

inline Run Engine::start(RunOptions options) const {
  detail::Problems found;
  if (!validated_)
    found.add(detail::topology_problems(
        plan_, [](std::size_t) { return true; }, [](std::size_t) { return true; }));
  found.add(detail::run_options_problems(options));
  for (auto& s : plan_.subscriptions) {
    auto& c = plan_.stages[s.consumer];
    auto& p = plan_.stages[s.producer];
    found.add(detail::memory_problems(c.name, p.name, s.options.max_demand,
                                      s.edges->ring_bytes(s.options), c.instances * p.instances));
  }
  found.throw_if_any();
  return Run::start(owner_, plan_, std::move(options));
}

}  // namespace sluice
