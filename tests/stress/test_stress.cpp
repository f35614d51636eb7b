// Seeded random graphs (the shared model, support/random_graph.hpp): 2-12 stages (sources,
// producer_consumers that map or filter, sinks), random instances, dispatchers (demand, broadcast
// with and without selectors, partition by a hash), max_demand / min_demand, speeds and fan-in,
// periodic timers, and stages that fail on a tick and restart (their buffer lost, and counted).
// Every event carries its origin and its last hop, so the checker verifies at each producer that
// each edge delivered exactly what the dispatcher promises, in order; metrics are sampled while the
// graph runs; a watchdog turns a hang into a failure with a report of which stage waits on what.
//
//   SLUICE_STRESS_SEED=1234     replay one seed (printed by any failure)
//   SLUICE_STRESS_COUNT=N       seeds per run (default 200)
//   SLUICE_STRESS_FIRST=N       first seed (default 1)
//   SLUICE_STRESS_DELIVERIES=N  events per graph, summed over its edges (50000; 20000 under
//                               sanitizers)
//   SLUICE_STRESS_HASH_DROPS=0  partition hashes never drop events (by default some do)
//   SLUICE_STRESS_TIMERS=0      no timers and no restarts (by default some stages tick, and some
//                               of those fail once on a tick and restart)
//   SLUICE_SOAK_SECONDS=S       the soak case runs random graphs for S seconds, printing RSS
//                               (tools/soak.sh)
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

#include "stress/delivery.hpp"
#include "support/stages.hpp"
#include "support/watch.hpp"

namespace {

using Clock = std::chrono::steady_clock;

#ifdef SLUICE_STRESS_SANITIZED
constexpr std::uint64_t kDefaultSeeds = 200;  // about 5 s under TSan on 2 cores
constexpr std::uint64_t kDeliveries = 20'000;
#else
constexpr std::uint64_t kDefaultSeeds = 200;
constexpr std::uint64_t kDeliveries = 50'000;
#endif
constexpr int kBlocks = 4;
/// No counter moved for this long: a hang. Generous: a slow machine must never fail a case.
constexpr std::chrono::seconds kStall{60};

using sluice_test::dump;

/// Why the run is stuck: Run::diagnose() where the engine has it, and the counters.
template <class R>
std::string stall_report(R& run) {
  std::string out;
  if constexpr (requires(R & r) { r.diagnose().to_string(); })
    out += "diagnosis:\n" + run.diagnose().to_string();
  return out + dump(run.metrics());
}

/// Everything that moves while a run makes progress.
std::uint64_t progress(const sluice::Metrics& m) {
  std::uint64_t p = 0;
  for (auto& s : m.stages)
    p += s.events_in + s.events_out + (s.finished ? 1 : 0);
  for (auto& e : m.edges)
    p += e.sent + e.received;
  return p;
}

/// Waits for `run` on this thread: polls done() and the metrics (every 1 ms at first, then every
/// 50 ms), hands each sample to `on_sample`. Returns the stall report if no counter moved for
/// `stall` (the run is then cancelled), or nothing once the run is done.
template <class OnSample>
std::optional<std::string> watch(sluice::Run& run, std::chrono::milliseconds stall,
                                 OnSample&& on_sample) {
  auto last_move = Clock::now();
  std::optional<std::uint64_t> last;
  auto poll = std::chrono::milliseconds(1);
  while (!run.done()) {
    std::this_thread::sleep_for(poll);
    poll = std::min(poll * 2, std::chrono::milliseconds(50));
    auto m = run.metrics();
    const auto p = progress(m);
    on_sample(std::move(m));
    if (!last || p != *last) {
      last = p;
      last_move = Clock::now();
    } else if (Clock::now() - last_move > stall && !run.done()) {
      auto report =
          "no progress for " + std::to_string(stall.count()) + " ms\n" + stall_report(run);
      run.cancel();
      return report;
    }
  }
  return std::nullopt;
}

/// What the cases of a block did, for its closing message (information, not a check: whether a
/// tick comes before a stage ends is a matter of time).
struct Tally {
  std::uint64_t cases = 0, ticks = 0, restarts = 0, lost = 0;
};

/// Runs one seed; returns whether every check passed.
bool run_case(std::uint64_t seed, Tally* tally = nullptr) {
  auto spec = stress::rg::generate(
      seed, stress::knobs(sluice_test::env_number("SLUICE_STRESS_DELIVERIES").value_or(kDeliveries),
                          sluice_test::env_number("SLUICE_STRESS_HASH_DROPS").value_or(1) != 0));
  if (sluice_test::env_number("SLUICE_STRESS_TIMERS").value_or(1) != 0) stress::add_timers(spec);
  const std::string graph = spec.describe();
  CAPTURE(seed);
  INFO("replay with SLUICE_STRESS_SEED=", seed, "\n", graph);
  stress::Records records(spec);
  auto logs = std::make_shared<stress::LogSink>();
  auto options = spec.run.options();
  options.logger = [logs](sluice::LogLevel, std::string_view line) {
    std::lock_guard lock(logs->mutex);
    logs->lines.emplace_back(line);
  };
  const auto started = Clock::now();
  auto run = stress::build(spec, records).run(options);

  stress::Findings live;
  std::optional<sluice::Metrics> previous;
  const auto stalled = watch(run, kStall, [&](sluice::Metrics m) {
    stress::check_sample(spec, m, previous ? &*previous : nullptr, live);
    previous = std::move(m);
  });
  if (stalled) {
    FAIL_CHECK("the run hung: ", *stalled);
    return false;
  }
  const std::chrono::duration<double> took = Clock::now() - started;
  if (took > std::chrono::seconds(2))  // information only: tests assert behaviour, not time
    std::fprintf(stderr, "seed %llu ran for %.1f s\n", static_cast<unsigned long long>(seed),
                 took.count());
  try {
    run.wait();
  } catch (const std::exception& e) {
    FAIL_CHECK("the run failed: ", e.what());
    return false;
  }
  const auto final_metrics = run.metrics();
  const auto findings = stress::check(spec, records, final_metrics);
  if (tally) {
    ++tally->cases;
    for (auto& s : final_metrics.stages) {
      tally->restarts += s.restarts;
      tally->lost += s.lost;
    }
    for (auto& stage : records.stages)
      for (auto& r : stage)
        tally->ticks += r.ticks;
  }
  std::string log_lines;
  {
    std::lock_guard lock(logs->mutex);
    for (auto& l : stress::unexpected_logs(spec, records, logs->lines))
      log_lines += l + "\n";
  }
  CHECK_MESSAGE(live.failed == 0, live.to_string());
  CHECK_MESSAGE(findings.failed == 0, findings.to_string());
  CHECK_MESSAGE(log_lines.empty(), "the engine logged:\n", log_lines);
  return live.failed == 0 && findings.failed == 0 && log_lines.empty();
}

void run_block(int block) {
  if (auto seed = sluice_test::env_number("SLUICE_STRESS_SEED")) {
    if (block == 0) {
      MESSAGE("replaying seed ", *seed);
      run_case(*seed);
    }
    return;
  }
  const auto count = sluice_test::env_number("SLUICE_STRESS_COUNT").value_or(kDefaultSeeds);
  const auto first = sluice_test::env_number("SLUICE_STRESS_FIRST").value_or(1);
  const auto b = static_cast<std::uint64_t>(block);
  Tally tally;
  for (std::uint64_t i = count * b / kBlocks; i < count * (b + 1) / kBlocks; ++i)
    run_case(first + i, &tally);
  MESSAGE(tally.cases, " cases: ", tally.ticks, " ticks handled, ", tally.restarts,
          " restarts, which lost ", tally.lost, " buffered events");
}

struct Memory {
  std::uint64_t rss_kib = 0, hwm_kib = 0;
};

Memory read_memory() {
  Memory m;
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmRSS:")) m.rss_kib = std::strtoull(line.c_str() + 6, nullptr, 10);
    if (line.starts_with("VmHWM:")) m.hwm_kib = std::strtoull(line.c_str() + 6, nullptr, 10);
  }
  return m;
}

}  // namespace

TEST_SUITE("stress") {
TEST_CASE("random graphs block 1 of 4") {
  run_block(0);
}
TEST_CASE("random graphs block 2 of 4") {
  run_block(1);
}
TEST_CASE("random graphs block 3 of 4") {
  run_block(2);
}
TEST_CASE("random graphs block 4 of 4") {
  run_block(3);
}

TEST_CASE("the watchdog reports a graph that waits forever and cancels it") {
  // A sink on manual demand that never asks: the source has nothing to do, nothing moves.
  using NeverAsks = sluice_test::NullSink<int>;
  sluice::Graph g;
  g.source("numbers", sluice::from_range(std::views::iota(0, 100)))
      .to("never_asks", NeverAsks{}, {.demand = sluice::DemandControl::manual});
  auto run = g.run();
  int samples = 0;
  const auto report = watch(run, std::chrono::milliseconds(300), [&](auto&&) { ++samples; });
  REQUIRE(report.has_value());
  CHECK(samples > 0);
  CHECK(report->find("no progress") != std::string::npos);
  CHECK(report->find("edge numbers -> never_asks: sent 0 received 0") != std::string::npos);
  CHECK(run.done());  // cancelled
}

// A partition hash that drops events (std::nullopt) used to stall a producer that emits exactly
// its demand: the dropped events used up the demand handed to handle_demand (or a
// producer_consumer's downstream counter) but no consumer's, so the consumers waited for events
// nobody would emit. GenStage 1.x does the same; Sluice replaces them (docs/GENSTAGE.md,
// difference 19). Found by stress seeds 50, 75, 76, 80, 85 and 111 (of the suite's own generator
// then, before the shared model), which passed after the fix.
TEST_CASE("a partition hash that drops events: they are replaced and nothing stalls") {
  std::vector<std::vector<int>> seen(2);
  struct Sink {
    std::vector<std::vector<int>>* seen;
    void handle_events(std::span<int> in, sluice::Context<void>& c) {
      for (int v : in)
        (*seen)[c.instance()].push_back(v);
    }
  };
  sluice::Graph g;
  g.source("numbers", sluice::from_range(std::views::iota(0, 1000)))
      .partition(2,
                 [](int& x) -> std::optional<int> {
                   if (x % 3 == 0) return std::nullopt;  // dropped
                   return x % 2;
                 })
      .to("sink", Sink{&seen}, {.instances = 2, .max_demand = 4});
  auto run = g.run();
  const auto report = watch(run, kStall, [](auto&&) {});
  REQUIRE_MESSAGE(!report, *report);
  run.wait();
  std::size_t delivered = seen[0].size() + seen[1].size();
  CHECK(delivered == 1000 - 334);
}

TEST_CASE("soak: random graphs back to back while RSS stays flat") {
  // Without SLUICE_SOAK_SECONDS only the RSS reading is checked.
  const auto first = read_memory();
  REQUIRE(first.rss_kib > 0);
  CHECK(first.hwm_kib >= first.rss_kib);
  const auto seconds = sluice_test::env_number("SLUICE_SOAK_SECONDS").value_or(0);
  if (seconds == 0) return;

  const auto start = Clock::now();
  const auto end = start + std::chrono::seconds(seconds);
  // Warm-up: the allocator's and oneTBB's pools fill up; the first minute (a third of a shorter
  // soak) is not held against the run.
  const auto warm_up = std::chrono::seconds(std::min<std::uint64_t>(60, seconds / 3));
  const auto interval = std::chrono::seconds(10);
  std::optional<std::uint64_t> baseline_kib;
  std::uint64_t seed = sluice_test::env_number("SLUICE_STRESS_FIRST").value_or(1'000'000);
  std::uint64_t cases = 0;
  auto next_sample = start + interval;
  std::printf("soak: %llu s, RSS sampled every %lld s, warm-up %lld s\n",
              static_cast<unsigned long long>(seconds), static_cast<long long>(interval.count()),
              static_cast<long long>(warm_up.count()));
  std::fflush(stdout);
  bool ok = true;
  while (Clock::now() < end && ok) {
    ok = run_case(seed++);
    ++cases;
    const auto now = Clock::now();
    if (now < next_sample && now < end) continue;
    next_sample += interval;
    const auto mem = read_memory();
    const auto t = std::chrono::duration_cast<std::chrono::seconds>(now - start).count();
    std::printf("soak: t=%4lld s  cases %6llu  VmRSS %8llu KiB  VmHWM %8llu KiB\n",
                static_cast<long long>(t), static_cast<unsigned long long>(cases),
                static_cast<unsigned long long>(mem.rss_kib),
                static_cast<unsigned long long>(mem.hwm_kib));
    std::fflush(stdout);
    if (now - start < warm_up) continue;
    if (!baseline_kib) {
      baseline_kib = mem.rss_kib;
      continue;
    }
    // 20 % and 8 MiB above the first sample after the warm-up: growth, not noise.
    const auto limit = *baseline_kib + *baseline_kib / 5 + 8 * 1024;
    CHECK_MESSAGE(mem.rss_kib <= limit, "RSS grew from ", *baseline_kib, " KiB to ", mem.rss_kib,
                  " KiB at t=", t, " s (limit ", limit, " KiB)");
    if (mem.rss_kib > limit) ok = false;
  }
  std::printf("soak: %llu cases (seeds %llu..%llu)%s\n", static_cast<unsigned long long>(cases),
              static_cast<unsigned long long>(seed - cases),
              static_cast<unsigned long long>(seed - 1), ok ? "" : ", stopped at a failure");
  CHECK(cases > 0);
}
}  // TEST_SUITE("stress")
