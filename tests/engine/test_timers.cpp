// Timers (Context::send_after, send_every, cancel_timer) and the run's clock, on the virtual
// clock of manual runs (Run::advance): no test here sleeps, and none asserts how long anything
// took; the two real-clock cases check only that a timer is never early and never keeps a run.
#include <atomic>
#include <chrono>
#include <map>
#include <stdexcept>

#include <sluice/engine/detail/cell/timers.hpp>

#include <doctest/doctest.h>

#include <support/genstage.hpp>

using namespace sluice_test;
using namespace std::chrono_literals;

namespace {

struct After {  // start a one-shot timer named `tag`
  sluice::Duration delay;
  std::string tag;
};
struct Every {  // start a periodic timer named `tag`
  sluice::Duration period;
  std::string tag;
};
struct CancelTimer {
  std::string tag;
};
struct Fire {  // what a timer delivers
  std::string tag;
};
struct CancelOnFire {  // when timer `fire` fires, cancel timer `cancel`
  std::string fire, cancel;
};

std::string at_ms(sluice::TimePoint t) {
  return std::to_string(
             std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count()) +
         "ms";
}

/// A producer that emits nothing and does what its infos say with timers; logs each firing as
/// "<stage> <tag> at <virtual ms>".
struct Clocked {
  Log* log;
  std::map<std::string, sluice::TimerId> ids;
  std::map<std::string, std::string> cancel_on_fire;
  void handle_demand(std::size_t, sluice::Context<Ev>&) {}
  void handle_info(std::any& m, sluice::Context<Ev>& ctx) {
    if (auto* a = std::any_cast<After>(&m)) {
      ids[a->tag] = ctx.send_after(a->delay, Fire{a->tag});
    } else if (auto* e = std::any_cast<Every>(&m)) {
      ids[e->tag] = ctx.send_every(e->period, Fire{e->tag});
    } else if (auto* c = std::any_cast<CancelTimer>(&m)) {
      log->push_back(std::string(ctx.name()) + " cancel " + c->tag + " " +
                     (ctx.cancel_timer(ids[c->tag]) ? "true" : "false"));
    } else if (auto* o = std::any_cast<CancelOnFire>(&m)) {
      cancel_on_fire[o->fire] = o->cancel;
    } else if (auto* f = std::any_cast<Fire>(&m)) {
      log->push_back(std::string(ctx.name()) + " " + f->tag + " at " + at_ms(ctx.now()));
      if (auto it = cancel_on_fire.find(f->tag); it != cancel_on_fire.end())
        log->push_back(std::string(ctx.name()) + " cancel " + it->second + " " +
                       (ctx.cancel_timer(ids[it->second]) ? "true" : "false"));
    } else if (auto* s = std::any_cast<StopWith>(&m)) {
      ctx.stop(s->reason);
    }
  }
};

/// Two Clocked producers ("p", "q") feeding one idle consumer, on a manual run.
struct Fixture {
  Log log;
  Log consumer_log;  // the consumer's subscribes
  Log warnings;
  sluice::Engine e;
  sluice::StageRef<void, Ev> p, q;
  std::optional<sluice::Run> run;
  Fixture() {
    p = e.producer<Ev>("p", Clocked{&log, {}, {}}, demand());
    q = e.producer<Ev>("q", Clocked{&log, {}, {}}, demand());
    auto c = e.consumer<Ev>("c", Forwarder{&consumer_log});
    e.subscribe(c, p);
    e.subscribe(c, q);
    run.emplace(e.start(manual(&warnings)));
  }
  template <class M>
  void tell(const sluice::StageRef<void, Ev>& s, M m) {
    run->send_info(s, std::move(m));
    run->run_until_idle();
  }
};

}  // namespace

TEST_SUITE("engine.timers") {

TEST_CASE("send_after delivers its message once the delay has passed, never before") {
  Fixture f;
  CHECK(f.run->now() == sluice::TimePoint{});
  f.tell(f.p, After{100ms, "a"});
  f.run->advance(99ms);
  CHECK(f.log.empty());
  f.run->advance(1ms);
  CHECK(f.log == Log{"p a at 100ms"});
  f.run->advance(1s);
  CHECK(f.log.size() == 1);
  CHECK(f.run->now() == sluice::TimePoint{1100ms});
  CHECK(f.warnings.empty());
}

TEST_CASE("timers fire in deadline order, those due together in the order they were started") {
  Fixture f;
  f.tell(f.p, After{30ms, "x"});
  f.tell(f.p, After{10ms, "y"});
  f.tell(f.q, After{20ms, "v"});
  f.tell(f.p, After{30ms, "z"});
  f.tell(f.p, After{10ms, "w"});
  f.run->advance(1s);
  CHECK(f.log == Log{"p y at 10ms", "p w at 10ms", "q v at 20ms", "p x at 30ms", "p z at 30ms"});
}

TEST_CASE("a zero delay delivers as soon as the stage runs again") {
  Fixture f;
  f.tell(f.p, After{0ms, "now"});
  CHECK(f.log == Log{"p now at 0ms"});
}

TEST_CASE("send_every delivers every period until cancelled") {
  Fixture f;
  f.tell(f.p, Every{100ms, "t"});
  f.run->advance(350ms);
  CHECK(f.log == Log{"p t at 100ms", "p t at 200ms", "p t at 300ms"});
  f.tell(f.p, CancelTimer{"t"});
  f.run->advance(1s);
  f.tell(f.p, CancelTimer{"t"});
  CHECK(f.log ==
        Log{"p t at 100ms", "p t at 200ms", "p t at 300ms", "p cancel t true", "p cancel t false"});
}

TEST_CASE("cancel_timer: true for a pending timer, which then never fires, false once it fired") {
  Fixture f;
  f.tell(f.p, After{10ms, "fired"});
  f.tell(f.p, After{10ms, "cancelled"});
  f.tell(f.p, CancelTimer{"cancelled"});
  f.run->advance(20ms);
  f.tell(f.p, CancelTimer{"fired"});
  f.tell(f.p, CancelTimer{"cancelled"});
  f.tell(f.p, CancelTimer{"never started"});
  CHECK(f.log == Log{"p cancel cancelled true", "p fired at 10ms", "p cancel fired false",
                     "p cancel cancelled false", "p cancel never started false"});
}

TEST_CASE("a timer's message that cancels another timer due at the same time stops it") {
  // Due timers fire one at a time: the second has not fired when the first's message cancels it.
  Fixture f;
  f.tell(f.p, After{10ms, "first"});
  f.tell(f.p, After{10ms, "second"});
  f.tell(f.p, Every{10ms, "tick"});
  f.tell(f.p, CancelOnFire{"first", "second"});
  f.tell(f.p, CancelOnFire{"second", "tick"});  // never: second does not fire
  f.run->advance(10ms);
  CHECK(f.log == Log{"p first at 10ms", "p cancel second true", "p tick at 10ms"});
  f.run->advance(15ms);
  CHECK(f.log ==
        Log{"p first at 10ms", "p cancel second true", "p tick at 10ms", "p tick at 20ms"});
}

TEST_CASE("more timers due at once than a quantum's budget: all fire, in order, over quanta") {
  Log log, consumer_log;
  sluice::Engine e;
  auto p = e.producer<Ev>("p", Clocked{&log, {}, {}}, demand());
  e.subscribe(e.consumer<Ev>("c", Forwarder{&consumer_log}), p);
  auto options = manual();
  options.quantum = 4;
  auto run = e.start(options);
  Log expected;
  for (int i = 0; i < 50; ++i) {
    const auto tag = std::to_string(i);
    run.send_info(p, After{1ms * (i % 3), tag});
    run.run_until_idle();
  }
  for (int due = 0; due < 3; ++due)
    for (int i = due; i < 50; i += 3)
      expected.push_back("p " + std::to_string(i) + " at " + std::to_string(due) + "ms");
  run.advance(5ms);
  CHECK(log == expected);
}

TEST_CASE("a timer started by a timer's message fires in the same advance if it falls due") {
  struct Chain {
    Log* log;
    int left = 3;
    void handle_demand(std::size_t, sluice::Context<Ev>&) {}
    void handle_info(std::any&, sluice::Context<Ev>& ctx) {
      log->push_back("tick at " + at_ms(ctx.now()));
      if (left-- > 0) ctx.send_after(40ms, 0);
    }
  };
  Log log, consumer_log;
  sluice::Engine e;
  auto p = e.producer<Ev>("p", Chain{&log}, demand());
  e.subscribe(e.consumer<Ev>("c", Forwarder{&consumer_log}), p);
  auto run = e.start(manual());
  run.send_info(p, 0);
  run.advance(100ms);
  CHECK(log == Log{"tick at 0ms", "tick at 40ms", "tick at 80ms"});
  run.advance(100ms);
  CHECK(log == Log{"tick at 0ms", "tick at 40ms", "tick at 80ms", "tick at 120ms"});
}

TEST_CASE("a stage that stops gets no more timer messages, the others' timers go on") {
  // (That the stopped stage's timers are cancelled, not merely undelivered, shows in
  // engine.restarts: "a restart cancels the old handler's timers".)
  Fixture f;
  f.tell(f.p, Every{10ms, "t"});
  f.tell(f.p, After{15ms, "a"});
  f.tell(f.q, Every{400ms, "u"});
  f.run->advance(10ms);
  f.tell(f.p, StopWith{sluice::Reason::normal()});
  f.run->advance(1s);
  CHECK(f.log == Log{"p t at 10ms", "q u at 400ms", "q u at 800ms"});
  CHECK(f.warnings.empty());
  const auto m = f.run->metrics();
  CHECK(m.stages[0].finished);
  CHECK(!m.stages[1].finished);
}

TEST_CASE("bad input: a negative delay, a period that is not positive, a negative advance") {
  SUBCASE("negative delay") {
    Fixture f;
    f.tell(f.p, After{-1ms, "a"});
    CHECK_THROWS_WITH_AS(f.run->wait(),
                         doctest::Contains("stage 'p': send_after: the delay is negative"),
                         sluice::stage_error);
  }
  SUBCASE("zero period") {
    Fixture f;
    f.tell(f.q, Every{0ms, "t"});
    CHECK_THROWS_WITH_AS(f.run->wait(),
                         doctest::Contains("stage 'q': send_every: the period is not positive"),
                         sluice::stage_error);
  }
  SUBCASE("negative advance, and advance on a run that is not manual") {
    Fixture f;
    CHECK_THROWS_AS(f.run->advance(-1ms), std::invalid_argument);
    Log log;
    sluice::Engine e;
    auto p = e.producer<Ev>("p", Counter{&log, 0, 3}, demand());
    e.subscribe(e.consumer<Ev>("c", Forwarder{&log}), p);
    auto run = e.start();
    CHECK_THROWS_WITH_AS(run.advance(1ms), doctest::Contains("only a manual run"),
                         std::logic_error);
    run.wait();
  }
}

TEST_CASE("a stage's timers: cancelled ones leave no memory behind") {
  // A million starts and cancels, as a batching stage re-arming its timeout would make: the
  // stored slots stay proportional to the timers pending.
  sluice::detail::Timers t;
  std::vector<sluice::TimerId> keep;
  std::size_t cancelled = 0;
  for (int i = 0; i < 1'000'000; ++i) {
    const auto id = t.start(sluice::TimePoint{std::chrono::milliseconds(1'000'000 - i)},
                            sluice::Duration::zero(), i);
    if (i % 1000 == 0)
      keep.push_back(id);
    else
      cancelled += t.cancel(id) ? 1 : 0;
  }
  CHECK(cancelled == 1'000'000 - keep.size());
  CHECK(t.pending() == keep.size());
  CHECK(t.slots() <= 2 * t.pending() + 64);
  std::vector<int> fired;
  while (t.fire_next(sluice::TimePoint{std::chrono::milliseconds(2'000'000)},
                     [&](std::any m) { fired.push_back(std::any_cast<int>(m)); })) {
  }
  REQUIRE(fired.size() == keep.size());
  CHECK(fired.front() == 999'000);  // the earliest deadline first
  CHECK(fired.back() == 0);
  CHECK(t.pending() == 0);
}

TEST_CASE("on the real clock a timer fires, never early, and a pending one keeps no run alive") {
  struct Waiter {
    std::chrono::steady_clock::time_point* started;
    std::chrono::steady_clock::time_point* fired;
    bool asked = false;
    void handle_demand(std::size_t, sluice::Context<Ev>& ctx) {
      if (asked) return;
      asked = true;
      *started = std::chrono::steady_clock::now();
      ctx.send_after(20ms, 0);
      ctx.send_after(1h, 1);  // still pending when the stage finishes
    }
    void handle_info(std::any& m, sluice::Context<Ev>& ctx) {
      *fired = std::chrono::steady_clock::now();
      CHECK(std::any_cast<int>(m) == 0);
      ctx.emit("done");
      ctx.finish();
    }
  };
  std::chrono::steady_clock::time_point started, fired;
  std::atomic<int> got{0};
  sluice::Engine e;
  auto p = e.producer<Ev>("p", Waiter{&started, &fired}, demand());
  struct Count {
    std::atomic<int>* got;
    void handle_events(std::span<Ev> events, sluice::Context<void>&) {
      *got += static_cast<int>(events.size());
    }
  };
  e.subscribe(e.consumer<Ev>("c", Count{&got}), p);
  auto run = e.start();
  run.wait();
  CHECK(got == 1);
  CHECK(fired - started >= 20ms);
}

}  // TEST_SUITE("engine.timers")
