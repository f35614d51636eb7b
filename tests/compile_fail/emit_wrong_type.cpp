// Must not compile: a producer_consumer of std::string emits something that is not one and
// does not convert to one. Before, ctx.emit deduced the event's type from its argument.
#include <span>
#include <string>

#include <sluice/sluice.hpp>

struct NotAString {};

struct Stage {
  void handle_events(std::span<int> events, sluice::Context<std::string>& ctx) {
    for (int e : events) {
      (void)e;
      ctx.emit(NotAString{});
    }
  }
};

int main() {
  sluice::Graph g;
  g.source("numbers", sluice::from_range(std::views::iota(0, 10)))
      .then<std::string>("words", Stage{})
      .for_each("sink", [](const std::string&) {});
  g.run().wait();
}
