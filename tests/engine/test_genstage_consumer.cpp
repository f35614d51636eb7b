// Ports of GenStage's consumer-side scenarios (test/gen_stage_test.exs: "consumer demand",
// "manual demand", "producer_consumer"), on deterministic manual runs. Each expectation is the
// exact sequence of batches GenStage's tests assert, plus the producer's handle_demand calls.
#include <doctest/doctest.h>

#include <support/genstage.hpp>

using namespace sluice_test;
using sluice::SubscriptionOptions;

TEST_SUITE("engine.genstage.consumer") {

TEST_CASE("with default max and min demand: 0..499 then 500..999") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, 2000}, demand());
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log});
  e.subscribe(c, p);
  auto run = e.start(manual());
  run.wait();
  CHECK(only(log, "consumed") == Log{"consumed " + ints(0, 499), "consumed " + ints(500, 999),
                                     "consumed " + ints(1000, 1499),
                                     "consumed " + ints(1500, 1999)});
  // Each ask reaches handle_demand on its own: 1000 on subscribe, then 500 after each chunk.
  CHECK(only(log, "demand") == Log{"demand 1000", "demand 500", "demand 500"});
}

TEST_CASE("with 80% min demand: batches of 20") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, 1100}, demand());
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log});
  e.subscribe(c, p, {.max_demand = 100, .min_demand = 80});
  e.start(manual()).wait();
  auto consumed = only(log, "consumed");
  REQUIRE(consumed.size() == 55);
  CHECK(consumed[0] == "consumed " + ints(0, 19));
  CHECK(consumed[1] == "consumed " + ints(20, 39));
  CHECK(consumed[50] == "consumed " + ints(1000, 1019));
}

TEST_CASE("with 20% min demand: 0..79, 80..99, 100..179, 180..259, 260..279") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, 280}, demand());
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log});
  e.subscribe(c, p, {.max_demand = 100, .min_demand = 20});
  e.start(manual()).wait();
  CHECK(only(log, "consumed") == Log{"consumed " + ints(0, 79), "consumed " + ints(80, 99),
                                     "consumed " + ints(100, 179), "consumed " + ints(180, 259),
                                     "consumed " + ints(260, 279)});
  CHECK(only(log, "demand") == Log{"demand 100", "demand 80", "demand 100"});
  // (GenStage: 80 after 0..79, none after 80..99, 100 after 100..179.)
}

TEST_CASE("with 1 max and 0 min demand: one event at a time") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, 3}, demand());
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log});
  e.subscribe(c, p, {.max_demand = 1, .min_demand = 0});
  e.start(manual()).wait();
  CHECK(only(log, "consumed") == Log{"consumed 0", "consumed 1", "consumed 2"});
  CHECK(only(log, "demand") == Log{"demand 1", "demand 1", "demand 1"});
}

TEST_CASE("manual demand: each ask of 50 arrives as one batch") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, -1}, demand());
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log, "consumed", 50});
  e.subscribe(c, p, {.demand = sluice::DemandControl::manual});
  auto run = e.start(manual());
  run.run_until_idle();
  CHECK(only(log, "consumed") == Log{"consumed " + ints(0, 49)});
  run.send_info(c, Ask{0, 50});
  run.run_until_idle();
  CHECK(only(log, "consumed") == Log{"consumed " + ints(0, 49), "consumed " + ints(50, 99)});
  CHECK(only(log, "demand") == Log{"demand 50", "demand 50"});
  CHECK_FALSE(run.done());
}

/// A Forwarder that asks by hand whatever its subscription says (GenStage's handle_subscribe
/// returning {:manual, state}).
struct ManualForwarder : Forwarder {
  static constexpr sluice::DemandControl demand = sluice::DemandControl::manual;
};

TEST_CASE("a handler that says demand = manual asks by hand on every subscription") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, -1}, demand());
  auto c = e.consumer<Ev>("forwarder", ManualForwarder{{&log, "consumed", 50}});
  e.subscribe(c, p);  // automatic by default: the handler's word wins
  auto run = e.start(manual());
  run.run_until_idle();
  CHECK(only(log, "consumed") == Log{"consumed " + ints(0, 49)});
  CHECK(only(log, "demand") == Log{"demand 50"});
  const auto m = run.metrics();
  REQUIRE(m.edges.size() == 1);
  CHECK(m.edges[0].manual_demand);
  run.send_info(c, Ask{0, 50});
  run.run_until_idle();
  CHECK(only(log, "consumed") == Log{"consumed " + ints(0, 49), "consumed " + ints(50, 99)});
  static_assert(sluice::handler::AsksByHand<ManualForwarder>);
  static_assert(!sluice::handler::AsksByHand<Forwarder>);
}

TEST_CASE("manual demand beyond max_demand is a stage error naming the stage") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, -1}, demand());
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log, "consumed", 5});
  e.subscribe(c, p, {.max_demand = 10, .demand = sluice::DemandControl::manual});
  auto run = e.start(manual());
  run.run_until_idle();
  run.send_info(c, Ask{0, 20});
  CHECK_THROWS_WITH_AS(run.wait(),
                       "stage 'forwarder': manual ask of 20 on subscription to 'counter' would "
                       "exceed max_demand 10 (outstanding 0)",
                       sluice::stage_error);
}

TEST_CASE("producer_consumer with 80% min demand") {
  // Counter -> Doubler (max 100 / min 80) -> Forwarder (max 100 / min 50). GenStage asserts:
  // producer_consumed 0..19; consumed dbl(0..19); consumed dbl(20..39); producer_consumed
  // 100..119; consumed dbl(120..124); consumed dbl(125..139).
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, 400}, demand());
  auto d = e.producer_consumer<Ev, Ev>("doubler", Doubler{&log}, demand());
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log});
  e.subscribe(d, p, {.max_demand = 100, .min_demand = 80});
  e.subscribe(c, d, {.max_demand = 100, .min_demand = 50});
  e.start(manual()).wait();
  auto pc = only(log, "producer_consumed");
  auto consumed = only(log, "consumed");
  REQUIRE(pc.size() >= 6);
  CHECK(pc[0] == "producer_consumed " + ints(0, 19));
  CHECK(pc[5] == "producer_consumed " + ints(100, 119));
  REQUIRE(consumed.size() >= 2);
  CHECK(consumed[0] == "consumed " + dbl(0, 19));
  CHECK(consumed[1] == "consumed " + dbl(20, 39));
  auto has = [&](const std::string& line) {
    return std::find(consumed.begin(), consumed.end(), line) != consumed.end();
  };
  CHECK(has("consumed " + dbl(120, 124)));
  CHECK(has("consumed " + dbl(125, 139)));
  // Every event arrives, doubled, in order.
  std::string all;
  for (auto& l : consumed)
    all += (all.empty() ? "" : ",") + l.substr(9);
  CHECK(all == dbl(0, 399));
}

TEST_CASE("producer_consumer with 20% min demand") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, 200}, demand());
  auto d = e.producer_consumer<Ev, Ev>("doubler", Doubler{&log}, demand());
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log});
  e.subscribe(d, p, {.max_demand = 100, .min_demand = 20});
  e.subscribe(c, d, {.max_demand = 100, .min_demand = 50});
  e.start(manual()).wait();
  auto pc = only(log, "producer_consumed");
  auto consumed = only(log, "consumed");
  REQUIRE(pc.size() >= 3);
  CHECK(pc[0] == "producer_consumed " + ints(0, 79));
  CHECK(pc[2] == "producer_consumed " + ints(100, 179));
  REQUIRE(consumed.size() >= 3);
  CHECK(consumed[0] == "consumed " + dbl(0, 24));
  CHECK(consumed[1] == "consumed " + dbl(25, 49));
  CHECK(consumed[2] == "consumed " + dbl(50, 74));
}

TEST_CASE("producer_consumer stops asking when its consumer stops asking") {
  // Postponer (max 10 / min 8: chunks of 2) -> Sleeper (asks 10 once, never again).
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, -1}, demand());
  auto pp = e.producer_consumer<Ev, Ev>("postponer", Postponer{&log}, demand());
  auto s = e.consumer<Ev>("sleeper", Sleeper{&log});
  e.subscribe(pp, p, {.max_demand = 10, .min_demand = 8});
  e.subscribe(s, pp, {.max_demand = 10, .demand = sluice::DemandControl::manual});
  auto run = e.start(manual());
  run.run_until_idle();
  CHECK(only(log, "postponed") ==
        Log{"postponed 0,1", "postponed 2,3", "postponed 4,5", "postponed 6,7", "postponed 8,9"});
  CHECK(only(log, "sleep").front() == "sleep 0,1");
  CHECK_FALSE(run.done());  // idle, waiting for demand that never comes
  // The producer was asked for 10 at first, then 2 per handled chunk, and no more once the
  // postponer's downstream demand was used up: what sits in its input stays unhandled.
  auto m = run.metrics();
  CHECK(m.stages[1].events_in == 10);
}

TEST_CASE("keeps emitting events even when discarded") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, 1100}, demand());
  auto d = e.producer_consumer<Ev, Ev>("discarder", Discarder{&log}, demand());
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log});
  e.subscribe(d, p, {.max_demand = 100, .min_demand = 80});
  e.subscribe(c, d, {.max_demand = 100, .min_demand = 50});
  e.start(manual()).wait();
  auto dis = only(log, "discarded");
  REQUIRE(dis.size() == 55);
  CHECK(dis[0] == "discarded " + ints(0, 19));
  CHECK(dis[5] == "discarded " + ints(100, 119));
  CHECK(dis[50] == "discarded " + ints(1000, 1019));
  CHECK(only(log, "consumed").empty());
}

}  // TEST_SUITE("engine.genstage.consumer")
