// map_blocking_1ms (issue 20), through the public API only: a source as fast as demand lets it
// -> map_blocking (a function that sleeps 1 ms, concurrency 64) -> a summing sink, on the real
// clock: calls per second against the ideal 64 / 1 ms = 64,000. threads_sleep: the machine's own
// ceiling for the same work, 64 plain threads each sleeping 1 ms in a loop (a sleep overshoots
// by the timer slack, so it is below 64,000 too).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "scenarios.hpp"
#include <support/stages.hpp>

namespace sluice_bench {
namespace {

using namespace std::chrono_literals;

constexpr int concurrency = 64;

/// 64,000 calls a second at best: events / 160 (125,000 by default: about 2 s), at least 6400.
I64 events_of(const Params& p) {
  return std::clamp<I64>(p.events / 160, 6400, 640'000);
}

void declare(sluice::Graph& g, I64 n, std::atomic<I64>& total) {
  g.source("source", sluice::from_generator([i = I64{0}, n]() mutable -> std::optional<I64> {
             if (i == n) return std::nullopt;
             return i++;
           }))
      .map_blocking("sleep_1ms",
                    [](I64 x) {
                      std::this_thread::sleep_for(1ms);
                      return x;
                    },
                    {.concurrency = concurrency, .ordered = false})
      .to("sum", sluice_test::SummingSink<I64>{&total});
}

}  // namespace

Scenario map_blocking_scenario() {
  return {
      "map_blocking_1ms",
      "source -> map_blocking (sleeps 1 ms, concurrency 64, unordered) -> sum, on the real "
      "clock for events / 160 events: calls/s, ideally 64,000; threads_sleep: 64 plain "
      "threads sleeping 1 ms in a loop, the machine's ceiling",
      [](sluice::Graph& g, const Params& p) {
        static std::atomic<I64> t;
        declare(g, events_of(p), t);
      },
      {{"sluice",
        [](const Params& p) {
          const I64 n = events_of(p);
          std::atomic<I64> total{0};
          sluice::Graph g;
          declare(g, n, total);
          auto compiled = g.compile();
          auto o = run_metered(compiled);
          o.events = n;
          if (total != n * (n - 1) / 2)
            throw std::runtime_error("map_blocking_1ms: wrong sum " + std::to_string(total.load()));
          return o;
        }},
       {"threads_sleep", [](const Params& p) {
          const I64 n = events_of(p);
          std::atomic<I64> calls{0};
          const CpuMeter meter;
          {
            std::vector<std::jthread> threads;
            for (int t = 0; t < concurrency; ++t)
              threads.emplace_back([&, t] {
                for (I64 i = t; i < n; i += concurrency) {
                  std::this_thread::sleep_for(1ms);
                  calls.fetch_add(1, std::memory_order_relaxed);
                }
              });
          }
          Outcome o;
          o.seconds = meter.seconds();
          o.cpu_percent = meter.percent();
          o.events = calls.load();
          return o;
        }}}};
}

}  // namespace sluice_bench
