// Fifo, the single-thread ring of events behind producer buffers and partition queues: order
// and contiguity across wrap-around and growth.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <sluice/engine/fifo.hpp>

#include <doctest/doctest.h>

TEST_SUITE("engine.buffers") {

TEST_CASE("fifo: front(n) is contiguous after wrap-around, order kept, no leaks") {
  sluice::Fifo<std::string> f;
  int next = 0, expect = 0;
  for (int round = 0; round < 100; ++round) {
    for (int i = 0; i < 11; ++i)
      f.push_back(std::to_string(next++));
    auto s = f.front(7);
    REQUIRE(s.size() == 7);
    for (auto& v : s)
      CHECK(v == std::to_string(expect++));
    f.pop_front(7);
  }
  CHECK(f.size() == static_cast<std::size_t>(next - expect));
  CHECK(f.popped_total() == static_cast<std::uint64_t>(expect));
}

TEST_CASE("fifo: append moves a span in, across the wrap-around and growth, order kept") {
  sluice::Fifo<std::string> f;
  int next = 0, expect = 0;
  auto batch = [&](int n) {
    std::vector<std::string> v;
    for (int i = 0; i < n; ++i)
      v.push_back(std::to_string(next++));
    return v;
  };
  for (int round = 0; round < 200; ++round) {
    auto v = batch(1 + round % 37);
    f.append(v);
    for (auto& s : v)
      REQUIRE(s.empty());  // moved from
    const auto n = std::min<std::size_t>(f.size(), static_cast<std::size_t>(round % 29));
    auto front = f.front(n);
    for (auto& s : front)
      REQUIRE(s == std::to_string(expect++));
    f.pop_front(n);
  }
  CHECK(f.size() == static_cast<std::size_t>(next - expect));
  auto rest = f.front(f.size());
  for (auto& s : rest)
    REQUIRE(s == std::to_string(expect++));
  std::vector<std::string> none;
  f.append(none);
  CHECK(f.pushed_total() == static_cast<std::uint64_t>(next));
}

}  // TEST_SUITE("engine.buffers")
