// Supervised restarts (StageOptions::restart, Engine::supervise; engine/DESIGN.md 12), on manual
// runs and the virtual clock: what is restarted and when, what the new instance is told, what is
// counted as lost, that demand is restored, and when a failure escalates.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>

#include <doctest/doctest.h>

#include <support/genstage.hpp>

using namespace sluice_test;
using namespace std::chrono_literals;
using sluice::Restart;

namespace {

/// A consumer that fails on the event `fail_on` (while `failures` lasts, shared by every
/// handler a restart makes), or when told "fail" or "stop" by an info; logs what it is told.
struct Flaky {
  Log* log;
  std::shared_ptr<int> failures;
  std::string fail_on;
  std::shared_ptr<int> subscribe_failures = std::make_shared<int>(0);
  void handle_subscribe(const sluice::SubscribeInfo& i, sluice::Context<void>&) {
    if (*subscribe_failures > 0) {
      --*subscribe_failures;
      throw std::runtime_error("cannot subscribe");
    }
    log->push_back("subscribed " + std::string(i.peer));
  }
  void handle_events(std::span<Ev> evs, sluice::Context<void>&) {
    for (auto& e : evs)
      if (e == fail_on && *failures > 0) {
        --*failures;
        throw std::runtime_error("bad event " + e);
      }
    log->push_back("consumed " + fmt(evs));
  }
  void handle_info(std::any& m, sluice::Context<void>& ctx) {
    const auto s = std::any_cast<std::string>(m);
    if (s == "fail") throw std::runtime_error("told to fail");
    if (s == "stop") ctx.stop();
  }
  void handle_terminate(const sluice::Reason& r) { log->push_back("terminated " + reason_str(r)); }
};

struct Fixture {
  Log plog, log, warnings;
  sluice::Engine e;
  sluice::StageRef<void, Ev> p;
  sluice::StageRef<Ev, void> c;
  std::optional<sluice::Run> run;
  Fixture(long long events, Flaky flaky, sluice::RestartOptions policy,
          sluice::SubscriptionOptions sub = {.max_demand = 4, .min_demand = 2}) {
    flaky.log = &log;
    // events < 0: a producer that emits nothing and never ends
    p = e.producer<Ev>("counter", Counter{&plog, 0, events, events >= 0}, demand());
    c = e.consumer<Ev>("flaky", std::move(flaky));
    e.subscribe(c, p, sub);
    e.supervise(c, policy);
    run.emplace(e.start(manual(&warnings)));
  }
  sluice::StageMetrics consumer() { return run->metrics().stages[1]; }
};

/// A Flaky whose handle_subscribe, after its first one, arms `arm` failures of the next ones
/// (those of the handlers a restart makes).
struct Arm {
  Flaky inner;
  std::shared_ptr<int> arm;
  void handle_subscribe(const sluice::SubscribeInfo& i, sluice::Context<void>& ctx) {
    inner.handle_subscribe(i, ctx);
    if (*arm > 0) *inner.subscribe_failures = std::exchange(*arm, 0);
  }
  void handle_events(std::span<Ev> evs, sluice::Context<void>& ctx) {
    inner.handle_events(evs, ctx);
  }
};

Flaky flaky(int failures, std::string fail_on = "") {
  return Flaky{nullptr, std::make_shared<int>(failures), std::move(fail_on)};
}

}  // namespace

TEST_SUITE("engine.restarts") {

TEST_CASE("on_failure: the failed instance is replaced, its subscription kept, its chunk lost") {
  Fixture f(10, flaky(1, "5"), {.restart = Restart::on_failure});
  f.run->wait();  // the failure was absorbed: the run ends normally
  CHECK(f.log == Log{"subscribed counter", "consumed 0,1", "consumed 2,3",
                     "terminated error:bad event 5", "subscribed counter", "consumed 6,7",
                     "consumed 8,9", "terminated normal"});
  const auto m = f.consumer();
  CHECK(m.restarts == 1);
  CHECK(m.last_restart_reason == "bad event 5");
  CHECK(m.lost == 2);  // the chunk [4, 5] of the failed call
  CHECK(m.stop_reason == "normal");
  CHECK(f.run->metrics().undelivered() == 2);
  CHECK(f.run->metrics().edges[0].received == 10);  // the edge was read to the end
  const auto restarted = f.run->diagnose().of(sluice::Finding::Kind::restarted);
  REQUIRE(restarted.size() == 1);
  CHECK(restarted[0].message == "stage 'flaky' was restarted 1 time, last after: bad event 5");
  REQUIRE(f.warnings.size() == 1);
  CHECK(f.warnings[0] ==
        "stage 'flaky' restarted (1 of at most 3 within 5000 ms) after: bad event 5");
}

TEST_CASE("demand is restored: a restarted consumer keeps its full max_demand outstanding") {
  // max_demand 4, min_demand 0: one chunk per message. The failed chunk's ask is made as if the
  // call had returned, so the producer is asked for 4 again and the rest arrives.
  Fixture f(12, flaky(1, "4"), {.restart = Restart::on_failure},
            {.max_demand = 4, .min_demand = 0});
  f.run->wait();
  CHECK(only(f.log, "consumed") == Log{"consumed 0..3", "consumed 8..11"});
  CHECK(f.consumer().lost == 4);
  CHECK(only(f.plog, "demand") == Log{"demand 4", "demand 4", "demand 4"});
}

TEST_CASE("never (the default) and intensity exceeded: the failure escalates as before") {
  SUBCASE("never") {
    Fixture f(10, flaky(1, "5"), {});
    CHECK_THROWS_WITH_AS(f.run->wait(), "stage 'flaky': bad event 5", sluice::stage_error);
    CHECK(f.consumer().restarts == 0);
  }
  SUBCASE("the fourth failure within the window") {
    Fixture f(-1, flaky(0), {.restart = Restart::on_failure, .max_restarts = 3});
    for (int i = 0; i < 3; ++i)
      f.run->send_info(f.c, std::string("fail"));
    f.run->run_until_idle();
    CHECK(f.consumer().restarts == 3);
    CHECK(!f.consumer().finished);
    f.run->send_info(f.c, std::string("fail"));
    CHECK_THROWS_WITH_AS(f.run->wait(), "stage 'flaky': told to fail", sluice::stage_error);
    CHECK(f.consumer().restarts == 3);
  }
}

TEST_CASE("the window is on the run's clock: restarts older than it no longer count") {
  Fixture f(-1, flaky(0),
            {.restart = Restart::on_failure, .max_restarts = 1, .restart_window = 1s});
  f.run->send_info(f.c, std::string("fail"));
  f.run->run_until_idle();
  f.run->advance(1s);
  f.run->send_info(f.c, std::string("fail"));
  f.run->run_until_idle();
  auto m = f.consumer();
  CHECK(m.restarts == 2);
  CHECK(m.last_restart_at == sluice::TimePoint{1s});
  f.run->advance(999ms);
  f.run->send_info(f.c, std::string("fail"));  // the second restart is 999 ms old: escalates
  CHECK_THROWS_AS(f.run->wait(), sluice::stage_error);
}

TEST_CASE("always also restarts a stage that stops itself normally, on_failure does not") {
  SUBCASE("always") {
    Fixture f(-1, flaky(0), {.restart = Restart::always});
    f.run->send_info(f.c, std::string("stop"));
    f.run->run_until_idle();
    CHECK(f.log == Log{"subscribed counter", "terminated normal", "subscribed counter"});
    CHECK(f.consumer().restarts == 1);
    CHECK(f.consumer().last_restart_reason == "normal");
    CHECK(!f.consumer().finished);
  }
  SUBCASE("on_failure") {
    Fixture f(-1, flaky(0), {.restart = Restart::on_failure});
    f.run->send_info(f.c, std::string("stop"));
    f.run->run_until_idle();
    CHECK(f.consumer().restarts == 0);
    CHECK(f.consumer().finished);
  }
  SUBCASE("always, once the inputs have ended: it finishes") {
    Fixture f(6, flaky(0), {.restart = Restart::always});
    f.run->wait();
    CHECK(f.consumer().restarts == 0);
    CHECK(f.consumer().stop_reason == "normal");
  }
}

TEST_CASE("a failure in the new instance's handle_subscribe is a failure too") {
  auto fl = flaky(1, "5");
  fl.subscribe_failures = std::make_shared<int>(0);
  auto sub_failures = fl.subscribe_failures;
  Log plog, log, warnings;
  fl.log = &log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&plog, 0, 10}, demand());

  auto c = e.consumer<Ev>("flaky", Arm{fl, std::make_shared<int>(2)});
  e.subscribe(c, p, {.max_demand = 4, .min_demand = 2});
  e.supervise(c, {.restart = Restart::on_failure, .max_restarts = 3});
  auto run = e.start(manual(&warnings));
  run.wait();
  const auto m = run.metrics().stages[1];
  CHECK(m.restarts == 3);  // the event's failure, then two failed subscribes
  CHECK(m.last_restart_reason == "cannot subscribe");
  CHECK(*sub_failures == 0);
  CHECK(only(log, "consumed") ==
        Log{"consumed 0,1", "consumed 2,3", "consumed 6,7", "consumed 8,9"});
}

TEST_CASE("a producer restarts: the new handler is asked for what the old one owed") {
  // Emits 3 events of its first demand, then throws: those 3 are lost; the new handler (from
  // its declared state: next = 100) is asked for the whole demand again.
  struct Once {
    std::shared_ptr<int> failures;
    long long next = 100;
    void handle_demand(std::size_t n, sluice::Context<Ev>& ctx) {
      for (std::size_t i = 0; i < n && next < 110; ++i) {
        if (i == 3 && *failures > 0) {
          --*failures;
          throw std::runtime_error("source broke");
        }
        ctx.emit(std::to_string(next++));
      }
      if (next == 110) ctx.finish();
    }
  };
  Log log, warnings;
  sluice::Engine e;
  auto p = e.producer<Ev>("src", Once{std::make_shared<int>(1)}, demand());
  auto c = e.consumer<Ev>("sink", Forwarder{&log});
  e.subscribe(c, p, {.max_demand = 5, .min_demand = 0});
  e.supervise(p, {.restart = Restart::on_failure});
  auto run = e.start(manual(&warnings));
  run.wait();
  CHECK(only(log, "consumed") == Log{"consumed 100..104", "consumed 105..109"});
  const auto m = run.metrics().stages[0];
  CHECK(m.restarts == 1);
  CHECK(m.lost == 3);
  CHECK(m.stop_reason == "normal");
}

TEST_CASE("a restarted producer's buffer is lost and counted, the infos behind it delivered") {
  Log log, warnings;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, -1, false}, demand());
  auto c = e.consumer<Ev>("sink", Forwarder{&log});
  e.subscribe(c, p, {.demand = sluice::DemandControl::manual});
  e.supervise(p, {.restart = Restart::on_failure});
  auto run = e.start(manual(&warnings));
  run.send_info(p, Queue{atoms({"a", "b", "c"})});  // no demand: buffered
  run.async_info(p, std::string("behind"));
  run.run_until_idle();
  CHECK(run.metrics().stages[0].buffered == 3);
  run.send_info(p, StopWith{sluice::Reason::error("broken")});  // ctx.stop with an error
  run.run_until_idle();
  const auto m = run.metrics().stages[0];
  CHECK(m.restarts == 1);
  CHECK(m.lost == 3);
  CHECK(m.buffered == 0);
  CHECK(!m.finished);
  CHECK(only(log, "info") == Log{"info behind"});
  run.request_cancel();
  run.run_until_idle();
}

TEST_CASE("restarts while draining, and a cancel stops a stage with a policy for good") {
  SUBCASE("draining") {  // the failure and the drain in one round of the manual run
    Fixture f(-1, flaky(0), {.restart = Restart::on_failure});
    f.run->run_until_idle();
    f.run->send_info(f.c, std::string("fail"));
    f.run->drain();
    CHECK(f.consumer().restarts == 1);
    CHECK(f.consumer().stop_reason == "normal");
  }
  SUBCASE("cancelled") {
    Fixture f(-1, flaky(0), {.restart = Restart::always});
    f.run->run_until_idle();
    const auto report = f.run->cancel();
    CHECK(f.consumer().restarts == 0);
    CHECK(f.consumer().stop_reason == "shutdown");
    (void)report;
  }
}

TEST_CASE("a restart that escalates counts the failed chunk once, on its edge") {
  // The chunk's failure restarts the stage; the new handler's handle_subscribe fails too, and
  // with max_restarts 1 that escalates: the chunk is then sent and not received on its edge,
  // not also lost at the stage.
  auto fl = flaky(1, "5");
  fl.subscribe_failures = std::make_shared<int>(0);
  Log plog, log, warnings;
  fl.log = &log;

  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&plog, 0, 10}, demand());
  auto c = e.consumer<Ev>("flaky", Arm{fl, std::make_shared<int>(1)});
  e.subscribe(c, p, {.max_demand = 4, .min_demand = 2});
  e.supervise(c, {.restart = Restart::on_failure, .max_restarts = 1});
  auto run = e.start(manual(&warnings));
  CHECK_THROWS_WITH_AS(run.wait(), "stage 'flaky': cannot subscribe", sluice::stage_error);
  const auto m = run.metrics();
  CHECK(m.stages[1].restarts == 1);
  CHECK(m.stages[1].lost == 0);
  CHECK(m.edges[0].sent - m.edges[0].received == m.undelivered());
  CHECK(m.edges[0].received == 4);  // the two chunks handled before the failure
}

TEST_CASE("a restart cancels the old handler's timers") {
  struct Ticking {
    Log* log;
    void handle_subscribe(const sluice::SubscribeInfo&, sluice::Context<void>& ctx) {
      ctx.send_after(10ms, std::string("tick"));
    }
    void handle_events(std::span<Ev>, sluice::Context<void>&) {}
    void handle_info(std::any& m, sluice::Context<void>& ctx) {
      const auto s = std::any_cast<std::string>(m);
      if (s == "fail") throw std::runtime_error("told to fail");
      log->push_back(s + " at " + std::to_string(ctx.now().time_since_epoch().count() / 1000000));
    }
  };
  Log plog, log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&plog, 0, -1, false}, demand());
  auto c = e.consumer<Ev>("ticking", Ticking{&log});
  e.subscribe(c, p);
  e.supervise(c, {.restart = Restart::on_failure});
  auto run = e.start(manual());
  run.advance(5ms);
  run.send_info(c, std::string("fail"));  // the new handler starts its timer at 5 ms
  run.advance(20ms);
  CHECK(log == Log{"tick at 15"});  // the old one's, due at 10 ms, went with it
  run.request_cancel();
  run.run_until_idle();
}

TEST_CASE("bad input: restart options are checked before anything runs") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, 3}, demand());
  auto c = e.consumer<Ev>("sink", Forwarder{&log});
  e.subscribe(c, p);
  CHECK_THROWS_WITH_AS(e.supervise(c, {.restart = Restart::always, .max_restarts = 0}),
                       "stage 'sink': option max_restarts is 0: option restart would allow no "
                       "restart (leave restart at never)",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(e.supervise(c, {.restart = Restart::on_failure, .restart_window = 0s}),
                       doctest::Contains("stage 'sink': option restart_window must be positive"),
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(e.supervise(c, {.max_restarts = -1}),
                       "stage 'sink': option max_restarts must be at least 0, got: -1",
                       sluice::option_error);
  auto run = e.start(manual());
  run.wait();  // the refused policies left the stage as it was
}

/// A consumer that asks by hand, two at a time, for what max_demand leaves beyond what its
/// predecessor has outstanding (SubscribeInfo::outstanding); fails on its first `failures`
/// chunks.
struct ByHand {
  Log* log;
  std::shared_ptr<int> failures;
  void handle_subscribe(const sluice::SubscribeInfo& i, sluice::Context<void>& ctx) {
    log->push_back("subscribed, outstanding " + std::to_string(i.outstanding));
    for (auto want = i.options.max_demand - i.outstanding; want > 0; want -= 2)
      ctx.ask(i.subscription, std::min<std::int64_t>(want, 2));
  }
  void handle_events(std::span<Ev> evs, sluice::SubscriptionId from, sluice::Context<void>& ctx) {
    if (*failures > 0) {
      --*failures;
      throw std::runtime_error("bad chunk");
    }
    log->push_back("consumed " + fmt(evs));
    ctx.ask(from, static_cast<std::int64_t>(evs.size()));
  }
};

TEST_CASE("a stage that asks by hand is told after a restart what is still coming to it") {
  Log plog, log, warnings;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&plog, 0, 10}, demand());
  auto c = e.consumer<Ev>("by_hand", ByHand{&log, std::make_shared<int>(1)});
  e.subscribe(c, p, {.max_demand = 4, .demand = sluice::DemandControl::manual});
  e.supervise(c, {.restart = Restart::on_failure});
  auto run = e.start(manual(&warnings));
  run.wait();
  // The first chunk (0,1) failed; 2,3 was asked and on its way: the new handler asks only
  // what max_demand leaves (asking 4 again would exceed it, and fail the stage).
  CHECK(log == Log{"subscribed, outstanding 0", "subscribed, outstanding 2", "consumed 2,3",
                   "consumed 4,5", "consumed 6,7", "consumed 8,9"});
  const auto m = run.metrics().stages[1];
  CHECK(m.restarts == 1);
  CHECK(m.lost == 2);
  CHECK(m.stop_reason == "normal");
}

}  // TEST_SUITE("engine.restarts")
