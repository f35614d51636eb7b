// Attaching and detaching consumers while a graph runs (GenStage's dynamic subscribe and cancel).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

#include <support/stages.hpp>

namespace {

using I64 = std::int64_t;

auto endless() {
  return sluice::from_generator([i = I64{0}]() mutable -> std::optional<I64> { return i++; });
}

/// Records what one attached consumer saw; read it after detach() or the run's end.
struct Seen {
  std::vector<I64> values;
  /// True if the values are consecutive integers (a contiguous run of the source's sequence).
  bool consecutive() const {
    for (std::size_t i = 1; i < values.size(); ++i)
      if (values[i] != values[i - 1] + 1) return false;
    return true;
  }
};

void wait_until(const std::atomic<I64>& counter, I64 at_least) {
  while (counter.load() < at_least)
    std::this_thread::yield();
}

const sluice::StageMetrics& stage(const sluice::Metrics& m, const std::string& name) {
  for (auto& s : m.stages)
    if (s.name == name) return s;
  throw std::out_of_range("no stage " + name);
}

/// A consumer class that takes a mutable span (refused by a broadcast).
using MutableSink = sluice_test::NullSink<I64>;

}  // namespace

TEST_SUITE("graph.dynamic") {
TEST_CASE("a broadcast's late subscriber gets what is dispatched after it joined, in order") {
  sluice::Graph g;
  std::atomic<I64> first{0}, late_count{0};
  I64 first_errors = 0, first_last = -1;
  auto src = g.source("numbers", endless()).broadcast();
  src.for_each("first", [&](const I64& x) {
    if (x != first_last + 1) ++first_errors;
    first_last = x;
    ++first;
  });
  auto run = g.run();
  wait_until(first, 20'000);
  Seen late;
  auto ref = run.attach(src, "late", [&](const I64& x) {
    late.values.push_back(x);
    ++late_count;
  });
  wait_until(late_count, 50'000);
  run.detach(ref);
  const auto seen_at_detach = late.values.size();
  CHECK(late.consecutive());
  CHECK(late.values.front() >= 20'000);      // it joined late
  wait_until(first, first.load() + 20'000);  // the graph goes on without it
  CHECK(late.values.size() == seen_at_detach);
  run.drain();
  auto m = run.metrics();
  CHECK(first_errors == 0);
  // Sent: every event to "first", and to "late" while it was there; what "late" had not
  // handled when it left is counted as undelivered.
  std::uint64_t to_late = 0;
  for (auto& e : m.edges)
    if (e.consumer == "late") to_late = e.sent;
  CHECK(stage(m, "numbers").events_out == static_cast<std::uint64_t>(first.load()) + to_late);
  CHECK(m.undelivered() == to_late - seen_at_detach);
  CHECK(stage(m, "late").finished);
  CHECK(stage(m, "late").stop_reason == "normal");
  CHECK(stage(m, "late").events_in == seen_at_detach);
}

TEST_CASE("a dynamic push source: no subscriber at the start, consumers come and go") {
  sluice::Graph g;
  auto [in, src] = g.push_source<I64>("in", 100, {.dynamic = true});
  CHECK(g.to_dot().find("dynamic") != std::string::npos);
  auto run = g.run();
  // Nobody subscribes yet: pushes wait in the handle, at most its capacity.
  for (I64 i = 0; i < 100; ++i)
    CHECK(in.try_push(i));
  CHECK_FALSE(in.try_push(100));
  Seen a, b;
  std::atomic<I64> a_count{0};
  auto ra = run.attach(src, "a", [&](I64 x) {
    a.values.push_back(x);
    ++a_count;
  });
  for (I64 i = 100; i < 1000; ++i)
    in.push(i);
  wait_until(a_count, 1000);
  run.detach(ra);
  // The producer stays: it is dynamic. What is pushed now waits for the next consumer.
  for (I64 i = 1000; i < 1100; ++i)
    in.push(i);
  run.attach(src, "b", [&](I64 x) { b.values.push_back(x); }, {.max_demand = 10});
  for (I64 i = 1100; i < 3000; ++i)
    in.push(i);
  in.close();
  run.wait();
  REQUIRE(a.values.size() == 1000);
  CHECK(a.values.front() == 0);
  CHECK(a.consecutive());
  // b gets the rest, in order. (A quantum the source began before the detach could still have
  // sent a few of the later events to a's edge: they would be counted as undelivered.)
  auto m = run.metrics();
  REQUIRE_FALSE(b.values.empty());
  CHECK(b.consecutive());
  CHECK(b.values.back() == 2999);
  CHECK(b.values.front() == 1000 + static_cast<I64>(m.undelivered()));
  CHECK(a.values.size() + b.values.size() + m.undelivered() == 3000);
  CHECK(stage(m, "in").stop_reason == "normal");
}

TEST_CASE(
    "a dynamic partition producer: one consumer attaches per partition, a taken "
    "partition is refused without harm") {
  sluice::Graph g;
  auto src = g.source("numbers", endless(), {.dynamic = true}).partition(2, [](const I64& x) {
    return static_cast<int>(x % 2);
  });
  auto compiled = g.compile();  // no subscriber for either partition: fine for a dynamic producer
  auto run = compiled.run();
  Seen evens, odds;
  std::atomic<I64> n{0};
  run.attach(src, "evens", [&](I64 x) { evens.values.push_back(x), ++n; }, {.partition = 0});
  run.attach(src, "odds", [&](I64 x) { odds.values.push_back(x), ++n; }, {.partition = 1});
  run.attach(src, "again", [](I64) {}, {.partition = 0});
  while (!stage(run.metrics(), "again").finished)  // the refusal ends it
    std::this_thread::yield();
  auto m = run.metrics();
  CHECK(stage(m, "again").finished);
  CHECK(stage(m, "again").stop_reason == "option partition 0 is already taken");
  CHECK(stage(m, "again").events_in == 0);
  wait_until(n, 100'000);
  run.drain();
  m = run.metrics();
  CHECK(m.undelivered() == 0);
  CHECK(evens.values.size() + odds.values.size() == stage(m, "numbers").events_out);
  bool parity = true, ordered = true;
  for (auto* s : {&evens, &odds})
    for (std::size_t i = 0; i < s->values.size(); ++i) {
      parity = parity && s->values[i] % 2 == (s == &evens ? 0 : 1);
      ordered = ordered && (i == 0 || s->values[i] == s->values[i - 1] + 2);
    }
  CHECK(parity);
  CHECK(ordered);
}

TEST_CASE("detaching the last consumer of a producer that is not dynamic stops it") {
  sluice::Graph g;
  std::atomic<I64> n{0};
  auto sink = g.source("numbers", endless()).for_each("only", [&](I64) { ++n; });
  auto run = g.run();
  wait_until(n, 10'000);
  run.detach(sink);
  run.wait();  // the source stopped: nobody consumes from it
  auto m = run.metrics();
  CHECK(stage(m, "numbers").stop_reason == "shutdown");
  CHECK(stage(m, "only").stop_reason == "normal");
  CHECK(stage(m, "only").events_in == static_cast<std::uint64_t>(n.load()));
}

TEST_CASE("cancel modes of attached consumers when their producer fails") {
  sluice::Graph g;
  auto [in, src] = g.push_source<I64>("in", 100);
  auto boom = src.map(
      "boom",
      [](I64 x) {
        if (x < 0) throw std::runtime_error("negative");
        return x;
      },
      {.fuse = false});  // consumers attach to it: a cell of its own
  std::atomic<I64> n{0};
  boom.for_each("main", [&](I64) { ++n; }, {.cancel = sluice::CancelMode::temporary});
  auto run = g.run(sluice_test::quiet({.fail_fast = false}));
  auto permanent = run.attach(boom, "permanent", [&](I64) { ++n; });
  auto transient =
      run.attach(boom, "transient", [&](I64) { ++n; }, {.cancel = sluice::CancelMode::transient});
  auto temporary =
      run.attach(boom, "temporary", [&](I64) { ++n; }, {.cancel = sluice::CancelMode::temporary});
  for (I64 i = 0; i < 10; ++i)
    in.push(i);
  wait_until(n, 10);  // the demand dispatcher gave each event to one of the four
  in.push(-1);
  CHECK_THROWS_WITH_AS(run.wait(), "stage 'boom': negative", sluice::stage_error);
  auto m = run.metrics();
  CHECK(stage(m, "permanent").stop_reason == "negative");
  CHECK(stage(m, "transient").stop_reason == "negative");
  // Temporary: the subscription is removed; with none left the stage finishes.
  CHECK(stage(m, "temporary").stop_reason == "normal");
  CHECK(stage(m, "main").stop_reason == "normal");
  (void)permanent;
  (void)transient;
  (void)temporary;
}

TEST_CASE("attaching to a producer that has already finished ends the new stage at once") {
  sluice::Graph g;
  std::vector<I64> out;
  auto small = g.source("small", sluice::from_range(std::vector<I64>{1, 2, 3}));
  small.collect("out", out);
  auto [in, other] = g.push_source<I64>("other", 10);
  other.for_each("keeps_running", [](I64) {});
  auto run = g.run();
  while (!run.metrics().stages[0].finished)
    std::this_thread::yield();
  std::atomic<I64> n{0};
  auto late = run.attach(small, "late", [&](I64) { ++n; });
  run.detach(late);
  auto m = run.metrics();
  CHECK(stage(m, "late").finished);
  CHECK(stage(m, "late").events_in == 0);
  CHECK(stage(m, "late").stop_reason == "normal");
  in.close();
  run.wait();
  CHECK(out == std::vector<I64>{1, 2, 3});
}

TEST_CASE("attach errors name the stage and the option") {
  sluice::Graph g;
  auto src = g.source("numbers", endless()).broadcast();
  src.for_each("first", [](I64) {});
  auto plain = g.source("plain", endless());
  plain.for_each("second", [](I64) {});
  auto run = g.run();
  CHECK_THROWS_WITH_AS(run.attach(src, "first", [](I64) {}), "stage 'first': name already used",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(run.attach(src, "", [](I64) {}), "a stage needs a non-empty name",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(run.attach(
                           src, "x", [](I64) {}, {}, 0),
                       "stage 'x': option instances must be at least 1, got: 0",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(run.attach(src, "x", [](I64) {}, {.max_demand = 0}),
                       "stage 'x' subscribing to 'numbers': option max_demand must be equal to or "
                       "greater than 1, got: 0",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(run.attach(src, "x", MutableSink{}),
                       "stage 'x' subscribing to 'numbers': the broadcast dispatcher shares each "
                       "event between its consumers, so handle_events must take "
                       "std::span<const T>",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(
      run.attach(plain, "x", [](I64) {},
                 {.selector = sluice::selector<I64>([](const I64&) { return true; })}),
      "stage 'x' subscribing to 'plain': option selector: only a broadcast dispatcher selects "
      "events",
      sluice::option_error);
  CHECK_THROWS_WITH_AS(run.attach(plain, "x", [](I64) {}, {.partition = 1}),
                       "stage 'x' subscribing to 'plain': option partition: the demand "
                       "dispatcher has no partitions",
                       sluice::option_error);
  run.cancel();
  CHECK_THROWS_WITH_AS(run.attach(src, "x", [](I64) {}), "sluice: attach 'x': the run has ended",
                       std::logic_error);
  CHECK(run.metrics().stages.size() == 4);  // nothing was added by the refused attaches
}

TEST_CASE("a stream attached to a running broadcast: read a while, stop, the graph goes on") {
  sluice::Graph g;
  std::atomic<I64> main_count{0};
  auto src = g.source("numbers", endless()).broadcast();
  src.for_each("main", [&](I64) { ++main_count; });
  auto run = g.run();
  wait_until(main_count, 10'000);
  {
    auto stream = sluice::attach_stream(run, src, "reader", 64);
    Seen s;
    for (auto& x : stream) {
      s.values.push_back(x);
      if (s.values.size() == 5000) break;
    }
    CHECK(s.consecutive());
    CHECK(s.values.front() >= 10'000);
  }  // destroyed: its subscription is cancelled
  while (!stage(run.metrics(), "reader").finished)
    std::this_thread::yield();
  const auto at = main_count.load();
  wait_until(main_count, at + 10'000);
  run.drain();
  CHECK(stage(run.metrics(), "reader").events_in >= 5000);
  CHECK_THROWS_WITH_AS(sluice::attach_stream(run, src, "late", 0),
                       "stage 'late': option capacity must be at least 1, got: 0",
                       sluice::option_error);
}

TEST_CASE("a stream attached to a dynamic push source reads everything pushed until close") {
  sluice::Graph g;
  auto [in, src] = g.push_source<I64>("in", 16, {.dynamic = true});
  auto run = g.run();
  auto stream = sluice::attach_stream(run, src, "reader", 8);
  std::thread pusher([&in = in] {
    for (I64 i = 0; i < 10'000; ++i)
      in.push(i);
    in.close();
  });
  Seen s;
  for (auto& x : stream)
    s.values.push_back(x);
  pusher.join();
  run.wait();
  REQUIRE(s.values.size() == 10'000);
  CHECK(s.values.front() == 0);
  CHECK(s.consecutive());
}

TEST_CASE("dynamic option errors at compile time") {
  sluice::Graph g;
  g.source("numbers", endless()).for_each("sink", [](I64) {}, {.dynamic = true});
  CHECK_THROWS_WITH_AS(g.compile(),
                       "stage 'sink': option dynamic: a consumer has no output to attach to",
                       sluice::option_error);
}

TEST_CASE("two application threads attach and detach consumers while a broadcast runs") {
  sluice::Graph g;
  std::atomic<I64> main_count{0};
  auto src = g.source("numbers", endless(), {.dynamic = true}).broadcast();
  src.for_each("main", [&](I64) { ++main_count; }, {.max_demand = 100});
  auto run = g.run();
  std::atomic<int> bad{0};
  auto churn = [&](int thread) {
    for (int k = 0; k < 20; ++k) {
      Seen s;
      std::atomic<I64> count{0};
      std::string name = "t";  // appends, not "literal" + std::string&&: GCC bug 105329
      name += std::to_string(thread);
      name += "-";
      name += std::to_string(k);
      auto ref = run.attach(src, name,
                            [&](const I64& x) {
                              s.values.push_back(x);
                              ++count;
                            },
                            {.max_demand = 1 + 50 * k});
      wait_until(count, 1000);
      run.detach(ref);
      if (!s.consecutive()) ++bad;
    }
  };
  std::thread t1(churn, 1), t2(churn, 2);
  t1.join();
  t2.join();
  run.drain();
  auto m = run.metrics();
  CHECK(bad == 0);
  for (auto& e : m.edges)
    if (e.consumer == "main") {
      CHECK(e.sent == static_cast<std::uint64_t>(main_count.load()));
      CHECK(e.received == e.sent);
    }
  CHECK(m.stages.size() == 42);
  for (auto& s : m.stages)
    CHECK(s.finished);
}
}  // TEST_SUITE("graph.dynamic")

TEST_SUITE("graph.dynamic") {
// Found by the fuzz target: drain waited for ever on a dynamic producer_consumer nobody consumed
// from, which could not hand on its input (no demand) and so never saw its inputs end.
TEST_CASE("drain ends a dynamic producer_consumer with no consumer, reporting what it held") {
  for (bool partitioned : {false, true}) {
    CAPTURE(partitioned);
    sluice::Graph g;
    auto source = g.source<int>("src", sluice_test::CountingSource<int>{0, 5},
                                {.instances = 2, .dynamic = true});
    auto stage = source.map("stage", [](int x) { return x; }, {.dynamic = true});
    if (partitioned) stage.partition(4, [](const int& x) { return x % 4; });
    auto run = g.run();
    // Before the drain the diagnosis says why nothing moves.
    sluice::Diagnosis d;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (d.of(sluice::Finding::Kind::awaits_downstream).size() < 2 &&
           std::chrono::steady_clock::now() < give_up)
      d = run.diagnose();
    CHECK(d.to_string() ==
          "edge 'src#0' -> 'stage': 'stage' has 5 events it does not handle yet: none of its own "
          "consumers asks\n"
          "edge 'src#1' -> 'stage': 'stage' has 5 events it does not handle yet: none of its own "
          "consumers asks\n");
    run.drain();
    const auto m = run.metrics();
    CHECK(m.undelivered() == 10);
    for (auto& s : m.stages)
      if (s.name == "stage") CHECK(s.stop_reason == "shutdown");
  }
}
}  // TEST_SUITE("graph.dynamic")
