#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>

namespace sluice {

/// A single-thread FIFO ring of events (the producer buffer; usable by dispatchers for their own
/// queues) that grows by doubling and never shrinks, so a buffer
/// that fills and empties in steady state allocates nothing. The front is readable as a
/// contiguous span (at most two spans cover the whole content).
template <class T>
class Fifo {
 public:
  Fifo() = default;
  Fifo(const Fifo&) = delete;
  Fifo& operator=(const Fifo&) = delete;
  Fifo(Fifo&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        spare_(std::exchange(o.spare_, nullptr)),
        capacity_(std::exchange(o.capacity_, 0)),
        head_(std::exchange(o.head_, 0)),
        size_(std::exchange(o.size_, 0)),
        popped_(std::exchange(o.popped_, 0)) {}
  Fifo& operator=(Fifo&&) = delete;
  ~Fifo() {
    clear();
    if (data_) std::allocator<T>{}.deallocate(data_, capacity_);
    if (spare_) std::allocator<T>{}.deallocate(spare_, capacity_);
  }

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  /// Events ever removed from the front (popped or dropped); a monotonic position.
  std::uint64_t popped_total() const noexcept { return popped_; }
  /// Events ever appended; a monotonic position.
  std::uint64_t pushed_total() const noexcept { return popped_ + size_; }

  void push_back(T&& v) {
    if (size_ == capacity_) grow();
    std::construct_at(data_ + ((head_ + size_) & (capacity_ - 1)), std::move(v));
    ++size_;
  }

  /// Appends every event of `events` (moved from), in order: at most two contiguous moves.
  void append(std::span<T> events) {
    if (events.empty()) return;
    while (capacity_ - size_ < events.size())
      grow();
    const std::size_t tail = (head_ + size_) & (capacity_ - 1);
    const std::size_t first = std::min(events.size(), capacity_ - tail);
    std::uninitialized_move(events.begin(), events.begin() + first, data_ + tail);
    std::uninitialized_move(events.begin() + first, events.end(), data_);
    size_ += events.size();
  }

  /// The longest contiguous run at the front.
  std::span<T> front_span() noexcept {
    if (size_ == 0) return {};
    const auto n = std::min(size_, capacity_ - head_);
    return {data_ + head_, n};
  }

  /// The first min(n, size()) events as one contiguous span. When they wrap around the end of
  /// the ring, the content is moved once into a spare array of the same capacity (kept for
  /// reuse, so steady state allocates nothing) so that it starts at the array's beginning.
  std::span<T> front(std::size_t n) {
    n = std::min(n, size_);
    if (head_ + n > capacity_) {
      if (spare_ == nullptr) spare_ = std::allocator<T>{}.allocate(capacity_);
      for (std::size_t i = 0; i < size_; ++i) {
        T* old = data_ + ((head_ + i) & (capacity_ - 1));
        std::construct_at(spare_ + i, std::move(*old));
        std::destroy_at(old);
      }
      std::swap(data_, spare_);
      head_ = 0;
    }
    return {data_ + head_, n};
  }

  /// Destroys `n` events at the front.
  void pop_front(std::size_t n) noexcept {
    if constexpr (std::is_trivially_destructible_v<T>) {
      if (n > 0) head_ = (head_ + n) & (capacity_ - 1);
    } else {
      for (std::size_t i = 0; i < n; ++i) {
        std::destroy_at(data_ + head_);
        head_ = (head_ + 1) & (capacity_ - 1);
      }
    }
    size_ -= n;
    popped_ += n;
  }

  void clear() noexcept { pop_front(size_); }

 private:
  void grow() {
    const std::size_t cap = capacity_ == 0 ? 16 : capacity_ * 2;
    T* fresh = std::allocator<T>{}.allocate(cap);
    for (std::size_t i = 0; i < size_; ++i) {
      T* old = data_ + ((head_ + i) & (capacity_ - 1));
      std::construct_at(fresh + i, std::move(*old));
      std::destroy_at(old);
    }
    if (data_) std::allocator<T>{}.deallocate(data_, capacity_);
    if (spare_) std::allocator<T>{}.deallocate(spare_, capacity_);
    spare_ = nullptr;
    data_ = fresh;
    capacity_ = cap;
    head_ = 0;
  }

  T* data_ = nullptr;
  T* spare_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t head_ = 0;
  std::size_t size_ = 0;
  std::uint64_t popped_ = 0;
};

}  // namespace sluice
