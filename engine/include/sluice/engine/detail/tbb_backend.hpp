#pragma once

// The only file that names oneTBB's task APIs (public API only: task_arena, task_group,
// global_control).

#include <algorithm>
#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>

#include <tbb/global_control.h>
#include <tbb/info.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>

#include <sluice/engine/detail/executor.hpp>

namespace sluice::detail {

/// oneTBB applies the smallest max_allowed_parallelism among the live global_control objects, so
/// one object per run would let a small run starve a big one. Runs share one, sized for all of
/// them together: the sum of their threads, plus one (the limit counts an external thread).
/// The mutex is taken when a run starts and ends only, never on the event path.
class WorkerBudget {
 public:
  explicit WorkerBudget(int threads) : threads_(threads) { change(+threads_); }
  ~WorkerBudget() { change(-threads_); }
  WorkerBudget(const WorkerBudget&) = delete;
  WorkerBudget& operator=(const WorkerBudget&) = delete;

 private:
  static void change(int delta) {
    static std::mutex mutex;  // run start and end only
    static int total = 0;
    static std::unique_ptr<tbb::global_control> control;
    std::lock_guard lock(mutex);
    total += delta;
    control.reset();  // at most one of ours is alive at a time
    if (total > 0)
      control = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                                      static_cast<std::size_t>(total) + 1);
  }
  const int threads_;
};

/// Runs cells as oneTBB tasks in a private arena of `concurrency` threads.
///
/// The thread that starts a run does not join the arena (it blocks on the run's completion
/// instead of spinning on the engine's cores), so the arena reserves no slot for it and the
/// WorkerBudget raises oneTBB's worker count to cover it.
///
/// Direct hand-off: a cell scheduled from inside a task of this executor is kept in a per-thread
/// slot and run by the same thread as soon as the current cell yields, instead of becoming a new
/// task (a task costs ~80 ns). At most `max_handoffs` cells run in a row this way; then the next
/// one is spawned, so other tasks are never starved.
class TbbExecutor final : public Executor {
 public:
  /// `concurrency` 0: oneTBB's default (the cores this process may use).
  explicit TbbExecutor(int concurrency, bool direct_handoff = true)
      : threads_(concurrency > 0 ? concurrency : std::max(tbb::info::default_concurrency(), 1)),
        workers_(threads_),
        arena_(threads_, 0),
        direct_handoff_(direct_handoff) {}

  ~TbbExecutor() noexcept override {
    try {
      wait_for_tasks();
    } catch (...) {  // cells catch their own exceptions; nothing else can reach here
    }
  }

  void schedule(Schedulable* cell) override {
    Slot* slot = tls_slot();
    if (slot->owner == this) {
      if (direct_handoff_ && slot->next == nullptr) {
        slot->next = cell;
        return;
      }
      tg_.run([this, cell] { run_task(cell); });
    } else {
      arena_.enqueue(tg_.defer([this, cell] { run_task(cell); }));
    }
  }

  /// Blocks until every task of this executor has finished. Any thread outside the arena.
  void wait_for_tasks() {
    arena_.execute([this] { tg_.wait(); });
  }

 private:
  // Measured (bench_engine, BM_Handoff): 64 spawned often enough to wake the idle worker, which
  // then spins and steals for no gain (-15 to -25 % at max_demand 1000); 4096 keeps fairness.
  static constexpr int max_handoffs = 4096;

  struct Slot {
    TbbExecutor* owner = nullptr;
    Schedulable* next = nullptr;
  };
  static Slot* tls_slot() {
    thread_local Slot slot;
    return &slot;
  }

  void run_task(Schedulable* cell) {
    Slot* slot = tls_slot();
    const Slot saved = *slot;  // an executor of another run may be on this thread's stack
    *slot = {this, nullptr};
    for (int handoffs = 0; cell != nullptr; ++handoffs) {
      if (!cell->execute()) {
        if (slot->next == nullptr) {
          slot->next = cell;  // no one else to run: continue the same cell
        } else {
          tg_.run([this, cell] { run_task(cell); });  // yield to the handed-off cell
        }
      }
      cell = std::exchange(slot->next, nullptr);
      if (cell != nullptr && handoffs >= max_handoffs) {
        tg_.run([this, cell] { run_task(cell); });
        cell = nullptr;
      }
    }
    *slot = saved;
  }

  const int threads_;
  WorkerBudget workers_;
  tbb::task_arena arena_;
  tbb::task_group tg_;
  const bool direct_handoff_;
};

}  // namespace sluice::detail
