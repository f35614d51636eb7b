// Port of GenStage's test/gen_stage/demand_dispatcher_test.exs (all 8 tests), at the dispatcher
// level: a DemandDispatcher<std::string> driven directly through a recording Outbox, asserting the
// exact return values, which events went to which subscriber in which message, the leftovers and
// the state {demands, pending, max}. Elixir refs r1, r2, r3 (or r) are subscriber ids 0, 1, 2.
// The shuffle flag has no accessor; it is asserted by behaviour (fixed seeds).
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sluice/dispatchers/demand.hpp>
#include <sluice/engine/dispatcher.hpp>

#include <doctest/doctest.h>

#include "support/recorder.hpp"

namespace {

using Events = std::vector<std::string>;
using Dispatcher = sluice::DemandDispatcher<std::string>;
using Entry = Dispatcher::Entry;
using Demands = std::vector<Entry>;
using sluice::LogLevel;
using sluice::SubscriberId;

constexpr SubscriberId r = 0;
constexpr SubscriberId r1 = 0;
constexpr SubscriberId r2 = 1;
constexpr SubscriberId r3 = 2;

using Recorder = sluice_test::Recorder<std::string>;
using Sends = std::vector<Recorder::Sent>;
using sluice_test::dispatch;

sluice::SubscriberInfo sub(SubscriberId id) {
  return sluice::SubscriberInfo{id, "consumer", sluice::SubscriptionOptions{}, 0};
}

sluice::DemandDispatcherOptions shuffled(std::optional<std::uint64_t> seed = std::nullopt) {
  sluice::DemandDispatcherOptions o;
  o.shuffle_demands_on_first_dispatch = true;
  o.seed = seed;
  return o;
}

}  // namespace

namespace doctest {
template <>
struct StringMaker<Demands> {
  static String convert(const Demands& ds) {
    std::ostringstream s;
    s << "[";
    for (std::size_t i = 0; i < ds.size(); ++i)
      s << (i ? ", " : "") << "{" << ds[i].counter << ", id " << ds[i].id << "}";
    s << "]";
    return String(s.str().c_str());
  }
};
template <>
struct StringMaker<Events> {
  static String convert(const Events& es) {
    std::ostringstream s;
    s << "[";
    for (std::size_t j = 0; j < es.size(); ++j)
      s << (j ? "," : "") << es[j];
    s << "]";
    return String(s.str().c_str());
  }
};
template <>
struct StringMaker<std::optional<std::size_t>> {
  static String convert(const std::optional<std::size_t>& v) {
    return v ? String(std::to_string(*v).c_str()) : String("nil");
  }
};
}  // namespace doctest

// GenStage's state tuple {demands, pending, max, _shuffle} (the shuffle flag has no accessor).
// Usage: CHECK_STATE(d, pending, max, {counter, id}, ...) with the demands in order.
#define CHECK_STATE(d, expected_pending, expected_max, ...)              \
  do {                                                                   \
    CHECK((d).demands() == Demands{__VA_ARGS__});                        \
    CHECK((d).pending() == (expected_pending));                          \
    CHECK((d).max_demand() == std::optional<std::size_t>(expected_max)); \
  } while (0)

// GenStage's dispatcher(opts) helper: init returns {:ok, {[], 0, nil, shuffle}}.
#define CHECK_INITIAL(d)                     \
  do {                                       \
    CHECK((d).demands().empty());            \
    CHECK((d).pending() == 0);               \
    CHECK((d).max_demand() == std::nullopt); \
    CHECK((d).name() == "demand");           \
  } while (0)

constexpr std::optional<std::size_t> nil = std::nullopt;

TEST_SUITE("dispatchers.demand") {

// Ports "subscribes and cancels".
TEST_CASE("subscribes and cancels") {
  Dispatcher d;
  Recorder out;
  CHECK_INITIAL(d);

  CHECK(d.subscribe(sub(r), out) == 0);
  CHECK_STATE(d, 0u, nil, {0, r});

  CHECK(d.cancel(r, out) == 0);
  CHECK_STATE(d, 0u, nil);
  CHECK(out.quiet());
}

// Ports "subscribes, asks and cancels".
TEST_CASE("subscribes, asks and cancels") {
  Dispatcher d;
  Recorder out;
  CHECK_INITIAL(d);

  CHECK(d.subscribe(sub(r), out) == 0);
  CHECK_STATE(d, 0u, nil, {0, r});

  CHECK(d.ask(r, 10, out) == 10);
  CHECK_STATE(d, 0u, 10u, {10, r});

  // The outstanding demand of 10 becomes pending.
  CHECK(d.cancel(r, out) == 0);
  CHECK_STATE(d, 10u, 10u);

  // GenStage re-subscribes the same ref.
  CHECK(d.subscribe(sub(r), out) == 0);
  CHECK_STATE(d, 10u, 10u, {0, r});

  // 5 were already asked upstream on behalf of the cancelled subscription.
  CHECK(d.ask(r, 5, out) == 0);
  CHECK_STATE(d, 5u, 10u, {5, r});

  CHECK(d.cancel(r, out) == 0);
  CHECK_STATE(d, 10u, 10u);
  CHECK(out.quiet());
}

// Ports "subscribes, asks and dispatches".
TEST_CASE("subscribes, asks and dispatches") {
  Dispatcher d;
  Recorder out;
  CHECK_INITIAL(d);
  CHECK(d.subscribe(sub(r), out) == 0);

  CHECK(d.ask(r, 3, out) == 3);
  CHECK_STATE(d, 0u, 3u, {3, r});

  auto res = dispatch(d, out, {"a"});
  CHECK(res.taken == 1);
  CHECK(res.leftovers == Events{});
  CHECK_STATE(d, 0u, 3u, {2, r});
  CHECK(out.take_sent() == Sends{{r, {"a"}}});

  CHECK(d.ask(r, 3, out) == 3);
  CHECK_STATE(d, 0u, 3u, {5, r});
  CHECK(out.logs.empty());  // 3 is not above max 3

  res = dispatch(d, out, {"b", "c", "d", "e", "f", "g", "h"});
  CHECK(res.taken == 5);
  CHECK(res.leftovers == Events{"g", "h"});
  CHECK_STATE(d, 0u, 3u, {0, r});
  CHECK(out.take_sent() == Sends{{r, {"b", "c", "d", "e", "f"}}});

  res = dispatch(d, out, {"i", "j"});
  CHECK(res.taken == 0);
  CHECK(res.leftovers == Events{"i", "j"});
  CHECK_STATE(d, 0u, 3u, {0, r});
  CHECK(out.take_sent() == Sends{});  // refute_received {:"$gen_consumer", {_, ^ref}, _}
  CHECK(out.quiet());
}

// Ports "subscribes, asks multiple consumers".
TEST_CASE("subscribes, asks multiple consumers") {
  Dispatcher d;
  Recorder out;
  CHECK_INITIAL(d);
  CHECK(d.subscribe(sub(r1), out) == 0);
  CHECK(d.subscribe(sub(r2), out) == 0);
  CHECK(d.subscribe(sub(r3), out) == 0);

  CHECK(d.ask(r1, 4, out) == 4);
  CHECK(d.ask(r2, 2, out) == 2);
  CHECK(d.ask(r3, 3, out) == 3);
  CHECK_STATE(d, 0u, 4u, {4, r1}, {3, r3}, {2, r2});

  CHECK(d.ask(r3, 2, out) == 2);
  CHECK_STATE(d, 0u, 4u, {5, r3}, {4, r1}, {2, r2});

  CHECK(d.ask(r2, 4, out) == 4);
  CHECK_STATE(d, 0u, 4u, {6, r2}, {5, r3}, {4, r1});
  CHECK(out.quiet());  // no ask was above max 4: no warning
}

// Ports "subscribes, asks and dispatches to multiple consumers".
TEST_CASE("subscribes, asks and dispatches to multiple consumers") {
  Dispatcher d;
  Recorder out;
  CHECK_INITIAL(d);
  CHECK(d.subscribe(sub(r1), out) == 0);
  CHECK(d.subscribe(sub(r2), out) == 0);

  CHECK(d.ask(r1, 3, out) == 3);
  CHECK(d.ask(r2, 2, out) == 2);
  CHECK_STATE(d, 0u, 3u, {3, r1}, {2, r2});

  // One batch fits all
  auto res = dispatch(d, out, {"a", "b", "c", "d", "e"});
  CHECK(res.taken == 5);
  CHECK(res.leftovers == Events{});
  CHECK(out.take_sent() == Sends{{r1, {"a", "b", "c"}}, {r2, {"d", "e"}}});

  res = dispatch(d, out, {"a", "b", "c"});
  CHECK(res.taken == 0);
  CHECK(res.leftovers == Events{"a", "b", "c"});
  CHECK_STATE(d, 0u, 3u, {0, r1}, {0, r2});
  CHECK(out.take_sent() == Sends{});  // refute_received {:"$gen_consumer", _, _}

  // Two batches with left over
  CHECK(d.ask(r1, 3, out) == 3);
  CHECK(d.ask(r2, 3, out) == 3);
  CHECK_STATE(d, 0u, 3u, {3, r1}, {3, r2});

  res = dispatch(d, out, {"a", "b"});
  CHECK(res.taken == 2);
  CHECK(res.leftovers == Events{});
  CHECK_STATE(d, 0u, 3u, {3, r2}, {1, r1});
  CHECK(out.take_sent() == Sends{{r1, {"a", "b"}}});

  res = dispatch(d, out, {"c", "d"});
  CHECK(res.taken == 2);
  CHECK(res.leftovers == Events{});
  CHECK_STATE(d, 0u, 3u, {1, r1}, {1, r2});
  CHECK(out.take_sent() == Sends{{r2, {"c", "d"}}});

  // Eliminate the left-over
  res = dispatch(d, out, {"e", "f", "g"});
  CHECK(res.taken == 2);
  CHECK(res.leftovers == Events{"g"});
  CHECK_STATE(d, 0u, 3u, {0, r1}, {0, r2});
  CHECK(out.take_sent() == Sends{{r1, {"e"}}, {r2, {"f"}}});
  CHECK(out.quiet());
}

// Ports "subscribes, asks and dispatches to multiple consumers with shuffled demands".
TEST_CASE("subscribes, asks and dispatches to multiple consumers with shuffled demands") {
  // Runs the Elixir scenario on a fresh dispatcher; returns the messages of the one dispatch.
  auto scenario = [](sluice::DemandDispatcherOptions options) {
    Dispatcher d(options);
    Recorder out;
    CHECK_INITIAL(d);
    CHECK(d.subscribe(sub(r1), out) == 0);
    CHECK(d.subscribe(sub(r2), out) == 0);

    CHECK(d.ask(r1, 3, out) == 3);
    CHECK(d.ask(r2, 2, out) == 2);
    CHECK_STATE(d, 0u, 3u, {3, r1}, {2, r2});

    auto res = dispatch(d, out, {"a", "b", "c", "d", "e"});
    CHECK(res.taken == 5);
    CHECK(res.leftovers == Events{});
    const Sends sends = out.take_sent();
    const Sends unshuffled{{r1, {"a", "b", "c"}}, {r2, {"d", "e"}}};
    const Sends swapped{{r2, {"a", "b"}}, {r1, {"c", "d", "e"}}};
    if (sends == unshuffled) {
      // x == r1, y == r2
      CHECK_STATE(d, 0u, 3u, {0, r1}, {0, r2});
    } else {
      // x == r2, y == r1: r2 was served first with its 2
      CHECK(sends == swapped);
      CHECK_STATE(d, 0u, 3u, {0, r2}, {0, r1});
    }
    CHECK(out.quiet());
    return sends;
  };

  SUBCASE("random seed: either order is allowed (as in GenStage)") {
    scenario(shuffled());
  }

  SUBCASE("a fixed seed is deterministic, and both orders occur across seeds") {
    bool saw_unshuffled = false;
    bool saw_swapped = false;
    for (std::uint64_t seed = 0; seed < 64; ++seed) {
      CAPTURE(seed);
      const Sends first = scenario(shuffled(seed));
      CHECK(scenario(shuffled(seed)) == first);
      (first.front().to == r1 ? saw_unshuffled : saw_swapped) = true;
    }
    CHECK(saw_unshuffled);
    CHECK(saw_swapped);
  }

  SUBCASE("without the option nothing is shuffled") {
    for (int i = 0; i < 16; ++i)
      CHECK(scenario({}) == Sends{{r1, {"a", "b", "c"}}, {r2, {"d", "e"}}});
  }

  SUBCASE("the shuffle applies to the first dispatch only (the flag resets)") {
    for (std::uint64_t seed = 0; seed < 64; ++seed) {
      CAPTURE(seed);
      Dispatcher d(shuffled(seed));
      Recorder out;
      CHECK(d.subscribe(sub(r1), out) == 0);
      CHECK(d.subscribe(sub(r2), out) == 0);
      CHECK(d.ask(r1, 3, out) == 3);
      CHECK(d.ask(r2, 2, out) == 2);
      CHECK(dispatch(d, out, {"a", "b", "c", "d", "e"}).taken == 5);
      out.take_sent();

      // From here on the order is GenStage's plain greedy order, whatever the seed.
      CHECK(d.ask(r1, 3, out) == 3);
      CHECK(d.ask(r2, 3, out) == 3);
      CHECK_STATE(d, 0u, 3u, {3, r1}, {3, r2});
      auto res = dispatch(d, out, {"a", "b"});
      CHECK(res.taken == 2);
      CHECK_STATE(d, 0u, 3u, {3, r2}, {1, r1});
      CHECK(out.take_sent() == Sends{{r1, {"a", "b"}}});
      res = dispatch(d, out, {"c", "d"});
      CHECK(res.taken == 2);
      CHECK_STATE(d, 0u, 3u, {1, r1}, {1, r2});
      CHECK(out.take_sent() == Sends{{r2, {"c", "d"}}});
    }
  }
}

// Ports "delivers info to current process".
TEST_CASE("delivers info to current process") {
  Dispatcher d;
  Recorder out;
  CHECK_INITIAL(d);
  CHECK(d.subscribe(sub(r1), out) == 0);
  CHECK(d.subscribe(sub(r2), out) == 0);
  CHECK(d.ask(r1, 3, out) == 3);

  const Demands before = d.demands();
  const auto pending_before = d.pending();
  const auto max_before = d.max_demand();

  constexpr std::uint64_t hello = 0x68656c6c6f;  // :hello
  d.info(hello, out);
  CHECK(out.infos == std::vector<std::uint64_t>{hello});  // assert_received :hello
  // {:ok, disp'} with disp' == disp
  CHECK(d.demands() == before);
  CHECK(d.pending() == pending_before);
  CHECK(d.max_demand() == max_before);
  CHECK_STATE(d, 0u, 3u, {3, r1}, {0, r2});
  CHECK(out.sent.empty());
  CHECK(out.logs.empty());
  CHECK(out.asked_on_behalf.empty());
}

// Ports "warns on demand mismatch".
TEST_CASE("warns on demand mismatch") {
  Dispatcher d;
  Recorder out;
  CHECK_INITIAL(d);
  CHECK(d.subscribe(sub(r1), out) == 0);
  CHECK(d.subscribe(sub(r2), out) == 0);

  CHECK(d.ask(r1, 3, out) == 3);  // sets max to 3
  CHECK(out.logs.empty());
  CHECK(d.ask(r2, 4, out) == 4);  // a warning only: the ask still succeeds

  REQUIRE(out.logs.size() == 1);
  CHECK(out.logs[0].level == LogLevel::warning);
  const std::string& msg = out.logs[0].message;
  CAPTURE(msg);
  CHECK(msg.find("DemandDispatcher expects a maximum demand of 3") != std::string::npos);
  CHECK(msg.find("Using different maximum demands will overload greedy consumers.") !=
        std::string::npos);
  CHECK(msg.find("Got demand for 4 events") != std::string::npos);
  CHECK_STATE(d, 0u, 3u, {4, r2}, {3, r1});
  CHECK(out.sent.empty());
}

// Not in demand_dispatcher_test.exs: the newest lib's init(max_demand: N) pre-sets max, so the
// state starts as {[], 0, N, shuffle} and the first ask no longer sets it.
TEST_CASE("the max_demand option pre-sets the maximum demand") {
  sluice::DemandDispatcherOptions o;
  o.max_demand = 5;
  Dispatcher d(o);
  Recorder out;
  CHECK_STATE(d, 0u, 5u);

  CHECK(d.subscribe(sub(r1), out) == 0);
  CHECK(d.subscribe(sub(r2), out) == 0);
  CHECK(d.ask(r1, 3, out) == 3);  // below the preset max: max stays 5, no warning
  CHECK(out.logs.empty());
  CHECK(d.ask(r2, 5, out) == 5);  // equal to max: no warning
  CHECK(out.logs.empty());
  CHECK_STATE(d, 0u, 5u, {5, r2}, {3, r1});

  CHECK(d.ask(r1, 6, out) == 6);  // above max: warns, still succeeds
  REQUIRE(out.logs.size() == 1);
  CHECK(out.logs[0].level == LogLevel::warning);
  CAPTURE(out.logs[0].message);
  CHECK(out.logs[0].message.find("DemandDispatcher expects a maximum demand of 5") !=
        std::string::npos);
  CHECK(out.logs[0].message.find("Got demand for 6 events") != std::string::npos);
  CHECK_STATE(d, 0u, 5u, {9, r1}, {5, r2});
}

// Not in demand_dispatcher_test.exs: dispatch_demand on an empty demands list returns every event
// as leftovers.
TEST_CASE("a dispatch with no subscribers takes nothing") {
  Dispatcher d;
  Recorder out;
  auto res = dispatch(d, out, {"a", "b", "c"});
  CHECK(res.taken == 0);
  CHECK(res.leftovers == Events{"a", "b", "c"});
  CHECK_STATE(d, 0u, nil);
  CHECK(out.quiet());

  // Also after the last subscriber left.
  CHECK(d.subscribe(sub(r1), out) == 0);
  CHECK(d.cancel(r1, out) == 0);
  res = dispatch(d, out, {"x"});
  CHECK(res.taken == 0);
  CHECK(res.leftovers == Events{"x"});
  CHECK(out.quiet());
}

// Not in demand_dispatcher_test.exs: since GenStage 1.3.0 (the fix of #311, GENSTAGE.md 2.1)
// leftover events reduce `pending`: events buffered for lack of demand count against what was
// asked on behalf of cancelled subscribers, so they are not asked for twice.
TEST_CASE("leftovers reduce pending (GenStage 1.3 arithmetic)") {
  Dispatcher d;
  Recorder out;
  CHECK(d.subscribe(sub(r), out) == 0);
  CHECK(d.ask(r, 10, out) == 10);
  CHECK(d.cancel(r, out) == 0);
  CHECK_STATE(d, 10u, 10u);

  auto res = dispatch(d, out, {"a", "b", "c"});
  CHECK(res.taken == 0);
  CHECK(res.leftovers == Events{"a", "b", "c"});
  CHECK_STATE(d, 7u, 10u);  // pending = max(10 - 3, 0)

  CHECK(d.subscribe(sub(r), out) == 0);
  CHECK(d.ask(r, 5, out) == 0);
  CHECK_STATE(d, 2u, 10u, {5, r});
  CHECK(d.ask(r, 5, out) == 3);  // 2 still pending: 5 - 2 passed upstream
  CHECK_STATE(d, 0u, 10u, {10, r});
  CHECK(out.quiet());
}

}  // TEST_SUITE("dispatchers.demand")
