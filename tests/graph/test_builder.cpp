// The fluent graph builder: every kind of stage, fan-out by dispatcher, fan-in, move-only
// events, running a compiled graph twice, DOT export, and compile()'s error report.
#include <algorithm>
#include <any>
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

#include <support/stages.hpp>

namespace {

std::int64_t sum_below(std::int64_t n) {
  return n * (n - 1) / 2;
}

}  // namespace

TEST_SUITE("graph.builder") {
TEST_CASE("a three-stage pipeline from lambdas, run twice from one compiled graph") {
  sluice::Graph g;
  std::int64_t total = 0;
  g.source("numbers", sluice::from_range(std::views::iota(0, 100'000)))
      .map("triple", [](int x) { return 3 * std::int64_t{x}; }, {.instances = 4})
      .for_each("sum", [&](std::int64_t x) { total += x; });
  auto compiled = g.compile();
  compiled.run().wait();
  CHECK(total == 3 * sum_below(100'000));
  total = 0;
  compiled.run().wait();  // fresh handlers, the range iterated again
  CHECK(total == 3 * sum_below(100'000));
}

TEST_CASE("filter, flat_map and collect keep order through single instances") {
  sluice::Graph g;
  std::vector<std::string> out;
  g.source("numbers", sluice::from_range(std::vector<int>{1, 2, 3, 4, 5, 6}))
      .filter("even", [](const int& x) { return x % 2 == 0; })
      .flat_map("twice",
                [](int x) {
                  return std::vector<int>{x, x};
                })
      .map("text", [](int x) { return std::to_string(x); })
      .collect("out", out);
  g.run().wait();
  CHECK(out == std::vector<std::string>{"2", "2", "4", "4", "6", "6"});
}

TEST_CASE("a generator source ends with an empty optional, instances each run their own") {
  sluice::Graph g;
  std::atomic<std::int64_t> total{0};
  g.source("gen", sluice::from_generator([i = 0]() mutable -> std::optional<int> {
             if (i == 1000) return std::nullopt;
             return i++;
           }),
           {.instances = 2})
      .for_each("sum", [&](int x) { total += x; }, {.instances = 2});
  g.run().wait();
  CHECK(total == 2 * sum_below(1000));
}

TEST_CASE("generators of every kind keep their state across demands, map and filter in bulk") {
  // A small generator is worked on in a local copy per demand (moved back after), a large one
  // in place: both must resume where they stopped, over many demands of max_demand 7.
  struct Big {
    std::array<std::int64_t, 16> pad{};  // 128 bytes: past the local-copy limit
    std::int64_t i = 0;
  };
  std::vector<std::int64_t> small_out, big_out;
  sluice::Graph g;
  g.source("small", sluice::from_generator([i = std::int64_t{0}]() mutable {
             return i == 5000 ? std::nullopt : std::optional<std::int64_t>(i++);
           }))
      .map("triple", [](std::int64_t x) { return 3 * x; }, {.max_demand = 7})
      .filter("even", [](std::int64_t x) { return x % 2 == 0; }, {.max_demand = 7})
      .collect("small_out", small_out, {.max_demand = 7});
  g.source("big", sluice::from_generator([b = Big{}]() mutable {
             return b.i == 5000 ? std::nullopt : std::optional<std::int64_t>(b.i++);
           }))
      .collect("big_out", big_out, {.max_demand = 7});
  g.run().wait();
  REQUIRE(small_out.size() == 2500);
  for (std::size_t k = 0; k < small_out.size(); ++k)
    REQUIRE(small_out[k] == 6 * static_cast<std::int64_t>(k));
  REQUIRE(big_out.size() == 5000);
  for (std::size_t k = 0; k < big_out.size(); ++k)
    REQUIRE(big_out[k] == static_cast<std::int64_t>(k));
}

TEST_CASE("a throwing generator fails the run, naming the source") {
  sluice::Graph g;
  g.source("gen", sluice::from_generator([i = 0]() mutable -> std::optional<int> {
             if (i == 3000) throw std::runtime_error("generator gave up");
             return i++;
           }))
      .for_each("sink", [](int) {});
  auto run = g.run();
  CHECK_THROWS_WITH_AS(run.wait(), "stage 'gen': generator gave up", sluice::stage_error);
}

TEST_CASE("class-based stages with GenStage's callbacks") {
  struct Countdown {
    int left = 100;
    void handle_demand(std::size_t n, sluice::Context<int>& ctx) {
      for (std::size_t i = 0; i < n && left > 0; ++i)
        ctx.emit(left--);
      if (left == 0) ctx.finish();
    }
  };
  struct Pairs {
    int last = 0;
    void handle_events(std::span<int> in, sluice::Context<std::string>& ctx) {
      for (int v : in) {
        if (last != 0) ctx.emit(std::to_string(last) + ">" + std::to_string(v));
        last = v;
      }
    }
  };
  struct Count {
    std::shared_ptr<int> n;
    std::shared_ptr<int> cancels;
    void handle_events(std::span<std::string> in, sluice::Context<void>&) {
      *n += static_cast<int>(in.size());
    }
    void handle_cancel(const sluice::CancelInfo&, sluice::Context<void>&) { ++*cancels; }
  };
  auto n = std::make_shared<int>(0), cancels = std::make_shared<int>(0);
  sluice::Graph g;
  g.source<int>("countdown", Countdown{})
      .then<std::string>("pairs", Pairs{})
      .to("count", Count{n, cancels});
  g.run().wait();
  CHECK(*n == 99);
  CHECK(*cancels == 1);  // the producer's end
}

TEST_CASE("broadcast with a selector, and consumers with different max_demand") {
  sluice::Graph g;
  std::int64_t all = 0, evens = 0;
  auto src = g.source("numbers", sluice::from_range(std::views::iota(0, 50'000)));
  src.broadcast();
  src.for_each("all", [&](const int& x) { all += x; }, {.max_demand = 100});
  src.for_each("evens", [&](const int& x) { evens += x; },
               {.max_demand = 7,
                .selector = sluice::selector<int>([](const int& x) { return x % 2 == 0; })});
  g.run().wait();
  CHECK(all == sum_below(50'000));
  CHECK(evens == 2 * sum_below(25'000));
}

TEST_CASE("partition by a hash: each event once, each key in order") {
  sluice::Graph g;
  std::vector<std::vector<int>> seen(4);
  g.source("numbers", sluice::from_range(std::views::iota(0, 40'000)))
      .partition(4, [](int& x) { return x % 4; })
      .to("per_key",
          [&] {
            struct Sink {
              std::vector<std::vector<int>>* seen;
              void handle_events(std::span<int> in, sluice::Context<void>& c) {
                for (int v : in)
                  (*seen)[c.instance()].push_back(v);
              }
            };
            return Sink{&seen};
          }(),
          {.instances = 4});
  g.run().wait();
  for (int p = 0; p < 4; ++p) {
    REQUIRE(seen[static_cast<std::size_t>(p)].size() == 10'000);
    CHECK(std::is_sorted(seen[static_cast<std::size_t>(p)].begin(),
                         seen[static_cast<std::size_t>(p)].end()));
    CHECK(std::all_of(seen[static_cast<std::size_t>(p)].begin(),
                      seen[static_cast<std::size_t>(p)].end(), [&](int v) { return v % 4 == p; }));
  }
}

TEST_CASE("fan-in: one stage consumes two sources") {
  sluice::Graph g;
  std::int64_t total = 0;
  auto a = g.source("a", sluice::from_range(std::views::iota(0, 1000)));
  auto b = g.source("b", sluice::from_range(std::views::iota(1000, 2000)));
  a.for_each("sum", [&](int x) { total += x; }).subscribe(b);
  g.run().wait();
  CHECK(total == sum_below(2000));
}

TEST_CASE("move-only events through map") {
  sluice::Graph g;
  std::int64_t total = 0;
  g.source("boxes",
           sluice::from_generator([i = 0]() mutable -> std::optional<std::unique_ptr<int>> {
             if (i == 1000) return std::nullopt;
             return std::make_unique<int>(i++);
           }))
      .map("unbox", [](std::unique_ptr<int> p) { return std::int64_t{*p}; })
      .for_each("sum", [&](std::int64_t x) { total += x; });
  g.run().wait();
  CHECK(total == sum_below(1000));
}

TEST_CASE("a stage failure is rethrown by wait(), naming the stage") {
  sluice::Graph g;
  g.source("numbers", sluice::from_range(std::views::iota(0, 1000)))
      .map("boom",
           [](int x) {
             if (x == 500) throw std::runtime_error("no 500 here");
             return x;
           })
      .for_each("sink", [](int) {});
  auto run = g.run();
  CHECK_THROWS_WITH_AS(run.wait(), "stage 'boom': no 500 here", sluice::stage_error);
}

TEST_CASE("compile() reports every problem at once, naming stage and option") {
  sluice::Graph g;
  std::vector<int> out;
  auto src = g.source("numbers", sluice::from_range(std::views::iota(0, 10)), {.instances = 2});
  src.map("bad", [](int x) { return x; }, {.max_demand = 0}).collect("out", out);
  src.collect("two", out, {.instances = 2});
  g.source("lonely", sluice::from_range(std::views::iota(0, 10)));
  auto parts = g.source("parts", sluice::from_range(std::views::iota(0, 10)));
  parts.partition(3, [](int& x) { return x % 3; }).for_each("p", [](int) {}, {.instances = 2});
  CHECK_THROWS_WITH_AS(
      g.compile(),
      "stage 'numbers': option instances must be 1 for from_range (each instance would "
      "emit the whole range), got: 2\n"
      "stage 'two': option instances must be 1 for collect (one container), got: 2\n"
      "stage 'bad' subscribing to 'numbers': option max_demand must be equal to or greater "
      "than 1, got: 0\n"
      "stage 'lonely': a producer with no subscriber (make it dynamic to attach consumers "
      "while it runs)\n"
      "stage 'parts': partition 2 has no subscriber (its events would only be dropped)",
      sluice::option_error);
}

TEST_CASE("cycles are found") {
  sluice::Graph g;
  auto src = g.source("numbers", sluice::from_range(std::views::iota(0, 10)));
  auto a = src.map("a", [](int x) { return x; });
  auto b = a.map("b", [](int x) { return x; });
  a.subscribe(b);
  b.for_each("sink", [](int) {});
  CHECK_THROWS_WITH_AS(g.compile(), "the subscriptions form a cycle through stage 'a'",
                       sluice::option_error);
}

TEST_CASE("a broadcast consumer that would modify shared events is refused by compile()") {
  using Mutating = sluice_test::NullSink<int>;
  sluice::Graph g;
  auto src = g.source("numbers", sluice::from_range(std::views::iota(0, 10)));
  src.broadcast().to("mutating", Mutating{});
  CHECK_THROWS_WITH_AS(g.compile(),
                       "stage 'mutating' subscribing to 'numbers': the broadcast dispatcher "
                       "shares each event between its consumers, so handle_events must take "
                       "std::span<const T>",
                       sluice::option_error);
}

TEST_CASE("DOT export: kinds, instances, dispatchers and edge options") {
  sluice::Graph g;
  auto src = g.source("lines", sluice::from_range(std::vector<std::string>{"a b"}));
  src.partition(2).for_each("count", [](std::string) {}, {.instances = 2, .max_demand = 50});
  CHECK(g.to_dot() ==
        "digraph sluice {\n"
        "  rankdir=LR;\n"
        "  node [shape=box];\n"
        "  \"lines\" [label=\"lines\\nfrom_range\\ndispatcher: partition\", kind=producer];\n"
        "  \"count\" [label=\"count\\nfor_each x2\", kind=consumer];\n"
        "  \"lines\" -> \"count\" [label=\"max_demand=50 min_demand=25\"];\n"
        "}\n");
  CHECK(g.compile().to_dot() == g.to_dot());
}
}  // TEST_SUITE("graph.builder")
