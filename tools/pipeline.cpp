// sluice_pipeline: the main job for now. Runs producer -> map -> filter -> sum on built-in data
// (a counter) and prints events/s. Usage: sluice_pipeline [events] [max_demand]
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include <sluice/sluice.hpp>

namespace {

struct Source {
  std::int64_t next = 0;
  std::int64_t limit = 0;
  void handle_demand(std::size_t n, sluice::Context<std::int64_t>& ctx) {
    for (std::size_t i = 0; i < n && next < limit; ++i)
      ctx.emit(next++);
    if (next == limit) ctx.finish();
  }
};

struct Triple {
  void handle_events(std::span<std::int64_t> in, sluice::Context<std::int64_t>& ctx) {
    for (auto v : in)
      ctx.emit(v * 3);
  }
};

struct KeepEven {
  void handle_events(std::span<std::int64_t> in, sluice::Context<std::int64_t>& ctx) {
    for (auto v : in)
      if (v % 2 == 0) ctx.emit(v);
  }
};

struct Sum {
  std::int64_t* total;
  void handle_events(std::span<std::int64_t> in, sluice::Context<void>&) {
    for (auto v : in)
      *total += v;
  }
};

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t events = argc > 1 ? std::atoll(argv[1]) : 50'000'000;
  const std::int64_t max_demand = argc > 2 ? std::atoll(argv[2]) : sluice::default_max_demand;
  using sluice::demand_dispatcher;

  sluice::Engine engine;
  std::int64_t total = 0;
  auto src =
      engine.producer<std::int64_t>("source", Source{0, events}, demand_dispatcher<std::int64_t>());
  auto sq = engine.producer_consumer<std::int64_t, std::int64_t>("triple", Triple{},
                                                                 demand_dispatcher<std::int64_t>());
  auto even = engine.producer_consumer<std::int64_t, std::int64_t>(
      "keep_even", KeepEven{}, demand_dispatcher<std::int64_t>());
  auto sum = engine.consumer<std::int64_t>("sum", Sum{&total});
  const sluice::SubscriptionOptions opts{.max_demand = max_demand};
  engine.subscribe(sq, src, opts);
  engine.subscribe(even, sq, opts);
  engine.subscribe(sum, even, opts);

  const auto t0 = std::chrono::steady_clock::now();
  auto run = engine.start();
  run.wait();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::int64_t expected = 0;  // sum of 3v for even v below `events`, computed directly
  for (std::int64_t v = 0; v < events; v += 2)
    expected += 3 * v;
  std::printf("producer -> map -> filter -> sum, %lld events, max_demand %lld\n",
              static_cast<long long>(events), static_cast<long long>(max_demand));
  std::printf("%.1f M events/s (%.3f s), result %s\n", static_cast<double>(events) / secs / 1e6,
              secs, total == expected ? "correct" : "WRONG");
  return total == expected ? 0 : 1;
}
