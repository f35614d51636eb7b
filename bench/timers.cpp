// The timer scenarios (issue 19), through the public API only (ctx.send_after, ctx.now):
// - timers_lone, timers_fire, timers_flood: timers that fire on the real clock and are started
//   again as each fires (one at a time; 400 pending; 40,000 pending, more than a run can fire in
//   time); the rate of firings, their lateness (handle_info's ctx.now() minus the deadline) and
//   the process's CPU.
// - timers_idle: 10,000 timers pending an hour away and nothing else to do: the process's CPU.
// - chain4_timer, chain4_timer_unfused: chain4 and chain4_unfused with class stages, each
//   holding one timer that never fires; against the same stages without a timer, in the same
//   run.
#include <any>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "scenarios.hpp"
#include "tbb_baselines.hpp"
#include <support/stages.hpp>

namespace sluice_bench {
namespace {

using namespace std::chrono_literals;

[[noreturn]] void wrong(const std::string& scenario, const std::string& engine,
                        const std::string& what) {
  throw std::runtime_error(scenario + " / " + engine + ": " + what);
}

/// splitmix64: the timers' random delays, the same sequence in every run.
struct Random {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }
};

// ---- timers that fire ------------------------------------------------------------------------

/// What one stage of a firing scenario found (its own: read after the run).
struct Fired {
  Histogram lateness;
  I64 count = 0;
  I64 early = 0;  // fired before its deadline: never, by the API's contract
};

/// A source that emits nothing: its work is its timers. It keeps `pending` timers started, each
/// due after a random delay in [0, max_delay], and starts another as each fires, until it has
/// started `quota`; it finishes when the last has fired. Each firing records its lateness:
/// ctx.now() on entering handle_info minus the deadline, taken as ctx.now() + delay just before
/// send_after (so never later than the engine's own deadline: lateness is not understated).
struct TimerLoad {
  struct Due {
    sluice::TimePoint deadline;
  };
  Fired* out;
  I64 quota;
  I64 pending;
  sluice::Duration max_delay;
  Random random;
  I64 started = 0;

  void handle_subscribe(const sluice::SubscribeInfo&, sluice::Context<I64>& ctx) {
    while (started < quota && started < pending)
      start(ctx);
  }
  void handle_demand(std::size_t, sluice::Context<I64>&) {}
  void handle_info(std::any& message, sluice::Context<I64>& ctx) {
    const auto now = ctx.now();
    const auto* due = std::any_cast<Due>(&message);
    if (due == nullptr) return;
    const I64 late = (now - due->deadline).count();
    if (late < 0) ++out->early;
    out->lateness.add(late);
    if (++out->count == quota) {
      ctx.finish();
      return;
    }
    if (started < quota) start(ctx);
  }
  void start(sluice::Context<I64>& ctx) {
    const auto span = static_cast<std::uint64_t>(max_delay.count()) + 1;
    const auto delay = sluice::Duration(static_cast<I64>(random.next() % span));
    ctx.send_after(delay, Due{ctx.now() + delay});
    ++started;
  }
};

/// The shape of a firing scenario: `stages` TimerLoad sources (each `firings / stages` timers,
/// `pending` at a time, of 0-`max_delay`) into one sink; stage k reports into `fired[k]`.
void declare_firing(sluice::Graph& g, std::vector<Fired>& fired, I64 pending, I64 firings,
                    sluice::Duration max_delay) {
  const auto stages = static_cast<I64>(fired.size());
  std::vector<sluice::Stage<void, I64>> sources;
  for (I64 k = 0; k < stages; ++k)
    sources.push_back(g.source<I64>(numbered("timers", k),
                                    TimerLoad{.out = &fired[std::size_t(k)],
                                              .quota = firings / stages,
                                              .pending = pending,
                                              .max_delay = max_delay,
                                              .random = {static_cast<std::uint64_t>(k + 1)}}));
  auto sink = sources[0].to("sink", sluice_test::NullSink<I64>{});
  for (I64 k = 1; k < stages; ++k)
    sink.subscribe(sources[std::size_t(k)]);
}

/// Runs a firing scenario. events = timers fired; the time is the run's; the latency is the
/// lateness; the CPU is the process's over the run.
Outcome run_firing(const std::string& scenario, I64 stages, I64 pending, I64 firings,
                   sluice::Duration max_delay) {
  std::vector<Fired> fired(static_cast<std::size_t>(stages));
  sluice::Graph g;
  declare_firing(g, fired, pending, firings, max_delay);
  auto compiled = g.compile();
  auto o = run_metered(compiled);
  for (auto& f : fired) {
    if (f.early != 0) wrong(scenario, "sluice", numbered("timers fired early: ", f.early));
    o.events += f.count;
    o.latency.merge(f.lateness);
  }
  if (o.events != firings / stages * stages)
    wrong(scenario, "sluice", numbered("timers fired: ", o.events));
  return o;
}

// ---- timers pending, nothing to do -----------------------------------------------------------

/// A source that emits nothing and starts `count` timers an hour away when subscribed to; a
/// drain ends it (and its timers with it).
struct Holding {
  I64 count;
  std::atomic<I64>* started;
  std::atomic<I64>* fired;
  void handle_subscribe(const sluice::SubscribeInfo&, sluice::Context<I64>& ctx) {
    for (I64 i = 0; i < count; ++i)
      ctx.send_after(1h, std::any{});
    started->fetch_add(count, std::memory_order_release);  // the measuring thread acquires
  }
  void handle_demand(std::size_t, sluice::Context<I64>&) {}
  void handle_info(std::any&, sluice::Context<I64>&) { fired->fetch_add(1); }
};

/// The shape of timers_idle: `stages` Holding sources (`timers / stages` timers each) into one
/// sink.
void declare_idle(sluice::Graph& g, I64 stages, I64 timers, std::atomic<I64>& started,
                  std::atomic<I64>& fired) {
  std::vector<sluice::Stage<void, I64>> sources;
  for (I64 k = 0; k < stages; ++k)
    sources.push_back(
        g.source<I64>(numbered("holding", k), Holding{timers / stages, &started, &fired}));
  auto sink = sources[0].to("sink", sluice_test::NullSink<I64>{});
  for (I64 k = 1; k < stages; ++k)
    sink.subscribe(sources[std::size_t(k)]);
}

/// Runs timers_idle with `timers` timers (none for the baseline): once every timer is started
/// and `settle` has passed, the process's CPU over `window`, the measuring thread asleep; then
/// a drain ends the run. events = timers pending; no rate.
Outcome run_idle(const std::string& scenario, const std::string& engine, I64 stages, I64 timers,
                 const Params& p) {
  // A short window on the suites' short streams (bench_shapes --events=20000 in ctest).
  const auto window = p.events >= 1'000'000 ? 1500ms : 200ms;
  constexpr auto settle = 100ms;
  std::atomic<I64> started{0}, fired{0};
  sluice::Graph g;
  declare_idle(g, stages, timers, started, fired);
  auto run = g.run();
  const auto give_up = Clock::now() + 30s;
  while (started.load(std::memory_order_acquire) != timers / stages * stages) {
    if (Clock::now() > give_up) wrong(scenario, engine, "the timers were not started in 30 s");
    std::this_thread::sleep_for(1ms);
  }
  std::this_thread::sleep_for(settle);
  const CpuMeter meter;
  std::this_thread::sleep_for(window);
  Outcome o;
  o.cpu_percent = meter.percent();
  o.seconds = meter.seconds();
  o.events = started.load();
  o.has_rate = false;
  const bool ended_early = run.done();
  run.drain();
  if (ended_early) wrong(scenario, engine, "the run ended by itself");
  if (fired.load() != 0) wrong(scenario, engine, numbered("timers fired: ", fired.load()));
  return o;
}

// ---- chain4 with a timer in every stage --------------------------------------------------------

/// Holds one timer an hour away (it never fires within a run) from its first subscription on, if
/// `arm`; the stages below are chain4's and chain4_unfused's, written as classes so that they
/// have a context to start it from.
struct HoldsTimer {
  bool arm = true;
  sluice::TimerId timer{};
  template <class Out>
  void handle_subscribe(const sluice::SubscribeInfo&, sluice::Context<Out>& ctx) {
    if (arm && !timer) timer = ctx.send_after(1h, std::any{});
  }
  template <class Out>
  void handle_info(std::any&, sluice::Context<Out>& ctx) {
    throw sluice::stage_error(std::string(ctx.name()), "a timer an hour away fired");
  }
};

/// chain4's source (from_generator over 0..n-1), as a class: the same emit_generated call, on a
/// local copy of the count as from_generator does.
struct TimedCounter : HoldsTimer {
  I64 next = 0;
  I64 n = 0;
  void handle_demand(std::size_t want, sluice::Context<I64>& ctx) {
    I64 i = next;
    const auto got = ctx.emit_generated(want, [&i, n = n]() -> std::optional<I64> {
      if (i == n) return std::nullopt;
      return i++;
    });
    next = i;
    if (got < want) ctx.finish();
  }
};

/// The builder's map (+1), as a class: the same emit_generated call.
struct TimedMap : HoldsTimer {
  void handle_events(std::span<I64> in, sluice::Context<I64>& ctx) {
    auto it = in.begin();
    ctx.emit_generated(in.size(), [&] { return std::optional<I64>(plus_one(*it++)); });
  }
};

/// The builder's filter (even values), as a class: the same emit_kept call.
struct TimedFilter : HoldsTimer {
  void handle_events(std::span<I64> in, sluice::Context<I64>& ctx) {
    ctx.emit_kept(in, [](const I64& e) { return is_even(e); });
  }
};

/// chain4's sum (tests/support's SummingSink), holding a timer.
struct TimedSum : HoldsTimer {
  std::atomic<I64>* total = nullptr;
  I64 local = 0;
  void handle_events(std::span<const I64> in, sluice::Context<void>&) {
    for (const auto e : in)
      local += e;
  }
  void handle_cancel(const sluice::CancelInfo&, sluice::Context<void>&) {
    total->fetch_add(local);
    local = 0;
  }
};

/// fused: chain4's shape and fusion (the source's cell; map, filter and sum in one cell): the
/// source and the sum hold a timer each (map and filter are the builder's, as fused members
/// have no callback to start one from). Not fused: chain4_unfused's (four cells), every stage
/// a class holding a timer. `arm` false: the same stages, no timer.
void declare_timed_chain(sluice::Graph& g, const Params& p, bool fused, bool arm,
                         std::atomic<I64>& total) {
  sluice::StageOptions o{.max_demand = p.max_demand};
  o.fuse = fused;
  auto s = g.source<I64>("source", TimedCounter{{arm, {}}, 0, p.events});
  auto m = fused ? s.map(
                       "map1", [](I64 e) { return plus_one(e); }, o)
                 : s.then<I64>("map1", TimedMap{{arm, {}}}, o);
  auto f = fused ? m.filter(
                       "even", [](const I64& e) { return is_even(e); }, o)
                 : m.then<I64>("even", TimedFilter{{arm, {}}}, o);
  f.to("sum", TimedSum{{arm, {}}, &total, 0}, o);
}

EngineRun timed_chain(const std::string& scenario, bool fused, bool arm) {
  const std::string engine = arm ? "sluice" : "sluice_no_timers";
  return {
      engine, [=](const Params& p) {
        std::atomic<I64> total{0};
        sluice::Graph g;
        declare_timed_chain(g, p, fused, arm, total);
        auto compiled = g.compile();
        auto o = timed(p.events, [&] { compiled.run().wait(); });
        const I64 expected = chain_sum(p.events, {1, true});
        if (total != expected)
          wrong(scenario, engine,
                "wrong result " + std::to_string(total) + ", expected " + std::to_string(expected));
        return o;
      }};
}

}  // namespace

std::vector<Scenario> timer_chain_scenarios() {
  std::vector<Scenario> all;
  auto chain = [&](const std::string& name, bool fused, const std::string& what) {
    all.push_back({name,
                   what,
                   [fused](sluice::Graph& g, const Params& p) {
                     static std::atomic<I64> t;
                     declare_timed_chain(g, p, fused, true, t);
                   },
                   {timed_chain(name, fused, true), timed_chain(name, fused, false)}});
  };
  chain("chain4_timer", true,
        "chain4 (fused) with class source and sum, each holding a timer 1 h away; "
        "sluice_no_timers: the same stages, no timer");
  chain("chain4_timer_unfused", false,
        "chain4_unfused with every stage a class holding a timer 1 h away; "
        "sluice_no_timers: the same stages, no timer");
  return all;
}

std::vector<Scenario> timer_scenarios() {
  std::vector<Scenario> all;
  // stages, timers pending per stage, firings in all (scaled by --events), delays of 0-2 ms.
  auto firing = [&](const std::string& name, I64 stages, I64 pending, I64 per_events, I64 least,
                    const std::string& what) {
    auto firings = [=](const Params& p) { return std::max(least, p.events / per_events); };
    all.push_back({name,
                   what,
                   [=](sluice::Graph& g, const Params& p) {
                     static std::vector<Fired> fired(static_cast<std::size_t>(stages));
                     declare_firing(g, fired, pending, firings(p), 2ms);
                   },
                   {{"sluice", [=](const Params& p) {
                       return run_firing(name, stages, pending, firings(p), 2ms);
                     }}}});
  };
  // One timer at a time: the timer service and the cells asleep in between.
  firing("timers_lone", 1, 1, 10'000, 200,
         "1 stage keeping 1 timer of 0-2 ms, started again as it fires (events / 10000 "
         "firings, at least 200); events: timers fired; p50/p99: lateness");
  firing("timers_fire", 4, 100, 20, 4000,
         "4 stages keeping 100 timers each of 0-2 ms, each started again as it fires (events / "
         "20 firings); events: timers fired; p50/p99: lateness");
  // 40,000 timers due within 2 ms ask for 20 M firings/s: more than one run can fire, so the
  // rate is the engine's capacity and the lateness is that of an overloaded run.
  firing("timers_flood", 4, 10'000, 4, 80'000,
         "4 stages keeping 10000 timers each of 0-2 ms, each started again as it fires (events / "
         "4 firings): overloaded, the rate is the capacity; events: timers fired; p50/p99: "
         "lateness");
  constexpr I64 idle_stages = 4, idle_timers = 10'000;
  auto idle = [](const std::string& engine, I64 timers) -> EngineRun {
    return {engine, [=](const Params& p) {
              return run_idle("timers_idle", engine, idle_stages, timers, p);
            }};
  };
  all.push_back({"timers_idle",
                 "4 stages holding 10000 timers 1 h away and nothing else to do: the process's "
                 "CPU over 1.5 s (0.2 s below 1 M events); sluice_no_timers: no timer",
                 [](sluice::Graph& g, const Params&) {
                   static std::atomic<I64> started, fired;
                   declare_idle(g, idle_stages, idle_timers, started, fired);
                 },
                 {idle("sluice", idle_timers), idle("sluice_no_timers", 0)}});
  return all;
}

}  // namespace sluice_bench
