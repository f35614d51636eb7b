#pragma once

#include <mutex>
#include <utility>

#include <sluice/engine/context.hpp>

namespace sluice::detail {

/// A Waker set by a stage's thread and used by application threads: a mutex (the application's
/// edge, taken once per wake-up, never per event) makes the hand-over safe whichever comes first.
class SharedWaker {
 public:
  void set(Waker w) {
    std::lock_guard lock(mutex_);
    waker_ = std::move(w);
  }
  void wake() {
    std::lock_guard lock(mutex_);
    waker_.wake();
  }

 private:
  std::mutex mutex_;
  Waker waker_;
};

}  // namespace sluice::detail
