#pragma once

#include <algorithm>
#include <any>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include <sluice/engine/time.hpp>

namespace sluice::detail {

/// The timers of one cell (Context::send_after, send_every), from the moment they are started
/// until they fire or are cancelled. Owner thread only. Keeps state and returns decisions: the
/// cell asks the run's TimerService for the wake-ups this part says it needs
/// (engine/DESIGN.md 11).
///
/// Costs: start O(log n); cancel O(1) (the heap entry is left behind and skipped, and the heap
/// is rebuilt once it holds more stale entries than live ones, so memory stays proportional to
/// the timers pending); firing O(log n) per timer.
class Timers {
 public:
  /// A new timer firing at `at`, then every `period` if it is positive. Returns its id.
  TimerId start(TimePoint at, Duration period, std::any message) {
    const auto id = ++last_id_;
    live_.emplace(id, Entry{at, period, std::move(message)});
    push({at, id});
    return TimerId(id);
  }

  /// True if the timer was pending (it will not fire again); false if it had fired (a one-shot
  /// timer) or was cancelled already, or is not one of this cell's.
  bool cancel(TimerId id) {
    if (live_.erase(id.value()) == 0) return false;
    if (heap_.size() > 64 && heap_.size() > 2 * live_.size()) rebuild();
    return true;
  }

  std::size_t pending() const noexcept { return live_.size(); }
  /// Heap slots stored, cancelled timers' included (at most about twice pending()).
  std::size_t slots() const noexcept { return heap_.size(); }

  /// Hands the message of the earliest timer due at `now` to `deliver` (timers due at the same
  /// time in the order they were started); false if none is due. One at a time, so that what
  /// `deliver` does (a handler that cancels a timer also due) is seen by the next call; `deliver`
  /// may also clear() the timers. A periodic timer is started again one period after the
  /// deadline it fired for; if that is already past (the cell ran late by a whole period), one
  /// period after `now`: ticks missed are skipped, not delivered in a burst.
  template <class Deliver>
  bool fire_next(TimePoint now, Deliver&& deliver) {
    while (!heap_.empty() && heap_.front().at <= now) {
      const auto top = pop();
      auto it = live_.find(top.id);
      if (it == live_.end() || it->second.at != top.at) continue;  // cancelled
      auto& e = it->second;
      if (e.period <= Duration::zero()) {
        auto message = std::move(e.message);
        live_.erase(it);
        deliver(std::move(message));  // the timer is gone: nothing of it is touched after
        return true;
      }
      e.at = e.at + e.period > now ? e.at + e.period : now + e.period;
      push({e.at, top.id});
      deliver(std::any(e.message));  // a copy: the timer keeps its message for the next tick
      return true;
    }
    return false;
  }

  /// The deadline to ask the timer service to wake the cell at, if it has not been asked for
  /// one as early: the earliest pending deadline, when it is earlier than every wake-up still
  /// expected. Records it as asked for.
  std::optional<TimePoint> wake_to_request() {
    while (!heap_.empty() && !live_.contains(heap_.front().id))
      pop();  // a cancelled timer at the top needs no wake-up
    if (heap_.empty()) return std::nullopt;
    const auto at = heap_.front().at;
    if (requested_ && *requested_ <= at) return std::nullopt;
    requested_ = at;
    return at;
  }
  /// The cell was woken by the service: the wake-up it expected has come (any later one it had
  /// asked for may still come, which costs a quantum that finds nothing due).
  void woken() noexcept { requested_.reset(); }

  /// The cell stops: every timer is cancelled with it.
  void clear() noexcept {
    heap_.clear();
    live_.clear();
  }

 private:
  struct Entry {
    TimePoint at;
    Duration period;
    std::any message;
  };
  struct Slot {
    TimePoint at;
    std::uint64_t id;
    // std::push_heap keeps the greatest first: the earliest deadline, then the oldest timer.
    friend bool operator<(const Slot& a, const Slot& b) noexcept {
      return a.at != b.at ? a.at > b.at : a.id > b.id;
    }
  };
  void push(Slot s) {
    heap_.push_back(s);
    std::push_heap(heap_.begin(), heap_.end());
  }
  Slot pop() {
    std::pop_heap(heap_.begin(), heap_.end());
    const auto s = heap_.back();
    heap_.pop_back();
    return s;
  }
  void rebuild() {
    heap_.clear();
    for (const auto& [id, e] : live_)
      heap_.push_back({e.at, id});
    std::make_heap(heap_.begin(), heap_.end());
  }

  std::vector<Slot> heap_;  // may hold cancelled timers' slots (skipped)
  std::unordered_map<std::uint64_t, Entry> live_;
  std::uint64_t last_id_ = 0;
  std::optional<TimePoint> requested_;  // the earliest wake-up asked of the service, not yet come
};

}  // namespace sluice::detail
