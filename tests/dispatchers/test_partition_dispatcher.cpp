// Port of GenStage 1.3.2's test/gen_stage/partition_dispatcher_test.exs (all 14 tests), at the
// dispatcher level: a PartitionDispatcher<int> driven through a recording Outbox, asserting each
// return value, {waiting, pending}, and the messages each subscriber receives, in order. Elixir
// refs are subscriber ids. Where GenStage uses its default hash (:erlang.phash2(e, n)), the test
// injects a hash that reproduces phash2's table for the events used, so the expectations carry
// over unchanged. Atoms are strings ("odd", "even").
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <sluice/dispatchers/partition.hpp>

#include <doctest/doctest.h>

#include "support/recorder.hpp"

namespace {

using Events = std::vector<int>;
using Recorder = sluice_test::Recorder<int>;
using Sends = std::vector<Recorder::Sent>;
using sluice::Partition;
using sluice::SubscriberId;
using sluice_test::dispatch;

/// :erlang.phash2(e, 2) for the events of these tests (GENSTAGE.md; checked against Erlang).
int phash2_2(int e) {
  static const std::map<int, int> table{{0, 1}, {1, 0}, {2, 0}, {3, 1},  {4, 1},  {5, 0}, {6, 0},
                                        {7, 0}, {8, 0}, {9, 0}, {10, 1}, {11, 0}, {12, 1}};
  return table.at(e);
}

/// GenStage's default hash for `partitions: n` with n = 1 or 2.
auto phash2(int n) {
  return [n](int& e) -> std::int64_t { return n == 1 ? 0 : phash2_2(e); };
}
using Phash = decltype(phash2(2));
using D = sluice::PartitionDispatcher<int, Phash>;

sluice::SubscriberInfo sub(SubscriberId id, std::optional<Partition> partition) {
  sluice::SubscriptionOptions o;
  o.partition = std::move(partition);
  return sluice::SubscriberInfo{id, "consumer", o, 0};
}

template <class Disp>
std::pair<std::int64_t, std::int64_t> waiting_and_pending(const Disp& d) {
  return {d.waiting(), d.pending()};
}
using WP = std::pair<std::int64_t, std::int64_t>;

}  // namespace

TEST_SUITE("dispatchers.partition") {
TEST_CASE("subscribes, asks and cancels") {
  D d(2, phash2(2));
  Recorder out;
  // Subscribe, ask and cancel and leave some demand
  CHECK(d.subscribe(sub(0, 0), out) == 0);
  CHECK(d.ask(0, 10, out) == 10);
  CHECK(waiting_and_pending(d) == WP{10, 0});
  CHECK(d.cancel(0, out) == 0);
  CHECK(waiting_and_pending(d) == WP{10, 10});
  // Subscribe again and the same demand is back
  CHECK(d.subscribe(sub(0, 1), out) == 0);
  CHECK(d.ask(0, 5, out) == 0);
  CHECK(waiting_and_pending(d) == WP{10, 5});
  CHECK(d.cancel(0, out) == 0);
  CHECK(waiting_and_pending(d) == WP{10, 10});
  // Now attempt to dispatch with no consumers: the events wait in their partitions' queues.
  // No subscribed partition waits for anything, so the demand is used up as in GenStage.
  CHECK(dispatch<int>(d, out, {0, 1, 2, 3}).leftovers.empty());
  CHECK(waiting_and_pending(d) == WP{6, 10});
  CHECK(out.unasked_count == 0);
  CHECK(out.sent.empty());
  CHECK(d.queue_size_of(0) == 2);
  CHECK(d.queue_size_of(1) == 2);
  CHECK(d.buffered() == 4);
}

TEST_CASE("subscribes, asks and dispatches") {
  sluice::PartitionDispatcher<int, Phash> d(1, phash2(1));
  Recorder out;
  CHECK(d.subscribe(sub(0, 0), out) == 0);
  CHECK(d.ask(0, 3, out) == 3);
  CHECK(dispatch<int>(d, out, {1}).leftovers.empty());
  CHECK(waiting_and_pending(d) == WP{2, 0});
  CHECK(out.take_sent() == Sends{{0, {1}}});
  CHECK(d.ask(0, 3, out) == 3);
  CHECK(waiting_and_pending(d) == WP{5, 0});
  CHECK(dispatch<int>(d, out, {2, 5, 6, 7, 8, 9, 11}).leftovers == Events{9, 11});
  CHECK(waiting_and_pending(d) == WP{0, 0});
  CHECK(out.take_sent() == Sends{{0, {2, 5, 6, 7, 8}}});
}

TEST_CASE("subscribes, asks and dispatches to custom partitions") {
  auto odd_even = [](int& e) { return std::string(e % 2 == 0 ? "even" : "odd"); };
  sluice::PartitionDispatcher<int, decltype(odd_even)> d(std::vector<Partition>{"odd", "even"},
                                                         odd_even);
  Recorder out;
  CHECK(d.subscribe(sub(0, "odd"), out) == 0);
  CHECK(d.ask(0, 3, out) == 3);
  CHECK(dispatch<int>(d, out, {1}).leftovers.empty());
  CHECK(waiting_and_pending(d) == WP{2, 0});
  CHECK(out.take_sent() == Sends{{0, {1}}});
  CHECK(d.ask(0, 3, out) == 3);
  CHECK(waiting_and_pending(d) == WP{5, 0});
  CHECK(dispatch<int>(d, out, {5, 7, 9, 11, 13, 15, 17}).leftovers == Events{15, 17});
  CHECK(waiting_and_pending(d) == WP{0, 0});
  CHECK(out.take_sent() == Sends{{0, {5, 7, 9, 11, 13}}});
}

TEST_CASE("subscribes, asks and dispatches to partitions or none") {
  auto hash = [](int& e) -> std::optional<std::string> {
    if (e % 3 == 0) return std::nullopt;
    return e % 2 == 0 ? "even" : "odd";
  };
  sluice::PartitionDispatcher<int, decltype(hash)> d(std::vector<Partition>{"odd", "even"}, hash);
  Recorder out;
  constexpr SubscriberId even_ref = 0, odd_ref = 1;
  CHECK(d.subscribe(sub(even_ref, "even"), out) == 0);
  CHECK(d.subscribe(sub(odd_ref, "odd"), out) == 0);
  CHECK(d.ask(even_ref, 4, out) == 4);
  CHECK(d.ask(odd_ref, 4, out) == 4);
  CHECK(dispatch<int>(d, out, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}).leftovers == Events{12});
  CHECK(out.take_sent() == Sends{{odd_ref, {1, 5, 7, 11}}, {even_ref, {2, 4, 8, 10}}});
  CHECK(waiting_and_pending(d) == WP{0, 0});
  CHECK(out.filtered_count == 3);  // 3, 6 and 9: dropped by the hash, using no demand
}

TEST_CASE("buffers events before subscription") {
  D d(2, phash2(2));
  Recorder out;
  // Use one subscription to queue
  CHECK(d.subscribe(sub(0, 1), out) == 0);
  CHECK(d.ask(0, 5, out) == 5);
  CHECK(dispatch<int>(d, out, {1, 2, 5, 6, 7}).leftovers.empty());
  CHECK(waiting_and_pending(d) == WP{0, 0});
  CHECK(out.take_sent().empty());
  CHECK(dispatch<int>(d, out, {8, 9}).leftovers == Events{8, 9});
  CHECK(waiting_and_pending(d) == WP{0, 0});
  // Use another subscription to get events back
  CHECK(d.subscribe(sub(1, 0), out) == 0);
  CHECK(d.ask(1, 5, out) == 5);
  CHECK(waiting_and_pending(d) == WP{5, 0});
  CHECK(out.take_sent() == Sends{{1, {1, 2, 5, 6, 7}}});
  CHECK(dispatch<int>(d, out, {1, 2}).leftovers.empty());
  CHECK(waiting_and_pending(d) == WP{3, 0});
  CHECK(out.take_sent().empty());  // partition 0 has no demand left: queued
  CHECK(d.queue_size_of(0) == 2);
}

// Not in GenStage (docs/GENSTAGE.md difference 19): there the events of a partition whose
// subscriber left use up the demand the other partitions asked for, and their consumers starve.
TEST_CASE("events for a partition whose subscriber left meet no demand the others wait for") {
  D d(2, phash2(2));
  Recorder out;
  CHECK(d.subscribe(sub(0, 0), out) == 0);
  CHECK(d.subscribe(sub(1, 1), out) == 0);
  CHECK(d.ask(0, 4, out) == 4);
  CHECK(d.ask(1, 4, out) == 4);
  CHECK(d.cancel(1, out) == 0);  // partition 1 had no queue: its demand goes to pending
  CHECK(waiting_and_pending(d) == WP{8, 4});
  // Partition 0 waits for 4 and waiting (8) covers them with 4 to spare: the spare demand, asked
  // for the consumer that left, is used up by partition 1's events first.
  CHECK(dispatch<int>(d, out, {0, 3, 4, 10}).leftovers.empty());  // all partition 1
  CHECK(waiting_and_pending(d) == WP{4, 4});
  CHECK(out.unasked_count == 0);
  // Now waiting is only what partition 0 waits for: partition 1's events meet no demand.
  CHECK(dispatch<int>(d, out, {12, 1, 0, 2}).leftovers.empty());  // 1, 0 to partition 0
  CHECK(waiting_and_pending(d) == WP{2, 4});
  CHECK(out.unasked_count == 2);
  CHECK(out.take_sent() == Sends{{0, {1, 2}}});
  CHECK(d.demand_of(0) == 2);
  CHECK(d.queue_size_of(1) == 6);  // kept for a later subscriber (bounded by queue_size)
  // A new subscriber takes partition 1: its events use demand up again.
  CHECK(d.subscribe(sub(2, 1), out) == 0);
  CHECK(d.ask(2, 10, out) == 6);  // 4 of its 10 were already asked for (pending)
  CHECK(out.take_sent() == Sends{{2, {0, 3, 4, 10, 12, 0}}});
}

TEST_CASE("buffers events after subscription") {
  D d(2, phash2(2));
  Recorder out;
  constexpr SubscriberId ref0 = 0, ref1 = 1;
  CHECK(d.subscribe(sub(ref0, 0), out) == 0);
  CHECK(d.ask(ref0, 5, out) == 5);
  CHECK(waiting_and_pending(d) == WP{5, 0});
  CHECK(d.subscribe(sub(ref1, 1), out) == 0);
  CHECK(d.ask(ref1, 5, out) == 5);
  CHECK(waiting_and_pending(d) == WP{10, 0});
  // Send all events to the same partition, half of them will be buffered
  CHECK(dispatch<int>(d, out, {1, 2}).leftovers.empty());
  CHECK(dispatch<int>(d, out, {5, 6, 7, 1, 2, 5, 6, 7}).leftovers.empty());
  CHECK(waiting_and_pending(d) == WP{0, 0});
  CHECK(out.take_sent() == Sends{{ref0, {1, 2}}, {ref0, {5, 6, 7}}});
  CHECK(d.queued(ref0) == 5);  // skew, as the edge metric shows it
  CHECK(d.queued(ref1) == 0);
  CHECK(d.ask(ref0, 5, out) == 5);
  CHECK(waiting_and_pending(d) == WP{5, 0});
  CHECK(out.take_sent() == Sends{{ref0, {1, 2, 5, 6, 7}}});
}

TEST_CASE("subscribes, asks and cancels with buffer") {
  D d(2, phash2(2));
  Recorder out;
  constexpr SubscriberId ref1 = 0, ref0 = 1;
  CHECK(d.subscribe(sub(ref1, 1), out) == 0);
  CHECK(d.ask(ref1, 5, out) == 5);
  CHECK(waiting_and_pending(d) == WP{5, 0});
  CHECK(d.subscribe(sub(ref0, 0), out) == 0);
  CHECK(dispatch<int>(d, out, {1, 2, 5, 6, 7}).leftovers.empty());
  CHECK(waiting_and_pending(d) == WP{0, 0});
  CHECK(out.take_sent().empty());
  // The info should not count as an event
  d.info(7, out);
  CHECK(out.infos.empty());
  CHECK(d.cancel(ref0, out) == 5);
  CHECK(waiting_and_pending(d) == WP{5, 0});
  CHECK(out.infos == std::vector<std::uint64_t>{7});
  // GenStage drops the cancelled partition's queue silently; we report it.
  CHECK(out.discarded == Events{1, 2, 5, 6, 7});
  CHECK(out.discard_reasons == std::vector<std::string>{"the queue of cancelled partition 0"});
}

TEST_CASE("delivers info to current process") {
  D d(2, phash2(2));
  Recorder out;
  CHECK(d.subscribe(sub(0, 0), out) == 0);
  CHECK(d.subscribe(sub(1, 1), out) == 0);
  CHECK(d.ask(1, 3, out) == 3);
  const auto before = waiting_and_pending(d);
  d.info(9, out);
  CHECK(out.infos == std::vector<std::uint64_t>{9});
  CHECK(waiting_and_pending(d) == before);
  CHECK(d.buffered() == 0);
}

TEST_CASE("does not queue info for non-existing consumers") {
  D d(2, phash2(2));
  Recorder out;
  d.info(1, out);
  CHECK(out.infos == std::vector<std::uint64_t>{1});
}

TEST_CASE("queues info to backed up consumers") {
  D d(2, phash2(2));
  Recorder out;
  constexpr SubscriberId ref0 = 0, ref1 = 1;
  CHECK(d.subscribe(sub(ref0, 0), out) == 0);
  CHECK(d.subscribe(sub(ref1, 1), out) == 0);
  CHECK(d.ask(ref1, 3, out) == 3);
  CHECK(dispatch<int>(d, out, {1, 2, 5}).leftovers.empty());
  d.info(4, out);
  CHECK(out.infos.empty());
  CHECK(d.ask(ref0, 5, out) == 5);
  CHECK(out.take_sent() == Sends{{ref0, {1, 2, 5}}});
  CHECK(out.infos == std::vector<std::uint64_t>{4});  // after the events before it
  CHECK(d.demand_of(0) == 2);
}

TEST_CASE("raises on unknown partition") {
  auto oops = [](int&) { return std::string("oops"); };
  sluice::PartitionDispatcher<int, decltype(oops)> d(std::vector<Partition>{"foo", "bar"}, oops);
  Recorder out;
  CHECK(d.subscribe(sub(0, "foo"), out) == 0);
  CHECK(d.ask(0, 3, out) == 3);
  Events events{1, 2, 5};
  CHECK_THROWS_WITH_AS(d.dispatch(std::span<int>(events), out),
                       "partition dispatcher: the hash computed unknown partition 'oops' for an "
                       "event (partitions: 'foo', 'bar')",
                       std::runtime_error);
}

// "errors if the :hash function returns a bad value": a hash returning something that is not
// a partition does not compile (static_assert "a partition hash must return the partition").

TEST_CASE("errors on init") {
  CHECK_THROWS_WITH_AS((sluice::PartitionDispatcher<int>(0)),
                       "option partitions must name at least 1 partition, got: 0",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS((sluice::PartitionDispatcher<int>(std::vector<Partition>{})),
                       "option partitions must name at least 1 partition, got: 0",
                       sluice::option_error);
  CHECK_THROWS_WITH_AS(
      (sluice::PartitionDispatcher<int>(std::vector<Partition>{"even", "odd"})),
      "option hash is required when partitions are not integers (got partitions: 'even', "
      "'odd')",
      sluice::option_error);
}

TEST_CASE("errors on subscribe") {
  Recorder out;
  {
    D d(2, phash2(2));
    CHECK_THROWS_WITH_AS(d.subscribe(sub(0, std::nullopt), out),
                         "option partition is required when subscribing to a partition "
                         "dispatcher (it has 2 partitions: 0, 1)",
                         sluice::option_error);
  }
  {
    D d(2, phash2(2));
    CHECK(d.subscribe(sub(0, 0), out) == 0);
    // GenStage raises here (the producer crashes); a refusal ends only the newcomer.
    CHECK_THROWS_WITH_AS(d.subscribe(sub(1, 0), out), "option partition 0 is already taken",
                         sluice::subscription_refused);
  }
  for (auto bad : {Partition(-1), Partition(2), Partition("oops")}) {
    D d(2, phash2(2));
    CHECK_THROWS_WITH_AS(d.subscribe(sub(0, bad), out),
                         ("option partition must be one of 0, 1, got: " + bad.to_string()).c_str(),
                         sluice::option_error);
  }
}
}  // TEST_SUITE("dispatchers.partition")

// Beyond GenStage's file.
TEST_SUITE("dispatchers.partition") {
TEST_CASE("a subscribed partition's full queue holds upstream demand back, dropping nothing") {
  sluice::PartitionDispatcherOptions o;
  o.queue_size = 3;
  auto all_to_0 = [](int&) { return 0; };
  sluice::PartitionDispatcher<int, decltype(all_to_0)> d(2, all_to_0, o);
  Recorder out;
  CHECK(d.subscribe(sub(0, 0), out) == 0);
  CHECK(d.subscribe(sub(1, 1), out) == 0);
  CHECK(d.ask(0, 1, out) == 1);
  CHECK(d.ask(1, 10, out) == 10);
  CHECK(dispatch<int>(d, out, {1, 2, 3, 4, 5, 6}).leftovers.empty());
  CHECK(out.take_sent() == Sends{{0, {1}}});
  CHECK(out.discarded.empty());
  CHECK(d.queue_size_of(0) == 5);  // past queue_size: what upstream was already asked for
  CHECK(d.ask(1, 10, out) == 0);   // partition 0 is backed up: held back
  CHECK(d.withheld() == 10);
  CHECK(d.ask(0, 2, out) == 0);  // 3 still queued: still held back
  CHECK(out.take_sent() == Sends{{0, {2, 3}}});
  CHECK(d.withheld() == 12);
  CHECK(d.ask(0, 1, out) == 13);  // 2 queued, below queue_size: all of it goes upstream
  CHECK(out.take_sent() == Sends{{0, {4}}});
  CHECK(d.withheld() == 0);
  CHECK(d.waiting() == 5 + 13);  // 11 asked first, 6 dispatched; then 13
  CHECK(d.ask(0, 5, out) == 5);
  CHECK(out.take_sent() == Sends{{0, {5, 6}}});
  CHECK(out.discarded.empty());
}

TEST_CASE("a backed-up partition that leaves releases the demand held for the others") {
  sluice::PartitionDispatcherOptions o;
  o.queue_size = 2;
  auto all_to_0 = [](int&) { return 0; };
  sluice::PartitionDispatcher<int, decltype(all_to_0)> d(2, all_to_0, o);
  Recorder out;
  CHECK(d.subscribe(sub(0, 0), out) == 0);
  CHECK(d.subscribe(sub(1, 1), out) == 0);
  CHECK(d.ask(1, 4, out) == 4);
  CHECK(dispatch<int>(d, out, {1, 2, 3}).leftovers.empty());
  CHECK(d.ask(1, 4, out) == 0);
  CHECK(d.withheld() == 4);
  // GenStage: the cancelled partition's queue is discarded and replaced upstream.
  CHECK(d.cancel(0, out) == 3 + 4);
  CHECK(out.discarded == Events{1, 2, 3});
  CHECK(d.withheld() == 0);
}

TEST_CASE("a partition without a subscriber keeps queue_size events: last by default") {
  sluice::PartitionDispatcherOptions o;
  o.queue_size = 2;
  auto all_to_0 = [](int&) { return 0; };
  sluice::PartitionDispatcher<int, decltype(all_to_0)> d(2, all_to_0, o);
  Recorder out;
  CHECK(d.subscribe(sub(1, 1), out) == 0);  // partition 0 is nobody's yet (a dynamic producer)
  CHECK(d.ask(1, 5, out) == 5);
  CHECK(dispatch<int>(d, out, {1, 2, 3, 4, 5}).leftovers.empty());
  CHECK(out.discarded == Events{1, 2, 3});
  CHECK(out.discard_reasons == std::vector<std::string>{"the queue of partition 0"});
  CHECK(d.queue_size_of(0) == 2);
  CHECK(d.ask(1, 5, out) == 5);  // an unsubscribed partition holds nothing back
  CHECK(d.subscribe(sub(0, 0), out) == 0);
  CHECK(d.ask(0, 5, out) == 5);
  CHECK(out.take_sent() == Sends{{0, {4, 5}}});
}

TEST_CASE("keep first drops the newest") {
  sluice::PartitionDispatcherOptions o;
  o.queue_size = 2;
  o.queue_keep = sluice::BufferKeep::first;
  auto all_to_0 = [](int&) { return 0; };
  sluice::PartitionDispatcher<int, decltype(all_to_0)> d(2, all_to_0, o);
  Recorder out;
  CHECK(d.subscribe(sub(1, 1), out) == 0);
  CHECK(d.ask(1, 5, out) == 5);
  CHECK(dispatch<int>(d, out, {1, 2, 3, 4, 5}).leftovers.empty());
  CHECK(out.discarded == Events{3, 4, 5});
  CHECK(d.queue_size_of(0) == 2);
}

TEST_CASE("the hash may rewrite the event") {
  auto tag = [](int& e) {
    const int p = e % 2;
    e = e * 10;
    return p;
  };
  sluice::PartitionDispatcher<int, decltype(tag)> d(2, tag);
  Recorder out;
  CHECK(d.subscribe(sub(0, 0), out) == 0);
  CHECK(d.subscribe(sub(1, 1), out) == 0);
  CHECK(d.ask(0, 5, out) == 5);
  CHECK(d.ask(1, 5, out) == 5);
  CHECK(dispatch<int>(d, out, {1, 2, 3}).leftovers.empty());
  CHECK(out.take_sent() == Sends{{0, {20}}, {1, {10, 30}}});
}

TEST_CASE("the default hash spreads integers over every partition") {
  sluice::PartitionDispatcher<int> d(4);
  Recorder out;
  for (SubscriberId i = 0; i < 4; ++i) {
    CHECK(d.subscribe(sub(i, static_cast<int>(i)), out) == 0);
    CHECK(d.ask(i, 1000, out) == 1000);
  }
  Events events;
  for (int i = 0; i < 4000; ++i)
    events.push_back(i * 4);  // multiples of 4: `e % 4` would send them all to partition 0
  CHECK(dispatch<int>(d, out, events).leftovers.empty());
  std::vector<std::size_t> per(4);
  for (auto& s : out.sent)
    per[s.to] += s.events.size();
  for (auto n : per)
    CHECK(n > 700);
}

TEST_CASE("small and large dispatches keep each partition's order, with owning events") {
  // A dispatch whose runs fit in scatter_bytes takes the scatter path; a larger one (4 x 10000
  // strings) the per-partition batches. Both must send the same thing: each partition's events in
  // order, the hash's rewrites kept, its drops counted as filtered.
  auto hash = [](std::string& e) -> std::optional<std::int64_t> {
    const auto n = std::stoll(e);
    if (n % 7 == 3) return std::nullopt;
    e += std::string(40, '!');  // past the small-string buffer: each event owns a heap block
    return n % 4;
  };
  for (int count : {100, 10000}) {
    CAPTURE(count);
    sluice::PartitionDispatcher<std::string, decltype(hash)> d(4, hash);
    sluice_test::Recorder<std::string> out;
    for (SubscriberId i = 0; i < 4; ++i) {
      CHECK(d.subscribe(sub(i, static_cast<int>(i)), out) == 0);
      CHECK(d.ask(i, 10000, out) == 10000);
    }
    std::vector<std::string> events;
    std::vector<std::vector<std::string>> expected(4);
    std::size_t dropped = 0;
    for (int i = 0; i < count; ++i) {
      events.push_back(std::to_string(i));
      if (i % 7 == 3)
        ++dropped;
      else
        expected[static_cast<std::size_t>(i % 4)].push_back(std::to_string(i) +
                                                            std::string(40, '!'));
    }
    CHECK(dispatch<std::string>(d, out, events).leftovers.empty());
    CHECK(out.filtered_count == dropped);
    std::vector<std::vector<std::string>> got(4);
    for (auto& m : out.sent)
      got[m.to].insert(got[m.to].end(), m.events.begin(), m.events.end());
    CHECK(got == expected);
    CHECK(d.waiting() == static_cast<std::int64_t>(4 * 10000 - count + dropped));
  }
}

TEST_CASE("a hash that throws half-way through a dispatch loses no memory and sends nothing") {
  auto hash = [](std::string& e) -> std::int64_t {
    if (e == "boom") throw std::runtime_error("the hash failed");
    return static_cast<std::int64_t>(e.size() % 2);
  };
  sluice::PartitionDispatcher<std::string, decltype(hash)> d(2, hash);
  sluice_test::Recorder<std::string> out;
  CHECK(d.subscribe(sub(0, 0), out) == 0);
  CHECK(d.subscribe(sub(1, 1), out) == 0);
  CHECK(d.ask(0, 10, out) == 10);
  CHECK(d.ask(1, 10, out) == 10);
  std::vector<std::string> events{std::string(50, 'a'), std::string(51, 'b'), "boom", "c"};
  CHECK_THROWS_WITH(d.dispatch(std::span<std::string>(events), out), "the hash failed");
  CHECK(out.sent.empty());  // under ASan: the events moved before the throw are freed
}

TEST_CASE("validation before running: missing, unknown and taken partitions, no subscriber") {
  sluice::PartitionDispatcher<int> d(3);
  sluice::SubscriptionOptions a, b, none;
  a.partition = 0;
  b.partition = 0;
  std::vector<sluice::SubscriberInfo> subs{{0, "c#0", a, 0}, {1, "c#1", b, 1}, {2, "c#2", none, 2}};
  CHECK(d.validate_subscribers(subs, false) ==
        std::vector<std::string>{
            "consumer 'c#1': option partition 0 is already taken by 'c#0'",
            "consumer 'c#2': option partition is required when subscribing to a partition "
            "dispatcher (it has 3 partitions: 0, 1, 2)",
            "partition 1 has no subscriber (its events would only be dropped)",
            "partition 2 has no subscriber (its events would only be dropped)"});
  // A dynamic producer may get its missing subscribers while running: conflicts only.
  CHECK(d.validate_subscribers(subs, true) ==
        std::vector<std::string>{
            "consumer 'c#1': option partition 0 is already taken by 'c#0'",
            "consumer 'c#2': option partition is required when subscribing to a partition "
            "dispatcher (it has 3 partitions: 0, 1, 2)"});
  CHECK(d.default_partition(2) == std::optional<Partition>(2));
  CHECK_FALSE(d.default_partition(3).has_value());
  sluice::SubscriptionOptions s;
  s.selector = sluice::selector<int>([](const int&) { return true; });
  CHECK_THROWS_WITH_AS(d.validate({0, "c", s, 0}),
                       "option selector: only a broadcast dispatcher selects events",
                       sluice::option_error);
}
}  // TEST_SUITE("dispatchers.partition")
