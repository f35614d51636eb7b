// Bad input is rejected before anything runs, with an error naming the stage and the option
// (GENSTAGE.md 1.1 / 1.3 messages where GenStage has one).
#include <doctest/doctest.h>

#include <support/genstage.hpp>

using namespace sluice_test;
using sluice::option_error;

namespace {
struct Fixture {
  Log log;
  sluice::Engine e;
  sluice::StageRef<void, Ev> p = e.producer<Ev>("p", Counter{&log}, demand());
  sluice::StageRef<Ev, void> c = e.consumer<Ev>("c", Forwarder{&log});
};
}  // namespace

TEST_SUITE("engine.options") {

TEST_CASE("max_demand must be at least 1") {
  Fixture f;
  CHECK_THROWS_WITH_AS(
      f.e.subscribe(f.c, f.p, {.max_demand = 0}),
      "stage 'c' subscribing to 'p': option max_demand must be equal to or greater than 1, got: 0",
      option_error);
}

TEST_CASE("min_demand must be below max_demand") {
  Fixture f;
  CHECK_THROWS_WITH_AS(f.e.subscribe(f.c, f.p, {.min_demand = 2000}),
                       "stage 'c' subscribing to 'p': option min_demand must be equal to or less "
                       "than 999, got: 2000",
                       option_error);
  CHECK_THROWS_WITH_AS(
      f.e.subscribe(f.c, f.p, {.max_demand = 10, .min_demand = 10}),
      "stage 'c' subscribing to 'p': option min_demand must be equal to or less than 9, got: 10",
      option_error);
  CHECK_THROWS_WITH_AS(
      f.e.subscribe(f.c, f.p, {.min_demand = -1}),
      "stage 'c' subscribing to 'p': option min_demand must be equal to or greater than 0, got: -1",
      option_error);
}

TEST_CASE("max_demand has an upper bound (the edge is sized by it)") {
  Fixture f;
  CHECK_THROWS_WITH_AS(f.e.subscribe(f.c, f.p, {.max_demand = std::int64_t{1} << 31}),
                       "stage 'c' subscribing to 'p': option max_demand must be at most 2^30, "
                       "got: 2147483648",
                       option_error);
}

TEST_CASE("buffer_size must be positive") {
  Log log;
  sluice::Engine e;
  CHECK_THROWS_WITH_AS(e.producer<Ev>("p0", Counter{&log}, demand(), {.buffer_size = 0}),
                       "stage 'p0': option buffer_size must be greater than 0, got: 0",
                       option_error);
  CHECK_THROWS_WITH_AS(e.producer<Ev>("p1", Counter{&log}, demand(), {.buffer_size = -1}),
                       "stage 'p1': option buffer_size must be greater than 0, got: -1",
                       option_error);
  CHECK_THROWS_WITH_AS(
      (e.producer_consumer<Ev, Ev>("pc", Doubler{&log}, demand(), {.buffer_size = -5})),
      "stage 'pc': option buffer_size must be greater than 0, got: -5", option_error);
}

TEST_CASE("demand mode is a producer option only") {
  Log log;
  sluice::Engine e;
  CHECK_THROWS_WITH_AS(
      (e.producer_consumer<Ev, Ev>("pc", Doubler{&log}, demand(),
                                   {.demand_mode = sluice::DemandMode::accumulate})),
      "stage 'pc': option demand_mode: only producers have a demand mode", option_error);
}

TEST_CASE("names and instances") {
  Log log;
  sluice::Engine e;
  CHECK_THROWS_WITH_AS(e.producer<Ev>("", Counter{&log}, demand()),
                       "a stage needs a non-empty name", option_error);
  e.producer<Ev>("p", Counter{&log}, demand());
  CHECK_THROWS_WITH_AS(e.consumer<Ev>("p", Forwarder{&log}), "stage 'p': name already used",
                       option_error);
  CHECK_THROWS_WITH_AS(e.consumer<Ev>("c", Forwarder{&log}, 0),
                       "stage 'c': option instances must be at least 1, got: 0", option_error);
}

TEST_CASE("a dispatcher is required") {
  Log log;
  sluice::Engine e;
  CHECK_THROWS_WITH_AS(e.producer<Ev>("p", Counter{&log}, sluice::DispatcherFactory<Ev>{}),
                       "stage 'p': option dispatcher: none given", option_error);
  CHECK_THROWS_WITH_AS(
      e.producer<Ev>("q", Counter{&log}, [] { return std::unique_ptr<sluice::Dispatcher<Ev>>(); }),
      "stage 'q': the dispatcher factory returned null", option_error);
}

TEST_CASE("subscribing twice to the same producer") {
  Fixture f;
  f.e.subscribe(f.c, f.p);
  CHECK_THROWS_WITH_AS(f.e.subscribe(f.c, f.p), "stage 'c': already subscribed to 'p'",
                       option_error);
}

TEST_CASE("a topology that cannot run: every problem at once") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("lonely_producer", Counter{&log}, demand());
  auto c = e.consumer<Ev>("lonely_consumer", Forwarder{&log});
  auto a = e.producer_consumer<Ev, Ev>("a", Doubler{&log}, demand());
  auto b = e.producer_consumer<Ev, Ev>("b", Doubler{&log}, demand());
  e.subscribe(a, b);
  e.subscribe(b, a);
  (void)p;
  (void)c;
  CHECK_THROWS_WITH_AS(e.start(manual()),
                       "stage 'lonely_producer': a producer with no subscriber (make it dynamic to "
                       "attach consumers while it runs)\n"
                       "stage 'lonely_consumer': a consumer with no subscription\n"
                       "the subscriptions form a cycle through stage 'a'",
                       option_error);
}

TEST_CASE("run options") {
  Fixture f;
  f.e.subscribe(f.c, f.p);
  sluice::RunOptions o;
  o.quantum = 0;
  o.concurrency = -1;
  CHECK_THROWS_WITH_AS(f.e.start(o),
                       "run option quantum must be at least 1, got: 0\n"
                       "run option concurrency must be 0 (hardware) or more, got: -1",
                       option_error);
}

TEST_CASE("a compiled engine can be started more than once, each run with fresh handlers") {
  Log log;
  sluice::Engine e;
  auto p = e.producer<Ev>("p", Counter{&log, 0, 3}, demand());
  auto c = e.consumer<Ev>("c", Forwarder{&log});
  e.subscribe(c, p);
  e.start(manual()).wait();
  e.start(manual()).wait();
  CHECK(only(log, "consumed") == Log{"consumed 0..2", "consumed 0..2"});
}

}  // TEST_SUITE("engine.options")
