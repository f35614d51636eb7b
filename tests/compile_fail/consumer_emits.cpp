// Must not compile: a consumer (Context<void>) emits an event. Before, ctx.emit deduced the
// event's type from its argument, so this compiled and the event vanished.
#include <span>

#include <sluice/sluice.hpp>

struct EmittingSink {
  void handle_events(std::span<int> events, sluice::Context<void>& ctx) {
    for (int e : events)
      ctx.emit(e);
  }
};

int main() {
  sluice::Graph g;
  g.source("numbers", sluice::from_range(std::views::iota(0, 10))).to("sink", EmittingSink{});
  g.run().wait();
}
