// The benchmark scenarios, shared by sluice-bench (tools/) and the Google Benchmark suite
// bench_shapes: each shape once, through Sluice's public builder API with ordinary per-event user
// functions, and through the alternatives that can express it (bench/baselines.hpp,
// bench/tbb_baselines.hpp). Every run checks what its sink(s) received.
#pragma once

#include <array>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <sluice/sluice.hpp>

#include <sys/resource.h>

namespace sluice_bench {

using I64 = std::int64_t;
using Clock = std::chrono::steady_clock;

struct Params {
  I64 events = 20'000'000;
  I64 max_demand = sluice::default_max_demand;
  std::size_t instances = 4;
  int repetitions = 3;
};

/// Latencies in constant memory (the harness must not weigh on the peak RSS it reports):
/// 32 buckets per power of two, so a percentile is within 2.2 % of the true value.
class Histogram {
 public:
  void add(I64 ns) {
    ++counts_[bucket(ns < 1 ? 1 : ns)];
    ++total_;
  }
  void merge(const Histogram& o) {
    for (std::size_t i = 0; i < counts_.size(); ++i)
      counts_[i] += o.counts_[i];
    total_ += o.total_;
  }
  bool empty() const { return total_ == 0; }
  /// The value below which a fraction q of the samples lie (the bucket's midpoint).
  double percentile(double q) const {
    const auto want = static_cast<std::uint64_t>(std::ceil(q * double(total_)));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= want && counts_[i] > 0) return (low(i) + low(i + 1)) / 2;
    }
    return low(counts_.size());
  }

 private:
  static constexpr int sub = 32;
  static std::size_t bucket(I64 ns) {
    const auto v = static_cast<std::uint64_t>(ns);
    const int e = static_cast<int>(std::bit_width(v)) - 1;  // v in [2^e, 2^(e+1))
    const auto frac = e >= 5 ? (v >> (e - 5)) & (sub - 1) : (v << (5 - e)) & (sub - 1);
    return static_cast<std::size_t>(e) * sub + frac;
  }
  static double low(std::size_t i) {
    return std::ldexp(1.0 + double(i % sub) / sub, static_cast<int>(i / sub));
  }
  std::array<std::uint64_t, 64 * sub> counts_{};
  std::uint64_t total_ = 0;
};

/// What one run of one engine produced.
struct Outcome {
  I64 events = 0;  // events delivered (per consumer for a broadcast)
  double seconds = 0;
  Histogram latency;  // latency scenarios only (the timer scenarios': lateness)
  /// The process's CPU time over the measured interval, in percent of one core (the timer
  /// scenarios only).
  std::optional<double> cpu_percent = std::nullopt;
  /// False: events / seconds is no rate (timers_idle: events are the timers pending).
  bool has_rate = true;
};

struct EngineRun {
  std::string engine;
  std::function<Outcome(const Params&)> run;
};

struct Scenario {
  std::string name;
  std::string what;
  /// Declares the Sluice graph (for --dot); null for scenarios without one.
  std::function<void(sluice::Graph&, const Params&)> dot;
  std::vector<EngineRun> engines;
};

/// prefix + n, by appends ("literal" + std::string&& trips GCC bug 105329 at -O3).
inline std::string numbered(const char* prefix, I64 n) {
  std::string s = prefix;
  s += std::to_string(n);
  return s;
}

/// Times `f()`, which handles `events` events.
template <class F>
Outcome timed(I64 events, F&& f) {
  const auto t0 = Clock::now();
  f();
  return {events, std::chrono::duration<double>(Clock::now() - t0).count(), {}};
}

/// The CPU time of the whole process (every thread, user + system), in seconds.
inline double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) * 1e-6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

/// Wall time and process CPU time from construction on.
class CpuMeter {
 public:
  double seconds() const { return std::chrono::duration<double>(Clock::now() - wall_).count(); }
  /// The CPU used since construction, in percent of one core.
  double percent() const { return 100.0 * (process_cpu_seconds() - cpu_) / seconds(); }

 private:
  Clock::time_point wall_ = Clock::now();
  double cpu_ = process_cpu_seconds();
};

/// Runs `compiled` once to its end: the wall time and the process's CPU over the run.
template <class Compiled>
Outcome run_metered(Compiled& compiled) {
  const CpuMeter meter;
  compiled.run().wait();
  Outcome o;
  o.seconds = meter.seconds();
  o.cpu_percent = meter.percent();
  return o;
}

/// The wordcount scenario (wordcount.cpp).
Scenario wordcount_scenario();

/// chain4_timer and chain4_timer_unfused (timers.cpp): chain4 with timers held.
std::vector<Scenario> timer_chain_scenarios();
/// timers_lone, timers_fire and timers_idle (timers.cpp): timers firing, and pending.
std::vector<Scenario> timer_scenarios();
/// rate_limit_1m (rate_limit.cpp): a rate limit of 1 M events/s on the real clock.
Scenario rate_limit_scenario();
/// map_blocking_1ms (map_blocking.cpp): 1 ms blocking calls, concurrency 64, on the real clock.
Scenario map_blocking_scenario();

/// Every scenario, in the order sluice-bench lists and runs them.
std::vector<Scenario> scenarios();

}  // namespace sluice_bench
