// Stall diagnosis (Run::diagnose): deliberately stalled graphs, one per reason, on manual runs
// (deterministic: the stall is the state run_until_idle leaves), and two on threads (a source
// waiting for pushes, a consumer blocked inside handle_events).
#include <atomic>
#include <chrono>
#include <thread>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

#include <support/genstage.hpp>

using namespace sluice_test;
using Kind = sluice::Finding::Kind;

namespace {

/// Polls `run.diagnose()` until `pred` holds for it (the threaded cases reach their stall in
/// microseconds; the bound only stops a broken build from hanging the suite).
template <class Pred>
sluice::Diagnosis diagnose_until(sluice::Run& run, Pred pred) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    auto d = run.diagnose();
    if (pred(d) || std::chrono::steady_clock::now() > give_up) return d;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace

TEST_SUITE("engine.diagnosis") {

TEST_CASE("zero demand: a manual consumer that stopped asking") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log}, demand());
  auto c = e.consumer<Ev>("sleeper", Sleeper{&log, 10});
  e.subscribe(c, p, {.max_demand = 10, .demand = sluice::DemandControl::manual});
  auto run = e.start(manual());
  run.run_until_idle();
  CHECK(only(log, "sleep") == Log{"sleep " + ints(0, 9)});
  CHECK(run.diagnose().to_string() ==
        "edge 'counter' -> 'sleeper': zero demand: 'sleeper' asks for nothing more (manual "
        "demand: it must call ask)\n");
  run.request_cancel();
  run.run_until_idle();
  CHECK(run.done());
  CHECK(run.diagnose().empty());  // finished stages wait on nothing
}

TEST_CASE("a full buffer behind a consumer that stopped asking") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, -1, false}, demand(), {.buffer_size = 20});
  auto c = e.consumer<Ev>("sleeper", Sleeper{&log, 10});
  e.subscribe(c, p, {.max_demand = 10, .demand = sluice::DemandControl::manual});
  auto run = e.start(manual());
  run.run_until_idle();
  std::vector<Ev> events;
  for (int i = 0; i < 100; ++i)
    events.push_back(std::to_string(i));
  run.send_info(p, Queue{events});
  run.run_until_idle();
  auto d = run.diagnose();
  CHECK(d.to_string() ==
        "stage 'counter' has a full buffer (20 of 20 events): what it emits beyond demand is "
        "dropped (buffer_keep)\n"
        "edge 'counter' -> 'sleeper': zero demand: 'sleeper' asks for nothing more (manual "
        "demand: it must call ask); 'counter' holds 20 events\n");
  REQUIRE(d.of(Kind::full_buffer).size() == 1);
  CHECK(d.of(Kind::full_buffer)[0].stage == "counter");
  CHECK(d.of(Kind::zero_demand)[0].consumer == "sleeper");
  run.request_cancel();
  run.run_until_idle();
}

TEST_CASE("accumulate mode holds demand until the mode is switched back") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, 30}, demand(),
                          {.demand_mode = sluice::DemandMode::accumulate});
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log});
  e.subscribe(c, p, {.max_demand = 10});
  auto run = e.start(manual());
  run.run_until_idle();
  CHECK(run.diagnose().to_string() ==
        "stage 'counter' is in accumulate mode: it holds 10 demand and 0 events until "
        "set_demand_mode(forward)\n"
        "edge 'counter' -> 'forwarder': 'forwarder' waits for 10 events it asked for\n");
  run.set_demand_mode(p, sluice::DemandMode::forward);
  run.run_until_idle();
  CHECK(run.done());
  CHECK(run.diagnose().empty());
}

TEST_CASE("a source with demand it cannot meet and a producer_consumer waiting for it") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("counter", Counter{&log, 0, -1, false}, demand());
  auto d2 = e.producer_consumer<Ev, Ev>("doubler", Doubler{&log}, demand());
  auto c = e.consumer<Ev>("forwarder", Forwarder{&log});
  e.subscribe(d2, p, {.max_demand = 10});
  e.subscribe(c, d2, {.max_demand = 4});
  auto run = e.start(manual());
  run.run_until_idle();
  auto d = run.diagnose();
  CHECK(d.to_string() ==
        "stage 'counter' has 10 demand it has not met: it waits for input from outside the graph "
        "(an external push, a message, a timer)\n"
        "stage 'doubler' has 4 demand from downstream and no input to meet it: it waits for its "
        "producers\n"
        "edge 'counter' -> 'doubler': 'doubler' waits for 10 events it asked for\n"
        "edge 'doubler' -> 'forwarder': 'forwarder' waits for 4 events it asked for\n");
  CHECK(d.of(Kind::awaits_input).size() == 1);
  CHECK(d.of(Kind::awaits_upstream).size() == 1);
  CHECK(d.of(Kind::outstanding).size() == 2);
  // Input arrives: the graph moves, and the consumer's demand is met.
  run.send_info(p, Queue{{"a", "b"}});
  run.run_until_idle();
  // The consumer handles the four events in chunks of max_demand - min_demand = 2, asking again
  // after each, so the producer_consumer waits again with the same demand; the source met 2 of
  // the 10 events asked (the producer_consumer asks again only after 5).
  CHECK(only(log, "consumed") == Log{"consumed a,a", "consumed b,b"});
  CHECK(run.diagnose().to_string() ==
        "stage 'counter' has 8 demand it has not met: it waits for input from outside the graph "
        "(an external push, a message, a timer)\n"
        "stage 'doubler' has 4 demand from downstream and no input to meet it: it waits for its "
        "producers\n"
        "edge 'counter' -> 'doubler': 'doubler' waits for 8 events it asked for\n"
        "edge 'doubler' -> 'forwarder': 'forwarder' waits for 4 events it asked for\n");
  run.request_cancel();
  run.run_until_idle();
}

TEST_CASE("a push source nobody pushes to, on threads") {
  sluice::Graph g;
  auto [in, source] = g.push_source<int>("input", 100);
  std::atomic<int> seen{0};
  source.for_each("sink", [&](int) { seen.fetch_add(1, std::memory_order_relaxed); },
                  {.max_demand = 50});
  auto run = g.run();
  auto d = diagnose_until(run, [](const sluice::Diagnosis& x) {
    return !x.of(Kind::awaits_input).empty() && !x.of(Kind::outstanding).empty();
  });
  REQUIRE(d.of(Kind::awaits_input).size() == 1);
  CHECK(d.of(Kind::awaits_input)[0].stage == "input");
  CHECK(d.of(Kind::awaits_input)[0].message ==
        "stage 'input' has 50 demand it has not met: it waits for input from outside the graph "
        "(an external push, a message, a timer)");
  CHECK(d.of(Kind::outstanding)[0].message ==
        "edge 'input' -> 'sink': 'sink' waits for 50 events it "
        "asked for");
  in.push(1);
  in.close();
  run.wait();
  CHECK(seen == 1);
  CHECK(run.diagnose().empty());
}

TEST_CASE("a consumer blocked inside handle_events, on threads") {
  sluice::Graph g;
  std::atomic<bool> release{false};
  std::atomic<bool> inside{false};
  g.source("numbers", sluice::from_range(std::vector<int>(100, 1)))
      .for_each("blocked",
                [&](int) {
                  inside.store(true);
                  while (!release.load())
                    std::this_thread::yield();
                },
                {.max_demand = 10});
  auto run = g.run();
  // consumer_busy holds as soon as events are on the edge; wait for the sink to be inside its
  // callback first, so the chunk it holds stays in flight until released.
  while (!inside.load())
    std::this_thread::yield();
  auto d = diagnose_until(
      run, [](const sluice::Diagnosis& x) { return !x.of(Kind::consumer_busy).empty(); });
  REQUIRE(d.of(Kind::consumer_busy).size() == 1);
  const auto busy = d.of(Kind::consumer_busy)[0];
  CHECK(busy.stage == "numbers");
  CHECK(busy.consumer == "blocked");
  CHECK(busy.message.starts_with("edge 'numbers' -> 'blocked': 'blocked' has "));
  CHECK(busy.message.ends_with(" events it has not handled (slow, or blocked in a callback)"));
  CHECK(inside.load());
  release.store(true);
  run.wait();
  CHECK(run.diagnose().empty());
}

}  // TEST_SUITE("engine.diagnosis")
