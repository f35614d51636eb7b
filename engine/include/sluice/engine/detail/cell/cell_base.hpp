#pragma once

#include <any>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include <sluice/engine/context.hpp>
#include <sluice/engine/detail/cell/timers.hpp>
#include <sluice/engine/detail/edge.hpp>
#include <sluice/engine/detail/executor.hpp>
#include <sluice/engine/detail/owned_counter.hpp>
#include <sluice/engine/detail/run_core.hpp>
#include <sluice/engine/metrics.hpp>
#include <sluice/engine/mpmc_queue.hpp>

namespace sluice::detail {

/// A producer's buffer_size: given, or 10000 for a producer and no bound for a
/// producer_consumer (GenStage's defaults).
inline std::int64_t buffer_size(const ProducerOptions& o, bool producer_consumer) noexcept {
  return o.buffer_size.value_or(producer_consumer ? infinity : default_producer_buffer_size);
}

/// Where a cell is in its life. It only moves forward.
enum class Phase : std::uint8_t {
  created,   ///< not yet started: handle_subscribe has not run
  running,   ///< handling messages, asks and infos
  draining,  ///< Run::drain: a producer calls handle_demand no more (engine/DESIGN.md 7)
  stopping,  ///< do_stop is ending its subscriptions; nothing new happens
  finished,  ///< counted out of the run
};

/// Typed wiring ports, used when a run is built.
template <class Event>
class OutPort {
 public:
  virtual void add_subscriber(Edge<Event>* edge, std::string consumer,
                              const SubscriptionOptions& options,
                              std::size_t consumer_instance) = 0;

 protected:
  ~OutPort() = default;
};

template <class Event>
class InPort {
 public:
  virtual void add_subscription(Edge<Event>* edge, std::string producer,
                                const SubscriptionOptions& options) = 0;

 protected:
  ~InPort() = default;
};

/// A subscriber attached while the run goes on (Run::attach): the producer's side of its edge.
template <class Event>
struct LateSubscriber {
  Edge<Event>* edge = nullptr;
  std::string consumer;
  SubscriptionOptions options;
  std::size_t consumer_instance = 0;
};

/// A command from a thread outside the engine, or from a Waker.
struct ExternalCommand {
  enum class Kind : std::uint8_t {
    send_info,      // an info for handle_info now (GenStage: a plain message; Run::send_info)
    async_info,     // an info after the events buffered now (GenStage async_info/2)
    demand_mode,    // GenStage demand/2
    drain,          // a producer stops producing and finishes after what it emitted (Run::drain)
    subscribe,      // a producer takes a LateSubscriber<Out> (Run::attach)
    cancel_inputs,  // a consumer cancels all its subscriptions with a Reason (Run::detach)
  };
  Kind kind = Kind::async_info;
  std::any message;
  DemandMode mode = DemandMode::forward;
};

/// One stage instance: scheduling, identity, metrics. The typed logic is in Cell.
class CellBase : public Schedulable, public CellControl {
 public:
  CellBase(RunCore& run, std::string name, std::size_t instance, std::uint32_t index,
           StageKind kind)
      : run_(run), name_(std::move(name)), instance_(instance), index_(index), kind_(kind) {}

  /// Its typed wiring ports (InPort<In>*, OutPort<Out>*) as void*, null for the side it does
  /// not have; wiring.hpp casts them back for the plan's event type, which validation checked.
  virtual void* in_port() noexcept = 0;
  virtual void* out_port() noexcept = 0;

  std::string_view name() const noexcept override { return name_; }
  std::size_t instance() const noexcept override { return instance_; }
  std::uint32_t index() const noexcept { return index_; }
  StageKind kind() const noexcept { return kind_; }

  /// Any thread: queues a control message for the cell and wakes it. Lock-free.
  void post_external(ExternalCommand command) {
    external_.enqueue(std::move(command));
    run_.notify(index_);
  }

  void post_message(std::any message) override {
    post_external({ExternalCommand::Kind::send_info, std::move(message)});
  }

  /// Owner thread (a callback's ctx.waker()).
  std::shared_ptr<WakeTarget> wake_target() override {
    if (!wake_target_) {
      wake_target_ = std::make_shared<WakeTarget>();
      std::lock_guard lock(wake_target_->mutex);
      wake_target_->cell = this;
    }
    return wake_target_;
  }

  /// Wakers stop reaching this cell (the run is ending). Any thread, once the cell is idle.
  void close_waker() {
    if (!wake_target_) return;
    std::lock_guard lock(wake_target_->mutex);
    wake_target_->cell = nullptr;
  }

  // ---- timers (engine/DESIGN.md 11) -------------------------------------------------------------

  TimerId start_timer(Duration delay, Duration period, std::any message) override {
    if (delay < Duration::zero())
      throw stage_error(
          name_, "send_after: the delay is negative (" + std::to_string(delay.count()) + " ns)");
    const auto now = run_.clock().now();
    const auto at = delay < TimePoint::max() - now ? now + delay : TimePoint::max();  // no wrap
    const auto id = timers_.start(at, period, std::move(message));
    request_wake();
    return id;
  }
  bool cancel_timer(TimerId id) override { return timers_.cancel(id); }
  TimePoint now() const noexcept override { return run_.clock().now(); }

 protected:
  /// The timer service woke this cell (detail/timer_service.hpp, H2): due timers fire one at a
  /// time, each message handed to `deliver`, which delivers it before the next fires (so a
  /// handler that cancels a timer also due stops it), in deadline order; at most `budget` of
  /// them, the rest in the next quantum (timers_left()); then the next wake-up is asked for.
  /// Returns whether any fired. One relaxed load when no timer is due.
  template <class Deliver>
  bool fire_due_timers(std::size_t budget, Deliver&& deliver) {
    // Relaxed: the flag is set before the service's notify(), whose acq_rel (Schedulable H1)
    // orders it before this quantum; exchange, so a wake that comes meanwhile is not lost.
    if (!timers_left_) {
      if (!timers_due_.load(std::memory_order_relaxed))  // pairs with notify() (H1)
        return false;
      if (!timers_due_.exchange(false, std::memory_order_relaxed))  // pairs with notify() (H1)
        return false;
    }
    timers_.woken();
    const auto now = run_.clock().now();
    std::size_t fired = 0;
    while (fired < budget && timers_.fire_next(now, deliver))
      ++fired;
    timers_left_ = fired == budget;  // perhaps more are due: another quantum looks
    request_wake();
    return fired > 0;
  }
  /// The last quantum's budget ran out before its due timers did.
  bool timers_left() const noexcept { return timers_left_; }
  /// The stage stops: its timers are cancelled with it (a wake-up already asked for finds the
  /// cell finished and does nothing).
  void cancel_timers() noexcept {
    timers_.clear();
    timers_left_ = false;
  }

 private:
  void request_wake() {
    if (const auto at = timers_.wake_to_request())
      run_.timers().request({*at, index_, &timers_due_});
  }

 public:
  /// Any thread: its figures appended to `m` (a fused group's cell adds its members', and the
  /// links between them).
  virtual void metrics_into(Metrics& m) const { m.stages.push_back(metrics()); }

  /// Any thread: the latest published figures.
  StageMetrics metrics() const {
    StageMetrics m;
    m.name = name_;
    m.instance = instance_;
    m.kind = kind_;
    m.events_in = events_in_.get();
    m.events_out = events_out_.get();
    m.buffered = buffered_.get();
    m.dropped = dropped_.get();
    m.lost = lost_.get();
    m.filtered = filtered_.get();
    m.demand = demand_.get();
    m.buffer_capacity = buffer_capacity_;
    m.accumulating = accumulating_.get() != 0;
    m.busy_seconds = static_cast<double>(busy_ns_.get()) * 1e-9;
    m.restarts = restarts_.get();
    m.resumes = resumes_.get();
    if (m.restarts > 0) {
      std::lock_guard lock(restart_mutex_);
      m.last_restart_reason = last_restart_reason_;
      m.last_restart_at = last_restart_at_;
    }
    // Acquire pairs with the release in mark_finished: stop_reason_ is then complete.
    m.finished = finished_.load(std::memory_order_acquire);
    if (m.finished) {
      switch (stop_reason_.kind) {
        case Reason::Kind::normal:
          m.stop_reason = "normal";
          break;
        case Reason::Kind::shutdown:
          m.stop_reason = "shutdown";
          break;
        case Reason::Kind::error:
        case Reason::Kind::refused:
          m.stop_reason = stop_reason_.message;
          break;
      }
    }
    return m;
  }

 protected:
  /// Busy time is sampled: one quantum in busy_sample_every is timed and counted that many
  /// times (two clock reads per quantum cost up to 10 % on short quanta). Every quantum is timed
  /// until the first samples are in, so short runs still show their busy time.
  struct BusyTimer {
    bool timed;
    std::chrono::steady_clock::time_point start;
  };
  BusyTimer busy_timer() noexcept {
    const bool timed = (quanta_++ % busy_sample_every) == 0 || quanta_ <= busy_sample_every;
    return {timed,
            timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{}};
  }
  void add_busy(const BusyTimer& t) noexcept {
    if (!t.timed) return;
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now() - t.start)
                        .count();
    const auto weight = quanta_ <= busy_sample_every ? 1 : busy_sample_every;
    busy_ns_.add(static_cast<std::uint64_t>(ns) * weight);
  }

  /// A restart (engine/DESIGN.md 12, step 4): counted, its reason and time kept for metrics().
  /// The mutex is taken here and by metrics(), never on the event path.
  void record_restart(const std::string& reason, TimePoint at) {
    {
      std::lock_guard lock(restart_mutex_);
      last_restart_reason_ = reason;
      last_restart_at_ = at;
    }
    restarts_.add(1);
  }

  /// A resume (engine/DESIGN.md 12): counted for metrics().
  void record_resume() noexcept { resumes_.add(1); }

  void mark_finished(const Reason& reason) {
    stop_reason_ = reason;
    finished_.store(true, std::memory_order_release);  // pairs with the acquires in metrics()
    finished_.notify_all();                            // and wait_finished()
    run_.cell_finished();
  }

 public:
  /// Blocks until the cell has finished (Run::detach). Any thread but the cell's own.
  void wait_finished() const {
    while (!finished_.load(std::memory_order_acquire))   // pairs with mark_finished
      finished_.wait(false, std::memory_order_acquire);  // pairs with mark_finished
  }
  bool finished() const noexcept {
    return finished_.load(std::memory_order_acquire);  // pairs with mark_finished
  }

 protected:
  RunCore& run_;
  const std::string name_;
  const std::size_t instance_;
  const std::uint32_t index_;
  const StageKind kind_;
  OwnedCounter<std::uint64_t> events_in_, events_out_, buffered_, dropped_, lost_, filtered_;
  OwnedCounter<std::int64_t> demand_;
  OwnedCounter<std::uint32_t> accumulating_;  // 1 while in accumulate demand mode
  std::uint64_t buffer_capacity_ = 0;         // set once, before the run starts
  OwnedCounter<std::uint64_t> busy_ns_;
  static constexpr std::uint64_t busy_sample_every = 8;
  std::uint64_t quanta_ = 0;
  std::atomic<bool> finished_{false};
  Reason stop_reason_;  // written once, before finished_
  MpmcQueue<ExternalCommand> external_{8};
  std::shared_ptr<WakeTarget> wake_target_;  // made by the owner thread, read at the run's end
  Timers timers_;
  // Set by the timer service (timer_service.hpp, H2).
  std::atomic<bool> timers_due_{false};
  bool timers_left_ = false;  // owner thread: a quantum's budget ran out (fire_due_timers)
  OwnedCounter<std::uint64_t> restarts_;
  OwnedCounter<std::uint64_t> resumes_;
  // The last restart's reason and time, under the mutex (record_restart, metrics()): taken
  // at a restart and by metrics(), never on the event path.
  mutable std::mutex restart_mutex_;
  std::string last_restart_reason_;
  TimePoint last_restart_at_{};
};

}  // namespace sluice::detail
