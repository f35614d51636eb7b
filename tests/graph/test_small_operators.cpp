// Stage::take, inspect, scan and merge: exact outputs, an endless source stopped by take, the
// demand take asks, fan-in, and bad options.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

#include <support/compile_error.hpp>

using namespace std::chrono_literals;

using sluice_test::compile_error;

namespace {

/// 0, 1, 2, ... for ever.
auto endless() {
  return sluice::from_generator([i = 0]() mutable -> std::optional<int> { return i++; });
}

const sluice::EdgeMetrics& edge(const sluice::Metrics& m, const std::string& consumer) {
  for (auto& e : m.edges)
    if (e.consumer == consumer) return e;
  FAIL("no edge into " << consumer);
  return m.edges.front();
}

}  // namespace

TEST_SUITE("graph.small_operators") {

TEST_CASE("take: the first n events, then an endless source is stopped") {
  std::vector<int> out;
  sluice::Graph g;
  g.source("numbers", endless()).take("first", 5).collect("out", out);
  auto run = g.run();
  run.wait();  // returns: the source was told to stop
  CHECK(out == std::vector<int>{0, 1, 2, 3, 4});
  auto m = run.metrics();
  CHECK(edge(m, "first").sent == 5);  // it asked for no more than it passed
  CHECK(m.undelivered() == 0);
}

TEST_CASE("take: with max_demand below n, asks for no more than it passes") {
  std::vector<int> out;
  sluice::Graph g;
  g.source("numbers", endless()).take("first", 2500, {.max_demand = 1000}).collect("out", out);
  auto run = g.run({.manual = true});
  run.run_until_idle();
  REQUIRE(run.done());
  run.wait();
  REQUIRE(out.size() == 2500);
  CHECK(out.back() == 2499);
  CHECK(edge(run.metrics(), "first").sent == 2500);
}

TEST_CASE("take: a source that ends first passes everything, take(0) passes nothing") {
  std::vector<int> out, none;
  sluice::Graph g;
  g.source("three", sluice::from_range(std::vector<int>{1, 2, 3}))
      .take("first", 10)
      .collect("out", out);
  g.source("numbers", endless()).take("nothing", 0).collect("none", none);
  g.run().wait();
  CHECK(out == std::vector<int>{1, 2, 3});
  CHECK(none.empty());
}

TEST_CASE("take: from several inputs, n in all") {
  std::vector<int> out;
  sluice::Graph g;
  auto a = g.source("a", endless());
  auto b = g.source("b", endless());
  a.take("first", 7).subscribe(b).collect("out", out);
  auto run = g.run();
  run.wait();
  CHECK(out.size() == 7);
}

TEST_CASE("take: a negative n and several instances are option_errors") {
  std::vector<int> out;
  sluice::Graph g;
  g.source("numbers", endless()).take("first", -1).collect("out", out);
  CHECK(compile_error(g) == "stage 'first': option n must be at least 0, got: -1");
  sluice::Graph g2;
  g2.source("numbers", endless()).take("first", 3, {.instances = 2}).for_each("out", [](int) {});
  CHECK(compile_error(g2) ==
        "stage 'first': option instances must be 1 for take (one count), got: 2");
  CHECK_THROWS_WITH_AS(sluice::Take<int>(-2), "take: n must be at least 0, got: -2",
                       sluice::option_error);
}

TEST_CASE("inspect: sees each event and passes it on unchanged") {
  std::vector<std::string> seen, out;
  sluice::Graph g;
  g.source("words", sluice::from_range(std::vector<std::string>{"a", "bb", "ccc"}))
      .inspect("log", [&](const std::string& w) { seen.push_back(w); })
      .map("upper", [](std::string w) { return w + "!"; })
      .collect("out", out);
  g.run().wait();
  CHECK(seen == std::vector<std::string>{"a", "bb", "ccc"});
  CHECK(out == std::vector<std::string>{"a!", "bb!", "ccc!"});
}

TEST_CASE("inspect: unfused, and after a broadcast (shared, read-only events)") {
  std::vector<int> seen, left, right;
  sluice::Graph g;
  auto src = g.source("n", sluice::from_range(std::vector<int>{1, 2, 3}));
  src.broadcast();
  src.inspect("log", [&](const int& e) { seen.push_back(e); }, {.fuse = false})
      .collect("left", left);
  src.collect("right", right);
  g.run().wait();
  CHECK(seen == std::vector<int>{1, 2, 3});
  CHECK(left == std::vector<int>{1, 2, 3});
  CHECK(right == std::vector<int>{1, 2, 3});
}

TEST_CASE("scan: each running result, from init, of another type than the events") {
  std::vector<std::int64_t> sums;
  std::vector<std::string> trail;
  sluice::Graph g;
  auto src = g.source("n", sluice::from_range(std::vector<int>{1, 2, 3, 4}));
  src.broadcast();
  src.scan("sum", std::int64_t{100}, [](std::int64_t acc, int e) { return acc + e; })
      .collect("sums", sums);
  src.scan("trail", std::string{},
           [](std::string acc, const int& e) { return acc + std::to_string(e); })
      .collect("trail_out", trail);
  g.run().wait();
  CHECK(sums == std::vector<std::int64_t>{101, 103, 106, 110});
  CHECK(trail == std::vector<std::string>{"1", "12", "123", "1234"});
}

TEST_CASE("merge: the events of every producer, each producer's in order") {
  std::vector<int> out;
  sluice::Graph g;
  auto a = g.source("a", sluice::from_range(std::vector<int>{1, 2, 3}));
  auto b = g.source("b", sluice::from_range(std::vector<int>{10, 20}));
  auto c = g.source("c", sluice::from_range(std::vector<int>{100}));
  a.merge("all", b, c).collect("out", out);
  g.run().wait();
  REQUIRE(out.size() == 6);
  std::vector<int> from_a, from_b;
  for (int e : out) {
    if (e < 10) from_a.push_back(e);
    if (e >= 10 && e < 100) from_b.push_back(e);
  }
  CHECK(from_a == std::vector<int>{1, 2, 3});
  CHECK(from_b == std::vector<int>{10, 20});
  CHECK(std::count(out.begin(), out.end(), 100) == 1);
}

}  // TEST_SUITE("graph.small_operators")
