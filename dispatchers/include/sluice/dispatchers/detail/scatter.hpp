#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

namespace sluice::detail {

/// The runs of PartitionDispatcher::scatter(): partition s's events are [base + s * stride,
/// cursors[s]). Destroys the events placed when it goes (also when a move throws half-way).
template <class Event>
class ScatterRuns {
 public:
  ScatterRuns(Event* base, std::size_t stride, std::vector<Event*>& cursors)
      : base_(base), stride_(stride), cursors_(cursors) {
    for (std::size_t s = 0; s < cursors_.size(); ++s)
      cursors_[s] = base_ + s * stride_;
  }
  ScatterRuns(const ScatterRuns&) = delete;
  ScatterRuns& operator=(const ScatterRuns&) = delete;
  ~ScatterRuns() {
    if constexpr (!std::is_trivially_destructible_v<Event>)
      for (std::size_t s = 0; s < cursors_.size(); ++s)
        std::destroy(base_ + s * stride_, cursors_[s]);
  }
  std::span<Event> run(std::size_t slot) const { return {base_ + slot * stride_, cursors_[slot]}; }

 private:
  Event* base_;
  std::size_t stride_;
  std::vector<Event*>& cursors_;
};

/// Uninitialised storage for events, reused from one dispatch to the next.
template <class Event>
class RawBuffer {
 public:
  RawBuffer() = default;
  RawBuffer(const RawBuffer&) = delete;
  RawBuffer& operator=(const RawBuffer&) = delete;
  ~RawBuffer() {
    if (data_) std::allocator<Event>{}.deallocate(data_, capacity_);
  }
  Event* reserve(std::size_t n) {
    if (n > capacity_) {
      Event* fresh = std::allocator<Event>{}.allocate(n);
      if (data_) std::allocator<Event>{}.deallocate(data_, capacity_);
      data_ = fresh;
      capacity_ = n;
    }
    return data_;
  }

 private:
  Event* data_ = nullptr;
  std::size_t capacity_ = 0;
};

}  // namespace sluice::detail
