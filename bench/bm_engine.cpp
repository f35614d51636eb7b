// bench_engine: the engine's event path against hand-written baselines in the same binary, and
// the CPU an idle graph burns.
//
// Compare ratios within one run, never absolute figures across runs (as ANCHORS.md, the
// project's reference figures, warns): the machines are shared and noisy. For example (one line):
//   bench_engine --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//                --benchmark_min_time=0.2
//
// Every engine iteration declares a fresh sluice::Engine, runs it to completion on the default
// RunOptions (concurrency = the hardware's) and checks the result. The work runs on oneTBB
// workers while the benchmark thread blocks in Run::wait(), so every rate is over wall time
// (UseRealTime). The stages are ordinary per-event functions, as a user would write them:
// batching is the engine's job.
#include <algorithm>
#include <any>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <exception>
#include <span>
#include <string>
#include <thread>

#include <sluice/sluice.hpp>

#include <benchmark/benchmark.h>

#include "baselines.hpp"
#include "bm_common.hpp"
#include <support/stages.hpp>

namespace {

using Event = std::int64_t;

/// Events per iteration of every throughput benchmark.
constexpr std::int64_t stream_length = 20'000'000;

// ---- the user's stages -------------------------------------------------------------------------

/// Emits 0..limit-1 as demand arrives, then finishes.
using Counter = sluice_test::CountingSource<Event>;

struct Triple {
  void handle_events(std::span<Event> in, sluice::Context<Event>& ctx) {
    for (auto v : in)
      ctx.emit(v * 3);
  }
};

struct KeepEven {
  void handle_events(std::span<Event> in, sluice::Context<Event>& ctx) {
    for (auto v : in)
      if (v % 2 == 0) ctx.emit(v);
  }
};

/// Adds what it receives to `*total` when its input ends (the engine copies the handler, so the
/// result lives outside).
using Sum = sluice_test::SummingSink<Event>;

/// Emits nothing; an info message finishes it.
using Silent = sluice_test::IdleSource<Event>;

// ---- expected results --------------------------------------------------------------------------

using sluice_bench::sum_below;

/// The sum of 3v over the even v below n: with v = 2k, k < m = ceil(n/2), it is 3m(m-1).
constexpr Event pipeline4_sum(Event n) {
  const Event m = (n + 1) / 2;
  return 3 * m * (m - 1);
}

static_assert(pipeline4_sum(4) == 0 + 6 && pipeline4_sum(5) == 0 + 6 + 12);

// ---- harness -----------------------------------------------------------------------------------

void set_counters(benchmark::State& state, std::int64_t max_demand, int stages) {
  state.counters["max_demand"] = static_cast<double>(max_demand);
  state.counters["stages"] = stages;
}

/// Builds a fresh engine per iteration with `declare(engine, total)`, runs it to completion and
/// checks that the consumer's sum is `expected`.
template <class Declare>
void run_graphs(benchmark::State& state, Declare declare, Event expected,
                sluice::RunOptions options) {
  for (auto _ : state) {
    std::atomic<Event> total{0};
    try {
      sluice::Engine engine;
      declare(engine, total);
      auto run = engine.start(options);
      run.wait();
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
      break;
    }
    if (total != expected) {
      state.SkipWithError(
          ("wrong sum: " + std::to_string(total.load()) + ", expected " + std::to_string(expected))
              .c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * stream_length);
  state.counters["direct_handoff"] = options.direct_handoff ? 1 : 0;
  // The arena's size as Engine::start resolves concurrency 0 (the hardware's).
  state.counters["threads"] =
      options.concurrency > 0 ? options.concurrency
                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

using sluice_bench::timed;

void both_windows(benchmark::internal::Benchmark* b) {
  timed(b->ArgName("max_demand")->Arg(1000)->Arg(10000));
}

void small_window(benchmark::internal::Benchmark* b) {
  timed(b->ArgName("max_demand")->Arg(1000));
}

// ---- baselines (bench/baselines.hpp): two threads, no engine ----------------------------------

// BM_Ring, the two-core hand-off limit: bench/bm_common.hpp.

/// moodycamel ConcurrentQueue, bulk 256, bounded by a GenStage-style demand counter.
void BM_Moodycamel(benchmark::State& state) {
  const auto max_demand = state.range(0);
  for (auto _ : state) {
    const Event sum = sluice_bench::moodycamel_demand_handoff(stream_length,
                                                              static_cast<std::size_t>(max_demand));
    if (sum != sum_below(stream_length)) {
      state.SkipWithError("moodycamel_demand_handoff: wrong sum");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * stream_length);
  set_counters(state, max_demand, 2);
}
BENCHMARK(BM_Moodycamel)->Apply(both_windows);

// ---- the engine --------------------------------------------------------------------------------

/// producer -> consumer(sum).
void handoff(benchmark::State& state, bool direct_handoff) {
  const auto max_demand = state.range(0);
  run_graphs(state,
             [max_demand](sluice::Engine& engine, std::atomic<Event>& total) {
               auto src = engine.producer<Event>("source", Counter{0, stream_length},
                                                 sluice::demand_dispatcher<Event>());
               auto sum = engine.consumer<Event>("sum", Sum{&total});
               engine.subscribe(sum, src, {.max_demand = max_demand});
             },
             sum_below(stream_length), {.direct_handoff = direct_handoff});
  set_counters(state, max_demand, 2);
}

/// producer -> map(x*3) -> filter(even) -> sum, four separate stages.
void pipeline4(benchmark::State& state, bool direct_handoff) {
  const auto max_demand = state.range(0);
  run_graphs(state,
             [max_demand](sluice::Engine& engine, std::atomic<Event>& total) {
               auto src = engine.producer<Event>("source", Counter{0, stream_length},
                                                 sluice::demand_dispatcher<Event>());
               auto triple = engine.producer_consumer<Event, Event>(
                   "triple", Triple{}, sluice::demand_dispatcher<Event>());
               auto even = engine.producer_consumer<Event, Event>(
                   "keep_even", KeepEven{}, sluice::demand_dispatcher<Event>());
               auto sum = engine.consumer<Event>("sum", Sum{&total});
               const sluice::SubscriptionOptions opts{.max_demand = max_demand};
               engine.subscribe(triple, src, opts);
               engine.subscribe(even, triple, opts);
               engine.subscribe(sum, even, opts);
             },
             pipeline4_sum(stream_length), {.direct_handoff = direct_handoff});
  set_counters(state, max_demand, 4);
}

void BM_Handoff(benchmark::State& state) {
  handoff(state, true);
}
void BM_Pipeline4(benchmark::State& state) {
  pipeline4(state, true);
}
/// The same without direct hand-off: every wake-up becomes a new oneTBB task.
void BM_Handoff_NoDirectHandoff(benchmark::State& state) {
  handoff(state, false);
}
void BM_Pipeline4_NoDirectHandoff(benchmark::State& state) {
  pipeline4(state, false);
}

BENCHMARK(BM_Handoff)->Apply(both_windows);
BENCHMARK(BM_Pipeline4)->Apply(both_windows);
BENCHMARK(BM_Handoff_NoDirectHandoff)->Apply(small_window);
BENCHMARK(BM_Pipeline4_NoDirectHandoff)->Apply(small_window);

// ---- idle --------------------------------------------------------------------------------------

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);  // every thread of the process
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

/// A started graph whose producer has nothing to emit: after `settle`, the CPU the whole process
/// uses over `window`, in percent of one core (target: < 2 %). The benchmark thread sleeps
/// meanwhile, so the figure is the engine's and oneTBB's.
void BM_IdleCpu(benchmark::State& state) {
  using namespace std::chrono_literals;
  constexpr auto settle = 100ms;
  constexpr auto window = 300ms;
  constexpr std::int64_t max_demand = sluice::default_max_demand;
  double percent = 0;
  for (auto _ : state) {
    std::atomic<Event> total{0};
    try {
      sluice::Engine engine;
      auto src = engine.producer<Event>("silent", Silent{}, sluice::demand_dispatcher<Event>());
      auto sum = engine.consumer<Event>("sum", Sum{&total});
      engine.subscribe(sum, src, {.max_demand = max_demand});
      auto run = engine.start();
      std::this_thread::sleep_for(settle);
      const auto wall0 = std::chrono::steady_clock::now();
      const double cpu0 = process_cpu_seconds();
      std::this_thread::sleep_for(window);
      const double cpu1 = process_cpu_seconds();
      const double wall =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
      percent = 100.0 * (cpu1 - cpu0) / wall;
      if (run.done()) {
        state.SkipWithError("the idle graph finished on its own");
        break;
      }
      run.send_info(src, std::any{});  // Silent::handle_info finishes the producer
      run.wait();
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
      break;
    }
    if (total != 0) {
      state.SkipWithError("the idle graph delivered events");
      break;
    }
  }
  state.counters["cpu_percent_of_core"] = percent;
  set_counters(state, max_demand, 2);
}
BENCHMARK(BM_IdleCpu)->Iterations(1)->Apply(timed);

}  // namespace

BENCHMARK_MAIN();
