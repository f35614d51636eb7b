// Ports of GenStage's cancellation scenarios (test/gen_stage_test.exs "handle_cancel/3" and the
// cancel modes, GENSTAGE.md 1.10). Runs use fail_fast = false so that only the cancel modes
// propagate a stop. "Exits with reason R" is the stage's stop reason; where GenStage keeps a
// consumer with no subscription left alive, Sluice finishes it normally (a run ends when every
// stage has finished).
#include <doctest/doctest.h>

#include <support/genstage.hpp>

using namespace sluice_test;
using sluice::CancelMode;
using sluice::Reason;

namespace {

sluice::RunOptions no_fail_fast(Log* warnings = nullptr) {
  auto o = manual(warnings);
  o.fail_fast = false;
  return o;
}

struct Chain {  // Counter -> Forwarder, one subscription with the given cancel mode
  Log log;
  sluice::Engine e;
  sluice::StageRef<void, Ev> p;
  sluice::StageRef<Ev, void> c;
  std::optional<sluice::Run> run;
  explicit Chain(CancelMode mode) {
    p = e.producer<Ev>("counter", Counter{&log, 0, -1, false}, demand());
    c = e.consumer<Ev>("forwarder", Forwarder{&log});
    e.subscribe(c, p, {.cancel = mode});
    run.emplace(e.start(no_fail_fast()));
    run->run_until_idle();
  }
  sluice::StageMetrics stage(std::size_t i) { return run->metrics().stages[i]; }
};

}  // namespace

TEST_SUITE("engine.genstage.cancel") {

TEST_CASE("producer handle_cancel on a consumer's cancel") {
  Chain t(CancelMode::temporary);
  t.run->send_info(t.c, CancelSub{0, Reason::error("oops")});
  t.run->run_until_idle();
  CHECK(only(t.log, "producer_cancelled") == Log{"producer_cancelled cancel error:oops"});
  CHECK(only(t.log, "consumed_cancelled") == Log{"consumed_cancelled cancel error:oops"});
  // The producer lost its only consumer: in a static run nobody can subscribe later, so it stops.
  CHECK(t.stage(0).stop_reason == "shutdown");
  CHECK(t.stage(1).stop_reason == "normal");  // temporary: no exit, nothing left to consume
  CHECK(t.run->done());
}

TEST_CASE("consumer cancel modes on its own cancel") {
  struct Case {
    CancelMode mode;
    Reason reason;
    std::string expected_stop;
  };
  for (const auto& k : {Case{CancelMode::temporary, Reason::error("oops"), "normal"},
                        Case{CancelMode::transient, Reason::normal(), "normal"},
                        Case{CancelMode::transient, Reason::error("pid"), "pid"},
                        Case{CancelMode::permanent, Reason::error("pid"), "pid"},
                        Case{CancelMode::permanent, Reason::normal(), "normal"}}) {
    Chain t(k.mode);
    t.run->send_info(t.c, CancelSub{0, k.reason});
    t.run->run_until_idle();
    CAPTURE(static_cast<int>(k.mode));
    CAPTURE(k.expected_stop);
    CHECK(only(t.log, "consumed_cancelled") ==
          Log{"consumed_cancelled cancel " + reason_str(k.reason)});
    CHECK(t.stage(1).finished);
    CHECK(t.stage(1).stop_reason == k.expected_stop);
    CHECK_NOTHROW(t.run->wait());  // a chosen cancel is not a failure of the run
  }
}

TEST_CASE("consumer cancel modes on producer down") {
  struct Case {
    CancelMode mode;
    Reason reason;
    std::string expected_stop;
  };
  for (const auto& k : {Case{CancelMode::temporary, Reason::error("killed"), "normal"},
                        Case{CancelMode::transient, Reason::error("killed"), "killed"},
                        Case{CancelMode::permanent, Reason::error("killed"), "killed"},
                        Case{CancelMode::transient, Reason::shutdown(), "normal"},
                        Case{CancelMode::permanent, Reason::shutdown(), "shutdown"}}) {
    Chain t(k.mode);
    t.run->send_info(t.p, StopWith{k.reason});
    t.run->run_until_idle();
    CAPTURE(static_cast<int>(k.mode));
    CAPTURE(k.expected_stop);
    CHECK(only(t.log, "consumed_cancelled") ==
          Log{"consumed_cancelled down " + reason_str(k.reason)});
    CHECK(t.stage(1).stop_reason == k.expected_stop);
    if (k.reason.is_error())  // the producer stopping with an error is the run's failure
      CHECK_THROWS_WITH_AS(t.run->wait(), "stage 'counter': stopped: killed", sluice::stage_error);
  }
}

TEST_CASE("producer_consumer cancel modes propagate downstream with the same reason") {
  for (auto mode : {CancelMode::temporary, CancelMode::transient, CancelMode::permanent}) {
    Log log;
    sluice::Engine e;
    auto p = e.producer<Ev>("counter", Counter{&log, 0, -1, false}, demand());
    auto d = e.producer_consumer<Ev, Ev>("doubler", Doubler{&log}, demand());
    auto c = e.consumer<Ev>("forwarder", Forwarder{&log});
    e.subscribe(d, p, {.cancel = mode});
    e.subscribe(c, d);
    auto run = e.start(no_fail_fast());
    run.run_until_idle();
    run.send_info(p, StopWith{Reason::error("killed")});
    run.run_until_idle();
    CAPTURE(static_cast<int>(mode));
    CHECK(only(log, "producer_consumer_cancelled") ==
          Log{"producer_consumer_cancelled down error:killed"});
    if (mode == CancelMode::temporary) {
      // The doubler does not exit; it ends normally once it has no input left.
      CHECK(only(log, "consumed_cancelled") == Log{"consumed_cancelled down normal"});
    } else {
      CHECK(only(log, "consumed_cancelled") == Log{"consumed_cancelled down error:killed"});
    }
  }
}

TEST_CASE("a producer's end travels behind its last events") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, 5}, demand());
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log});
  e.subscribe(c, p, {.max_demand = 2, .min_demand = 0});
  e.start(manual()).wait();
  CHECK(only(log, "consumed") == Log{"consumed 0,1", "consumed 2,3", "consumed 4"});
  CHECK(log.back() == "consumed_cancelled down normal");
}

TEST_CASE("fan-in: a consumer finishes when all its producers have ended") {
  Log log;
  sluice::Engine e;
  auto a = e.producer<Ev>("a", Counter{&log, 0, 3}, demand());
  auto b = e.producer<Ev>("b", Counter{&log, 100, 105}, demand());
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log});
  e.subscribe(c, a);
  e.subscribe(c, b);
  auto run = e.start(manual());
  run.wait();
  CHECK(only(log, "consumed") == Log{"consumed 0..2", "consumed 100..104"});
  CHECK(only(log, "consumed_cancelled") ==
        Log{"consumed_cancelled down normal", "consumed_cancelled down normal"});
}

}  // TEST_SUITE("engine.genstage.cancel")
