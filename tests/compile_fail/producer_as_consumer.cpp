// Must not compile: a producer cannot subscribe (checked by ctest: engine.compile_fail.*).
#include <cstdint>

#include <sluice/sluice.hpp>

struct P {
  void handle_demand(std::size_t, sluice::Context<std::int64_t>&) {}
};

int main() {
  sluice::Engine e;
  auto a = e.producer<std::int64_t>("a", P{}, sluice::demand_dispatcher<std::int64_t>());
  auto b = e.producer<std::int64_t>("b", P{}, sluice::demand_dispatcher<std::int64_t>());
  e.subscribe(a, b);
}
