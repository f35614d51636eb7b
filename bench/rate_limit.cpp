// rate_limit_1m (issue 20), through the public API only: a source as fast as demand lets it ->
// rate_limit {1 M events per second, burst 10,000} -> a summing sink, on the real clock for
// 5 s (events / 4, at most 5 M): the rate it keeps and the process's CPU. sluice_paced: the same
// rate with no rate limit stage, from a source that paces itself on a timer (what a user writes
// by hand) into an unthrottled class stage in the rate limit's place: the CPU of the same stages
// at that rate.
#include <algorithm>
#include <any>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>

#include "scenarios.hpp"
#include <support/stages.hpp>

namespace sluice_bench {
namespace {

using namespace std::chrono_literals;

constexpr I64 rate = 1'000'000;  // events per second
constexpr I64 burst = 10'000;

I64 events_of(const Params& p) {
  return std::clamp<I64>(p.events / 4, 1000, 5 * rate);
}

/// A counter that emits 0..n-1 as fast as demand lets it.
auto counter(I64 n) {
  return sluice::from_generator([i = I64{0}, n]() mutable -> std::optional<I64> {
    if (i == n) return std::nullopt;
    return i++;
  });
}

/// A counter that paces itself: by time t after its first demand it has emitted at most
/// burst + rate x t events, and it wakes on a 1 ms timer while demand waits for time.
struct PacedCounter {
  struct Tick {};
  I64 n;
  I64 next = 0;
  I64 demand = 0;
  bool armed = false;
  std::optional<sluice::TimePoint> start;

  void handle_demand(std::size_t d, sluice::Context<I64>& ctx) {
    demand += static_cast<I64>(d);
    emit_due(ctx);
  }
  void handle_info(std::any& m, sluice::Context<I64>& ctx) {
    if (std::any_cast<Tick>(&m) == nullptr) return;
    armed = false;
    emit_due(ctx);
  }
  void emit_due(sluice::Context<I64>& ctx) {
    const auto now = ctx.now();
    if (!start) start = now;
    const I64 due = burst + (now - *start).count() * rate / 1'000'000'000;
    const I64 k = std::min({demand, due - next, n - next});
    for (I64 j = 0; j < k; ++j)
      ctx.emit(next++);
    demand -= std::max<I64>(k, 0);
    if (next == n) {
      ctx.finish();
      return;
    }
    if (demand > 0 && !armed) {
      ctx.send_after(1ms, Tick{});
      armed = true;
    }
  }
};

/// The unthrottled stage in the rate limit's place: a class stage (a cell of its own, as the
/// rate limit is) passing events on.
struct Pass {
  void handle_events(std::span<I64> in, sluice::Context<I64>& ctx) { ctx.emit_all(std::move(in)); }
};

Outcome measured(const std::string& engine, sluice::Graph& g, I64 n, std::atomic<I64>& total) {
  auto compiled = g.compile();
  auto o = run_metered(compiled);
  o.events = n;
  if (total != n * (n - 1) / 2)
    throw std::runtime_error("rate_limit_1m / " + engine + ": wrong sum " +
                             std::to_string(total.load()));
  return o;
}

void declare_limited(sluice::Graph& g, I64 n, std::atomic<I64>& total) {
  g.source("source", counter(n))
      .rate_limit("limit", {.events = rate, .per = 1s, .burst = burst})
      .to("sum", sluice_test::SummingSink<I64>{&total});
}

}  // namespace

Scenario rate_limit_scenario() {
  return {"rate_limit_1m",
          "source -> rate_limit (1 M events/s, burst 10000) -> sum, on the real clock for "
          "events / 4 events (at most 5 M: 5 s); sluice_paced: the same rate from a source "
          "pacing itself on a 1 ms timer, an unthrottled pass-through stage in the rate "
          "limit's place; cpu: the process's",
          [](sluice::Graph& g, const Params& p) {
            static std::atomic<I64> t;
            declare_limited(g, events_of(p), t);
          },
          {{"sluice",
            [](const Params& p) {
              std::atomic<I64> total{0};
              sluice::Graph g;
              declare_limited(g, events_of(p), total);
              return measured("sluice", g, events_of(p), total);
            }},
           {"sluice_paced", [](const Params& p) {
              std::atomic<I64> total{0};
              sluice::Graph g;
              g.source<I64>("source", PacedCounter{.n = events_of(p), .start = std::nullopt})
                  .then<I64>("pass", Pass{})
                  .to("sum", sluice_test::SummingSink<I64>{&total});
              return measured("sluice_paced", g, events_of(p), total);
            }}}};
}

}  // namespace sluice_bench
