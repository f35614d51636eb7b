#pragma once

#include <chrono>
#include <cstdint>

/// Time as stages see it (engine/DESIGN.md 11). A run's clock is std::chrono::steady_clock, or,
/// in a manual run (RunOptions::manual), a virtual clock that starts at TimePoint{} and that only
/// Run::advance moves.
namespace sluice {

/// A length of time on a run's clock (any std::chrono duration of whole units converts to it).
using Duration = std::chrono::nanoseconds;
/// A point on a run's clock (Context::now, Run::now).
using TimePoint = std::chrono::time_point<std::chrono::steady_clock, Duration>;

/// Names one timer of one stage instance (Context::send_after, send_every), for cancel_timer.
/// A default-made TimerId names no timer.
class TimerId {
 public:
  TimerId() = default;
  explicit TimerId(std::uint64_t value) noexcept : value_(value) {}
  std::uint64_t value() const noexcept { return value_; }
  explicit operator bool() const noexcept { return value_ != 0; }
  friend bool operator==(TimerId, TimerId) = default;

 private:
  std::uint64_t value_ = 0;
};

}  // namespace sluice
