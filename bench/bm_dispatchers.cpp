// bench_dispatchers: the demand, broadcast and partition dispatchers against oneTBB flow graph
// equivalents in the same binary.
//
// Compare ratios within one run, never absolute figures across runs (as ANCHORS.md, the
// project's reference figures, warns): the machines are shared and noisy. For example (one line):
//   bench_dispatchers --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//                     --benchmark_min_time=0.2 --benchmark_enable_random_interleaving=true
//
// Every engine iteration declares a fresh sluice::Engine, runs it to completion on the default
// RunOptions (concurrency = the hardware's) and checks every consumer's result; a wrong result
// skips the benchmark with an error. The user code is ordinary per-event code: a Counter producer
// that emits one event per ctx.emit, consumers that sum what they receive. Rates are over wall
// time (UseRealTime); items_per_second counts the stream's events once, so for a broadcast it is
// the events delivered to EACH consumer per second (and bytes_per_second the bytes each consumer
// reads per second). The threads:1 variants run the same graphs with RunOptions::concurrency = 1
// (every stage on one thread), to show what the second core gains or costs.
//
// The oneTBB flow graph baselines are bench/tbb_baselines.hpp's (sluice-bench runs the same
// ones), in the default oneTBB arena (the same number of threads as the engine's), each as one
// event per message and with user-made batches of 1024 events per message:
//   demand     input_node -> function_node with concurrency N (any free body instance takes the
//              next message, like a demand dispatcher's free consumer); per-thread sums.
//   broadcast  input_node -> broadcast_node -> N serial function_nodes. Batched: a
//              std::shared_ptr<const std::vector<Event>> per message, so the consumers share one
//              batch (zero copy, as the engine's shared batches).
//   partition  input_node -> serial multifunction_node routing by key -> 4 serial
//              function_nodes. Batched: the router splits each batch of 1024 into 4 vectors.
// Serial flow graph nodes queue without bound (no back-pressure): their streams are kept short.
//
// BM_Ring (bench/bm_common.hpp, as in bench_engine) is here only as the machine's health check
// within the same run: when it falls far below ~900 M/s the machine gave the run one core, and
// the run's figures are not worth keeping.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <sluice/sluice.hpp>

#include <benchmark/benchmark.h>

#include "bm_common.hpp"
#include "tbb_baselines.hpp"
#include <support/stages.hpp>

namespace {

using Event = std::int64_t;

/// A 256-byte event: word 0 and word 31 carry the sequence number, the rest is zero.
struct Big {
  std::array<std::uint64_t, 32> words{};
  Big() = default;
  explicit Big(Event seq) {
    words[0] = static_cast<std::uint64_t>(seq);
    words[31] = static_cast<std::uint64_t>(seq);
  }
};
static_assert(sizeof(Big) == 256);

/// What a consumer adds up for an event, and a second value that must add up to the same (the
/// 256-byte event's last word, so that both its ends are read). Found by the flow graph
/// baselines too (tbb_baselines.hpp has the int64_t ones).
Event value_of(const Big& b) {
  return static_cast<Event>(b.words[0]);
}
Event check_of(const Big& b) {
  return static_cast<Event>(b.words[31]);
}

/// Events per iteration, chosen for roughly 0.2-1 s per iteration on a 2-core machine. The flow
/// graph's one-event-per-message variants move far fewer events (rates still compare): its serial
/// nodes queue without bound.
constexpr std::int64_t engine_length = 100'000'000;
constexpr std::int64_t engine_big_length = 10'000'000;
constexpr std::int64_t flow_length = 2'000'000;
constexpr std::int64_t flow_big_length = 1'000'000;
constexpr std::int64_t flow_demand_batch_length = 200'000'000;
constexpr std::int64_t flow_broadcast_batch_length = 100'000'000;
constexpr std::int64_t flow_big_batch_length = 8'000'000;
constexpr std::int64_t flow_partition_batch_length = 40'000'000;
constexpr std::size_t max_consumers = 4;

using sluice_bench::check_of;
using sluice_bench::sum_below;
using sluice_bench::timed;
using sluice_bench::value_of;

/// The sum of the v < n with v % 4 == p: v = 4k + p for k < m = ceil((n - p) / 4).
constexpr Event sum_below_in_class(Event n, Event p) {
  const Event m = (n - p + 3) / 4;
  return 4 * (m * (m - 1) / 2) + p * m;
}

static_assert(sum_below_in_class(10, 0) == 0 + 4 + 8 && sum_below_in_class(10, 1) == 1 + 5 + 9 &&
              sum_below_in_class(10, 2) == 2 + 6 && sum_below_in_class(10, 3) == 3 + 7);

// ---- results, one cache line per consumer ------------------------------------------------------

using sluice_bench::Tally;
using Tallies = std::array<Tally, max_consumers>;

// ---- the user's stages -------------------------------------------------------------------------

/// Emits events 0..limit-1 as demand arrives, one ctx.emit per event, then finishes.
template <class E>
using Counter = sluice_test::CountingSource<E>;

/// Adds what it receives to its instance's tally (the engine copies the handler per instance, so
/// the results live outside). Takes const events: a broadcast's batches are shared.
template <class E>
struct Sum {
  Tallies* tallies;
  void handle_events(std::span<const E> in, sluice::Context<void>& ctx) {
    Event s = 0;
    Event c = 0;
    for (const auto& e : in) {
      s += value_of(e);
      c += check_of(e);
    }
    auto& t = (*tallies)[ctx.instance()];
    t.sum += s;
    t.check += c;
  }
};

/// A partition consumer: sums and counts the events that are not of its partition (key % 4).
struct PartitionSum {
  Tallies* tallies;
  void handle_events(std::span<const Event> in, sluice::Context<void>& ctx) {
    const auto mine = static_cast<Event>(ctx.instance());
    Event s = 0;
    Event foreign = 0;
    for (auto v : in) {
      s += v;
      foreign += (v & 3) != mine ? 1 : 0;
    }
    auto& t = (*tallies)[ctx.instance()];
    t.sum += s;
    t.check += s;
    t.foreign += foreign;
  }
};

/// map(x * 3), a per-event producer_consumer (the GenStage shapes of ANCHORS.md have one per
/// branch).
struct Triple {
  void handle_events(std::span<Event> in, sluice::Context<Event>& ctx) {
    for (auto v : in)
      ctx.emit(v * 3);
  }
};

/// The sum consumer of one branch (a stage of its own): adds to its branch's tally.
struct BranchSum {
  Tally* tally;
  void handle_events(std::span<const Event> in, sluice::Context<void>&) {
    Event s = 0;
    for (auto v : in)
      s += v;
    tally->sum += s;
    tally->check += s;
  }
};

// ---- checks ------------------------------------------------------------------------------------

std::string str(Event v) {
  return std::to_string(v);
}

/// Demand and partition: the consumers' sums add up to the stream's.
std::string check_total(std::span<const Tally> t, std::size_t consumers, Event n) {
  Event sum = 0;
  for (std::size_t i = 0; i < consumers; ++i) {
    sum += t[i].sum;
    if (t[i].check != t[i].sum) return "consumer " + std::to_string(i) + ": check mismatch";
    if (t[i].foreign != 0)
      return "consumer " + std::to_string(i) + " got " + str(t[i].foreign) +
             " events of other partitions";
  }
  if (sum != sum_below(n)) return "wrong total: " + str(sum) + ", expected " + str(sum_below(n));
  return {};
}

/// Broadcast: every consumer saw the whole stream.
std::string check_each(std::span<const Tally> t, std::size_t consumers, Event n) {
  for (std::size_t i = 0; i < consumers; ++i)
    if (t[i].sum != sum_below(n) || t[i].check != sum_below(n))
      return "consumer " + std::to_string(i) + ": sum " + str(t[i].sum) + " / " + str(t[i].check) +
             ", expected " + str(sum_below(n));
  return {};
}

/// Partition by key % 4: consumer i got exactly the events of class i.
std::string check_classes(std::span<const Tally> t, Event n) {
  if (auto e = check_total(t, 4, n); !e.empty()) return e;
  for (std::size_t i = 0; i < 4; ++i)
    if (t[i].sum != sum_below_in_class(n, static_cast<Event>(i)))
      return "partition " + std::to_string(i) + ": sum " + str(t[i].sum) + ", expected " +
             str(sum_below_in_class(n, static_cast<Event>(i)));
  return {};
}

// ---- harness -----------------------------------------------------------------------------------

void report(benchmark::State& state, std::int64_t length, std::size_t event_bytes,
            std::size_t consumers) {
  state.SetItemsProcessed(state.iterations() * length);
  state.SetBytesProcessed(state.iterations() * length * static_cast<std::int64_t>(event_bytes));
  state.counters["consumers"] = static_cast<double>(consumers);
}

/// Builds a fresh engine per iteration with `declare(engine, tallies)`, runs it to completion with
/// `concurrency` threads (0: the default, the hardware's) and checks the tallies with `check` (an
/// empty string: right).
template <class Declare, class Check>
void run_engine(benchmark::State& state, std::int64_t length, std::size_t event_bytes,
                std::size_t consumers, Declare declare, Check check, int concurrency = 0) {
  for (auto _ : state) {
    auto tallies = std::make_unique<Tallies>();
    try {
      sluice::Engine engine;
      declare(engine, *tallies);
      auto run = engine.start({.concurrency = concurrency});
      run.wait();
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
      break;
    }
    if (auto error = check(*tallies); !error.empty()) {
      state.SkipWithError(error.c_str());
      break;
    }
  }
  report(state, length, event_bytes, consumers);
  // The arena's size as Engine::start resolves concurrency 0 (the hardware's).
  state.counters["threads"] =
      concurrency > 0 ? concurrency
                      : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

/// A flow graph iteration: `body()` builds, runs and returns the error (empty: right).
template <class Body>
void run_flow(benchmark::State& state, std::int64_t length, std::size_t event_bytes,
              std::size_t consumers, Body body) {
  for (auto _ : state) {
    std::string error;
    try {
      error = body();
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!error.empty()) {
      state.SkipWithError(error.c_str());
      break;
    }
  }
  report(state, length, event_bytes, consumers);
}

// ---- the engine --------------------------------------------------------------------------------

/// producer(demand dispatcher) -> N instances of a sum consumer.
void BM_Demand(benchmark::State& state) {
  const auto consumers = static_cast<std::size_t>(state.range(0));
  run_engine(
      state, engine_length, sizeof(Event), consumers,
      [consumers](sluice::Engine& engine, Tallies& tallies) {
        auto src = engine.producer<Event>("source", Counter<Event>{0, engine_length},
                                          sluice::demand_dispatcher<Event>());
        auto sum = engine.consumer<Event>("sum", Sum<Event>{&tallies}, consumers);
        engine.subscribe(sum, src);
      },
      [consumers](const Tallies& t) { return check_total(t, consumers, engine_length); },
      static_cast<int>(state.range(1)));
}
/// threads:0 is the default (the hardware's); threads:1 runs the whole graph on one thread.
BENCHMARK(BM_Demand)
    ->ArgNames({"consumers", "threads"})
    ->Args({2, 0})
    ->Args({4, 0})
    ->Args({2, 1})
    ->Apply(timed);

/// producer(broadcast dispatcher) -> N instances of a sum consumer, each sees every event.
template <class E>
void broadcast(benchmark::State& state, std::int64_t length) {
  const auto consumers = static_cast<std::size_t>(state.range(0));
  run_engine(
      state, length, sizeof(E), consumers,
      [consumers, length](sluice::Engine& engine, Tallies& tallies) {
        auto src =
            engine.producer<E>("source", Counter<E>{0, length}, sluice::broadcast_dispatcher<E>());
        auto sum = engine.consumer<E>("sum", Sum<E>{&tallies}, consumers);
        engine.subscribe(sum, src);
      },
      [consumers, length](const Tallies& t) { return check_each(t, consumers, length); },
      static_cast<int>(state.range(1)));
}

void BM_Broadcast(benchmark::State& state) {
  broadcast<Event>(state, engine_length);
}
void BM_Broadcast_Big256(benchmark::State& state) {
  broadcast<Big>(state, engine_big_length);
}
BENCHMARK(BM_Broadcast)
    ->ArgNames({"consumers", "threads"})
    ->Args({3, 0})
    ->Args({3, 1})
    ->Apply(timed);
BENCHMARK(BM_Broadcast_Big256)
    ->ArgNames({"consumers", "threads"})
    ->Args({4, 0})
    ->Args({4, 1})
    ->Apply(timed);

/// producer(partition dispatcher, 4 partitions, hash key % 4) -> one stage with 4 instances
/// (instance i takes partition i).
void BM_Partition4(benchmark::State& state) {
  run_engine(
      state, engine_length, sizeof(Event), 4,
      [](sluice::Engine& engine, Tallies& tallies) {
        auto src = engine.producer<Event>(
            "source", Counter<Event>{0, engine_length},
            sluice::partition_dispatcher<Event>(4, [](Event& e) { return e & 3; }));
        auto sum = engine.consumer<Event>("sum", PartitionSum{&tallies}, 4);
        engine.subscribe(sum, src);
      },
      [](const Tallies& t) { return check_classes(t, engine_length); },
      static_cast<int>(state.range(0)));
}
BENCHMARK(BM_Partition4)->ArgName("threads")->Arg(0)->Arg(1)->Apply(timed);

/// The same with the dispatcher's default hash (std::hash, mixed): no per-partition check.
void BM_Partition4_DefaultHash(benchmark::State& state) {
  run_engine(
      state, engine_length, sizeof(Event), 4,
      [](sluice::Engine& engine, Tallies& tallies) {
        auto src = engine.producer<Event>("source", Counter<Event>{0, engine_length},
                                          sluice::partition_dispatcher<Event>(4));
        auto sum = engine.consumer<Event>("sum", Sum<Event>{&tallies}, 4);
        engine.subscribe(sum, src);
      },
      [](const Tallies& t) { return check_total(t, 4, engine_length); });
}
BENCHMARK(BM_Partition4_DefaultHash)->Apply(timed);

/// GenStage's shapes in ANCHORS.md: producer -> N branches of map(x * 3) -> sum, each branch
/// its own two stages; the map stages subscribe to the producer (partition i for branch i).
template <class Dispatcher>
void branches(benchmark::State& state, std::size_t n, Dispatcher dispatcher, bool partitioned) {
  run_engine(
      state, engine_length, sizeof(Event), n,
      [n, dispatcher, partitioned](sluice::Engine& engine, Tallies& tallies) {
        auto src = engine.producer<Event>("source", Counter<Event>{0, engine_length}, dispatcher);
        for (std::size_t i = 0; i < n; ++i) {
          const auto branch = std::to_string(i);
          auto map = engine.producer_consumer<Event, Event>("map" + branch, Triple{},
                                                            sluice::demand_dispatcher<Event>());
          auto sum = engine.consumer<Event>("sum" + branch, BranchSum{&tallies[i]});
          sluice::SubscriptionOptions opts;
          if (partitioned) opts.partition = sluice::Partition(i);
          engine.subscribe(map, src, opts);
          engine.subscribe(sum, map);
        }
      },
      [n, partitioned](const Tallies& t) -> std::string {
        Event total = 0;
        for (std::size_t i = 0; i < n; ++i) {
          total += t[i].sum;
          const auto p = static_cast<Event>(i);
          if (partitioned && t[i].sum != 3 * sum_below_in_class(engine_length, p))
            return "branch " + std::to_string(i) + ": sum " + str(t[i].sum) + ", expected " +
                   str(3 * sum_below_in_class(engine_length, p));
        }
        if (total != 3 * sum_below(engine_length))
          return "wrong total: " + str(total) + ", expected " + str(3 * sum_below(engine_length));
        return {};
      });
  state.counters["stages"] = static_cast<double>(1 + 2 * n);
}

/// producer(demand dispatcher) -> N x (map -> sum), GenStage's "DemandDispatcher -> 2 x (map ->
/// sum)".
void BM_Demand_MapSum(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  branches(state, n, sluice::demand_dispatcher<Event>(), false);
}
BENCHMARK(BM_Demand_MapSum)->ArgName("consumers")->Arg(2)->Arg(4)->Apply(timed);

/// producer(partition dispatcher, key % 4) -> 4 x (map -> sum), GenStage's
/// "PartitionDispatcher(4) -> 4 x (map -> sum)".
void BM_Partition4_MapSum(benchmark::State& state) {
  branches(state, 4, sluice::partition_dispatcher<Event>(4, [](Event& e) { return e & 3; }), true);
}
BENCHMARK(BM_Partition4_MapSum)->Apply(timed);

// ---- oneTBB flow graph (bench/tbb_baselines.hpp) ------------------------------------------------

/// Demand: input_node -> function_node with concurrency N; per-thread sums.
void flow_demand(benchmark::State& state, bool batched) {
  const auto consumers = static_cast<std::size_t>(state.range(0));
  const auto length = batched ? flow_demand_batch_length : flow_length;
  run_flow(state, length, sizeof(Event), consumers, [&] {
    return check_total(sluice_bench::flow_fan_out<Event>(length, consumers, batched), 1, length);
  });
}

void BM_FlowGraph_Demand(benchmark::State& state) {
  flow_demand(state, false);
}
void BM_FlowGraph_Demand_Batch1024(benchmark::State& state) {
  flow_demand(state, true);
}
BENCHMARK(BM_FlowGraph_Demand)->ArgName("consumers")->Arg(2)->Arg(4)->Apply(timed);
BENCHMARK(BM_FlowGraph_Demand_Batch1024)->ArgName("consumers")->Arg(2)->Arg(4)->Apply(timed);

/// Broadcast: input_node -> broadcast_node -> N serial function_nodes.
template <class E>
void flow_broadcast(benchmark::State& state, std::int64_t length, bool batched) {
  const auto consumers = static_cast<std::size_t>(state.range(0));
  run_flow(state, length, sizeof(E), consumers, [&] {
    return check_each(sluice_bench::flow_broadcast<E>(length, consumers, batched), consumers,
                      length);
  });
}

void BM_FlowGraph_Broadcast(benchmark::State& state) {
  flow_broadcast<Event>(state, flow_length, false);
}
void BM_FlowGraph_Broadcast_Batch1024(benchmark::State& state) {
  flow_broadcast<Event>(state, flow_broadcast_batch_length, true);
}
void BM_FlowGraph_Broadcast_Big256(benchmark::State& state) {
  flow_broadcast<Big>(state, flow_big_length, false);
}
void BM_FlowGraph_Broadcast_Big256_Batch1024(benchmark::State& state) {
  flow_broadcast<Big>(state, flow_big_batch_length, true);
}
BENCHMARK(BM_FlowGraph_Broadcast)->ArgName("consumers")->Arg(3)->Apply(timed);
BENCHMARK(BM_FlowGraph_Broadcast_Batch1024)->ArgName("consumers")->Arg(3)->Apply(timed);
BENCHMARK(BM_FlowGraph_Broadcast_Big256)->ArgName("consumers")->Arg(4)->Apply(timed);
BENCHMARK(BM_FlowGraph_Broadcast_Big256_Batch1024)->ArgName("consumers")->Arg(4)->Apply(timed);

/// Partition: input_node -> serial multifunction_node routing by key % 4 -> 4 serial
/// function_nodes.
void flow_partition(benchmark::State& state, bool batched) {
  const auto length = batched ? flow_partition_batch_length : flow_length;
  run_flow(state, length, sizeof(Event), 4,
           [&] { return check_classes(sluice_bench::flow_partition<4>(length, batched), length); });
}

void BM_FlowGraph_Partition4(benchmark::State& state) {
  flow_partition(state, false);
}
void BM_FlowGraph_Partition4_Batch1024(benchmark::State& state) {
  flow_partition(state, true);
}
BENCHMARK(BM_FlowGraph_Partition4)->Apply(timed);
BENCHMARK(BM_FlowGraph_Partition4_Batch1024)->Apply(timed);

}  // namespace

BENCHMARK_MAIN();
