// Dispatchers written the way a user writes one, against the public interface only
// (<sluice/engine/dispatcher.hpp>): key affinity with a least-loaded fallback, and a dispatcher
// that turns a subscriber down.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

#include "support/genstage.hpp"
#include "support/recorder.hpp"
#include "support/stages.hpp"

namespace {

struct Keyed {
  int key = 0;
  std::int64_t seq = 0;
  bool operator==(const Keyed&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Keyed& k) {
  return os << k.key << ":" << k.seq;
}

/// Sends each key to the subscriber it went to last, while that subscriber has demand (its
/// state stays warm); otherwise to the subscriber with the most demand (the least loaded), which
/// the key then sticks to. Demand passes upstream ask by ask, like the demand dispatcher.
class KeyAffinityDispatcher final : public sluice::Dispatcher<Keyed> {
 public:
  std::string name() const override { return "key-affinity"; }

  std::size_t subscribe(const sluice::SubscriberInfo& s, sluice::Outbox<Keyed>&) override {
    if (demand_.size() <= s.id) {
      demand_.resize(s.id + 1, 0);
      open_.resize(s.id + 1, false);
      batches_.resize(s.id + 1);
    }
    open_[s.id] = true;
    return 0;
  }

  std::size_t cancel(sluice::SubscriberId id, sluice::Outbox<Keyed>&) override {
    open_[id] = false;
    demand_[id] = 0;
    std::erase_if(affinity_, [&](const auto& kv) { return kv.second == id; });
    return 0;
  }

  std::size_t ask(sluice::SubscriberId id, std::size_t n, sluice::Outbox<Keyed>&) override {
    demand_[id] += static_cast<std::int64_t>(n);
    return n;
  }

  std::size_t dispatch(std::span<Keyed> events, sluice::Outbox<Keyed>& out) override {
    std::size_t taken = 0;
    for (; taken < events.size(); ++taken) {
      auto& e = events[taken];
      auto it = affinity_.find(e.key);
      sluice::SubscriberId to;
      if (it != affinity_.end() && demand_[it->second] > 0) {
        to = it->second;
      } else {
        auto best = std::max_element(demand_.begin(), demand_.end());
        if (best == demand_.end() || *best <= 0) break;  // nobody has demand: the rest waits
        to = static_cast<sluice::SubscriberId>(best - demand_.begin());
        affinity_[e.key] = to;
      }
      --demand_[to];
      batches_[to].push_back(std::move(e));
    }
    for (sluice::SubscriberId id = 0; id < batches_.size(); ++id) {
      if (batches_[id].empty()) continue;
      out.send(id, std::span<Keyed>(batches_[id]));
      batches_[id].clear();
    }
    return taken;
  }

  sluice::SubscriberId affinity(int key) const { return affinity_.at(key); }

 private:
  std::vector<std::int64_t> demand_;
  std::vector<bool> open_;
  std::vector<std::vector<Keyed>> batches_;
  std::unordered_map<int, sluice::SubscriberId> affinity_;
};

sluice::SubscriberInfo sub(sluice::SubscriberId id) {
  return {id, "c", {}, id};
}

using Recorder = sluice_test::Recorder<Keyed>;
using Sends = std::vector<Recorder::Sent>;

}  // namespace

TEST_SUITE("dispatchers.user") {
TEST_CASE("key affinity: a key stays with its subscriber while it has demand") {
  KeyAffinityDispatcher d;
  Recorder out;
  CHECK(d.subscribe(sub(0), out) == 0);
  CHECK(d.subscribe(sub(1), out) == 0);
  CHECK(d.ask(0, 3, out) == 3);
  CHECK(d.ask(1, 2, out) == 2);
  // key 7 goes to the least loaded (0, demand 3) and stays there; key 8 then to 1 (2 > 1).
  CHECK(sluice_test::dispatch<Keyed>(d, out, {{7, 1}, {7, 2}, {8, 1}}).taken == 3);
  CHECK(out.take_sent() == Sends{{0, {{7, 1}, {7, 2}}}, {1, {{8, 1}}}});
  CHECK(d.affinity(7) == 0);
  CHECK(d.affinity(8) == 1);
}

TEST_CASE("key affinity: falls back to the least loaded when its subscriber has no demand") {
  KeyAffinityDispatcher d;
  Recorder out;
  CHECK(d.subscribe(sub(0), out) == 0);
  CHECK(d.subscribe(sub(1), out) == 0);
  CHECK(d.ask(0, 1, out) == 1);
  CHECK(d.ask(1, 2, out) == 2);
  auto res = sluice_test::dispatch<Keyed>(d, out, {{7, 1}, {7, 2}, {7, 3}, {7, 4}});
  CHECK(res.taken == 3);  // total demand 3: the 4th event is a leftover for the buffer
  CHECK(res.leftovers == std::vector<Keyed>{{7, 4}});
  // 7 goes to 1 (most demand), stays for 7:2, then 1 is out of demand and 0 takes over.
  CHECK(out.take_sent() == Sends{{0, {{7, 3}}}, {1, {{7, 1}, {7, 2}}}});
  CHECK(d.affinity(7) == 0);
}

TEST_CASE("key affinity in a real run: every event once, keys spread over the consumers") {
  struct Source {
    std::int64_t next = 0;
    void handle_demand(std::size_t n, sluice::Context<Keyed>& c) {
      for (std::size_t i = 0; i < n && next < 1'000'000; ++i, ++next)
        c.emit(Keyed{static_cast<int>(next % 16), next});
      if (next == 1'000'000) c.finish();
    }
  };
  struct Sink {
    std::shared_ptr<std::vector<std::uint64_t>> counts, sums;
    void handle_events(std::span<Keyed> evs, sluice::Context<void>& c) {
      for (auto& e : evs) {
        ++(*counts)[c.instance()];
        (*sums)[c.instance()] += static_cast<std::uint64_t>(e.seq);
      }
    }
  };
  auto counts = std::make_shared<std::vector<std::uint64_t>>(4);
  auto sums = std::make_shared<std::vector<std::uint64_t>>(4);
  sluice::Engine e;
  auto src = e.producer<Keyed>("source", Source{}, [] {
    return std::unique_ptr<sluice::Dispatcher<Keyed>>(new KeyAffinityDispatcher());
  });
  auto sink = e.consumer<Keyed>("sink", Sink{counts, sums}, 4);
  e.subscribe(sink, src, {.max_demand = 256});
  auto run = e.start();
  run.wait();
  std::uint64_t count = 0, sum = 0;
  for (std::size_t i = 0; i < 4; ++i) {
    count += (*counts)[i];
    sum += (*sums)[i];
  }
  CHECK(count == 1'000'000);
  CHECK(sum == 1'000'000ull * 999'999ull / 2);
  CHECK(run.metrics().undelivered() == 0);
}

TEST_CASE(
    "a dispatcher may turn a subscriber down, the consumer is told and does not stop "
    "on it, whatever its cancel mode") {
  struct RefuseSecond final : sluice::Dispatcher<int> {
    sluice::DemandDispatcher<int> inner;
    std::string name() const override { return "refuse-second"; }
    std::size_t subscribe(const sluice::SubscriberInfo& s, sluice::Outbox<int>& out) override {
      if (s.id == 1) throw sluice::subscription_refused("not welcome");
      return inner.subscribe(s, out);
    }
    std::size_t cancel(sluice::SubscriberId id, sluice::Outbox<int>& out) override {
      return inner.cancel(id, out);
    }
    std::size_t ask(sluice::SubscriberId id, std::size_t n, sluice::Outbox<int>& out) override {
      return inner.ask(id, n, out);
    }
    std::size_t dispatch(std::span<int> events, sluice::Outbox<int>& out) override {
      return inner.dispatch(events, out);
    }
  };
  struct Sink {
    std::shared_ptr<std::vector<int>> counts;
    std::shared_ptr<std::vector<std::string>> cancels;
    void handle_events(std::span<int> evs, sluice::Context<void>& c) {
      (*counts)[c.instance()] += static_cast<int>(evs.size());
    }
    void handle_cancel(const sluice::CancelInfo& i, sluice::Context<void>& c) {
      if (i.reason.kind == sluice::Reason::Kind::refused)
        cancels->push_back("instance " + std::to_string(c.instance()) + ": " + i.reason.message);
    }
  };
  auto counts = std::make_shared<std::vector<int>>(2);
  auto cancels = std::make_shared<std::vector<std::string>>();
  sluice::Engine e;
  auto src = e.producer<int>("source", sluice_test::CountingSource<int>{0, 1000}, [] {
    return std::unique_ptr<sluice::Dispatcher<int>>(new RefuseSecond());
  });
  auto sink = e.consumer<int>("sink", Sink{counts, cancels}, 2);
  e.subscribe(sink, src, {.cancel = sluice::CancelMode::permanent});
  auto run = e.start(sluice_test::manual());
  run.wait();
  CHECK((*counts)[0] == 1000);
  CHECK((*counts)[1] == 0);
  CHECK(*cancels == std::vector<std::string>{"instance 1: not welcome"});
  // Not stopped by it, whatever its cancel mode: the refused instance finishes because it has
  // no subscription left, and says why.
  auto m = run.metrics();
  CHECK(m.stages[0].stop_reason == "normal");
  CHECK(m.stages[1].stop_reason == "normal");
  CHECK(m.stages[2].stop_reason == "not welcome");
  CHECK(run.metrics().undelivered() == 0);
}
}  // TEST_SUITE("dispatchers.user")
