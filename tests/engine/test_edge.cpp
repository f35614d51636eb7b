// The edge's rings on their own: message boundaries, wrap-around, the end message, asks and
// their spill, cancellation, and a two-thread run that TSan checks.
#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <sluice/engine/detail/edge.hpp>

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
  CHECK(e.untaken_approx() == 0);
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
