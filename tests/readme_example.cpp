// clang-format off
// README's example, verbatim in its body: built and run by the test suite so it stays true.
#include <cstdint>
#include <cstdio>
#include <ranges>

#include <sluice/sluice.hpp>

int main() {
sluice::Graph g;
std::int64_t total = 0;
g.source("numbers", sluice::from_range(std::views::iota(0, 1'000'000)))       // producer
    .map("triple", [](int x) { return 3 * std::int64_t{x}; }, {.instances = 4})  // 4 instances
    .for_each("sum", [&](std::int64_t x) { total += x; });                      // consumer
g.run().wait();  // validates, runs, rethrows the first stage failure
  std::printf("total %lld\n", static_cast<long long>(total));
  return total == 3 * (999'999LL * 1'000'000LL / 2) ? 0 : 1;
}
