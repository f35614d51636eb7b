#pragma once

#include <atomic>

namespace sluice::detail {

/// A counter written by one thread and read approximately by others (metrics). No RMW.
template <class T>
class OwnedCounter {
 public:
  void add(T n) noexcept {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);  // single writer
  }
  void set(T n) noexcept { v_.store(n, std::memory_order_relaxed); }     // metrics only
  T get() const noexcept { return v_.load(std::memory_order_relaxed); }  // metrics only

 private:
  std::atomic<T> v_{0};
};

}  // namespace sluice::detail
