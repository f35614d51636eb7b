// What the Google Benchmark suites bench_engine and bench_dispatchers share: the timing setup,
// the stream's expected sum, and the two-core hand-off limit (BM_Ring) each runs in the same
// binary, so that every run carries its own health check.
#pragma once

#include <cstdint>

#include <benchmark/benchmark.h>

#include "baselines.hpp"

namespace sluice_bench {

/// 0 + 1 + ... + (n-1).
constexpr std::int64_t sum_below(std::int64_t n) {
  return n * (n - 1) / 2;
}

/// Work runs on other threads: rates over wall time; the CPU column is the whole process's CPU
/// time per iteration, so CPU / Time is the number of cores kept busy.
inline void timed(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
}

/// The two-core hand-off limit: the hand-written SPSC ring (bench/baselines.hpp), batched on
/// both sides, 20 M int64_t events. Far below ~900 M/s the machine gave the run one core, and
/// the run's figures are not worth keeping.
inline void BM_Ring(benchmark::State& state) {
  constexpr std::int64_t length = 20'000'000;
  const auto batch = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    if (ring_handoff(length, batch) != sum_below(length)) {
      state.SkipWithError("ring_handoff: wrong sum");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * length);
  state.SetBytesProcessed(state.iterations() * length *
                          static_cast<std::int64_t>(sizeof(std::int64_t)));
  state.counters["batch"] = static_cast<double>(batch);
  state.counters["stages"] = 2;
}
BENCHMARK(BM_Ring)->ArgName("batch")->Arg(256)->Apply(timed);

}  // namespace sluice_bench
