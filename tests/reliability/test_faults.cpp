// Fault injection: small random graphs (the shared model's lines: a source, a chain of 0 to 2
// stages, a fan-out to 1 to 3 sinks: 2 to 6 stages) where one stage instance throws from one
// callback at a random point.
// Every run ends, wait() names the stage, and the counters account for every event.
//
// Seeded: each failure prints its seed; SLUICE_FAULT_SEED=<seed> replays one.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <reliability/common.hpp>

namespace {

namespace rg = sluice_test::rg;
using rel::Ev;
using sluice::CancelMode;

/// Where the fault is.
enum class Where {
  handle_demand,     // the source's handle_demand
  pc_events,         // a producer_consumer's handle_events
  sink_events,       // a consumer's handle_events
  handle_info,       // a stage's handle_info (woken from the test thread, or by its own timer)
  cancel_consumer,   // handle_cancel on the consumer side (its producer ended normally)
  cancel_producer,   // handle_cancel on the producer side (a sink stopped itself)
  handle_subscribe,  // handle_subscribe, either side
  partition_hash,    // the fan-out's partition hash
  broadcast_select,  // a broadcast subscription's selector
  map_function,      // a map stage's function
  filter_function,   // a filter stage's predicate
  count
};
constexpr const char* where_names[] = {"handle_demand",
                                       "pc handle_events",
                                       "sink handle_events",
                                       "handle_info",
                                       "handle_cancel (consumer side)",
                                       "handle_cancel (producer side)",
                                       "handle_subscribe",
                                       "partition hash",
                                       "broadcast selector",
                                       "map function",
                                       "filter function"};

/// A random line (support/random_graph.hpp: a source, a chain of 0 to 2 producer_consumers
/// written as classes, maps or filters, and 1 to 3 sinks behind the chain's last stage, the
/// fan-out) and its fault.
struct Scenario {
  rg::GraphSpec graph;
  Where where = Where::handle_demand;
  std::size_t target = 0;         // the stage whose instance 0 throws
  bool producer_side = false;     // handle_subscribe: as a producer (else as a consumer)
  std::size_t stopper = 0;        // cancel_producer: the sink that stops itself
  std::uint64_t at = 0;           // the fault's point (events or calls)
  std::uint64_t overshoot = 0;    // events the source emits beyond demand per call
  std::string expected_instance;  // named by stage_error
  bool ticking = false;           // every class stage keeps a periodic timer (its ticks do nothing)
  bool by_timer = false;          // handle_info: the message comes from the target's own timer
  bool once = false;              // the fault is thrown once (the target restarts: run_restarted)

  const rg::StageSpec& stage(std::size_t i) const { return graph.stages[i]; }
  std::size_t fan() const { return graph.fan_out(); }
  rg::Dispatch disp() const { return stage(fan()).dispatch; }
  std::size_t producer_of(std::size_t i) const { return stage(i).inputs.at(0).producer; }
  CancelMode cancel(std::size_t i) const { return stage(i).inputs.at(0).cancel; }
  bool is_relay(std::size_t i) const {
    return stage(i).role == rg::Role::stage && stage(i).form == rg::Form::handler;
  }
  std::string describe() const {
    return std::string("fault: ") + where_names[static_cast<int>(where)] +
           (by_timer ? " (from its timer)" : "") + " in '" + expected_instance + "' at " +
           std::to_string(at) + "; overshoot " + std::to_string(overshoot) +
           (ticking ? "; ticking" : "") + "\n" + graph.describe();
  }
};

constexpr std::size_t max_stages = 8;

/// What the handlers count (read after the run has ended: its end orders every write before).
struct Shared {
  explicit Shared(const Scenario& s) : sc(s) {}
  const Scenario& sc;
  std::atomic<std::uint64_t> produced{0};   // events the sources emitted
  std::atomic<std::uint64_t> delivered{0};  // events in sink calls that returned
  std::atomic<std::uint64_t> rejected_by_selectors{0};
  std::array<std::atomic<std::uint64_t>, max_stages> emitted{};   // per stage
  std::array<std::atomic<std::uint64_t>, max_stages> rejected{};  // per (multi-instance) filter
  std::array<std::atomic<std::uint64_t>, max_stages> calls{};     // function faults
  std::array<std::vector<char>, max_stages> kept;  // single-instance filters: each verdict
  std::mutex mutex;
  std::optional<sluice::Waker> waker;  // the handle_info target's instance 0
  std::string fault_message;           // what the injected exception says
  std::atomic<int> thrown{0};

  [[noreturn]] void fail(const std::string& instance, const char* what, Ev ev) {
    std::string msg = std::string("injected fault: ") + what + " in '" + instance + "' (event " +
                      std::to_string(ev.id) + ")";
    {
      std::lock_guard lock(mutex);
      fault_message = msg;
    }
    thrown.fetch_add(1);
    throw rel::EventFault(msg, std::move(ev));
  }
  bool here(Where w, std::size_t stage, std::size_t instance) const {
    return sc.where == w && sc.target == stage && instance == 0 && !(sc.once && thrown.load() > 0);
  }

  /// A timer's message.
  struct Tick {};
  /// From a class stage's first handle_subscribe: the timers the scenario wants it to keep (a
  /// periodic one whose ticks do nothing, the fault's own), and the handle_info target's waker.
  template <class Out>
  void start(std::size_t stage, bool& started, sluice::Context<Out>& ctx) {
    if (started) return;
    started = true;
    if (sc.ticking) ctx.send_every(std::chrono::microseconds(50 + 97 * stage), Tick{});
    if (!here(Where::handle_info, stage, ctx.instance())) return;
    if (sc.by_timer) {
      ctx.send_every(std::chrono::microseconds(100), Tick{});
    } else {
      std::lock_guard lock(mutex);
      waker = ctx.waker();
    }
  }
  /// handle_info: the fault, when it is the target's and its time has come (a tick once the
  /// sinks have seen `at` events, or the test thread's message).
  template <class Out>
  void info(std::size_t stage, const std::any& message, std::uint64_t seen,
            sluice::Context<Out>& ctx) {
    if (!here(Where::handle_info, stage, ctx.instance())) return;
    if (std::any_cast<Tick>(&message) != nullptr && (!sc.by_timer || delivered.load() < sc.at))
      return;
    fail(std::string(ctx.name()), "handle_info", rel::make_ev(seen));
  }
};

using SharedPtr = std::shared_ptr<Shared>;

struct Source {
  SharedPtr sh;
  std::size_t stage = 0;
  std::uint64_t next = 0;
  bool started = false;

  void handle_subscribe(const sluice::SubscribeInfo&, sluice::Context<Ev>& ctx) {
    sh->start(stage, started, ctx);
    if (sh->here(Where::handle_subscribe, stage, ctx.instance()))
      sh->fail(std::string(ctx.name()), "handle_subscribe", rel::make_ev(0));
  }
  void handle_demand(std::size_t n, sluice::Context<Ev>& ctx) {
    const auto inst = ctx.instance();
    const bool faulty = sh->here(Where::handle_demand, stage, inst);
    const std::uint64_t want = n + sh->sc.overshoot;
    const auto limit = sh->sc.stage(stage).counts[inst];
    for (std::uint64_t i = 0; i < want && next < limit; ++i, ++next) {
      const auto id = (std::uint64_t{inst} << 40) | next;
      if (faulty && next == sh->sc.at)
        sh->fail(std::string(ctx.name()), "handle_demand", rel::make_ev(id));
      ctx.emit(rel::make_ev(id));
      sh->produced.fetch_add(1, std::memory_order_relaxed);
      sh->emitted[stage].fetch_add(1, std::memory_order_relaxed);
    }
    if (next >= limit) ctx.finish();
  }
  void handle_info(std::any& m, sluice::Context<Ev>& ctx) { sh->info(stage, m, next, ctx); }
  void handle_cancel(const sluice::CancelInfo&, sluice::Context<Ev>& ctx) {
    if (sh->here(Where::cancel_producer, stage, ctx.instance()))
      sh->fail(std::string(ctx.name()), "handle_cancel", rel::make_ev(next));
  }
};

/// A 1:1 producer_consumer written as a class.
struct Relay {
  SharedPtr sh;
  std::size_t stage = 0;
  std::uint64_t seen = 0;
  bool started = false;

  template <class E>
  void relay(std::span<E> events, sluice::Context<Ev>& ctx) {
    const bool faulty = sh->here(Where::pc_events, stage, ctx.instance());
    for (auto& e : events) {
      if (faulty && seen == sh->sc.at) sh->fail(std::string(ctx.name()), "handle_events", Ev(e));
      ++seen;
      ctx.emit(Ev(std::move(e)));  // a copy for a broadcast's const events
      sh->emitted[stage].fetch_add(1, std::memory_order_relaxed);
    }
  }
  void handle_events(std::span<Ev> events, sluice::Context<Ev>& ctx) { relay(events, ctx); }
  void handle_events(std::span<const Ev> events, sluice::Context<Ev>& ctx) { relay(events, ctx); }
  void handle_subscribe(const sluice::SubscribeInfo& info, sluice::Context<Ev>& ctx) {
    sh->start(stage, started, ctx);
    if (sh->here(Where::handle_subscribe, stage, ctx.instance()) &&
        info.upstream != sh->sc.producer_side)
      sh->fail(std::string(ctx.name()), "handle_subscribe", rel::make_ev(0));
  }
  void handle_info(std::any& m, sluice::Context<Ev>& ctx) { sh->info(stage, m, seen, ctx); }
  void handle_cancel(const sluice::CancelInfo& info, sluice::Context<Ev>& ctx) {
    if (info.upstream && sh->here(Where::cancel_consumer, stage, ctx.instance()))
      sh->fail(std::string(ctx.name()), "handle_cancel", rel::make_ev(seen));
    if (!info.upstream && sh->here(Where::cancel_producer, stage, ctx.instance()))
      sh->fail(std::string(ctx.name()), "handle_cancel", rel::make_ev(seen));
  }
};

struct Sink {
  SharedPtr sh;
  std::size_t stage = 0;
  std::uint64_t seen = 0;
  bool stopped = false;
  bool started = false;

  template <class E>
  void take(std::span<E> events, sluice::Context<void>& ctx) {
    const bool faulty = sh->here(Where::sink_events, stage, ctx.instance());
    for (auto& e : events) {
      if (faulty && seen == sh->sc.at) sh->fail(std::string(ctx.name()), "handle_events", Ev(e));
      ++seen;
    }
    // Counted when the call returns: a call that throws hands back its whole chunk (the edge
    // counts it as not received).
    sh->delivered.fetch_add(events.size(), std::memory_order_relaxed);
    if (sh->sc.where == Where::cancel_producer && sh->sc.stopper == stage && ctx.instance() == 0 &&
        sh->delivered.load() >= sh->sc.at && !stopped) {
      stopped = true;
      ctx.stop();  // its producer's handle_cancel throws
    }
  }
  void handle_events(std::span<Ev> events, sluice::Context<void>& ctx) { take(events, ctx); }
  void handle_events(std::span<const Ev> events, sluice::Context<void>& ctx) { take(events, ctx); }
  void handle_subscribe(const sluice::SubscribeInfo&, sluice::Context<void>& ctx) {
    sh->start(stage, started, ctx);
    if (sh->here(Where::handle_subscribe, stage, ctx.instance()))
      sh->fail(std::string(ctx.name()), "handle_subscribe", rel::make_ev(0));
  }
  void handle_info(std::any& m, sluice::Context<void>& ctx) { sh->info(stage, m, seen, ctx); }
  void handle_cancel(const sluice::CancelInfo& info, sluice::Context<void>& ctx) {
    if (info.upstream && sh->here(Where::cancel_consumer, stage, ctx.instance()))
      sh->fail(std::string(ctx.name()), "handle_cancel", rel::make_ev(seen));
  }
};

// ---- scenario generation ------------------------------------------------------------------------

/// The graphs: lines of 2 to 6 stages, instances 1 or 2, any dispatcher, cancel modes drawn.
rg::Knobs knobs(Where where) {
  rg::Knobs k;
  k.shape = rg::Shape::line;
  k.max_stages = 6;
  k.max_instances = 2;
  k.stage_forms = {rg::Form::handler, rg::Form::map, rg::Form::filter};
  k.broadcast = where == Where::broadcast_select ? 1.0
                : where == Where::partition_hash ? 0.0
                                                 : 1.0 / 3;
  k.partition = where == Where::partition_hash     ? 1.0
                : where == Where::broadcast_select ? 0.0
                                                   : 1.0 / 3;
  k.selector = 0.5;
  k.filter = 0.0;  // a relay is 1:1
  k.max_demands = {1, 2, 7, 64, 1000};
  k.min_demand = 0.0;
  k.cancel_modes = true;
  k.source_buffer = 0.0;
  k.stage_buffer = 0.0;
  // The fault needs a producer_consumer of its kind.
  if (where == Where::pc_events || where == Where::map_function || where == Where::filter_function)
    k.min_chain = 1;
  return k;
}

/// Makes stage i a producer_consumer of form f (a filter filters, the others do not).
void set_form(rg::GraphSpec& g, std::size_t i, rg::Form f, rg::Entropy& e) {
  auto& st = g.stages[i];
  st.form = f;
  st.filter = f == rg::Form::filter ? rg::Filter::drawn(e) : rg::Filter{};
}

Scenario make_scenario(std::uint64_t seed) {
  rg::Seeded e(seed);
  Scenario s;
  s.where = static_cast<Where>(seed % static_cast<std::uint64_t>(Where::count));
  s.graph = rg::generate(e, knobs(s.where));
  s.graph.seed = seed;
  auto& g = s.graph;
  const auto fan = s.fan();
  const auto fix_chain = [&](rg::Form f) {  // the fault needs a chain stage of form f
    std::vector<std::size_t> have;
    for (std::size_t i = 1; i <= fan; ++i)
      if (g.stages[i].form == f) have.push_back(i);
    if (!have.empty()) return e.pick(have);
    const auto i = e.uniform<std::size_t>(1, fan);
    set_form(g, i, f, e);
    return i;
  };
  switch (s.where) {
    case Where::pc_events:
      s.target = fix_chain(rg::Form::handler);
      break;
    case Where::map_function:
      s.target = fix_chain(rg::Form::map);
      g.stages[s.target].instances = 1;
      break;
    case Where::filter_function:
      s.target = fix_chain(rg::Form::filter);
      g.stages[s.target].instances = 1;
      break;
    case Where::partition_hash:
    case Where::broadcast_select:
      s.target = fan;
      g.stages[fan].instances = 1;  // one dispatcher: the fault is in one known instance
      break;
    default:
      break;
  }
  if (s.where == Where::cancel_producer && fan > 0 && !s.is_relay(fan))
    set_form(g, fan, rg::Form::handler, e);  // a handle_cancel to throw from
  const auto first_sink = fan + 1;
  const auto sinks = g.stages.size() - first_sink;
  std::vector<std::size_t> classes;  // stages written as classes
  for (std::size_t i = 0; i < g.stages.size(); ++i)
    if (g.stages[i].form == rg::Form::handler) classes.push_back(i);
  switch (s.where) {
    case Where::handle_demand:
      s.target = 0;
      break;
    case Where::sink_events:
      s.target = first_sink + e.uniform<std::size_t>(0, sinks - 1);
      break;
    case Where::handle_info:
      s.target = e.pick(classes);
      break;
    case Where::handle_subscribe:
      s.target = e.pick(classes);
      s.producer_side = s.target == 0 || (s.is_relay(s.target) && e.chance(0.5));
      break;
    case Where::cancel_consumer: {
      std::vector<std::size_t> consumers;
      for (auto i : classes)
        if (i > 0) consumers.push_back(i);
      s.target = e.pick(consumers);
      // A finite source: its end reaches the target's handle_cancel.
      g.stages[0].counts.assign(g.stages[0].instances, e.uniform<std::uint64_t>(1, 3000));
      break;
    }
    case Where::cancel_producer:
      s.target = fan;
      s.stopper = first_sink + e.uniform<std::size_t>(0, sinks - 1);
      break;
    case Where::broadcast_select: {
      const auto branch = first_sink + e.uniform<std::size_t>(0, sinks - 1);
      g.stages[branch].inputs[0].selector = rg::Selector::drawn(e);
      s.stopper = branch;  // the branch whose selector throws
      break;
    }
    default:
      break;
  }
  // A demand dispatcher serves the subscriber with the most demand first (GenStage's
  // DemandDispatcher), so a sink with a small max_demand beside one with a large max_demand that
  // keeps up may receive nothing at all: a faulty sink there would never reach its fault, nor a
  // stopping sink its stop (seen under TSan: the run went on for ever). That sink gets the
  // largest max_demand.
  if (s.disp() == rg::Dispatch::demand &&
      (s.where == Where::sink_events || s.where == Where::cancel_producer)) {
    auto& needs_events = g.stages[s.where == Where::sink_events ? s.target : s.stopper].inputs[0];
    for (std::size_t i = first_sink; i < g.stages.size(); ++i)
      needs_events.max_demand = std::max(needs_events.max_demand, g.stages[i].inputs[0].max_demand);
  }
  // Small: a target with a small max_demand next to a large one gets a small share.
  s.at = e.uniform<std::uint64_t>(
      0, s.where == Where::broadcast_select || s.where == Where::partition_hash ? 999 : 499);
  if (e.chance(1.0 / 3)) {  // a source that emits beyond demand into a small buffer: drops
    s.overshoot = e.uniform<std::uint64_t>(1, 40);
    g.stages[0].buffer_size = e.uniform<std::int64_t>(16, 115);
  }
  s.expected_instance = g.instance_name(s.target, 0);
  // Drawn last, so that the draws above (and the graphs of seeds recorded before) stay the same.
  s.ticking = e.chance(0.3);
  s.by_timer = s.where == Where::handle_info && e.chance(0.5);
  return s;
}

// ---- building it --------------------------------------------------------------------------------

/// The stages of a fault scenario, for the shared builder: classes that fail where the scenario
/// says, functions and selectors that count their verdicts.
struct Code {
  SharedPtr sh;

  Source source(std::size_t i) const { return {sh, i}; }
  Relay stage(std::size_t i) const { return {sh, i}; }
  Sink sink(std::size_t i) const { return {sh, i}; }

  auto map(std::size_t i) const {
    return [sh = sh, i](Ev e) -> Ev {
      if (sh->sc.where == Where::map_function && sh->sc.target == i &&
          sh->calls[i].fetch_add(1) == sh->sc.at)
        sh->fail(sh->sc.expected_instance, "map function", std::move(e));
      sh->emitted[i].fetch_add(1, std::memory_order_relaxed);
      e.body += '.';
      return e;
    };
  }

  auto filter(std::size_t i) const {
    const bool single = sh->sc.stage(i).instances == 1;
    return [sh = sh, i, single, f = sh->sc.stage(i).filter](const Ev& e) -> bool {
      if (sh->sc.where == Where::filter_function && sh->sc.target == i &&
          sh->calls[i].fetch_add(1) == sh->sc.at)
        sh->fail(sh->sc.expected_instance, "filter predicate", Ev(e));
      const bool keep = f.keeps(e.id);
      if (single)
        sh->kept[i].push_back(keep ? 1 : 0);  // one instance: one thread at a time
      else if (!keep)
        sh->rejected[i].fetch_add(1, std::memory_order_relaxed);
      if (keep) sh->emitted[i].fetch_add(1, std::memory_order_relaxed);
      return keep;
    };
  }

  auto selector(std::size_t i, std::size_t k) const {
    return [sh = sh, i, sel = sh->sc.stage(i).inputs[k].selector](const Ev& e) {
      if (sh->sc.where == Where::broadcast_select && sh->sc.stopper == i &&
          sh->calls[i].fetch_add(1) == sh->sc.at)
        sh->fail(sh->sc.expected_instance, "broadcast selector", Ev(e));
      const bool keep = sel.accepts(e.id);
      if (!keep) sh->rejected_by_selectors.fetch_add(1, std::memory_order_relaxed);
      return keep;
    };
  }

  template <class Declare>
  void partition(std::size_t i, Declare&& declare) const {
    declare([sh = sh, i, p = sh->sc.stage(i).partition](Ev& e) {
      if (sh->sc.where == Where::partition_hash && sh->calls[i].fetch_add(1) == sh->sc.at)
        sh->fail(sh->sc.expected_instance, "partition hash", Ev(e));
      // Never std::nullopt here (the knobs drop no keys): a hash that drops events stalled the
      // run (see the case below), which would hide everything else.
      return p.of(e.id);
    });
  }
};

sluice::Graph build(const Scenario& s, const SharedPtr& sh) {
  Code code{sh};
  return rg::build<Ev>(s.graph, code).graph;
}

// ---- what the counters must say ----------------------------------------------------------------

using rel::as_signed;
using rel::i64;

/// Events the stage's instances took in calls that returned (the edges' received).
std::uint64_t received_by(const sluice::Metrics& m, const std::string& stage) {
  std::uint64_t n = 0;
  for (auto& e : m.edges)
    if (rel::is_instance_of(e.consumer, stage)) n += e.received;
  return n;
}

/// produced + copies == delivered + dropped + filtered + undelivered, where copies are the extra
/// copies a broadcast made (what it sent to each subscriber, plus what each selector rejected,
/// less what it dispatched once). What a producer_consumer emitted in the call that failed is
/// in no counter: its inputs are, as sent and not received on its input edge.
void check_accounting(const Scenario& s, Shared& sh, const sluice::Metrics& m) {
  const i64 produced = as_signed(sh.produced.load());
  const i64 delivered = as_signed(sh.delivered.load());
  auto [dropped, filtered] = rel::dropped_and_filtered(m);
  filtered += as_signed(sh.rejected_by_selectors.load());
  i64 unreported_at_fan = 0;  // what the fan-out stage emitted in a call that failed
  for (std::size_t i = 1; i <= s.fan(); ++i) {
    auto& st = s.stage(i);
    const i64 got = as_signed(received_by(m, st.name));
    const i64 emitted = as_signed(sh.emitted[i].load());
    CAPTURE(st.name);
    i64 returned = emitted;  // emitted by the calls that returned
    if (st.form == rg::Form::filter) {
      if (st.instances == 1) {
        auto& kept = sh.kept[i];
        REQUIRE(got <= as_signed(kept.size()));
        returned = 0;
        for (i64 k = 0; k < got; ++k) {
          if (kept[static_cast<std::size_t>(k)] == 0)
            ++filtered;  // rejected in a call that returned
          else
            ++returned;
        }
      } else {
        filtered += as_signed(sh.rejected[i].load());
      }
    } else {  // 1:1
      returned = got;
    }
    CHECK(emitted >= returned);
    if (emitted > returned) CHECK(sh.thrown.load() > 0);  // only the failing stage's last call
    if (i == s.fan()) unreported_at_fan = emitted - returned;
  }
  i64 copies = 0;
  if (s.disp() == rg::Dispatch::broadcast)
    copies = rel::broadcast_copies(m, s.stage(s.fan()).name,
                                   as_signed(sh.emitted[s.fan()].load()) - unreported_at_fan,
                                   as_signed(sh.rejected_by_selectors.load()));
  rel::check_balance(m, produced, copies, delivered, dropped, filtered);
}

void check_error(const Scenario& s, Shared& sh, sluice::Run& run) {
  std::string message;
  {
    std::lock_guard lock(sh.mutex);
    message = sh.fault_message;
  }
  bool threw = false;
  try {
    run.wait();
  } catch (const sluice::stage_error& e) {
    threw = true;
    CHECK(e.stage() == s.expected_instance);
    CHECK(std::string(e.what()) == "stage '" + s.expected_instance + "': " + message);
  }
  CHECK(threw);
  for (auto& st : run.metrics().stages)
    if (st.name == s.expected_instance) CHECK(st.stop_reason == message);
}

/// handle_info's fault needs a message: sent from the test thread once the sinks have seen
/// `at` events (and the target has started).
bool send_info_when_due(const Scenario& s, Shared& sh, sluice::Run& run) {
  if (s.where != Where::handle_info || s.by_timer) return true;  // (a timer's: the stage's own)
  std::optional<sluice::Waker> w;
  const bool ok = rel::await(
      run,
      [&] {
        std::lock_guard lock(sh.mutex);
        w = sh.waker;
        return (w && sh.delivered.load() >= s.at) || run.done();
      },
      "the handle_info target to start and the sinks to see events",
      [&] { return sh.delivered.load(); });
  if (ok && w) w->wake(std::string("fault"));
  return ok;
}

// ---- fail_fast off: GenStage's cancel modes decide who stops ------------------------------------

/// Who stops when `failed` stops with an error, and with which reasons (docs/GENSTAGE.md 1.10,
/// engine/DESIGN.md 5): a subscription ending with an error stops a permanent or transient
/// consumer, with shutdown only a permanent one; a consumer with no input left finishes
/// normally; a producer whose every subscriber has left stops with shutdown. Which stages stop
/// does not depend on scheduling; the reason may: an instance that both loses all its
/// subscribers and receives its producer's end stops with whichever it handles first.
struct Prediction {
  std::map<std::string, bool> stops;
  std::map<std::string, std::set<std::string>> reasons;  // "error", "shutdown", "normal"
};

Prediction predict(const Scenario& s, const std::string& failed) {
  struct Inst {
    std::size_t stage = 0;
    std::set<std::string> in, out;
  };
  std::map<std::string, Inst> g;
  const auto& stages = s.graph.stages;
  for (std::size_t i = 0; i < stages.size(); ++i)
    for (std::size_t k = 0; k < stages[i].instances; ++k)
      g[s.graph.instance_name(i, k)].stage = i;
  for (std::size_t i = 1; i < stages.size(); ++i) {
    const auto p = s.producer_of(i);
    for (std::size_t ck = 0; ck < stages[i].instances; ++ck)
      for (std::size_t pk = 0; pk < stages[p].instances; ++pk) {
        const auto cn = s.graph.instance_name(i, ck);
        const auto pn = s.graph.instance_name(p, pk);
        g[cn].in.insert(pn);
        g[pn].out.insert(cn);
      }
  }
  auto stops_on = [&](const std::string& c, const std::string& why) {
    const auto mode = s.cancel(g[c].stage);
    return (mode == CancelMode::permanent && why != "normal") ||
           (mode == CancelMode::transient && why == "error");
  };
  Prediction p;
  for (auto& [name, inst] : g)
    p.stops[name] = false;
  p.stops[failed] = true;
  p.reasons[failed] = {"error"};
  for (bool changed = true; changed;) {
    changed = false;
    for (auto& [u, inst] : g) {
      if (u == failed) continue;
      std::set<std::string> r = p.reasons[u];
      bool all_in = !inst.in.empty(), may_pass = true;
      for (auto& pn : inst.in) {
        if (!p.stops[pn]) {
          all_in = false;
          continue;
        }
        bool passes = false;
        for (auto& why : p.reasons[pn]) {
          if (stops_on(u, why)) r.insert(why);
          passes = passes || !stops_on(u, why);
        }
        may_pass = may_pass && passes;
      }
      if (all_in && may_pass) r.insert("normal");
      bool all_out = !inst.out.empty();
      for (auto& cn : inst.out)
        all_out = all_out && p.stops[cn];
      if (all_out) r.insert("shutdown");
      if (r != p.reasons[u]) {
        p.reasons[u] = r;
        p.stops[u] = true;
        changed = true;
      }
    }
  }
  return p;
}

void run_fail_fast_off(const Scenario& s) {
  auto sh = std::make_shared<Shared>(s);
  auto graph = build(s, sh);
  auto run = graph.run(rel::quiet({.fail_fast = false}));
  if (!send_info_when_due(s, *sh, run)) return rel::abandon(run);
  auto find = [](const sluice::Metrics& m, const std::string& n) -> const sluice::StageMetrics* {
    for (auto& st : m.stages)
      if (st.name == n) return &st;
    return nullptr;
  };
  if (!rel::await(
          run,
          [&] {
            auto m = run.metrics();
            auto* t = find(m, s.expected_instance);
            return t != nullptr && t->finished;
          },
          "the faulty instance to fail", [&] { return sh->delivered.load(); }))
    return rel::abandon(run);
  const auto predicted = predict(s, s.expected_instance);
  std::string message;
  {
    std::lock_guard lock(sh->mutex);
    message = sh->fault_message;
  }
  if (!rel::await(
          run,
          [&] {
            auto m = run.metrics();
            for (auto& [name, stops] : predicted.stops)
              if (stops && !find(m, name)->finished) return false;
            return true;
          },
          "the predicted instances to stop", [&] { return sh->delivered.load(); }))
    return rel::abandon(run);
  bool any_running = false;
  {
    auto m = run.metrics();
    INFO(rel::dump(m));
    for (auto& [name, stops] : predicted.stops) {
      auto* st = find(m, name);
      CAPTURE(name);
      REQUIRE(st != nullptr);
      if (!stops) {
        any_running = true;
        CHECK_FALSE(st->finished);  // its inputs are alive: it goes on
        continue;
      }
      CHECK(st->finished);
      const auto& may = predicted.reasons.at(name);
      const std::string why = st->stop_reason == "shutdown" || st->stop_reason == "normal"
                                  ? st->stop_reason
                                  : (st->stop_reason == message ? "error" : st->stop_reason);
      CHECK(may.count(why) == 1);
    }
  }
  if (any_running) {
    // The survivors keep delivering, then a cancel ends them.
    const auto before = sh->delivered.load();
    if (!rel::await(
            run, [&] { return sh->delivered.load() >= before + 500; },
            "the surviving stages to deliver more", [&] { return sh->delivered.load(); }))
      return rel::abandon(run);
    const auto report = run.cancel();
    CHECK(report.undelivered == report.metrics.undelivered());
    std::uint64_t dropped = 0;
    for (auto& st : report.metrics.stages)
      dropped += st.dropped;
    CHECK(report.dropped == dropped);
    // Cancelled: shutdown, or normal for a consumer that saw its producers' shutdown first and
    // whose cancel mode does not stop on shutdown.
    for (auto& [name, stops] : predicted.stops) {
      if (stops) continue;
      const auto& why = find(report.metrics, name)->stop_reason;
      bool may_be_normal = false;
      for (std::size_t i = 1; i < s.graph.stages.size(); ++i)
        if (rel::is_instance_of(name, s.stage(i).name))
          may_be_normal = s.cancel(i) != CancelMode::permanent;
      CAPTURE(name);
      CHECK((why == "shutdown" || (may_be_normal && why == "normal")));
    }
  }
  if (!rel::await_done(run)) return;
  check_error(s, *sh, run);
  check_accounting(s, *sh, run.metrics());
}

void run_fail_fast_on(const Scenario& s) {
  auto sh = std::make_shared<Shared>(s);
  auto graph = build(s, sh);
  auto run = graph.run(rel::quiet());
  if (!send_info_when_due(s, *sh, run)) return rel::abandon(run);
  if (!rel::await_done(run)) return;
  for (auto& st : run.metrics().stages)
    CHECK(st.finished);
  check_error(s, *sh, run);
  check_accounting(s, *sh, run.metrics());
}

// ---- a restart policy on the faulty stage: the fault is absorbed --------------------------------

/// Faults in a class stage's callbacks, behind a fan-out that makes no copies (a broadcast's
/// copies are reckoned from what its stage emitted in calls that returned, which a restart's
/// discarded call blurs).
bool restart_applies(const Scenario& s) {
  switch (s.where) {
    case Where::handle_demand:
    case Where::pc_events:
    case Where::sink_events:
    case Where::handle_info:
    case Where::handle_subscribe:
      return s.disp() != rg::Dispatch::broadcast;
    default:
      return false;
  }
}

/// Events the filter stages rejected in calls that returned (check_accounting's reckoning).
rel::i64 rejected_by_filters(const Scenario& s, const Shared& sh, const sluice::Metrics& m) {
  rel::i64 n = 0;
  for (std::size_t i = 1; i <= s.fan(); ++i) {
    auto& st = s.stage(i);
    if (st.form != rg::Form::filter) continue;
    if (st.instances != 1) {
      n += rel::as_signed(sh.rejected[i].load());
      continue;
    }
    const auto got = received_by(m, st.name);
    for (std::uint64_t k = 0; k < got && k < sh.kept[i].size(); ++k)
      n += sh.kept[i][k] == 0 ? 1 : 0;
  }
  return n;
}

/// The faulty stage restarts (StageOptions::restart = on_failure, its one fault thrown once):
/// the run goes on without an error until it is cancelled, the stage reports one restart, and
/// produced == delivered + dropped + filtered + undelivered, what the failed call held being
/// counted as lost (engine/DESIGN.md 12).
void run_restarted(Scenario s) {
  s.once = true;
  s.graph.stages[s.target].restart = sluice::Restart::on_failure;
  auto sh = std::make_shared<Shared>(s);
  auto graph = build(s, sh);
  auto run = graph.run(rel::quiet());
  if (!send_info_when_due(s, *sh, run)) return rel::abandon(run);
  auto restarts = [&] {
    for (auto& st : run.metrics().stages)
      if (st.name == s.expected_instance) return st.restarts;
    return std::uint64_t{0};
  };
  if (!rel::await(
          run, [&] { return restarts() > 0 || run.done(); }, "the faulty instance to restart",
          [&] { return sh->delivered.load(); }))
    return rel::abandon(run);
  run.request_cancel();
  if (!rel::await_done(run)) return;
  CHECK_NOTHROW(run.wait());  // the fault was absorbed: no error
  const auto m = run.metrics();
  CHECK(sh->thrown.load() <= 1);
  CHECK(restarts() == static_cast<std::uint64_t>(sh->thrown.load()));
  auto [dropped, filtered] = rel::dropped_and_filtered(m);
  filtered += rel::as_signed(sh->rejected_by_selectors.load()) + rejected_by_filters(s, *sh, m);
  rel::check_balance(m, rel::as_signed(sh->produced.load()), 0,
                     rel::as_signed(sh->delivered.load()), dropped, filtered);
}

bool fail_fast_off_applies(const Scenario& s) {
  // The handle_cancel faults come from the end of a finite source or a sink stopping itself:
  // other stages may have ended by then, so who stops with what is not a function of the seed.
  if (s.where == Where::cancel_consumer || s.where == Where::cancel_producer) return false;
  // A library gap, open: when one partition's consumer stops, a producer_consumer fanning out
  // by partition may stall the other partitions. The events queued for the partition left
  // without a subscriber count as the stage's buffer, so it stops asking upstream although the
  // other partitions have demand (about 1 seed in 2000 with either generator; this suite's seed
  // 85983262 stalls one run in four). The fail_fast-on case still runs these scenarios.
  return !(s.disp() == rg::Dispatch::partition && s.fan() > 0 && s.target > s.fan());
}

}  // namespace

TEST_SUITE("reliability.faults") {

TEST_CASE("fault injection: the run ends and names the stage and every event is counted") {
  for (auto seed : rel::seeds(0x51u << 20, 600)) {
    const auto s = make_scenario(seed);
    CAPTURE(seed);
    INFO(s.describe());
    if (rel::env_number("SLUICE_VERBOSE")) MESSAGE(seed << "\n" << s.describe());
    const auto t0 = std::chrono::steady_clock::now();
    run_fail_fast_on(s);
    if (rel::env_number("SLUICE_SLOW") &&
        std::chrono::steady_clock::now() - t0 > std::chrono::seconds(1))
      MESSAGE("slow seed " << seed << "\n" << s.describe());
  }
}

TEST_CASE("fault injection with a restart policy: the fault is absorbed and every event counted") {
  for (auto seed : rel::seeds(0x53u << 20, 400)) {
    const auto s = make_scenario(seed);
    if (!restart_applies(s)) continue;
    CAPTURE(seed);
    INFO(s.describe());
    if (rel::env_number("SLUICE_VERBOSE")) MESSAGE(seed << "\n" << s.describe());
    run_restarted(s);
  }
}

TEST_CASE("fault injection with fail_fast off: the cancel modes decide who stops") {
  for (auto seed : rel::seeds(0x52u << 20, 600)) {
    const auto s = make_scenario(seed);
    if (!fail_fast_off_applies(s)) continue;
    CAPTURE(seed);
    INFO(s.describe());
    if (rel::env_number("SLUICE_VERBOSE")) MESSAGE(seed << "\n" << s.describe());
    run_fail_fast_off(s);
  }
}

// Found by the fault suite: with fail_fast off, when the subscriber of one partition stops, the
// events hashed to its partition used up upstream demand that nobody got back (GenStage does the
// same), and the other partitions' consumers, which the cancel modes keep running, starved.
// They now meet no demand (docs/GENSTAGE.md difference 19). Manual mode: deterministic.
TEST_CASE("fail_fast off: the other partitions go on when one partition's consumer fails") {
  sluice::Graph g;
  auto got = std::make_shared<std::array<std::int64_t, 2>>();
  struct Part {
    std::shared_ptr<std::array<std::int64_t, 2>> got;
    void handle_events(std::span<int> events, sluice::Context<void>& ctx) {
      for (std::size_t i = 0; i < events.size(); ++i)
        if (ctx.instance() == 0 && (*got)[0] == 10)
          throw std::runtime_error("partition 0 fails");
        else
          ++(*got)[ctx.instance()];
    }
  };
  auto src = g.source("src", sluice::from_range(std::views::iota(0, 1000)));
  src.partition(2, [](int& e) { return static_cast<std::size_t>(e % 2); });
  sluice::StageOptions o;
  o.instances = 2;
  o.max_demand = 10;
  o.cancel = sluice::CancelMode::temporary;
  src.to("sink", Part{got}, o);
  auto options = rel::quiet({.fail_fast = false, .manual = true});
  auto run = g.run(options);
  run.run_until_idle();
  CHECK(run.done());
  CHECK((*got)[1] == 500);  // partition 1's consumer is alive: it gets all its events
  if (!run.done()) run.request_cancel();
  run.run_until_idle();
}

// Found here and by the stress test: the events a partition hash drops (std::nullopt) used up
// upstream demand that no subscriber got back, so subscribers whose max_demand is small waited
// for ever (docs/GENSTAGE.md, difference 19). Manual mode makes it deterministic.
TEST_CASE("a partition hash that drops events does not stall the run") {
  sluice::Graph g;
  std::int64_t got = 0;
  auto src = g.source("src", sluice::from_range(std::views::iota(0, 100)));
  src.partition(2, [](int& e) -> std::optional<std::size_t> {
    if (e % 10 == 0) return std::nullopt;
    return static_cast<std::size_t>(e % 2);
  });
  sluice::StageOptions o;
  o.instances = 2;
  o.max_demand = 2;
  src.for_each(
      "sink", [&](int) { ++got; }, o);
  auto options = rel::quiet({.manual = true});
  auto run = g.run(options);
  run.run_until_idle();
  CHECK(run.done());
  CHECK(got == 90);
  CHECK(run.metrics().stages[0].filtered == 10);
  if (!run.done()) run.request_cancel();
  run.run_until_idle();
}

}  // TEST_SUITE("reliability.faults")
