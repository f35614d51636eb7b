// The edge's rings on their own: message boundaries, wrap-around, the end message, asks and
// their spill, cancellation, and a two-thread run that TSan checks.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sluice/engine/detail/edge.hpp>
#include <sluice/engine/detail/emit_buffer.hpp>
#include <sluice/engine/detail/shared_block.hpp>
#include <sluice/engine/detail/stable_table.hpp>
#include <sluice/engine/fifo.hpp>

#include <doctest/doctest.h>

using sluice::detail::Edge;
using sluice::detail::EdgeMessage;

namespace {
template <class T>
std::vector<T> read_message(Edge<T>& e) {
  const EdgeMessage* m = e.peek();
  REQUIRE(m != nullptr);
  REQUIRE(m->kind == EdgeMessage::Kind::events);
  auto span = e.events_of(*m);
  std::vector<T> out(span.begin(), span.end());
  e.release_events(*m, 0, m->count);
  e.pop();
  return out;
}
}  // namespace

TEST_SUITE("engine.edge") {

TEST_CASE("messages keep their boundaries and order, across many wrap-arounds") {
  Edge<std::int64_t> e(10, 0, 1);  // event ring 32, message ring 16
  std::int64_t next = 0, expect = 0;
  for (int round = 0; round < 200; ++round) {
    const auto n = static_cast<std::size_t>(1 + round % 7);
    std::vector<std::int64_t> batch;
    for (std::size_t i = 0; i < n; ++i)
      batch.push_back(next++);
    REQUIRE(e.push(batch));
    auto got = read_message(e);
    REQUIRE(got.size() == n);
    for (auto v : got)
      CHECK(v == expect++);
  }
  CHECK(e.pushed_approx() == static_cast<std::uint64_t>(next));
  CHECK(e.consumed_approx() == static_cast<std::uint64_t>(next));
}

TEST_CASE("an edge holds max_demand events in any split, and refuses more") {
  Edge<std::int64_t> e(8, 0, 1);
  std::vector<std::int64_t> one{1};
  for (int i = 0; i < 8; ++i)
    REQUIRE(e.push(one));  // 8 one-event messages: the message ring holds them
  std::vector<std::int64_t> big(32, 7);
  CHECK_FALSE(e.push(big));  // beyond the event ring: refused, nothing moved
  for (int i = 0; i < 8; ++i)
    CHECK(read_message(e) == one);
  CHECK(e.peek() == nullptr);
}

TEST_CASE("non-trivial events are moved in and destroyed once") {
  Edge<std::string> e(4, 0, 1);
  std::vector<std::string> batch{"a long string that is not in the small buffer", "b"};
  REQUIRE(e.push(batch));
  CHECK(batch[0].empty());  // moved from
  CHECK(read_message(e) ==
        std::vector<std::string>{"a long string that is not in the small buffer", "b"});
  std::vector<std::string> unread{"left on the edge"};
  REQUIRE(e.push(unread));
  CHECK(e.discard_unread() == 1);  // ASan checks nothing leaks or is freed twice
}

TEST_CASE("the end message comes after every event and carries the reason") {
  Edge<int> e(4, 0, 1);
  std::vector<int> b{1, 2, 3};
  REQUIRE(e.push(b));
  e.push_end(sluice::Reason::error("gone"));
  CHECK(read_message(e) == b);
  const EdgeMessage* m = e.peek();
  REQUIRE(m != nullptr);
  CHECK(m->kind == EdgeMessage::Kind::end);
  CHECK(e.end_reason().message == "gone");
}

TEST_CASE("asks arrive one by one, in order, past the ring they are combined") {
  Edge<int> e(3, 0, 1);  // ask ring of 4
  for (int n : {1, 2, 3})
    e.ask(n);
  std::vector<std::int64_t> seen;
  e.take_asks([&](std::int64_t n) { seen.push_back(n); });
  CHECK(seen == std::vector<std::int64_t>{1, 2, 3});
  CHECK(e.credit_approx() == 0);
  for (int n : {1, 1, 1, 1, 5, 6})  // 4 fit, 5 and 6 spill
    e.ask(n);
  seen.clear();
  e.take_asks([&](std::int64_t n) { seen.push_back(n); });
  CHECK(seen == std::vector<std::int64_t>{1, 1, 1, 1, 11});
}

TEST_CASE("a cancel is seen by the producer with its reason") {
  Edge<int> e(4, 0, 1);
  CHECK_FALSE(e.cancelled_by_consumer());
  e.cancel(sluice::Reason::shutdown());
  CHECK(e.cancelled_by_consumer());
  CHECK(e.cancel_reason().kind == sluice::Reason::Kind::shutdown);
}

TEST_CASE("two threads: demand-bounded messages of random sizes arrive intact") {
  constexpr std::int64_t total = 2'000'000;
  constexpr std::int64_t max_demand = 100;
  Edge<std::int64_t> e(max_demand, 0, 1);
  std::int64_t errors = 0, received = 0;  // consumer's, read after join
  std::thread consumer([&] {
    e.ask(max_demand);
    std::int64_t expect = 0;
    while (expect < total) {
      const EdgeMessage* m = e.peek();
      if (m == nullptr) {
        std::this_thread::yield();
        continue;
      }
      auto span = e.events_of(*m);
      for (auto v : span)
        errors += (v != expect++);
      received += m->count;
      const auto n = m->count;
      e.release_events(*m, 0, n);
      e.pop();
      e.ask(n);
    }
  });
  std::thread producer([&] {
    std::mt19937 rng(42);
    std::int64_t credit = 0, next = 0;
    std::vector<std::int64_t> batch;
    while (next < total) {
      e.take_asks([&](std::int64_t n) { credit += n; });
      if (credit == 0) {
        std::this_thread::yield();
        continue;
      }
      const auto n = std::min<std::int64_t>(
          {credit, total - next, std::uniform_int_distribution<std::int64_t>(1, 60)(rng)});
      batch.clear();
      for (std::int64_t i = 0; i < n; ++i)
        batch.push_back(next++);
      if (!e.push(batch)) {
        ++errors;  // credit said it fits
        break;
      }
      credit -= n;
    }
  });
  producer.join();
  consumer.join();
  CHECK(errors == 0);
  CHECK(received == total);
}

}  // TEST_SUITE("engine.edge")

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

TEST_CASE("emit buffer: grows, keeps order, clears without freeing") {
  sluice::detail::EmitBuffer<std::string> b;
  for (int i = 0; i < 1000; ++i)
    b.push_back(std::to_string(i));
  REQUIRE(b.size() == 1000);
  CHECK(b[999] == "999");
  const auto* data = b.data();
  b.clear();
  CHECK(b.empty());
  b.push_back(std::string("x"));
  CHECK(b.data() == data);  // capacity kept: no allocation in steady state
}

TEST_CASE("emit buffer: append_generated stops at max or at the first empty, across growth") {
  sluice::detail::EmitBuffer<std::string> b;
  int next = 0;
  auto gen = [&]() -> std::optional<std::string> {
    if (next == 700) return std::nullopt;
    return std::to_string(next++);
  };
  CHECK(b.append_generated(600, gen) == 600);  // past the first capacity (256): grows twice
  REQUIRE(b.size() == 600);
  CHECK(b[0] == "0");
  CHECK(b[599] == "599");
  CHECK(b.append_generated(0, gen) == 0);
  CHECK(b.append_generated(500, gen) == 100);  // ran dry
  CHECK(next == 700);
  REQUIRE(b.size() == 700);
  CHECK(b[699] == "699");
  CHECK(b.append_generated(5, gen) == 0);
  CHECK(b.size() == 700);
}

TEST_CASE("emit buffer: what append_generated appended before a throw stays") {
  sluice::detail::EmitBuffer<std::string> b;
  b.push_back(std::string("first"));
  int next = 0;
  auto gen = [&]() -> std::optional<std::string> {
    if (next == 300) throw std::runtime_error("boom");
    return std::to_string(next++);
  };
  CHECK_THROWS_AS(b.append_generated(1000, gen), std::runtime_error);
  REQUIRE(b.size() == 301);
  CHECK(b[0] == "first");
  CHECK(b[300] == "299");
}

TEST_CASE("emit buffer: append_kept keeps the accepted events in order, across growth") {
  // Trivially copyable events take the branch-free loop; the last store past the kept ones must
  // not show.
  sluice::detail::EmitBuffer<std::int64_t> ints;
  std::vector<std::int64_t> in(1000);
  for (std::size_t i = 0; i < in.size(); ++i)
    in[i] = static_cast<std::int64_t>(i);
  auto multiple_of_3 = [](const std::int64_t& e) { return e % 3 == 0; };
  CHECK(ints.append_kept(std::span<std::int64_t>(in), multiple_of_3) == 334);
  REQUIRE(ints.size() == 334);
  for (std::size_t i = 0; i < ints.size(); ++i)
    CHECK(ints[i] == static_cast<std::int64_t>(3 * i));
  auto none = [](const std::int64_t&) { return false; };
  CHECK(ints.append_kept(std::span<const std::int64_t>(in), none) == 0);
  CHECK(ints.size() == 334);

  // Owning events: moved from a mutable span, copied from a const one.
  sluice::detail::EmitBuffer<std::string> strings;
  std::vector<std::string> words{std::string(40, 'a'), "b", std::string(40, 'c'), "d"};
  auto long_word = [](const std::string& w) { return w.size() > 1; };
  CHECK(strings.append_kept(std::span<const std::string>(words), long_word) == 2);
  CHECK(words[0] == std::string(40, 'a'));  // copied
  CHECK(strings.append_kept(std::span<std::string>(words), long_word) == 2);
  CHECK(words[0].empty());  // moved from
  CHECK(words[1] == "b");   // not kept: untouched
  REQUIRE(strings.size() == 4);
  CHECK(strings[3] == std::string(40, 'c'));
}

TEST_CASE("emit buffer: what append_kept appended before a throw stays") {
  sluice::detail::EmitBuffer<std::string> b;
  std::vector<std::string> in{"0", "1", "2", "boom", "4"};
  auto keep = [](const std::string& e) {
    if (e == "boom") throw std::runtime_error("boom");
    return e != "1";
  };
  CHECK_THROWS_AS(b.append_kept(std::span<std::string>(in), keep), std::runtime_error);
  REQUIRE(b.size() == 2);
  CHECK(b[0] == "0");
  CHECK(b[1] == "2");
}

}  // TEST_SUITE("engine.buffers")

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

TEST_CASE("stable table: a reader indexes it while a writer appends, nothing moves") {
  sluice::detail::StableTable<std::unique_ptr<std::uint64_t>> table;
  constexpr std::uint64_t n = 20'000;  // many segments: 64, 128, ... 16384
  std::atomic<bool> done{false};
  std::uint64_t checked = 0, wrong = 0;
  std::thread reader([&] {
    for (bool last = false; !last;) {  // the last pass starts after the writer has finished
      last = done.load();
      const auto size = table.size();
      for (std::size_t i = size > 100 ? size - 100 : 0; i < size; ++i, ++checked)
        if (*table[i] != i) ++wrong;
    }
  });
  std::vector<const std::uint64_t*> where;
  std::uint64_t misnumbered = 0, moved = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    misnumbered += table.next_index() != i;
    table.add(std::make_unique<std::uint64_t>(i));
    where.push_back(table[i].get());
  }
  done = true;
  reader.join();
  CHECK(checked > 0);
  CHECK(wrong == 0);
  CHECK(misnumbered == 0);
  CHECK(table.size() == n);
  for (std::uint64_t i = 0; i < n; ++i)
    moved += table[i].get() != where[i];
  CHECK(moved == 0);
}
