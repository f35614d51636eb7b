#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <sluice/engine/dispatcher.hpp>

namespace sluice {

struct DemandDispatcherOptions {
  /// Shuffle the subscribers once, before the first dispatch, so the first batch does not all go
  /// to the first subscriber when every subscriber asked the same (Broadway #269).
  bool shuffle_demands_on_first_dispatch = false;
  /// The demand subscribers are expected to ask at most; default: the first ask ever seen.
  /// A larger ask logs a warning (nothing is enforced).
  std::optional<std::size_t> max_demand;
  /// Seed for the shuffle (tests); default: random.
  std::optional<std::uint64_t> seed;
};

/// GenStage's DemandDispatcher (GENSTAGE.md 2.1), with its arithmetic exactly: each event goes
/// to the subscriber with the most outstanding demand (greedy, largest first; equal demands stay
/// in FIFO order); asks are passed upstream one by one, less what was already asked for on
/// behalf of subscribers that left (`pending`).
///
/// As in GenStage, subscribers with different max_demand do not share fairly: a subscriber
/// with a small max_demand beside one with a large max_demand that keeps up may receive nothing
/// at all, since the large one is always served first. Give competing subscribers the same
/// max_demand when each must get a share.
template <class Event>
class DemandDispatcher final : public Dispatcher<Event> {
 public:
  explicit DemandDispatcher(DemandDispatcherOptions options = {})
      : shuffle_(options.shuffle_demands_on_first_dispatch),
        max_(options.max_demand),
        rng_(options.seed ? *options.seed : std::random_device{}()) {}

  std::size_t subscribe(const SubscriberInfo& s, Outbox<Event>&) override {
    demands_.push_back({0, s.id});
    return 0;
  }

  std::size_t cancel(SubscriberId id, Outbox<Event>&) override {
    auto it = find(id);
    if (it == demands_.end()) return 0;
    pending_ += it->counter;
    demands_.erase(it);
    return 0;
  }

  std::size_t ask(SubscriberId id, std::size_t n, Outbox<Event>& out) override {
    if (!max_) max_ = n;
    if (n > *max_)
      out.log(LogLevel::warning,
              "DemandDispatcher expects a maximum demand of " + std::to_string(*max_) +
                  ". Using different maximum demands will overload greedy consumers. Got demand "
                  "for " +
                  std::to_string(n) + " events from subscriber " + std::to_string(id));
    auto it = find(id);
    if (it == demands_.end()) return 0;
    Entry e = *it;
    demands_.erase(it);
    e.counter += n;
    insert(e);
    const auto already = std::min(pending_, n);
    pending_ -= already;
    return n - already;
  }

  std::size_t dispatch(std::span<Event> events, Outbox<Event>& out) override {
    if (shuffle_) {
      std::shuffle(demands_.begin(), demands_.end(), rng_);
      shuffle_ = false;
    }
    std::size_t sent = 0;
    while (sent < events.size() && !demands_.empty() && demands_.front().counter > 0) {
      Entry e = demands_.front();
      demands_.erase(demands_.begin());
      const auto n = std::min(e.counter, events.size() - sent);
      out.send(e.id, events.subspan(sent, n));
      sent += n;
      e.counter -= n;
      insert(e);
    }
    const auto leftover = events.size() - sent;
    pending_ = pending_ > leftover ? pending_ - leftover : 0;
    return sent;
  }

  std::string name() const override { return "demand"; }

  // Introspection for tests and metrics.
  struct Entry {
    std::size_t counter;
    SubscriberId id;
    bool operator==(const Entry&) const = default;
  };
  const std::vector<Entry>& demands() const noexcept { return demands_; }
  std::size_t pending() const noexcept { return pending_; }
  std::optional<std::size_t> max_demand() const noexcept { return max_; }

 private:
  typename std::vector<Entry>::iterator find(SubscriberId id) {
    return std::find_if(demands_.begin(), demands_.end(),
                        [id](const Entry& e) { return e.id == id; });
  }
  /// Before the first entry with a strictly smaller counter (equal counters stay FIFO).
  void insert(Entry e) {
    auto pos = std::find_if(demands_.begin(), demands_.end(),
                            [&](const Entry& x) { return x.counter < e.counter; });
    demands_.insert(pos, e);
  }

  std::vector<Entry> demands_;
  std::size_t pending_ = 0;
  bool shuffle_;
  std::optional<std::size_t> max_;
  std::mt19937_64 rng_;
};

/// The factory the engine takes for a producer's dispatcher.
template <class Event>
auto demand_dispatcher(DemandDispatcherOptions options = {}) {
  return [options]() -> std::unique_ptr<Dispatcher<Event>> {
    return std::make_unique<DemandDispatcher<Event>>(options);
  };
}

}  // namespace sluice
