// Real runs on oneTBB threads: every event arrives exactly once, in order per edge, whatever
// the schedule. Assertions are made after wait(), on the test thread.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

#include <support/stages.hpp>

namespace {

using Source = sluice_test::CountingSource<>;

struct Identity {  // a producer_consumer that also checks its input is increasing
  std::shared_ptr<std::vector<std::int64_t>> order_errors;  // one slot per instance
  std::int64_t last = -1;
  void handle_events(std::span<std::int64_t> evs, sluice::Context<std::int64_t>& c) {
    for (auto v : evs) {
      if (v <= last) ++(*order_errors)[c.instance()];
      last = v;
      c.emit(v);
    }
  }
};

struct Tally {  // per consumer instance; per subscription order check
  struct Result {
    std::uint64_t count = 0, sum = 0, sum_sq = 0, order_errors = 0;
    std::vector<std::int64_t> last;
  };
  std::shared_ptr<std::vector<Result>> results;
  void handle_events(std::span<std::int64_t> evs, sluice::SubscriptionId from,
                     sluice::Context<void>& c) {
    auto& r = (*results)[c.instance()];
    if (r.last.size() <= from) r.last.resize(from + 1, -1);
    for (auto v : evs) {
      const auto u = static_cast<std::uint64_t>(v);
      ++r.count;
      r.sum += u;
      r.sum_sq += u * u;  // mod 2^64: a checksum
      if (v <= r.last[from]) ++r.order_errors;
      r.last[from] = v;
    }
  }
};

void exactly_once(std::int64_t events, std::int64_t max_demand, int concurrency) {
  auto order = std::make_shared<std::vector<std::int64_t>>(4, 0);
  auto results = std::make_shared<std::vector<Tally::Result>>(2);
  sluice::Engine e;
  auto src = e.producer<std::int64_t>("source", Source{0, events},
                                      sluice::demand_dispatcher<std::int64_t>());
  auto mid = e.producer_consumer<std::int64_t, std::int64_t>(
      "identity", Identity{order}, sluice::demand_dispatcher<std::int64_t>(), {}, 4);
  auto sink = e.consumer<std::int64_t>("tally", Tally{results}, 2);
  e.subscribe(mid, src, {.max_demand = max_demand});
  e.subscribe(sink, mid, {.max_demand = max_demand});
  sluice::RunOptions o;
  o.concurrency = concurrency;
  auto run = e.start(o);
  run.wait();

  std::uint64_t count = 0, sum = 0, sum_sq = 0, order_errors = 0;
  for (auto& r : *results) {
    count += r.count;
    sum += r.sum;
    sum_sq += r.sum_sq;
    order_errors += r.order_errors;
  }
  for (auto o_err : *order)
    order_errors += static_cast<std::uint64_t>(o_err);
  std::uint64_t want_sum = 0, want_sq = 0;
  for (std::int64_t v = 0; v < events; ++v) {
    want_sum += static_cast<std::uint64_t>(v);
    want_sq += static_cast<std::uint64_t>(v) * static_cast<std::uint64_t>(v);
  }
  CHECK(count == static_cast<std::uint64_t>(events));
  CHECK(sum == want_sum);
  CHECK(sum_sq == want_sq);
  CHECK(order_errors == 0);
  auto m = run.metrics();
  CHECK(m.undelivered() == 0);
  for (auto& s : m.stages) {
    CHECK(s.finished);
    CHECK(s.stop_reason == "normal");
  }
}

}  // namespace

TEST_SUITE("engine.concurrency") {

TEST_CASE("10 million events through producer -> 4 x producer_consumer -> 2 x consumer, once") {
  exactly_once(10'000'000, 1000, 0);
}

TEST_CASE("small demand windows and more threads than cores") {
  exactly_once(200'000, 1, 4);
  exactly_once(1'000'000, 7, 3);
}

TEST_CASE("move-only events (unique_ptr) through a pipeline") {
  struct Boxes {
    int next = 0;
    void handle_demand(std::size_t n, sluice::Context<std::unique_ptr<int>>& c) {
      for (std::size_t i = 0; i < n && next < 100'000; ++i)
        c.emit(std::make_unique<int>(next++));
      if (next == 100'000) c.finish();
    }
  };
  struct Unbox {
    void handle_events(std::span<std::unique_ptr<int>> evs, sluice::Context<std::string>& c) {
      for (auto& p : evs)
        c.emit(std::to_string(*p));
    }
  };
  struct Join {
    std::shared_ptr<std::uint64_t> total;
    void handle_events(std::span<std::string> evs, sluice::Context<void>&) {
      for (auto& s : evs)
        *total += std::stoull(s);
    }
  };
  auto total = std::make_shared<std::uint64_t>(0);
  sluice::Engine e;
  auto p = e.producer<std::unique_ptr<int>>("boxes", Boxes{},
                                            sluice::demand_dispatcher<std::unique_ptr<int>>());
  auto u = e.producer_consumer<std::unique_ptr<int>, std::string>(
      "unbox", Unbox{}, sluice::demand_dispatcher<std::string>());
  auto j = e.consumer<std::string>("join", Join{total});
  e.subscribe(u, p, {.max_demand = 64});
  e.subscribe(j, u, {.max_demand = 50});
  e.start().wait();
  CHECK(*total == 100'000ull * 99'999ull / 2);
}

}  // TEST_SUITE("engine.concurrency")
