#pragma once

#include <any>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <semaphore>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>

#include <sluice/engine/context.hpp>
#include <sluice/engine/mpmc_queue.hpp>
#include <sluice/graph/detail/last_holder.hpp>
#include <sluice/graph/detail/shared_waker.hpp>

namespace sluice {

/// Thrown by PushHandle::push after close().
class closed_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

namespace detail {

/// What a push source and the application threads share: a bounded multi-producer queue.
///
/// Synchronization
///   slots_  : a counting semaphore of free places; push acquires one (blocking: the
///             application's edge), the source releases one per event it takes.
///   queue_  : moodycamel's lock-free MPMC queue (its own release/acquire per element).
///   hungry_ : the source sets it (seq_cst) when it owes demand and found the queue empty, then
///             looks again; a pusher enqueues, then exchanges it (seq_cst) and wakes the source
///             if it was set. A seq_cst fence on each side after the first step orders it before
///             the second, so one of them sees the other's write: no event waits unseen.
///   closed_ : seq_cst; close() sets it, then wakes the source the same way.
///   pending_: pushes committing an event (seq_cst): a push that holds a slot counts itself,
///             then reads closed_ (refused if set), enqueues, and leaves. close() sets closed_;
///             the source finishes only once it reads pending_ at 0, then an empty queue, and a
///             stopped source's discard_queued() waits for pending_ at 0 before emptying the
///             queue. Either the push sees closed_ or the source sees it counted, so a push that
///             returns normally is always emitted, or counted as lost if the source stopped
///             early. A push counts itself only for a few instructions (never while it waits for
///             a slot), so that wait is short. The last push to leave after close() wakes the
///             source.
///   close() also releases one slot: a push blocked on a full stream wakes, sees closed_, gives
///             the slot back (waking the next) and is refused, so no push blocks for ever once
///             the stream is closed (by close(), drain, or the source stopping).
template <class T>
class PushState {
  static_assert(std::is_default_constructible_v<T> && std::is_move_assignable_v<T>,
                "a push source needs a default-constructible, move-assignable event type");

 public:
  explicit PushState(std::ptrdiff_t capacity) : slots_(capacity), capacity_(capacity) {}

  // ---- application threads --------------------------------------------------------------------
  void push(T&& e) {
    refuse_if_closed();
    slots_.acquire();
    enqueue_open(std::move(e));
  }
  bool try_push(T&& e) {
    refuse_if_closed();
    if (!slots_.try_acquire()) return false;
    enqueue_open(std::move(e));
    return true;
  }
  template <class Rep, class Period>
  bool push_for(T&& e, std::chrono::duration<Rep, Period> timeout) {
    refuse_if_closed();
    if (!slots_.try_acquire_for(timeout)) return false;
    enqueue_open(std::move(e));
    return true;
  }
  void close() {
    if (closed_.exchange(true)) return;
    slots_.release();  // wakes a push blocked on a full stream: it is refused (see above)
    wake_if_hungry();
  }

  /// The source stopped: closes the stream, then destroys what is still queued and returns how
  /// many events that was. Waits only for pushes already past their last check (see above),
  /// which are a few instructions from done.
  std::size_t discard_queued() {
    close();
    while (pending_.load() != 0)
      std::this_thread::yield();
    std::size_t n = 0;
    T e;
    while (queue_.try_dequeue(e))
      ++n;
    return n;
  }

  // ---- the source's cell ----------------------------------------------------------------------
  /// Emits up to `n` queued events; returns how many.
  std::size_t take(std::size_t n, Context<T>& ctx) {
    std::size_t got = 0;
    T e;
    while (got < n && queue_.try_dequeue(e)) {
      ctx.emit(std::move(e));
      ++got;
    }
    if (got > 0) slots_.release(static_cast<std::ptrdiff_t>(got));
    return got;
  }
  /// The source owes demand and found nothing: arm the wake-up, then look once more. Returns
  /// true if something arrived meanwhile (the caller takes it now).
  bool arm() {
    hungry_.store(true);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with enqueue's fence
    if (queue_.size_approx() > 0 || closed_and_empty()) {
      hungry_.store(false);
      return true;
    }
    return false;
  }
  /// Closed, no push in flight, nothing queued: in that order (a push leaves after enqueuing).
  bool closed_and_empty() const {
    return closed_.load() && pending_.load() == 0 && queue_.size_approx() == 0;
  }
  void set_waker(Waker w) { waker_.set(std::move(w)); }

 private:
  /// Before waiting for a slot: a closed stream refuses at once.
  void refuse_if_closed() const {
    if (closed_.load()) throw closed_error("sluice: push after close()");
  }
  /// Counts one push committing its event (see pending_).
  struct Committing {
    PushState& s;
    explicit Committing(PushState& state) : s(state) { s.pending_.fetch_add(1); }
    ~Committing() {
      if (s.pending_.fetch_sub(1) == 1 && s.closed_.load()) s.wake_if_hungry();
    }
    Committing(const Committing&) = delete;
    Committing& operator=(const Committing&) = delete;
  };
  /// After a slot was taken: enqueues, unless the stream was closed meanwhile (then the slot goes
  /// back, waking the next blocked push, and this one is refused).
  void enqueue_open(T&& e) {
    Committing counted(*this);
    if (closed_.load()) {
      slots_.release();
      throw closed_error("sluice: push after close()");
    }
    enqueue(std::move(e));
  }
  void enqueue(T&& e) {
    queue_.enqueue(std::move(e));
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with arm's fence
    wake_if_hungry();
  }
  void wake_if_hungry() {
    if (hungry_.exchange(false)) waker_.wake();
  }

  std::counting_semaphore<> slots_;
  const std::ptrdiff_t capacity_;
  MpmcQueue<T> queue_;
  std::atomic<bool> hungry_{false};
  std::atomic<bool> closed_{false};
  std::atomic<std::int64_t> pending_{0};
  SharedWaker waker_;
};

/// Closes `state` when the last holder goes (the source's copies, or the handle's).
template <class State>
using Closer = LastHolder<State, &State::close>;

/// The source stage behind Graph::push_source. Its copies (in the graph, its compiled graphs
/// and the run) share one keeper: once none is left, nothing can take from the stream any
/// more, so it closes, and a push (blocked on a full stream, or later) is refused instead of
/// waiting for ever.
template <class T>
struct PushSource {
  /// Its queue and its close belong to the application's handle: no restart (handler.hpp).
  static constexpr bool restartable = false;
  std::shared_ptr<PushState<T>> state;
  std::shared_ptr<const Closer<PushState<T>>> keeper;
  std::size_t demand = 0;  // demand not served yet
  PushSource(std::shared_ptr<PushState<T>> s, std::shared_ptr<const Closer<PushState<T>>> k)
      : state(std::move(s)), keeper(std::move(k)) {}

  void handle_subscribe(const SubscribeInfo&, Context<T>& ctx) { state->set_waker(ctx.waker()); }
  void handle_demand(std::size_t n, Context<T>& ctx) {
    demand += n;
    serve(ctx);
  }
  void handle_info(std::any&, Context<T>& ctx) { serve(ctx); }
  /// Run::drain: no more pushes; what was pushed is still delivered, then the source finishes.
  void handle_drain(Context<T>& ctx) {
    state->close();
    serve(ctx);
  }
  /// The source stopped (finished, cancelled, failed): pushes are refused from now on, a push
  /// blocked on a full stream is woken to be refused, and what is still queued is counted as
  /// lost (nothing after a drain or a close: the source finished with an empty queue).
  std::size_t discard_held() { return state->discard_queued(); }

  void serve(Context<T>& ctx) {
    for (;;) {
      demand -= state->take(demand, ctx);
      if (state->closed_and_empty()) {
        ctx.finish();
        return;
      }
      if (demand == 0 || !state->arm()) return;
    }
  }
};

}  // namespace detail

/// Feeds a graph from application threads (any number at once). Copies share the same stream;
/// when the last copy is destroyed the stream is closed, as by close() (no one can push any
/// more, so the source finishes once it has emitted what was pushed).
///
/// A push is refused (closed_error) once the stream is closed: by close(), by Run::drain, when
/// the source has stopped (the run ended, failed or was cancelled), or when the graph and every
/// run of it are gone. A push blocked on a full stream is woken and refused in all these cases.
template <class T>
class PushHandle {
 public:
  /// Blocks while `capacity` events are waiting to be taken (back-pressure). Throws
  /// closed_error once the stream is closed.
  void push(T event) { state()->push(std::move(event)); }
  /// Does not block: false (the event is dropped by the caller's copy) if the stream is full.
  bool try_push(T event) { return state()->try_push(std::move(event)); }
  /// Blocks at most `timeout`; false if the stream stayed full.
  template <class Rep, class Period>
  bool push_for(T event, std::chrono::duration<Rep, Period> timeout) {
    return state()->push_for(std::move(event), timeout);
  }
  /// Ends the stream: the source finishes once the events pushed before have been emitted.
  /// Closing again does nothing.
  void close() { state()->close(); }

 private:
  friend class Graph;
  explicit PushHandle(std::shared_ptr<detail::PushState<T>> s)
      : sender_(std::make_shared<const detail::Closer<detail::PushState<T>>>(std::move(s))) {}
  detail::PushState<T>* state() const { return sender_->state.get(); }
  std::shared_ptr<const detail::Closer<detail::PushState<T>>> sender_;  // closes on the last copy
};

}  // namespace sluice
