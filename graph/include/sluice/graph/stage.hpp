#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <type_traits>
#include <utility>

#include <sluice/dispatchers/broadcast.hpp>
#include <sluice/dispatchers/partition.hpp>
#include <sluice/engine/options.hpp>
#include <sluice/graph/detail/declare.hpp>
#include <sluice/graph/detail/graph_data.hpp>
#include <sluice/graph/function_stages.hpp>
#include <sluice/graph/options.hpp>
#include <sluice/graph/pull_stream.hpp>
#include <sluice/operators/batch.hpp>
#include <sluice/operators/map_blocking.hpp>
#include <sluice/operators/rate_limit.hpp>
#include <sluice/operators/take.hpp>

namespace sluice {

class Graph;

/// A declared stage: consumes `In` (void for a source), emits `Out` (void for a sink). Chain the
/// next stage from it; connecting a stage that takes another type does not compile.
template <class In, class Out>
class Stage {
 public:
  using input_type = In;
  using output_type = Out;

  /// `f(Out) -> R` for each event (R may be Out).
  template <class F>
  requires(!std::is_void_v<Out>) auto map(std::string name, F f, StageOptions options = {}) {
    using R = std::remove_cvref_t<std::invoke_result_t<F&, Out&&>>;
    static_assert(!std::is_void_v<R>, "map: the function must return the new event");
    return chain<R>(std::move(name), StageKind::producer_consumer, "map",
                    detail::MapStage<Out, R, F>{std::move(f)}, std::move(options));
  }

  /// Keeps the events `keep(const Out&)` returns true for.
  template <class F>
  // (Spelled so that it stays well-formed for Out = void: clang 14 substitutes into it when a
  // sink's Stage<T, void> is instantiated.)
  requires(!std::is_void_v<Out>) &&
      std::predicate<F&, const std::conditional_t<std::is_void_v<Out>, int, Out>&> Stage<
          Out, Out> filter(std::string name, F keep, StageOptions options = {}) {
    return chain<Out>(std::move(name), StageKind::producer_consumer, "filter",
                      detail::FilterStage<Out, F>{std::move(keep)}, std::move(options));
  }

  /// `f(Out) -> range`: emits every element of the returned range.
  template <class F>
  requires(!std::is_void_v<Out>) auto flat_map(std::string name, F f, StageOptions options = {}) {
    using Range = std::invoke_result_t<F&, Out&&>;
    using R = std::remove_cvref_t<std::ranges::range_value_t<Range>>;
    return chain<R>(std::move(name), StageKind::producer_consumer, "flat_map",
                    detail::FlatMapStage<Out, R, F>{std::move(f)}, std::move(options));
  }

  /// Groups events into `std::vector<Out>` batches (Broadway's batchers; sluice::Batcher): a
  /// batch is emitted once it holds `batch.size` events or `batch.timeout` after its first
  /// event, and the last one when the input ends. Downstream demand counts batches.
  auto batch(std::string name, BatchOptions batch,
             StageOptions options = {}) requires(!std::is_void_v<Out>) {
    return batched(std::move(name), batch, detail::NoKey{}, std::move(options));
  }
  /// The same with one open batch per key `key_of(const Out&)` (hashable), emitted as
  /// `Batch<K, Out>` {key, events, trigger}; at most `batch.max_keys` batches are open (one
  /// more flushes the oldest).
  template <class KeyOf>
  requires(!std::is_void_v<Out>) &&
      std::invocable<const KeyOf&, const std::conditional_t<std::is_void_v<Out>, int,
                                                            Out>&> auto batch(std::string name,
                                                                              KeyOf key_of,
                                                                              BatchOptions batch,
                                                                              StageOptions options =
                                                                                  {}) {
    return batched(std::move(name), batch, std::move(key_of), std::move(options));
  }

  /// Passes events on unchanged, at most `limit.events` per `limit.per` on average and
  /// `limit.burst` (default: `events`) at once: a token bucket that starts full
  /// (sluice::RateLimiter). It asks upstream only for what it may pass, so a faster source is
  /// slowed down by back-pressure and nothing is dropped. One instance (one bucket).
  Stage<Out, Out> rate_limit(std::string name, RateLimitOptions limit,
                             StageOptions options = {}) requires(!std::is_void_v<Out>) {
    const auto problem = detail::rate_limit_options_problem(limit);
    if (problem) limit = RateLimitOptions{.events = 1};  // reported by compile()
    auto s = chain<Out>(std::move(name), StageKind::producer_consumer, "rate_limit",
                        RateLimiter<Out>(limit), std::move(options));
    report(s.node(), problem);
    one_instance(s.node(), "rate_limit", "one bucket for the stage");
    return s;
  }

  /// Passes on the first `n` events, then ends: downstream once they are dispatched, upstream
  /// by cancelling its subscriptions, so a source with no other subscriber stops (Akka's take;
  /// sluice::Take). It asks upstream only for the events it still wants. One instance.
  Stage<Out, Out> take(std::string name, std::int64_t n,
                       StageOptions options = {}) requires(!std::is_void_v<Out>) {
    auto s = chain<Out>(std::move(name), StageKind::producer_consumer, "take",
                        Take<Out>(std::max<std::int64_t>(n, 0)), std::move(options));
    auto& node = s.node();
    if (n < 0)
      node.problem("n", "stage '" + node.stage.name +
                            "': option n must be at least 0, got: " + std::to_string(n));
    one_instance(node, "take", "one count");
    return s;
  }

  /// Calls `f(const Out&)` for each event and passes the event on unchanged (Akka's wireTap,
  /// Rust's inspect): logging, counting, checks. A function stage (it may be fused).
  template <class F>
  requires(!std::is_void_v<Out>) &&
      std::invocable<F&, const std::conditional_t<std::is_void_v<Out>, int, Out>&> Stage<
          Out, Out> inspect(std::string name, F f, StageOptions options = {}) {
    return chain<Out>(std::move(name), StageKind::producer_consumer, "inspect",
                      detail::MapStage<Out, Out, detail::Inspect<Out, F>>{{std::move(f)}},
                      std::move(options));
  }

  /// Emits each running result of `acc = f(acc, event)`, starting from `init` (Stream.scan,
  /// Akka's scan): a running sum, a count, the latest state. Each instance keeps its own
  /// accumulator (a restarted instance starts again from `init`). A function stage.
  template <class Acc, class F>
  requires(!std::is_void_v<Out>) auto scan(std::string name, Acc init, F f,
                                           StageOptions options = {}) {
    static_assert(std::is_convertible_v<std::invoke_result_t<F&, Acc&&, Out&&>, Acc>,
                  "scan: f(acc, event) must return the new accumulator");
    return chain<Acc>(
        std::move(name), StageKind::producer_consumer, "scan",
        detail::MapStage<Out, Acc, detail::Scan<Out, Acc, F>>{{std::move(init), std::move(f)}},
        std::move(options));
  }

  /// Fan-in as a stage of its own: one stage passing on the events of this stage and of every
  /// one of `others` (all emitting Out), each producer's in its order (Flow's merge). The same
  /// as chaining a pass-through stage and calling subscribe for each other producer; use
  /// subscribe for per-subscription options.
  template <class... Others>
  requires(!std::is_void_v<Out>) Stage<Out, Out> merge(std::string name, const Others&... others) {
    auto s = chain<Out>(std::move(name), StageKind::producer_consumer, "merge",
                        detail::MapStage<Out, Out, detail::Same<Out>>{{}}, {});
    (s.subscribe(others), ...);
    return s;
  }

  /// A producer_consumer written as a class: `handle_events(std::span<Out>, Context<Next>&)`
  /// and optionally GenStage's other callbacks.
  template <class Next, class Handler>
  requires(!std::is_void_v<Out>) Stage<Out, Next> then(std::string name, Handler handler,
                                                       StageOptions options = {}) {
    return chain<Next>(std::move(name), StageKind::producer_consumer, "class", std::move(handler),
                       std::move(options));
  }

  /// `f(Out) -> R` for each event, a blocking function (I/O, a database, a library that
  /// sleeps) run on up to `blocking.concurrency` threads of the stage's own, outside the
  /// engine's workers; emits the results in input order (`ordered`, the default) or as the
  /// calls return (GenStage's ConsumerSupervisor, Akka's mapAsync; sluice::BlockingMap). `f` is
  /// called from several threads at once. It asks upstream for exactly its free slots. A call
  /// that throws fails the stage, or with a restart policy costs only its event
  /// (Context::resume_after). One instance.
  template <class F>
  requires(!std::is_void_v<Out>) &&
      std::invocable<const F&,
                     std::conditional_t<std::is_void_v<Out>, int,
                                        Out>&&> auto map_blocking(std::string name, F f,
                                                                  MapBlockingOptions blocking,
                                                                  StageOptions options = {}) {
    static_assert(!std::is_void_v<std::invoke_result_t<const F&, Out&&>>,
                  "map_blocking: the function must return the new event (for_each_blocking "
                  "calls one that returns nothing)");
    return blocking_stage(std::move(name), std::move(f), blocking, std::move(options),
                          "map_blocking");
  }
  /// A sink calling the blocking `f(Out)` on up to `blocking.concurrency` threads of its own, as
  /// map_blocking does (`ordered` has nothing to order). One instance.
  template <class F>
  requires(!std::is_void_v<Out>) &&
      std::invocable<const F&, std::conditional_t<std::is_void_v<Out>, int, Out>&&> Stage<
          Out, void> for_each_blocking(std::string name, F f, MapBlockingOptions blocking,
                                       StageOptions options = {}) {
    static_assert(std::is_void_v<std::invoke_result_t<const F&, Out&&>>,
                  "for_each_blocking: the function must return nothing (map_blocking emits what "
                  "it returns)");
    return blocking_stage(std::move(name), std::move(f), blocking, std::move(options),
                          "for_each_blocking");
  }

  /// A sink calling `f(event)` for each event.
  template <class F>
  requires(!std::is_void_v<Out>) Stage<Out, void> for_each(std::string name, F f,
                                                           StageOptions options = {}) {
    return chain<void>(std::move(name), StageKind::consumer, "for_each",
                       EachHandler<Out, F>{std::move(f)}, std::move(options));
  }

  /// A sink appending every event to `out` (one instance; `out` must outlive the runs).
  template <class Container>
  requires(!std::is_void_v<Out>) Stage<Out, void> collect(std::string name, Container& out,
                                                          StageOptions options = {}) {
    detail::Claim claim;
    claim.why = "stage '" + name +
                "' collects into one container, so its graph runs one run at a time, and the "
                "last run's collect has not finished (wait for it first)";
    auto s =
        chain<void>(std::move(name), StageKind::consumer, "collect",
                    detail::CollectSink<Out, Container>{&out, claim.taken}, std::move(options));
    graph_->claims.push_back(std::move(claim));
    one_instance(s.node(), "collect", "one container");
    return s;
  }

  /// A sink the application reads from: `for (auto& e : stage.stream("out"))` after run().
  /// At most `capacity` events wait for the reader; the reader's pace is the graph's demand.
  /// On a stage with several instances, `capacity` is shared between them (each subscription
  /// keeps its own order). The graph then runs once (CompiledGraph::run). `capacity` is 1 to
  /// 2^30, and at least this stage's instances (compile() reports any other).
  PullStream<Out> stream(std::string name,
                         std::int64_t capacity = 1000) requires(!std::is_void_v<Out>) {
    // An invalid capacity is reported by compile(); the state is made with a valid one.
    const auto& producer = node();
    const auto problem = detail::stream_capacity_problem(name, capacity, producer.stage.name,
                                                         producer.stage.instances);
    const auto usable = problem ? std::int64_t{1} : capacity;
    auto state = std::make_shared<detail::StreamState<Out>>(usable);
    StageOptions o;
    o.max_demand = usable;
    o.demand = DemandControl::manual;
    auto keeper = std::make_shared<const detail::Ender<detail::StreamState<Out>>>(state);
    auto s = chain<void>(std::move(name), StageKind::consumer, "stream",
                         detail::StreamSink<Out>{state, std::move(keeper)}, std::move(o));
    auto& node = s.node();
    if (problem) node.problem("capacity", *problem);
    graph_->claims.push_back({"stage '" + node.stage.name +
                              "' is a stream, read by one reader, so its graph runs once, and a "
                              "run of it has already started (declare the graph again for "
                              "another run)"});
    return PullStream<Out>(state);
  }

  /// A sink written as a class: `handle_events(std::span<Out>, Context<void>&)`.
  template <class Handler>
  requires(!std::is_void_v<Out>) Stage<Out, void> to(std::string name, Handler handler,
                                                     StageOptions options = {}) {
    return chain<void>(std::move(name), StageKind::consumer, "class", std::move(handler),
                       std::move(options));
  }

  /// This stage's events go to every stage chained from it, at the pace of the slowest
  /// (BroadcastDispatcher; a subscription may select events with StageOptions::selector).
  Stage& broadcast() requires(!std::is_void_v<Out>) {
    detail::use_dispatcher<Out>(*graph_, id_, "broadcast",
                                [] { return broadcast_dispatcher<Out>(); });
    return *this;
  }

  /// This stage's events are split by `hash(Out&)` into `partitions` (PartitionDispatcher); the
  /// stage chained from it takes partition i in its instance i.
  /// Invalid dispatcher options (no partition, a partition listed twice, named partitions
  /// without a hash, queue_size < 1) are reported by compile(), naming the stage.
  template <class Hash>
  requires(!std::is_void_v<Out>) Stage& partition(Partitions partitions, Hash hash,
                                                  PartitionDispatcherOptions options = {}) {
    detail::use_dispatcher<Out>(*graph_, id_, "partition", [&] {
      return partition_dispatcher<Out>(std::move(partitions), std::move(hash), options);
    });
    return *this;
  }
  /// Same, with the default hash (std::hash<Out>).
  Stage& partition(Partitions partitions,
                   PartitionDispatcherOptions options = {}) requires(!std::is_void_v<Out>) {
    detail::use_dispatcher<Out>(*graph_, id_, "partition", [&] {
      return partition_dispatcher<Out>(std::move(partitions), options);
    });
    return *this;
  }

  /// Fan-in: this stage also consumes `producer`'s events. Only the subscription fields of
  /// `options` apply (compile() reports the stage's own ones, and a producer of another graph).
  template <class PIn, class POut>
  Stage& subscribe(const Stage<PIn, POut>& producer, StageOptions options = {}) {
    static_assert(!std::is_void_v<In>, "a source cannot subscribe to another stage");
    static_assert(!std::is_void_v<POut>, "the stage subscribed to is a sink: it emits nothing");
    static_assert(std::is_same_v<POut, In>,
                  "event types differ: this stage's input type must be the producer's output "
                  "type");
    auto& n = node();
    const std::string where =
        "stage '" + n.stage.name + "' subscribing to '" + producer.name() + "': ";
    if (producer.graph_ != graph_) {  // its id means another stage here, or none
      n.problem("", where + "'" + producer.name() + "' belongs to another graph");
      return *this;
    }
    // The options of the stage itself are set where it is declared.
    auto not_here = [&](const char* option) {
      n.problem(option, where + "option " + option +
                            ": not a subscription option (set it where the stage is declared)");
    };
    if (options.instances != 1) not_here("instances");
    if (options.buffer_size) not_here("buffer_size");
    if (options.buffer_keep != BufferKeep::last) not_here("buffer_keep");
    if (options.demand_mode != DemandMode::forward) not_here("demand_mode");
    if (options.dynamic) not_here("dynamic");
    if (!options.fuse) not_here("fuse");
    if (options.restart != Restart::never) not_here("restart");
    if (options.max_restarts != 3) not_here("max_restarts");
    if (options.restart_window != std::chrono::seconds(5)) not_here("restart_window");
    if (n.function_handler && options.demand == DemandControl::manual)
      n.problem("demand", where + function_cannot_ask(n.stage.kind, n.what));
    detail::link<In>(*graph_, producer.id(), id_, options.subscription());
    return *this;
  }

  std::size_t id() const noexcept { return id_; }
  const std::string& name() const { return node().stage.name; }
  /// The graph that declared it: a Run of another graph refuses it.
  std::uint64_t owner() const noexcept { return graph_->owner; }

 private:
  friend class Graph;
  template <class I, class O>
  friend class Stage;

  Stage(std::shared_ptr<detail::GraphData> g, std::size_t id) : graph_(std::move(g)), id_(id) {}

  template <class Next, class Handler>
  Stage<Out, Next> chain(std::string name, StageKind kind, std::string what, Handler handler,
                         StageOptions options) {
    const auto sub = options.subscription();
    const auto id = detail::add_stage<Out, Next>(*graph_, std::move(name), kind, std::move(what),
                                                 std::move(handler), std::move(options));
    detail::link<Out>(*graph_, id_, id, sub);
    return Stage<Out, Next>(graph_, id);
  }

  detail::GraphNode& node() const { return graph_->nodes[id_]; }

  /// An operator's invalid option, if any (its handler was made with valid ones), for compile().
  static void report(detail::GraphNode& n,
                     const std::optional<std::pair<std::string, std::string>>& problem) {
    if (problem)
      n.problem(problem->first,
                "stage '" + n.stage.name + "': option " + problem->first + " " + problem->second);
  }
  /// An operator whose state is the whole stage's (`why`) has one instance.
  static void one_instance(detail::GraphNode& n, const char* op, const char* why) {
    if (n.options.instances != 1)
      n.problem("instances", "stage '" + n.stage.name + "': option instances must be 1 for " + op +
                                 " (" + why + "), got: " + std::to_string(n.options.instances));
  }

  template <class F>
  auto blocking_stage(std::string name, F f, MapBlockingOptions blocking, StageOptions options,
                      const char* op) {
    using B = BlockingMap<Out, F>;
    using Next = typename B::output_type;
    auto problem = detail::map_blocking_options_problem(blocking);
    if (!problem && blocking.concurrency > options.max_demand)
      problem = std::pair{std::string("concurrency"),
                          "(" + std::to_string(blocking.concurrency) + ") exceeds max_demand (" +
                              std::to_string(options.max_demand) +
                              "): no more events than max_demand can be asked for at once "
                              "(raise max_demand)"};
    if (problem) blocking.concurrency = 1;  // reported by compile(); the handler is made valid
    auto s = chain<Next>(std::move(name),
                         std::is_void_v<Next> ? StageKind::consumer : StageKind::producer_consumer,
                         op, B(std::move(f), blocking), std::move(options));
    report(s.node(), problem);
    one_instance(s.node(), op, "one pool of threads for the stage");
    return s;
  }

  template <class KeyOf>
  auto batched(std::string name, BatchOptions batch, KeyOf key_of, StageOptions options) {
    using B = Batcher<Out, KeyOf>;
    const auto problem = detail::batch_options_problem(batch);
    if (problem) batch = BatchOptions{};  // reported by compile(); the handler is made valid
    auto s = chain<typename B::output_type>(std::move(name), StageKind::producer_consumer, "batch",
                                            B(batch, std::move(key_of)), std::move(options));
    report(s.node(), problem);
    return s;
  }

  std::shared_ptr<detail::GraphData> graph_;
  std::size_t id_;
};

}  // namespace sluice
