#pragma once

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <semaphore>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

#include <sluice/engine/context.hpp>
#include <sluice/engine/detail/mpmc_queue.hpp>
#include <sluice/engine/options.hpp>

namespace sluice {

/// Thrown by PushHandle::push after close().
class closed_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

namespace detail {

/// A Waker set by a stage's thread and used by application threads: a mutex (the application's
/// edge, taken once per wake-up, never per event) makes the hand-over safe whichever comes first.
class SharedWaker {
 public:
  void set(Waker w) {
    std::lock_guard lock(mutex_);
    waker_ = std::move(w);
  }
  void wake() {
    std::lock_guard lock(mutex_);
    waker_.wake();
  }

 private:
  std::mutex mutex_;
  Waker waker_;
};

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

/// Closes `state` when the last holder goes (`close_on_last` of the two sides below).
template <class State>
struct Closer {
  std::shared_ptr<State> state;
  explicit Closer(std::shared_ptr<State> s) : state(std::move(s)) {}
  Closer(const Closer&) = delete;
  Closer& operator=(const Closer&) = delete;
  ~Closer() { state->close(); }
};

/// The source stage behind Graph::push_source. Its copies (in the graph, its compiled graphs
/// and the run) share one keeper: once none is left, nothing can take from the stream any
/// more, so it closes, and a push (blocked on a full stream, or later) is refused instead of
/// waiting for ever.
template <class T>
struct PushSource {
  std::shared_ptr<PushState<T>> state;
  std::shared_ptr<const Closer<PushState<T>>> keeper;
  std::size_t owed = 0;  // demand not served yet
  PushSource(std::shared_ptr<PushState<T>> s, std::shared_ptr<const Closer<PushState<T>>> k)
      : state(std::move(s)), keeper(std::move(k)) {}

  void handle_subscribe(const SubscribeInfo&, Context<T>& ctx) { state->set_waker(ctx.waker()); }
  void handle_demand(std::size_t n, Context<T>& ctx) {
    owed += n;
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
      owed -= state->take(owed, ctx);
      if (state->closed_and_empty()) {
        ctx.finish();
        return;
      }
      if (owed == 0 || !state->arm()) return;
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

namespace sluice {

namespace detail {

/// What a stream sink and the reading application thread share.
///
/// Synchronization
///   queue_     : moodycamel's lock-free queue (release/acquire per element), sink -> reader.
///   ready_     : a counting semaphore: one release per event queued, plus one at the end; the
///                reader blocks on it (the application's edge).
///   consumed_  : events the reader has taken (seq_cst); the sink asks that many again.
///   done_      : set (seq_cst) by the sink when no event will follow.
///   stop_      : set (seq_cst) by the reader when it stops early; the sink then cancels.
template <class T>
class StreamState {
  static_assert(std::is_default_constructible_v<T> && std::is_move_assignable_v<T>,
                "a stream needs a default-constructible, move-assignable event type");

 public:
  explicit StreamState(std::int64_t capacity) : capacity_(capacity) {}

  // ---- the reading thread ------------------------------------------------------------------
  /// The next event, or nullopt at the end. Blocks while nothing is ready.
  std::optional<T> next() {
    if (finished_) return std::nullopt;
    if (!ready_.try_acquire()) {
      if (since_wake_ > 0) {  // step 3 of StreamSink: report what was taken before waiting
        since_wake_ = 0;
        waker_.wake();
      }
      ready_.acquire();
    }
    T e;
    while (!queue_.try_dequeue(e)) {
      // The end's permit (released after the last event's) or, in theory, a transient miss.
      if (done_.load() && queue_.size_approx() == 0) {
        finished_ = true;
        return std::nullopt;
      }
      std::this_thread::yield();
    }
    consumed_.fetch_add(1);
    if (++since_wake_ >= capacity_ / 2 + 1) {  // ask again in batches, not per event
      since_wake_ = 0;
      waker_.wake();
    }
    return e;
  }
  void stop() {
    if (stopped_.exchange(true)) return;
    waker_.wake();
  }

  // ---- the sink's cell ---------------------------------------------------------------------
  void put(std::span<T> events) {
    for (auto& e : events)  // one token: the sink's cell moves between threads, order holds
      queue_.enqueue(token_, std::move(e));
    ready_.release(static_cast<std::ptrdiff_t>(events.size()));
  }
  /// A broadcast's shared batch: copied.
  void put(std::span<const T> events) requires std::copy_constructible<T> {
    for (auto& e : events)
      queue_.enqueue(token_, T(e));
    ready_.release(static_cast<std::ptrdiff_t>(events.size()));
  }
  void end() {
    if (!done_.exchange(true)) ready_.release();
  }
  std::int64_t take_consumed() { return consumed_.exchange(0); }
  bool stopped() const { return stopped_.load(); }
  std::int64_t capacity() const { return capacity_; }
  void set_waker(Waker w) { waker_.set(std::move(w)); }

 private:
  const std::int64_t capacity_;
  MpmcQueue<T> queue_;
  MpmcProducerToken token_{queue_};  // the sink's (one thread at a time)
  std::counting_semaphore<> ready_{0};
  std::atomic<std::int64_t> consumed_{0};
  std::atomic<bool> done_{false};
  std::atomic<bool> stopped_{false};
  SharedWaker waker_;
  // reader-only
  bool finished_ = false;
  std::int64_t since_wake_ = 0;
};

/// Ends `state` when the last holder goes: every copy of a stream's sink (in the graph, its
/// compiled graphs and the run) shares one, so a reader whose graph is gone without a run sees
/// the end instead of waiting for ever.
template <class State>
struct Ender {
  std::shared_ptr<State> state;
  explicit Ender(std::shared_ptr<State> s) : state(std::move(s)) {}
  Ender(const Ender&) = delete;
  Ender& operator=(const Ender&) = delete;
  ~Ender() { state->end(); }
};

/// The sink behind Stage::stream and attach_stream: asks by hand for what the reader has room
/// for, on each of its subscriptions (one per instance of the producer).
///
/// Demand: `capacity` (C) bounds what the stream holds in all: events asked for and not yet
/// received on every subscription, plus events received and not yet taken by the reader.
/// 1. Shares: once every subscription is known (the first handle_info, woken by the first
///    handle_subscribe: the engine calls every handle_subscribe of a stage before any message),
///    subscription i of n gets the share C / n, the first C % n one more. The shares add up to
///    C and each is at least 1 (Stage::stream and attach_stream refuse a C below n). A share
///    never grows, so no ask exceeds the first one (a demand dispatcher warns of that).
/// 2. Top-up: free = C - outstanding - queued; each open subscription below its share is asked
///    for the difference, while free lasts. Run at step 1, whenever the reader reports what it
///    took, and when a subscription closes.
/// 3. The reader reports what it took every C / 2 + 1 events, and whenever it finds nothing
///    ready (before it blocks). So a subscription whose share was all received and read is
///    asked again before the reader waits on it: nothing waits on a report that never comes.
/// 4. The end: the reader sees it when the stage stops (all subscriptions ended, the run
///    failed or was cancelled: handle_terminate), never when only one subscription ends.
template <class T>
struct StreamSink {
  std::shared_ptr<StreamState<T>> state;
  std::shared_ptr<const Ender<StreamState<T>>> keeper;
  StreamSink(std::shared_ptr<StreamState<T>> s, std::shared_ptr<const Ender<StreamState<T>>> k)
      : state(std::move(s)), keeper(std::move(k)) {}
  struct Sub {
    std::int64_t share = 0;        // the most it may have asked and not received (step 1)
    std::int64_t outstanding = 0;  // asked and not yet received
    bool open = true;
  };
  std::vector<Sub> subs;
  std::int64_t queued = 0;  // received and not yet reported taken by the reader
  bool shared_out = false;  // step 1 done

  void handle_subscribe(const SubscribeInfo& s, Context<void>& ctx) {
    if (subs.empty()) {
      state->set_waker(ctx.waker());
      ctx.waker().wake();  // step 1, once every subscription is known
    }
    if (subs.size() <= s.subscription) subs.resize(s.subscription + 1);
    if (state->stopped()) {  // the reader gave up before the run reached this stage
      subs[s.subscription].open = false;
      ctx.cancel(s.subscription, Reason::shutdown());
    }
  }
  void handle_events(std::span<T> events, SubscriptionId from, Context<void>&) {
    received(events.size(), from);
    state->put(events);
  }
  void handle_events(std::span<const T> events, SubscriptionId from,
                     Context<void>&) requires std::copy_constructible<T> {
    received(events.size(), from);
    state->put(events);
  }
  void handle_info(std::any&, Context<void>& ctx) {
    if (state->stopped()) {
      for (SubscriptionId id = 0; id < subs.size(); ++id)
        if (subs[id].open) ctx.cancel(id, Reason::shutdown());
      return;
    }
    if (!shared_out) share_out();
    queued -= state->take_consumed();
    top_up(ctx);
  }
  void handle_cancel(const CancelInfo& info, Context<void>& ctx) {
    if (info.subscription < subs.size()) {
      subs[info.subscription].outstanding = 0;
      subs[info.subscription].open = false;
    }
    if (shared_out && !state->stopped()) top_up(ctx);
  }
  /// The sink stopped for any reason (every subscription ended, or the run failed or was
  /// cancelled): the reader sees the end instead of waiting for ever.
  void handle_terminate(const Reason&) { state->end(); }

 private:
  void received(std::size_t n, SubscriptionId from) {
    subs[from].outstanding -= static_cast<std::int64_t>(n);
    queued += static_cast<std::int64_t>(n);
  }
  void share_out() {
    shared_out = true;
    const auto n = static_cast<std::int64_t>(subs.size());
    const std::int64_t c = state->capacity();
    for (std::int64_t i = 0; i < n; ++i)
      subs[static_cast<std::size_t>(i)].share = c / n + (i < c % n ? 1 : 0);
  }
  void top_up(Context<void>& ctx) {
    std::int64_t free = state->capacity() - queued;
    for (auto& s : subs)
      if (s.open) free -= s.outstanding;
    for (SubscriptionId id = 0; id < subs.size() && free > 0; ++id) {
      auto& s = subs[id];
      const std::int64_t ask = std::min(free, s.share - s.outstanding);
      if (!s.open || ask <= 0) continue;
      s.outstanding += ask;
      free -= ask;
      ctx.ask(id, ask);
    }
  }
};

}  // namespace detail

class Run;
template <class T>
class PullStream;
/// In graph.hpp (it attaches to a running graph).
template <class P>
auto attach_stream(Run& run, const P& producer, std::string name, std::int64_t capacity = 1000)
    -> PullStream<typename P::output_type>;

/// A graph's output read by an application thread: `for (auto& e : stream)` or next(). At most
/// `capacity` events wait for the reader (bounded prefetch). Destroying it, or stop(), before
/// the end cancels the subscription: the producers upstream stop.
template <class T>
class PullStream {
 public:
  PullStream(PullStream&&) noexcept = default;
  PullStream& operator=(PullStream&&) noexcept = default;
  ~PullStream() {
    if (state_) state_->stop();
  }

  /// The next event; nullopt once the stream has ended. Blocks while none is ready.
  std::optional<T> next() { return state_->next(); }
  /// Stops reading: the stream's subscription is cancelled.
  void stop() { state_->stop(); }

  class iterator {
   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(PullStream* s) : s_(s) { ++*this; }
    T& operator*() { return *current_; }
    iterator& operator++() {
      current_ = s_->next();
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const { return !current_.has_value(); }

   private:
    PullStream* s_ = nullptr;
    std::optional<T> current_;
  };
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  template <class I, class O>
  friend class Stage;
  template <class P>
  friend auto attach_stream(Run& run, const P& producer, std::string name, std::int64_t capacity)
      -> PullStream<typename P::output_type>;
  explicit PullStream(std::shared_ptr<detail::StreamState<T>> s) : state_(std::move(s)) {}
  std::shared_ptr<detail::StreamState<T>> state_;
};

}  // namespace sluice
