#pragma once

#include <algorithm>
#include <any>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <semaphore>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <sluice/engine/context.hpp>
#include <sluice/engine/errors.hpp>
#include <sluice/engine/mpmc_queue.hpp>
#include <sluice/engine/options.hpp>
#include <sluice/engine/time.hpp>
#include <sluice/operators/detail/manual_inputs.hpp>

namespace sluice {

/// Options of a map_blocking / for_each_blocking stage (GenStage's ConsumerSupervisor, Akka's
/// mapAsync).
struct MapBlockingOptions {
  /// At most this many calls run at once, each on a thread of the stage's own (at least 1; no
  /// default: say it).
  int concurrency = 0;
  /// Results leave in the order their events came in (true), or as their calls return.
  bool ordered = true;
};

namespace detail {

/// What is wrong with `o`, if anything: {option, what} (the builder and the class say it).
inline std::optional<std::pair<std::string, std::string>> map_blocking_options_problem(
    const MapBlockingOptions& o) {
  if (o.concurrency < 1)
    return std::pair{std::string("concurrency"),
                     "must be at least 1, got: " + std::to_string(o.concurrency)};
  return std::nullopt;
}

/// The map_blocking stage's first timer: its subscriptions are known (ManualInputs).
struct MapBlockingStart {};
/// A worker's wake-up: results are waiting (BlockingPool::wake_taken).
struct MapBlockingReady {};

/// A call's result: its value (none for a function returning void) or what it threw.
template <class R>
struct BlockingResult {
  std::uint64_t seq = 0;
  std::optional<std::conditional_t<std::is_void_v<R>, char, R>> value;
  std::exception_ptr error;
};

/// `threads` threads of its own (outside the oneTBB arena: blocking work never occupies the
/// engine's workers) calling `f` on the events the stage submits. The stage thread submits and
/// collects; the workers only meet it through two lock-free queues, a semaphore they sleep on,
/// and a Waker. The protocol, in steps:
///  1. Submit (stage thread): the job is enqueued, then the semaphore released (one count per
///     job), so a worker that acquires a count finds a job.
///  2. Call (a worker): acquire a count; unless stopping, dequeue a job, call `f`, catching what
///     it throws.
///  3. Report (the worker): enqueue the result, then set `wake_pending_` (exchange, acq_rel);
///     the worker that set it from false wakes the stage (Waker::wake, a MapBlockingReady info).
///  4. Collect (the stage, on that info): clear `wake_pending_` (exchange, acq_rel: it reads the
///     value step 3 wrote, so the results enqueued before it are visible), then dequeue every
///     result. A result enqueued after the dequeues ran dry sets the flag from false again and
///     wakes the stage again, so none waits unseen.
///  5. Stop (handle_terminate, the destructor): `stopping_` is set and every worker released;
///     a call under way finishes (it cannot be interrupted) and its result is ignored; jobs
///     not started are not called. The destructor joins the workers.
template <class In, class F, class R>
class BlockingPool {
 public:
  using Result = BlockingResult<R>;

  BlockingPool(const F& f, int threads, Waker waker) : f_(f), waker_(std::move(waker)) {
    workers_.reserve(static_cast<std::size_t>(threads));
    try {
      for (int i = 0; i < threads; ++i)
        workers_.emplace_back([this] { work(); });
    } catch (...) {  // no thread to be had: the stage fails, and those started are joined
      stop();
      join();
      throw;
    }
  }
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;
  ~BlockingPool() {
    stop();
    join();
  }

  /// Step 1.
  void submit(std::uint64_t seq, In event) {
    if (!jobs_.enqueue(Job{seq, std::move(event)})) throw std::bad_alloc();
    ready_.release();
  }
  /// Step 4: the flag cleared; then take() until it returns false.
  void wake_taken() noexcept {
    // acq_rel: pairs with step 3's exchange (the results enqueued before it are visible).
    wake_pending_.exchange(false, std::memory_order_acq_rel);
  }
  bool take(Result& r) { return done_.try_dequeue(r); }
  /// Step 5 (idempotent).
  void stop() noexcept {
    // acq_rel: the workers' acquire loads in step 2 pair with it.
    if (!stopping_.exchange(true, std::memory_order_acq_rel))
      ready_.release(static_cast<std::ptrdiff_t>(workers_.size()));
  }

 private:
  struct Job {
    std::uint64_t seq = 0;
    std::optional<In> event;
  };

  void join() noexcept {
    for (auto& t : workers_)
      if (t.joinable()) t.join();
  }

  /// Steps 2 and 3.
  void work() noexcept {
    for (;;) {
      ready_.acquire();
      if (stopping_.load(std::memory_order_acquire)) return;  // pairs with stop()
      Job job;
      while (!jobs_.try_dequeue(job)) {  // step 1 enqueued it before the release
        if (stopping_.load(std::memory_order_acquire)) return;
        std::this_thread::yield();
      }
      Result r;
      r.seq = job.seq;
      try {
        if constexpr (std::is_void_v<R>)
          f_(std::move(*job.event));
        else
          r.value.emplace(f_(std::move(*job.event)));
      } catch (...) {
        r.error = std::current_exception();
      }
      // Out of memory, a result or a wake-up is tried again until it goes (or the stage
      // stops): none may be dropped, or the stage would wait for it for ever.
      while (!done_.enqueue(std::move(r)))
        if (!pause()) return;
      // acq_rel: pairs with wake_taken()'s exchange (step 4).
      if (!wake_pending_.exchange(true, std::memory_order_acq_rel)) {
        for (;;) {
          try {
            waker_.wake(MapBlockingReady{});
            break;
          } catch (...) {
            if (!pause()) return;
          }
        }
      }
    }
  }
  /// After a failed allocation: false once stopping.
  bool pause() noexcept {
    if (stopping_.load(std::memory_order_acquire)) return false;  // pairs with stop()
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return true;
  }

  const F f_;  // called from every worker at once: through a const reference
  Waker waker_;
  MpmcQueue<Job> jobs_;
  MpmcQueue<Result> done_;
  std::counting_semaphore<> ready_{0};
  std::atomic<bool> wake_pending_{false};
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> workers_;
};

}  // namespace detail

/// A stage that calls a blocking function `f(In) -> R` on each event, up to `concurrency` calls
/// at once on threads of its own, outside the oneTBB arena (GenStage's ConsumerSupervisor,
/// Akka's mapAsync): file and network I/O, a database, a library that sleeps. With `R` void it
/// is a consumer (for_each_blocking); otherwise a producer_consumer emitting each result.
///
/// `f` is called from several threads at once, through a const reference: it must be safe to
/// call concurrently (a non-mutable lambda whose captures are read-only or synchronised).
///
/// It asks by hand (manual demand) for exactly its free slots, in order:
///  1. On its first turn (a zero timer, once every subscription is known), after each result
///     and after an input ends, it asks its open inputs, in turn, for concurrency - (calls
///     submitted and not yet passed on) - (events asked and not yet received), each at most
///     up to its max_demand outstanding.
///  2. Each event received is submitted to the pool at once (a slot was asked for it).
///  3. A result is passed on in input order when `ordered` (it waits for the ones before it;
///     the slot stays taken until then, so at most `concurrency` results wait), or at once.
///  4. A call that threw: Context::resume_after (the stage's restart policy decides, per event:
///     with one that covers failures and room within max_restarts, the event is counted lost
///     and the others go on; otherwise the stage fails with what it threw).
///  5. Once every input has ended and no call is left, it finishes (handler::FinishesItself).
/// A stop (a cancel, a failure, Run::cancel) counts the events submitted and not passed on as
/// lost; calls under way run to their end on their threads (a blocking call cannot be
/// interrupted), which are joined when the handler is destroyed.
template <class In, class F>
class BlockingMap {
 public:
  using result_type = std::remove_cvref_t<std::invoke_result_t<const F&, In&&>>;
  /// What the stage emits: the results, or nothing (void: a consumer).
  using output_type = std::conditional_t<std::is_void_v<result_type>, void, result_type>;
  static constexpr DemandControl demand = DemandControl::manual;
  static constexpr bool finishes_itself = true;

  /// option_error for a concurrency below 1.
  BlockingMap(F f, MapBlockingOptions options) : f_(std::move(f)), options_(checked(options)) {
    if constexpr (std::is_void_v<output_type>) options_.ordered = false;  // nothing to order
  }
  /// A copy (a stage instance's, a restart's) starts with no pool and nothing in flight.
  BlockingMap(const BlockingMap& o) : f_(o.f_), options_(o.options_) {}
  BlockingMap(BlockingMap&&) noexcept = default;
  BlockingMap& operator=(const BlockingMap&) = delete;
  BlockingMap& operator=(BlockingMap&&) = delete;
  ~BlockingMap() = default;

  void handle_subscribe(const SubscribeInfo& info, Context<output_type>& ctx) {
    if (!info.upstream) return;
    if (!pool_) {
      pool_ = std::make_unique<Pool>(f_, options_.concurrency, ctx.waker());
      if (options_.ordered) waiting_.resize(static_cast<std::size_t>(options_.concurrency));
    }
    inputs_.subscribed(info, ctx, detail::MapBlockingStart{});
  }

  /// Step 2. Events are moved from a mutable span, copied from a shared one (a broadcast's).
  template <class E>
  requires std::same_as<std::remove_const_t<E>, In>
  void handle_events(std::span<E> events, SubscriptionId from, Context<output_type>&) {
    inputs_.received(from, static_cast<std::int64_t>(events.size()));
    std::uint64_t submitted = 0;
    try {
      for (auto& e : events) {
        if constexpr (std::is_const_v<E>)
          pool_->submit(next_seq_, e);
        else
          pool_->submit(next_seq_, std::move(e));
        ++next_seq_;
        ++in_flight_;
        ++submitted;
      }
    } catch (...) {  // out of memory: the call's inputs are counted where a failed call's are
      in_flight_ -= submitted;  // (its edge, or a restart), not again as held; the stage
      pool_->stop();            // fails or restarts, and ignores its calls' results
      throw;
    }
  }

  void handle_info(std::any& message, Context<output_type>& ctx) {
    if (std::any_cast<detail::MapBlockingReady>(&message) != nullptr) {
      collect(ctx);
    } else if (std::any_cast<detail::MapBlockingStart>(&message) != nullptr) {
      started_ = true;
    } else {
      return;  // not ours
    }
    next(ctx);
  }

  void handle_cancel(const CancelInfo& info, Context<output_type>& ctx) {
    if (inputs_.closed(info)) next(ctx);
  }

  /// At a stop or restart: what was submitted and not passed on is lost; the workers stop
  /// taking jobs.
  std::uint64_t discard_held() noexcept {
    if (pool_) pool_->stop();
    return std::exchange(in_flight_, 0);
  }
  void handle_terminate(const Reason&) noexcept {
    if (pool_) pool_->stop();
  }

 private:
  using Pool = detail::BlockingPool<In, F, result_type>;
  using Result = typename Pool::Result;

  static MapBlockingOptions checked(const MapBlockingOptions& o) {
    if (auto p = detail::map_blocking_options_problem(o))
      throw option_error("MapBlockingOptions::" + p->first + " " + p->second);
    return o;
  }

  /// Steps 3 and 4: every result the workers have reported. A failed call met after results
  /// were passed on in this callback waits for the next one (an info to itself), so that those
  /// are dispatched even if the failure stops the stage.
  void collect(Context<output_type>& ctx) {
    if (!pool_) return;  // a restarted handler with no input left: it has no calls
    bool passed = false;
    if (failed_) {
      auto r = std::move(*failed_);
      failed_.reset();
      pass_on(r, ctx);
      passed = true;
    }
    pool_->wake_taken();
    passed = pass_on_ordered(passed, ctx);  // what waited behind the failed one
    Result r;
    while (!failed_ && pool_->take(r)) {
      if (!options_.ordered) {
        passed = pass_on_or_defer(r, passed, ctx);
        continue;
      }
      waiting_[r.seq % waiting_.size()] = std::move(r);
      passed = pass_on_ordered(passed, ctx);
    }
    if (failed_) ctx.async_info(detail::MapBlockingReady{});
  }
  /// Ordered: the results that are next in input order, until one is missing or fails.
  bool pass_on_ordered(bool passed, Context<output_type>& ctx) {
    if (!options_.ordered) return passed;
    while (!failed_) {
      auto& slot = waiting_[next_out_ % waiting_.size()];
      if (!slot) break;
      auto ready = std::move(*slot);
      slot.reset();
      ++next_out_;
      passed = pass_on_or_defer(ready, passed, ctx);
    }
    return passed;
  }
  /// Returns whether a result has been passed on in this callback.
  bool pass_on_or_defer(Result& r, bool passed, Context<output_type>& ctx) {
    if (r.error && passed) {
      failed_ = std::move(r);
      return passed;
    }
    pass_on(r, ctx);
    return true;
  }
  void pass_on(Result& r, Context<output_type>& ctx) {
    if (r.error)  // step 4: rethrows when the policy says fail; the event is still in flight
      ctx.resume_after(std::move(r.error), 1);  // then, and discard_held counts it lost
    else if constexpr (!std::is_void_v<output_type>)
      ctx.emit(std::move(*r.value));
    --in_flight_;
  }

  /// Steps 1 and 5.
  void next(Context<output_type>& ctx) {
    if (!started_ || finishing_) return;
    if (inputs_.open() == 0) {
      if (in_flight_ == 0) {
        finishing_ = true;
        ctx.finish();
      }
      return;
    }
    auto free =
        options_.concurrency - static_cast<std::int64_t>(in_flight_) - inputs_.outstanding();
    const auto& subs = inputs_.subscriptions();
    for (std::size_t k = 0; k < subs.size() && free > 0; ++k) {
      const auto id = (turn_ + k) % subs.size();
      if (!subs[id].open) continue;
      const auto n = std::min(free, subs[id].max_demand - subs[id].outstanding);
      if (n <= 0) continue;
      inputs_.ask(ctx, id, n);
      free -= n;
    }
    turn_ = subs.empty() ? 0 : (turn_ + 1) % subs.size();
  }

  F f_;
  MapBlockingOptions options_;
  std::unique_ptr<Pool> pool_;                  // made at the first subscription
  std::vector<std::optional<Result>> waiting_;  // ordered: results by seq % concurrency
  std::optional<Result> failed_;                // a failed call for the next callback
  detail::ManualInputs inputs_;
  std::uint64_t next_seq_ = 0;   // the next event's place in input order
  std::uint64_t next_out_ = 0;   // ordered: the next result to pass on
  std::uint64_t in_flight_ = 0;  // submitted and not passed on
  std::size_t turn_ = 0;         // the input asked first next time
  bool started_ = false;
  bool finishing_ = false;
};

}  // namespace sluice
