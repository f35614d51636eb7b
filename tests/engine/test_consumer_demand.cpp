// GenStage's consumer demand algorithm (Utils.split_batches; GENSTAGE.md 1.5), asserted on the
// pure state machine: exact chunk sizes and asks.
#include <cstdint>
#include <utility>
#include <vector>

#include <sluice/engine/detail/consumer_demand.hpp>

#include <doctest/doctest.h>

using sluice::detail::ConsumerDemand;

namespace {
// (chunk size, ask) for each chunk of one message of `count` events.
std::vector<std::pair<std::int64_t, std::int64_t>> message(ConsumerDemand& d, std::int64_t count) {
  std::vector<std::pair<std::int64_t, std::int64_t>> out;
  d.begin(count);
  while (d.more()) {
    auto c = d.next();
    out.emplace_back(c.size, c.ask);
  }
  return out;
}
using Chunks = std::vector<std::pair<std::int64_t, std::int64_t>>;
}  // namespace

TEST_SUITE("engine.consumer_demand") {

TEST_CASE("default max 1000 / min 500: one 1000-event message is two chunks asking 500 each") {
  ConsumerDemand d{1000, 500};
  CHECK(d.subscribe() == 1000);
  CHECK(message(d, 1000) == Chunks{{500, 500}, {500, 500}});
  CHECK(d.pending() == 1000);
}

TEST_CASE("max 1000 / min 750 with 100-event messages asks 300 after every third message") {
  ConsumerDemand d{1000, 750};
  d.subscribe();
  CHECK(message(d, 100) == Chunks{{100, 0}});
  CHECK(d.pending() == 900);
  CHECK(message(d, 100) == Chunks{{100, 0}});
  CHECK(d.pending() == 800);
  CHECK(message(d, 100) == Chunks{{100, 300}});  // 700 <= 750: ask back up to 1000
  CHECK(d.pending() == 1000);
  for (int round = 0; round < 2; ++round) {
    CHECK(message(d, 100) == Chunks{{100, 0}});
    CHECK(message(d, 100) == Chunks{{100, 0}});
    CHECK(message(d, 100) == Chunks{{100, 300}});
  }
}

TEST_CASE("80% min demand (max 100 / min 80): chunks of 20, each asks 20") {
  ConsumerDemand d{100, 80};
  d.subscribe();
  CHECK(message(d, 100) == Chunks{{20, 20}, {20, 20}, {20, 20}, {20, 20}, {20, 20}});
  CHECK(message(d, 20) == Chunks{{20, 20}});
}

TEST_CASE("20% min demand (max 100 / min 20): chunks of 80") {
  // GenStage test "with 20% min demand": 0..79 (ask 80), 80..99 (no ask), 100..179 (ask 100),
  // 180..259 (ask 80), 260..279 (no ask).
  ConsumerDemand d{100, 20};
  d.subscribe();
  CHECK(message(d, 100) == Chunks{{80, 80}, {20, 0}});
  CHECK(d.pending() == 80);
  CHECK(message(d, 80) == Chunks{{80, 100}});
  CHECK(message(d, 100) == Chunks{{80, 80}, {20, 0}});
}

TEST_CASE("max 1 / min 0: one event per chunk, ask 1 after each") {
  ConsumerDemand d{1, 0};
  CHECK(d.subscribe() == 1);
  CHECK(message(d, 1) == Chunks{{1, 1}});
  CHECK(message(d, 1) == Chunks{{1, 1}});
}

TEST_CASE("min 0: the chunk size is max") {
  ConsumerDemand d{4, 0};
  d.subscribe();
  CHECK(message(d, 4) == Chunks{{4, 4}});
  CHECK(message(d, 3) == Chunks{{3, 0}});
  CHECK(message(d, 1) == Chunks{{1, 4}});
}

TEST_CASE("chunks are cut from the start of a message, so an ask can exceed max - min") {
  ConsumerDemand d{10, 5};
  d.subscribe();
  CHECK(message(d, 3) == Chunks{{3, 0}});          // pending 7
  CHECK(message(d, 7) == Chunks{{5, 8}, {2, 0}});  // 7-5 = 2 <= 5: ask 8 (> max - min = 5)
  CHECK(d.pending() == 8);
}

TEST_CASE("excess events are counted, still chunked, and do not make demand negative") {
  ConsumerDemand d{4, 2};
  d.subscribe();
  d.begin(6);
  auto a = d.next();
  CHECK(a.size == 2);
  CHECK(a.excess == 0);
  CHECK(a.ask == 2);  // 4-2 = 2 <= 2
  auto b = d.next();
  CHECK(b.size == 2);
  CHECK(b.excess == 0);
  auto c = d.next();
  CHECK(c.size == 2);
  CHECK(c.excess == 2);  // the message held 6 events against 4 asked
  CHECK_FALSE(d.more());
  CHECK(d.pending() >= 0);
}

}  // TEST_SUITE("engine.consumer_demand")
