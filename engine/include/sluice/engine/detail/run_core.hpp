#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include <sluice/engine/detail/executor.hpp>
#include <sluice/engine/detail/stable_table.hpp>
#include <sluice/engine/detail/timer_service.hpp>
#include <sluice/engine/dispatcher.hpp>
#include <sluice/engine/metrics.hpp>

namespace sluice::detail {

using Logger = std::function<void(LogLevel, std::string_view)>;

class CellBase;

/// The run's cells by number (a number stays valid, and readers need no lock, while
/// Run::attach adds cells).
class CellTable {
 public:
  std::uint32_t next_index() const noexcept { return table_.next_index(); }
  void reserve(std::size_t more) {
    table_.reserve(more);
    schedulable_.reserve(more);
  }
  /// Appends a cell (its number is next_index()). Writer only (the run's table mutex, or the
  /// thread setting the run up).
  template <class C>
  void add(std::unique_ptr<C> cell) {
    schedulable_.add(cell.get());  // a CellBase is a Schedulable: converted where it is complete
    table_.add(std::move(cell));
  }
  std::size_t size() const noexcept { return table_.size(); }
  CellBase& operator[](std::size_t i) const noexcept { return *table_[i]; }
  Schedulable& schedulable(std::size_t i) const noexcept { return *schedulable_[i]; }

 private:
  StableTable<std::unique_ptr<CellBase>> table_;
  StableTable<Schedulable*> schedulable_;  // the same cells, as the executor sees them
};

/// State shared by every cell of one run.
///
/// Synchronization
///   Writers : any cell -> live_ (fetch_sub), cancel_ (store), error_claimed_ (CAS) + error_;
///             the last cell to finish -> done_.
///   H1      : live_.fetch_sub is acq_rel, so the last decrement carries every cell's writes
///             (the first error among them); done_ release / acquire in wait() publishes them.
///   H2      : error_ is written only by the thread that wins error_claimed_, before it
///             finishes its cell (H1 publishes it).
///   Progress: wait-free, but for wait(), which blocks (never spins) until done_.
class RunCore {
 public:
  RunCore(Executor& executor, Logger logger, std::size_t quantum, bool fail_fast,
          bool virtual_clock)
      : executor_(executor),
        logger_(std::move(logger)),
        quantum_(quantum),
        fail_fast_(fail_fast),
        clock_(virtual_clock) {}

  Executor& executor() noexcept { return executor_; }
  std::size_t quantum() const noexcept { return quantum_; }
  bool fail_fast() const noexcept { return fail_fast_; }
  /// Never throws: a throwing logger must not stop a cell from finishing.
  void log(LogLevel level, std::string_view message) const noexcept {
    try {
      if (logger_) logger_(level, message);
    } catch (...) {  // the message is lost; the run goes on
    }
  }

  CellTable& cells() noexcept { return cells_; }
  /// The run's clock and its timer service (engine/DESIGN.md 11).
  const RunClock& clock() const noexcept { return clock_; }
  RunClock& clock() noexcept { return clock_; }
  TimerService& timers() noexcept { return timers_; }
  /// Schedules cell `cell` unless it is already (engine/DESIGN.md 1, step 1). Any thread.
  void notify(std::uint32_t cell) { cells_.schedulable(cell).notify(executor_); }
  void notify_all() {
    for (std::size_t i = 0, n = cells_.size(); i < n; ++i)
      cells_.schedulable(i).notify(executor_);
  }

  void start() {
    started_ = true;
    live_.store(cells_.size(), std::memory_order_relaxed);  // before any cell runs (schedule)
    if (cells_.size() == 0) finish_run();
    notify_all();
  }

  /// Counts `n` more live cells (added while running), unless the run has already ended: then
  /// returns false. Any thread.
  bool add_live(std::size_t n) {
    auto live = live_.load(std::memory_order_relaxed);  // the CAS below orders
    do {
      if (live == 0) return false;
      // acq_rel on success: pairs with cell_finished's acq_rel (H1), the count stays one chain.
    } while (!live_.compare_exchange_weak(live, live + n, std::memory_order_acq_rel,
                                          std::memory_order_relaxed));  // failure: retry only
    return true;
  }

  /// A cell stopped for good. Any thread; once per cell.
  void cell_finished() {
    if (live_.fetch_sub(1, std::memory_order_acq_rel) == 1) finish_run();  // H1
  }

  /// Keeps the first error. Any thread.
  void record_error(std::exception_ptr e) {
    bool expected = false;
    // Relaxed (both orders): error_ is published by H1 (the claimer finishes its cell later).
    constexpr auto relaxed = std::memory_order_relaxed;  // see above
    if (error_claimed_.compare_exchange_strong(expected, true, relaxed, relaxed))
      error_ = std::move(e);
  }

  /// Asks every cell to stop soon. Any thread.
  void request_cancel() {
    // Relaxed: cells read it after notify(), whose acq_rel (Schedulable H1) orders it.
    if (cancel_.exchange(true, std::memory_order_relaxed)) return;
    notify_all();
  }
  bool cancel_requested() const noexcept {
    return cancel_.load(std::memory_order_relaxed);  // a hint: notify() carries the ordering
  }

  /// False while the run is being set up (Engine::start): no cell has been scheduled yet.
  /// The thread that owns the Run only.
  bool started() const noexcept { return started_; }
  bool done() const noexcept { return done_.load(std::memory_order_acquire); }  // H1
  /// Blocks the calling thread until every cell has finished.
  void wait_done() const {
    while (!done_.load(std::memory_order_acquire))   // H1
      done_.wait(false, std::memory_order_acquire);  // H1: pairs with finish_run's release
  }
  /// After wait_done(): the first error, if any.
  std::exception_ptr error() const noexcept { return error_; }

 private:
  void finish_run() {
    done_.store(true, std::memory_order_release);  // H1
    done_.notify_all();
  }

  Executor& executor_;
  Logger logger_;
  const std::size_t quantum_;
  const bool fail_fast_;
  CellTable cells_;
  RunClock clock_;
  // After cells_: destroyed first, so its thread never notifies a destroyed cell.
  TimerService timers_{clock_, [this](std::uint32_t cell) { notify(cell); }};
  std::atomic<std::size_t> live_{0};
  std::atomic<bool> cancel_{false};
  std::atomic<bool> error_claimed_{false};
  std::exception_ptr error_;
  std::atomic<bool> done_{false};
  bool started_ = false;
};

}  // namespace sluice::detail
