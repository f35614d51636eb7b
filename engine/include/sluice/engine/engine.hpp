#pragma once

#include <any>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeindex>
#include <utility>
#include <vector>

#include <sluice/engine/context.hpp>
#include <sluice/engine/detail/cell/cell.hpp>
#include <sluice/engine/detail/edge.hpp>
#include <sluice/engine/detail/executor.hpp>
#include <sluice/engine/detail/run_core.hpp>
#include <sluice/engine/detail/tbb_backend.hpp>
#include <sluice/engine/diagnosis.hpp>
#include <sluice/engine/dispatcher.hpp>
#include <sluice/engine/metrics.hpp>
#include <sluice/engine/options.hpp>

#include <unistd.h>

namespace sluice {

/// Makes the dispatcher of one producer instance (each instance has its own).
template <class Event>
using DispatcherFactory = std::function<std::unique_ptr<Dispatcher<Event>>()>;

/// How a run executes.
struct RunOptions {
  /// Threads of the run's oneTBB arena; 0 means oneTBB's default (the cores this process may
  /// use).
  int concurrency = 0;
  /// Run a cell made runnable by the current one next, on the same thread (no new task).
  bool direct_handoff = true;
  /// Messages a cell handles before it yields to others.
  std::size_t quantum = 64;
  /// End the whole run at the first stage failure (otherwise only cancel modes propagate it).
  bool fail_fast = true;
  /// Deterministic mode for tests: nothing runs until Run::run_until_idle() is called, and then
  /// everything runs on the calling thread in scheduling order.
  bool manual = false;
  /// Where warnings and errors go (GenStage's log lines). Default: standard error.
  std::function<void(LogLevel, std::string_view)> logger = {};
};

/// A typed handle to a declared stage: `In` is what it consumes (void for producers), `Out` what
/// it emits (void for consumers).
template <class In, class Out>
class StageRef {
 public:
  using input_type = In;
  using output_type = Out;
  StageRef() = default;
  std::size_t id() const noexcept { return id_; }
  /// The engine (or graph) that declared it: a Run refuses the stages of another.
  std::uint64_t owner() const noexcept { return owner_; }

 private:
  friend class Engine;
  friend class Run;
  StageRef(std::size_t id, std::uint64_t owner) : id_(id), owner_(owner) {}
  std::size_t id_ = SIZE_MAX;
  std::uint64_t owner_ = 0;
};

namespace detail {

/// A fresh tag telling apart the stages of different engines and graphs (StageRef::owner, the
/// builder Stage's owner()).
inline std::uint64_t new_owner_tag() {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);  // only uniqueness matters: no ordering
}
/// The owner an Engine compiled from a graph takes (the graph's, so its stages are accepted).
struct OwnerTag {
  std::uint64_t value;
};

/// `s` with its control characters escaped (\n, \r, \t, \xNN): stage names in one-line reports.
inline std::string escape_controls(const std::string& s) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u != 0x7f) {
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 0xf];
    }
  }
  return out;
}

/// Refuses an empty stage name, and one with control characters (a line break would split the
/// one-problem-per-line reports and the logs; shown escaped).
inline void check_stage_name(const std::string& name) {
  if (name.empty()) throw option_error("a stage needs a non-empty name");
  const std::string shown = escape_controls(name);
  if (shown != name)
    throw option_error("stage '" + shown +
                       "': option name must not contain control characters (shown escaped)");
}

/// Refuses 0 instances, and more than max_instances (each instance is a cell with an edge to
/// every instance of its producers and consumers: far beyond this, memory runs out first).
inline void check_instances(const std::string& name, std::size_t instances) {
  if (instances == 0)
    throw option_error("stage '" + name + "': option instances must be at least 1, got: 0");
  if (instances > max_instances)
    throw option_error("stage '" + name + "': option instances must be at most " +
                       std::to_string(max_instances) + ", got: " + std::to_string(instances));
}

inline std::string instance_name(const std::string& stage, std::size_t instances, std::size_t i) {
  return instances == 1 ? stage : stage + "#" + std::to_string(i);
}

/// The options of one edge: with a partition dispatcher, consumer instance i takes the i-th
/// partition unless the subscription names one.
inline SubscriptionOptions edge_options(SubscriptionOptions o, const DispatcherBase& probe,
                                        std::size_t consumer_instance) {
  if (!o.partition) o.partition = probe.default_partition(consumer_instance);
  return o;
}

/// Every check of one subscription that does not need the rest of the graph: the options'
/// ranges, the selector's type, a sharing dispatcher's const events, the dispatcher's own
/// validate() for each consumer instance. Throws option_error naming both stages.
template <class Event>
void check_subscription(const std::string& consumer, std::size_t consumer_instances,
                        bool takes_const_events, const std::string& producer,
                        const DispatcherBase& probe, const SubscriptionOptions& o) {
  const std::string where = "stage '" + consumer + "' subscribing to '" + producer + "': ";
  if (o.max_demand < 1)
    throw option_error(where + "option max_demand must be equal to or greater than 1, got: " +
                       std::to_string(o.max_demand));
  if (o.max_demand > (std::int64_t{1} << 30))
    throw option_error(
        where + "option max_demand must be at most 2^30, got: " + std::to_string(o.max_demand));
  if (o.min_demand && *o.min_demand < 0)
    throw option_error(where + "option min_demand must be equal to or greater than 0, got: " +
                       std::to_string(*o.min_demand));
  if (o.min_demand && *o.min_demand >= o.max_demand)
    throw option_error(where + "option min_demand must be equal to or less than " +
                       std::to_string(o.max_demand - 1) +
                       ", got: " + std::to_string(*o.min_demand));
  if (o.selector.has_value() && o.selector.type() != typeid(Selector<Event>))
    throw option_error(where +
                       "option selector must be made with sluice::selector<Event>(predicate) for "
                       "this producer's event type");
  if (probe.shares_events() && !takes_const_events)
    throw option_error(where + "the " + probe.name() +
                       " dispatcher shares each event between its consumers, so handle_events "
                       "must take std::span<const T>");
  for (std::size_t ci = 0; ci < consumer_instances; ++ci) {
    const std::string cname = instance_name(consumer, consumer_instances, ci);
    SubscriberInfo info{0, cname, edge_options(o, probe, ci), ci};
    try {
      probe.validate(info);
    } catch (const option_error& e) {
      throw option_error("stage '" + cname + "' subscribing to '" + producer + "': " + e.what());
    }
  }
}

/// What a run keeps of each edge: the edge itself and how to read its metrics.
struct EdgeRecord {
  std::shared_ptr<void> edge;
  std::function<EdgeMetrics()> metrics;
};

/// Makes the edge between two cells and records it; the caller connects its two ends.
template <class Event>
Edge<Event>* make_edge(std::uint32_t producer_cell, std::uint32_t consumer_cell,
                       const std::string& producer, const std::string& consumer,
                       const SubscriptionOptions& eo, std::vector<EdgeRecord>& edges) {
  auto edge = std::make_shared<Edge<Event>>(static_cast<std::size_t>(eo.max_demand), producer_cell,
                                            consumer_cell, eo.demand == DemandControl::manual);
  EdgeRecord r;
  r.metrics = [e = edge.get(), producer, consumer,
               part = eo.partition ? eo.partition->to_string() : std::string()] {
    EdgeMetrics m;
    m.producer = producer;
    m.consumer = consumer;
    m.sent = e->pushed_approx();
    m.received = e->consumed_approx();
    m.credit = e->credit_approx();
    m.asked = e->asked_approx();
    m.manual_demand = e->manual();
    m.queued = e->queued_approx();
    m.partition = part;
    return m;
  };
  auto* raw = edge.get();
  r.edge = std::move(edge);
  edges.push_back(std::move(r));
  return raw;
}

/// This machine's physical memory in bytes (0: unknown).
inline std::uint64_t physical_memory() noexcept {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0)
    return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page);
#endif
  return 0;
}

/// "" if `edges` edges of `ring_bytes` each fit in this machine's memory; else the problem,
/// naming the subscription.
inline std::string ring_memory_problem(const std::string& consumer, const std::string& producer,
                                       std::int64_t max_demand, std::size_t ring_bytes,
                                       std::size_t edges) {
  const auto memory = physical_memory();
  const double need = static_cast<double>(ring_bytes) * static_cast<double>(edges);
  if (memory == 0 || need <= static_cast<double>(memory)) return {};
  constexpr double mib = 1024.0 * 1024.0;
  return "stage '" + consumer + "' subscribing to '" + producer + "': max_demand " +
         std::to_string(max_demand) + " needs " +
         std::to_string(static_cast<std::uint64_t>(need / mib)) +
         " MiB of edge buffers, more than this machine's memory (" +
         std::to_string(static_cast<std::uint64_t>(static_cast<double>(memory) / mib)) +
         " MiB); lower max_demand";
}

/// A consumer calling `f(event)` for each event (Run::attach with a function; the builder's
/// for_each). It reads an edge's own events (moved from) or a broadcast's shared batch.
template <class In, class F>
struct EachHandler {
  F f;
  void handle_events(std::span<In> in, Context<void>&) {
    for (auto& e : in)
      f(std::move(e));
  }
  void handle_events(std::span<const In> in,
                     Context<void>&) requires std::invocable<F&, const In&> {
    for (auto& e : in)
      f(e);
  }
};

}  // namespace detail

class Engine;

/// A running (or finished) graph. Destroying it cancels the run and waits for it.
class Run {
 public:
  Run(Run&&) noexcept = default;
  Run& operator=(Run&&) noexcept = delete;
  ~Run() {
    if (!core_) return;
    // Engine::start threw while setting the run up (a handler's copy, an edge's allocation):
    // nothing was scheduled, so there is nothing to cancel or wait for.
    if (!core_->started()) return;
    if (!manual_) {
      core_->request_cancel();
      core_->wait_done();
      tbb_->wait_for_tasks();
    }
    auto& cells = core_->cells();
    for (std::size_t i = 0; i < cells.size(); ++i)
      cells[i].close_waker();
    if (tbb_) tbb_->wait_for_tasks();  // a wake that came in before the wakers closed
  }

  /// Blocks until every stage has finished, then rethrows the first stage failure (a
  /// stage_error naming the stage). Any thread but a stage's; blocks without spinning.
  void wait() {
    settle_down();
    if (manual_ && !core_->done())
      throw std::logic_error("sluice: manual run is idle but not finished (it waits for input)");
    if (auto e = core_->error()) std::rethrow_exception(e);
  }

  /// Asks every stage to stop soon; events in flight are discarded and counted as lost.
  /// Any thread, a stage's included; does not block.
  void request_cancel() { core_->request_cancel(); }

  /// What cancel() found when the run had stopped.
  struct CancelReport {
    std::uint64_t undelivered = 0;  ///< emitted and never handed to a consumer
    std::uint64_t dropped = 0;      ///< discarded by full buffers and queues before the cancel
    Metrics metrics;
  };

  /// Stops every stage soon and waits until they have: events in flight are discarded and
  /// reported. Does not rethrow stage failures (wait() does). Any thread but a stage's.
  CancelReport cancel() {
    core_->request_cancel();
    settle_down();
    CancelReport r;
    r.metrics = metrics();
    r.undelivered = r.metrics.undelivered();
    for (auto& s : r.metrics.stages)
      r.dropped += s.dropped;
    return r;
  }

  /// Stops the sources (handle_demand is no longer called; events they hold are still
  /// dispatched; a source with `handle_drain(ctx)` ends its own way, as a push source, which
  /// closes its stream and delivers what was pushed), lets everything in flight reach the
  /// consumers, and waits for the run to end; then rethrows the first stage failure, like
  /// wait(). A `dynamic` producer_consumer with no consumer at that point stops at once (what it
  /// holds could reach nobody; it is counted in Metrics::undelivered). Any thread but a stage's.
  void drain() {
    auto& cells = core_->cells();
    for (std::size_t i = 0; i < cells.size(); ++i)
      if (cells[i].kind() != StageKind::consumer)  // producer_consumers: see Cell::begin_drain
        cells[i].post_external({detail::ExternalCommand::Kind::drain, std::any{}});
    wait();
  }

  /// True once every stage has finished. Any thread.
  bool done() const noexcept { return core_->done(); }

  /// Per stage and per edge counters. Any thread, while running or after.
  Metrics metrics() const;

  /// Which stage waits on what, edge by edge (zero demand, a full buffer, accumulate mode, a
  /// source waiting for an external push, a busy consumer), from a fresh metrics() snapshot.
  /// Ask for it when a run makes no progress. Any thread.
  Diagnosis diagnose() const { return sluice::diagnose(metrics()); }

  /// Delivers `message` to the stage's handle_info as soon as it runs (GenStage: a plain message
  /// sent to the stage). `stage`: the engine's StageRef or the builder's Stage. Any thread;
  /// lock-free; does not wait.
  template <class S>
  requires requires(const S& s) {
    { s.id() } -> std::convertible_to<std::size_t>;
  }
  void send_info(const S& stage, std::any message, std::size_t instance = 0) {
    cell(id_in_run(stage, "send_info"), instance)
        .post_external({detail::ExternalCommand::Kind::send_info, std::move(message)});
  }

  /// Delivers `message` to the stage's handle_info after the events it has buffered at that
  /// moment have been dispatched (GenStage async_info/2). Any thread; lock-free; does not wait.
  template <class S>
  requires requires(const S& s) {
    { s.id() } -> std::convertible_to<std::size_t>;
  }
  void async_info(const S& stage, std::any message, std::size_t instance = 0) {
    cell(id_in_run(stage, "async_info"), instance)
        .post_external({detail::ExternalCommand::Kind::async_info, std::move(message)});
  }

  /// Switches a producer between forward and accumulate demand (GenStage demand/2). Any thread.
  template <class S>
  requires requires(const S& s) {
    typename S::input_type;
    { s.id() } -> std::convertible_to<std::size_t>;
  }
  void set_demand_mode(const S& stage, DemandMode mode, std::size_t instance = 0) {
    static_assert(std::is_void_v<typename S::input_type>,
                  "set_demand_mode: only a producer (a source) has a demand mode");
    cell(id_in_run(stage, "set_demand_mode"), instance)
        .post_external({detail::ExternalCommand::Kind::demand_mode, std::any{}, mode});
  }

  /// Attaches a new consumer stage to `producer` while the run goes on (GenStage's dynamic
  /// subscribe, `sync_subscribe`): `name` with `instances` instances, each subscribed to every
  /// instance of the producer with `options`. `handler` is a consumer class
  /// (`handle_events(std::span<T>, Context<void>&)` and GenStage's other callbacks) or a function
  /// called with each event. A broadcast's late subscriber gets the events dispatched after it
  /// joined; a partition's takes `options.partition`.
  ///
  /// Returns the new stage, for detach(), send_info() and the metrics. Throws option_error
  /// (naming the stages and the option) for an invalid subscription, and std::logic_error once
  /// the run has ended. A producer that has already stopped ends the new subscription at once
  /// with its reason. A dispatcher that refuses it (a partition already taken) ends it with
  /// Reason::refused: the new stage then finishes, and its metrics say why.
  /// Any thread but a stage's; takes the run's stage-table lock (never taken on the event path).
  template <class P, class Handler>
  requires requires(const P& p) {
    typename P::output_type;
    { p.id() } -> std::convertible_to<std::size_t>;
  }
  StageRef<typename P::output_type, void> attach(const P& producer, std::string name,
                                                 Handler handler, SubscriptionOptions options = {},
                                                 std::size_t instances = 1);

  /// Cancels every subscription of `stage` with `reason` (GenStage's cancel/2 from the consumer
  /// side) and waits until it has finished: once this returns its handler is not called again.
  /// Events it had not handled are discarded and counted (Metrics::undelivered). Its cancel mode
  /// does not keep it alive: with no subscription left it finishes. A producer whose last
  /// subscriber leaves stops, unless it is `dynamic`. Works for declared and attached stages.
  /// Any thread but a stage's.
  template <class S>
  requires requires(const S& s) {
    typename S::input_type;
    { s.id() } -> std::convertible_to<std::size_t>;
  }
  void detach(const S& stage, Reason reason = Reason::normal()) {
    static_assert(!std::is_void_v<typename S::input_type>,
                  "detach: a producer has no subscription to cancel");
    const auto c = cells_of(id_in_run(stage, "detach"));
    for (auto i = c.first; i < c.first + c.count; ++i)
      core_->cells()[i].post_external(
          {detail::ExternalCommand::Kind::cancel_inputs, std::any(reason)});
    if (manual_) {
      manual_->run_until_idle();
      return;
    }
    for (auto i = c.first; i < c.first + c.count; ++i)
      core_->cells()[i].wait_finished();
  }

  /// A stage of this run as the run knows it: its name, kind and number of instances.
  struct StageSummary {
    std::string name;
    StageKind kind;
    std::size_t instances;
  };
  /// Describes `stage` (the engine's StageRef or the builder's Stage, declared or attached).
  /// Throws option_error for a stage of another graph, naming `caller` (a helper that attaches
  /// to a stage, like attach_stream, passes its own name). Any thread.
  template <class S>
  requires requires(const S& s) {
    { s.id() } -> std::convertible_to<std::size_t>;
  }
  StageSummary describe(const S& stage, const char* caller = "describe") const {
    const auto id = id_in_run(stage, caller);
    const auto count = cells_of(id).count;
    std::lock_guard lock(table_->mutex);
    const auto& entry = table_->stages[id];
    return {entry.name, entry.kind, count};
  }

  /// Manual mode only: runs scheduled cells on this thread until none is runnable.
  std::size_t run_until_idle(std::size_t limit = SIZE_MAX) {
    return manual_->run_until_idle(limit);
  }

 private:
  friend class Engine;
  Run() = default;

  /// A stage's cells: consecutive numbers in the cell table.
  struct StageCells {
    std::uint32_t first = 0, count = 0;
  };
  /// What attach needs to know of each stage.
  struct StageEntry {
    std::string name;
    StageKind kind;
    std::type_index out = typeid(void);
    std::shared_ptr<const DispatcherBase> probe;  // null for consumers
    std::vector<std::uint32_t> cells;
  };
  /// The stages and edges; attach() adds to them while other threads read them.
  struct Table {
    std::mutex mutex;  // attach and metrics; never on the event path
    std::vector<StageEntry> stages;
    std::vector<detail::EdgeRecord> edges;
    detail::StableTable<StageCells> cells;  // lock-free lookups (send_info, detach)
  };

  std::unique_ptr<detail::TbbExecutor> tbb_;
  std::unique_ptr<detail::ManualExecutor> manual_;
  std::unique_ptr<detail::RunCore> core_;
  std::unique_ptr<Table> table_ = std::make_unique<Table>();
  std::uint64_t owner_ = 0;  // the Engine's (or graph's) tag: its stages are this run's

  /// The stage's id, once it is known to be one of this run's (a StageRef of another engine or
  /// a Stage of another graph would name another stage here, or none).
  template <class S>
  std::size_t id_in_run(const S& stage, const char* what) const {
    if constexpr (requires {
                    { stage.owner() } -> std::convertible_to<std::uint64_t>;
                  })
      if (stage.owner() != owner_)
        throw option_error(std::string(what) +
                           ": the stage belongs to another graph (or engine) than this run's");
    return stage.id();
  }

  StageCells cells_of(std::size_t stage) const {
    if (stage >= table_->cells.size()) throw std::out_of_range("sluice: no such stage in this run");
    return table_->cells[stage];
  }

  /// Until every stage has finished (manual mode: until nothing is runnable).
  void settle_down() {
    if (manual_) {
      manual_->run_until_idle();
    } else {
      core_->wait_done();
      tbb_->wait_for_tasks();
    }
  }

  detail::CellBase& cell(std::size_t stage, std::size_t instance) {
    const auto c = cells_of(stage);
    if (instance >= c.count) throw std::out_of_range("sluice: no such stage instance in this run");
    return core_->cells()[c.first + instance];
  }
};

/// The engine-level API: declare stages and subscriptions, then start runs. The fluent builder
/// compiles into this. Declaring is single-threaded (the builder's thread); validation happens at
/// each call, so an invalid option is rejected before anything runs.
class Engine {
 public:
  Engine() = default;
  /// An engine whose stages are a graph's (the builder compiles into it with the graph's tag,
  /// so a Run accepts the builder's Stage objects).
  explicit Engine(detail::OwnerTag owner) : owner_(owner.value) {}

  /// A producer: `handler.handle_demand(n, ctx)`, optional handle_info / handle_cancel /
  /// handle_discarded.
  template <class Out, class Handler>
  StageRef<void, Out> producer(std::string name, Handler handler, DispatcherFactory<Out> dispatcher,
                               ProducerOptions options = {}, std::size_t instances = 1) {
    static_assert(std::is_nothrow_move_constructible_v<Out>,
                  "event types must be nothrow move constructible (events are moved through "
                  "buffers and edges that cannot roll back a throwing move)");
    static_assert(handler::HandlesDemand<Handler, Out>,
                  "a producer handler needs handle_demand(std::size_t n, sluice::Context<Out>&)");
    check_name_and_instances(name, instances);
    check_producer_options(name, options, false);
    if (!dispatcher) throw option_error("stage '" + name + "': option dispatcher: none given");
    return StageRef<void, Out>(
        add_stage<void, Out, Handler>(std::move(name), std::move(handler), options,
                                      std::move(dispatcher), instances, StageKind::producer),
        owner_);
  }

  /// A producer_consumer: `handler.handle_events(span<In>, [SubscriptionId,] ctx)`.
  template <class In, class Out, class Handler>
  StageRef<In, Out> producer_consumer(std::string name, Handler handler,
                                      DispatcherFactory<Out> dispatcher,
                                      ProducerOptions options = {}, std::size_t instances = 1) {
    static_assert(std::is_nothrow_move_constructible_v<Out>,
                  "event types must be nothrow move constructible (events are moved through "
                  "buffers and edges that cannot roll back a throwing move)");
    static_assert(handler::Consumes<Handler, In, Out>,
                  "a producer_consumer handler needs handle_events(std::span<In>, "
                  "sluice::Context<Out>&) (optionally with a SubscriptionId before the context)");
    check_name_and_instances(name, instances);
    check_producer_options(name, options, true);
    if (!dispatcher) throw option_error("stage '" + name + "': option dispatcher: none given");
    return StageRef<In, Out>(
        add_stage<In, Out, Handler>(std::move(name), std::move(handler), options,
                                    std::move(dispatcher), instances, StageKind::producer_consumer),
        owner_);
  }

  /// A consumer: `handler.handle_events(span<In>, [SubscriptionId,] ctx)`.
  template <class In, class Handler>
  StageRef<In, void> consumer(std::string name, Handler handler, std::size_t instances = 1) {
    static_assert(handler::Consumes<Handler, In, void>,
                  "a consumer handler needs handle_events(std::span<In>, sluice::Context<void>&) "
                  "(optionally with a SubscriptionId before the context)");
    check_name_and_instances(name, instances);
    return StageRef<In, void>(
        add_stage<In, void, Handler>(std::move(name), std::move(handler), ProducerOptions{},
                                     DispatcherFactory<char>{}, instances, StageKind::consumer),
        owner_);
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

  /// subscribe() by stage ids, for code that keeps the types itself (the graph builder): the
  /// stages' event types and kinds are checked at run time (option_error) instead of at compile
  /// time.
  template <class Event>
  void subscribe_by_id(std::size_t consumer_id, std::size_t producer_id,
                       SubscriptionOptions options) {
    auto& c = stage(consumer_id, "subscribe");
    auto& p = stage(producer_id, "subscribe");
    if (c.kind == StageKind::producer)
      throw option_error("stage '" + c.name + "' is a producer: it cannot subscribe to '" + p.name +
                         "'");
    if (p.kind == StageKind::consumer)
      throw option_error("stage '" + c.name + "' cannot subscribe to '" + p.name + "', a consumer");
    if (c.in != typeid(Event) || p.out != typeid(Event))
      throw option_error("stage '" + c.name + "' subscribing to '" + p.name +
                         "': event types differ");
    detail::check_subscription<Event>(c.name, c.instances, c.takes_const_events, p.name,
                                      *probes_[producer_id], options);
    for (auto& s : subs_)
      if (s.consumer == consumer_id && s.producer == producer_id)
        throw option_error("stage '" + c.name + "': already subscribed to '" + p.name + "'");
    Sub s;
    s.consumer = consumer_id;
    s.producer = producer_id;
    s.options = options;
    s.ring_bytes = detail::Edge<Event>::ring_bytes(static_cast<std::size_t>(options.max_demand),
                                                   options.demand == DemandControl::manual);
    s.wire = [](detail::RunCore& core, const std::vector<std::uint32_t>& pcells,
                const std::vector<std::uint32_t>& ccells, const Decl& pd, const Decl& cd,
                const DispatcherBase& probe, const SubscriptionOptions& o,
                std::vector<detail::EdgeRecord>& edges) {
      for (std::size_t ci = 0; ci < ccells.size(); ++ci) {
        const SubscriptionOptions eo = detail::edge_options(o, probe, ci);
        const auto cname = detail::instance_name(cd.name, cd.instances, ci);
        for (std::size_t pi = 0; pi < pcells.size(); ++pi) {
          const auto pname = detail::instance_name(pd.name, pd.instances, pi);
          auto* edge = detail::make_edge<Event>(pcells[pi], ccells[ci], pname, cname, eo, edges);
          dynamic_cast<detail::OutPort<Event>&>(core.cells()[pcells[pi]])
              .add_subscriber(edge, cname, eo, ci);
          dynamic_cast<detail::InPort<Event>&>(core.cells()[ccells[ci]])
              .add_subscription(edge, pname, eo);
        }
      }
    };
    subs_.push_back(std::move(s));
  }

  /// Checks the topology and starts a run. Throws option_error (every problem, one per line)
  /// before anything runs. Can be called more than once: each run gets fresh copies of the
  /// handlers and dispatchers.
  Run start(RunOptions options = {}) const;

  /// The topology problems start() would report (unsubscribed consumers, producers nobody
  /// consumes, cycles, dispatcher checks), one per entry; empty if the graph can run.
  std::vector<std::string> problems() const;

  /// The declared stage's name (for tools that describe a graph).
  const std::string& name_of(std::size_t stage_id) const { return decls_.at(stage_id).name; }

 private:
  struct Decl {
    std::string name;
    StageKind kind;
    std::size_t instances;
    bool takes_const_events = false;  // handle_events takes std::span<const In>
    bool dynamic = false;             // ProducerOptions::dynamic
    std::type_index in = typeid(void), out = typeid(void);
    // Makes one cell per instance into the run.
    std::function<void(detail::RunCore&, std::vector<std::uint32_t>&)> make;
  };
  struct Sub {
    std::size_t consumer, producer;
    SubscriptionOptions options;
    std::size_t ring_bytes = 0;  // one edge's rings, once the stream has gone round them
    std::function<void(detail::RunCore&, const std::vector<std::uint32_t>&,
                       const std::vector<std::uint32_t>&, const Decl&, const Decl&,
                       const DispatcherBase&, const SubscriptionOptions&,
                       std::vector<detail::EdgeRecord>&)>
        wire;
  };

  /// The subscribers each instance of `producer` will have, in the order the run wires them.
  std::vector<std::pair<SubscriberInfo, std::string>> subscribers_of(std::size_t producer) const {
    std::vector<std::pair<SubscriberInfo, std::string>> out;
    for (auto& s : subs_) {
      if (s.producer != producer) continue;
      auto& c = decls_[s.consumer];
      for (std::size_t ci = 0; ci < c.instances; ++ci)
        out.emplace_back(SubscriberInfo{static_cast<SubscriberId>(out.size()),
                                        {},
                                        detail::edge_options(s.options, *probes_[producer], ci),
                                        ci},
                         detail::instance_name(c.name, c.instances, ci));
    }
    for (auto& [info, name] : out)
      info.consumer = name;  // the names no longer move
    return out;
  }

  Decl& stage(std::size_t id, const char* what) {
    if (id >= decls_.size())
      throw option_error(std::string(what) + ": unknown stage (a StageRef from another engine?)");
    return decls_[id];
  }

  void check_name_and_instances(const std::string& name, std::size_t instances) const {
    detail::check_stage_name(name);
    for (auto& d : decls_)
      if (d.name == name) throw option_error("stage '" + name + "': name already used");
    detail::check_instances(name, instances);
  }

  static void check_producer_options(const std::string& name, const ProducerOptions& o,
                                     bool producer_consumer) {
    if (o.buffer_size && *o.buffer_size <= 0)
      throw option_error("stage '" + name + "': option buffer_size must be greater than 0, got: " +
                         std::to_string(*o.buffer_size));
    if (producer_consumer && o.demand_mode != DemandMode::forward)
      throw option_error("stage '" + name +
                         "': option demand_mode: only producers have a demand mode (accumulate)");
  }

  template <class In, class Out, class Handler, class DispOut>
  std::size_t add_stage(std::string name, Handler handler, ProducerOptions options,
                        DispatcherFactory<DispOut> dispatcher, std::size_t instances,
                        StageKind kind) {
    using OutEvent = std::conditional_t<std::is_void_v<Out>, char, Out>;
    static_assert(std::is_void_v<Out> || std::is_same_v<DispOut, Out>);
    static_assert(std::is_nothrow_destructible_v<Handler>,
                  "a stage handler's destructor must not throw (stages are destroyed while a run "
                  "ends, where an exception has nowhere to go)");
    Decl d;
    d.name = name;
    d.kind = kind;
    d.instances = instances;
    if constexpr (!std::is_void_v<In>)
      d.takes_const_events = handler::ConsumesConst<Handler, In, Out>;
    d.in = typeid(In);
    d.out = typeid(Out);
    d.dynamic = options.dynamic;
    d.make = [name, handler = std::move(handler), options, dispatcher, instances](
                 detail::RunCore& core, std::vector<std::uint32_t>& ids) {
      for (std::size_t i = 0; i < instances; ++i) {
        std::unique_ptr<Dispatcher<OutEvent>> disp;
        if constexpr (!std::is_void_v<Out>) disp = dispatcher();
        const auto index = core.cells().next_index();
        core.cells().add(std::make_unique<detail::Cell<In, Out, Handler>>(
            core, detail::instance_name(name, instances, i), i, index, handler, options,
            std::move(disp)));
        ids.push_back(index);
      }
    };
    // One probe dispatcher validates subscriptions as they are declared (before running). Made
    // first: a factory that throws leaves the engine as it was.
    std::shared_ptr<const DispatcherBase> probe;
    if constexpr (!std::is_void_v<Out>) {
      try {
        probe = dispatcher();
      } catch (const option_error& e) {
        throw option_error("stage '" + name + "': " + e.what());
      }
      if (!probe) throw option_error("stage '" + name + "': the dispatcher factory returned null");
    }
    probes_.reserve(probes_.size() + 1);  // the two push_backs below cannot throw apart
    decls_.push_back(std::move(d));
    probes_.push_back(std::move(probe));
    return decls_.size() - 1;
  }

  std::vector<Decl> decls_;
  std::vector<Sub> subs_;
  std::uint64_t owner_ = detail::new_owner_tag();
  std::vector<std::shared_ptr<const DispatcherBase>> probes_;  // null for consumers
};

// ---- out of line -------------------------------------------------------------------------------

inline Metrics Run::metrics() const {
  Metrics m;
  std::lock_guard lock(table_->mutex);
  auto& cells = core_->cells();
  for (std::size_t i = 0; i < cells.size(); ++i)
    m.stages.push_back(cells[i].metrics());
  for (auto& e : table_->edges)
    m.edges.push_back(e.metrics());
  return m;
}

template <class P, class Handler>
requires requires(const P& p) {
  typename P::output_type;
  { p.id() } -> std::convertible_to<std::size_t>;
}
StageRef<typename P::output_type, void> Run::attach(const P& producer, std::string name,
                                                    Handler handler, SubscriptionOptions options,
                                                    std::size_t instances) {
  using In = typename P::output_type;
  static_assert(!std::is_void_v<In>, "attach: the stage attached to is a sink: it emits nothing");
  constexpr bool is_class = handler::Consumes<Handler, In, void>;
  constexpr bool is_function =
      std::invocable<Handler&, In&&> || std::invocable<Handler&, const In&>;
  static_assert(is_class || is_function,
                "attach: the handler must be a consumer class (handle_events(std::span<T>, "
                "sluice::Context<void>&)) or a function taking the producer's event");
  if constexpr (!is_class) {
    if (options.demand == DemandControl::manual)  // nothing would ever ask
      throw option_error("stage '" + name +
                         "': option demand: manual demand needs a consumer class that calls "
                         "ctx.ask; a function sink cannot ask");
    return attach(producer, std::move(name), detail::EachHandler<In, Handler>{std::move(handler)},
                  std::move(options), instances);
  } else {
    detail::check_stage_name(name);
    detail::check_instances(name, instances);
    const auto producer_id = id_in_run(producer, "attach");
    std::lock_guard lock(table_->mutex);
    auto& stages = table_->stages;
    if (producer_id >= stages.size())
      throw option_error("attach: unknown stage (a stage of another graph?)");
    for (auto& st : stages)
      if (st.name == name) throw option_error("stage '" + name + "': name already used");
    const StageEntry& p = stages[producer_id];
    if (p.kind == StageKind::consumer || p.out != typeid(In))
      throw option_error("stage '" + name + "' attaching to '" + p.name +
                         "': it does not emit this event type");
    detail::check_subscription<In>(name, instances, handler::ConsumesConst<Handler, In, void>,
                                   p.name, *p.probe, options);
    if (auto problem = detail::ring_memory_problem(
            name, p.name, options.max_demand,
            detail::Edge<In>::ring_bytes(static_cast<std::size_t>(options.max_demand),
                                         options.demand == DemandControl::manual),
            instances * p.cells.size());
        !problem.empty())
      throw option_error(problem);
    // Everything that may throw (allocation, copying the handler) comes before the cells are
    // counted live: a live cell that never runs would keep the run from ending.
    auto& cells = core_->cells();
    StageEntry entry{name, StageKind::consumer, typeid(void), nullptr, {}};
    std::vector<std::unique_ptr<detail::CellBase>> made;
    std::vector<detail::EdgeRecord> edges;
    std::vector<std::pair<std::uint32_t, detail::LateSubscriber<In>>> late;
    for (std::size_t ci = 0; ci < instances; ++ci) {
      const auto index = static_cast<std::uint32_t>(cells.next_index() + ci);
      const auto cname = detail::instance_name(name, instances, ci);
      auto cell = std::make_unique<detail::Cell<In, void, Handler>>(
          *core_, cname, ci, index, handler, ProducerOptions{},
          std::unique_ptr<Dispatcher<char>>{});
      const SubscriptionOptions eo = detail::edge_options(options, *p.probe, ci);
      for (std::size_t pi = 0; pi < p.cells.size(); ++pi) {
        const auto pname = detail::instance_name(p.name, p.cells.size(), pi);
        auto* edge = detail::make_edge<In>(p.cells[pi], index, pname, cname, eo, edges);
        cell->add_subscription(edge, pname, eo);
        late.emplace_back(p.cells[pi], detail::LateSubscriber<In>{edge, cname, eo, ci});
      }
      made.push_back(std::move(cell));
      entry.cells.push_back(index);
    }
    std::vector<detail::ExternalCommand> commands;
    for (auto& l : late)
      commands.push_back({detail::ExternalCommand::Kind::subscribe, std::any(std::move(l.second))});
    table_->edges.reserve(table_->edges.size() + edges.size());
    stages.reserve(stages.size() + 1);
    cells.reserve(made.size());
    table_->cells.reserve(1);
    // Only posting the commands may still allocate (the command queue's blocks).
    if (!core_->add_live(instances))
      throw std::logic_error("sluice: attach '" + name + "': the run has ended");
    for (auto& c : made)
      cells.add(std::move(c));
    for (auto& e : edges)
      table_->edges.push_back(std::move(e));
    const auto ids = entry.cells;
    table_->cells.add({ids.front(), static_cast<std::uint32_t>(ids.size())});
    stages.push_back(std::move(entry));
    for (std::size_t i = 0; i < late.size(); ++i)
      cells[late[i].first].post_external(std::move(commands[i]));
    for (auto i : ids)
      core_->notify(i);
    return StageRef<In, void>(stages.size() - 1, owner_);
  }
}

inline std::vector<std::string> Engine::problems() const {
  std::vector<std::string> found;
  std::string problems;
  std::vector<bool> has_sub(decls_.size()), has_consumer(decls_.size());
  for (auto& s : subs_) {
    has_sub[s.consumer] = true;
    has_consumer[s.producer] = true;
  }
  for (std::size_t i = 0; i < decls_.size(); ++i) {
    auto& d = decls_[i];
    if (d.kind != StageKind::producer && !has_sub[i])
      problems += "stage '" + d.name + "': a consumer with no subscription\n";
    if (d.kind != StageKind::consumer && !has_consumer[i] && !d.dynamic)
      problems += "stage '" + d.name +
                  "': a producer with no subscriber (make it dynamic to attach consumers while "
                  "it runs)\n";
    if (d.kind != StageKind::consumer && (has_consumer[i] || d.dynamic)) {
      auto subscribers = subscribers_of(i);
      std::vector<SubscriberInfo> infos;
      for (auto& [info, name] : subscribers)
        infos.push_back(info);
      for (auto& problem : probes_[i]->validate_subscribers(infos, d.dynamic))
        problems += "stage '" + d.name + "': " + problem + "\n";
    }
  }
  // Cycles (DFS over producer -> consumer).
  {
    std::vector<int> color(decls_.size(), 0);
    std::size_t on_cycle = 0;  // a stage the back edge leads to: one on the cycle
    std::function<bool(std::size_t)> dfs = [&](std::size_t u) {
      color[u] = 1;
      for (auto& s : subs_) {
        if (s.producer != u) continue;
        if (color[s.consumer] == 1) {
          on_cycle = s.consumer;
          return true;
        }
        if (color[s.consumer] == 0 && dfs(s.consumer)) return true;
      }
      color[u] = 2;
      return false;
    };
    for (std::size_t i = 0; i < decls_.size(); ++i)
      if (color[i] == 0 && dfs(i)) {
        problems +=
            "the subscriptions form a cycle through stage '" + decls_[on_cycle].name + "'\n";
        break;
      }
  }
  for (std::size_t at = 0; at < problems.size();) {
    const auto nl = problems.find('\n', at);
    found.push_back(problems.substr(at, nl - at));
    at = nl + 1;
  }
  return found;
}

inline Run Engine::start(RunOptions options) const {
  // Topology checks: every problem, one per line.
  std::string problems;
  for (auto& p : this->problems())
    problems += p + "\n";
  if (options.quantum == 0) problems += "run option quantum must be at least 1, got: 0\n";
  if (options.concurrency < 0)
    problems += "run option concurrency must be 0 (hardware) or more, got: " +
                std::to_string(options.concurrency) + "\n";
  if (options.concurrency > max_concurrency)
    problems += "run option concurrency must be at most " + std::to_string(max_concurrency) +
                ", got: " + std::to_string(options.concurrency) + "\n";
  // An edge's rings hold up to max_demand events, and the stream goes round them: a max_demand
  // whose rings cannot fit in this machine's memory is refused before anything is allocated.
  for (auto& s : subs_)
    if (auto problem = detail::ring_memory_problem(
            decls_[s.consumer].name, decls_[s.producer].name, s.options.max_demand, s.ring_bytes,
            decls_[s.consumer].instances * decls_[s.producer].instances);
        !problem.empty())
      problems += problem + "\n";
  if (!problems.empty()) {
    problems.pop_back();
    throw option_error(problems);
  }

  Run run;
  run.owner_ = owner_;
  detail::Executor* ex = nullptr;
  if (options.manual) {
    run.manual_ = std::make_unique<detail::ManualExecutor>();
    ex = run.manual_.get();
  } else {
    run.tbb_ = std::make_unique<detail::TbbExecutor>(options.concurrency, options.direct_handoff);
    ex = run.tbb_.get();
  }
  auto logger = options.logger;
  if (!logger)
    logger = [](LogLevel level, std::string_view msg) {
      static constexpr const char* names[] = {"info", "warning", "error"};
      std::cerr << "[sluice " << names[static_cast<int>(level)] << "] " << msg << '\n';
    };
  run.core_ =
      std::make_unique<detail::RunCore>(*ex, std::move(logger), options.quantum, options.fail_fast);
  auto& stages = run.table_->stages;
  for (std::size_t i = 0; i < decls_.size(); ++i) {
    auto& d = decls_[i];
    stages.push_back({d.name, d.kind, d.out, probes_[i], {}});
    d.make(*run.core_, stages.back().cells);
    const auto& ids = stages.back().cells;
    run.table_->cells.add({ids.front(), static_cast<std::uint32_t>(ids.size())});
  }
  for (auto& s : subs_)
    s.wire(*run.core_, stages[s.producer].cells, stages[s.consumer].cells, decls_[s.producer],
           decls_[s.consumer], *probes_[s.producer], s.options, run.table_->edges);
  run.core_->start();
  return run;
}

}  // namespace sluice
