#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <typeindex>
#include <utility>
#include <vector>

#include <sluice/engine/detail/assert.hpp>
#include <sluice/engine/detail/cell/cell.hpp>
#include <sluice/engine/detail/edge.hpp>
#include <sluice/engine/detail/fused_steps.hpp>
#include <sluice/engine/detail/names.hpp>
#include <sluice/engine/detail/run_core.hpp>
#include <sluice/engine/dispatcher.hpp>
#include <sluice/engine/handler.hpp>
#include <sluice/engine/metrics.hpp>
#include <sluice/engine/options.hpp>

/// The plan: what a graph is before it runs, as plain data. The builder (sluice::Graph) and the
/// engine API (sluice::Engine) write it; one validator (validate.hpp) checks it; one wiring path
/// (wiring.hpp) turns it into cells and edges when a run starts, and Run::attach adds to it.
/// Each stage's types are erased once, in its CellFactory; each subscription's in its
/// EdgeFactory.
namespace sluice {

/// Makes the dispatcher of one producer instance (each instance has its own).
template <class Event>
using DispatcherFactory = std::function<std::unique_ptr<Dispatcher<Event>>()>;

namespace detail {

struct StagePlan;
struct FusionGroup;

/// Makes the cells of one stage into a run: it knows the stage's handler and event types.
class CellFactory {
 public:
  virtual ~CellFactory() = default;
  /// One cell per instance; `first` is the table number the first one will have.
  virtual std::vector<std::unique_ptr<CellBase>> make(RunCore& core, const StagePlan& stage,
                                                      std::uint32_t first) const = 0;

  // ---- fusion (fusion.hpp, engine/DESIGN.md 10) ----
  /// A function stage (its handler says `fusible`): it may be a member of a fused group.
  virtual bool fusible() const noexcept { return false; }
  /// A consumer or a producer_consumer: it may host a fused group.
  virtual bool can_host() const noexcept { return false; }
  /// Its handler can be remade for a restart (engine/DESIGN.md 12): handler::Restartable.
  virtual bool restartable() const noexcept { return false; }
  /// As a member: its step, in front of `next` (a FusedStep of its output type).
  virtual std::unique_ptr<FusedStepBase> member_step(const StagePlan& stage,
                                                     std::unique_ptr<FusedStepBase> next) const;
  /// As a host: its step, which takes chunks of at most `chunk` events.
  virtual std::unique_ptr<FusedStepBase> host_step(std::int64_t chunk) const;
  /// The factory of `group`'s one cell, asked of the stage that knows both its types: the head
  /// when the host is a consumer (the cell consumes the head's input), the host when it is a
  /// producer_consumer (the members keep its input type; the cell emits its output).
  virtual std::shared_ptr<const CellFactory> group_cells(const FusionGroup& group) const;
};

/// One declared stage.
struct StagePlan {
  std::string name;
  StageKind kind = StageKind::producer;
  std::size_t instances = 1;
  ProducerOptions producer;  // producers and producer_consumers
  std::type_index in = typeid(void), out = typeid(void);
  bool consumes_const = false;  // handle_events takes std::span<const In> (broadcasts need it)
  /// Its handler asks by hand (handler::AsksByHand): its subscriptions have manual demand.
  bool asks_by_hand = false;
  /// Makes each instance's dispatcher: a Dispatcher<Out> (set_dispatcher keeps it so); empty
  /// for a consumer.
  std::function<std::unique_ptr<DispatcherBase>()> make_dispatcher;
  /// The dispatcher as validation sees it (one instance, never run); null for a consumer, or
  /// when its factory failed.
  std::shared_ptr<const DispatcherBase> dispatcher;
  std::shared_ptr<const CellFactory> cells;
  /// It may be fused (engine/DESIGN.md 10): StageOptions::fuse (the engine API never fuses).
  bool fuse = false;
  /// Its dispatcher is the demand dispatcher: with one subscriber, every event goes to it (a
  /// fused member needs that).
  bool demand_dispatcher = false;
  /// In a run: the stage whose cell runs it (a member of a fused group), if any.
  std::optional<std::size_t> fused_into;
  /// When an instance that fails is restarted (engine/DESIGN.md 12).
  RestartOptions restart;
};

/// Gives `stage` (whose events are `Event`s) the dispatchers `factory` makes, and makes the one
/// validation asks. Returns what went wrong, if anything: "" when it worked; the factory's
/// option_error; a missing or null factory.
template <class Event>
std::string set_dispatcher(StagePlan& stage, DispatcherFactory<Event> factory) {
  stage.dispatcher = nullptr;
  stage.make_dispatcher = nullptr;
  if (!factory) return "option dispatcher: none given";
  try {
    stage.dispatcher = factory();
  } catch (const option_error& e) {
    return e.what();
  }
  if (!stage.dispatcher) return "the dispatcher factory returned null";
  stage.make_dispatcher = [f = std::move(factory)]() -> std::unique_ptr<DispatcherBase> {
    return f();
  };
  return {};
}

/// The edges of one subscription, typed by its event: made and connected by wiring.hpp.
class EdgeFactory;

/// One declared subscription: every instance of `consumer` to every instance of `producer`.
struct SubscriptionPlan {
  std::size_t producer = 0, consumer = 0;
  SubscriptionOptions options;
  std::type_index event = typeid(void);
  std::shared_ptr<const EdgeFactory> edges;
};

struct Plan {
  std::vector<StagePlan> stages;
  std::vector<SubscriptionPlan> subscriptions;
};

/// The options of the edges of consumer instance `i`: with a partition dispatcher, instance i
/// takes the i-th partition unless the subscription names one.
inline SubscriptionOptions edge_options(const SubscriptionOptions& o, const DispatcherBase& d,
                                        std::size_t consumer_instance) {
  SubscriptionOptions eo = o;
  if (!eo.partition) eo.partition = d.default_partition(consumer_instance);
  return eo;
}

/// What HandlerCells<In, Out, Handler>::group_cells makes (fusion.hpp).
template <class In, class Out, class Handler>
std::shared_ptr<const CellFactory> group_cells_of(const FusionGroup& group);

/// One instance's dispatcher, made by `stage`'s factory (none for a consumer).
template <class Out>
std::unique_ptr<Dispatcher<EventOf<Out>>> instance_dispatcher(const StagePlan& stage) {
  std::unique_ptr<Dispatcher<EventOf<Out>>> d;
  if constexpr (!std::is_void_v<Out>) {
    auto made = stage.make_dispatcher();
    SLUICE_ASSERT(made && made->selector_type() == typeid(Selector<Out>),
                  "set_dispatcher made it a Dispatcher<Out>");
    d.reset(static_cast<Dispatcher<Out>*>(made.release()));
  }
  return d;
}

template <class In, class Out, class Handler>
class HandlerCells final : public CellFactory {
 public:
  explicit HandlerCells(Handler handler)
      : handler_(std::make_shared<const Handler>(std::move(handler))) {}

  bool fusible() const noexcept override {
    return !std::is_void_v<In> && !std::is_void_v<Out> && FusibleHandler<Handler>;
  }
  bool can_host() const noexcept override { return !std::is_void_v<In>; }
  bool restartable() const noexcept override { return handler::Restartable<Handler>; }
  std::unique_ptr<FusedStepBase> member_step(const StagePlan& stage,
                                             std::unique_ptr<FusedStepBase> next) const override {
    if constexpr (!std::is_void_v<In> && !std::is_void_v<Out> && FusibleHandler<Handler>)
      return std::make_unique<FunctionStep<In, Out, Handler>>(stage.name, *handler_,
                                                              std::move(next));
    else
      return CellFactory::member_step(stage, std::move(next));
  }
  std::unique_ptr<FusedStepBase> host_step(std::int64_t chunk) const override {
    if constexpr (!std::is_void_v<In>)
      return std::make_unique<HostStep<In, Out, Handler>>(*handler_, chunk);
    else
      return CellFactory::host_step(chunk);
  }
  std::shared_ptr<const CellFactory> group_cells(const FusionGroup& group) const override {
    return group_cells_of<In, Out, Handler>(group);
  }
  std::vector<std::unique_ptr<CellBase>> make(RunCore& core, const StagePlan& stage,
                                              std::uint32_t first) const override {
    std::vector<std::unique_ptr<CellBase>> cells;
    for (std::size_t i = 0; i < stage.instances; ++i) {
      auto cell = std::make_unique<Cell<In, Out, Handler>>(
          core, instance_name(stage.name, stage.instances, i), i,
          static_cast<std::uint32_t>(first + i), *handler_, stage.producer,
          instance_dispatcher<Out>(stage));
      if constexpr (handler::Restartable<Handler>)
        if (stage.restart.restart != Restart::never) cell->supervise(stage.restart, handler_);
      cells.push_back(std::move(cell));
    }
    return cells;
  }

 private:
  std::shared_ptr<const Handler> handler_;  // each instance's copy, and a restart's, from it
};

/// A stage's plan for `handler` (its handler's callbacks checked by the caller; the type rules
/// every stage follows, whichever API declares it, here). A producer's dispatcher
/// factory is called once here, for validation's instance: what went wrong with it, if
/// anything, is left in `said` (set_dispatcher).
template <class In, class Out, class Handler>
StagePlan make_stage_plan(std::string name, StageKind kind, std::size_t instances,
                          ProducerOptions producer, Handler handler,
                          DispatcherFactory<EventOf<Out>> dispatcher, std::string& said) {
  static_assert(std::is_void_v<Out> || std::is_nothrow_move_constructible_v<EventOf<Out>>,
                "event types must be nothrow move constructible (events are moved through "
                "buffers and edges that cannot roll back a throwing move)");
  static_assert(std::is_nothrow_destructible_v<Handler>,
                "a stage handler's destructor must not throw (stages are destroyed while a run "
                "ends, where an exception has nowhere to go)");
  StagePlan s;
  s.name = std::move(name);
  s.kind = kind;
  s.instances = instances;
  s.producer = producer;
  s.in = typeid(In);
  s.out = typeid(Out);
  if constexpr (!std::is_void_v<In>) {
    s.consumes_const = handler::ConsumesConst<Handler, In, Out>;
    s.asks_by_hand = handler::AsksByHand<Handler>;
  }
  if constexpr (!std::is_void_v<Out>) said = set_dispatcher<Out>(s, std::move(dispatcher));
  s.cells = std::make_shared<HandlerCells<In, Out, Handler>>(std::move(handler));
  return s;
}

}  // namespace detail
}  // namespace sluice

#include <sluice/engine/detail/fusion.hpp>  // the fusion pass, over the types above
