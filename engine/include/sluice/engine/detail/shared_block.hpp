#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <span>
#include <utility>
#include <vector>

#include <sluice/engine/detail/assert.hpp>

namespace sluice::detail {

template <class Event>
class BlockPool;

/// One immutable batch of events read by several subscribers (broadcast). The events live right
/// after the header, in one allocation. Reference counted: every handle and every edge message
/// that points at it holds one reference; the last release destroys the events and gives the
/// memory back to its pool (or frees it).
///
/// Synchronization
///   refs_ : increments are relaxed (the incrementing thread already holds a reference, so the
///           block cannot die meanwhile); decrements are acq_rel, so the thread that drops the
///           last reference sees every other holder's reads finished before it destroys.
///   Events: written once by the producer before the first message that points at them is
///           published (the edge's release/acquire on its message tail), then only read.
template <class Event>
class SharedBlock {
 public:
  static SharedBlock* allocate(std::size_t capacity, BlockPool<Event>* pool) {
    void* raw = ::operator new (bytes(capacity), std::align_val_t{alignment});
    return ::new (raw) SharedBlock(capacity, pool);
  }

  /// Frees the memory of a block whose events are already destroyed.
  static void deallocate(SharedBlock* b) noexcept {
    const auto n = bytes(b->capacity_);
    b->~SharedBlock();
    ::operator delete (static_cast<void*>(b), n, std::align_val_t{alignment});
  }

  /// Moves `events` in; the block must be empty and hold at least events.size(). Sets one
  /// reference (the caller's).
  void fill(std::span<Event> events) noexcept {
    SLUICE_ASSERT(size_ == 0 && events.size() <= capacity_,
                  "a shared block filled twice, or beyond its capacity");
    Event* d = data();
    for (std::size_t i = 0; i < events.size(); ++i)
      std::construct_at(d + i, std::move(events[i]));
    size_ = events.size();
    refs_.store(1, std::memory_order_relaxed);  // not yet visible to any other thread
  }

  std::span<const Event> events() const noexcept { return {data(), size_}; }
  std::size_t capacity() const noexcept { return capacity_; }

  void retain() noexcept {
    refs_.fetch_add(1, std::memory_order_relaxed);  // the caller holds a reference already
  }

  void release() noexcept {
    // acq_rel pairs with the other holders' decrements: the last one sees their reads done.
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    std::destroy_n(data(), size_);
    size_ = 0;
    if (pool_ != nullptr)
      pool_->recycle(this);
    else
      deallocate(this);
  }

 private:
  friend class BlockPool<Event>;
  static constexpr std::size_t alignment = alignof(Event) > alignof(std::max_align_t)
                                               ? alignof(Event)
                                               : alignof(std::max_align_t);
  static constexpr std::size_t header = (sizeof(std::atomic<std::uint32_t>) + 3 * sizeof(void*) +
                                         2 * sizeof(std::size_t) + alignment - 1) /
                                        alignment * alignment;
  static std::size_t bytes(std::size_t capacity) { return header + capacity * sizeof(Event); }

  SharedBlock(std::size_t capacity, BlockPool<Event>* pool) : capacity_(capacity), pool_(pool) {
    static_assert(sizeof(SharedBlock) <= header);
  }

  Event* data() const noexcept {
    return std::launder(reinterpret_cast<Event*>(
        reinterpret_cast<std::byte*>(const_cast<SharedBlock*>(this)) + header));
  }

  std::atomic<std::uint32_t> refs_{0};
  std::size_t size_ = 0;
  const std::size_t capacity_;
  BlockPool<Event>* const pool_;
  SharedBlock* next_ = nullptr;  // in the pool's free stack
};

/// Recycles the blocks of one producer instance, so steady-state broadcasting allocates nothing.
/// acquire() is called by the owner (the producer's thread) only; recycle() by whichever thread
/// drops a block's last reference. A block in use keeps the pool alive: the pool is freed when
/// its owner has closed it and the last block has come back.
///
/// Synchronization
///   free_ : a Treiber stack with many pushers (recycle, CAS release) and one taker that swaps
///           the whole list out (acquire: exchange acquire), so there is no ABA.
///   closed_, live_: seq_cst. After close(), a recycler that pushed and then sees closed_ frees
///           what it finds; close() sets closed_ and then frees what it finds, so each returned
///           block is freed exactly once by whoever swaps it out. A recycler holds a reference
///           on the pool for the length of the call.
template <class Event>
class BlockPool {
 public:
  BlockPool() = default;
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  /// A block holding `events` (moved in), with one reference for the caller. Owner only.
  SharedBlock<Event>* make(std::span<Event> events) {
    SharedBlock<Event>* b = take(events.size());
    b->fill(events);
    return b;
  }

  /// The owner is done with the pool; it lives on until the last block in use comes back.
  /// `this` may be gone when close() returns.
  void close() noexcept {
    for (auto* b : local_)
      free_block(b);
    local_.clear();
    closed_.store(true);
    free_list(free_.exchange(nullptr));
    unref();
  }

  void recycle(SharedBlock<Event>* b) noexcept {
    live_.fetch_add(1);  // keeps the pool alive until this call returns, even if closed meanwhile
    b->next_ = free_.load(std::memory_order_relaxed);  // re-read by the failing CAS
    // Release pairs with take()'s acquire exchange: the events' destruction happens before reuse.
    while (!free_.compare_exchange_weak(b->next_, b, std::memory_order_release,
                                        std::memory_order_relaxed)) {  // failure: retry only
    }
    if (closed_.load()) free_list(free_.exchange(nullptr));
    unref();
  }

 private:
  SharedBlock<Event>* take(std::size_t n) {
    if (local_.empty()) {
      // Acquire pairs with recycle's release CAS: the block's old events were destroyed.
      for (auto* b = free_.exchange(nullptr, std::memory_order_acquire); b != nullptr;) {
        auto* next = b->next_;
        local_.push_back(b);
        b = next;
      }
    }
    // Every block gets the largest capacity asked so far, so blocks of varying batch sizes are
    // all reusable and a smaller one is replaced once, not over and over.
    largest_ = std::max({largest_, n, min_capacity});
    while (!local_.empty()) {
      auto* b = local_.back();
      local_.pop_back();
      if (b->capacity() >= largest_) return b;
      free_block(b);  // made before the batches grew
    }
    live_.fetch_add(1);
    return SharedBlock<Event>::allocate(largest_, this);
  }

  void free_list(SharedBlock<Event>* b) noexcept {
    while (b != nullptr) {
      auto* next = b->next_;
      free_block(b);
      b = next;
    }
  }

  /// Frees a block while someone still holds a reference on the pool (the owner, or a
  /// recycler for the length of its call), so the count never reaches zero here.
  void free_block(SharedBlock<Event>* b) noexcept {
    SharedBlock<Event>::deallocate(b);
    live_.fetch_sub(1);
  }

  void unref() noexcept {
    if (live_.fetch_sub(1) == 1) delete this;
  }

  static constexpr std::size_t min_capacity = 16;

  std::atomic<SharedBlock<Event>*> free_{nullptr};
  std::atomic<bool> closed_{false};
  std::atomic<std::size_t> live_{1};  // blocks allocated and not freed, plus the owner
  std::vector<SharedBlock<Event>*> local_;
  std::size_t largest_ = 0;
};

}  // namespace sluice::detail
