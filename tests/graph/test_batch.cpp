// Stage::batch (Broadway's batchers; sluice::Batcher): exact outputs on the virtual clock of
// manual runs, a property test against a single-threaded reference, lost events on a cancel,
// and bad options.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

using namespace std::chrono_literals;

namespace {

using Batches = std::vector<std::vector<int>>;

/// A push source feeding a batch stage feeding a collect, on a manual run; `push` pushes and
/// runs until idle.
struct Line {
  sluice::Graph g;
  std::optional<sluice::PushHandle<int>> in;
  Batches out;
  std::optional<sluice::Run> run;
  explicit Line(sluice::BatchOptions o, sluice::StageOptions so = {}) {
    auto [handle, src] = g.push_source<int>("src", 10'000);
    in.emplace(std::move(handle));
    src.batch("batch", o, std::move(so)).collect("out", out);
    run.emplace(g.run({.manual = true}));
  }
  void push(std::initializer_list<int> events) {
    for (int e : events)
      REQUIRE(in->try_push(int(e)));
    run->run_until_idle();
  }
};

struct Keyed {
  std::string key;
  int value = 0;
};

std::string describe(const sluice::Batch<std::string, Keyed>& b) {
  std::string s = b.key + ":";
  for (auto& e : b.events)
    s += std::to_string(e.value) + ",";
  switch (b.trigger) {
    case sluice::BatchTrigger::size:
      return s + "size";
    case sluice::BatchTrigger::timeout:
      return s + "timeout";
    case sluice::BatchTrigger::flush:
      return s + "flush";
    case sluice::BatchTrigger::max_keys:
      return s + "max_keys";
  }
  return s;
}

}  // namespace

TEST_SUITE("graph.batch") {

TEST_CASE("batch: full batches by size, the partial last one when the input ends") {
  std::vector<std::vector<int>> out;
  sluice::Graph g;
  g.source("src", sluice::from_range(std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}))
      .batch("batch", {.size = 4})
      .collect("out", out);
  auto run = g.run({.manual = true});  // the virtual clock: no timeout can fire
  run.run_until_idle();
  REQUIRE(run.done());
  CHECK(out == Batches{{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10}});
  auto m = run.metrics();
  for (auto& s : m.stages)
    CHECK(s.lost == 0);
}

TEST_CASE("batch: the timeout runs from the batch's first event and is not extended") {
  Line l({.size = 10, .timeout = 300ms});
  l.push({1});
  l.run->advance(200ms);
  l.push({2});
  l.run->advance(99ms);
  CHECK(l.out.empty());
  l.run->advance(1ms);  // 300 ms after 1, though 2 came at 200 ms
  CHECK(l.out == Batches{{1, 2}});
  l.push({3});  // a new batch, a new timer
  l.run->advance(299ms);
  CHECK(l.out == Batches{{1, 2}});
  l.run->advance(1ms);
  CHECK(l.out == Batches{{1, 2}, {3}});
}

TEST_CASE("batch: a batch emitted by size does not time out, and the next batch has its own deadline") {
  Line l({.size = 3, .timeout = 100ms});
  l.push({1, 2, 3, 4});
  CHECK(l.out == Batches{{1, 2, 3}});
  l.run->advance(50ms);
  l.push({5});
  l.run->advance(50ms);  // the first batch's timeout would have fired now: it is gone, and 4's
  CHECK(l.out == Batches{{1, 2, 3}, {4, 5}});  // batch (opened at 0 ms) times out
  l.run->advance(1s);
  CHECK(l.out == Batches{{1, 2, 3}, {4, 5}});  // never an empty batch
}

TEST_CASE("batch: a timeout that fires while the batch is filling takes what is in") {
  Line l({.size = 5, .timeout = 10ms});
  l.push({1, 2});
  l.run->advance(10ms);
  l.push({3, 4, 5, 6, 7});
  CHECK(l.out == Batches{{1, 2}, {3, 4, 5, 6, 7}});
  l.in->close();
  l.run->run_until_idle();
  CHECK(l.run->done());
  CHECK(l.out == Batches{{1, 2}, {3, 4, 5, 6, 7}});
}

TEST_CASE("batch: a drain flushes the open batch before the run ends") {
  Line l({.size = 100, .timeout = 1s});
  l.push({1, 2, 3});
  CHECK(l.out.empty());
  l.run->drain();
  CHECK(l.run->done());
  CHECK(l.out == Batches{{1, 2, 3}});
}

TEST_CASE("batch with a key: one open batch per key, each with its own timer and order") {
  std::vector<sluice::Batch<std::string, Keyed>> out;
  sluice::Graph g;
  auto [in, src] = g.push_source<Keyed>("src", 100);
  src.batch("batch", [](const Keyed& k) { return k.key; }, {.size = 2, .timeout = 50ms})
      .collect("out", out);
  auto run = g.run({.manual = true});
  auto push = [&](std::string key, int v) {
    REQUIRE(in.try_push(Keyed{std::move(key), v}));
    run.run_until_idle();
  };
  push("a", 1);
  run.advance(20ms);
  push("b", 2);
  push("a", 3);  // a is full
  run.advance(30ms);
  push("b", 4);  // b is full before its timeout at 70 ms
  push("a", 5);
  run.advance(50ms);  // a's second batch times out at 100 ms
  std::vector<std::string> got;
  for (auto& b : out)
    got.push_back(describe(b));
  CHECK(got == std::vector<std::string>{"a:1,3,size", "b:2,4,size", "a:5,timeout"});
}

TEST_CASE("batch with a key: max_keys flushes the oldest open batch, and the end flushes the rest") {
  std::vector<sluice::Batch<std::string, Keyed>> out;
  sluice::Graph g;
  auto [in, src] = g.push_source<Keyed>("src", 100);
  src.batch("batch", [](const Keyed& k) { return k.key; },
            {.size = 10, .timeout = 1s, .max_keys = 2})
      .collect("out", out);
  auto run = g.run({.manual = true});
  for (auto [k, v] : std::vector<std::pair<std::string, int>>{
           {"a", 1}, {"b", 2}, {"a", 3}, {"c", 4}, {"b", 5}, {"d", 6}})
    REQUIRE(in.try_push(Keyed{k, v}));
  in.close();
  run.run_until_idle();
  REQUIRE(run.done());
  std::vector<std::string> got;
  for (auto& b : out)
    got.push_back(describe(b));
  CHECK(got ==
        std::vector<std::string>{"a:1,3,max_keys", "b:2,5,max_keys", "c:4,flush", "d:6,flush"});
}

TEST_CASE("batch: random inputs give the batches of a single-threaded reference") {
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    CAPTURE(seed);
    std::mt19937_64 rng(seed);
    const auto n = std::uniform_int_distribution<int>(0, 3000)(rng);
    const auto size = std::uniform_int_distribution<std::size_t>(1, 64)(rng);
    const auto keys = std::uniform_int_distribution<int>(1, 12)(rng);
    const auto max_keys = std::uniform_int_distribution<std::size_t>(1, 16)(rng);
    const auto max_demand = std::uniform_int_distribution<std::int64_t>(1, 200)(rng);
    std::vector<std::pair<int, int>> events;  // (key, value)
    for (int i = 0; i < n; ++i)
      events.emplace_back(std::uniform_int_distribution<int>(0, keys - 1)(rng), i);

    // The reference: one open batch per key, the oldest flushed when max_keys are open, full
    // ones emitted at once, the rest at the end in the order they opened.
    std::vector<std::pair<int, std::vector<int>>> want;
    std::vector<std::pair<int, std::vector<int>>> open;  // in the order they opened
    for (auto [k, v] : events) {
      auto it = std::find_if(open.begin(), open.end(), [&](auto& b) { return b.first == k; });
      if (it == open.end()) {
        if (open.size() == max_keys) {
          want.push_back(std::move(open.front()));
          open.erase(open.begin());
        }
        open.push_back({k, {}});
        it = open.end() - 1;
      }
      it->second.push_back(v);
      if (it->second.size() == size) {
        want.push_back(std::move(*it));
        open.erase(it);
      }
    }
    for (auto& b : open)
      want.push_back(std::move(b));

    std::vector<sluice::Batch<int, std::pair<int, int>>> out;
    sluice::Graph g;
    g.source("src", sluice::from_range(events))
        .batch("batch", [](const std::pair<int, int>& e) { return e.first; },
               {.size = size, .timeout = 1s, .max_keys = max_keys}, {.max_demand = max_demand})
        .collect("out", out, {.max_demand = 3});
    auto run = g.run({.manual = true});
    run.run_until_idle();
    REQUIRE(run.done());
    std::vector<std::pair<int, std::vector<int>>> got;
    for (auto& b : out) {
      std::vector<int> values;
      for (auto& e : b.events) {
        CHECK(e.first == b.key);
        values.push_back(e.second);
      }
      got.emplace_back(b.key, std::move(values));
    }
    CHECK(got == want);
  }
}

TEST_CASE("batch: a cancel counts the events of open batches as lost") {
  Line l({.size = 10, .timeout = 1s});
  l.push({1, 2, 3});
  l.run->cancel();
  l.run->run_until_idle();
  REQUIRE(l.run->done());
  CHECK(l.out.empty());
  const auto m = l.run->metrics();
  std::uint64_t lost = 0;
  for (auto& s : m.stages)
    if (s.name == "batch") lost = s.lost;
  CHECK(lost == 3);
  CHECK(m.undelivered() == 3);
}

static_assert(sluice::handler::Restartable<sluice::Batcher<int>>);

TEST_CASE(
    "batch with a restart policy: a failing key function loses the call and the open "
    "batches, each event counted once") {
  std::vector<sluice::Batch<int, int>> out;
  auto thrown = std::make_shared<int>(0);
  sluice::Graph g;
  auto [in, src] = g.push_source<int>("src", 100);
  src.batch("batch",
            [thrown](const int& x) {
              if (x == 15 && (*thrown)++ == 0) throw std::runtime_error("no key for 15");
              return 0;
            },
            {.size = 10, .timeout = 1s}, {.restart = sluice::Restart::on_failure})
      .collect("out", out);
  auto run = g.run({.manual = true});
  auto push = [&](int from, int to) {
    for (int x = from; x <= to; ++x)
      REQUIRE(in.try_push(int(x)));
    run.run_until_idle();
  };
  push(1, 12);   // [1..10] out, 11 and 12 held
  push(13, 20);  // the key function throws at 15: the call's 13..20 and the held 11, 12 lost
  push(21, 22);
  in.close();
  run.run_until_idle();
  REQUIRE(run.done());
  REQUIRE(out.size() == 2);
  CHECK(out[0].events == std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  CHECK(out[1].events == std::vector<int>{21, 22});
  CHECK(out[1].trigger == sluice::BatchTrigger::flush);
  const auto m = run.metrics();
  for (auto& s : m.stages)
    if (s.name == "batch") {
      CHECK(s.restarts == 1);
      CHECK(s.lost == 10);
    }
  CHECK(m.undelivered() == 10);
  run.wait();
}

TEST_CASE("batch: README's example") {
  struct Row {
    std::string table;
    int id = 0;
  };
  struct Db {
    std::map<std::string, std::vector<int>> rows;
    std::size_t inserts = 0;
    void insert(const std::string& table, const std::vector<Row>& batch) {
      ++inserts;
      for (auto& r : batch)
        rows[table].push_back(r.id);
    }
  } db;
  std::vector<Row> rows;
  for (int i = 0; i < 1200; ++i)
    rows.push_back({i % 3 == 0 ? "a" : "b", i});
  sluice::Graph g;
  // (README's lines, verbatim)
  g.source("rows", sluice::from_range(rows))
      .batch("by_table", [](const Row& r) { return r.table; }, {.size = 500, .timeout = 200ms})
      .for_each("insert",
                [&](const sluice::Batch<std::string, Row>& b) { db.insert(b.key, b.events); });
  g.run().wait();
  CHECK(db.rows["a"].size() == 400);
  CHECK(db.rows["b"].size() == 800);
  CHECK(std::is_sorted(db.rows["b"].begin(), db.rows["b"].end()));
}

TEST_CASE("batch: bad options are option_errors naming the stage and the option") {
  auto compile_with = [](sluice::BatchOptions o) {
    sluice::Graph g;
    std::vector<std::vector<int>> out;
    g.source("src", sluice::from_range(std::vector<int>{1})).batch("b", o).collect("out", out);
    g.compile();
  };
  CHECK_THROWS_WITH_AS(compile_with({.size = 0}),
                       doctest::Contains("stage 'b': option size must be at least 1, got: 0"),
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(compile_with({.timeout = 0ms}),
                       doctest::Contains("stage 'b': option timeout must be positive, got: 0 ns"),
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(compile_with({.timeout = -5ms}),
                       doctest::Contains("stage 'b': option timeout must be positive"),
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(compile_with({.max_keys = 0}),
                       doctest::Contains("stage 'b': option max_keys must be at least 1, got: 0"),
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(sluice::Batcher<int>({.size = 0}),
                       doctest::Contains("BatchOptions::size must be at least 1"),
                       sluice::option_error);
}

}  // TEST_SUITE("graph.batch")
