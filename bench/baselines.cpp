// The ring and moodycamel baselines (bench/baselines.hpp). Compiled on their own, with loops
// aligned (bench/CMakeLists.txt): self-contained apart from moodycamel's header (Debian:
// libconcurrentqueue-dev).
#include "baselines.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <thread>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#if __has_include(<concurrentqueue/concurrentqueue.h>)
#include <concurrentqueue/concurrentqueue.h>
#elif __has_include(<moodycamel/concurrentqueue.h>)
#include <moodycamel/concurrentqueue.h>
#elif __has_include("concurrentqueue.h")
#include "concurrentqueue.h"
#else
#error "moodycamel concurrentqueue.h not found (Debian: libconcurrentqueue-dev)"
#endif

namespace sluice_bench {

// Fixed on purpose: std::hardware_destructive_interference_size varies with
// compiler flags and triggers -Winterference-size warnings in GCC.
inline constexpr std::size_t cache_line = 64;

namespace detail {

// Busy-wait helper: a pause hint on every spin (x86-64) and a yield every
// `yield_every` spins so that a spinning thread cannot starve the other side
// when both share a core (e.g. on a 2-core machine with other load).
class Backoff {
 public:
  void spin() noexcept {
#if defined(__x86_64__)
    _mm_pause();
#endif
    if (++spins_ % yield_every == 0) {
      std::this_thread::yield();
    }
  }
  void reset() noexcept {
    spins_ = 0;
  }

 private:
  static constexpr unsigned yield_every = 64;
  unsigned spins_ = 0;
};

// Single-producer single-consumer ring of int64_t with a power-of-two number
// of slots. Indices increase monotonically and are masked on access, so the
// ring is full when tail - head == capacity. Each index and each cached copy of
// the other side's index has its own cache line (as in rigtorp's SPSCQueue).
class SpscRing {
 public:
  static constexpr std::size_t capacity = 8192;
  static_assert((capacity & (capacity - 1)) == 0, "capacity must be a power of two");
  static constexpr std::size_t mask = capacity - 1;

  // Producer side. Writes up to `batch` events starting at `first` and never
  // more than `remaining`; publishes the tail once. Returns how many were
  // written (0 if the ring was full).
  std::size_t push_batch(std::int64_t first, std::size_t batch) noexcept {
    const std::size_t tail = tail_local_;
    std::size_t free_slots = capacity - (tail - head_cache_);
    if (free_slots < batch) {
      // acquire: pairs with the consumer's release store of head_, so its
      // reads of the slots we are about to overwrite happen before our writes.
      head_cache_ = head_.load(std::memory_order_acquire);
      free_slots = capacity - (tail - head_cache_);
      if (free_slots == 0) {
        return 0;
      }
    }
    const std::size_t n = std::min(batch, free_slots);
    for (std::size_t i = 0; i < n; ++i) {
      slots_[(tail + i) & mask] = first + static_cast<std::int64_t>(i);
    }
    tail_local_ = tail + n;
    // release: pairs with the consumer's acquire load of tail_, publishing the slot writes.
    tail_.store(tail_local_, std::memory_order_release);
    return n;
  }

  // Consumer side. Drains everything known to be available, adding it to
  // `sum`, and publishes the head once. Returns how many were read.
  std::size_t drain(std::int64_t& sum) noexcept {
    const std::size_t head = head_local_;
    if (head == tail_cache_) {
      // acquire: pairs with the producer's release store of tail_, making the slot writes visible.
      tail_cache_ = tail_.load(std::memory_order_acquire);
      if (head == tail_cache_) {
        return 0;
      }
    }
    const std::size_t end = tail_cache_;
    std::int64_t local = 0;
    for (std::size_t i = head; i != end; ++i) {
      local += slots_[i & mask];
    }
    sum += local;
    head_local_ = end;
    // release: pairs with the producer's acquire load of head_, so our slot reads precede its
    // overwrites.
    head_.store(end, std::memory_order_release);
    return end - head;
  }

 private:
  // Written by the producer, read by the consumer.
  alignas(cache_line) std::atomic<std::size_t> tail_{0};
  // Producer-private: own tail and cached copy of the consumer's head.
  alignas(cache_line) std::size_t tail_local_ = 0;
  std::size_t head_cache_ = 0;
  // Written by the consumer, read by the producer.
  alignas(cache_line) std::atomic<std::size_t> head_{0};
  // Consumer-private: own head and cached copy of the producer's tail.
  alignas(cache_line) std::size_t head_local_ = 0;
  std::size_t tail_cache_ = 0;
  alignas(cache_line) std::array<std::int64_t, capacity> slots_{};
};

// An atomic alone on its cache line.
struct alignas(cache_line) PaddedCredit {
  std::atomic<std::int64_t> value{0};
};

}  // namespace detail

// Hand-written SPSC ring: the producer writes up to `batch` events per tail
// publication; the consumer drains all available events per head publication.
std::int64_t ring_handoff(std::int64_t events, std::size_t batch) {
  if (events <= 0) {
    return 0;
  }
  batch = std::clamp<std::size_t>(batch, 1, detail::SpscRing::capacity);
  auto ring = std::make_unique<detail::SpscRing>();  // 64 KiB of slots: keep it off the stack

  std::int64_t sum = 0;
  std::thread consumer([&] {
    detail::Backoff backoff;
    std::int64_t local_sum = 0;
    std::int64_t received = 0;
    while (received < events) {
      const std::size_t n = ring->drain(local_sum);
      if (n == 0) {
        backoff.spin();
        continue;
      }
      backoff.reset();
      received += static_cast<std::int64_t>(n);
    }
    sum = local_sum;  // read by the caller after join()
  });
  std::thread producer([&] {
    detail::Backoff backoff;
    std::int64_t next = 0;
    while (next < events) {
      const auto remaining = static_cast<std::size_t>(events - next);
      const std::size_t n = ring->push_batch(next, std::min(batch, remaining));
      if (n == 0) {
        backoff.spin();
        continue;
      }
      backoff.reset();
      next += static_cast<std::int64_t>(n);
    }
  });
  producer.join();
  consumer.join();
  return sum;
}

// moodycamel::ConcurrentQueue with a GenStage-style demand protocol: `credit`
// starts at max_demand; the producer takes credit (one CAS per batch of up to
// 256 events) before enqueueing; the consumer returns credit once it has
// handled max_demand - min_demand events since its last grant, with
// min_demand = max_demand / 2. Hence at most max_demand events are in flight.
std::int64_t moodycamel_demand_handoff(std::int64_t events, std::size_t max_demand) {
  if (events <= 0) {
    return 0;
  }
  constexpr std::size_t bulk = 256;
  max_demand = std::max<std::size_t>(max_demand, 1);
  const std::size_t min_demand = max_demand / 2;
  const auto grant_step = static_cast<std::int64_t>(max_demand - min_demand);

  // Pre-size for everything that can be in flight: one explicit producer, no implicit ones.
  moodycamel::ConcurrentQueue<std::int64_t> queue(max_demand + bulk, 1, 0);
  detail::PaddedCredit credit;
  credit.value.store(static_cast<std::int64_t>(max_demand));  // before the threads start

  std::int64_t sum = 0;
  std::thread consumer([&] {
    moodycamel::ConsumerToken token(queue);
    std::array<std::int64_t, bulk> buffer{};
    detail::Backoff backoff;
    std::int64_t local_sum = 0;
    std::int64_t received = 0;
    std::int64_t handled_since_grant = 0;
    while (received < events) {
      const std::size_t n = queue.try_dequeue_bulk(token, buffer.begin(), bulk);
      if (n == 0) {
        backoff.spin();
        continue;
      }
      backoff.reset();
      for (std::size_t i = 0; i < n; ++i) {
        local_sum += buffer[i];
      }
      received += static_cast<std::int64_t>(n);
      handled_since_grant += static_cast<std::int64_t>(n);
      if (handled_since_grant >= grant_step) {
        // release: pairs with the producer's acquire CAS, so these dequeues happen before
        // the enqueues this credit allows (the in-flight bound holds in happens-before).
        credit.value.fetch_add(handled_since_grant, std::memory_order_release);
        handled_since_grant = 0;
      }
    }
    sum = local_sum;  // read by the caller after join()
  });
  std::thread producer([&] {
    moodycamel::ProducerToken token(queue);
    std::array<std::int64_t, bulk> buffer{};
    detail::Backoff backoff;
    std::int64_t next = 0;
    while (next < events) {
      const std::int64_t want = std::min(static_cast<std::int64_t>(bulk), events - next);
      // relaxed: only a first guess; the CAS below re-reads and validates it.
      std::int64_t available = credit.value.load(std::memory_order_relaxed);
      std::int64_t take = 0;
      for (;;) {
        if (available <= 0) {
          backoff.spin();
          // relaxed: polling only; the successful CAS below is the acquire.
          available = credit.value.load(std::memory_order_relaxed);
          continue;
        }
        take = std::min(want, available);
        // acquire on success: pairs with the consumer's release fetch_add that granted this credit.
        // relaxed on failure: `available` is just refreshed and re-checked.
        if (credit.value.compare_exchange_weak(available, available - take,
                                               std::memory_order_acquire,
                                               std::memory_order_relaxed)) {
          break;
        }
      }
      backoff.reset();
      const auto count = static_cast<std::size_t>(take);
      for (std::size_t i = 0; i < count; ++i) {
        buffer[i] = next + static_cast<std::int64_t>(i);
      }
      if (!queue.enqueue_bulk(token, buffer.begin(), count)) {
        std::abort();  // only on allocation failure
      }
      next += take;
    }
  });
  producer.join();
  consumer.join();
  return sum;
}

}  // namespace sluice_bench
