// Shared blocks, the batches a broadcast sends to several edges at once: reference counting
// through edges, recycling by the pool, and release from several threads while the owner closes.
#include <cstdint>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <sluice/engine/detail/edge.hpp>
#include <sluice/engine/detail/shared_block.hpp>

#include <doctest/doctest.h>

using sluice::detail::Edge;
using sluice::detail::EdgeMessage;

TEST_SUITE("engine.shared") {

TEST_CASE("shared batches: one block read through several edges, recycled when all let go") {
  auto* pool = new sluice::detail::BlockPool<std::string>();
  std::vector<std::string> events{"a", "b", "c", "d"};
  auto* block = pool->make(std::span<std::string>(events));  // one reference: ours
  Edge<std::string> e1(8, 0, 1), e2(8, 0, 2);
  REQUIRE(e1.push_shared(block, 0, 4));
  REQUIRE(e2.push_shared(block, 1, 2));
  block->release();  // the dispatcher's handle goes; the two messages keep it alive
  const EdgeMessage* m1 = e1.peek();
  REQUIRE(m1 != nullptr);
  CHECK(m1->kind == EdgeMessage::Kind::shared);
  auto s1 = e1.shared_events_of(*m1);
  CHECK(std::vector<std::string>(s1.begin(), s1.end()) ==
        std::vector<std::string>{"a", "b", "c", "d"});
  e1.release_events(*m1, 0, 4);
  e1.pop();
  CHECK(e1.consumed_approx() == 4);
  // e2 reads half of its message, then is discarded: the unread event counts as lost.
  const EdgeMessage* m2 = e2.peek();
  REQUIRE(m2 != nullptr);
  auto s2 = e2.shared_events_of(*m2);
  CHECK(std::vector<std::string>(s2.begin(), s2.end()) == std::vector<std::string>{"b", "c"});
  e2.release_events(*m2, 0, 1);
  CHECK(e2.discard_unread() == 1);  // the last reference: the block goes back to the pool
  // The pool hands the same memory out again: steady state allocates nothing.
  std::vector<std::string> more{"x"};
  auto* again = pool->make(std::span<std::string>(more));
  CHECK(again == block);
  CHECK(again->events()[0] == "x");
  again->release();
  pool->close();  // frees the pool and its blocks (ASan checks)
}

TEST_CASE("shared batches: a block in use outlives its pool's owner") {
  auto* pool = new sluice::detail::BlockPool<std::string>();
  std::vector<std::string> events{"kept"};
  auto* block = pool->make(std::span<std::string>(events));
  pool->close();  // the producer is gone; the block is still being read
  CHECK(block->events()[0] == "kept");
  block->release();  // frees the block, then the pool
}

TEST_CASE("shared batches: released on many threads while the owner closes (TSan)") {
  for (int round = 0; round < 50; ++round) {
    auto* pool = new sluice::detail::BlockPool<std::int64_t>();
    std::vector<sluice::detail::SharedBlock<std::int64_t>*> blocks;
    for (int i = 0; i < 8; ++i) {
      std::vector<std::int64_t> ev{i, i + 1};
      auto* b = pool->make(std::span<std::int64_t>(ev));
      b->retain();  // two readers each
      blocks.push_back(b);
    }
    std::thread t1([&] {
      for (auto* b : blocks)
        b->release();
    });
    std::thread t2([&] {
      for (auto* b : blocks)
        b->release();
    });
    pool->close();
    t1.join();
    t2.join();
  }
}

}  // TEST_SUITE("engine.shared")
