// Must not compile: a builder stage whose events have a move constructor that may throw (the
// engine cannot roll back a throwing move in its buffers and edges). The same rule as
// Engine::producer's, checked where every API declares a stage.
#include <ranges>

#include <sluice/sluice.hpp>

struct Fragile {
  int v = 0;
  Fragile() = default;
  Fragile(int x) : v(x) {}  // NOLINT: implicit by design
  Fragile(const Fragile&) = default;
  Fragile(Fragile&& o) noexcept(false) : v(o.v) {}
  Fragile& operator=(const Fragile&) = default;
};

int main() {
  sluice::Graph g;
  g.source("numbers", sluice::from_range(std::views::iota(0, 10)))
      .map("fragile", [](int x) { return Fragile(x); })
      .for_each("sink", [](const Fragile&) {});
}
