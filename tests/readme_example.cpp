// clang-format off
// README's example, verbatim in its body: built and run by the test suite so it stays true.
#include <cstdint>
#include <cstdio>
#include <span>

#include <sluice/sluice.hpp>

struct Numbers { std::int64_t next = 0;                    // producer: emits what is asked
  void handle_demand(std::size_t n, sluice::Context<std::int64_t>& ctx) {
    for (std::size_t i = 0; i < n && next < 1'000'000; ++i) ctx.emit(next++);
    if (next == 1'000'000) ctx.finish(); } };              // end after these are dispatched
struct Triple { void handle_events(std::span<std::int64_t> in, sluice::Context<std::int64_t>& ctx) {
    for (auto v : in) ctx.emit(3 * v); } };
struct Sum { std::int64_t* total;
  void handle_events(std::span<std::int64_t> in, sluice::Context<void>&) { for (auto v : in) *total += v; } };

int main() {
sluice::Engine e;  std::int64_t total = 0;  auto d = [] { return sluice::demand_dispatcher<std::int64_t>(); };
auto src = e.producer<std::int64_t>("numbers", Numbers{}, d());
auto mid = e.producer_consumer<std::int64_t, std::int64_t>("triple", Triple{}, d(), {}, /*instances*/ 4);
auto out = e.consumer<std::int64_t>("sum", Sum{&total});
e.subscribe(mid, src, {.max_demand = 1000});  e.subscribe(out, mid);
e.start().wait();                                          // rethrows the first stage failure
  std::printf("total %lld\n", static_cast<long long>(total));
  return total == 3 * (999'999LL * 1'000'000LL / 2) ? 0 : 1;
}
