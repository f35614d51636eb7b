#pragma once

#include <any>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <sluice/engine/context.hpp>
#include <sluice/engine/detail/cell/cell_base.hpp>
#include <sluice/engine/detail/executor.hpp>
#include <sluice/engine/detail/plan.hpp>
#include <sluice/engine/detail/run_core.hpp>
#include <sluice/engine/detail/stable_table.hpp>
#include <sluice/engine/detail/tbb_backend.hpp>
#include <sluice/engine/detail/validate.hpp>
#include <sluice/engine/detail/wiring.hpp>
#include <sluice/engine/diagnosis.hpp>
#include <sluice/engine/each.hpp>
#include <sluice/engine/handler.hpp>
#include <sluice/engine/metrics.hpp>
#include <sluice/engine/options.hpp>
#include <sluice/engine/stage_ref.hpp>

namespace sluice {

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
    }
    core_->timers().stop();            // no cell runs any more: nothing asks it for a wake-up
    if (tbb_) tbb_->wait_for_tasks();  // and a wake-up it had made has been run
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
      throw std::logic_error(
          core_->timers().earliest()
              ? "sluice: manual run is idle but not finished (it waits for input, or for its "
                "virtual clock to reach a timer: Run::advance)"
              : "sluice: manual run is idle but not finished (it waits for input)");
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

  /// Delivers `info` to the stage's handle_info as soon as it runs (GenStage: a plain message
  /// sent to the stage). `stage`: the engine's StageRef or the builder's Stage. Any thread;
  /// lock-free; does not wait.
  template <StageHandle S>
  void send_info(const S& stage, std::any info, std::size_t instance = 0) {
    cell(id_in_run(stage, "send_info"), instance)
        .post_external({detail::ExternalCommand::Kind::send_info, std::move(info)});
  }

  /// Delivers `info` to the stage's handle_info after the events it has buffered at that
  /// moment have been dispatched (GenStage async_info/2). Any thread; lock-free; does not wait.
  template <StageHandle S>
  void async_info(const S& stage, std::any info, std::size_t instance = 0) {
    cell(id_in_run(stage, "async_info"), instance)
        .post_external({detail::ExternalCommand::Kind::async_info, std::move(info)});
  }

  /// Switches a producer between forward and accumulate demand (GenStage demand/2). Any thread.
  template <class S>
  requires requires(const S& s) {
    typename S::input_type;
    { s.id() } -> std::convertible_to<std::size_t>;
  }
  void set_demand_mode(const S& stage, DemandMode mode, std::size_t instance = 0) {
    static_assert(std::is_void_v<typename S::input_type>,
                  "set_demand_mode: only a producer has a demand mode");
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
      run_until_idle();
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
  template <StageHandle S>
  StageSummary describe(const S& stage, const char* caller = "describe") const {
    const auto id = id_in_run(stage, caller);
    const auto count = cells_of(id).count;
    std::lock_guard lock(table_->mutex);
    const auto& entry = table_->stages[id];
    return {entry.plan.name, entry.plan.kind, count};
  }

  /// The run's clock (Context::now): steady_clock, or a manual run's virtual clock. Any thread.
  TimePoint now() const noexcept { return core_->clock().now(); }

  /// Manual mode only: moves the virtual clock forward by `by`, firing the timers that fall due
  /// on the way in deadline order, on this thread: the clock stops at each deadline, the cells
  /// due then run until nothing is runnable (what they start in turn fires too, if it falls
  /// due before the end), and the clock ends `by` later than it began. Throws
  /// std::logic_error on a run that is not manual, std::invalid_argument for a negative `by`.
  void advance(Duration by) {
    if (!manual_)
      throw std::logic_error(
          "sluice: advance: only a manual run (RunOptions::manual) has a virtual clock");
    if (by < Duration::zero()) throw std::invalid_argument("sluice: advance: negative duration");
    auto& clock = core_->clock();
    auto& timers = core_->timers();
    const auto until = clock.now() + by;
    run_until_idle();
    for (auto at = timers.earliest(); at && *at <= until; at = timers.earliest()) {
      clock.set(*at);
      run_until_idle();
    }
    clock.set(until);
  }

  /// Manual mode only: runs scheduled cells on this thread until none is runnable.
  /// Timers due at the virtual clock's time (a zero delay) fire on the way.
  std::size_t run_until_idle(std::size_t limit = SIZE_MAX) {
    auto runs = manual_->run_until_idle(limit);
    auto& timers = core_->timers();
    const auto now = core_->clock().now();
    for (auto at = timers.earliest(); runs < limit && at && *at <= now; at = timers.earliest()) {
      timers.wake_due(now);
      runs += manual_->run_until_idle(limit - runs);
    }
    return runs;
  }

 private:
  friend class Engine;
  Run() = default;

  /// A new run of `plan` (validated): its cells and edges, wired before any cell runs, then
  /// started (Engine::start).
  static Run start(std::uint64_t owner, const detail::Plan& plan, RunOptions options);

  /// A stage's cells: consecutive numbers in the cell table.
  struct StageCells {
    std::uint32_t first = 0, count = 0;
  };
  /// The stages and edges; attach() adds to them while other threads read them.
  struct Table {
    std::mutex mutex;  // attach and metrics; never on the event path
    std::vector<detail::RunStage> stages;
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
    const auto c = table_->cells[stage];
    if (c.count == 0) fused_stage(stage);
    return c;
  }
  /// Throws: `stage` was fused (it has no cell of its own to address).
  [[noreturn]] void fused_stage(std::size_t stage) const {
    std::lock_guard lock(table_->mutex);
    const auto& s = table_->stages[stage].plan;
    throw option_error("stage '" + s.name + "' is fused into '" +
                       table_->stages[s.fused_into.value_or(stage)].plan.name +
                       "' and has no cell of its own to address (StageOptions::fuse = false "
                       "keeps it apart)");
  }

  /// Attach's wiring, under the table lock: the new stage `c` subscribed by `sub`, its cells
  /// counted live and published, the producer told by a subscribe command (engine/DESIGN.md 8).
  /// Returns its stage number.
  std::size_t attach_stage(detail::RunStage c, const detail::SubscriptionPlan& sub);

  /// Until every stage has finished (manual mode: until nothing is runnable).
  void settle_down() {
    if (manual_) {
      run_until_idle();
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

// ---- out of line ------------------------------------------------------------------------------

inline Metrics Run::metrics() const {
  Metrics m;
  std::lock_guard lock(table_->mutex);
  auto& cells = core_->cells();
  for (std::size_t i = 0; i < cells.size(); ++i)
    cells[i].metrics_into(m);
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
                         "': " + detail::function_cannot_ask(StageKind::consumer, "for_each"));
    return attach(producer, std::move(name), EachHandler<In, Handler>{std::move(handler)},
                  std::move(options), instances);
  } else {
    auto never = [](const std::string&) { return false; };
    detail::throw_first(detail::name_problems(name, never));
    detail::throw_first(detail::instances_problems(name, instances));
    const auto producer_id = id_in_run(producer, "attach");
    std::lock_guard lock(table_->mutex);
    auto& stages = table_->stages;
    if (producer_id >= stages.size())
      throw option_error("attach: unknown stage (a stage of another graph?)");
    for (auto& st : stages)
      if (st.plan.name == name) throw option_error("stage '" + name + "': name already used");
    const detail::RunStage& p = stages[producer_id];
    if (p.plan.fused_into)
      throw option_error("stage '" + name + "' attaching to '" + p.plan.name + "': '" +
                         p.plan.name + "' is fused into '" + stages[*p.plan.fused_into].plan.name +
                         "' (StageOptions::fuse = false keeps it apart)");
    if (p.plan.kind == StageKind::consumer || p.plan.out != typeid(In))
      throw option_error("stage '" + name + "' attaching to '" + p.plan.name +
                         "': it does not emit this event type");
    std::string unused;  // a consumer has no dispatcher
    detail::RunStage c{
        detail::make_stage_plan<In, void, Handler>(name, StageKind::consumer, instances, {},
                                                   std::move(handler), {}, unused),
        {}};
    const auto sub =
        detail::make_subscription_plan<In>(producer_id, stages.size(), c.plan, std::move(options));
    detail::throw_first(detail::options_problems(c.plan, p.plan, sub.options));
    detail::throw_first(detail::memory_problems(name, p.plan.name, sub.options.max_demand,
                                                sub.edges->ring_bytes(sub.options),
                                                instances * p.cells.size()));
    return StageRef<In, void>(attach_stage(std::move(c), sub), owner_);
  }
}

inline Run Run::start(std::uint64_t owner, const detail::Plan& plan, RunOptions options) {
  Run run;
  run.owner_ = owner;
  detail::Executor* ex = nullptr;
  if (options.manual) {
    run.manual_ = std::make_unique<detail::ManualExecutor>();
    ex = run.manual_.get();
  } else {
    run.tbb_ = std::make_unique<detail::TbbExecutor>(options.concurrency, options.direct_handoff);
    ex = run.tbb_.get();
  }
  run.core_ = std::make_unique<detail::RunCore>(
      *ex, options.logger ? std::move(options.logger) : detail::default_logger(), options.quantum,
      options.fail_fast, options.manual);
  auto& cells = run.core_->cells();
  auto& stages = run.table_->stages;
  const auto fused = detail::fuse(plan);  // engine/DESIGN.md 10
  for (auto& s : fused.stages) {
    if (s.fused_into) {  // it runs in its host's cell
      run.table_->cells.add({cells.next_index(), 0});
      stages.push_back({s, {}});
      continue;
    }
    const auto first = cells.next_index();
    detail::RunStage stage{s, {}};
    for (auto& cell : s.cells->make(*run.core_, s, first)) {
      stage.cells.push_back(cell->index());
      cells.add(std::move(cell));
    }
    run.table_->cells.add({first, static_cast<std::uint32_t>(stage.cells.size())});
    stages.push_back(std::move(stage));
  }
  auto cell = [&](const detail::RunStage& st) {
    return [&cells, &st](std::size_t i) -> detail::CellBase& { return cells[st.cells[i]]; };
  };
  for (auto& sub : fused.subscriptions) {
    auto& p = stages[sub.producer];
    auto& c = stages[sub.consumer];
    auto& host = c.plan.fused_into ? stages[*c.plan.fused_into] : c;  // a group's head: its host
    sub.edges->wire({p.plan, p.cells, cell(p)}, {c.plan, host.cells, cell(host)}, sub.options,
                    run.table_->edges, nullptr);
  }
  run.core_->start();
  return run;
}

inline std::size_t Run::attach_stage(detail::RunStage c, const detail::SubscriptionPlan& sub) {
  auto& cells = core_->cells();
  auto& stages = table_->stages;
  const auto& p = stages[sub.producer];
  // Everything that may throw (allocation, copying the handler) comes before the cells are
  // counted live: a live cell that never runs would keep the run from ending.
  const auto first = cells.next_index();
  auto made = c.plan.cells->make(*core_, c.plan, first);
  for (std::size_t i = 0; i < made.size(); ++i)
    c.cells.push_back(static_cast<std::uint32_t>(first + i));
  std::vector<detail::EdgeRecord> edges;
  std::vector<detail::PendingSubscribe> pending;
  sub.edges->wire(
      {p.plan, p.cells, [&](std::size_t i) -> detail::CellBase& { return cells[p.cells[i]]; }},
      {c.plan, c.cells, [&](std::size_t i) -> detail::CellBase& { return *made[i]; }}, sub.options,
      edges, &pending);
  table_->edges.reserve(table_->edges.size() + edges.size());
  stages.reserve(stages.size() + 1);
  cells.reserve(made.size());
  table_->cells.reserve(1);
  // Only posting the commands may still allocate (the command queue's blocks).
  if (!core_->add_live(made.size()))
    throw std::logic_error("sluice: attach '" + c.plan.name + "': the run has ended");
  for (auto& cell : made)
    cells.add(std::move(cell));
  for (auto& e : edges)
    table_->edges.push_back(std::move(e));
  table_->cells.add({first, static_cast<std::uint32_t>(c.cells.size())});
  const auto ids = c.cells;
  stages.push_back(std::move(c));
  for (auto& command : pending)
    cells[command.producer_cell].post_external(std::move(command.command));
  for (auto i : ids)
    core_->notify(i);
  return stages.size() - 1;
}

}  // namespace sluice
