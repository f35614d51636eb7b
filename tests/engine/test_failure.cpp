// A throwing stage never hangs a run: the run ends and wait() rethrows the first error with the
// stage's name. These runs are real (oneTBB threads), with endless producers.
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <thread>

#include <doctest/doctest.h>

#include <support/genstage.hpp>
#include <support/stages.hpp>

using namespace sluice_test;

namespace {

struct ThrowAt {
  std::int64_t at;
  void handle_events(std::span<std::int64_t> evs, sluice::Context<std::int64_t>& c) {
    for (auto v : evs) {
      if (v == at) throw std::runtime_error("boom at " + std::to_string(v));
      c.emit(v);
    }
  }
};

using Endless = EndlessSource<>;
using Sink = NullSink<>;

auto demand64() {
  return sluice::demand_dispatcher<std::int64_t>();
}

}  // namespace

TEST_SUITE("engine.failure") {

TEST_CASE("an exception in a producer_consumer ends the run and names the stage") {
  sluice::Engine e;
  auto p = e.producer<std::int64_t>("source", Endless{}, demand64());
  auto m = e.producer_consumer<std::int64_t, std::int64_t>("map", ThrowAt{50'000}, demand64());
  auto c = e.consumer<std::int64_t>("sink", Sink{});
  e.subscribe(m, p);
  e.subscribe(c, m);
  auto run = e.start(quiet());
  CHECK_THROWS_WITH_AS(run.wait(), "stage 'map': boom at 50000", sluice::stage_error);
  auto metrics = run.metrics();
  for (auto& s : metrics.stages)
    CHECK(s.finished);
  CHECK(metrics.stages[1].stop_reason == "boom at 50000");
}

TEST_CASE("an exception in one instance names that instance") {
  sluice::Engine e;
  auto p = e.producer<std::int64_t>("source", Endless{}, demand64());
  auto m =
      e.producer_consumer<std::int64_t, std::int64_t>("map", ThrowAt{70'000}, demand64(), {}, 3);
  auto c = e.consumer<std::int64_t>("sink", Sink{});
  e.subscribe(m, p);
  e.subscribe(c, m);
  auto run = e.start(quiet());
  try {
    run.wait();
    FAIL("wait() did not throw");
  } catch (const sluice::stage_error& err) {
    CHECK(std::string(err.what()).starts_with("stage 'map#"));
    CHECK(std::string(err.what()).ends_with("': boom at 70000"));
    CHECK(err.stage().starts_with("map#"));
  }
}

TEST_CASE("an exception in a producer, a consumer, handle_info: always rethrown") {
  SUBCASE("producer") {
    struct P {
      int calls = 0;
      void handle_demand(std::size_t, sluice::Context<std::int64_t>& c) {
        if (++calls == 3) throw std::logic_error("no more");
        c.emit(1);
      }
    };
    sluice::Engine e;
    auto p = e.producer<std::int64_t>("p", P{}, demand64());
    auto c = e.consumer<std::int64_t>("c", Sink{});
    e.subscribe(c, p, {.max_demand = 1, .min_demand = 0});
    auto run = e.start(quiet());
    CHECK_THROWS_WITH_AS(run.wait(), "stage 'p': no more", sluice::stage_error);
  }
  SUBCASE("consumer, with a non-std exception") {
    struct C {
      void handle_events(std::span<std::int64_t>, sluice::Context<void>&) { throw 42; }
    };
    sluice::Engine e;
    auto p = e.producer<std::int64_t>("p", Endless{}, demand64());
    auto c = e.consumer<std::int64_t>("c", C{});
    e.subscribe(c, p);
    auto run = e.start(quiet());
    CHECK_THROWS_WITH_AS(run.wait(), "stage 'c': unknown exception", sluice::stage_error);
  }
  SUBCASE("handle_info") {
    struct P {
      void handle_demand(std::size_t, sluice::Context<std::int64_t>&) {}
      void handle_info(std::any&, sluice::Context<std::int64_t>&) {
        throw std::runtime_error("bad info");
      }
    };
    sluice::Engine e;
    auto p = e.producer<std::int64_t>("p", P{}, demand64());
    auto c = e.consumer<std::int64_t>("c", Sink{});
    e.subscribe(c, p);
    auto run = e.start(quiet());
    run.send_info(p, 1);
    CHECK_THROWS_WITH_AS(run.wait(), "stage 'p': bad info", sluice::stage_error);
  }
}

TEST_CASE("a dispatcher that sends beyond demand is a protocol error of its producer") {
  struct Greedy final : sluice::Dispatcher<std::int64_t> {
    std::size_t subscribe(const sluice::SubscriberInfo&, sluice::Outbox<std::int64_t>&) override {
      return 0;
    }
    std::size_t cancel(sluice::SubscriberId, sluice::Outbox<std::int64_t>&) override { return 0; }
    std::size_t ask(sluice::SubscriberId, std::size_t n, sluice::Outbox<std::int64_t>&) override {
      return n;
    }
    std::size_t dispatch(std::span<std::int64_t> evs, sluice::Outbox<std::int64_t>& out) override {
      out.send(0, evs);  // ignores demand
      return evs.size();
    }
    std::string name() const override { return "Greedy"; }
  };
  struct TooMuch {
    void handle_demand(std::size_t n, sluice::Context<std::int64_t>& c) {
      for (std::size_t i = 0; i < n + 1; ++i)
        c.emit(1);
    }
  };
  sluice::Engine e;
  auto p = e.producer<std::int64_t>("p", TooMuch{}, [] { return std::make_unique<Greedy>(); });
  auto c = e.consumer<std::int64_t>("c", Sink{});
  e.subscribe(c, p, {.max_demand = 10});
  auto run = e.start(quiet());
  CHECK_THROWS_WITH_AS(
      run.wait(), "stage 'p': dispatcher Greedy sent 11 events to 'c', which asked for only 10",
      sluice::stage_error);
}

TEST_CASE("cancel() stops an endless run and accounts for every event") {
  Endless source;  // its count is written by the producer's thread, read after wait()
  sluice::Engine e;
  auto p = e.producer<std::int64_t>("p", source, demand64());
  auto m = e.producer_consumer<std::int64_t, std::int64_t>("m", ThrowAt{-1}, demand64());
  auto c = e.consumer<std::int64_t>("c", Sink{});
  e.subscribe(m, p);
  e.subscribe(c, m);
  auto run = e.start(quiet());
  while (run.metrics().stages[2].events_in < 100'000)
    std::this_thread::yield();
  run.cancel();
  CHECK_NOTHROW(run.wait());
  auto metrics = run.metrics();
  for (auto& s : metrics.stages) {
    CHECK(s.finished);
    CHECK(s.stop_reason == "shutdown");
  }
  // The map is 1:1, so every event emitted was either handled by the sink or is undelivered.
  CHECK(metrics.stages[1].events_in == metrics.stages[1].events_out + metrics.stages[1].lost);
  CHECK(static_cast<std::uint64_t>(*source.emitted) ==
        metrics.stages[2].events_in + metrics.undelivered());
}

TEST_CASE("destroying a running Run cancels it and waits for its threads") {
  CountingSink<> counter;
  const auto& seen = counter.count;
  sluice::Engine e;
  auto p = e.producer<std::int64_t>("p", Endless{}, demand64());
  auto c = e.consumer<std::int64_t>("c", counter);
  e.subscribe(c, p);
  {
    auto run = e.start(quiet());
    while (seen->load() < 10'000)
      std::this_thread::yield();
  }
  // No stage runs once the Run is gone: the count no longer moves.
  const auto after = seen->load();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(seen->load() == after);
}

// Found by hand: when Engine::start threw while setting the run up, ~Run cancelled and waited
// for cells that had never been started, for ever.
TEST_CASE("start() that throws while setting up the run returns the error and does not hang") {
  struct CopyThrows {
    std::shared_ptr<std::atomic<int>> copies;  // copies left before one throws
    explicit CopyThrows(std::shared_ptr<std::atomic<int>> c) : copies(std::move(c)) {}
    CopyThrows(const CopyThrows& o) : copies(o.copies) {
      if (copies->fetch_sub(1) <= 0) throw std::runtime_error("cannot copy this handler");
    }
    CopyThrows(CopyThrows&&) noexcept = default;
    void handle_events(std::span<std::int64_t>, sluice::Context<void>&) {}
  };
  for (bool manual : {false, true}) {
    CAPTURE(manual);
    auto copies = std::make_shared<std::atomic<int>>(1'000'000);
    sluice::Engine e;
    auto p = e.producer<std::int64_t>("p", Endless{}, demand64());
    auto c = e.consumer<std::int64_t>("c", CopyThrows{copies}, 3);
    e.subscribe(c, p);
    auto options = quiet();
    options.manual = manual;
    copies->store(1);  // the second instance's copy throws
    CHECK_THROWS_WITH_AS(e.start(options), "cannot copy this handler", std::runtime_error);
    copies->store(1'000'000);  // the same engine still starts and runs
    auto run = e.start(options);
    if (manual) {
      run.run_until_idle(1000);
    } else {
      while (run.metrics().edges[2].received < 1000)
        std::this_thread::yield();
    }
    run.cancel();
    CHECK_NOTHROW(run.wait());
  }
}

// An edge's rings hold up to max_demand events; a max_demand whose rings cannot fit in memory
// used to end in std::bad_alloc from start() (and, before that fix, a hang).
TEST_CASE("a max_demand whose edge buffers cannot fit in memory is refused by name") {
  struct Big {
    std::array<char, 1 << 20> bytes{};  // 1 MiB events: 2^29 of them cannot fit in any machine
  };
  using BigSource = IdleSource<Big>;
  using BigSink = NullSink<Big>;
  sluice::Engine e;
  auto p = e.producer<Big>("huge-source", BigSource{}, sluice::demand_dispatcher<Big>());
  auto c = e.consumer<Big>("huge-sink", BigSink{});
  e.subscribe(c, p, {.max_demand = std::int64_t{1} << 29});
  std::string message;
  try {
    auto run = e.start(quiet());
  } catch (const sluice::option_error& err) {
    message = err.what();
  }
  CHECK(message.find("'huge-sink' subscribing to 'huge-source'") != std::string::npos);
  CHECK(message.find("max_demand 536870912") != std::string::npos);
  CHECK(message.find("lower max_demand") != std::string::npos);

  // The same for a consumer attached while running.
  sluice::Engine open;
  auto dynamic = open.producer<Big>("open-source", BigSource{}, sluice::demand_dispatcher<Big>(),
                                    {.dynamic = true});
  auto run = open.start(quiet());
  CHECK_THROWS_WITH_AS(run.attach(dynamic, "late-sink", BigSink{}, {.max_demand = 1 << 29}),
                       doctest::Contains("'late-sink' subscribing to 'open-source': max_demand"),
                       sluice::option_error);
  run.cancel();
  CHECK_NOTHROW(run.wait());
}

}  // TEST_SUITE("engine.failure")
