#pragma once

#include <any>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <sluice/engine/detail/emit_buffer.hpp>
#include <sluice/engine/options.hpp>
#include <sluice/engine/time.hpp>

namespace sluice {

template <class Out>
class Context;

/// Identifies one upstream subscription of a consumer instance. Dense from 0.
using SubscriptionId = std::uint32_t;

/// Why handle_cancel is called.
struct CancelInfo {
  enum class Origin : std::uint8_t {
    producer_ended,  ///< the producer ended the subscription (GenStage {:down, reason})
    cancelled,       ///< the subscription was cancelled (GenStage {:cancel, reason})
  };
  Origin origin = Origin::producer_ended;
  Reason reason;
  SubscriptionId subscription = 0;  ///< on a consumer side: which upstream subscription
  std::size_t subscriber = 0;       ///< on a producer side: which subscriber left
  bool upstream = true;             ///< true: one of our producers; false: one of our consumers
};

/// What handle_subscribe is told (GenStage handle_subscribe/4).
struct SubscribeInfo {
  bool upstream = true;             ///< true: we subscribed to a producer; false: a consumer to us
  SubscriptionId subscription = 0;  ///< consumer side: our subscription (for ask/cancel)
  std::size_t subscriber = 0;       ///< producer side: the subscriber's id
  std::string_view peer;            ///< the other stage's name
  SubscriptionOptions options;
  /// A manual subscription told again after a restart (engine/DESIGN.md 12, step 5): what the
  /// failed handler asked and has not received yet. It is still coming; the new handler counts
  /// it as its own rather than asking again. 0 otherwise.
  std::int64_t outstanding = 0;
};

namespace detail {
/// A stage's event type; a placeholder for a consumer's output (`void`), which nothing emits.
template <class Out>
using EventOf = std::conditional_t<std::is_void_v<Out>, char, Out>;
/// Where a callback's emitted events wait for dispatch.
template <class Out>
using Staged = EmitBuffer<EventOf<Out>>;
template <class>
inline constexpr bool always_false = false;

class CellControl;

/// Where a Waker posts: the cell while it exists, null after (under the mutex). The mutex is
/// taken only by Waker::wake and by the cell's destruction, never on the event path.
struct WakeTarget {
  std::mutex mutex;
  CellControl* cell = nullptr;
};

/// The non-typed operations a stage callback may ask of its cell. Owner thread only, except
/// post_message (any thread).
class CellControl {
 public:
  /// Any thread: queues `message` for handle_info and schedules the cell.
  virtual void post_message(std::any message) = 0;
  virtual std::shared_ptr<WakeTarget> wake_target() = 0;
  virtual std::string_view name() const noexcept = 0;
  virtual std::size_t instance() const noexcept = 0;
  virtual void post_info(std::any message) = 0;
  virtual void finish() = 0;
  virtual void stop(Reason reason) = 0;
  virtual void set_demand_mode(DemandMode mode) = 0;
  virtual DemandMode demand_mode() const = 0;
  virtual void ask(SubscriptionId subscription, std::int64_t n) = 0;
  virtual void cancel(SubscriptionId subscription, Reason reason) = 0;
  virtual std::size_t buffered_count() const = 0;
  /// What the current callback has emitted so far is dispatched now, as if the callback had
  /// returned (a fused group's host, between the chunks it gets in one call: engine/DESIGN.md
  /// 10). Owner thread.
  virtual void dispatch_staged() = 0;
  /// A timer that delivers `message` to handle_info at now() + `delay`, then every `period` if
  /// it is positive (engine/DESIGN.md 11). Owner thread.
  virtual TimerId start_timer(Duration delay, Duration period, std::any message) = 0;
  virtual bool cancel_timer(TimerId id) = 0;
  /// A failure that cost `lost` events and nothing else (engine/DESIGN.md 12, resume). Owner
  /// thread; rethrows `error` when the stage's restart policy does not allow it.
  virtual void resume_after(std::exception_ptr error, std::uint64_t lost) = 0;
  /// The run's clock (virtual in a manual run).
  virtual TimePoint now() const noexcept = 0;

 protected:
  ~CellControl() = default;
};

template <class Out>
CellControl& control_of(Context<Out>& ctx) noexcept;
template <class Out>
Staged<Out>* staged_of(Context<Out>& ctx) noexcept;
}  // namespace detail

/// Lets code outside the stage (an application thread, a callback of another library) deliver a
/// message to the stage's handle_info: what a push source uses to be woken when events arrive.
/// Copyable; a no-op once the run is gone.
class Waker {
 public:
  Waker() = default;
  explicit Waker(std::shared_ptr<detail::WakeTarget> t) : target_(std::move(t)) {}
  /// Any thread; takes a mutex only against the stage's destruction; does not wait for the
  /// stage.
  void wake(std::any message = {}) const {
    if (!target_) return;
    std::lock_guard lock(target_->mutex);
    if (target_->cell != nullptr) target_->cell->post_message(std::move(message));
  }

 private:
  std::shared_ptr<detail::WakeTarget> target_;
};

/// What a stage callback may do. Passed to every callback; valid only during that call.
/// Owner stage only (the thread running the callback); never blocks; emit appends to a buffer
/// that is reused from call to call (no allocation in steady state).
template <class Out>
class Context {
 public:
  Context(detail::CellControl& cell, detail::Staged<Out>* staged) noexcept
      : cell_(&cell), staged_(staged) {}

  /// Emits one event of the stage's output type (an argument of another type converts as in
  /// any call taking `Out`; `ctx.emit({a, b})` builds an `Out`). Producers and
  /// producer_consumers only: a consumer (`Context<void>`) that emits does not compile. Events
  /// are dispatched when the callback returns; beyond demand they go to the producer's buffer.
  void emit(detail::EventOf<Out> event) requires(!std::is_void_v<Out>) {
    staged_->push_back(std::move(event));
  }

  /// Emits every element of `range`, in order. The elements of a range that owns them and is
  /// passed as an rvalue (`ctx.emit_all(std::move(words))`, a function's returned vector) are
  /// moved; those of an lvalue range or of a view (which refers to someone else's elements) are
  /// copied, unless the range yields rvalues itself (`std::views::transform` making new events).
  template <std::ranges::input_range R>
  void emit_all(R&& range) requires(!std::is_void_v<Out>) {
    constexpr bool owned_rvalue =
        !std::is_lvalue_reference_v<R> && !std::ranges::view<std::remove_cvref_t<R>>;
    for (auto&& e : range) {
      if constexpr (owned_rvalue)
        staged_->push_back(std::move(e));  // a const element is still copied
      else
        staged_->push_back(std::forward<decltype(e)>(e));
    }
  }

  /// A consumer emits nothing: these exist only to say so when one tries.
  template <class E>
  void emit(E&&) requires std::is_void_v<Out> {
    static_assert(detail::always_false<E>,
                  "ctx.emit: this stage is a consumer (Context<void>): it has no output to emit "
                  "to (make it a producer_consumer to emit events)");
  }
  template <class R>
  void emit_all(R&&) requires std::is_void_v<Out> {
    static_assert(detail::always_false<R>,
                  "ctx.emit_all: this stage is a consumer (Context<void>): it has no output to "
                  "emit to (make it a producer_consumer to emit events)");
  }

  /// Emits what `next()` returns (a std::optional<Out>; empty: no more), calling it at most
  /// `max` times; returns how many it emitted (fewer than `max`: `next` ran dry). The same as
  /// calling emit in a loop, but cheaper per event: the fast way to fill a demand.
  template <class G>
  requires(!std::is_void_v<Out>) && requires(G& g) {
    { *g() } -> std::convertible_to<Out>;
  }
  std::size_t emit_generated(std::size_t max, G&& next) {
    return staged_->append_generated(max, next);
  }

  /// Emits the events of `events` that `keep(const Out&)` accepts, in order (moved from a
  /// mutable span, copied from a const one); returns how many. A filter's fast path: for
  /// trivially copyable events the loop has no branch on `keep`, so its cost does not depend on
  /// how well the predicate's outcome can be predicted.
  template <class E, class P>
  std::size_t emit_kept(std::span<E> events, P&& keep) requires
      std::same_as<std::remove_const_t<E>, Out> && std::predicate<P&, const E&> {
    return staged_->append_kept(events, keep);
  }

  /// No more events will follow those emitted so far: the stage ends normally once they have
  /// been dispatched (GenStage's `async_info(self(), :stop)` idiom of from_enumerable).
  void finish() { cell_->finish(); }
  /// Stops the stage now with `reason` (GenStage `{:stop, reason, state}`); events emitted in
  /// this call are dispatched first.
  void stop(Reason reason = Reason::normal()) { cell_->stop(std::move(reason)); }
  /// Delivers `message` to this stage's handle_info after the events buffered now have been
  /// dispatched (GenStage async_info/2).
  void async_info(std::any message) { cell_->post_info(std::move(message)); }
  /// Producer only: forward or accumulate demand (GenStage demand/2).
  void set_demand_mode(DemandMode mode) { cell_->set_demand_mode(mode); }
  DemandMode demand_mode() const { return cell_->demand_mode(); }
  /// Manual demand: asks the producer of `subscription` for `n` more events (GenStage ask/3).
  void ask(SubscriptionId subscription, std::int64_t n) { cell_->ask(subscription, n); }
  /// Cancels an upstream subscription (GenStage cancel/2).
  void cancel(SubscriptionId subscription, Reason reason = Reason::normal()) {
    cell_->cancel(subscription, std::move(reason));
  }
  /// Delivers `message` to this stage's handle_info once `delay` has passed on the run's clock
  /// (GenStage code's `Process.send_after(self(), message, ms)`): never earlier; as a plain
  /// message, ordered with the stage's other infos as Run::send_info is. Returns the timer's
  /// id for cancel_timer. The timers of a stage that stops are cancelled with it. A negative
  /// delay throws (the stage fails, naming it); zero delivers it as soon as the stage runs
  /// again.
  TimerId send_after(Duration delay, std::any message) {
    return cell_->start_timer(delay, Duration::zero(), std::move(message));
  }
  /// Delivers a copy of `message` to handle_info every `period` (> 0), the first one `period`
  /// from now (`:timer.send_interval`), until cancel_timer or the stage stops. A tick that comes
  /// a whole period late is skipped, not delivered twice in a row.
  TimerId send_every(Duration period, std::any message) {
    if (period <= Duration::zero())
      throw stage_error(std::string(name()), "send_every: the period is not positive (" +
                                                 std::to_string(period.count()) + " ns)");
    return cell_->start_timer(period, period, std::move(message));
  }
  /// Cancels a timer of this stage instance: true if it was pending (it will not fire), false if
  /// it had fired (a send_after) or was cancelled already (`Process.cancel_timer`).
  bool cancel_timer(TimerId id) { return cell_->cancel_timer(id); }
  /// A failure that cost `lost` events but left the handler's state good (one call of a
  /// map_blocking stage threw): the stage goes on with the same handler (Akka's
  /// `Supervision.Resume`) when its restart policy (StageOptions::restart) covers failures and
  /// has room within `max_restarts` per `restart_window`; the events are counted `lost`, the
  /// failure counted in `resumes` and toward the restart intensity, and logged with its reason.
  /// Otherwise it rethrows `error`, and the stage fails as if the callback had thrown it.
  void resume_after(std::exception_ptr error, std::uint64_t lost) {
    cell_->resume_after(std::move(error), lost);
  }
  /// The run's clock: std::chrono::steady_clock, or in a manual run a virtual clock that starts
  /// at TimePoint{} and that only Run::advance moves.
  TimePoint now() const noexcept { return cell_->now(); }
  /// Events in the output buffer (GenStage estimate_buffered_count/1).
  std::size_t buffered_count() const { return cell_->buffered_count(); }
  /// A handle that wakes this stage (its handle_info) from any thread.
  Waker waker() { return Waker(cell_->wake_target()); }
  std::string_view name() const noexcept { return cell_->name(); }
  std::size_t instance() const noexcept { return cell_->instance(); }

 private:
  friend detail::CellControl& detail::control_of<Out>(Context<Out>&) noexcept;
  friend detail::Staged<Out>* detail::staged_of<Out>(Context<Out>&) noexcept;
  detail::CellControl* cell_;
  detail::Staged<Out>* staged_;
};

namespace detail {
/// The cell behind a callback's context (a fused group's cell hands it on to its steps).
template <class Out>
CellControl& control_of(Context<Out>& ctx) noexcept {
  return *ctx.cell_;
}
/// Where a callback's context stages what it emits (null for a consumer's).
template <class Out>
Staged<Out>* staged_of(Context<Out>& ctx) noexcept {
  return ctx.staged_;
}
}  // namespace detail

}  // namespace sluice
