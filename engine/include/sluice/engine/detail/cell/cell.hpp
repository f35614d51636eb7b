#pragma once

#include <any>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include <sluice/engine/context.hpp>
#include <sluice/engine/detail/cell/cell_base.hpp>
#include <sluice/engine/detail/cell/consumer_side.hpp>
#include <sluice/engine/detail/cell/mailbox.hpp>
#include <sluice/engine/detail/cell/producer_side.hpp>
#include <sluice/engine/detail/cell/supervisor.hpp>
#include <sluice/engine/detail/edge.hpp>
#include <sluice/engine/detail/fused_steps.hpp>
#include <sluice/engine/dispatcher.hpp>
#include <sluice/engine/handler.hpp>
#include <sluice/engine/options.hpp>

namespace sluice::detail {

/// The marker behind Context::finish(): an info that stops the stage when it is delivered.
struct FinishMarker {};

/// The consumer side of a producer: no subscriptions, so each of its steps does nothing.
struct NoConsumerSide {
  void start_subscriptions() {}
  void resubscribe_subscriptions() {}
  bool has_open_input() const noexcept { return false; }
  bool poll_inputs(std::size_t /*budget*/) { return false; }
  bool settle_cancel() { return false; }
  void cancel_inputs(const Reason&) {}
  void cancel_all(const Reason&) noexcept {}
};

/// The producer side of a consumer: no subscribers, so each of its steps does nothing.
struct NoProducerSide {
  template <class... A>
  explicit NoProducerSide(A&&...) {}
  void begin_quantum() {}
  void start_subscribers() {}
  void poll_cancellations() {}
  void poll_asks() {}
  bool dispatch_emitted() { return false; }
  bool settle_output() { return false; }
  bool wants_another_quantum() const { return false; }
  void begin_drain() {}
  void late_subscriber(std::any&) {}
  void end_all(const Reason&) noexcept {}
  void end_late_subscribers() noexcept {}
  void publish_output_gauges() {}
  std::uint64_t drop_buffer() { return 0; }
  void resubscribe_subscribers() {}
  void restore_demand() {}
};

/// One instance of a stage. `In` is void for a producer, `Out` void for a consumer.
///
/// The cell is the orchestrator: its consumer side (ConsumerSide, over the Inbound part) and
/// producer side (ProducerSide, over the Output part) carry out GenStage's protocols, and its
/// Supervisor restarts a failed handler; the cell runs the quanta, starts and stops, settles
/// what each callback left behind in one fixed order (engine/DESIGN.md 5) and routes infos (the
/// Mailbox part). Everything here runs on the one
/// thread that runs the cell (Schedulable guarantees it); the shared state is in the edges.
template <class In, class Out, class Handler>
class Cell final : public CellBase,
                   public std::conditional_t<std::is_void_v<In>, NoConsumerSide,
                                             ConsumerSide<Cell<In, Out, Handler>, In>>,
                   public std::conditional_t<std::is_void_v<Out>, NoProducerSide,
                                             ProducerSide<Cell<In, Out, Handler>, Out>>,
                   public Supervisor<Cell<In, Out, Handler>, Handler> {
 public:
  using handler_type = Handler;
  using output_type = Out;
  static constexpr bool has_in = !std::is_void_v<In>;
  static constexpr bool has_out = !std::is_void_v<Out>;
  static constexpr bool is_producer_consumer = has_in && has_out;

  Cell(RunCore& run, std::string name, std::size_t instance, std::uint32_t index, Handler handler,
       ProducerOptions options, std::unique_ptr<Dispatcher<EventOf<Out>>> dispatcher)
      : CellBase(run, std::move(name), instance, index, kind_of()),
        ProducerSideOrNot(name_, options, has_in, std::move(dispatcher)),
        handler_(std::move(handler)),
        dynamic_(options.dynamic) {
    if constexpr (has_out)
      if (const auto size = buffer_size(options, has_in); size != infinity)
        buffer_capacity_ = static_cast<std::uint64_t>(size);
  }

  // ---- wiring, before the run starts (the sides' InPort and OutPort) --------------------------

  void* in_port() noexcept override {
    if constexpr (has_in) return static_cast<InPort<In>*>(this);
    return nullptr;
  }
  void* out_port() noexcept override {
    if constexpr (has_out) return static_cast<OutPort<Out>*>(this);
    return nullptr;
  }

  // ---- CellControl: what a callback asks through its Context -----------------------------------

  void post_info(std::any info) override { mail_.post(std::move(info)); }
  void finish() override { post_info(FinishMarker{}); }
  void stop(Reason reason) override {
    if (!stop_request_) stop_request_ = std::move(reason);
  }
  void set_demand_mode(DemandMode mode) override {
    if constexpr (has_out && !has_in) {  // GenStage: a no-op on a producer_consumer
      if (this->mode_ == DemandMode::accumulate && mode == DemandMode::forward)
        this->replay_pending_ = true;
      this->mode_ = mode;
    }
  }
  DemandMode demand_mode() const override {
    if constexpr (has_out) return this->mode_;
    return DemandMode::forward;
  }
  void resume_after(std::exception_ptr error, std::uint64_t lost) override {
    this->resume(std::move(error), lost);
  }
  void ask(SubscriptionId id, std::int64_t n) override {
    if constexpr (has_in) {
      if (const auto k = this->in_.manual_ask(name_, id, n); k > 0)
        this->ask_upstream(this->in_[id], k);
    } else {
      throw stage_error(name_, "ask: a producer has no subscriptions");
    }
  }
  /// Deferred until the message being handled (if any) is done, like stop(): a callback may
  /// cancel the subscription whose events it is holding.
  void cancel(SubscriptionId id, Reason reason) override {
    if constexpr (has_in)
      this->in_.request_cancel(id, std::move(reason));
    else
      throw stage_error(name_, "cancel: a producer has no subscriptions");
  }
  std::size_t buffered_count() const override {
    if constexpr (has_out) return this->out_.buffered();
    return 0;
  }

  void dispatch_staged() override {
    if constexpr (has_out)
      if (phase_ < Phase::stopping) this->dispatch_emitted();
  }

  void metrics_into(Metrics& m) const override {
    if constexpr (requires { handler_.fused_metrics(m, metrics()); })
      handler_.fused_metrics(m, metrics());  // a fused group's members and host
    else
      m.stages.push_back(metrics());
  }

 protected:
  /// One quantum (engine/DESIGN.md 1, step 2). Never throws: every exception from user code
  /// (handlers, dispatchers, the logger) is caught here or in fail(), so a cell always
  /// finishes and a run never hangs.
  bool run_quantum() noexcept override {
    if (phase_ >= Phase::stopping) {
      this->end_late_subscribers();
      return false;
    }
    const auto timer = busy_timer();
    bool more = false;
    try {
      if (run_.cancel_requested())
        do_stop(Reason::shutdown());
      else
        more = quantum();
      this->publish_output_gauges();
    } catch (...) {
      fail(std::current_exception());
    }
    if (phase_ >= Phase::stopping) this->end_late_subscribers();  // commands left mid-queue
    add_busy(timer);
    return more && phase_ < Phase::stopping;
  }

 private:
  friend ConsumerSide<Cell, In>;
  friend ProducerSide<Cell, Out>;
  friend Supervisor<Cell, Handler>;
  using ProducerSideOrNot =
      std::conditional_t<std::is_void_v<Out>, NoProducerSide, ProducerSide<Cell, Out>>;

  static constexpr StageKind kind_of() noexcept {
    return !has_in ? StageKind::producer
                   : (has_out ? StageKind::producer_consumer : StageKind::consumer);
  }

  Context<Out> context() {
    if constexpr (has_out)
      return Context<Out>(*this, &this->out_.staged());
    else
      return Context<Out>(*this, nullptr);
  }

  /// Runs a handler callback `f(ctx)`, then dispatches what it emitted at once (GenStage
  /// dispatches a callback's events when it returns, before anything else happens), then
  /// settles the rest.
  /// A callback that throws fails the stage (fail, once the exception has unwound to the
  /// quantum), unless the stage restarts (engine/DESIGN.md 12): then the call returns here as if
  /// the callback had, and the caller goes on with the new handler.
  template <class F>
  void invoke(F&& f) {
    auto ctx = context();
    try {
      f(ctx);
    } catch (...) {
      if (!this->supervised()) throw;
      this->handler_failed(std::current_exception());
      return;
    }
    after_callback();
  }
  void after_callback() {
    if (phase_ < Phase::stopping) this->dispatch_emitted();
    settle();
  }

  /// A producer_consumer handles an inbound message only while its downstream demand is
  /// positive (GenStage 1.8), so it holds about max_demand events per subscription.
  bool may_take_input() const noexcept {
    if constexpr (is_producer_consumer) return this->downstream_demand_ > 0;
    return true;
  }

  bool quantum() {
    this->begin_quantum();
    if (phase_ == Phase::created) start();
    this->poll_cancellations();  // before anything new is dispatched
    drain_external();
    fire_due_timers(run_.quantum(), [this](std::any m) {
      mail_.ready(mail_.store(std::move(m)));  // a plain message (Run::send_info's kind),
      settle();                                // delivered before the next timer fires
    });
    this->poll_asks();
    const bool more = phase_ < Phase::stopping && this->poll_inputs(run_.quantum());
    settle();
    return more || this->wants_another_quantum() || (timers_left() && phase_ < Phase::stopping);
  }

  void start() {
    phase_ = Phase::running;
    this->start_subscribers();
    this->start_subscriptions();
  }

  // ---- the settle loop (engine/DESIGN.md 5) -----------------------------------------------------

  /// What a callback left behind, carried out in one fixed order until nothing is left. Called
  /// after every callback and message; re-entrant calls return at once (the outer loop goes on).
  void settle() {
    if (settling_) return;
    settling_ = true;
    struct Reset {
      bool& b;
      ~Reset() { b = false; }
    } reset{settling_};
    while (phase_ < Phase::stopping && settle_step()) {
    }
  }

  /// One step of the settle loop; false when there is nothing left to do (or the cell stops).
  bool settle_step() {
    if (this->dispatch_emitted()) return true;  // step 1: what the callback emitted
    if (in_message_) return false;           // step 2: stop and cancel wait for the message's end
    if (this->settle_cancel()) return true;  // step 3: a requested cancel
    if (stop_request_) {  // step 4: a requested stop (a restart goes on settling)
      carry_out_stop();
      return phase_ < Phase::stopping;
    }
    if (this->settle_output()) return true;  // step 5: asks on a subscriber's behalf, ...
    if (mail_.has_ready()) {                 // step 6: the next ready info
      if (auto info = mail_.next_ready()) deliver_info(std::move(*info));
      return true;
    }
    if (mail_.has_posted()) {  // step 7: the next posted info
      route_info(mail_.next_posted());
      return true;
    }
    if constexpr (is_producer_consumer) {  // step 8: infos whose inbound messages are handled
      if (!mail_.waits_behind_inputs()) return false;
      bool routed = false;
      while (auto info = mail_.next_passed_inputs(
                 [this](const auto& at) { return this->in_.has_read(at); })) {
        route_to_output(std::move(*info));
        routed = true;
      }
      return routed;
    }
    return false;
  }

  void carry_out_stop() {
    Reason r = std::move(*stop_request_);
    stop_request_.reset();
    // The stage stopped itself: its policy may restart it (not a new handler in its restart).
    if (!cascading_ && !this->restarting_ && this->may_restart(r)) {
      this->restart(std::move(r));
      return;
    }
    if (r.is_error() && !cascading_) {  // the stage itself chose to stop with an error
      run_.record_error(std::make_exception_ptr(stage_error(name_, "stopped: " + r.message)));
      run_.log(LogLevel::error, "stage '" + name_ + "' stopped: " + r.message);
      do_stop(r);
      if (run_.fail_fast()) run_.request_cancel();
      return;
    }
    do_stop(r);
  }

  // ---- infos (GenStage 1.9; the Mailbox part) ---------------------------------------------------

  /// A posted info: delivered after what is buffered now. On a producer_consumer whose inputs
  /// still hold unhandled messages, it first waits behind them (GENSTAGE.md 1.8).
  void route_info(std::any info) {
    if constexpr (is_producer_consumer) {
      auto at = this->in_.written_positions();
      if (!this->in_.has_read(at) || mail_.waits_behind_inputs()) {
        mail_.wait_behind_inputs(std::move(at), std::move(info));
        return;
      }
    }
    route_to_output(std::move(info));
  }
  void route_to_output(std::any info) {
    const auto token = mail_.store(std::move(info));
    if constexpr (has_out)
      ProducerSideOrNot::route_to_output(token);
    else
      mail_.ready(token);
  }
  void deliver_info(std::any info) {
    if (info.type() == typeid(FinishMarker)) {
      stop(Reason::normal());
      return;
    }
    if constexpr (handler::HandlesInfo<Handler, Out>) {
      invoke([&](auto& ctx) { handler_.handle_info(info, ctx); });
    } else {
      run_.log(LogLevel::warning, "stage '" + name_ +
                                      "' received an info message but has no handle_info; "
                                      "ignored");
    }
  }

  /// Commands from outside the engine (Run's calls, Wakers), in arrival order.
  void drain_external() {
    ExternalCommand cmd;
    while (phase_ < Phase::stopping && external_.try_dequeue(cmd)) {
      switch (cmd.kind) {
        case ExternalCommand::Kind::send_info:
          mail_.ready(mail_.store(std::move(cmd.message)));
          break;
        case ExternalCommand::Kind::async_info:
          post_info(std::move(cmd.message));
          break;
        case ExternalCommand::Kind::demand_mode:
          set_demand_mode(cmd.mode);
          break;
        case ExternalCommand::Kind::drain:
          this->begin_drain();
          break;
        case ExternalCommand::Kind::subscribe:
          this->late_subscriber(cmd.message);
          break;
        case ExternalCommand::Kind::cancel_inputs:
          this->cancel_inputs(std::any_cast<const Reason&>(cmd.message));
          break;
      }
      settle();
    }
  }

  // ---- stop and failure (engine/DESIGN.md 6) ----------------------------------------------------

  void fail(std::exception_ptr e) noexcept {
    if constexpr (is_fused_handler<Handler>) {
      handler_.cell_failed();
      if (handler_.head_took_input()) this->release_in_hand();
    }
    if constexpr (is_producer_consumer) {
      // The exception unwound out of handling a message: what that call emitted is not counted
      // as lost, since its inputs stay counted on their edge (sent, not received).
      if (in_message_) {
        try {
          this->out_.staged().clear();
        } catch (...) {  // an event's destructor threw: do_stop clears the rest
        }
      }
    }
    in_message_ = false;  // the exception unwound out of any message being handled
    std::string what = "unknown exception";
    std::string who;  // the stage to report: this one, or the fused member that threw
    try {
      who = name_;
      try {
        std::rethrow_exception(e);
      } catch (const fused_member_error& m) {  // a member of this fused group threw
        who = m.stage;
        e = m.original;  // (m dies with the old e: its stage copied first)
      } catch (...) {
      }
      try {
        std::rethrow_exception(e);
      } catch (const stage_error& se) {
        run_.record_error(e);
        what = se.what();
      } catch (const std::exception& ex) {
        what = ex.what();
        run_.record_error(std::make_exception_ptr(stage_error(who, what)));
      } catch (...) {
        run_.record_error(std::make_exception_ptr(stage_error(who, what)));
      }
      run_.log(LogLevel::error, "stage '" + who + "' failed: " + what);
    } catch (...) {  // out of memory while reporting: the stage still stops below
    }
    do_stop(Reason::error(what));
    if (run_.fail_fast()) run_.request_cancel();
  }

  /// Stops this instance for good: ends every downstream subscription, cancels every upstream
  /// one, counts what it still held as lost, calls handle_terminate, and finishes exactly once
  /// whatever throws on the way (engine/DESIGN.md 6, stop).
  void do_stop(const Reason& reason) noexcept {
    if (phase_ >= Phase::stopping) return;
    phase_ = Phase::stopping;
    cancel_timers();
    this->end_all(reason);
    this->cancel_all(reason);
    if constexpr (handler::DiscardsHeld<Handler>) {  // step 3: what the handler held (a batch
      try {                                          // stage's, a map_blocking stage's calls)
        lost_.add(static_cast<std::uint64_t>(handler_.discard_held()));
      } catch (...) {  // keep stopping
      }
    }
    try {
      this->publish_output_gauges();
    } catch (...) {  // a dispatcher's count threw: the gauges stay as they were
    }
    buffered_.set(0);  // what a dispatcher still holds was counted as lost above
    if constexpr (handler::HandlesTerminate<Handler>) {
      try {
        handler_.handle_terminate(reason);  // stopping regardless (GenStage too)
      } catch (...) {
      }
    }
    phase_ = Phase::finished;
    mark_finished(reason);
  }

  Handler handler_;
  const bool dynamic_;  // consumers attach and leave while it runs: none is no reason to stop
  Mailbox mail_;
  Phase phase_ = Phase::created;
  std::optional<Reason> stop_request_;  // carried out between messages (settle step 4)
  bool cascading_ = false;   // the stop comes from a cancel mode, not from the stage itself
  bool settling_ = false;    // settle() is on the stack: an inner call returns at once
  bool in_message_ = false;  // handling an inbound message: stop and cancel wait for its end
};

}  // namespace sluice::detail
