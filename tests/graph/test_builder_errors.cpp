// compile()'s remaining rules, each with its exact message.
#include <optional>
#include <ranges>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

TEST_SUITE("graph.builder") {
TEST_CASE("push source capacity and instances") {
  sluice::Graph g;
  auto [in, source] = g.push_source<int>("in", 0, {.instances = 2});
  source.for_each("sink", [](int) {});
  CHECK_THROWS_WITH_AS(g.compile(),
                       "stage 'in': option capacity must be at least 1, got: 0\n"
                       "stage 'in': option instances must be 1 for a push source, got: 2",
                       sluice::option_error);
}

TEST_CASE("options that do not apply to the stage are refused, not ignored") {
  sluice::Graph g;
  auto src = g.source("numbers", sluice::from_range(std::views::iota(0, 10)),
                      {.selector = sluice::selector<int>([](const int&) { return true; })});
  src.for_each("sink", [](int) {},
               {.buffer_size = 10, .demand_mode = sluice::DemandMode::accumulate});
  src.map("m", [](int x) { return x; }, {.demand_mode = sluice::DemandMode::accumulate})
      .for_each("sink2", [](int) {});
  CHECK_THROWS_WITH_AS(g.compile(),
                       "stage 'numbers': option selector: a producer subscribes to nothing\n"
                       "stage 'sink': option buffer_size: a consumer has no output\n"
                       "stage 'sink': option demand_mode: only producers have a demand mode\n"
                       "stage 'm': option demand_mode: only producers have a demand mode",
                       sluice::option_error);
}

TEST_CASE("more consumer instances than partitions, and a selector without broadcast") {
  sluice::Graph g;
  auto src = g.source("numbers", sluice::from_range(std::views::iota(0, 10)));
  src.partition(2).for_each("p", [](int) {}, {.instances = 3});
  auto other = g.source("other", sluice::from_range(std::views::iota(0, 10)));
  other.for_each("picky", [](int) {},
                 {.selector = sluice::selector<int>([](const int&) { return true; })});
  CHECK_THROWS_WITH_AS(
      g.compile(),
      "stage 'p#2' subscribing to 'numbers': option partition is required when subscribing "
      "to a partition dispatcher (it has 2 partitions: 0, 1)\n"
      "stage 'picky' subscribing to 'other': option selector: only a broadcast dispatcher "
      "selects events",
      sluice::option_error);
}
}  // TEST_SUITE("graph.builder")
