#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <sluice/engine/mpmc_queue.hpp>
#include <sluice/engine/time.hpp>

namespace sluice::detail {

/// A run's clock: steady_clock, or a virtual clock (a manual run's) that only Run::advance moves.
class RunClock {
 public:
  explicit RunClock(bool is_virtual) noexcept : virtual_(is_virtual) {}
  bool is_virtual() const noexcept { return virtual_; }
  TimePoint now() const noexcept {
    if (!virtual_) return std::chrono::steady_clock::now();
    // Relaxed: a manual run runs every cell on the thread that moves the clock (Run::advance);
    // the atomic only lets Run::now be read from another thread. Orders nothing.
    return TimePoint(Duration(virtual_ns_.load(std::memory_order_relaxed)));
  }
  /// Virtual clock only: moves it to `t` (never back).
  void set(TimePoint t) noexcept {
    virtual_ns_.store(t.time_since_epoch().count(), std::memory_order_relaxed);  // see now()
  }

 private:
  const bool virtual_;
  std::atomic<std::int64_t> virtual_ns_{0};
};

/// The run's one timer service (engine/DESIGN.md 11): a cell asks it for a wake-up at the
/// earliest deadline among its timers; the service sleeps until the earliest wake-up asked of
/// it, then marks each cell due at that time and notifies it. On the real clock it is one thread,
/// started by the first request, that never spins: it sleeps in the kernel until a deadline or
/// until a request earlier than its next deadline arrives. On a virtual clock it has no thread:
/// Run::advance moves the clock from deadline to deadline (`earliest`, `wake_due`).
///
/// Synchronization (the real clock)
///   Writers : any cell -> requests_ (lock-free MPMC), signal_ (fetch_add); the service thread
///             -> next_ns_, heap_ (its own), the cells' due flags.
///   H1      : a request is either collected before the service sleeps, or its sender sees a
///             next_ns_ later than its deadline (the service stores it before it sleeps, and
///             stores "infinity" while awake) and bumps signal_, so the futex wait, which
///             compares signal_ with the value the service read before collecting, returns at
///             once. next_ns_ and signal_ are seq_cst; the queue's enqueue and dequeue are not,
///             so a seq_cst fence separates the enqueue from the load of next_ns_ (request),
///             and the store of "infinity" from the collect (loop): without them each side
///             could miss the other's write (store buffering).
///   H2      : a due flag is written before notify(), whose acq_rel (Schedulable H1) makes it
///             visible to the quantum that follows.
///   Progress: request() is lock-free (a futex wake when the service must wake earlier).
class TimerService {
 public:
  struct Wake {
    TimePoint at;
    std::uint32_t cell = 0;
    std::atomic<bool>* due = nullptr;  // the cell's flag, set before it is notified (H2)
  };
  /// Schedules cell number `cell` (RunCore::notify).
  using Notify = std::function<void(std::uint32_t)>;

  TimerService(RunClock& clock, Notify notify) : clock_(clock), notify_(std::move(notify)) {}
  TimerService(const TimerService&) = delete;
  TimerService& operator=(const TimerService&) = delete;
  ~TimerService() { stop(); }

  /// Any thread (a cell's): wake `w.cell` at `w.at` or later.
  void request(Wake w);

  /// Ends the service thread, if it was started. Wake-ups not yet due are dropped. Called when
  /// no cell can run any more (Run's destructor), before the cells are destroyed.
  void stop();

  /// Virtual clock (the thread that runs the manual run): the earliest wake-up asked for.
  std::optional<TimePoint> earliest();
  /// Virtual clock: marks due, and notifies, every cell whose wake-up is at `now` or before.
  void wake_due(TimePoint now);

 private:
  void loop();
  void collect();
  static constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();

  RunClock& clock_;
  Notify notify_;
  MpmcQueue<Wake> requests_{64};
  std::vector<Wake> heap_;  // the service's own (or the manual run's thread's): earliest first
  std::atomic<std::uint32_t> signal_{0};      // H1: the futex word
  std::atomic<std::int64_t> next_ns_{never};  // H1: when the sleeping service wakes anyway
  std::atomic<bool> stopping_{false};
  std::once_flag started_;
  std::thread thread_;
};

}  // namespace sluice::detail
