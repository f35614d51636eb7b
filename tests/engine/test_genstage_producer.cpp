// Ports of GenStage's producer-side scenarios (test/gen_stage_test.exs: "producer buffer",
// "info", "demand modes"). A "subscribe later" in the Elixir tests is a consumer with manual
// demand here, asking when the test says so: subscriptions are declared before a run starts.
#include <doctest/doctest.h>

#include <support/genstage.hpp>

using namespace sluice_test;
using sluice::BufferKeep;
using sluice::DemandControl;
using sluice::DemandMode;

namespace {

/// Counter (emitting nothing on demand unless told) -> Forwarder with manual demand.
struct Fixture {
  Log log;
  Log warnings;
  sluice::Engine e;
  sluice::StageRef<void, Ev> p;
  sluice::StageRef<Ev, void> c;
  std::optional<sluice::Run> run;

  explicit Fixture(sluice::ProducerOptions popts, Counter counter = {},
                   sluice::SubscriptionOptions sopts = {}) {
    counter.log = &log;
    p = e.producer<Ev>("counter", counter, logging_demand(&log), popts);
    c = e.consumer<Ev>("forwarder", Forwarder{&log});
    sopts.demand = DemandControl::manual;
    e.subscribe(c, p, sopts);
    run.emplace(e.start(manual(&warnings)));
  }
  void queue(std::vector<Ev> evs) { run->send_info(p, Queue{std::move(evs)}); }
  void info(const std::string& s) { run->async_info(p, s); }  // GenStage sync_info/async_info
  void ask(std::int64_t n) { run->send_info(c, Ask{0, n}); }
  void settle() { run->run_until_idle(); }
  std::uint64_t buffered() { return run->metrics().stages[0].buffered; }
};

Counter silent() {
  return Counter{nullptr, 0, -1, false};
}

}  // namespace

TEST_SUITE("engine.genstage.producer") {

TEST_CASE("stores events when there is no demand") {
  // GenStage: queue [:a,:b,:c] and [:d,:e] with no consumer; subscribe (max 4, min 0):
  // [:a,:b,:c,:d] (all from the buffer, no handle_demand), [:e] (1 from the buffer, the other 3
  // go to handle_demand(3)), [0,1,2], [3,4,5,6].
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, 7}, demand());
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log});
  e.subscribe(c, p, {.max_demand = 4, .min_demand = 0});
  auto run = e.start(manual());
  run.send_info(p, Queue{atoms({"a", "b", "c"})});
  run.send_info(p, Queue{atoms({"d", "e"})});
  run.wait();
  CHECK(only(log, "consumed") ==
        Log{"consumed a,b,c,d", "consumed e", "consumed 0..2", "consumed 3..6"});
  CHECK(only(log, "demand") == Log{"demand 3", "demand 4"});
}

TEST_CASE("emits warning and keeps first when it exceeds configured size") {
  Fixture f({.buffer_size = 5, .buffer_keep = BufferKeep::first}, silent(), {.max_demand = 4});
  f.queue(atoms({"a", "b", "c", "d", "e"}));
  f.queue(atoms({"f", "g", "h"}));
  f.settle();
  CHECK(f.warnings == Log{"stage 'counter' has discarded 3 events from buffer"});
  CHECK(f.buffered() == 5);
  CHECK(f.run->metrics().stages[0].dropped == 3);
  f.ask(4);
  f.settle();
  f.ask(4);
  f.settle();
  CHECK(only(f.log, "consumed") == Log{"consumed a,b,c,d", "consumed e"});
  CHECK(f.buffered() == 0);
}

TEST_CASE("emits warning and keeps last when it exceeds configured size") {
  Fixture f({.buffer_size = 5}, silent(), {.max_demand = 4});
  f.queue(atoms({"a", "b", "c", "d", "e"}));
  f.queue(atoms({"f", "g", "h"}));
  f.settle();
  CHECK(f.warnings == Log{"stage 'counter' has discarded 3 events from buffer"});
  f.ask(4);
  f.settle();
  f.ask(4);
  f.settle();
  CHECK(only(f.log, "consumed") == Log{"consumed d,e,f,g", "consumed h"});
}

TEST_CASE("may have limit set to infinity") {
  Fixture f({.buffer_size = sluice::infinity}, silent(), {.max_demand = 4});
  f.queue(atoms({"a", "b", "c", "d", "e"}));
  f.queue(atoms({"f", "g", "h"}));
  f.settle();
  CHECK(f.warnings.empty());
  CHECK(f.buffered() == 8);  // "returns the correct buffer count when polled": 5, then 8
  f.ask(4);
  f.settle();
  f.ask(4);
  f.settle();
  CHECK(only(f.log, "consumed") == Log{"consumed a,b,c,d", "consumed e,f,g,h"});
  CHECK(f.buffered() == 0);
}

namespace {
/// GenStage's DiscardedBufferLogger: format_discarded logs its own line and returns whether the
/// default warning is printed too.
struct DiscardedBufferLogger {
  Log* log;
  bool log_discarded;
  void handle_demand(std::size_t, sluice::Context<Ev>&) {}
  void handle_info(std::any& m, sluice::Context<Ev>& c) {
    if (auto* q = std::any_cast<Queue>(&m)) c.emit_all(q->events);
  }
  bool handle_discarded(std::span<Ev> dropped) {
    log->push_back("DiscardedBufferLogger has discarded " + std::to_string(dropped.size()) +
                   " events from buffer: " + fmt(dropped));
    return log_discarded;
  }
};

void discarded_hook_case(bool log_discarded) {
  Log log, warnings;
  sluice::Engine e;
  auto p = e.producer<Ev>("logger", DiscardedBufferLogger{&log, log_discarded}, demand(),
                          {.buffer_size = 5, .buffer_keep = BufferKeep::first});
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log});
  e.subscribe(c, p, {.max_demand = 5, .demand = DemandControl::manual});
  auto run = e.start(manual(&warnings));
  run.send_info(p, Queue{atoms({"a", "b", "c", "d", "e", "f", "g", "h"})});
  run.run_until_idle();
  CHECK(only(log, "DiscardedBufferLogger") ==
        Log{"DiscardedBufferLogger has discarded 3 events from buffer: f,g,h"});
  if (log_discarded)
    CHECK(warnings == Log{"stage 'logger' has discarded 3 events from buffer"});
  else
    CHECK(warnings.empty());
  warnings.clear();
  run.send_info(c, Ask{0, 5});
  run.run_until_idle();
  CHECK(only(log, "consumed") == Log{"consumed a,b,c,d,e"});
  CHECK(warnings.empty());
}
}  // namespace

TEST_CASE("calls the discarded hook with the dropped events, it can suppress the default log") {
  discarded_hook_case(false);
}

TEST_CASE("the discarded hook can allow printing the default log") {
  discarded_hook_case(true);
}

TEST_CASE("delivers info to producer immediately when there is no buffer") {
  Fixture f({}, silent());
  f.info("sync");
  f.info("async");
  f.settle();
  CHECK(only(f.log, "info") == Log{"info sync", "info async"});
}

TEST_CASE("delivers info to producer eventually, after the buffered events") {
  // GenStage: "with infinity buffer size", "with one-item / mid / filled buffer" (size 3).
  struct Case {
    std::optional<std::int64_t> size;
    std::vector<Ev> queued;
  };
  for (const Case& k : {Case{sluice::infinity, atoms({"a", "b", "c"})}, Case{3, atoms({"a"})},
                        Case{3, atoms({"a", "b"})}, Case{3, atoms({"a", "b", "c"})}}) {
    Fixture f({.buffer_size = k.size}, silent());
    f.queue(k.queued);
    f.info("sync");
    f.settle();
    CHECK(only(f.log, "info").empty());
    f.ask(1000);
    f.settle();
    Log tail;  // the producer's own order: sends, then the info
    for (auto& l : f.log)
      if (l.rfind("sent", 0) == 0 || l.rfind("info", 0) == 0) tail.push_back(l);
    CHECK(tail == Log{"sent " + fmt(std::span<const Ev>(k.queued)), "info sync"});
  }
}

TEST_CASE("delivers info to producer eventually with moving buffer") {
  Fixture f({.buffer_size = 3}, silent());
  f.queue(atoms({"a", "b", "c"}));
  f.info("sync1");  // after :c
  f.settle();
  f.ask(2);
  f.settle();
  CHECK(only(f.log, "sent") == Log{"sent a,b"});
  CHECK(only(f.log, "info").empty());
  f.queue(atoms({"d", "e"}));  // buffer: c, d, e
  f.info("sync2");             // after :e
  f.settle();
  f.ask(1);
  f.settle();
  f.ask(2);
  f.settle();
  Log tail;
  for (auto& l : f.log)
    if (l.rfind("sent", 0) == 0 || l.rfind("info", 0) == 0) tail.push_back(l);
  CHECK(tail == Log{"sent a,b", "sent c", "info sync1", "sent d,e", "info sync2"});
}

TEST_CASE("delivers info to producer eventually when dropping buffer") {
  Fixture f({.buffer_size = 3}, silent());
  f.queue(atoms({"a", "b"}));
  f.info("sync");  // after :b
  f.settle();
  CHECK(only(f.log, "info").empty());
  f.queue(atoms({"c", "d", "e"}));  // :a and :b are dropped, which releases :sync
  f.settle();
  CHECK(only(f.log, "info") == Log{"info sync"});
  CHECK(f.warnings == Log{"stage 'counter' has discarded 2 events from buffer"});
}

TEST_CASE("delivers info to consumer immediately") {
  Fixture f({}, silent());
  f.run->async_info(f.c, std::string("sync"));
  f.run->async_info(f.c, std::string("async"));
  f.settle();
  CHECK(only(f.log, "info") == Log{"info sync", "info async"});
}

TEST_CASE("delivers info to producer_consumer after the events emitted before it") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, -1, false}, demand());
  auto d = e.producer_consumer<Ev, Ev>("doubler", Doubler{&log}, logging_demand(&log));
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log});
  e.subscribe(d, p);
  e.subscribe(c, d, {.demand = DemandControl::manual});
  auto run = e.start(manual());
  run.send_info(p, Queue{atoms({"x", "y"})});
  run.run_until_idle();  // the doubler handles them; its consumer has asked nothing: buffered
  run.async_info(d, std::string("sync"));
  run.run_until_idle();
  CHECK(only(log, "info").empty());
  run.send_info(c, Ask{0, 10});
  run.run_until_idle();
  Log tail;
  for (auto& l : log)
    if (l.rfind("sent", 0) == 0 || l.rfind("info", 0) == 0) tail.push_back(l);
  CHECK(tail == Log{"sent x,x,y,y", "info sync"});
}

TEST_CASE("demand can be set to accumulate on start and to forward later") {
  // GenStage "can be set to :accumulate on init" / "via API": nothing is asked of
  // handle_demand until forward; then [0,1,2,3].
  Fixture f({.demand_mode = DemandMode::accumulate}, Counter{}, {.max_demand = 4});
  f.ask(4);
  f.settle();
  CHECK(only(f.log, "demand").empty());
  CHECK(only(f.log, "consumed").empty());
  f.run->set_demand_mode(f.p, DemandMode::forward);
  f.settle();
  CHECK(only(f.log, "demand") == Log{"demand 4"});
  CHECK(only(f.log, "consumed") == Log{"consumed 0..3"});
}

TEST_CASE("demand set to forward before any ask behaves as forward") {
  Fixture f({.demand_mode = DemandMode::accumulate}, Counter{}, {.max_demand = 4});
  f.run->set_demand_mode(f.p, DemandMode::forward);
  f.settle();
  f.ask(4);
  f.settle();
  CHECK(only(f.log, "consumed") == Log{"consumed 0..3"});
}

TEST_CASE("accumulate is not reset when set again while accumulating") {
  Fixture f({.demand_mode = DemandMode::accumulate}, Counter{}, {.max_demand = 4});
  f.ask(4);
  f.settle();
  f.run->set_demand_mode(f.p, DemandMode::accumulate);
  f.settle();
  f.run->set_demand_mode(f.p, DemandMode::forward);
  f.settle();
  CHECK(only(f.log, "consumed") == Log{"consumed 0..3"});
}

TEST_CASE("does not combine demands when accumulating") {
  // DemandProducer (emits [d] for handle_demand(d)), accumulate; two consumers (max 2, min 1).
  // After forward: handle_demand(2) twice, each [2] going to one consumer; each consumer then
  // asks 1: [1].
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("producer", DemandProducer{&log}, demand(),
                          {.demand_mode = DemandMode::accumulate});
  auto c1 = e.consumer<Ev>("c1", Forwarder{&log, "c1"});
  auto c2 = e.consumer<Ev>("c2", Forwarder{&log, "c2"});
  e.subscribe(c1, p, {.max_demand = 2});
  e.subscribe(c2, p, {.max_demand = 2});
  auto run = e.start(manual());
  run.run_until_idle();
  CHECK(only(log, "demand").empty());
  run.set_demand_mode(p, DemandMode::forward);
  run.run_until_idle(6);
  auto demands = only(log, "demand");
  REQUIRE(demands.size() >= 2);
  CHECK(demands[0] == "demand 2");
  CHECK(demands[1] == "demand 2");
  CHECK(only(log, "c1").at(0) == "c1 2");
  CHECK(only(log, "c2").at(0) == "c2 2");
  CHECK(only(log, "c1").at(1) == "c1 1");
  run.cancel();
}

TEST_CASE("events emitted while accumulating are held, bounded by buffer_size, and replayed") {
  Fixture f({.buffer_size = 3, .demand_mode = DemandMode::accumulate}, silent(),
            {.max_demand = 10});
  f.queue(atoms({"a", "b"}));
  f.queue(atoms({"c", "d"}));  // held: a, b, c, d; the bound 3 drops :a (keep last)
  f.settle();
  CHECK(f.warnings == Log{"stage 'counter' has discarded 1 events from buffer"});
  CHECK(f.buffered() == 3);
  f.ask(10);
  f.settle();
  CHECK(only(f.log, "consumed").empty());  // held events wait for forward
  f.run->set_demand_mode(f.p, DemandMode::forward);
  f.settle();
  CHECK(only(f.log, "sent") == Log{"sent b", "sent c,d"});  // replayed batch by batch, in order
}

}  // TEST_SUITE("engine.genstage.producer")
