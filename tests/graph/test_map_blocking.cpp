// Stage::map_blocking and for_each_blocking (sluice::BlockingMap): order kept or not, at most
// `concurrency` calls at once and on threads outside the oneTBB arena, demand of exactly the
// free slots, a call that throws (the stage fails, or with a restart policy only its event is
// lost), the end waiting for the calls, drain, cancel, and bad options. Behaviour only: where a
// test needs calls to overlap, they wait for each other (with a generous bound that fails the
// test instead of hanging it), never for time to pass.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

#include <support/compile_error.hpp>
#include <unistd.h>

using namespace std::chrono_literals;

using sluice_test::compile_error;

namespace {

std::vector<int> iota(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

/// Calls wait here until `n` of them are in (or the bound passes: `timed_out`, and the test
/// fails instead of hanging), then all go on.
class Rendezvous {
 public:
  explicit Rendezvous(int n) : n_(n) {}
  void arrive_and_wait() {
    std::unique_lock lock(m_);
    if (++in_ >= n_) cv_.notify_all();
    if (!cv_.wait_for(lock, 20s, [&] { return in_ >= n_ || open_; })) timed_out = true;
  }
  /// Lets everyone through from now on.
  void open() {
    std::lock_guard lock(m_);
    open_ = true;
    cv_.notify_all();
  }
  std::atomic<bool> timed_out{false};

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, in_ = 0;
  bool open_ = false;
};

const sluice::StageMetrics& stage(const sluice::Metrics& m, const std::string& name) {
  for (auto& s : m.stages)
    if (s.name == name) return s;
  FAIL("no stage " << name);
  return m.stages.front();
}

/// RELIABILITY.md's identity for a line of stages: what the source sent was delivered to the
/// sink, or dropped, filtered or undelivered (lost in a stage, left on an edge), exactly once.
void check_accounted(const sluice::Metrics& m, const std::string& source, const std::string& sink) {
  std::uint64_t dropped = 0, filtered = 0;
  for (auto& s : m.stages) {
    dropped += s.dropped;
    filtered += s.filtered;
  }
  CHECK(stage(m, source).events_out ==
        stage(m, sink).events_in + dropped + filtered + m.undelivered());
}

/// Waits until `flag` is set, or gives up after a bound (false: the test then fails instead of
/// hanging).
bool wait_for(const std::atomic<bool>& flag) {
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (!flag.load() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(100us);
  return flag.load();
}

}  // namespace

TEST_SUITE("graph.map_blocking") {

TEST_CASE("map_blocking keeps input order when ordered, whatever order the calls end in") {
  // Every tenth call waits until the call after it has returned: calls end out of order.
  std::vector<std::atomic<bool>> done(2000);
  std::atomic<int> timed_out{0};
  std::vector<int> out;
  sluice::Graph g;
  g.source("numbers", sluice::from_range(iota(2000)))
      .map_blocking(
          "square",
          [&](int x) {
            if (x % 10 == 0 && x + 1 < 2000 && !wait_for(done[static_cast<std::size_t>(x + 1)]))
              timed_out.fetch_add(1);
            done[static_cast<std::size_t>(x)] = true;
            return x * x;
          },
          {.concurrency = 8})
      .collect("out", out);
  g.run().wait();
  CHECK(timed_out.load() == 0);
  std::vector<int> expected;
  for (int x : iota(2000))
    expected.push_back(x * x);
  CHECK(out == expected);
}

TEST_CASE("map_blocking ordered: a failure resumed behind later results, at the end of input") {
  // Calls 1 (which throws) and 2 return before call 0: 2 waits behind 1, 1 behind 0.
  std::atomic<bool> one{false}, two{false}, timed_out{false};
  std::vector<int> out;
  sluice::Graph g;
  g.source("numbers", sluice::from_range(iota(3)))
      .map_blocking("parse",
                    [&](int x) {
                      if (x == 0 && !(wait_for(one) && wait_for(two))) timed_out = true;
                      if (x == 2) two = true;
                      if (x == 1) {
                        one = true;
                        throw std::runtime_error("bad record 1");
                      }
                      return x;
                    },
                    {.concurrency = 4}, {.restart = sluice::Restart::on_failure})
      .collect("out", out);
  auto run = g.run({.logger = [](sluice::LogLevel, std::string_view) {}});
  run.wait();  // finishes: nothing is left waiting behind the failure
  CHECK(!timed_out);
  CHECK(out == std::vector<int>{0, 2});
  CHECK(stage(run.metrics(), "parse").resumes == 1);
  check_accounted(run.metrics(), "numbers", "out");
}

TEST_CASE("map_blocking: random inputs give a single-threaded map's results (30 seeds)") {
  // 1-3 sources merged (or one broadcast, whose events are shared and copied in), random
  // lengths, concurrency, max_demand and call lengths. Ordered: each source's results in its
  // order (a stage receives different sources' events interleaved); unordered: the same results.
  for (std::uint32_t seed = 1; seed <= 30; ++seed) {
    CAPTURE(seed);
    std::mt19937 rng(seed);
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    const int sources = pick(1, 3);
    const bool broadcast = sources == 1 && pick(0, 1) == 1;
    const int concurrency = pick(1, 16);
    const bool ordered = pick(0, 1) == 1;
    const std::int64_t max_demand = pick(concurrency, 64);
    CAPTURE(sources);
    CAPTURE(broadcast);
    CAPTURE(concurrency);
    CAPTURE(ordered);
    std::vector<std::vector<int>> inputs(static_cast<std::size_t>(sources));
    for (int k = 0; k < sources; ++k)
      for (int i = pick(0, 400); i > 0; --i)
        inputs[static_cast<std::size_t>(k)].push_back(k * 1'000'000 + pick(0, 999'999));
    auto f = [](int x) {
      for (int i = x % 4; i > 0; --i)  // calls of different lengths
        std::this_thread::yield();
      return std::to_string(x);
    };
    std::vector<std::string> out;
    sluice::Graph g;
    auto first = g.source("s0", sluice::from_range(inputs[0]));
    if (broadcast) first.broadcast();
    if (sources == 1) {
      first
          .map_blocking("blocking", f, {.concurrency = concurrency, .ordered = ordered},
                        {.max_demand = max_demand})
          .collect("out", out);
      if (broadcast) first.for_each("other", [](int) {});
    } else {
      auto s1 = g.source("s1", sluice::from_range(inputs[1]));
      auto merged = sources == 2
                        ? first.merge("merged", s1)
                        : first.merge("merged", s1, g.source("s2", sluice::from_range(inputs[2])));
      merged
          .map_blocking("blocking", f, {.concurrency = concurrency, .ordered = ordered},
                        {.max_demand = max_demand})
          .collect("out", out);
    }
    g.run().wait();
    std::vector<std::string> expected;
    for (auto& input : inputs)
      for (int x : input)
        expected.push_back(f(x));
    if (ordered) {  // each source's results in its own order
      for (int k = 0; k < sources; ++k) {
        std::vector<std::string> mine, theirs;
        for (int x : inputs[static_cast<std::size_t>(k)])
          theirs.push_back(f(x));
        for (auto& r : out)
          if (std::stoi(r) / 1'000'000 == k) mine.push_back(r);
        CHECK(mine == theirs);
      }
    }
    std::sort(out.begin(), out.end());
    std::sort(expected.begin(), expected.end());
    CHECK(out == expected);
  }
}

TEST_CASE("map_blocking unordered passes each result on as its call returns") {
  // Event 0's call waits until the sink has received event 1's result: ordered, that would
  // never come (the bound fails the test); unordered, 1 comes out first.
  std::atomic<bool> one_out{false};
  std::atomic<bool> timed_out{false};
  std::vector<int> out;
  sluice::Graph g;
  g.source("numbers", sluice::from_range(iota(50)))
      .map_blocking("slow_zero",
                    [&](int x) {
                      if (x == 0 && !wait_for(one_out)) timed_out = true;
                      return x;
                    },
                    {.concurrency = 4, .ordered = false})
      .inspect("seen",
               [&](const int& x) {
                 if (x == 1) one_out = true;
               })
      .collect("out", out);
  g.run().wait();
  CHECK(!timed_out);
  REQUIRE(out.size() == 50);
  const auto zero = std::find(out.begin(), out.end(), 0);
  const auto one = std::find(out.begin(), out.end(), 1);
  CHECK(one < zero);
  std::sort(out.begin(), out.end());
  CHECK(out == iota(50));
}

TEST_CASE("map_blocking runs concurrency calls at once, never more, outside the engine's threads") {
  // The run has 2 threads. The first n = 6 calls wait until all 6 are running and until another
  // branch of the graph has moved all its events: both need the calls to be on threads that
  // are not the engine's.
  constexpr int n = 6;
  Rendezvous first(n);
  std::atomic<int> running{0}, most{0}, generated{0}, generated_at_n{-1}, other{0};
  std::atomic<bool> other_stuck{false};
  std::vector<int> out;
  sluice::Graph g;
  g.source("numbers", sluice::from_generator([&, i = 0]() mutable -> std::optional<int> {
             if (i == 100) return std::nullopt;
             generated.fetch_add(1);
             return i++;
           }))
      .map_blocking("blocking",
                    [&](int x) {
                      const int now = running.fetch_add(1) + 1;
                      int seen = most.load();
                      while (now > seen && !most.compare_exchange_weak(seen, now)) {
                      }
                      if (x < n) {
                        first.arrive_and_wait();
                        // All n are running: the stage has asked for exactly n (no slot is free).
                        if (x == 0) generated_at_n = generated.load();
                        const auto until = std::chrono::steady_clock::now() + 20s;
                        while (other.load() < 10000 && std::chrono::steady_clock::now() < until)
                          std::this_thread::sleep_for(100us);
                        if (other.load() < 10000) other_stuck = true;
                      }
                      running.fetch_sub(1);
                      return x;
                    },
                    {.concurrency = n})
      .collect("out", out);
  g.source("others", sluice::from_range(iota(10000))).for_each("count", [&](int) { ++other; });
  g.run({.concurrency = 2}).wait();
  CHECK(!first.timed_out);
  CHECK(!other_stuck);
  CHECK(most.load() == n);
  CHECK(generated_at_n.load() == n);
  CHECK(out == iota(100));
}

TEST_CASE("map_blocking: a call that throws fails the stage, naming it and the error") {
  for (const bool ordered : {true, false}) {
    CAPTURE(ordered);
    std::vector<int> out;
    sluice::Graph g;
    g.source("numbers", sluice::from_range(iota(100)))
        .map_blocking("parse",
                      [](int x) {
                        if (x == 5) throw std::runtime_error("bad record 5");
                        return x;
                      },
                      {.concurrency = 4, .ordered = ordered})
        .collect("out", out);
    // Without fail_fast, the sink reads what reached its edge before the failure's end.
    auto run = g.run({.fail_fast = false, .logger = [](sluice::LogLevel, std::string_view) {}});
    CHECK_THROWS_WITH_AS(run.wait(), doctest::Contains("stage 'parse'"), sluice::stage_error);
    CHECK_THROWS_WITH_AS(run.wait(), doctest::Contains("bad record 5"), sluice::stage_error);
    CHECK(std::find(out.begin(), out.end(), 5) == out.end());
    check_accounted(run.metrics(), "numbers", "out");  // the failed event is counted lost
    if (ordered)  // everything before it, in order, and nothing after
      CHECK(out == iota(5));
  }
}

TEST_CASE("map_blocking with a restart policy: a call that throws costs only its event") {
  for (const bool ordered : {true, false}) {
    CAPTURE(ordered);
    std::vector<int> out;
    std::vector<std::string> warnings;
    std::mutex log_mutex;
    sluice::Graph g;
    g.source("numbers", sluice::from_range(iota(100)))
        .map_blocking("parse",
                      [](int x) {
                        if (x == 3 || x == 70)
                          throw std::runtime_error("bad record " + std::to_string(x));
                        return x;
                      },
                      {.concurrency = 4, .ordered = ordered},
                      {.restart = sluice::Restart::on_failure})
        .collect("out", out);
    auto run = g.run({.logger = [&](sluice::LogLevel level, std::string_view text) {
      std::lock_guard lock(log_mutex);
      if (level == sluice::LogLevel::warning) warnings.emplace_back(text);
    }});
    run.wait();
    auto expected = iota(100);
    std::erase_if(expected, [](int x) { return x == 3 || x == 70; });
    if (!ordered) std::sort(out.begin(), out.end());
    CHECK(out == expected);
    const auto m = run.metrics();
    const auto& s = stage(m, "parse");
    CHECK(s.resumes == 2);
    CHECK(s.restarts == 0);
    CHECK(s.lost == 2);
    CHECK(s.stop_reason == "normal");
    check_accounted(m, "numbers", "out");
    REQUIRE(warnings.size() == 2);
    std::sort(warnings.begin(), warnings.end());
    CHECK(warnings[0] ==
          "stage 'parse' resumed (1 of at most 3 within 5000 ms) after: bad record 3 (1 events "
          "lost)");
    CHECK(warnings[1].find("after: bad record 70") != std::string::npos);
  }
}

TEST_CASE("map_blocking with a restart policy: failures beyond max_restarts fail the stage") {
  std::vector<int> out;
  sluice::Graph g;
  g.source("numbers", sluice::from_range(iota(100)))
      .map_blocking(
          "parse",
          [](int x) {
            if (x % 10 == 9) throw std::runtime_error("bad record " + std::to_string(x));
            return x;
          },
          {.concurrency = 4},
          {.restart = sluice::Restart::on_failure, .max_restarts = 2, .restart_window = 1h})
      .collect("out", out);
  auto run = g.run({.fail_fast = false, .logger = [](sluice::LogLevel, std::string_view) {}});
  CHECK_THROWS_WITH_AS(run.wait(), doctest::Contains("bad record 29"), sluice::stage_error);
  // 9 and 19 were resumed; 29 was the third within the window.
  auto expected = iota(29);
  std::erase_if(expected, [](int x) { return x == 9 || x == 19; });
  CHECK(out == expected);
  CHECK(stage(run.metrics(), "parse").resumes == 2);
  check_accounted(run.metrics(), "numbers", "out");
}

TEST_CASE("for_each_blocking: every call has returned when the run ends") {
  std::atomic<std::int64_t> sum{0};
  std::atomic<int> calls{0};
  sluice::Graph g;
  g.source("numbers", sluice::from_range(iota(300)))
      .for_each_blocking("store",
                         [&](int x) {
                           std::this_thread::sleep_for(100us);  // a blocking write
                           sum.fetch_add(x);
                           calls.fetch_add(1);
                         },
                         {.concurrency = 16});
  auto run = g.run();
  run.wait();
  CHECK(calls.load() == 300);
  CHECK(sum.load() == 299 * 300 / 2);
  CHECK(stage(run.metrics(), "store").stop_reason == "normal");
}

TEST_CASE("map_blocking: a drain lets every call the stage took in return") {
  std::atomic<int> calls{0};
  std::atomic<int> received{0};
  sluice::Graph g;
  g.source("numbers",
           sluice::from_generator([i = 0]() mutable -> std::optional<int> { return i++; }))
      .map_blocking("blocking",
                    [&](int x) {
                      calls.fetch_add(1);
                      return x;
                    },
                    {.concurrency = 8})
      .for_each("sink", [&](int) { received.fetch_add(1); });
  auto run = g.run();
  while (received.load() < 1000)
    std::this_thread::yield();
  run.drain();
  const auto m = run.metrics();
  CHECK(m.undelivered() == 0);
  CHECK(received.load() == calls.load());
  check_accounted(m, "numbers", "sink");
}

TEST_CASE("map_blocking: a cancel counts the calls in flight as lost and does not wait for them") {
  for (const bool sink : {false, true}) {  // map_blocking, for_each_blocking
    CAPTURE(sink);
    Rendezvous gate(1000);  // never full: only open() lets the calls through
    std::atomic<int> started{0};
    auto blocked = [&](int x) {
      started.fetch_add(1);
      gate.arrive_and_wait();
      return x;
    };
    sluice::Graph g;
    auto numbers = g.source("numbers", sluice::from_range(iota(100)));
    if (sink)
      numbers.for_each_blocking("stuck", [&](int x) { blocked(x); }, {.concurrency = 4});
    else
      numbers.map_blocking("stuck", blocked, {.concurrency = 4}).for_each("sink", [](int) {});
    {
      auto run = g.run();
      while (started.load() < 4)
        std::this_thread::yield();
      const auto report = run.cancel();  // returns while the 4 calls are still blocked
      CHECK(stage(report.metrics, "stuck").lost == 4);
      CHECK(stage(report.metrics, "stuck").stop_reason == "shutdown");
      // Nothing reached a sink: everything the source sent is counted undelivered, once.
      CHECK(report.metrics.undelivered() == stage(report.metrics, "numbers").events_out);
      gate.open();  // the run's end joins the stage's threads: let their calls return
    }
  }
}

TEST_CASE("map_blocking: README's example") {
  // (Names built by appends: GCC 12 warns falsely on "literal" + std::string, bug 105329.)
  std::string name = "sluice_map_blocking_";
  name += std::to_string(::getpid());
  const auto dir = std::filesystem::temp_directory_path() / name;
  std::filesystem::create_directories(dir);
  std::vector<std::string> paths;
  std::uintmax_t expected = 0;
  for (int i = 0; i < 40; ++i) {
    paths.push_back((dir / std::to_string(i)).string());
    std::ofstream(paths.back()) << std::string(static_cast<std::size_t>(i * 7), 'x');
    expected += static_cast<std::uintmax_t>(i * 7);
  }
  std::uintmax_t total = 0;
  sluice::Graph g;
  // (README's lines, verbatim)
  g.source("paths", sluice::from_range(paths))
      .map_blocking("size", [](const std::string& p) { return std::filesystem::file_size(p); },
                    {.concurrency = 16})
      .for_each("total", [&](std::uintmax_t bytes) { total += bytes; });
  g.run().wait();
  std::filesystem::remove_all(dir);
  CHECK(total == expected);
}

TEST_CASE("map_blocking and for_each_blocking: bad options are refused before running") {
  auto refused = [](sluice::MapBlockingOptions o, sluice::StageOptions s = {}) {
    sluice::Graph g;
    g.source("src", sluice::from_range(iota(3)))
        .map_blocking(
            "blocking", [](int x) { return x; }, o, s)
        .for_each("sink", [](int) {});
    return compile_error(g);
  };
  CHECK(refused({}) == "stage 'blocking': option concurrency must be at least 1, got: 0");
  CHECK(refused({.concurrency = -2}) ==
        "stage 'blocking': option concurrency must be at least 1, got: -2");
  CHECK(refused({.concurrency = 64}, {.max_demand = 10}) ==
        "stage 'blocking': option concurrency (64) exceeds max_demand (10): no more events than "
        "max_demand can be asked for at once (raise max_demand)");
  CHECK(refused({.concurrency = 4}, {.instances = 2}) ==
        "stage 'blocking': option instances must be 1 for map_blocking (one pool of threads for "
        "the stage), got: 2");
  CHECK(refused({.concurrency = 4}) == "compiled");
  sluice::Graph g;
  g.source("src", sluice::from_range(iota(3))).for_each_blocking("sink", [](int) {}, {});
  CHECK(compile_error(g) == "stage 'sink': option concurrency must be at least 1, got: 0");
  using Class = sluice::BlockingMap<int, int (*)(int)>;  // the engine API's class
  CHECK_THROWS_WITH_AS(Class(nullptr, {}),
                       "MapBlockingOptions::concurrency must be at least 1, got: 0",
                       sluice::option_error);
}

}  // TEST_SUITE("graph.map_blocking")
