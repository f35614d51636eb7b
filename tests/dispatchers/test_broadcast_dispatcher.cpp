// Port of GenStage 1.3.2's test/gen_stage/broadcast_dispatcher_test.exs (all 11 tests), at the
// dispatcher level: a BroadcastDispatcher<std::string> driven through a recording Outbox,
// asserting each return value, the state {demands, waiting, requested, subscribed}, and the
// events each subscriber receives. Elixir refs ref1..ref3 are subscriber ids 0..2; a pid is the
// consumer's name (the dispatcher refuses a second subscription from the same consumer). Events
// are atoms or maps in GenStage; strings here (`:a` is "a", `%{key: "pre0000"}` is "pre0000").
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include <sluice/dispatchers/broadcast.hpp>

#include <doctest/doctest.h>

#include "support/recorder.hpp"

namespace {

using D = sluice::BroadcastDispatcher<std::string>;
using Entry = D::Entry;
using Demands = std::vector<Entry>;
using Events = std::vector<std::string>;
using Recorder = sluice_test::Recorder<std::string>;
using Sends = std::vector<Recorder::Sent>;
using Names = std::vector<std::string>;
using sluice::SubscriberId;
using sluice_test::dispatch;

constexpr SubscriberId ref1 = 0, ref2 = 1, ref3 = 2;

sluice::SubscriberInfo sub(SubscriberId id, const char* pid, std::any selector = {}) {
  sluice::SubscriptionOptions o;
  o.selector = std::move(selector);
  return sluice::SubscriberInfo{id, pid, o, 0};
}

}  // namespace

namespace doctest {
template <>
struct StringMaker<Demands> {
  static String convert(const Demands& ds) {
    std::ostringstream s;
    s << "[";
    for (std::size_t i = 0; i < ds.size(); ++i)
      s << (i ? ", " : "") << "{" << ds[i].extra << ", id " << ds[i].id << "}";
    s << "]";
    return String(s.str().c_str());
  }
};
}  // namespace doctest

// GenStage's state {demands, waiting, requested, subscribed_pids}.
#define CHECK_STATE(d, demands_, waiting_, requested_, subscribed_) \
  do {                                                              \
    CHECK((d).demands() == Demands demands_);                       \
    CHECK((d).waiting() == (waiting_));                             \
    CHECK((d).requested() == (requested_));                         \
    CHECK((d).subscribed() == Names subscribed_);                   \
  } while (0)

TEST_SUITE("dispatchers.broadcast") {
TEST_CASE("subscribes and cancels") {
  D d;
  Recorder out;
  CHECK_STATE(d, {}, 0, 0, {});
  CHECK(d.subscribe(sub(ref1, "pid"), out) == 0);
  CHECK_STATE(d, ({{0, ref1}}), 0, 0, ({"pid"}));
  CHECK(d.cancel(ref1, out) == 0);
  CHECK_STATE(d, {}, 0, 0, {});
}

TEST_CASE("subscribes, asks, and cancels") {
  D d;
  Recorder out;
  CHECK(d.subscribe(sub(ref1, "pid"), out) == 0);
  CHECK_STATE(d, ({{0, ref1}}), 0, 0, ({"pid"}));
  CHECK(d.ask(ref1, 10, out) == 10);
  CHECK_STATE(d, ({{0, ref1}}), 10, 10, ({"pid"}));
  CHECK(d.cancel(ref1, out) == 0);
  CHECK_STATE(d, {}, 0, 10, {});
  // Now attempt to dispatch with no consumers.
  auto res = dispatch<std::string>(d, out, {"1", "2", "3"});
  CHECK(res.leftovers == Events{"1", "2", "3"});
  CHECK_STATE(d, {}, 0, 10, {});
  CHECK(out.quiet());
}

TEST_CASE("multiple subscriptions with early demand") {
  D d;
  Recorder out;
  CHECK(d.subscribe(sub(ref1, "pid1"), out) == 0);
  CHECK_STATE(d, ({{0, ref1}}), 0, 0, ({"pid1"}));
  CHECK(d.ask(ref1, 10, out) == 10);
  CHECK_STATE(d, ({{0, ref1}}), 10, 10, ({"pid1"}));
  CHECK(d.subscribe(sub(ref2, "pid2"), out) == 0);
  CHECK_STATE(d, ({{0, ref2}, {10, ref1}}), 0, 10, ({"pid1", "pid2"}));
  CHECK(d.cancel(ref1, out) == 0);
  CHECK_STATE(d, ({{0, ref2}}), 0, 10, ({"pid2"}));
  CHECK(d.ask(ref2, 10, out) == 0);
  CHECK_STATE(d, ({{0, ref2}}), 10, 10, ({"pid2"}));
}

TEST_CASE("multiple subscriptions with late demand") {
  D d;
  Recorder out;
  CHECK(d.subscribe(sub(ref1, "pid1"), out) == 0);
  CHECK_STATE(d, ({{0, ref1}}), 0, 0, ({"pid1"}));
  CHECK(d.subscribe(sub(ref2, "pid2"), out) == 0);
  CHECK_STATE(d, ({{0, ref2}, {0, ref1}}), 0, 0, ({"pid1", "pid2"}));
  CHECK(d.ask(ref1, 10, out) == 0);
  CHECK_STATE(d, ({{10, ref1}, {0, ref2}}), 0, 0, ({"pid1", "pid2"}));
  CHECK(d.cancel(ref2, out) == 10);
  CHECK_STATE(d, ({{0, ref1}}), 10, 10, ({"pid1"}));
  CHECK(d.ask(ref1, 10, out) == 10);
  CHECK_STATE(d, ({{0, ref1}}), 20, 20, ({"pid1"}));
}

TEST_CASE("subscribes, asks and dispatches to multiple consumers") {
  D d;
  Recorder out;
  CHECK(d.subscribe(sub(ref1, "pid1"), out) == 0);
  CHECK(d.subscribe(sub(ref2, "pid2"), out) == 0);
  CHECK(d.ask(ref1, 3, out) == 0);
  CHECK(d.ask(ref2, 2, out) == 2);
  CHECK_STATE(d, ({{0, ref2}, {1, ref1}}), 2, 2, ({"pid1", "pid2"}));

  // One batch fits all
  auto res = dispatch<std::string>(d, out, {"a", "b"});
  CHECK(res.leftovers.empty());
  CHECK_STATE(d, ({{0, ref2}, {1, ref1}}), 0, 0, ({"pid1", "pid2"}));
  CHECK(out.take_sent() == Sends{{ref2, {"a", "b"}}, {ref1, {"a", "b"}}});

  // A batch with left-over
  CHECK(d.ask(ref2, 2, out) == 1);
  res = dispatch<std::string>(d, out, {"c", "d"});
  CHECK(res.leftovers == Events{"d"});
  CHECK_STATE(d, ({{1, ref2}, {0, ref1}}), 0, 0, ({"pid1", "pid2"}));
  CHECK(out.take_sent() == Sends{{ref2, {"c"}}, {ref1, {"c"}}});

  // A batch with no demand
  res = dispatch<std::string>(d, out, {"d"});
  CHECK(res.leftovers == Events{"d"});
  CHECK_STATE(d, ({{1, ref2}, {0, ref1}}), 0, 0, ({"pid1", "pid2"}));
  CHECK(out.take_sent().empty());

  // Add a late subscriber
  CHECK(d.ask(ref1, 1, out) == 1);
  CHECK(d.subscribe(sub(ref3, "pid3"), out) == 0);
  res = dispatch<std::string>(d, out, {"d", "e"});
  CHECK(res.leftovers == Events{"d", "e"});
  CHECK_STATE(d, ({{0, ref3}, {1, ref1}, {1, ref2}}), 0, 1, ({"pid1", "pid2", "pid3"}));

  // Even out
  CHECK(d.ask(ref1, 2, out) == 0);
  CHECK(d.ask(ref2, 2, out) == 0);
  CHECK(d.ask(ref3, 3, out) == 2);
  res = dispatch<std::string>(d, out, {"d", "e", "f"});
  CHECK(res.leftovers.empty());
  CHECK_STATE(d, ({{0, ref3}, {0, ref2}, {0, ref1}}), 0, 0, ({"pid1", "pid2", "pid3"}));
  CHECK(out.take_sent() ==
        Sends{{ref3, {"d", "e", "f"}}, {ref2, {"d", "e", "f"}}, {ref1, {"d", "e", "f"}}});
}

TEST_CASE("subscribes, asks, dispatches, and repeats") {
  D d;
  Recorder out;
  CHECK(d.subscribe(sub(ref1, "pid1"), out) == 0);
  CHECK_STATE(d, ({{0, ref1}}), 0, 0, ({"pid1"}));
  CHECK(d.ask(ref1, 10, out) == 10);
  CHECK_STATE(d, ({{0, ref1}}), 10, 10, ({"pid1"}));
  CHECK(dispatch<std::string>(d, out, {"a", "b", "c"}).leftovers.empty());
  CHECK_STATE(d, ({{0, ref1}}), 7, 7, ({"pid1"}));
  CHECK(out.take_sent() == Sends{{ref1, {"a", "b", "c"}}});
  CHECK(d.subscribe(sub(ref2, "pid2"), out) == 0);
  CHECK_STATE(d, ({{0, ref2}, {7, ref1}}), 0, 7, ({"pid1", "pid2"}));
  CHECK(d.ask(ref2, 20, out) == 0);
  CHECK_STATE(d, ({{13, ref2}, {0, ref1}}), 7, 7, ({"pid1", "pid2"}));
  CHECK(dispatch<std::string>(d, out, {"d", "e", "f", "g", "h", "i", "j"}).leftovers.empty());
  CHECK_STATE(d, ({{13, ref2}, {0, ref1}}), 0, 0, ({"pid1", "pid2"}));
  const Events all{"d", "e", "f", "g", "h", "i", "j"};
  CHECK(out.take_sent() == Sends{{ref2, all}, {ref1, all}});
}

TEST_CASE("subscribes, asks, cancels, and dispatcher reuses events for another subscriber") {
  D d;
  Recorder out;
  CHECK(d.subscribe(sub(ref1, "pid1"), out) == 0);
  CHECK_STATE(d, ({{0, ref1}}), 0, 0, ({"pid1"}));
  CHECK(d.ask(ref1, 10, out) == 10);
  CHECK_STATE(d, ({{0, ref1}}), 10, 10, ({"pid1"}));
  CHECK(d.cancel(ref1, out) == 0);
  CHECK_STATE(d, {}, 0, 10, {});
  CHECK(d.subscribe(sub(ref2, "pid2"), out) == 0);
  CHECK_STATE(d, ({{0, ref2}}), 0, 10, ({"pid2"}));
  CHECK(d.ask(ref2, 5, out) == 0);
  CHECK_STATE(d, ({{0, ref2}}), 5, 10, ({"pid2"}));
  CHECK(dispatch<std::string>(d, out, {"a", "b", "c"}).leftovers.empty());
  CHECK_STATE(d, ({{0, ref2}}), 2, 7, ({"pid2"}));
  CHECK(out.take_sent() == Sends{{ref2, {"a", "b", "c"}}});
}

TEST_CASE("cancels blocking subscriber while there is already a requested demand") {
  D d;
  Recorder out;
  CHECK(d.subscribe(sub(ref1, "pid1"), out) == 0);
  CHECK(d.ask(ref1, 10, out) == 10);
  CHECK_STATE(d, ({{0, ref1}}), 10, 10, ({"pid1"}));
  CHECK(d.subscribe(sub(ref2, "pid2"), out) == 0);
  CHECK_STATE(d, ({{0, ref2}, {10, ref1}}), 0, 10, ({"pid1", "pid2"}));
  CHECK(d.ask(ref1, 5, out) == 0);
  CHECK_STATE(d, ({{15, ref1}, {0, ref2}}), 0, 10, ({"pid1", "pid2"}));
  CHECK(d.cancel(ref2, out) == 5);
  CHECK_STATE(d, ({{0, ref1}}), 15, 15, ({"pid1"}));
}

TEST_CASE("subscribing with a selector function") {
  D d;
  Recorder out;
  auto starts_with = [](std::string prefix) {
    return sluice::selector<std::string>(
        [prefix](const std::string& key) { return key.starts_with(prefix); });
  };
  CHECK(d.subscribe(sub(ref1, "pid1", starts_with("pre")), out) == 0);
  CHECK(d.subscribe(sub(ref2, "pid2", starts_with("pref")), out) == 0);
  CHECK(d.demands() == Demands{{0, ref2}, {0, ref1}});
  CHECK(d.ask(ref2, 4, out) == 0);
  CHECK(d.ask(ref1, 4, out) == 4);
  auto res = dispatch<std::string>(d, out, {"pref-1234", "pref-5678", "pre0000", "foo0000"});
  CHECK(res.leftovers.empty());
  // The rejected events give their demand back, on behalf of each subscriber.
  CHECK(out.asked_on_behalf ==
        std::vector<std::pair<SubscriberId, std::size_t>>{{ref1, 1}, {ref2, 2}});
  CHECK(out.take_sent() ==
        Sends{{ref1, {"pref-1234", "pref-5678", "pre0000"}}, {ref2, {"pref-1234", "pref-5678"}}});
  // One shared batch, read by both: no copy per subscriber.
  CHECK(out.batches_made == 1);
}

TEST_CASE("delivers info to current process") {
  D d;
  Recorder out;
  CHECK(d.subscribe(sub(ref1, "pid1"), out) == 0);
  CHECK(d.subscribe(sub(ref2, "pid2"), out) == 0);
  CHECK(d.ask(ref1, 3, out) == 0);
  const auto before = d.demands();
  d.info(42, out);
  CHECK(out.infos == std::vector<std::uint64_t>{42});
  CHECK(d.demands() == before);
  CHECK(d.waiting() == 0);
}

TEST_CASE("subscribing is idempotent") {
  D d;
  Recorder out;
  CHECK(d.subscribe(sub(ref1, "pid"), out) == 0);
  CHECK_THROWS_AS_MESSAGE(d.subscribe(sub(ref2, "pid"), out), sluice::subscription_refused,
                          "already subscribed");
  CHECK_STATE(d, ({{0, ref1}}), 0, 0, ({"pid"}));
  REQUIRE(out.logs.size() == 1);
  CHECK(out.logs[0].level == sluice::LogLevel::error);
  CHECK(out.logs[0].message ==
        "'pid' is already registered. This subscription has been discarded.");
}
}  // TEST_SUITE("dispatchers.broadcast")

// Beyond GenStage's file.
TEST_SUITE("dispatchers.broadcast") {
TEST_CASE("a selector's message is one run of contiguous selected events, in order") {
  D d;
  Recorder out;
  auto even =
      sluice::selector<std::string>([](const std::string& e) { return (std::stoi(e) % 2) == 0; });
  CHECK(d.subscribe(sub(ref1, "evens", even), out) == 0);
  CHECK(d.ask(ref1, 6, out) == 6);
  CHECK(dispatch<std::string>(d, out, {"2", "4", "5", "6", "7", "9"}).leftovers.empty());
  CHECK(out.take_sent() == Sends{{ref1, {"2", "4"}}, {ref1, {"6"}}});
  CHECK(out.asked_on_behalf == std::vector<std::pair<SubscriberId, std::size_t>>{{ref1, 3}});
}

TEST_CASE("a subscriber selecting nothing gets no empty message, only its demand back") {
  D d;
  Recorder out;
  auto none = sluice::selector<std::string>([](const std::string&) { return false; });
  CHECK(d.subscribe(sub(ref1, "all"), out) == 0);
  CHECK(d.subscribe(sub(ref2, "none", none), out) == 0);
  CHECK(d.ask(ref1, 2, out) == 0);
  CHECK(d.ask(ref2, 2, out) == 2);
  CHECK(dispatch<std::string>(d, out, {"a", "b"}).leftovers.empty());
  CHECK(out.take_sent() == Sends{{ref1, {"a", "b"}}});
  CHECK(out.asked_on_behalf == std::vector<std::pair<SubscriberId, std::size_t>>{{ref2, 2}});
}

TEST_CASE("GenStage's stranded-buffer window: the waiting demand covers the late asker") {
  // GENSTAGE.md 2.2 "Known defect": C1 asks 10 (requested 10), C2 subscribes, 10 events are
  // emitted and buffered, C2 asks 10. GenStage's producer then takes only `request` (0) from its
  // buffer. The dispatcher's side of the fix: after C2's ask, `waiting` is 10, so when the
  // producer offers its whole buffer (as the engine's producer does on every ask), all 10 go to
  // both subscribers, in order, and nothing is left over.
  D d;
  Recorder out;
  CHECK(d.subscribe(sub(ref1, "c1"), out) == 0);
  CHECK(d.ask(ref1, 10, out) == 10);
  CHECK(d.subscribe(sub(ref2, "c2"), out) == 0);
  Events ten;
  for (int i = 1; i <= 10; ++i)
    ten.push_back(std::to_string(i));
  CHECK(dispatch<std::string>(d, out, ten).leftovers == ten);  // buffered by the producer
  CHECK(d.ask(ref2, 10, out) == 0);  // nothing more to request upstream...
  CHECK(d.waiting() == 10);          // ...but everyone can take 10 now
  CHECK(dispatch<std::string>(d, out, ten).leftovers.empty());
  CHECK(out.take_sent() == Sends{{ref2, ten}, {ref1, ten}});
}

TEST_CASE("validation: selector type, no partitions, shared events") {
  D d;
  // It selects, with selectors of its event type: the engine refuses another type before any
  // dispatcher sees it (graph.bad_input, "partition and selector options must fit ...").
  CHECK(d.selects());
  CHECK(d.selector_type() == typeid(sluice::Selector<std::string>));
  sluice::SubscriptionOptions o;
  o.selector = sluice::selector<std::string>([](const std::string&) { return true; });
  CHECK_NOTHROW(d.validate({0, "c", o, 0}));
  sluice::SubscriptionOptions p;
  p.partition = 1;
  CHECK_THROWS_WITH_AS(d.validate({0, "c", p, 0}),
                       "option partition: the broadcast dispatcher has no partitions",
                       sluice::option_error);
  CHECK(d.shares_events());
}
}  // TEST_SUITE("dispatchers.broadcast")
