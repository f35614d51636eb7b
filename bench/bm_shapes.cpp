// bench_shapes: every scenario of sluice-bench (bench/scenarios.hpp) as Google Benchmark cases,
// one per scenario and engine: "chain4/sluice", "chain4/tbb_flow", "chain4/ring", ...
//
// Each iteration runs the whole stream once and checks its result (a wrong sum fails the case);
// the time is the run's own (manual time: graph building and thread start-up are outside it),
// items_per_second is events per second (per consumer for a broadcast; none for timers_idle),
// the latency cases add p50_ns and p99_ns counters (the timer cases: lateness), and the timer
// cases the process's CPU in percent of one core (cpu_percent). Compare an engine with the
// baselines of the same scenario in the same run, as ratios (the machine is shared and noisy);
// sluice-bench prints those ratios and each case's own peak RSS, which one process running every
// case cannot.
//
//   bench_shapes [--events=N] [--max_demand=N] [--instances=N] [Google Benchmark flags]
// for example:
//   bench_shapes --events=20000000 --benchmark_filter='^chain4/' --benchmark_repetitions=3
//                --benchmark_report_aggregates_only=true  (one line)
#include <charconv>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include <benchmark/benchmark.h>

#include "genstage.hpp"
#include "scenarios.hpp"

namespace {

using namespace sluice_bench;

bool any_failed = false;  // a case's wrong result or error: the exit status says so

/// Reads `--name=value` (a positive integer) into `out`; true if `arg` was that option.
bool option(std::string_view arg, std::string_view name, I64& out) {
  if (!arg.starts_with(name) || arg.size() <= name.size() || arg[name.size()] != '=') return false;
  const auto value = arg.substr(name.size() + 1);
  auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (ec != std::errc() || p != value.data() + value.size() || out < 1) {
    std::fprintf(stderr, "bench_shapes: option %.*s must be a positive integer, got: %.*s\n",
                 static_cast<int>(name.size()), name.data(), static_cast<int>(value.size()),
                 value.data());
    std::exit(2);
  }
  return true;
}

void run_case(benchmark::State& state, const EngineRun& engine, const Params& params) {
  I64 events = 0;
  Histogram latency;
  bool has_rate = true;
  double cpu = 0;
  int cpu_runs = 0;
  try {
    for (auto _ : state) {
      auto o = engine.run(params);
      state.SetIterationTime(o.seconds);
      events += o.events;
      latency.merge(o.latency);
      has_rate = has_rate && o.has_rate;
      if (o.cpu_percent) {
        cpu += *o.cpu_percent;
        ++cpu_runs;
      }
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    any_failed = true;
    return;
  }
  if (has_rate) state.SetItemsProcessed(events);
  if (!latency.empty()) {
    state.counters["p50_ns"] = latency.percentile(0.5);
    state.counters["p99_ns"] = latency.percentile(0.99);
  }
  if (cpu_runs > 0) state.counters["cpu_percent"] = cpu / cpu_runs;
}

}  // namespace

int main(int argc, char** argv) {
  Params params;
  params.events = 10'000'000;
  std::vector<char*> rest;  // what Google Benchmark parses
  for (int i = 0; i < argc; ++i) {
    I64 v = 0;
    if (i > 0 && option(argv[i], "--events", v)) {
      params.events = v;
    } else if (i > 0 && option(argv[i], "--max_demand", v)) {
      params.max_demand = v;
    } else if (i > 0 && option(argv[i], "--instances", v)) {
      params.instances = static_cast<std::size_t>(v);
    } else {
      rest.push_back(argv[i]);
    }
  }
  static const auto all = scenarios();  // the cases refer to it until the end
  for (auto& s : all)
    for (auto& e : s.engines) {
      // GenStage runs in Elixir's VM (a child process per run, seconds each): sluice-bench
      // compares it; these in-process cases leave it out.
      if (e.engine == genstage::engine_name) continue;
      benchmark::RegisterBenchmark((s.name + "/" + e.engine).c_str(),
                                   [&e, params](benchmark::State& st) { run_case(st, e, params); })
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  if (benchmark::ReportUnrecognizedArguments(n, rest.data())) return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return any_failed ? 1 : 0;
}
