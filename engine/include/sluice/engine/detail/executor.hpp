#pragma once

#include <atomic>
#include <cstdint>
#include <deque>

namespace sluice::detail {

class Executor;

/// What the scheduler runs: one stage instance. A cell runs on at most one thread at a time.
///
/// Synchronization
///   Writers : any thread -> notify() (fetch_add); the running thread -> fetch_sub in execute().
///   I1      : notes_ > 0 exactly while the cell is scheduled or running; the thread that moves
///             it from 0 schedules the cell, so a cell is never scheduled twice.
///   H1      : notify() is acq_rel and execute()'s closing fetch_sub is acq_rel: whatever a
///             notifier wrote before notify() is visible to the run that follows, and a run that
///             ends sees every notification made before its fetch_sub (else it runs again).
///   Progress: lock-free; no wake-up is lost.
class Schedulable {
 public:
  virtual ~Schedulable() = default;

  /// Any thread. Schedules the cell unless it is already scheduled or running.
  void notify(Executor& ex);

  /// Executor only: runs quanta until no notification is pending. Returns false if the cell
  /// still has work and must be run again (yield after a quantum).
  bool execute();

 protected:
  /// One bounded quantum of work. Returns true if work remains. Must not throw.
  virtual bool run_quantum() noexcept = 0;

 public:
  /// Pending notifications (tests and diagnostics only).
  std::uint32_t notes_approx() const noexcept {
    return notes_.load(std::memory_order_relaxed);  // a snapshot, orders nothing
  }

 private:
  std::atomic<std::uint32_t> notes_{0};
};

/// The scheduling backend: oneTBB in production, a deterministic queue in tests.
class Executor {
 public:
  virtual ~Executor() = default;
  /// Any thread. Runs `cell` soon (cell->execute()).
  virtual void schedule(Schedulable* cell) = 0;
};

inline void Schedulable::notify(Executor& ex) {
  if (notes_.fetch_add(1, std::memory_order_acq_rel) == 0) ex.schedule(this);  // H1
}

inline bool Schedulable::execute() {
  for (;;) {
    const auto seen = notes_.load(std::memory_order_acquire);  // H1
    if (run_quantum()) {
      // Yield: keep one note (we stay scheduled; the executor runs us again) and drop the rest,
      // so a cell that always has work does not count up to overflow.
      if (seen > 1) notes_.fetch_sub(seen - 1, std::memory_order_acq_rel);  // H1
      return false;
    }
    if (notes_.fetch_sub(seen, std::memory_order_acq_rel) == seen) return true;  // H1
  }
}

/// Deterministic single-thread executor for tests: cells run in FIFO order of scheduling, on the
/// thread that calls run_until_idle().
class ManualExecutor final : public Executor {
 public:
  void schedule(Schedulable* cell) override { queue_.push_back(cell); }

  /// Runs scheduled cells until none is left. Returns how many cell runs it made.
  std::size_t run_until_idle(std::size_t limit = SIZE_MAX) {
    std::size_t runs = 0;
    while (!queue_.empty() && runs < limit) {
      Schedulable* c = queue_.front();
      queue_.pop_front();
      ++runs;
      if (!c->execute()) queue_.push_back(c);
    }
    return runs;
  }
  bool idle() const noexcept { return queue_.empty(); }

 private:
  std::deque<Schedulable*> queue_;
};

}  // namespace sluice::detail
