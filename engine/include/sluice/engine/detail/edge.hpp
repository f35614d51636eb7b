#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>

#include <sluice/engine/detail/assert.hpp>
#include <sluice/engine/detail/cache_line.hpp>
#include <sluice/engine/detail/owned_counter.hpp>
#include <sluice/engine/detail/shared_block.hpp>
#include <sluice/engine/options.hpp>

namespace sluice::detail {

/// One message on an edge: a run of events in the edge's ring, a run of events in a shared
/// batch (broadcast), or the end of the subscription.
struct EdgeMessage {
  enum class Kind : std::uint8_t { events, shared, end };
  std::uint64_t start = 0;  // events: monotonic ring position; shared: offset in the batch
  std::uint32_t count = 0;
  Kind kind = Kind::events;
  void* batch = nullptr;  // shared: the SharedBlock<Event>, one reference held by the message
};

/// Uninitialized storage for `n` objects, freed (not destroyed) with the owner. Pages are
/// touched only as slots are first written, so a ring sized for a large max_demand costs memory
/// as the stream uses it, not when the run starts.
template <class T>
class RawSlots {
 public:
  explicit RawSlots(std::size_t n) : n_(n), p_(std::allocator<T>{}.allocate(n)) {}
  ~RawSlots() { std::allocator<T>{}.deallocate(p_, n_); }
  RawSlots(const RawSlots&) = delete;
  RawSlots& operator=(const RawSlots&) = delete;
  T* get() const noexcept { return p_; }
  T& operator[](std::size_t i) const noexcept { return p_[i]; }

 private:
  const std::size_t n_;
  T* const p_;
};

/// One subscription: exactly one producer cell writes, one consumer cell reads.
///
/// Two single-producer single-consumer rings: the events themselves (constructed in place, each
/// message contiguous so the consumer gets a span with no copy), and the message headers, which
/// keep the producer's message boundaries (GenStage's consumer chunking depends on them). Demand
/// bounds what the rings hold: events <= max_demand (plus, on a manual subscription, the
/// message in the consumer's hands), and each message may waste less than max_demand slots to
/// stay contiguous, hence 2 (manual: 3) x max_demand slots; messages <= max_demand + 2 (the
/// message being handled, and the end). The rings never grow.
///
/// A shared message points into an immutable batch that other edges read too (broadcast); it
/// holds one reference on the batch, dropped when the consumer pops the message. It takes no
/// slot in the event ring.
///
/// Demand travels upstream as discrete asks (GenStage's {:ask, n} messages: a producer sees each
/// ask on its own, so its dispatcher and handle_demand get them one by one) on a third SPSC ring.
/// If that ring is ever full (more than ask_ring_max asks not yet collected), further asks are
/// added to a spill counter that the producer collects after the ring, as one combined ask.
///
/// Synchronization
///   Writers : producer -> msg_tail_, ask_head_, spill_ (exchange); consumer -> msg_head_,
///             ev_released_, ask_tail_, spill_ (fetch_add), cancelled_.
///   H1      : msg_tail_ release (push) / acquire (peek): the consumer sees the events and the
///             header they publish, and the end reason.
///   H2      : ev_released_ and msg_head_ release (consumer, after destroying events) / acquire
///             (producer, before reusing slots).
///   H3      : ask_tail_ store release and spill_ fetch_add release (consumer, after H2's stores) /
///             acquire loads and exchange (producer): a producer that sees an ask also sees the
///             slots freed before it, and the ask value. ask_head_ release (producer, after reading
///             an ask slot) / acquire (consumer, before reusing it).
///   H4      : cancelled_ release (consumer, after writing cancel_reason_) / acquire (producer).
///   Progress: wait-free on both sides.
template <class Event>
class Edge {
 public:
  /// `manual`: the consumer asks by hand, possibly while it still holds a whole message (up to
  /// max_demand events) in handle_events, so the event ring needs room for one more window.
  Edge(std::size_t max_demand, std::uint32_t producer_cell, std::uint32_t consumer_cell,
       bool manual = false)
      : ev_capacity_(event_slots(max_demand, manual)),
        msg_capacity_(message_slots(max_demand)),
        events_(ev_capacity_),
        messages_(msg_capacity_),
        ask_capacity_(std::bit_ceil(std::min<std::size_t>(max_demand, ask_ring_max) + 1)),
        asks_(std::make_unique<std::int64_t[]>(ask_capacity_)),
        producer_cell_(producer_cell),
        consumer_cell_(consumer_cell),
        manual_(manual) {}

  /// What the two rings of an edge with this max_demand reach once the stream has gone round
  /// them (they are touched as they are used).
  static std::size_t ring_bytes(std::size_t max_demand, bool manual) noexcept {
    return event_slots(max_demand, manual) * sizeof(Event) +
           message_slots(max_demand) * sizeof(EdgeMessage);
  }

  Edge(const Edge&) = delete;
  Edge& operator=(const Edge&) = delete;

  ~Edge() { discard_unread(); }

  std::uint32_t producer_cell() const noexcept { return producer_cell_; }
  std::uint32_t consumer_cell() const noexcept { return consumer_cell_; }

  // ---- producer side -------------------------------------------------------------------------

  /// Moves `events` onto the edge as one message. Returns false, moving nothing, if they do not
  /// fit (only possible when demand was not respected). Producer cell only. Never allocates.
  bool push(std::span<Event> events) noexcept(std::is_nothrow_move_constructible_v<Event>) {
    const auto n = events.size();
    if (n == 0) return true;
    std::uint64_t start = ev_write_;
    const auto offset = start & (ev_capacity_ - 1);
    if (offset + n > ev_capacity_) start += ev_capacity_ - offset;  // keep each message contiguous
    if (start + n - ev_released_cache_ > ev_capacity_ ||
        msg_tail_local_ - msg_head_cache_ >= msg_capacity_ - 1) {
      ev_released_cache_ = ev_released_.load(std::memory_order_acquire);  // H2
      msg_head_cache_ = msg_head_.load(std::memory_order_acquire);        // H2
      if (start + n - ev_released_cache_ > ev_capacity_ ||
          msg_tail_local_ - msg_head_cache_ >= msg_capacity_ - 1)
        return false;
    }
    Event* slot = events_.get() + (start & (ev_capacity_ - 1));
    if constexpr (std::is_trivially_copyable_v<Event>) {
      std::memcpy(static_cast<void*>(slot), events.data(), n * sizeof(Event));
    } else {
      for (std::size_t i = 0; i < n; ++i)
        std::construct_at(slot + i, std::move(events[i]));
    }
    ev_write_ = start + n;
    messages_[msg_tail_local_ & (msg_capacity_ - 1)] = {start, static_cast<std::uint32_t>(n),
                                                        EdgeMessage::Kind::events};
    ++msg_tail_local_;
    msg_tail_.store(msg_tail_local_, std::memory_order_release);  // H1
    pushed_.add(n);
    return true;
  }

  /// Sends events [offset, offset + count) of a shared batch as one message. Returns false,
  /// sending nothing, if the message ring is full (only possible when demand was not respected).
  bool push_shared(SharedBlock<Event>* batch, std::size_t offset, std::size_t count) noexcept {
    if (count == 0) return true;
    if (msg_tail_local_ - msg_head_cache_ >= msg_capacity_ - 1) {
      msg_head_cache_ = msg_head_.load(std::memory_order_acquire);  // H2
      if (msg_tail_local_ - msg_head_cache_ >= msg_capacity_ - 1) return false;
    }
    batch->retain();
    messages_[msg_tail_local_ & (msg_capacity_ - 1)] = {offset, static_cast<std::uint32_t>(count),
                                                        EdgeMessage::Kind::shared, batch};
    ++msg_tail_local_;
    msg_tail_.store(msg_tail_local_, std::memory_order_release);  // H1
    pushed_.add(count);
    return true;
  }

  /// Ends the subscription from the producer side, behind every event already pushed. One slot
  /// is always kept free for it. Producer cell only; once.
  void push_end(Reason reason) {
    end_reason_ = std::move(reason);
    messages_[msg_tail_local_ & (msg_capacity_ - 1)] = {ev_write_, 0, EdgeMessage::Kind::end};
    ++msg_tail_local_;
    msg_tail_.store(msg_tail_local_, std::memory_order_release);  // H1: publishes end_reason_
  }

  /// Calls `f(n)` for each ask made since the last call, in order. Producer cell only.
  template <class F>
  void take_asks(F&& f) {
    if (ask_head_local_ == ask_tail_cache_) {
      ask_tail_cache_ = ask_tail_.load(std::memory_order_acquire);  // H3
    }
    while (ask_head_local_ != ask_tail_cache_) {
      const auto n = asks_[ask_head_local_ & (ask_capacity_ - 1)];
      ++ask_head_local_;
      ask_head_.store(ask_head_local_, std::memory_order_release);  // H3: slot may be reused
      taken_.add(static_cast<std::uint64_t>(n));
      f(n);
    }
    if (spill_.load(std::memory_order_relaxed) != 0) {  // cheap skip; H3 is on the exchange
      const auto n = spill_.exchange(0, std::memory_order_acquire);  // H3
      if (n > 0) {
        taken_.add(static_cast<std::uint64_t>(n));
        f(n);
      }
    }
  }

  /// True once the consumer cancelled; then cancel_reason() is readable. Producer cell only.
  bool cancelled_by_consumer() const noexcept {
    return cancelled_.load(std::memory_order_acquire);  // H4
  }
  const Reason& cancel_reason() const noexcept { return cancel_reason_; }

  // ---- consumer side -------------------------------------------------------------------------

  /// The next unread message, or nullptr. Consumer cell only.
  const EdgeMessage* peek() noexcept {
    if (msg_head_local_ == msg_tail_cache_) {
      msg_tail_cache_ = msg_tail_.load(std::memory_order_acquire);  // H1
      if (msg_head_local_ == msg_tail_cache_) return nullptr;
    }
    return &messages_[msg_head_local_ & (msg_capacity_ - 1)];
  }

  /// Messages read so far, and messages written so far (a fresh look). Consumer cell only.
  std::uint64_t read_position() const noexcept { return msg_head_local_; }
  std::uint64_t written_position() noexcept {
    msg_tail_cache_ = msg_tail_.load(std::memory_order_acquire);  // H1
    return msg_tail_cache_;
  }

  /// The events of `m`, a Kind::events message returned by peek(): the consumer's own.
  std::span<Event> events_of(const EdgeMessage& m) noexcept {
    return {events_.get() + (m.start & (ev_capacity_ - 1)), m.count};
  }

  /// The events of `m`, a Kind::shared message: read-only, other consumers read them too.
  std::span<const Event> shared_events_of(const EdgeMessage& m) const noexcept {
    return static_cast<SharedBlock<Event>*>(m.batch)->events().subspan(m.start, m.count);
  }

  /// Hands back events [from, upto) of the message returned by peek() (an events message's are
  /// destroyed and their slots freed); `delivered` says whether the consumer handled them
  /// (metrics). Consumer cell only.
  void release_events(const EdgeMessage& m, std::uint32_t from, std::uint32_t upto,
                      bool delivered = true) noexcept {
    SLUICE_ASSERT(from == head_done_ && from <= upto && upto <= m.count,
                  "events released out of order, or beyond the message");
    if (m.kind == EdgeMessage::Kind::events) {
      if constexpr (!std::is_trivially_destructible_v<Event>) {
        Event* base = events_.get() + (m.start & (ev_capacity_ - 1));
        for (std::uint32_t i = from; i < upto; ++i)
          std::destroy_at(base + i);
      }
      ev_released_.store(m.start + upto, std::memory_order_release);  // H2
    }
    head_done_ = upto;
    if (delivered) consumed_.add(upto - from);
  }

  /// Finishes the message returned by peek(); its events must have been released. Consumer only.
  void pop() noexcept {
    auto& m = messages_[msg_head_local_ & (msg_capacity_ - 1)];
    SLUICE_ASSERT(m.kind == EdgeMessage::Kind::end || head_done_ == m.count,
                  "a message popped before all its events were released");
    if (m.kind == EdgeMessage::Kind::shared) {
      static_cast<SharedBlock<Event>*>(m.batch)->release();
      m.batch = nullptr;
    }
    head_done_ = 0;
    ++msg_head_local_;
    msg_head_.store(msg_head_local_, std::memory_order_release);  // H2
  }

  /// The producer's end reason; valid after peek() returned an end message. Consumer only.
  const Reason& end_reason() const noexcept { return end_reason_; }

  /// Asks for `n` more events. Consumer cell only. Never allocates.
  void ask(std::int64_t n) noexcept {
    asked_.add(static_cast<std::uint64_t>(n));
    if (ask_tail_local_ - ask_head_cache_ >= ask_capacity_) {
      ask_head_cache_ = ask_head_.load(std::memory_order_acquire);  // H3
      if (ask_tail_local_ - ask_head_cache_ >= ask_capacity_) {
        spill_.fetch_add(n, std::memory_order_release);  // H3
        return;
      }
    }
    asks_[ask_tail_local_ & (ask_capacity_ - 1)] = n;
    ++ask_tail_local_;
    ask_tail_.store(ask_tail_local_, std::memory_order_release);  // H3
  }

  /// Cancels the subscription from the consumer side. Consumer cell only; once.
  void cancel(Reason reason) {
    // relaxed: only this (the consumer) thread writes cancelled_
    SLUICE_ASSERT(!cancelled_.load(std::memory_order_relaxed), "a subscription cancelled twice");
    cancel_reason_ = std::move(reason);
    cancelled_.store(true, std::memory_order_release);  // H4
  }

  /// Destroys the events nobody will read and returns how many there were. Consumer cell only,
  /// or any thread once both cells have stopped.
  std::uint64_t discard_unread() noexcept {
    std::uint64_t lost = 0;
    while (const EdgeMessage* m = peek()) {
      if (m->kind != EdgeMessage::Kind::end) {
        const auto from = head_done_ < m->count ? head_done_ : m->count;
        lost += m->count - from;
        release_events(*m, from, m->count, false);
      }
      pop();
    }
    return lost;
  }

  /// Events the producer's dispatcher holds for this subscriber (a partition queue). Producer.
  void set_queued(std::uint64_t n) noexcept { queued_.set(n); }

  // ---- metrics (any thread, approximate) -----------------------------------------------------
  std::uint64_t queued_approx() const noexcept { return queued_.get(); }
  std::uint64_t pushed_approx() const noexcept { return pushed_.get(); }
  std::uint64_t consumed_approx() const noexcept { return consumed_.get(); }
  /// Demand the consumer asked in all.
  std::uint64_t asked_approx() const noexcept { return asked_.get(); }
  bool manual() const noexcept { return manual_; }
  /// Demand asked and not yet taken by the producer.
  std::int64_t untaken_approx() const noexcept {
    return static_cast<std::int64_t>(asked_.get() - taken_.get());
  }

 private:
  const std::size_t ev_capacity_;
  const std::size_t msg_capacity_;
  const RawSlots<Event> events_;          // constructed in place, destroyed by the consumer
  const RawSlots<EdgeMessage> messages_;  // an implicit-lifetime aggregate: written before read
  const std::size_t ask_capacity_;
  const std::unique_ptr<std::int64_t[]> asks_;
  const std::uint32_t producer_cell_;
  const std::uint32_t consumer_cell_;
  const bool manual_;

 public:
  /// Asks kept apart at most; beyond, they are combined (see the class comment).
  static constexpr std::size_t ask_ring_max = 4096;

 private:
  static std::size_t event_slots(std::size_t max_demand, bool manual) noexcept {
    return std::bit_ceil((manual ? 3 : 2) * max_demand);
  }
  static std::size_t message_slots(std::size_t max_demand) noexcept {
    return std::bit_ceil(max_demand + 2);
  }

  // Producer-owned.
  alignas(cache_line_size) std::uint64_t ev_write_ = 0;
  std::uint64_t msg_tail_local_ = 0;
  std::uint64_t ev_released_cache_ = 0;
  std::uint64_t msg_head_cache_ = 0;
  std::uint64_t ask_head_local_ = 0;
  std::uint64_t ask_tail_cache_ = 0;
  Reason end_reason_;
  alignas(cache_line_size) std::atomic<std::uint64_t> msg_tail_{0};
  OwnedCounter<std::uint64_t> pushed_;
  OwnedCounter<std::uint64_t> queued_;
  std::atomic<std::uint64_t> ask_head_{0};
  OwnedCounter<std::uint64_t> taken_;

  // Consumer-owned.
  alignas(cache_line_size) std::uint64_t msg_head_local_ = 0;
  std::uint32_t head_done_ = 0;  // events of the head message released so far
  std::uint64_t msg_tail_cache_ = 0;
  std::uint64_t ask_tail_local_ = 0;
  std::uint64_t ask_head_cache_ = 0;
  Reason cancel_reason_;
  alignas(cache_line_size) std::atomic<std::uint64_t> msg_head_{0};
  std::atomic<std::uint64_t> ev_released_{0};
  OwnedCounter<std::uint64_t> consumed_;
  std::atomic<std::uint64_t> ask_tail_{0};
  OwnedCounter<std::uint64_t> asked_;

  // Shared.
  alignas(cache_line_size) std::atomic<std::int64_t> spill_{0};
  std::atomic<bool> cancelled_{false};
};

}  // namespace sluice::detail
