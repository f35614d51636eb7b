#pragma once

// The only file that names moodycamel. Three install layouts exist:
//   Debian libconcurrentqueue-dev : <concurrentqueue/concurrentqueue.h>
//   upstream `cmake --install`     : <moodycamel/concurrentqueue.h>
//   vendored / add_subdirectory    : "concurrentqueue.h"
#if __has_include(<concurrentqueue/concurrentqueue.h>)
#include <concurrentqueue/concurrentqueue.h>
#elif __has_include(<moodycamel/concurrentqueue.h>)
#include <moodycamel/concurrentqueue.h>
#else
#include <concurrentqueue.h>
#endif

#include <cstddef>
#include <utility>

#if defined(__SANITIZE_THREAD__)
#define SLUICE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SLUICE_TSAN 1
#endif
#endif
#if defined(SLUICE_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

namespace sluice {

template <class T>
class MpmcQueue;

/// A producer's own place in one MpmcQueue (moodycamel's ProducerToken): faster enqueues for a
/// producer that is one thread at a time.
class MpmcProducerToken {
 public:
  template <class T>
  explicit MpmcProducerToken(MpmcQueue<T>& queue) : token_(queue.queue_) {}

 private:
  template <class T>
  friend class MpmcQueue;
  moodycamel::ProducerToken token_;
};

/// Lock-free multi-producer queue (moodycamel's). Used where threads outside the engine meet it:
/// commands to a cell (infos, demand-mode changes), a push source's input and a stream's output
/// (the application's edges); never between two cells.
///
/// Under ThreadSanitizer it also tells TSan what moodycamel orders with atomic_thread_fence,
/// which TSan does not model (g++ says so: -Wtsan): an element's construction before its
/// dequeue (the producer's release, the consumer's relaxed load and acquire fence), and a
/// dequeue before the enqueue that reuses its slot (the block's emptiness: relaxed loads and an
/// acquire fence). Without it, a stream whose queue recycles a block is reported as a race on
/// the slot (tests/graph/test_lifecycle.cpp's multi-instance stream, now and then). The edges
/// are per queue, in both directions: enqueues release to later dequeues, dequeues to later
/// enqueues. That is what the fences give for the slots; for other memory it is stronger than
/// the queue promises, so a race between a pusher and a reader that only this queue would
/// order (and the real code orders through nothing) goes unreported. Nothing in Sluice relies
/// on the queue for memory other than its elements.
template <class T>
class MpmcQueue {
 public:
  explicit MpmcQueue(std::size_t capacity = 32 *
                                            moodycamel::ConcurrentQueueDefaultTraits::BLOCK_SIZE)
      : queue_(capacity) {}

  bool enqueue(T&& e) {
    before_enqueue();
    const bool ok = queue_.enqueue(std::move(e));
    after_enqueue();
    return ok;
  }
  bool enqueue(MpmcProducerToken& token, T&& e) {
    before_enqueue();
    const bool ok = queue_.enqueue(token.token_, std::move(e));
    after_enqueue();
    return ok;
  }
  bool try_dequeue(T& e) {
    before_dequeue();
    const bool ok = queue_.try_dequeue(e);
    if (ok) after_dequeue();
    return ok;
  }
  std::size_t size_approx() const { return queue_.size_approx(); }

 private:
  friend class MpmcProducerToken;

#if defined(SLUICE_TSAN)
  void before_enqueue() {
    __tsan_acquire(&dequeued_);
  }
  void after_enqueue() {
    __tsan_release(&enqueued_);
  }
  void before_dequeue() {
    __tsan_acquire(&enqueued_);
  }
  void after_dequeue() {
    __tsan_release(&dequeued_);
  }
  char enqueued_ = 0;  // TSan's sync addresses: enqueues -> dequeues
  char dequeued_ = 0;  //                       dequeues -> enqueues (slot reuse)
#else
  static void before_enqueue() noexcept {}
  static void after_enqueue() noexcept {}
  static void before_dequeue() noexcept {}
  static void after_dequeue() noexcept {}
#endif

  moodycamel::ConcurrentQueue<T> queue_;
};

}  // namespace sluice
