// Bad input through the builder (and the engine calls it makes), each with its exact message:
// the rules test_builder_errors.cpp, test_builder.cpp, test_dynamic.cpp and
// engine/test_options.cpp do not already cover at this level.
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

#include <support/stages.hpp>

namespace {

auto numbers() {
  return sluice::from_range(std::vector<int>{1, 2, 3});
}
auto nothing() {
  return sluice::from_generator([] { return std::optional<int>{}; });
}
int same(int x) {
  return x;
}
void drop(int) {}

using Idle = sluice_test::IdleSource<int>;
using Sink = sluice_test::NullSink<int>;

}  // namespace

TEST_SUITE("graph.bad_input") {

TEST_CASE("stage names must be non-empty and unique") {
  sluice::Graph g;
  auto src = g.source("numbers", numbers());
  src.map("", same).for_each("sink", drop);
  src.for_each("numbers", drop);
  CHECK_THROWS_WITH_AS(g.compile(),
                       "a stage needs a non-empty name\n"
                       "stage 'numbers': name already used",
                       sluice::option_error);
}

TEST_CASE("zero instances is refused for every kind of stage") {
  sluice::Graph g;
  std::vector<int> out;
  g.source("gen", nothing(), {.instances = 0})
      .map("m", same, {.instances = 0})
      .for_each("sink", drop, {.instances = 0});
  g.source("range", numbers(), {.instances = 0}).collect("out", out, {.instances = 0});
  CHECK_THROWS_WITH_AS(
      g.compile(),
      "stage 'gen': option instances must be at least 1, got: 0\n"
      "stage 'm': option instances must be at least 1, got: 0\n"
      "stage 'sink': option instances must be at least 1, got: 0\n"
      "stage 'range': option instances must be 1 for from_range (each instance would emit "
      "the whole range), got: 0\n"
      "stage 'range': option instances must be at least 1, got: 0\n"
      "stage 'out': option instances must be 1 for collect (one container), got: 0\n"
      "stage 'out': option instances must be at least 1, got: 0",
      sluice::option_error);
}

TEST_CASE("push source: a negative capacity and zero instances") {
  sluice::Graph g;
  auto [in, source] = g.push_source<int>("in", -5, {.instances = 0});
  source.for_each("sink", drop);
  CHECK_THROWS_WITH_AS(g.compile(),
                       "stage 'in': option capacity must be at least 1, got: -5\n"
                       "stage 'in': option instances must be 1 for a push source, got: 0\n"
                       "stage 'in': option instances must be at least 1, got: 0",
                       sluice::option_error);
}

TEST_CASE("demand bounds of a chained stage's subscription") {
  sluice::Graph g;
  auto src = g.source("numbers", numbers());
  src.for_each("huge", drop, {.max_demand = std::int64_t{1} << 31});
  src.for_each("equal", drop, {.max_demand = 10, .min_demand = 10});
  src.for_each("negative", drop, {.min_demand = -1});
  // At the bounds: accepted.
  src.for_each("largest", drop,
               {.max_demand = std::int64_t{1} << 30, .min_demand = (std::int64_t{1} << 30) - 1});
  src.for_each("smallest", drop, {.max_demand = 1, .min_demand = 0});
  CHECK_THROWS_WITH_AS(g.compile(),
                       "stage 'huge' subscribing to 'numbers': option max_demand must be at most "
                       "2^30, got: 2147483648\n"
                       "stage 'equal' subscribing to 'numbers': option min_demand must be equal "
                       "to or less than 9, got: 10\n"
                       "stage 'negative' subscribing to 'numbers': option min_demand must be "
                       "equal to or greater than 0, got: -1",
                       sluice::option_error);
}

TEST_CASE("buffer_size must be positive for sources and producer_consumers") {
  sluice::Graph g;
  g.source("numbers", numbers(), {.buffer_size = 0})
      .map("m", same, {.buffer_size = -1})
      .for_each("sink", drop);
  CHECK_THROWS_WITH_AS(g.compile(),
                       "stage 'numbers': option buffer_size must be greater than 0, got: 0\n"
                       "stage 'm': option buffer_size must be greater than 0, got: -1",
                       sluice::option_error);
}

TEST_CASE("a producer_consumer nobody consumes is refused unless it is dynamic") {
  sluice::Graph g;
  auto src = g.source("numbers", numbers());
  src.map("dead_end", same);
  src.map("open_end", same, {.dynamic = true});
  CHECK_THROWS_WITH_AS(g.compile(),
                       "stage 'dead_end': a producer with no subscriber (make it dynamic to "
                       "attach consumers while it runs)",
                       sluice::option_error);
  sluice::Graph alone;
  alone.source("ticks", nothing(), {.dynamic = true});
  CHECK_NOTHROW(alone.compile());
}

TEST_CASE("partition and selector options must fit the producer's dispatcher") {
  sluice::Graph g;
  auto b = g.source("b", numbers()).broadcast();
  b.for_each("parted", drop, {.partition = 0});
  b.for_each("wrong_selector", drop,
             {.selector = sluice::selector<long>([](const long&) { return true; })});
  auto d = g.source("d", numbers());
  d.for_each("parted_demand", drop, {.partition = 1});
  auto p = g.source("p", numbers()).partition(2);
  p.for_each("p0", drop, {.partition = 0});
  p.for_each("p_minus", drop, {.partition = -1});
  p.for_each("p_named", drop, {.partition = "odd"});
  p.for_each("p1", drop, {.partition = 1});
  CHECK_THROWS_WITH_AS(
      g.compile(),
      "stage 'parted' subscribing to 'b': option partition: the broadcast dispatcher has no "
      "partitions\n"
      "stage 'wrong_selector' subscribing to 'b': option selector must be made with "
      "sluice::selector<Event>(predicate) for this producer's event type\n"
      "stage 'parted_demand' subscribing to 'd': option partition: the demand dispatcher has no "
      "partitions\n"
      "stage 'p_minus' subscribing to 'p': option partition must be one of 0, 1, got: -1\n"
      "stage 'p_named' subscribing to 'p': option partition must be one of 0, 1, got: 'odd'",
      sluice::option_error);
}

TEST_CASE("a partition taken twice and partitions left without a consumer") {
  sluice::Graph g;
  auto p = g.source("p", numbers()).partition(3);
  p.for_each("a", drop, {.partition = 0});
  p.for_each("b", drop, {.partition = 0});
  CHECK_THROWS_WITH_AS(
      g.compile(),
      "stage 'p': consumer 'b': option partition 0 is already taken by 'a'\n"
      "stage 'p': partition 1 has no subscriber (its events would only be dropped)\n"
      "stage 'p': partition 2 has no subscriber (its events would only be dropped)",
      sluice::option_error);
  // A dynamic producer's free partitions wait for consumers that attach later.
  sluice::Graph open;
  open.source("p", nothing(), {.dynamic = true}).partition(3).for_each("a", drop);
  CHECK_NOTHROW(open.compile());
}

// The client's report had two problems on one line; every path that reports several problems
// puts one on each line, each naming its stage.
TEST_CASE("several problems are reported one per line by compile() and by Engine::start()") {
  const std::string expected =
      "stage 'p': partition 4 has no subscriber (its events would only be dropped)\n"
      "stage 'p': partition 5 has no subscriber (its events would only be dropped)";
  sluice::Graph g;
  g.source("p", numbers()).partition(6).for_each("c", drop, {.instances = 4});
  CHECK_THROWS_WITH_AS(g.compile(), expected.c_str(), sluice::option_error);
  CHECK_THROWS_WITH_AS(g.run(), expected.c_str(), sluice::option_error);
  sluice::Engine e;
  auto p = e.producer<int>("p", Idle{}, sluice::partition_dispatcher<int>(6));
  auto c = e.consumer<int>("c", Sink{}, 4);
  e.subscribe(c, p);
  CHECK_THROWS_WITH_AS(e.start(), expected.c_str(), sluice::option_error);
}

TEST_CASE("subscribing twice to the same producer through the builder") {
  sluice::Graph g;
  auto src = g.source("numbers", numbers());
  auto m = src.map("m", same);
  m.subscribe(src);
  m.for_each("sink", drop);
  CHECK_THROWS_WITH_AS(g.compile(), "stage 'm': already subscribed to 'numbers'",
                       sluice::option_error);
}

TEST_CASE("a stage subscribed to itself is a cycle") {
  sluice::Graph g;
  auto m = g.source("numbers", numbers()).map("m", same);
  m.subscribe(m);
  m.for_each("sink", drop);
  CHECK_THROWS_WITH_AS(g.compile(), "the subscriptions form a cycle through stage 'm'",
                       sluice::option_error);
}

TEST_CASE("run options through Graph::run") {
  sluice::Graph g;
  g.source("numbers", numbers()).for_each("sink", drop);
  CHECK_THROWS_WITH_AS(g.run({.concurrency = -2, .quantum = 0}),
                       "run option quantum must be at least 1, got: 0\n"
                       "run option concurrency must be 0 (hardware) or more, got: -2",
                       sluice::option_error);
}

TEST_CASE("attach checks its subscription against the running producer's dispatcher") {
  sluice::Graph g;
  auto [in, src] = g.push_source<int>("in", 16, {.dynamic = true});
  src.partition(2);
  auto run = g.run();
  CHECK_THROWS_WITH_AS(run.attach(src, "x", drop, {.partition = 5}),
                       "stage 'x' subscribing to 'in': option partition must be one of 0, 1, "
                       "got: 5",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(run.attach(src, "x", drop, {}, 3),
                       "stage 'x#2' subscribing to 'in': option partition is required when "
                       "subscribing to a partition dispatcher (it has 2 partitions: 0, 1)",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(run.attach(src, "x", drop, {.min_demand = -1}),
                       "stage 'x' subscribing to 'in': option min_demand must be equal to or "
                       "greater than 0, got: -1",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(run.attach(src, "x", drop, {.max_demand = std::int64_t{1} << 31}),
                       "stage 'x' subscribing to 'in': option max_demand must be at most 2^30, "
                       "got: 2147483648",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(
      run.attach(src, "x", drop,
                 {.selector = sluice::selector<long>([](const long&) { return true; })}),
      "stage 'x' subscribing to 'in': option selector must be made with "
      "sluice::selector<Event>(predicate) for this producer's event type",
      sluice::option_error);
  CHECK_THROWS_WITH_AS(sluice::attach_stream(run, src, "reader", -1),
                       "stage 'reader': option capacity must be at least 1, got: -1",
                       sluice::option_error);
  CHECK(run.metrics().stages.size() == 1);  // nothing was added by the refused attaches
  run.cancel();
}

TEST_CASE("attach to a stage of another graph") {
  sluice::Graph g;
  auto [in, src] = g.push_source<int>("in", 16, {.dynamic = true});
  sluice::Graph other;
  auto words = other.source("words", sluice::from_range(std::vector<std::string>{"a"}));
  auto last = words.map("length", [](const std::string& s) { return static_cast<int>(s.size()); })
                  .map("again", same);
  auto run = g.run();
  // Before owner tags, `last` (id 2) was an unknown id here and `words` (id 0) silently meant
  // 'in'; a stage of another graph with an id and type that fit would have been attached to.
  CHECK_THROWS_WITH_AS(run.attach(last, "x", drop),
                       "attach: the stage belongs to another graph (or engine) than this run's",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(run.attach(words, "x", [](const std::string&) {}),
                       "attach: the stage belongs to another graph (or engine) than this run's",
                       sluice::option_error);
  CHECK(run.metrics().stages.size() == 1);
  run.cancel();
}

TEST_CASE("a stage of another graph is refused by every Run call that names a stage") {
  // Two graphs of the same shape: every id and event type fits, only the owner tells them apart.
  auto build = [](sluice::Graph& g) {
    auto src = g.source("in", sluice::from_generator([] { return std::optional<int>(1); }),
                        {.dynamic = true});
    auto mid = src.map("mid", same, {.fuse = false});  // attached to below: a cell of its own
    mid.for_each("out", drop);
    return std::make_pair(src, mid);
  };
  sluice::Graph g, other;
  auto [src, mid] = build(g);
  auto [other_src, other_mid] = build(other);
  auto run = g.run();
  const std::string refused = ": the stage belongs to another graph (or engine) than this run's";
  CHECK_THROWS_WITH_AS(run.send_info(other_mid, 1), ("send_info" + refused).c_str(),
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(run.async_info(other_mid, 1), ("async_info" + refused).c_str(),
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(run.set_demand_mode(other_src, sluice::DemandMode::accumulate),
                       ("set_demand_mode" + refused).c_str(), sluice::option_error);
  CHECK_THROWS_WITH_AS(run.detach(other_mid), ("detach" + refused).c_str(), sluice::option_error);
  CHECK_THROWS_WITH_AS(run.attach(other_src, "x", drop), ("attach" + refused).c_str(),
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(sluice::attach_stream(run, other_mid, "reader", 4),
                       ("attach" + refused).c_str(), sluice::option_error);
  // The graph's own stages are accepted, by a second run of the same graph too.
  run.attach(mid, "first", drop);
  auto second = g.run();
  second.attach(src, "late", drop);
  second.cancel();
  run.cancel();
}

TEST_CASE("attach refuses what the builder refuses in a name") {
  sluice::Graph g;
  auto [in, src] = g.push_source<int>("in", 16, {.dynamic = true});
  auto run = g.run();
  CHECK_THROWS_WITH_AS(run.attach(src, "two\nlines", drop),
                       "stage 'two\\nlines': option name must not contain control characters "
                       "(shown escaped)",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(run.attach(src, "", drop), "a stage needs a non-empty name",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(run.attach(src, "in", drop), "stage 'in': name already used",
                       sluice::option_error);
  CHECK(run.metrics().stages.size() == 1);
  run.cancel();
}

TEST_CASE("an engine refuses a StageRef of another engine") {
  sluice::Engine e, other;
  auto p = e.producer<int>("p", Idle{}, sluice::demand_dispatcher<int>());
  auto foreign = other.consumer<int>("c", Sink{});
  CHECK_THROWS_WITH_AS(e.subscribe(foreign, p), "subscribe: a StageRef of another engine",
                       sluice::option_error);
  auto c = e.consumer<int>("c", Sink{});
  e.subscribe(c, p);
  auto run = e.start({.manual = true});
  CHECK_THROWS_WITH_AS(run.detach(foreign),
                       "detach: the stage belongs to another graph (or engine) than this run's",
                       sluice::option_error);
  run.cancel();
}

TEST_CASE("subscribe_by_id checks at run time what subscribe checks at compile time") {
  sluice::Engine e;
  auto p = e.producer<int>("p", Idle{}, sluice::demand_dispatcher<int>());
  auto c = e.consumer<int>("c", Sink{});
  auto c2 = e.consumer<int>("c2", Sink{});
  CHECK_THROWS_WITH_AS(e.subscribe_by_id<int>(p.id(), c.id(), {}),
                       "stage 'p' is a producer: it cannot subscribe to 'c'", sluice::option_error);
  CHECK_THROWS_WITH_AS(e.subscribe_by_id<int>(c.id(), c2.id(), {}),
                       "stage 'c' cannot subscribe to 'c2', a consumer", sluice::option_error);
  CHECK_THROWS_WITH_AS(e.subscribe_by_id<long>(c.id(), p.id(), {}),
                       "stage 'c' subscribing to 'p': event types differ", sluice::option_error);
  CHECK_THROWS_WITH_AS(e.subscribe_by_id<int>(c.id(), 42, {}),
                       "subscribe: unknown stage (a StageRef from another engine?)",
                       sluice::option_error);
}

TEST_CASE("an option_error from a dispatcher factory is reported with the stage's name") {
  sluice::Engine e;
  CHECK_THROWS_WITH_AS(e.producer<int>("q", Idle{},
                                       []() -> std::unique_ptr<sluice::Dispatcher<int>> {
                                         throw sluice::option_error("option custom: refused");
                                       }),
                       "stage 'q': option custom: refused", sluice::option_error);
  // The refused stage left no trace: the engine goes on with the stages declared after it.
  std::atomic<std::int64_t> sum{0};
  auto p = e.producer<int>("q", sluice_test::CountingSource<int>{0, 3},
                           sluice::demand_dispatcher<int>());
  auto c = e.consumer<int>("c", sluice_test::SummingSink<int>{&sum});
  e.subscribe(c, p);
  e.start().wait();
  CHECK(sum == 0 + 1 + 2);
}

TEST_CASE("partition dispatcher options: counts and lists") {
  CHECK_THROWS_WITH_AS((sluice::PartitionDispatcher<int>(-2)),
                       "option partitions must name at least 1 partition, got: -2",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(sluice::partition_dispatcher<int>(2, {.queue_size = -1}),
                       "option queue_size must be greater than 0, got: -1", sluice::option_error);
  CHECK_THROWS_WITH_AS(sluice::partition_dispatcher<int>(std::vector<sluice::Partition>{0, 1, 0}),
                       "option partitions: partition 0 is listed twice", sluice::option_error);
  CHECK_THROWS_WITH_AS(
      sluice::partition_dispatcher<int>(std::vector<sluice::Partition>{"a", "b", "a"},
                                        [](int&) { return std::string("a"); }),
      "option partitions: partition 'a' is listed twice", sluice::option_error);
}

TEST_CASE("sizes beyond the library's bounds are refused before anything is allocated") {
  // Before the bounds: 2^40 partitions ran out of memory, concurrency 2^20 ended in
  // std::terminate from pthread_create.
  CHECK_THROWS_WITH_AS((sluice::PartitionDispatcher<int>(std::int64_t{1} << 40)),
                       "option partitions must name at most 65536 partitions, got: 1099511627776",
                       sluice::option_error);
  sluice::Graph g;
  g.source("gen", nothing(), {.instances = 4097})
      .map("m", same, {.instances = 4096})
      .partition(65537)
      .for_each("sink", drop, {.instances = 1u << 20});
  CHECK_THROWS_WITH_AS(
      g.compile(),
      "stage 'gen': option instances must be at most 4096, got: 4097\n"
      "stage 'm': option partitions must name at most 65536 partitions, got: 65537\n"
      "stage 'sink': option instances must be at most 4096, got: 1048576",
      sluice::option_error);
  sluice::Graph ok;
  ok.source("s", numbers()).for_each("k", drop);
  CHECK_THROWS_WITH_AS(ok.run({.concurrency = 1 << 20}),
                       "run option concurrency must be at most 1024, got: 1048576",
                       sluice::option_error);
  sluice::Graph dynamic;
  auto [in, src] = dynamic.push_source<int>("in", 16, {.dynamic = true});
  auto run = dynamic.run();
  CHECK_THROWS_WITH_AS(run.attach(src, "many", drop, {}, 4097),
                       "stage 'many': option instances must be at most 4096, got: 4097",
                       sluice::option_error);
  run.cancel();
}

TEST_CASE("subscribing to a stage of another graph is refused naming both stages") {
  sluice::Graph g;
  auto m = g.source("numbers", numbers()).map("m", same);
  m.for_each("sink", drop);
  sluice::Graph other;
  auto first = other.source("first", numbers());  // id 0: a stage of g has that id
  auto far = first.map("a", same).map("b", same).map("far", same);  // id 3: none in g
  m.subscribe(far);
  m.subscribe(first);
  CHECK_THROWS_WITH_AS(g.compile(),
                       "stage 'm' subscribing to 'far': 'far' belongs to another graph\n"
                       "stage 'm' subscribing to 'first': 'first' belongs to another graph",
                       sluice::option_error);
  const auto dot = g.to_dot();
  CHECK(dot.find("far") == std::string::npos);
  CHECK(dot.find("first") == std::string::npos);
}

TEST_CASE("invalid partition options are compile problems naming the stage") {
  sluice::Graph g;
  g.source("zero", numbers()).partition(0).for_each("a", drop, {.partition = 5});
  g.source("queue", numbers()).partition(2, {.queue_size = 0}).for_each("b", drop);
  g.source("twice", numbers())
      .partition(std::vector<sluice::Partition>{0, 1, 0})
      .for_each("c", drop, {.instances = 3});
  g.source("named", numbers())
      .partition(std::vector<sluice::Partition>{"odd", "even"})
      .for_each("d", drop);
  g.source("hashed", numbers())
      .partition(std::vector<sluice::Partition>{"x", "x"}, [](int&) { return std::string("x"); })
      .for_each("e", drop);
  CHECK_THROWS_WITH_AS(
      g.compile(),
      "stage 'zero': option partitions must name at least 1 partition, got: 0\n"
      "stage 'queue': option queue_size must be greater than 0, got: 0\n"
      "stage 'twice': option partitions: partition 0 is listed twice\n"
      "stage 'named': option hash is required when partitions are not integers (got "
      "partitions: 'odd', 'even')\n"
      "stage 'hashed': option partitions: partition 'x' is listed twice",
      sluice::option_error);
}

TEST_CASE("stream capacity out of range names the stream") {
  sluice::Graph g;
  auto src = g.source("numbers", numbers()).broadcast();
  auto zero = src.stream("zero", 0);
  auto negative = src.stream("negative", -3);
  auto huge = src.stream("huge", std::int64_t{1} << 31);
  CHECK_THROWS_WITH_AS(g.compile(),
                       "stage 'zero': option capacity must be at least 1, got: 0\n"
                       "stage 'negative': option capacity must be at least 1, got: -3\n"
                       "stage 'huge': option capacity must be at most 2^30, got: 2147483648",
                       sluice::option_error);
}

TEST_CASE("push source capacity above 2^30 is refused") {
  sluice::Graph g;
  auto [a, sa] = g.push_source<int>("a", std::ptrdiff_t{1} << 32);
  auto [b, sb] = g.push_source<int>("b", std::ptrdiff_t{1} << 31);
  sa.for_each("sa", drop);
  sb.for_each("sb", drop);
  CHECK_THROWS_WITH_AS(g.compile(),
                       "stage 'a': option capacity must be at most 2^30, got: 4294967296\n"
                       "stage 'b': option capacity must be at most 2^30, got: 2147483648",
                       sluice::option_error);
  // The largest capacity works.
  sluice::Graph ok;
  auto [in, src] = ok.push_source<int>("in", std::ptrdiff_t{1} << 30, {.dynamic = true});
  std::vector<int> out;
  src.collect("out", out);
  auto run = ok.run();
  CHECK(in.try_push(7));
  CHECK_THROWS_WITH_AS(sluice::attach_stream(run, src, "reader", std::int64_t{1} << 31),
                       "stage 'reader': option capacity must be at most 2^30, got: 2147483648",
                       sluice::option_error);
  in.close();
  run.wait();
  CHECK(out == std::vector<int>{7});
}

TEST_CASE("manual demand on a function stage is refused: nothing would ask") {
  sluice::Graph g;
  const auto manual = sluice::DemandControl::manual;
  std::vector<int> out;
  auto src = g.source("numbers", numbers());
  src.for_each("each", drop, {.demand = manual});
  src.collect("coll", out, {.demand = manual});
  src.map("m", same, {.demand = manual})
      .filter("f", [](const int&) { return true; }, {.demand = manual})
      .flat_map("fm", [](int x) { return std::vector<int>{x}; }, {.demand = manual})
      .for_each("end", drop);
  auto other = g.source("other", numbers());
  src.for_each("fan", drop).subscribe(other, {.demand = manual});
  CHECK_THROWS_WITH_AS(
      g.compile(),
      "stage 'each': option demand: manual demand needs a consumer class that calls ctx.ask; a "
      "function sink cannot ask\n"
      "stage 'coll': option demand: manual demand needs a consumer class that calls ctx.ask; a "
      "function sink cannot ask\n"
      "stage 'm': option demand: manual demand needs a stage class that calls ctx.ask; a "
      "function stage (map) cannot ask\n"
      "stage 'f': option demand: manual demand needs a stage class that calls ctx.ask; a "
      "function stage (filter) cannot ask\n"
      "stage 'fm': option demand: manual demand needs a stage class that calls ctx.ask; a "
      "function stage (flat_map) cannot ask\n"
      "stage 'fan' subscribing to 'other': option demand: manual demand needs a consumer class "
      "that calls ctx.ask; a function sink cannot ask",
      sluice::option_error);
  sluice::Graph dyn;
  auto [in, p] = dyn.push_source<int>("in", 16, {.dynamic = true});
  auto run = dyn.run();
  CHECK_THROWS_WITH_AS(run.attach(p, "x", drop, {.demand = manual}),
                       "stage 'x': option demand: manual demand needs a consumer class that "
                       "calls ctx.ask; a function sink cannot ask",
                       sluice::option_error);
  CHECK(run.metrics().stages.size() == 1);
  run.cancel();
}

TEST_CASE("stage names with control characters are refused and shown escaped") {
  sluice::Graph g;
  g.source("bad\nname", numbers()).for_each("tab\there", drop);
  g.source("ok", numbers()).for_each("del\x7f", drop);
  auto [in, src] = g.push_source<int>("in\r", 0);
  src.for_each(std::string("nul\0", 4), drop);
  std::string message;
  try {
    g.compile();
  } catch (const sluice::option_error& e) {
    message = e.what();
  }
  CHECK(message ==
        "stage 'bad\\nname': option name must not contain control characters (shown escaped)\n"
        "stage 'tab\\there': option name must not contain control characters (shown escaped)\n"
        "stage 'del\\x7f': option name must not contain control characters (shown escaped)\n"
        "stage 'in\\r': option capacity must be at least 1, got: 0\n"
        "stage 'in\\r': option name must not contain control characters (shown escaped)\n"
        "stage 'nul\\x00': option name must not contain control characters (shown escaped)");
  sluice::Engine e;
  CHECK_THROWS_WITH_AS(e.producer<int>("a\x01", Idle{}, sluice::demand_dispatcher<int>()),
                       "stage 'a\\x01': option name must not contain control characters (shown "
                       "escaped)",
                       sluice::option_error);
}

TEST_CASE("options that do not apply to sources sinks and subscriptions are refused") {
  sluice::Graph g;
  auto src = g.source("src", numbers(),
                      {.max_demand = 10,
                       .min_demand = 2,
                       .cancel = sluice::CancelMode::transient,
                       .partition = 0,
                       .demand = sluice::DemandControl::manual});
  src.for_each("sink", drop, {.buffer_keep = sluice::BufferKeep::first});
  auto [in, push] = g.push_source<int>("push", 16, {.min_demand = 1});
  push.for_each("push_sink", drop);
  auto other = g.source("other", numbers());
  auto m = src.map("m", same);
  m.for_each("m_sink", drop);
  m.subscribe(other, {.instances = 2,
                      .buffer_size = 5,
                      .buffer_keep = sluice::BufferKeep::first,
                      .demand_mode = sluice::DemandMode::accumulate,
                      .dynamic = true});
  CHECK_THROWS_WITH_AS(
      g.compile(),
      "stage 'src': option max_demand: a producer subscribes to nothing\n"
      "stage 'src': option min_demand: a producer subscribes to nothing\n"
      "stage 'src': option cancel: a producer subscribes to nothing\n"
      "stage 'src': option partition: a producer subscribes to nothing\n"
      "stage 'src': option demand: a producer subscribes to nothing\n"
      "stage 'sink': option buffer_keep: a consumer has no output\n"
      "stage 'push': option min_demand: a producer subscribes to nothing\n"
      "stage 'm' subscribing to 'other': option instances: not a subscription option (set it "
      "where the stage is declared)\n"
      "stage 'm' subscribing to 'other': option buffer_size: not a subscription option (set it "
      "where the stage is declared)\n"
      "stage 'm' subscribing to 'other': option buffer_keep: not a subscription option (set it "
      "where the stage is declared)\n"
      "stage 'm' subscribing to 'other': option demand_mode: not a subscription option (set it "
      "where the stage is declared)\n"
      "stage 'm' subscribing to 'other': option dynamic: not a subscription option (set it "
      "where the stage is declared)",
      sluice::option_error);
  // The defaults, even spelled out, are accepted.
  sluice::Graph fine;
  auto s = fine.source("s", numbers(), {.max_demand = sluice::default_max_demand});
  auto n = s.map("n", same);
  n.for_each("n_sink", drop, {.buffer_keep = sluice::BufferKeep::last});
  n.subscribe(fine.source("t", numbers()), {.instances = 1, .max_demand = 10});
  CHECK_NOTHROW(fine.compile());
}

}  // TEST_SUITE("graph.bad_input")
