#include <cstdint>
#include <cstdio>
#include <span>

#include <sluice/sluice.hpp>

struct Numbers {
  std::int64_t next = 0;
  void handle_demand(std::size_t n, sluice::Context<std::int64_t>& ctx) {
    for (std::size_t i = 0; i < n && next < 100; ++i)
      ctx.emit(next++);
    if (next == 100) ctx.finish();
  }
};
struct Sum {
  std::int64_t* total;
  void handle_events(std::span<std::int64_t> in, sluice::Context<void>&) {
    for (auto v : in)
      *total += v;
  }
};

int main() {
  sluice::Engine engine;
  std::int64_t total = 0;
  auto src = engine.producer<std::int64_t>("numbers", Numbers{},
                                           sluice::demand_dispatcher<std::int64_t>());
  auto sum = engine.consumer<std::int64_t>("sum", Sum{&total});
  engine.subscribe(sum, src);
  engine.start().wait();
  std::printf("sum %lld\n", static_cast<long long>(total));
}
