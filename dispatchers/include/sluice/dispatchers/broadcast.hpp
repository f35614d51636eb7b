#pragma once

#include <algorithm>
#include <any>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <sluice/engine/dispatcher.hpp>

namespace sluice {

/// GenStage's BroadcastDispatcher (GENSTAGE.md 2.2), with its arithmetic: every subscriber gets
/// every event it selects, in order, and none gets more than it asked for. Upstream demand is the
/// growth of the smallest outstanding demand, less what was already requested (1.3.2's
/// `requested`). A new subscriber holds the fan-out until it asks.
///
/// Differences from GenStage (docs/GENSTAGE.md):
/// - Each dispatched run of events is moved once into a shared immutable batch that every
///   subscriber reads (std::span<const Event>): no copy per subscriber.
/// - With a selector, a subscriber receives its selected events as one message per contiguous
///   run of selected events in the batch (GenStage: one message with all of them), and no empty
///   message when it selects nothing.
/// - The producer offers its buffer on every ask, so events buffered while a late subscriber had
///   not asked yet are delivered to everyone, in order, when it asks (GenStage strands them).
template <class Event>
class BroadcastDispatcher final : public Dispatcher<Event> {
 public:
  /// One subscriber as GenStage keeps it: {extra demand, id}, in GenStage's list order.
  struct Entry {
    std::int64_t extra;
    SubscriberId id;
    bool operator==(const Entry&) const = default;
  };

  bool selects() const override { return true; }
  bool shares_events() const override { return true; }
  std::string name() const override { return "broadcast"; }

  std::size_t subscribe(const SubscriberInfo& s, Outbox<Event>& out) override {
    for (auto& e : entries_)
      if (e.consumer == s.consumer) {
        std::string message(1, '\'');  // built by appends: GCC 12's -Wrestrict misfires on
        message += s.consumer;         // "literal" + std::string&& at -O3 (GCC bug 105329)
        message += "' is already registered. This subscription has been discarded.";
        out.log(LogLevel::error, message);
        throw subscription_refused("already subscribed");
      }
    // Hold demand until the new subscriber asks: what everyone could take now is given back to
    // each existing subscriber as extra demand, and the newcomer starts at zero.
    for (auto& e : entries_)
      e.extra += waiting_;
    waiting_ = 0;
    Selector<Event> selector;
    if (s.options.selector.has_value())
      selector = std::any_cast<const Selector<Event>&>(s.options.selector);
    entries_.insert(entries_.begin(), {0, s.id, std::string(s.consumer), std::move(selector)});
    return 0;
  }

  std::size_t cancel(SubscriberId id, Outbox<Event>&) override {
    auto it = find(id);
    if (it == entries_.end()) return 0;
    entries_.erase(it);
    if (entries_.empty()) {
      waiting_ = 0;
      return 0;
    }
    return sync();  // removing the slowest subscriber can create demand
  }

  std::size_t ask(SubscriberId id, std::size_t n, Outbox<Event>&) override {
    auto it = find(id);
    if (it == entries_.end()) return 0;
    Internal e = std::move(*it);
    entries_.erase(it);
    e.extra += static_cast<std::int64_t>(n);
    entries_.insert(entries_.begin(), std::move(e));  // GenStage re-adds the asker in front
    return sync();
  }

  std::size_t dispatch(std::span<Event> events, Outbox<Event>& out) override {
    if (waiting_ == 0 || events.empty()) return 0;
    const auto now = std::min<std::size_t>(static_cast<std::size_t>(waiting_), events.size());
    waiting_ -= static_cast<std::int64_t>(now);
    requested_ = std::max<std::int64_t>(requested_ - static_cast<std::int64_t>(now), 0);
    const SharedEvents<Event> batch = out.share(events.first(now));
    const auto all = batch.events();
    for (auto& e : entries_) {
      if (!e.selector) {
        out.send(e.id, batch, 0, now);
        continue;
      }
      // One message per contiguous run of selected events; rejected events give their demand
      // back (GenStage #133), so a selective subscriber never stalls the others.
      std::size_t rejected = 0;
      std::size_t run_start = 0;
      for (std::size_t i = 0; i <= now; ++i) {
        if (i < now && e.selector(all[i])) continue;
        if (i > run_start) out.send(e.id, batch, run_start, i - run_start);
        if (i < now) ++rejected;
        run_start = i + 1;
      }
      if (rejected > 0) out.ask_on_behalf(e.id, rejected);
    }
    return now;
  }

  // ---- introspection (tests) ------------------------------------------------------------------
  std::vector<Entry> demands() const {
    std::vector<Entry> v;
    for (auto& e : entries_)
      v.push_back({e.extra, e.id});
    return v;
  }
  std::int64_t waiting() const { return waiting_; }
  std::int64_t requested() const { return requested_; }
  /// The subscribed consumers (GenStage's subscribed pids), sorted.
  std::vector<std::string> subscribed() const {
    std::vector<std::string> v;
    for (auto& e : entries_)
      v.push_back(e.consumer);
    std::sort(v.begin(), v.end());
    return v;
  }

 private:
  struct Internal {
    std::int64_t extra;
    SubscriberId id;
    std::string consumer;
    Selector<Event> selector;
  };

  typename std::vector<Internal>::iterator find(SubscriberId id) {
    return std::find_if(entries_.begin(), entries_.end(),
                        [&](const Internal& e) { return e.id == id; });
  }

  /// Moves the smallest outstanding demand into `waiting` and asks upstream for what was not
  /// requested yet.
  std::size_t sync() {
    std::int64_t m = entries_.front().extra;
    for (auto& e : entries_)
      m = std::min(m, e.extra);
    m = std::max<std::int64_t>(m, 0);
    if (m > 0)
      for (auto& e : entries_)
        e.extra -= m;
    waiting_ += m;
    const auto request = std::max<std::int64_t>(waiting_ - requested_, 0);
    requested_ += request;
    return static_cast<std::size_t>(request);
  }

  std::vector<Internal> entries_;
  std::int64_t waiting_ = 0;    // events every subscriber can take now
  std::int64_t requested_ = 0;  // asked upstream and not dispatched yet
};

/// The factory the engine takes for a producer's dispatcher (one per producer instance).
template <class Event>
auto broadcast_dispatcher() {
  return []() -> std::unique_ptr<Dispatcher<Event>> {
    return std::make_unique<BroadcastDispatcher<Event>>();
  };
}

}  // namespace sluice
