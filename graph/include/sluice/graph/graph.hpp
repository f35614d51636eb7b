#pragma once

#include <any>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <sluice/dispatchers/broadcast.hpp>
#include <sluice/dispatchers/demand.hpp>
#include <sluice/dispatchers/partition.hpp>
#include <sluice/engine/engine.hpp>
#include <sluice/graph/push.hpp>

namespace sluice {

/// Options of one declared stage: how many instances, its producer side (buffer, demand mode)
/// and its input subscription(s) (GenStage's subscription options).
struct StageOptions {
  std::size_t instances = 1;
  // ---- input subscription ----
  std::int64_t max_demand = default_max_demand;
  std::optional<std::int64_t> min_demand = std::nullopt;
  CancelMode cancel = CancelMode::permanent;
  std::optional<Partition> partition = std::nullopt;  ///< default: instance i takes partition i
  DemandControl demand = DemandControl::automatic;
  std::any selector = {};  ///< broadcast only: sluice::selector<T>(predicate)
  // ---- output (producers, producer_consumers) ----
  std::optional<std::int64_t> buffer_size = std::nullopt;
  BufferKeep buffer_keep = BufferKeep::last;
  DemandMode demand_mode = DemandMode::forward;  ///< producers only
  /// Consumers may attach while it runs (Run::attach) and leave (Run::detach): it needs no
  /// subscriber when the run starts and keeps running when its last one leaves, until
  /// Run::drain or Run::cancel.
  bool dynamic = false;

  SubscriptionOptions subscription() const {
    return {max_demand, min_demand, cancel, partition, demand, selector};
  }
  ProducerOptions producer() const { return {buffer_size, buffer_keep, demand_mode, dynamic}; }
};

template <class In, class Out>
class Stage;
class Graph;
class CompiledGraph;

namespace detail {

/// A declared stage, kept as plain data until compile() turns it into engine declarations.
struct GraphNode {
  std::string name;
  StageKind kind;
  std::string what;  // "map", "filter", "source (range)", ... (DOT)
  StageOptions options;
  std::string dispatcher = "demand";
  std::any dispatcher_factory;  // DispatcherFactory<Out>, set by broadcast()/partition()
  // Declares the stage into an engine; returns its stage id there.
  std::function<std::size_t(Engine&, const GraphNode&)> declare;
  std::vector<std::string> problems;  // found while declaring (reported by compile())
  /// Its dispatcher options were refused (problems says why): it is still declared (its name and
  /// instances are checked) but its subscriptions are not made, so they report nothing more.
  bool broken = false;
  bool function_handler = false;  // for_each, collect, map, filter, flat_map: it cannot ask
};

struct GraphLink {
  std::size_t producer, consumer;
  SubscriptionOptions options;
  // Subscribes (engine ids) with the link's event type.
  std::function<void(Engine&, std::size_t consumer, std::size_t producer,
                     const SubscriptionOptions&)>
      subscribe;
};

struct GraphData {
  std::vector<GraphNode> nodes;
  std::vector<GraphLink> links;
  std::uint64_t owner = new_owner_tag();  // its Stages' owner(); the compiled Engine's too
  /// What its runs cannot share: each run claims all of them before it starts (refused, with
  /// `why`, if one is taken). A push source's and a stream's claim is never given back (the
  /// application's handle or range belongs to that run); a collect's is given back when its
  /// sink stops (one run at a time writes the container).
  struct Claim {
    std::string why;
    std::shared_ptr<std::atomic<bool>> taken = std::make_shared<std::atomic<bool>>(false);
  };
  std::vector<Claim> claims;
};

/// Claims every claim of `g` for a new run, or none: throws std::logic_error with the reason of
/// the first one taken. Returns a guard that gives them back unless dismissed (the run started).
class RunClaims {
 public:
  explicit RunClaims(const GraphData& g) {
    for (auto& c : g.claims) {
      if (c.taken->exchange(true)) {  // seq_cst: pairs with the store giving it back
        give_back();
        throw std::logic_error("sluice: " + c.why);
      }
      held_.push_back(c.taken.get());
    }
  }
  RunClaims(const RunClaims&) = delete;
  RunClaims& operator=(const RunClaims&) = delete;
  ~RunClaims() { give_back(); }
  void dismiss() { held_.clear(); }

 private:
  void give_back() {
    for (auto* t : held_)
      t->store(false);
    held_.clear();
  }
  std::vector<std::atomic<bool>*> held_;
};

/// The most events a push source or a stream may hold (a std::counting_semaphore counts them;
/// the same bound as max_demand's).
inline constexpr std::int64_t max_capacity = std::int64_t{1} << 30;

/// The problem with a push source's or a stream's capacity, if any.
inline std::optional<std::string> capacity_problem(const std::string& stage,
                                                   std::int64_t capacity) {
  if (capacity < 1)
    return "stage '" + stage +
           "': option capacity must be at least 1, got: " + std::to_string(capacity);
  if (capacity > max_capacity)
    return "stage '" + stage +
           "': option capacity must be at most 2^30, got: " + std::to_string(capacity);
  return std::nullopt;
}

/// The problem with a stream's capacity when its producer has `instances` instances (it asks
/// each of them for a part of the capacity: at least one event each), if any.
inline std::optional<std::string> stream_capacity_problem(const std::string& stream,
                                                          std::int64_t capacity,
                                                          const std::string& producer,
                                                          std::size_t instances) {
  if (auto p = capacity_problem(stream, capacity)) return p;
  if (static_cast<std::uint64_t>(capacity) < instances)
    return "stage '" + stream + "': option capacity must be at least " + std::to_string(instances) +
           ", the instances of '" + producer +
           "' (the stream asks each of them for a part of it), got: " + std::to_string(capacity);
  return std::nullopt;
}

/// What a function stage with manual demand is told: nothing in it would ever ask.
inline std::string function_cannot_ask(StageKind kind, const std::string& what) {
  return kind == StageKind::consumer
             ? "option demand: manual demand needs a consumer class that calls ctx.ask; a "
               "function sink cannot ask"
             : "option demand: manual demand needs a stage class that calls ctx.ask; a "
               "function stage (" +
                   what + ") cannot ask";
}

// ---- the handlers behind the function stages ----------------------------------------------------

template <class R>
struct RangeSource {
  using Out = std::ranges::range_value_t<R>;
  static constexpr const char* what = "source (range)";
  static constexpr bool single_instance = true;
  std::shared_ptr<R> range;  // shared by copies: each run starts its own iteration
  std::optional<std::ranges::iterator_t<R>> it;
  void handle_demand(std::size_t n, Context<Out>& ctx) {
    if (!it) it = std::ranges::begin(*range);
    const auto end = std::ranges::end(*range);
    for (std::size_t i = 0; i < n && *it != end; ++i, ++*it)
      ctx.emit(Out(**it));
    if (*it == end) ctx.finish();
  }
};

template <class O, class F>
struct GeneratorSource {
  using Out = O;
  static constexpr const char* what = "source (generator)";
  static constexpr bool single_instance = false;
  std::optional<F> f;
  void handle_demand(std::size_t n, Context<Out>& ctx) {
    std::size_t got = 0;
    if constexpr (std::is_nothrow_move_constructible_v<F> && sizeof(F) <= 64) {
      // Worked on in a local, the generator's state stays in registers: the emitted events'
      // stores cannot alias it.
      F g = std::move(*f);
      try {
        got = ctx.emit_generated(n, g);
      } catch (...) {
        f.emplace(std::move(g));
        throw;
      }
      f.emplace(std::move(g));
    } else {
      got = ctx.emit_generated(n, *f);
    }
    if (got < n) ctx.finish();
  }
};

// Function stages read their input through either span: their own events (moved from) or a
// broadcast's shared batch (read only).
template <class In, class Out, class F>
struct MapStage {
  F f;
  void handle_events(std::span<In> in, Context<Out>& ctx) {
    auto it = in.begin();
    ctx.emit_generated(in.size(), [&] { return std::optional<Out>(f(std::move(*it++))); });
  }
  void handle_events(std::span<const In> in,
                     Context<Out>& ctx) requires std::invocable<F&, const In&> {
    auto it = in.begin();
    ctx.emit_generated(in.size(), [&] { return std::optional<Out>(f(*it++)); });
  }
};

template <class In, class F>
struct FilterStage {
  F keep;
  void handle_events(std::span<In> in, Context<In>& ctx) { ctx.emit_kept(in, keep); }
  void handle_events(std::span<const In> in,
                     Context<In>& ctx) requires std::copy_constructible<In> {
    ctx.emit_kept(in, keep);
  }
};

template <class In, class Out, class F>
struct FlatMapStage {
  F f;
  void handle_events(std::span<In> in, Context<Out>& ctx) {
    for (auto& e : in)
      ctx.emit_all(f(std::move(e)));
  }
  void handle_events(std::span<const In> in,
                     Context<Out>& ctx) requires std::invocable<F&, const In&> {
    for (auto& e : in)
      ctx.emit_all(f(e));
  }
};

/// The sink behind Stage::collect: appends to the application's container. Its run's claim on
/// the container is given back when it stops (release: the next run that claims it sees every
/// append).
template <class In, class Container>
struct CollectSink {
  Container* out;
  std::shared_ptr<std::atomic<bool>> claim;
  void handle_events(std::span<In> in, Context<void>&) {
    for (auto& e : in)
      out->push_back(std::move(e));
  }
  void handle_events(std::span<const In> in, Context<void>&) requires std::copy_constructible<In> {
    for (auto& e : in)
      out->push_back(e);
  }
  void handle_terminate(const Reason&) { claim->store(false); }
};

/// The handlers of the function stages: they never call ctx.ask.
template <class Handler>
inline constexpr bool is_function_stage = false;
template <class In, class F>
inline constexpr bool is_function_stage<EachHandler<In, F>> = true;
template <class In, class Out, class F>
inline constexpr bool is_function_stage<MapStage<In, Out, F>> = true;
template <class In, class F>
inline constexpr bool is_function_stage<FilterStage<In, F>> = true;
template <class In, class C>
inline constexpr bool is_function_stage<CollectSink<In, C>> = true;
template <class In, class Out, class F>
inline constexpr bool is_function_stage<FlatMapStage<In, Out, F>> = true;

}  // namespace detail

/// Makes a source that emits the elements of `range` in order, exactly as demand asks
/// (GenStage's from_enumerable), then finishes. The range is kept (moved in) by the graph; every
/// run iterates it from the start.
template <std::ranges::forward_range R>
auto from_range(R&& range) {
  using Stored = std::remove_cvref_t<R>;
  return detail::RangeSource<Stored>{std::make_shared<Stored>(std::forward<R>(range)), {}};
}

/// Makes a source from a callable returning std::optional<T>: each call gives the next event;
/// an empty optional ends the stream. Each run (and each instance) gets its own copy of `f`.
template <class F>
requires requires(F& f) {
  f().has_value();
}
auto from_generator(F f) {
  using Out = typename std::invoke_result_t<F&>::value_type;
  return detail::GeneratorSource<Out, F>{std::move(f)};
}

/// A graph under construction: declare sources, then chain stages from them. Nothing runs until
/// compile() (validation, all problems at once) and run().
class Graph {
 public:
  Graph() : data_(std::make_shared<detail::GraphData>()) {}

  /// A source from sluice::from_range or sluice::from_generator.
  template <class Src>
  requires requires { Src::single_instance; }
  auto source(std::string name, Src src, StageOptions options = {})
      -> Stage<void, typename Src::Out>;
  /// A source written as a class with GenStage's callbacks: `handle_demand(n, Context<Out>&)`,
  /// optionally handle_info, handle_cancel, handle_subscribe, handle_discarded.
  template <class Out, class Handler>
  Stage<void, Out> source(std::string name, Handler handler, StageOptions options = {});

  /// A source fed by application threads through the returned handle: push blocks while
  /// `capacity` events wait (back-pressure), close() ends the stream (so does destroying the
  /// handle's last copy). The graph then runs once (CompiledGraph::run).
  /// `capacity` is 1 to 2^30 (compile() reports any other).
  template <class T>
  std::pair<PushHandle<T>, Stage<void, T>> push_source(std::string name,
                                                       std::ptrdiff_t capacity = 1000,
                                                       StageOptions options = {});

  /// Validates the whole graph and prepares it to run. Throws option_error listing every
  /// problem, one per line, each naming the stage and the option.
  CompiledGraph compile() const;

  /// compile() then run().
  Run run(RunOptions options = {}) const;

  /// The topology as Graphviz DOT: stages (kind, instances, dispatcher) and subscriptions (their
  /// options).
  std::string to_dot() const;

 private:
  template <class In, class Out>
  friend class Stage;
  explicit Graph(std::shared_ptr<detail::GraphData> data) : data_(std::move(data)) {}

  template <class In, class Out, class Handler>
  std::size_t add(std::string name, StageKind kind, std::string what, Handler handler,
                  StageOptions options);

  std::shared_ptr<detail::GraphData> data_;
};

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

  /// A producer_consumer written as a class: `handle_events(std::span<Out>, Context<Next>&)`
  /// and optionally GenStage's other callbacks.
  template <class Next, class Handler>
  requires(!std::is_void_v<Out>) Stage<Out, Next> then(std::string name, Handler handler,
                                                       StageOptions options = {}) {
    return chain<Next>(std::move(name), StageKind::producer_consumer, "class", std::move(handler),
                       std::move(options));
  }

  /// A sink calling `f(event)` for each event.
  template <class F>
  requires(!std::is_void_v<Out>) Stage<Out, void> for_each(std::string name, F f,
                                                           StageOptions options = {}) {
    return chain<void>(std::move(name), StageKind::consumer, "for_each",
                       detail::EachHandler<Out, F>{std::move(f)}, std::move(options));
  }

  /// A sink appending every event to `out` (one instance; `out` must outlive the runs).
  template <class Container>
  requires(!std::is_void_v<Out>) Stage<Out, void> collect(std::string name, Container& out,
                                                          StageOptions options = {}) {
    detail::GraphData::Claim claim;
    claim.why = "stage '" + name +
                "' collects into one container, so its graph runs one run at a time, and the "
                "last run's collect has not finished (wait for it first)";
    auto s =
        chain<void>(std::move(name), StageKind::consumer, "collect",
                    detail::CollectSink<Out, Container>{&out, claim.taken}, std::move(options));
    graph_->claims.push_back(std::move(claim));
    auto& node = graph_->nodes[s.id()];
    if (node.options.instances != 1)
      node.problems.push_back("stage '" + node.name +
                              "': option instances must be 1 for collect (one container), got: " +
                              std::to_string(node.options.instances));
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
    const auto& producer = graph_->nodes[id_];
    const auto problem =
        detail::stream_capacity_problem(name, capacity, producer.name, producer.options.instances);
    const auto usable = problem ? std::int64_t{1} : capacity;
    auto state = std::make_shared<detail::StreamState<Out>>(usable);
    StageOptions o;
    o.max_demand = usable;
    o.demand = DemandControl::manual;
    auto keeper = std::make_shared<const detail::Ender<detail::StreamState<Out>>>(state);
    auto s = chain<void>(std::move(name), StageKind::consumer, "stream",
                         detail::StreamSink<Out>{state, std::move(keeper)}, std::move(o));
    auto& node = graph_->nodes[s.id()];
    if (problem) node.problems.push_back(*problem);
    graph_->claims.push_back({"stage '" + node.name +
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
    set_dispatcher("broadcast", broadcast_dispatcher<Out>());
    return *this;
  }

  /// This stage's events are split by `hash(Out&)` into `partitions` (PartitionDispatcher); the
  /// stage chained from it takes partition i in its instance i.
  /// Invalid dispatcher options (no partition, a partition listed twice, named partitions
  /// without a hash, queue_size < 1) are reported by compile(), naming the stage.
  template <class Hash>
  requires(!std::is_void_v<Out>) Stage& partition(Partitions partitions, Hash hash,
                                                  PartitionDispatcherOptions options = {}) {
    try {
      set_dispatcher("partition",
                     partition_dispatcher<Out>(std::move(partitions), std::move(hash), options));
    } catch (const option_error& e) {
      refuse_dispatcher("partition", e);
    }
    return *this;
  }
  /// Same, with the default hash (std::hash<Out>).
  Stage& partition(Partitions partitions,
                   PartitionDispatcherOptions options = {}) requires(!std::is_void_v<Out>) {
    try {
      set_dispatcher("partition", partition_dispatcher<Out>(std::move(partitions), options));
    } catch (const option_error& e) {
      refuse_dispatcher("partition", e);
    }
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
    auto& node = graph_->nodes[id_];
    const std::string where =
        "stage '" + node.name + "' subscribing to '" + producer.name() + "': ";
    if (producer.graph_ != graph_) {  // its id means another stage here, or none
      node.problems.push_back(where + "'" + producer.name() + "' belongs to another graph");
      return *this;
    }
    // The options of the stage itself are set where it is declared.
    auto not_here = [&](const char* option) {
      node.problems.push_back(where + "option " + option +
                              ": not a subscription option (set it where the stage is declared)");
    };
    if (options.instances != 1) not_here("instances");
    if (options.buffer_size) not_here("buffer_size");
    if (options.buffer_keep != BufferKeep::last) not_here("buffer_keep");
    if (options.demand_mode != DemandMode::forward) not_here("demand_mode");
    if (options.dynamic) not_here("dynamic");
    if (node.function_handler && options.demand == DemandControl::manual)
      node.problems.push_back(where + detail::function_cannot_ask(node.kind, node.what));
    link<In>(producer.id(), id_, options.subscription());
    return *this;
  }

  std::size_t id() const noexcept { return id_; }
  const std::string& name() const { return graph_->nodes[id_].name; }
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
    Graph g(graph_);
    const auto sub = options.subscription();
    const auto id = g.template add<Out, Next, Handler>(std::move(name), kind, std::move(what),
                                                       std::move(handler), std::move(options));
    link<Out>(id_, id, sub);
    return Stage<Out, Next>(graph_, id);
  }

  /// A subscription carrying `Event`s (the Stage types have checked both ends).
  template <class Event>
  void link(std::size_t producer, std::size_t consumer, SubscriptionOptions options) {
    detail::GraphLink l;
    l.producer = producer;
    l.consumer = consumer;
    l.options = std::move(options);
    l.subscribe = [](Engine& e, std::size_t c, std::size_t p, const SubscriptionOptions& o) {
      e.subscribe_by_id<Event>(c, p, o);
    };
    graph_->links.push_back(std::move(l));
  }

  template <class Factory>
  void set_dispatcher(std::string name, Factory f) {
    auto& node = graph_->nodes[id_];
    node.dispatcher = std::move(name);
    node.dispatcher_factory = DispatcherFactory<Out>(std::move(f));
  }

  /// The dispatcher's options were refused: compile() reports it and makes none of the stage's
  /// subscriptions.
  void refuse_dispatcher(std::string name, const option_error& e) {
    auto& node = graph_->nodes[id_];
    node.dispatcher = std::move(name);
    node.problems.push_back("stage '" + node.name + "': " + e.what());
    node.broken = true;
  }

  std::shared_ptr<detail::GraphData> graph_;
  std::size_t id_;
};

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
  CompiledGraph(std::shared_ptr<const Engine> engine, std::shared_ptr<detail::GraphData> graph,
                std::string dot)
      : engine_(std::move(engine)), graph_(std::move(graph)), dot_(std::move(dot)) {}
  std::shared_ptr<const Engine> engine_;
  std::shared_ptr<detail::GraphData> graph_;
  std::string dot_;
};

/// Reads a running producer's output from the application (GenStage's stream/2 on a running
/// stage): attaches a sink named `name` to `producer` (Run::attach) and returns its events as a
/// range. At most `capacity` events wait for the reader; the reader's pace is the demand.
/// Stopping or destroying the stream detaches it; a broadcast's events are copied to it.
/// Throws option_error for an invalid capacity or subscription, like Run::attach.
template <class P>
auto attach_stream(Run& run, const P& producer, std::string name, std::int64_t capacity)
    -> PullStream<typename P::output_type> {
  using T = typename P::output_type;
  static_assert(!std::is_void_v<T>, "attach_stream: the stage is a sink: it emits nothing");
  const auto p = run.describe(producer, "attach");
  if (const auto problem = detail::stream_capacity_problem(name, capacity, p.name, p.instances))
    throw option_error(*problem);
  auto state = std::make_shared<detail::StreamState<T>>(capacity);
  SubscriptionOptions o;
  o.max_demand = capacity;
  o.demand = DemandControl::manual;
  auto keeper = std::make_shared<const detail::Ender<detail::StreamState<T>>>(state);
  run.attach(producer, std::move(name), detail::StreamSink<T>{state, std::move(keeper)}, o);
  return PullStream<T>(state);
}

// ---- Graph, out of line
// ---------------------------------------------------------------------------

template <class In, class Out, class Handler>
std::size_t Graph::add(std::string name, StageKind kind, std::string what, Handler handler,
                       StageOptions options) {
  detail::GraphNode n;
  n.name = std::move(name);
  n.kind = kind;
  n.what = std::move(what);
  n.options = std::move(options);
  if constexpr (!std::is_void_v<Out>)
    n.dispatcher_factory = DispatcherFactory<Out>(demand_dispatcher<Out>());
  if (kind == StageKind::consumer) {
    if (n.options.buffer_size)
      n.problems.push_back("stage '" + n.name + "': option buffer_size: a sink has no output");
    if (n.options.buffer_keep != BufferKeep::last)
      n.problems.push_back("stage '" + n.name + "': option buffer_keep: a sink has no output");
    if (n.options.demand_mode != DemandMode::forward)
      n.problems.push_back("stage '" + n.name +
                           "': option demand_mode: only sources have a demand mode");
    if (n.options.dynamic)
      n.problems.push_back("stage '" + n.name +
                           "': option dynamic: a sink has no output to attach to");
  }
  if (kind == StageKind::producer) {  // a source has no input: its subscription options
    const auto& o = n.options;
    auto nothing = [&](const char* option) {
      n.problems.push_back("stage '" + n.name + "': option " + option +
                           ": a source subscribes to nothing");
    };
    if (o.max_demand != default_max_demand) nothing("max_demand");
    if (o.min_demand) nothing("min_demand");
    if (o.cancel != CancelMode::permanent) nothing("cancel");
    if (o.partition) nothing("partition");
    if (o.demand != DemandControl::automatic) nothing("demand");
    if (o.selector.has_value()) nothing("selector");
  }
  if constexpr (detail::is_function_stage<Handler>) {
    n.function_handler = true;
    if (n.options.demand == DemandControl::manual)
      n.problems.push_back("stage '" + n.name + "': " + detail::function_cannot_ask(kind, n.what));
  }
  n.declare = [h = std::move(handler)](Engine& e, const detail::GraphNode& node) -> std::size_t {
    const auto instances = node.options.instances;
    if constexpr (std::is_void_v<In>) {
      return e
          .producer<Out>(node.name, h,
                         std::any_cast<DispatcherFactory<Out>>(node.dispatcher_factory),
                         node.options.producer(), instances)
          .id();
    } else if constexpr (std::is_void_v<Out>) {
      return e.consumer<In>(node.name, h, instances).id();
    } else {
      return e
          .producer_consumer<In, Out>(
              node.name, h, std::any_cast<DispatcherFactory<Out>>(node.dispatcher_factory),
              node.options.producer(), instances)
          .id();
    }
  };
  data_->nodes.push_back(std::move(n));
  return data_->nodes.size() - 1;
}

template <class Src>
requires requires {
  Src::single_instance;
}
auto Graph::source(std::string name, Src src, StageOptions options)
    -> Stage<void, typename Src::Out> {
  using Out = typename Src::Out;
  const auto instances = options.instances;
  const auto id = add<void, Out>(std::move(name), StageKind::producer, Src::what, std::move(src),
                                 std::move(options));
  auto& node = data_->nodes[id];
  if (Src::single_instance && instances != 1)
    node.problems.push_back("stage '" + node.name +
                            "': option instances must be 1 for a range source (each instance "
                            "would emit the whole range), got: " +
                            std::to_string(instances));
  return Stage<void, Out>(data_, id);
}

template <class Out, class Handler>
Stage<void, Out> Graph::source(std::string name, Handler handler, StageOptions options) {
  return Stage<void, Out>(data_,
                          add<void, Out>(std::move(name), StageKind::producer, "source (class)",
                                         std::move(handler), std::move(options)));
}

template <class T>
std::pair<PushHandle<T>, Stage<void, T>> Graph::push_source(std::string name,
                                                            std::ptrdiff_t capacity,
                                                            StageOptions options) {
  // An invalid capacity is reported by compile(); the state is made with a valid one (the
  // semaphore counting its free places holds at most max_capacity).
  const auto problem = detail::capacity_problem(name, capacity);
  auto state = std::make_shared<detail::PushState<T>>(problem ? std::ptrdiff_t{1} : capacity);
  const auto instances = options.instances;
  auto keeper = std::make_shared<const detail::Closer<detail::PushState<T>>>(state);
  const auto id = add<void, T>(std::move(name), StageKind::producer, "source (push)",
                               detail::PushSource<T>{state, std::move(keeper)}, std::move(options));
  auto& node = data_->nodes[id];
  if (problem) node.problems.push_back(*problem);
  data_->claims.push_back({"stage '" + node.name +
                           "' is a push source, fed by one handle, so its graph runs once, and "
                           "a run of it has already started (declare the graph again for another "
                           "run)"});
  if (instances != 1)
    node.problems.push_back(
        "stage '" + node.name +
        "': option instances must be 1 for a push source, got: " + std::to_string(instances));
  return {PushHandle<T>(state), Stage<void, T>(data_, id)};
}

inline CompiledGraph Graph::compile() const {
  auto engine = std::make_shared<Engine>(detail::OwnerTag{data_->owner});
  std::vector<std::string> problems;
  std::vector<std::string> troubled;  // stages already reported (their topology follows)
  auto report = [&](const std::string& stage, const std::string& problem) {
    problems.push_back(detail::escape_controls(problem));
    troubled.push_back(stage);
  };
  const auto& nodes = data_->nodes;
  std::vector<std::optional<std::size_t>> ids(nodes.size());
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    for (auto& p : nodes[i].problems)
      report(nodes[i].name, p);
    try {
      ids[i] = nodes[i].declare(*engine, nodes[i]);
    } catch (const option_error& e) {
      report(nodes[i].name, e.what());
    }
  }
  for (auto& l : data_->links) {
    if (!ids[l.producer] || !ids[l.consumer] || nodes[l.producer].broken ||
        nodes[l.consumer].broken) {  // a stage that failed: its links say no more
      troubled.push_back(nodes[l.producer].name);
      troubled.push_back(nodes[l.consumer].name);
      continue;
    }
    try {
      l.subscribe(*engine, *ids[l.consumer], *ids[l.producer], l.options);
    } catch (const option_error& e) {
      report(nodes[l.consumer].name, e.what());
      troubled.push_back(nodes[l.producer].name);
    }
  }
  for (auto& p : engine->problems()) {
    bool follows = false;  // "no subscription" after a refused subscription says nothing new
    for (auto& t : troubled)
      follows = follows || p.starts_with("stage '" + t + "': a ");
    if (!follows) problems.push_back(p);
  }
  if (!problems.empty()) {
    std::string all;
    for (auto& p : problems)
      all += (all.empty() ? "" : "\n") + p;
    throw option_error(all);
  }
  return CompiledGraph(std::move(engine), data_, to_dot());
}

inline Run Graph::run(RunOptions options) const {
  return compile().run(std::move(options));
}

inline std::string Graph::to_dot() const {
  auto escaped = [](const std::string& s) {  // for inside a DOT string
    std::string q;
    for (char c : s) {
      if (c == '"' || c == '\\') q += '\\';
      q += c;
    }
    return q;
  };
  static constexpr const char* kinds[] = {"source", "stage", "sink"};
  std::string dot = "digraph sluice {\n  rankdir=LR;\n  node [shape=box];\n";
  for (auto& n : data_->nodes) {
    std::string label = escaped(n.name) + "\\n" + n.what;  // DOT's \n: a line break
    if (n.options.instances != 1) label += " x" + std::to_string(n.options.instances);
    if (n.kind != StageKind::consumer) label += "\\ndispatcher: " + n.dispatcher;
    if (n.options.dynamic) label += "\\ndynamic";
    dot += "  \"" + escaped(n.name) + "\" [label=\"" + label +
           "\", kind=" + kinds[static_cast<int>(n.kind)] + "];\n";
  }
  for (auto& l : data_->links) {
    const auto& o = l.options;
    std::string label = "max_demand=" + std::to_string(o.max_demand) +
                        " min_demand=" + std::to_string(o.effective_min_demand());
    if (o.cancel != CancelMode::permanent)
      label += o.cancel == CancelMode::transient ? " cancel=transient" : " cancel=temporary";
    if (o.demand == DemandControl::manual) label += " demand=manual";
    if (o.partition) label += " partition=" + escaped(o.partition->to_string());
    if (o.selector.has_value()) label += " selector";
    dot += "  \"" + escaped(data_->nodes[l.producer].name) + "\" -> \"" +
           escaped(data_->nodes[l.consumer].name) + "\" [label=\"" + label + "\"];\n";
  }
  return dot + "}\n";
}

}  // namespace sluice
