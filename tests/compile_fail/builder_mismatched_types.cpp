// Must not compile: a stage taking std::string subscribes to a stage emitting int.
#include <ranges>
#include <string>

#include <sluice/sluice.hpp>

int main() {
  sluice::Graph g;
  auto numbers = g.source("numbers", sluice::from_range(std::views::iota(0, 10)));
  auto words = g.source("words", sluice::from_range(std::vector<std::string>{"a"}));
  auto sink = words.for_each("print", [](const std::string&) {});
  sink.subscribe(numbers);
}
