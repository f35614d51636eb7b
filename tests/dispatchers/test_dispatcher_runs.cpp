// The dispatchers in real runs (oneTBB threads) and in deterministic manual runs: broadcast to
// consumers of different speeds and selectors, a subscriber holding the fan-out, partition with
// skew, 10 million events through each, subscription refusal, and the errors a user meets.
#include <any>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

#include "support/genstage.hpp"
#include "support/stages.hpp"

namespace {

using Event = std::int64_t;

using Source = sluice_test::CountingSource<Event>;
using Sink = sluice_test::NullSink<Event>;

/// Per consumer instance: count, sum, and whether the events arrived in increasing order.
struct Seen {
  std::uint64_t count = 0, sum = 0, order_errors = 0;
  Event last = -1;
  std::vector<Event> all;  // kept when `keep` is set
};

struct InOrder {  // reads shared batches: takes std::span<const Event>
  std::shared_ptr<std::vector<Seen>> seen;
  bool keep = false;
  void handle_events(std::span<const Event> evs, sluice::Context<void>& c) {
    auto& s = (*seen)[c.instance()];
    for (auto v : evs) {
      ++s.count;
      s.sum += static_cast<std::uint64_t>(v);
      if (v <= s.last) ++s.order_errors;
      s.last = v;
      if (keep) s.all.push_back(v);
    }
  }
};

/// A consumer on manual demand: asks `first` when it subscribes, then nothing until an info
/// tells it to go on; from then on it keeps `window` events asked. Counts and sums what it gets in
/// seen[its instance].
struct HeldBack {
  std::shared_ptr<std::vector<Seen>> seen;
  std::int64_t first = 0, window = 0;
  bool go = false;
  std::int64_t outstanding = 0;  // asked and not received
  void ask(sluice::Context<void>& c, std::int64_t n) {
    outstanding += n;
    c.ask(0, n);
  }
  void handle_subscribe(const sluice::SubscribeInfo&, sluice::Context<void>& c) { ask(c, first); }
  void handle_events(std::span<Event> evs, sluice::Context<void>& c) {
    auto& s = (*seen)[c.instance()];
    for (auto v : evs) {
      ++s.count;
      s.sum += static_cast<std::uint64_t>(v);
    }
    outstanding -= static_cast<std::int64_t>(evs.size());
    if (go) ask(c, static_cast<std::int64_t>(evs.size()));
  }
  void handle_info(std::any&, sluice::Context<void>& c) {
    go = true;
    ask(c, window - outstanding);
  }
};

std::uint64_t sum_below(Event n) {
  return static_cast<std::uint64_t>(n) * static_cast<std::uint64_t>(n - 1) / 2;
}

void check_clean_end(const sluice::Run& run) {
  auto m = run.metrics();
  CHECK(m.undelivered() == 0);
  for (auto& s : m.stages) {
    CHECK(s.finished);
    CHECK(s.dropped == 0);
    CHECK(s.stop_reason == "normal");
  }
}

}  // namespace

TEST_SUITE("dispatchers.runs") {
TEST_CASE("broadcast: 10 million events to 3 consumers, each sees all, in order") {
  constexpr Event n = 10'000'000;
  auto seen = std::make_shared<std::vector<Seen>>(3);
  sluice::Engine e;
  auto src = e.producer<Event>("source", Source{0, n}, sluice::broadcast_dispatcher<Event>());
  auto sink = e.consumer<Event>("sink", InOrder{seen}, 3);
  e.subscribe(sink, src);
  auto run = e.start();
  run.wait();
  for (auto& s : *seen) {
    CHECK(s.count == static_cast<std::uint64_t>(n));
    CHECK(s.sum == sum_below(n));
    CHECK(s.order_errors == 0);
  }
  check_clean_end(run);
}

TEST_CASE("broadcast: selectors and different max_demand, nobody stalls") {
  constexpr Event n = 200'000;
  auto all = std::make_shared<std::vector<Seen>>(1);
  auto evens = std::make_shared<std::vector<Seen>>(1);
  auto rare = std::make_shared<std::vector<Seen>>(1);
  sluice::Engine e;
  auto src = e.producer<Event>("source", Source{0, n}, sluice::broadcast_dispatcher<Event>());
  auto a = e.consumer<Event>("all", InOrder{all});
  auto b = e.consumer<Event>("evens", InOrder{evens});
  auto c = e.consumer<Event>("rare", InOrder{rare});
  e.subscribe(a, src, {.max_demand = 1000});
  e.subscribe(b, src, {.max_demand = 10, .selector = sluice::selector<Event>([](const Event& v) {
                                           return v % 2 == 0;
                                         })});
  e.subscribe(c, src,
              {.max_demand = 3, .selector = sluice::selector<Event>([](const Event& v) {
                                  return v % 1000 ==
                                         7;  // selects almost nothing: its demand comes back
                                })});
  auto run = e.start();
  run.wait();
  CHECK((*all)[0].count == static_cast<std::uint64_t>(n));
  CHECK((*all)[0].order_errors == 0);
  CHECK((*evens)[0].count == static_cast<std::uint64_t>(n / 2));
  CHECK((*evens)[0].sum == 2 * sum_below(n / 2));
  CHECK((*evens)[0].order_errors == 0);
  CHECK((*rare)[0].count == static_cast<std::uint64_t>(n / 1000));
  CHECK((*rare)[0].order_errors == 0);
  auto m = run.metrics();
  for (auto& s : m.stages)
    CHECK(s.stop_reason == "normal");
}

TEST_CASE(
    "broadcast: a subscriber that has not asked holds the fan-out, when it asks, the "
    "events buffered meanwhile reach everyone, in order, and the buffer empties") {
  // The producer emits 5 events on an info, whatever the demand (like a timer would). The
  // "late" consumer asks by hand, later. GenStage 1.3.2 can strand such buffered events
  // (GENSTAGE.md 2.2, known defect); here they are delivered as soon as everyone can take them.
  struct Emitter {
    Event next = 0;
    void handle_demand(std::size_t, sluice::Context<Event>&) {}
    void handle_info(std::any& m, sluice::Context<Event>& c) {
      if (std::any_cast<std::string>(m) == "finish") {
        c.finish();
        return;
      }
      for (int i = 0; i < 5; ++i)
        c.emit(next++);
    }
  };
  struct Late {
    std::shared_ptr<std::vector<Seen>> seen;
    void handle_events(std::span<const Event> evs, sluice::Context<void>& c) {
      InOrder{seen, true}.handle_events(evs, c);
    }
    void handle_info(std::any&, sluice::Context<void>& c) { c.ask(0, 100); }
  };
  auto early = std::make_shared<std::vector<Seen>>(1);
  auto late = std::make_shared<std::vector<Seen>>(1);
  sluice::Engine e;
  auto src = e.producer<Event>("emitter", Emitter{}, sluice::broadcast_dispatcher<Event>());
  auto a = e.consumer<Event>("early", InOrder{early, true});
  auto b = e.consumer<Event>("late", Late{late});
  e.subscribe(a, src, {.max_demand = 100});
  e.subscribe(b, src, {.max_demand = 100, .demand = sluice::DemandControl::manual});
  auto run = e.start(sluice_test::manual());
  run.run_until_idle();
  run.send_info(src, std::string("emit"));
  run.send_info(src, std::string("emit"));
  run.run_until_idle();
  // Held: "late" has not asked, so nobody receives anything and the producer buffers.
  CHECK((*early)[0].count == 0);
  CHECK(run.metrics().stages[0].buffered == 10);
  run.send_info(b, std::string("ask"));
  run.run_until_idle();
  const std::vector<Event> ten{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  CHECK((*early)[0].all == ten);
  CHECK((*late)[0].all == ten);
  CHECK(run.metrics().stages[0].buffered == 0);
  run.send_info(src, std::string("finish"));
  run.wait();
  CHECK(run.metrics().undelivered() == 0);
}

TEST_CASE("broadcast: move-only events are shared, not copied") {
  struct Boxes {
    int next = 0;
    void handle_demand(std::size_t n, sluice::Context<std::unique_ptr<int>>& c) {
      for (std::size_t i = 0; i < n && next < 10'000; ++i)
        c.emit(std::make_unique<int>(next++));
      if (next == 10'000) c.finish();
    }
  };
  struct Read {
    std::shared_ptr<std::vector<std::int64_t>> sums;
    void handle_events(std::span<const std::unique_ptr<int>> evs, sluice::Context<void>& c) {
      for (auto& p : evs)
        (*sums)[c.instance()] += *p;
    }
  };
  auto sums = std::make_shared<std::vector<std::int64_t>>(2);
  sluice::Engine e;
  auto p = e.producer<std::unique_ptr<int>>("boxes", Boxes{},
                                            sluice::broadcast_dispatcher<std::unique_ptr<int>>());
  auto r = e.consumer<std::unique_ptr<int>>("read", Read{sums}, 2);
  e.subscribe(r, p, {.max_demand = 64});
  e.start().wait();
  CHECK((*sums)[0] == 10'000 * 9'999 / 2);
  CHECK((*sums)[1] == 10'000 * 9'999 / 2);
}

TEST_CASE("broadcast: a consumer that would modify shared events is refused at subscribe") {
  using Mutating = sluice_test::NullSink<Event>;
  sluice::Engine e;
  auto src = e.producer<Event>("source", Source{0, 1}, sluice::broadcast_dispatcher<Event>());
  auto c = e.consumer<Event>("mutating", Mutating{});
  CHECK_THROWS_WITH_AS(e.subscribe(c, src),
                       "stage 'mutating' subscribing to 'source': the broadcast dispatcher "
                       "shares each event between its consumers, so handle_events must take "
                       "std::span<const T>",
                       sluice::option_error);
}

TEST_CASE("partition: 10 million events to 8 consumers, each exactly once, each key in order") {
  constexpr Event n = 10'000'000;
  struct PerKey {
    std::shared_ptr<std::vector<Seen>> seen;
    std::vector<Event> last = std::vector<Event>(64, -1);
    void handle_events(std::span<Event> evs, sluice::Context<void>& c) {
      auto& s = (*seen)[c.instance()];
      for (auto v : evs) {
        ++s.count;
        s.sum += static_cast<std::uint64_t>(v);
        auto& l = last[static_cast<std::size_t>(v % 64)];
        if (v <= l || (v % 64) % 8 != static_cast<Event>(c.instance())) ++s.order_errors;
        l = v;
      }
    }
  };
  auto seen = std::make_shared<std::vector<Seen>>(8);
  sluice::Engine e;
  auto src = e.producer<Event>(
      "source", Source{0, n},
      sluice::partition_dispatcher<Event>(8, [](Event& v) { return (v % 64) % 8; }));
  auto sink = e.consumer<Event>("per_key", PerKey{seen}, 8);
  e.subscribe(sink, src);
  auto run = e.start();
  run.wait();
  std::uint64_t count = 0, sum = 0;
  for (auto& s : *seen) {
    count += s.count;
    sum += s.sum;
    CHECK(s.order_errors == 0);
    CHECK(s.count == static_cast<std::uint64_t>(n / 8));
  }
  CHECK(count == static_cast<std::uint64_t>(n));
  CHECK(sum == sum_below(n));
  check_clean_end(run);
}

TEST_CASE("partition: skew shows in the metrics, per partition") {
  // 9 of 10 events go to partition 0. Both consumers ask 100 by hand, then nothing until told
  // to go on: the metrics show partition 0's backlog in its edge's `queued`.
  auto seen = std::make_shared<std::vector<Seen>>(2);
  sluice::Engine e;
  auto src = e.producer<Event>(
      "source", Source{0, 1000},
      sluice::partition_dispatcher<Event>(2, [](Event& v) { return v % 10 == 9 ? 1 : 0; }));
  auto sink = e.consumer<Event>("sink", HeldBack{seen, 100, 100}, 2);
  e.subscribe(sink, src, {.max_demand = 100, .demand = sluice::DemandControl::manual});
  auto run = e.start(sluice_test::manual());
  run.run_until_idle();
  auto m = run.metrics();
  REQUIRE(m.edges.size() == 2);
  CHECK(m.edges[0].partition == "0");
  CHECK(m.edges[1].partition == "1");
  // 200 asked, 200 emitted: 180 for partition 0 (100 sent, 80 queued), 20 for partition 1.
  CHECK(m.edges[0].sent == 100);
  CHECK(m.edges[0].queued == 80);
  CHECK(m.edges[1].sent == 20);
  CHECK(m.edges[1].queued == 0);
  CHECK(m.stages[0].buffered == 80);
  CHECK((*seen)[0].count == 100);
  CHECK((*seen)[1].count == 20);
  run.send_info(sink, std::string("go"), 0);
  run.send_info(sink, std::string("go"), 1);
  run.wait();
  CHECK((*seen)[0].count == 900);
  CHECK((*seen)[1].count == 100);
  auto end = run.metrics();
  CHECK(end.edges[0].sent == 900);
  CHECK(end.edges[1].sent == 100);
  CHECK(end.edges[0].queued == 0);
  CHECK(end.undelivered() == 0);
}

TEST_CASE("partition: a slow partition holds the producer back, nothing is dropped") {
  // Partition 0's consumer asks 10 by hand, then nothing until told to go on; partition 1's
  // asks up to 1000 as it handles. Each ask of partition 1 brings as many events for partition
  // 0 as for itself: its queue would grow to about partition 1's demand (past queue_size, so
  // dropping). Here upstream demand is held back once it queues queue_size.
  struct Fast {
    std::shared_ptr<std::vector<Seen>> seen;
    void handle_events(std::span<Event> evs, sluice::Context<void>&) {
      for (auto v : evs) {
        ++(*seen)[1].count;
        (*seen)[1].sum += static_cast<std::uint64_t>(v);
      }
    }
  };
  constexpr Event n = 100'000;
  auto seen = std::make_shared<std::vector<Seen>>(2);
  sluice::Engine e;
  auto src = e.producer<Event>(
      "source", Source{0, n},
      sluice::partition_dispatcher<Event>(2, [](Event& v) { return v % 2; }, {.queue_size = 50}));
  auto stalled = e.consumer<Event>("stalled", HeldBack{seen, 10, 100});
  auto fast = e.consumer<Event>("fast", Fast{seen});
  e.subscribe(stalled, src,
              {.max_demand = 100,
               .partition = sluice::Partition(0),
               .demand = sluice::DemandControl::manual});
  e.subscribe(fast, src, {.max_demand = 1000, .partition = sluice::Partition(1)});
  auto run = e.start(sluice_test::manual());
  run.run_until_idle();
  auto m = run.metrics();
  CHECK(m.stages[0].dropped == 0);
  CHECK(m.edges[0].queued >= 50);         // partition 0 backed up...
  CHECK(m.edges[0].queued <= 50 + 1000);  // ...by at most what was asked upstream before
  CHECK((*seen)[0].count == 10);
  CHECK((*seen)[1].count <= 1000 + 60);
  run.send_info(stalled, std::string("go"));
  run.wait();
  CHECK((*seen)[0].count == n / 2);
  CHECK((*seen)[1].count == n / 2);
  CHECK((*seen)[0].sum + (*seen)[1].sum == sum_below(n));
  check_clean_end(run);
}

TEST_CASE("partition: named partitions, explicit per subscription") {
  struct Sink {
    std::shared_ptr<std::vector<Seen>> seen;
    void handle_events(std::span<Event> evs, sluice::Context<void>&) {
      for (auto v : evs)
        (*seen)[0].sum += static_cast<std::uint64_t>(v);
    }
  };
  auto odd = std::make_shared<std::vector<Seen>>(1);
  auto even = std::make_shared<std::vector<Seen>>(1);
  sluice::Engine e;
  auto src = e.producer<Event>(
      "source", Source{0, 100},
      sluice::partition_dispatcher<Event>(std::vector<sluice::Partition>{"odd", "even"},
                                          [](Event& v) { return v % 2 ? "odd" : "even"; }));
  auto o = e.consumer<Event>("odd", Sink{odd});
  auto ev = e.consumer<Event>("even", Sink{even});
  e.subscribe(o, src, {.partition = "odd"});
  e.subscribe(ev, src, {.partition = "even"});
  auto run = e.start();
  run.wait();
  CHECK((*odd)[0].sum == 2500);
  CHECK((*even)[0].sum == 2450);
  CHECK(run.metrics().edges[0].partition == "'odd'");
}

TEST_CASE("partition: the hash's drops are counted as filtered, not lost") {
  sluice::Engine e;
  auto src = e.producer<Event>("source", Source{0, 1000},
                               sluice::partition_dispatcher<Event>(2, [](Event& v) {
                                 return v % 4 == 0 ? std::nullopt : std::optional<Event>(v % 2);
                               }));
  auto sink = e.consumer<Event>("sink", Sink{}, 2);
  e.subscribe(sink, src);
  auto run = e.start();
  run.wait();
  auto m = run.metrics();
  CHECK(m.stages[0].filtered == 250);
  CHECK(m.stages[0].events_out == 750);
  CHECK(m.undelivered() == 0);
}

TEST_CASE("partition: every problem with the subscriptions is reported before running") {
  sluice::Engine e;
  auto src = e.producer<Event>("source", Source{0, 10}, sluice::partition_dispatcher<Event>(4));
  auto sink = e.consumer<Event>("sink", Sink{}, 2);
  auto extra = e.consumer<Event>("extra", Sink{});
  e.subscribe(sink, src);
  e.subscribe(extra, src, {.partition = 1});
  CHECK_THROWS_WITH_AS(e.start(),
                       "stage 'source': consumer 'extra': option partition 1 is already taken "
                       "by 'sink#1'\n"
                       "stage 'source': partition 2 has no subscriber (its events would only "
                       "be dropped)\n"
                       "stage 'source': partition 3 has no subscriber (its events would only "
                       "be dropped)",
                       sluice::option_error);
}

TEST_CASE("partition: unknown partition and bad options name the stage") {
  sluice::Engine e;
  auto src = e.producer<Event>("source", Source{0, 10}, sluice::partition_dispatcher<Event>(2));
  auto sink = e.consumer<Event>("sink", Sink{});
  CHECK_THROWS_WITH_AS(e.subscribe(sink, src, {.partition = 5}),
                       "stage 'sink' subscribing to 'source': option partition must be one of "
                       "0, 1, got: 5",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(e.producer<Event>("bad", Source{0, 1},
                                         sluice::partition_dispatcher<Event>(2, {.queue_size = 0})),
                       "option queue_size must be greater than 0, got: 0", sluice::option_error);
  auto demand = e.producer<Event>("plain", Source{0, 1}, sluice::demand_dispatcher<Event>());
  CHECK_THROWS_WITH_AS(e.subscribe(sink, demand, {.partition = 0}),
                       "stage 'sink' subscribing to 'plain': option partition: the demand "
                       "dispatcher has no partitions",
                       sluice::option_error);
}

TEST_CASE("a hash that computes an unknown partition fails the producer, naming it") {
  sluice::Engine e;
  auto src = e.producer<Event>("source", Source{0, 10},
                               sluice::partition_dispatcher<Event>(2, [](Event&) { return 7; }));
  auto sink = e.consumer<Event>("sink", Sink{}, 2);
  e.subscribe(sink, src);
  auto run = e.start(sluice_test::manual());
  CHECK_THROWS_WITH_AS(run.wait(),
                       "stage 'source': partition dispatcher: the hash computed unknown "
                       "partition 7 for an event (partitions: 0, 1)",
                       sluice::stage_error);
}
}  // TEST_SUITE("dispatchers.runs")
