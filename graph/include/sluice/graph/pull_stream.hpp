#pragma once

#include <algorithm>
#include <any>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <semaphore>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <sluice/engine/context.hpp>
#include <sluice/engine/mpmc_queue.hpp>
#include <sluice/engine/run.hpp>
#include <sluice/graph/detail/graph_data.hpp>
#include <sluice/graph/detail/last_holder.hpp>
#include <sluice/graph/detail/shared_waker.hpp>

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

/// Ends `state` when the last holder goes: every copy of a stream's sink shares one, so a
/// reader whose graph is gone without a run sees the end.
template <class State>
using Ender = LastHolder<State, &State::end>;

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
  /// Its queue and its end belong to the reader's range: no restart (handler.hpp).
  static constexpr bool restartable = false;
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

template <class T>
class PullStream;
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

/// Reads a running producer's output from the application (GenStage's stream/2 on a running
/// stage): attaches a sink named `name` to `producer` (Run::attach) and returns its events as a
/// range. At most `capacity` events wait for the reader, over all the producer's instances (at
/// least one each); the reader's pace is the demand. Stopping or destroying the stream detaches
/// it; a broadcast's events are copied to it. Throws option_error for an invalid capacity or
/// subscription, like Run::attach.
template <class P>
auto attach_stream(Run& run, const P& producer, std::string name, std::int64_t capacity)
    -> PullStream<typename P::output_type> {
  using T = typename P::output_type;
  static_assert(!std::is_void_v<T>, "attach_stream: the stage is a consumer: it emits nothing");
  const auto p = run.describe(producer, "attach");
  if (const auto problem = detail::stream_capacity_problem(name, capacity, p.name, p.instances))
    throw option_error(*problem);
  auto state = std::make_shared<detail::StreamState<T>>(capacity);
  SubscriptionOptions o;
  o.max_demand = capacity;
  o.demand = DemandControl::manual;
  auto keeper = std::make_shared<const detail::Ender<detail::StreamState<T>>>(state);
  run.attach(producer, std::move(name), detail::StreamSink<T>{state, std::move(keeper)}, o);
  return PullStream<T>(state);
}

}  // namespace sluice
