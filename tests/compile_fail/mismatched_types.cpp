// Must not compile: the consumer takes strings, the producer emits integers.
#include <cstdint>
#include <span>
#include <string>

#include <sluice/sluice.hpp>

struct P {
  void handle_demand(std::size_t, sluice::Context<std::int64_t>&) {}
};
struct C {
  void handle_events(std::span<std::string>, sluice::Context<void>&) {}
};

int main() {
  sluice::Engine e;
  auto p = e.producer<std::int64_t>("p", P{}, sluice::demand_dispatcher<std::int64_t>());
  auto c = e.consumer<std::string>("c", C{});
  e.subscribe(c, p);
}
