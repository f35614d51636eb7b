// Stage::rate_limit (Broadway's rate limiting, Akka's throttle; sluice::RateLimiter): exact
// release times on the virtual clock of manual runs, back-pressure on the source, a drain, fan-in,
// a property test against a single-threaded token bucket, and bad options.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

using namespace std::chrono_literals;

namespace {

/// (event, virtual ms when it reached the sink)
using Released = std::vector<std::pair<int, std::int64_t>>;

std::string show(const Released& r) {
  std::string s;
  for (auto& [e, at] : r)
    s += std::to_string(e) + "@" + std::to_string(at) + " ";
  return s;
}

std::int64_t ms_of(sluice::TimePoint t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

/// A sink that stamps each event with the run's clock.
struct Stamp {
  Released* out;
  void handle_events(std::span<int> in, sluice::Context<void>& ctx) {
    for (int e : in)
      out->emplace_back(e, ms_of(ctx.now()));
  }
};

/// A push source, a rate limit and a stamping sink on a manual run.
struct Line {
  sluice::Graph g;
  std::optional<sluice::PushHandle<int>> in;
  Released out;
  std::optional<sluice::Run> run;
  explicit Line(sluice::RateLimitOptions o, sluice::StageOptions so = {}) {
    auto [handle, src] = g.push_source<int>("src", 10'000);
    in.emplace(std::move(handle));
    src.rate_limit("limit", o, std::move(so)).to("out", Stamp{&out});
    run.emplace(g.run({.manual = true}));
  }
  void push(int from, int to) {
    for (int e = from; e <= to; ++e)
      REQUIRE(in->try_push(int(e)));
    run->run_until_idle();
  }
};

const sluice::EdgeMetrics& edge(const sluice::Metrics& m, const std::string& consumer) {
  for (auto& e : m.edges)
    if (e.consumer == consumer) return e;
  FAIL("no edge into " << consumer);
  return m.edges.front();
}

/// The reference token bucket: event k (arriving at arrive[k] ms) leaves at its arrival, or
/// when the bucket (full at 0, a token every per / events, at most burst) next holds a token,
/// counted in integer nanoseconds; returns (k, ms) as the sink would stamp them.
Released reference(const std::vector<std::int64_t>& arrive, std::int64_t events,
                   std::chrono::milliseconds per, std::int64_t burst) {
  const std::int64_t per_ns = std::chrono::nanoseconds(per).count();
  std::int64_t tokens = burst, progress = 0, last = 0, prev = 0;
  auto refill = [&](std::int64_t at) {
    if (tokens < burst) {
      const auto total = progress + (at - last) * events;
      const auto earned = total / per_ns;
      if (earned >= burst - tokens) {
        tokens = burst;
        progress = 0;
      } else {
        tokens += earned;
        progress = total % per_ns;
      }
    }
    last = at;
  };
  Released want;
  for (std::size_t k = 0; k < arrive.size(); ++k) {
    auto at = std::max(arrive[k] * 1'000'000, prev);
    refill(at);
    if (tokens < 1) {
      at += (per_ns - progress + events - 1) / events;
      refill(at);
    }
    --tokens;
    prev = at;
    want.emplace_back(static_cast<int>(k), at / 1'000'000);
  }
  return want;
}

/// Random arrival times (ms, ascending): bunches and gaps.
std::vector<std::int64_t> arrivals(std::mt19937& rng, int most, int gap) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::vector<std::int64_t> arrive;
  std::int64_t t = 0;
  for (int n = pick(1, most); n > 0; --n) {
    t += pick(0, 3) == 0 ? pick(0, gap) : 0;
    arrive.push_back(t);
  }
  return arrive;
}

/// Pushes event k at arrive[k] on the line's virtual clock, then lets `after` pass.
template <class L>
void feed(L& l, const std::vector<std::int64_t>& arrive, std::chrono::milliseconds after) {
  std::int64_t now = 0;
  int next = 0;
  for (auto at : arrive) {
    l.run->advance(std::chrono::milliseconds(at - now));
    now = at;
    l.push(next, next);
    ++next;
  }
  l.run->advance(after);
}

}  // namespace

TEST_SUITE("graph.rate_limit") {

TEST_CASE("rate_limit: a full bucket passes at once, then one event per token") {
  Line l({.events = 2, .per = 100ms});  // a token every 50 ms, burst 2
  l.push(1, 6);
  CHECK(l.out == Released{{1, 0}, {2, 0}});
  l.run->advance(49ms);
  CHECK(l.out.size() == 2);
  l.run->advance(200ms);
  CHECK(l.out == Released{{1, 0}, {2, 0}, {3, 50}, {4, 100}, {5, 150}, {6, 200}});
}

TEST_CASE("rate_limit: after a quiet spell, at most burst pass at once") {
  Line l({.events = 10, .per = 1s, .burst = 3});  // a token every 100 ms
  l.push(1, 5);
  l.run->advance(200ms);
  CHECK(l.out == Released{{1, 0}, {2, 0}, {3, 0}, {4, 100}, {5, 200}});
  l.run->advance(2s);  // quiet: the bucket fills to 3, not to the 22 tokens of 2.2 s
  l.out.clear();
  l.push(6, 10);
  l.run->advance(200ms);
  CHECK(show(l.out) == show({{6, 2200}, {7, 2200}, {8, 2200}, {9, 2300}, {10, 2400}}));
}

TEST_CASE("rate_limit: the source is asked only for what may pass, and nothing is dropped") {
  Released out;
  sluice::Graph g;
  g.source("src", sluice::from_range(std::vector<int>(1000, 7)))
      .rate_limit("limit", {.events = 10, .per = 1s})
      .to("out", Stamp{&out});
  auto run = g.run({.manual = true});
  run.run_until_idle();
  auto m = run.metrics();
  CHECK(edge(m, "limit").sent == 10);  // the bucket's 10: the source was asked for no more
  CHECK(out.size() == 10);
  CHECK(edge(m, "limit").manual_demand);
  run.advance(99s);
  CHECK(out.size() == 1000);
  CHECK(out.back().second == 99'000);  // 990 more at 10 per second
  run.run_until_idle();
  CHECK(run.done());
  run.wait();
  for (auto& s : run.metrics().stages) {
    CHECK(s.dropped == 0);
    CHECK(s.lost == 0);
  }
}

TEST_CASE("rate_limit: a drain delivers everything pushed, at the rate") {
  Line l({.events = 1, .per = 10ms});
  l.push(1, 5);
  CHECK(l.out == Released{{1, 0}});
  // The drain cannot finish at once: the run waits for its clock (a manual run says so).
  CHECK_THROWS_WITH_AS(l.run->drain(),
                       "sluice: manual run is idle but not finished (it waits for input, or for "
                       "its virtual clock to reach a timer: Run::advance)",
                       std::logic_error);
  CHECK_FALSE(l.run->done());
  l.run->advance(40ms);
  CHECK(l.out == Released{{1, 0}, {2, 10}, {3, 20}, {4, 30}, {5, 40}});
  CHECK(l.run->done());
  l.run->wait();
  CHECK(l.run->metrics().undelivered() == 0);
}

TEST_CASE("rate_limit: a cancel loses only what was in flight, counted") {
  Line l({.events = 1, .per = 10ms, .burst = 1});
  l.push(1, 50);
  auto report = l.run->cancel();
  CHECK(l.out == Released{{1, 0}});
  // The 49 still in the push source's queue never left it (it counts them as lost).
  CHECK(report.undelivered == 49);
}

TEST_CASE("rate_limit: fan-in shares the bucket between the producers, an idle one included") {
  Released out;
  sluice::Graph g;
  auto [a_in, a] = g.push_source<int>("a", 100);
  auto [b_in, b] = g.push_source<int>("b", 100);
  auto limit = a.rate_limit("limit", {.events = 4, .per = 100ms});  // a token every 25 ms
  limit.subscribe(b);
  limit.to("out", Stamp{&out});
  auto run = g.run({.manual = true});
  for (int e = 1; e <= 8; ++e)
    REQUIRE(b_in.try_push(int(e)));  // a stays idle: b still gets the whole rate
  run.run_until_idle();
  // a holds its share (2 of the 4 tokens) outstanding, which only lowers b's burst: b's
  // events pass at the full rate, a token every 25 ms.
  run.advance(200ms);
  CHECK(show(out) ==
        show({{1, 0}, {2, 0}, {3, 25}, {4, 50}, {5, 75}, {6, 100}, {7, 125}, {8, 150}}));
  CHECK(edge(run.metrics(), "limit").manual_demand);
  a_in.close();
  b_in.close();
  run.run_until_idle();
  CHECK(run.done());
}

TEST_CASE("rate_limit: two idle producers leave the third its share, and its rate") {
  Released out;
  sluice::Graph g;
  auto [a_in, a] = g.push_source<int>("a", 100);
  auto [b_in, b] = g.push_source<int>("b", 100);
  auto [c_in, c] = g.push_source<int>("c", 100);
  auto limit = a.rate_limit("limit", {.events = 4, .per = 100ms});  // share: 4 / 3 = 1 each
  limit.subscribe(b).subscribe(c);
  limit.to("out", Stamp{&out});
  auto run = g.run({.manual = true});
  for (int e = 1; e <= 5; ++e)
    REQUIRE(c_in.try_push(int(e)));
  run.run_until_idle();
  run.advance(200ms);
  // a and b hold 1 token each for good; c passes the other 2 at once, then one every 25 ms.
  CHECK(show(out) == show({{1, 0}, {2, 0}, {3, 25}, {4, 50}, {5, 75}}));
  a_in.close();
  b_in.close();
  c_in.close();
  run.run_until_idle();
  CHECK(run.done());
}

TEST_CASE("rate_limit: a burst below the number of inputs fails the stage, saying so") {
  sluice::Graph g;
  auto [a_in, a] = g.push_source<int>("a", 100);
  auto [b_in, b] = g.push_source<int>("b", 100);
  a.rate_limit("limit", {.events = 10, .per = 1s, .burst = 1})
      .subscribe(b)
      .for_each("out", [](int) {});
  auto run = g.run({.manual = true});
  run.run_until_idle();
  CHECK_THROWS_WITH_AS(run.wait(),
                       "stage 'limit': rate_limit: burst 1 is below its 2 inputs: each input "
                       "needs a token to be asked for (raise burst, or merge the inputs in "
                       "front of it)",
                       sluice::stage_error);
}

TEST_CASE("rate_limit: the same release times as a single-threaded token bucket (40 seeds)") {
  for (unsigned seed = 1; seed <= 40; ++seed) {
    CAPTURE(seed);
    std::mt19937 rng(seed);
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    const std::int64_t events = pick(1, 20);
    const auto per = std::chrono::milliseconds(pick(100, 2000));
    const std::int64_t burst = pick(1, 10);
    CAPTURE(events);
    CAPTURE(per.count());
    CAPTURE(burst);
    const auto arrive = arrivals(rng, 80, 1000);
    Line l({.events = events, .per = per, .burst = burst});
    feed(l, arrive, std::chrono::milliseconds(arrive.size() * per.count()));
    CHECK(show(l.out) == show(reference(arrive, events, per, burst)));
  }
}

TEST_CASE("rate_limit: fast limits ask a millisecond's tokens at a time, late by at most that") {
  // At more than one token per millisecond the stage asks when a millisecond's tokens are free
  // (step 3): each event leaves at most a step's time after the exact bucket would let it, and
  // the bucket is never overdrawn.
  for (unsigned seed = 1; seed <= 20; ++seed) {
    CAPTURE(seed);
    std::mt19937 rng(seed);
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    const std::int64_t events = pick(2, 50);  // per 10 ms: 0.2 to 5 tokens per ms
    const auto per = 10ms;
    const std::int64_t burst = pick(1, 40);
    CAPTURE(events);
    CAPTURE(burst);
    const auto arrive = arrivals(rng, 300, 50);
    Line l({.events = events, .per = per, .burst = burst});
    feed(l, arrive, 1000ms);
    const auto want = reference(arrive, events, per, burst);
    REQUIRE(l.out.size() == want.size());
    const std::int64_t step =
        std::clamp<std::int64_t>(events / 10, 1, std::max<std::int64_t>(1, burst / 2));
    const std::int64_t late_ms = (step * 10 + events - 1) / events + 1;
    for (std::size_t k = 0; k < want.size(); ++k) {
      CHECK(l.out[k].first == want[k].first);
      CHECK(l.out[k].second >= want[k].second);  // never earlier than the bucket allows
      CHECK(l.out[k].second <= want[k].second + late_ms);
    }
  }
}

TEST_CASE("rate_limit: RateLimiter as a class stage of the engine API asks by hand by itself") {
  struct Numbers {
    int next = 0;
    void handle_demand(std::size_t n, sluice::Context<int>& ctx) {
      for (std::size_t k = 0; k < n; ++k)
        ctx.emit(next++);
    }
  };
  Released out;
  sluice::Engine e;
  auto p = e.producer<int>("numbers", Numbers{}, sluice::demand_dispatcher<int>());
  auto limit =
      e.producer_consumer<int, int>("limit", sluice::RateLimiter<int>({.events = 5, .per = 1s}),
                                    sluice::demand_dispatcher<int>());
  auto sink = e.consumer<int>("out", Stamp{&out});
  e.subscribe(limit, p);  // default options: the limiter makes its subscription manual
  e.subscribe(sink, limit);
  auto run = e.start({.manual = true});
  run.advance(1s);
  CHECK(show(out) == show({{0, 0},
                           {1, 0},
                           {2, 0},
                           {3, 0},
                           {4, 0},
                           {5, 200},
                           {6, 400},
                           {7, 600},
                           {8, 800},
                           {9, 1000}}));
  CHECK(edge(run.metrics(), "limit").manual_demand);
  run.cancel();
}

TEST_CASE("rate_limit: README's example") {
  struct Client {
    std::vector<std::string> got;
    void get(const std::string& url) { got.push_back(url); }
  } client;
  std::vector<std::string> urls;
  for (int i = 0; i < 30; ++i)
    urls.push_back("/item/" + std::to_string(i));
  sluice::Graph g;
  // (README's lines, verbatim)
  g.source("requests", sluice::from_range(urls))
      .rate_limit("api_quota", {.events = 100, .per = 1s, .burst = 10})
      .for_each("call", [&](const std::string& url) { client.get(url); });
  auto run = g.run({.manual = true});
  run.run_until_idle();
  CHECK(client.got.size() == 10);  // the burst
  run.advance(100ms);              // 10 more tokens
  CHECK(client.got.size() == 20);
  run.advance(100ms);
  CHECK(client.got == urls);
  run.run_until_idle();
  CHECK(run.done());
}

TEST_CASE("rate_limit: bad options are option_errors naming the stage and the option") {
  auto refused = [](sluice::RateLimitOptions o, sluice::StageOptions so = {}) {
    sluice::Graph g;
    std::vector<int> out;
    g.source("src", sluice::from_range(std::vector<int>{1}))
        .rate_limit("limit", o, std::move(so))
        .collect("out", out);
    try {
      g.compile();
    } catch (const sluice::option_error& e) {
      return std::string(e.what());
    }
    return std::string("compiled");
  };
  CHECK(refused({}) == "stage 'limit': option events must be at least 1, got: 0");
  CHECK(refused({.events = -3}) == "stage 'limit': option events must be at least 1, got: -3");
  CHECK(refused({.events = 5, .per = 0ms}) ==
        "stage 'limit': option per must be positive, got: 0 ns");
  CHECK(refused({.events = 5, .per = -1ms}) ==
        "stage 'limit': option per must be positive, got: -1000000 ns");
  CHECK(refused({.events = 5, .burst = 0}) ==
        "stage 'limit': option burst must be at least 1, got: 0");
  CHECK(refused({.events = 5}, {.instances = 2}) ==
        "stage 'limit': option instances must be 1 for rate_limit (one bucket for the stage), "
        "got: 2");
  CHECK(refused({.events = 5}) == "compiled");
  // The class refuses them too (the engine API).
  CHECK_THROWS_WITH_AS(sluice::RateLimiter<int>({.events = 0}),
                       "RateLimitOptions::events must be at least 1, got: 0", sluice::option_error);
}

}  // TEST_SUITE("graph.rate_limit")
