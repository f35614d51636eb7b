#pragma once

#include <algorithm>
#include <cstdint>

namespace sluice::detail {

/// GenStage's consumer demand algorithm for one automatic subscription (Utils.split_batches,
/// GENSTAGE.md 1.5), exactly: ask max_demand on subscribe; cut each incoming message from its
/// start into chunks of at most max - min events; after a chunk, when the outstanding demand
/// would fall to min_demand or below, ask for what brings it back to max_demand.
///
/// A pure state machine, so the arithmetic is unit-tested apart from any scheduling.
class ConsumerDemand {
 public:
  struct Chunk {
    std::int64_t size = 0;    ///< events to hand to handle_events
    std::int64_t ask = 0;     ///< demand to send after handle_events returns (0: none)
    std::int64_t excess = 0;  ///< events beyond what was asked for (logged, still delivered)
  };

  ConsumerDemand(std::int64_t max_demand, std::int64_t min_demand) noexcept
      : max_(max_demand), min_(min_demand) {}

  /// The ask sent on subscribe.
  std::int64_t subscribe() noexcept {
    pending_ = max_;
    return max_;
  }

  /// Starts a message of `count` events.
  void begin(std::int64_t count) noexcept {
    old_ = pending_;
    left_ = count;
  }
  bool more() const noexcept { return left_ > 0; }

  /// The next chunk of the current message.
  Chunk next() noexcept {
    Chunk c;
    c.size = std::min(max_ - min_, left_);
    left_ -= c.size;
    std::int64_t n = c.size;
    if (old_ - n < 0) {  // the producer sent more than was asked
      c.excess = n - old_;
      n = old_;
      old_ = 0;
    } else {
      old_ -= n;
    }
    if (pending_ - n <= min_) {
      c.ask = max_ - (pending_ - n);
      pending_ = max_;
    } else {
      pending_ -= n;
    }
    return c;
  }

  /// Asked for and not yet received.
  std::int64_t pending() const noexcept { return pending_; }
  std::int64_t max_demand() const noexcept { return max_; }
  std::int64_t min_demand() const noexcept { return min_; }

 private:
  std::int64_t max_, min_;
  std::int64_t pending_ = 0;
  std::int64_t old_ = 0;
  std::int64_t left_ = 0;
};

}  // namespace sluice::detail
