// Regressions found by review: each case reproduced a hang, a double free, a false protocol
// error or a wrong count before its fix.
#include <any>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>

#include <sluice/engine/detail/executor.hpp>

#include <doctest/doctest.h>

#include <support/genstage.hpp>
#include <support/stages.hpp>

using namespace sluice_test;

namespace {

using Endless = EndlessSource<>;

}  // namespace

TEST_SUITE("engine.regressions") {

TEST_CASE("cancelling, inside handle_events, the subscription being handled") {
  // The events in hand stay valid until the callback returns; the rest of the message is not
  // delivered and is counted; the other input goes on (temporary).
  struct CancelOwn {
    std::shared_ptr<std::string> seen = std::make_shared<std::string>();
    void handle_events(std::span<std::string> evs, sluice::SubscriptionId from,
                       sluice::Context<void>& c) {
      for (auto& e : evs)
        *seen += e + ",";
      if (from == 0) c.cancel(0, sluice::Reason::normal());
      for (auto& e : evs)
        *seen += e;  // still readable after cancel
    }
  };
  struct Strings {
    int next = 0;
    int limit;
    void handle_demand(std::size_t n, sluice::Context<std::string>& c) {
      for (std::size_t i = 0; i < n && next < limit; ++i)
        c.emit(std::string(40, static_cast<char>('a' + next++ % 26)));
      if (next == limit) c.finish();
    }
  };
  for (bool is_manual : {true, false}) {
    sluice::Engine e;
    auto a =
        e.producer<std::string>("a", Strings{0, 1000}, sluice::demand_dispatcher<std::string>());
    auto b = e.producer<std::string>("b", Strings{0, 50}, sluice::demand_dispatcher<std::string>());
    CancelOwn handler;
    auto c = e.consumer<std::string>("c", handler);
    e.subscribe(c, a, {.max_demand = 10, .min_demand = 5, .cancel = sluice::CancelMode::temporary});
    e.subscribe(c, b, {.max_demand = 10, .min_demand = 5, .cancel = sluice::CancelMode::temporary});
    auto run = e.start(is_manual ? manual() : quiet());
    run.wait();
    auto m = run.metrics();
    CHECK(m.stages[2].stop_reason == "normal");
    CHECK(m.stages[0].stop_reason == "shutdown");  // lost its only subscriber
    std::uint64_t emitted = m.stages[0].events_out + m.stages[1].events_out;
    CHECK(emitted == m.stages[2].events_in + m.undelivered());
    CHECK(m.stages[2].events_in >= 50);  // all of b
  }
}

TEST_CASE("a throwing dispatcher or logger cannot hang a run") {
  SUBCASE("Dispatcher::buffered throws") {
    struct BadBuffered final : sluice::Dispatcher<std::int64_t> {
      sluice::DemandDispatcher<std::int64_t> inner;
      std::size_t subscribe(const sluice::SubscriberInfo& s,
                            sluice::Outbox<std::int64_t>& o) override {
        return inner.subscribe(s, o);
      }
      std::size_t cancel(sluice::SubscriberId s, sluice::Outbox<std::int64_t>& o) override {
        return inner.cancel(s, o);
      }
      std::size_t ask(sluice::SubscriberId s, std::size_t n,
                      sluice::Outbox<std::int64_t>& o) override {
        return inner.ask(s, n, o);
      }
      std::size_t dispatch(std::span<std::int64_t> ev, sluice::Outbox<std::int64_t>& o) override {
        return inner.dispatch(ev, o);
      }
      std::size_t buffered() const override { throw std::runtime_error("buffered broke"); }
      std::string name() const override { return "BadBuffered"; }
    };
    sluice::Engine e;
    auto p =
        e.producer<std::int64_t>("p", Endless{}, [] { return std::make_unique<BadBuffered>(); });
    auto c = e.consumer<std::int64_t>("c", NullSink<>{});
    e.subscribe(c, p);
    auto run = e.start(quiet());
    CHECK_THROWS_WITH_AS(run.wait(), "stage 'p': buffered broke", sluice::stage_error);
  }
  SUBCASE("the logger throws") {
    struct Thrower {
      void handle_events(std::span<std::int64_t>, sluice::Context<void>&) {
        throw std::runtime_error("handler");
      }
    };
    sluice::Engine e;
    auto p = e.producer<std::int64_t>("p", Endless{}, sluice::demand_dispatcher<std::int64_t>());
    auto c = e.consumer<std::int64_t>("c", Thrower{});
    e.subscribe(c, p);
    sluice::RunOptions o;
    o.logger = [](sluice::LogLevel, std::string_view) { throw std::runtime_error("logger"); };
    auto run = e.start(o);
    CHECK_THROWS_WITH_AS(run.wait(), "stage 'c': handler", sluice::stage_error);
  }
}

TEST_CASE("a manual consumer re-asking inside handle_events never overruns its edge") {
  // The RateLimiter / ConsumerSupervisor pattern: ask again for what it was given, while it still
  // holds it. The producer runs meanwhile on another thread.
  struct Reasker {
    std::shared_ptr<std::int64_t> got = std::make_shared<std::int64_t>(0);
    void handle_subscribe(const sluice::SubscribeInfo& i, sluice::Context<void>& c) {
      c.ask(i.subscription, 4);
    }
    void handle_events(std::span<std::int64_t> evs, sluice::SubscriptionId from,
                       sluice::Context<void>& c) {
      c.ask(from, static_cast<std::int64_t>(evs.size()));
      *got += static_cast<std::int64_t>(evs.size());
      if (*got >= 200'000) c.stop();
    }
  };
  sluice::Engine e;
  auto p = e.producer<std::int64_t>("p", Endless{}, sluice::demand_dispatcher<std::int64_t>());
  Reasker r;
  auto c = e.consumer<std::int64_t>("c", r);
  e.subscribe(c, p, {.max_demand = 4, .demand = sluice::DemandControl::manual});
  sluice::RunOptions o = quiet();
  o.direct_handoff = false;
  auto run = e.start(o);
  CHECK_NOTHROW(run.wait());
  CHECK(*r.got >= 200'000);
}

TEST_CASE("ask on an automatic subscription is refused") {
  struct Asker {
    void handle_events(std::span<Ev>, sluice::SubscriptionId from, sluice::Context<void>& c) {
      c.ask(from, 1);
    }
  };
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("p", Counter{&log}, demand());
  auto c = e.consumer<Ev>("c", Asker{});
  e.subscribe(c, p);
  auto run = e.start(manual());
  CHECK_THROWS_WITH_AS(
      run.wait(),
      "stage 'c': ask on the automatic subscription to 'p': only manual subscriptions ask by hand",
      sluice::stage_error);
}

TEST_CASE("a cell that keeps yielding does not count notifications up") {
  struct Busy final : sluice::detail::Schedulable {
    int left = 1000;
    bool run_quantum() noexcept override { return --left > 0; }
  };
  sluice::detail::ManualExecutor ex;
  Busy cell;
  cell.notify(ex);
  for (int i = 0; i < 999; ++i) {
    cell.notify(ex);  // notified while scheduled: no second schedule
    CHECK(ex.run_until_idle(1) == 1);
    CHECK(cell.notes_approx() <= 1);
  }
  ex.run_until_idle();
  CHECK(cell.notes_approx() == 0);
  CHECK(ex.idle());
}

TEST_CASE("buffered events are not stranded after a subscriber leaves with demand") {
  // DemandDispatcher's pending (demand asked for a subscriber that left) absorbs later asks; the
  // buffer must still go to the subscriber that has demand, and the run must end.
  struct Push {
    long next = 0;
    void handle_demand(std::size_t, sluice::Context<long>&) {}
    void handle_info(std::any& m, sluice::Context<long>& c) {
      if (auto* k = std::any_cast<int>(&m))
        for (int i = 0; i < *k; ++i)
          c.emit(next++);
      else
        c.finish();
    }
  };
  struct Leaver {
    void handle_events(std::span<long>, sluice::Context<void>&) {}
    void handle_info(std::any&, sluice::Context<void>& c) { c.cancel(0); }
  };
  sluice::Engine e;
  auto p = e.producer<long>("p", Push{}, sluice::demand_dispatcher<long>());
  auto x = e.consumer<long>("x", Leaver{});
  CountingSink<long> sink;
  auto b = e.consumer<long>("b", sink);
  e.subscribe(x, p, {.max_demand = 20});
  e.subscribe(b, p, {.max_demand = 10, .min_demand = 5});
  auto run = e.start(manual());
  run.run_until_idle();
  run.send_info(x, 0);
  run.run_until_idle();
  run.send_info(p, 15);
  run.run_until_idle();
  run.send_info(p, std::string("close"));
  run.wait();
  CHECK(*sink.count == 15);
  CHECK(run.done());
}

TEST_CASE("events emitted around finish() are delivered or counted, never vanish") {
  struct P {
    long next = 0;
    bool finished = false;
    void handle_demand(std::size_t n, sluice::Context<long>& c) {
      for (std::size_t i = 0; i < n + 5; ++i)
        c.emit(next++);  // 5 beyond demand: buffered
      if (!finished && next >= 20) {
        finished = true;
        c.finish();
      }
    }
  };
  struct Probe {  // shares the producer's counter
    static long emitted(const sluice::Metrics& m) {
      return static_cast<long>(m.stages[0].events_out + m.stages[0].lost);
    }
  };
  sluice::Engine e;
  CountingSink<long> c;
  auto p = e.producer<long>("p", P{}, sluice::demand_dispatcher<long>());
  auto cc = e.consumer<long>("c", c);
  e.subscribe(cc, p, {.max_demand = 10, .min_demand = 0});
  auto run = e.start(manual());
  run.wait();
  auto m = run.metrics();
  CHECK(static_cast<std::uint64_t>(c.count->load()) + m.undelivered() ==
        static_cast<std::uint64_t>(Probe::emitted(m)));
  CHECK(*c.count >= 20);
}

TEST_CASE("stop() inside handle_events: the events handed over count as delivered") {
  struct C {
    std::shared_ptr<long> got = std::make_shared<long>(0);
    void handle_events(std::span<std::int64_t> evs, sluice::Context<void>& c) {
      *got += static_cast<long>(evs.size());
      c.stop();
    }
  };
  sluice::Engine e;
  C c;
  auto p = e.producer<std::int64_t>("p", Endless{}, sluice::demand_dispatcher<std::int64_t>());
  auto cc = e.consumer<std::int64_t>("c", c);
  e.subscribe(cc, p, {.max_demand = 10, .min_demand = 5});
  auto run = e.start(manual());
  run.wait();
  auto m = run.metrics();
  CHECK(*c.got == 5);  // one chunk of max - min
  CHECK(m.stages[1].events_in == 5);
  CHECK(m.edges[0].received == 5);
  CHECK(m.stages[0].events_out == 5 + m.undelivered() - m.stages[0].lost);
}

TEST_CASE("overlapping runs with different concurrency do not starve each other") {
  // A concurrency-1 run whose only worker is blocked in a handler, and a concurrency-2 run that
  // must still progress.
  std::atomic<bool> release{false};
  std::atomic<bool> entered{false};
  struct Blocker {
    std::atomic<bool>* release;
    std::atomic<bool>* entered;
    void handle_events(std::span<std::int64_t>, sluice::Context<void>&) {
      entered->store(true);
      while (!release->load())  // blocks its worker until the other run is done
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  sluice::Engine slow;
  auto sp = slow.producer<std::int64_t>("p", CountingSource<>{0, 100'000},
                                        sluice::demand_dispatcher<std::int64_t>());
  auto sc = slow.consumer<std::int64_t>("blocked", Blocker{&release, &entered});
  slow.subscribe(sc, sp);
  sluice::RunOptions one = quiet();
  one.concurrency = 1;
  auto blocked = slow.start(one);
  while (!entered.load())  // its only worker is now held inside the handler
    std::this_thread::yield();

  sluice::Engine fast;
  CountingSink<> count;
  auto fp = fast.producer<std::int64_t>("p", CountingSource<>{0, 100'000},
                                        sluice::demand_dispatcher<std::int64_t>());
  auto fc = fast.consumer<std::int64_t>("c", count);
  fast.subscribe(fc, fp);
  sluice::RunOptions two = quiet();
  two.concurrency = 2;
  fast.start(two).wait();
  CHECK(*count.count == 100'000);
  release = true;
  blocked.wait();
}

}  // TEST_SUITE("engine.regressions")
