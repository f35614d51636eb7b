// Restarts from the builder (StageOptions::restart; engine/DESIGN.md 12): a function stage that
// fails is restarted and the graph delivers the rest; what cannot restart is refused by compile().
#include <atomic>
#include <chrono>
#include <ranges>
#include <stdexcept>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

using namespace std::chrono_literals;

TEST_SUITE("graph.restart") {

TEST_CASE("a map that fails once is restarted: the rest is delivered, its chunk counted lost") {
  std::vector<int> out;
  int failures = 1;
  sluice::Graph g;
  auto m = g.source("numbers", sluice::from_range(std::views::iota(0, 100)))
               .map("check",
                    [&](int x) {
                      if (x == 42 && failures-- > 0) throw std::runtime_error("42 is suspicious");
                      return x;
                    },
                    {.max_demand = 10, .min_demand = 5, .restart = sluice::Restart::on_failure});
  m.collect("out", out);
  std::vector<std::string> log;
  sluice::RunOptions o;
  o.manual = true;
  o.logger = [&](sluice::LogLevel, std::string_view s) { log.emplace_back(s); };
  auto run = g.run(o);
  run.wait();
  // The chunk [40, 45) of the failed call is lost; everything else arrives in order.
  std::vector<int> expected;
  for (int i = 0; i < 100; ++i)
    if (i < 40 || i >= 45) expected.push_back(i);
  CHECK(out == expected);
  const auto metrics = run.metrics();
  CHECK(metrics.stages[1].name == "check");
  CHECK(metrics.stages[1].restarts == 1);
  CHECK(metrics.stages[1].lost == 5);
  CHECK(metrics.undelivered() == 5);
  REQUIRE(log.size() == 1);
  CHECK(log[0] ==
        "stage 'check' restarted (1 of at most 3 within 5000 ms) after: 42 "
        "is suspicious");
  // A stage with a restart policy runs in a cell of its own: it can be addressed.
  CHECK_NOTHROW(run.describe(m));
}

TEST_CASE("bad input: restart on what cannot be remade, max_restarts 0, a subscription's") {
  sluice::Graph g;
  auto [handle, src] = g.push_source<int>("pushed", 10, {.restart = sluice::Restart::on_failure});
  src.for_each("sink", [](int) {}, {.restart = sluice::Restart::always, .max_restarts = 0});
  auto other = g.source("numbers", sluice::from_range(std::views::iota(0, 3)));
  auto sink2 = other.for_each("sink2", [](int) {});
  sink2.subscribe(src, {.restart = sluice::Restart::on_failure});
  try {
    g.compile();
    FAIL("compile() accepted it");
  } catch (const sluice::option_error& e) {
    const std::string what = e.what();
    CHECK(what.find("stage 'pushed': option restart: this stage's handler cannot be remade") !=
          std::string::npos);
    CHECK(what.find("stage 'sink': option max_restarts is 0") != std::string::npos);
    CHECK(what.find("option restart: not a subscription option") != std::string::npos);
  }
  handle.close();
}

}  // TEST_SUITE("graph.restart")
