// Events are moved, never copied, on their way through the library: a counted event type through
// every operator and dispatcher that does not share, and move-only events through the same.
#include <atomic>
#include <cstdint>
#include <memory>
#include <ranges>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

namespace {

std::atomic<int> copies{0};

/// An event that counts its copies (moves are free).
struct Counted {
  std::int64_t value = 0;
  Counted() = default;
  explicit Counted(std::int64_t v) : value(v) {}
  Counted(const Counted& o) : value(o.value) { copies.fetch_add(1, std::memory_order_relaxed); }
  Counted& operator=(const Counted& o) {
    value = o.value;
    copies.fetch_add(1, std::memory_order_relaxed);
    return *this;
  }
  Counted(Counted&&) noexcept = default;
  Counted& operator=(Counted&&) noexcept = default;
};

/// A producer_consumer class that splits each event into two with emit_all on an rvalue vector.
struct SplitInTwo {
  void handle_events(std::span<Counted> in, sluice::Context<Counted>& ctx) {
    for (auto& e : in) {
      std::vector<Counted> two;
      two.emplace_back(e.value);
      two.emplace_back(e.value);
      ctx.emit_all(std::move(two));
    }
  }
};

}  // namespace

TEST_SUITE("graph.event_copies") {
TEST_CASE("emit_all moves the elements of an rvalue range and copies those of an lvalue one") {
  copies = 0;
  sluice::Graph g;
  std::int64_t total = 0;
  std::vector<Counted> kept;  // emitted from as an lvalue: its elements must stay
  kept.emplace_back(7);
  struct FromLvalue {
    std::vector<Counted>* kept;
    void handle_events(std::span<Counted> in, sluice::Context<Counted>& ctx) {
      for (auto& e : in)
        ctx.emit(std::move(e));
      ctx.emit_all(*kept);  // copied: the caller keeps its vector
    }
  };
  g.source("numbers", sluice::from_generator([i = std::int64_t{0}]() mutable {
             return i < 5 ? std::optional<Counted>(Counted(i++)) : std::nullopt;
           }))
      .then<Counted>("split", SplitInTwo{})
      .then<Counted>("append", FromLvalue{&kept}, {.max_demand = 100})
      .for_each("sum", [&](Counted&& c) { total += c.value; });
  g.run().wait();
  // 5 events, split into 10; "append" runs once per message it handles and copies one event
  // each time: the copies are exactly the lvalue emit_all's.
  CHECK(kept.size() == 1);
  CHECK(kept[0].value == 7);
  const int lvalue_copies = copies.load();
  CHECK(lvalue_copies >= 1);
  CHECK(total == 2 * (0 + 1 + 2 + 3 + 4) + 7 * lvalue_copies);
}

TEST_CASE("no copies through push source, map, flat_map, filter, partition and stream") {
  copies = 0;
  sluice::Graph g;
  auto [in, src] = g.push_source<Counted>("in", 64);
  auto out =
      src.map("inc", [](Counted c) { return Counted(c.value + 1); })
          .flat_map("twice",
                    [](Counted c) {
                      std::vector<Counted> v;
                      v.emplace_back(c.value);
                      v.emplace_back(c.value);
                      return v;
                    })
          .filter("even", [](const Counted& c) { return c.value % 2 == 0; })
          .partition(3, [](const Counted& c) { return static_cast<std::size_t>(c.value % 3); })
          .map("same", [](Counted c) { return c; }, {.instances = 3})
          .then<Counted>("split", SplitInTwo{}, {.instances = 2})
          .stream("out", 50);
  auto run = g.run();
  constexpr std::int64_t n = 10'000;
  std::thread pusher([&, h = in]() mutable {
    for (std::int64_t i = 0; i < n; ++i)
      h.push(Counted(i));
    h.close();
  });
  std::int64_t count = 0, sum = 0;
  for (auto& c : out) {
    ++count;
    sum += c.value;
  }
  pusher.join();
  run.wait();
  // i + 1 is even for odd i: n / 2 values, each twice (flat_map), each twice again (split).
  std::int64_t expected = 0;
  for (std::int64_t i = 1; i < n; i += 2)
    expected += 4 * (i + 1);
  CHECK(count == 4 * (n / 2));
  CHECK(sum == expected);
  CHECK(copies.load() == 0);
}

TEST_CASE("move-only events through every operator and dispatcher that does not copy") {
  using P = std::unique_ptr<std::int64_t>;
  sluice::Graph g;
  auto [in, src] = g.push_source<P>("in", 32);
  auto mapped = src.map("box", [](P p) { return std::make_unique<std::int64_t>(*p * 10); })
                    .flat_map("twice",
                              [](P p) {
                                std::vector<P> v;
                                v.push_back(std::make_unique<std::int64_t>(*p));
                                v.push_back(std::move(p));
                                return v;
                              })
                    .filter("nonzero", [](const P& p) { return *p != 0; })
                    .partition(2, [](const P& p) { return static_cast<std::size_t>(*p / 10 % 2); })
                    .map("pass", [](P p) { return p; }, {.instances = 2})
                    .broadcast();  // shares: no copy needed either
  std::atomic<std::int64_t> seen_sum{0};
  mapped.for_each("watch", [&](const P& p) { seen_sum += *p; });
  auto out = mapped.map("unshare", [](const P& p) { return std::make_unique<std::int64_t>(*p); })
                 .stream("out", 16);
  auto run = g.run();
  std::thread pusher([&, h = in]() mutable {
    for (std::int64_t i = 0; i < 1000; ++i)
      h.push(std::make_unique<std::int64_t>(i));
    h.close();
  });
  std::int64_t count = 0, sum = 0;
  for (auto& p : out) {
    ++count;
    sum += *p;
  }
  pusher.join();
  run.wait();
  CHECK(count == 2 * 999);
  CHECK(sum == 2 * 10 * (999 * 1000 / 2));
  CHECK(seen_sum.load() == sum);
}

TEST_CASE("emit takes the stage's own type: braced initializers and conversions") {
  struct Pair {
    int a = 0, b = 0;
  };
  struct MakePairs {
    void handle_events(std::span<int> in, sluice::Context<Pair>& ctx) {
      for (int x : in)
        ctx.emit({x, x + 1});  // builds a Pair: the parameter is the stage's type
    }
  };
  struct ToDouble {
    void handle_events(std::span<Pair> in, sluice::Context<double>& ctx) {
      for (auto& p : in)
        ctx.emit(p.a + p.b);  // an int argument converts to the stage's double
    }
  };
  sluice::Graph g;
  double total = 0;
  g.source("numbers", sluice::from_range(std::views::iota(0, 4)))
      .then<Pair>("pairs", MakePairs{})
      .then<double>("sums", ToDouble{})
      .for_each("total", [&](double d) { total += d; });
  g.run().wait();
  CHECK(total == 1 + 3 + 5 + 7);
}
}  // TEST_SUITE("graph.event_copies")
