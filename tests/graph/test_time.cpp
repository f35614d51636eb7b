// Time in the builder's stages: a polling from_generator, and timers in a class stage that runs
// as a fused group's host. On the virtual clock of manual runs (Run::advance).
#include <chrono>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

using namespace std::chrono_literals;

namespace {

/// A generator taking what the test put in `queue`, or nothing yet.
auto pop_front_of(std::deque<int>& queue) {
  return [&queue]() -> std::optional<int> {
    if (queue.empty()) return std::nullopt;
    const int x = queue.front();
    queue.pop_front();
    return x;
  };
}

}  // namespace

TEST_SUITE("graph.time") {

TEST_CASE("from_generator with poll_every: nothing yet is asked again on a timer, not the end") {
  std::deque<int> queue;  // filled by the test between advances (the manual run's thread)
  std::vector<int> out;
  sluice::Graph g;
  g.source("poll", sluice::from_generator(pop_front_of(queue), {.poll_every = 10ms}))
      .collect("out", out);
  auto run = g.run({.manual = true});
  run.run_until_idle();
  CHECK(out.empty());
  CHECK(!run.done());
  queue = {1, 2, 3};
  run.advance(9ms);
  CHECK(out.empty());
  run.advance(1ms);
  CHECK(out == std::vector<int>{1, 2, 3});
  queue = {4};
  run.advance(10ms);
  CHECK(out == std::vector<int>{1, 2, 3, 4});
  queue = {5};
  run.drain();  // what it has not polled yet stays where it is
  CHECK(run.done());
  CHECK(out == std::vector<int>{1, 2, 3, 4});
}

TEST_CASE("from_generator: poll_every must be positive") {
  auto none = []() -> std::optional<int> { return std::nullopt; };
  CHECK_THROWS_WITH_AS(sluice::from_generator(none, {.poll_every = 0ms}),
                       doctest::Contains("GeneratorOptions::poll_every must be set and positive"),
                       sluice::option_error);
  CHECK_THROWS_AS(sluice::from_generator(none, {}), sluice::option_error);
}

TEST_CASE("a fused group's host keeps its timers: a periodic flush after a map") {
  // Batches what it gets and flushes every 100 ms of the run's clock: the shape of a Broadway
  // batcher's timeout, in a consumer that runs in one cell with the map before it.
  struct Flusher {
    std::vector<std::string>* flushed;
    std::vector<int> held;
    void handle_subscribe(const sluice::SubscribeInfo&, sluice::Context<void>& ctx) {
      ctx.send_every(100ms, 0);
    }
    void handle_events(std::span<int> events, sluice::Context<void>&) {
      held.insert(held.end(), events.begin(), events.end());
    }
    void handle_info(std::any&, sluice::Context<void>& ctx) {
      std::string s = std::to_string(
          std::chrono::duration_cast<std::chrono::milliseconds>(ctx.now().time_since_epoch())
              .count());
      s += "ms:";  // appended piece by piece: GCC 12 warns (-Wrestrict) on " " + std::string
      for (int x : held) {
        s += ' ';
        s += std::to_string(x);
      }
      flushed->push_back(s);
      held.clear();
    }
  };
  std::vector<std::string> flushed;
  std::deque<int> queue;
  sluice::Graph g;
  auto doubled = g.source("in", sluice::from_generator(pop_front_of(queue), {.poll_every = 10ms}))
                     .map("double", [](int x) { return 2 * x; });
  doubled.to("flush", Flusher{&flushed, {}});
  auto run = g.run({.manual = true});
  CHECK_THROWS_WITH_AS(run.send_info(doubled, 0), doctest::Contains("is fused into 'flush'"),
                       sluice::option_error);
  queue = {1, 2, 3};
  run.advance(50ms);
  CHECK(flushed.empty());
  run.advance(50ms);
  queue = {4};
  run.advance(100ms);
  CHECK(flushed == std::vector<std::string>{"100ms: 2 4 6", "200ms: 8"});
  run.drain();
  CHECK(run.done());
  run.advance(1s);  // its timer went with it
  CHECK(flushed.size() == 2);
}

}  // TEST_SUITE("graph.time")
