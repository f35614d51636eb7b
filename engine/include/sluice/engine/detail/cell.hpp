#pragma once

#include <algorithm>
#include <any>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <sluice/engine/context.hpp>
#include <sluice/engine/detail/cell_base.hpp>
#include <sluice/engine/detail/consumer_demand.hpp>
#include <sluice/engine/detail/edge.hpp>
#include <sluice/engine/dispatcher.hpp>
#include <sluice/engine/fifo.hpp>
#include <sluice/engine/options.hpp>

namespace sluice::detail {

struct Nothing {};

// ---- optional callbacks ------------------------------------------------------------------------

template <class H, class Out>
concept HasHandleDemand = requires(H& h, Context<Out>& c) {
  h.handle_demand(std::size_t{}, c);
};
template <class H, class In, class Out>
concept HasHandleEventsFrom = requires(H& h, std::span<In> s, Context<Out>& c) {
  h.handle_events(s, SubscriptionId{}, c);
};
template <class H, class In, class Out>
concept HasHandleEvents = requires(H& h, std::span<In> s, Context<Out>& c) {
  h.handle_events(s, c);
};
/// The handler can read events it may not modify (a broadcast's shared batches).
template <class H, class In, class Out>
concept TakesConstEvents =
    HasHandleEvents<H, const In, Out> || HasHandleEventsFrom<H, const In, Out>;
template <class H, class Out>
concept HasHandleInfo = requires(H& h, std::any& m, Context<Out>& c) {
  h.handle_info(m, c);
};
template <class H, class Out>
concept HasHandleCancel = requires(H& h, const CancelInfo& i, Context<Out>& c) {
  h.handle_cancel(i, c);
};
template <class H, class Out>
concept HasHandleSubscribe = requires(H& h, const SubscribeInfo& i, Context<Out>& c) {
  h.handle_subscribe(i, c);
};
template <class H, class Out>
concept HasHandleDrain = requires(H& h, Context<Out>& c) {
  h.handle_drain(c);
};
/// GenStage's terminate/2: called once when the stage stops, whatever the reason.
template <class H>
concept HasHandleTerminate = requires(H& h, const Reason& r) {
  h.handle_terminate(r);
};
/// A stage that holds events outside the engine (a push source's queue): called once when the
/// stage stops, before handle_terminate; it discards them and returns how many (counted in
/// `lost`, so Metrics::undelivered includes them).
template <class H>
concept HasDiscardHeld = requires(H& h) {
  { h.discard_held() } -> std::convertible_to<std::uint64_t>;
};
template <class H, class Out>
concept HasHandleDiscarded = requires(H& h, std::span<Out> s) {
  { h.handle_discarded(s) } -> std::convertible_to<bool>;
};

/// The marker behind Context::finish(): an info message that ends the stage when delivered.
struct FinishMarker {};

/// One instance of a stage. `In` is void for producers, `Out` is void for consumers.
///
/// Everything here runs on the one thread that runs the cell (Schedulable guarantees it); the
/// only shared state is in the edges (see Edge) and the published metrics.
template <class In, class Out, class Handler>
class Cell final : public CellBase,
                   public std::conditional_t<std::is_void_v<In>, Nothing, InPort<In>>,
                   public std::conditional_t<std::is_void_v<Out>, Nothing, OutPort<Out>> {
  static constexpr bool has_in = !std::is_void_v<In>;
  static constexpr bool has_out = !std::is_void_v<Out>;
  using InEvent = std::conditional_t<has_in, In, char>;
  using OutEvent = std::conditional_t<has_out, Out, char>;

 public:
  Cell(RunCore& run, std::string name, std::size_t instance, std::uint32_t index, Handler handler,
       ProducerOptions options, std::unique_ptr<Dispatcher<OutEvent>> dispatcher)
      : CellBase(run, std::move(name), instance, index,
                 !has_in ? StageKind::producer
                         : (has_out ? StageKind::producer_consumer : StageKind::consumer)),
        handler_(std::move(handler)),
        buffer_size_(
            options.buffer_size.value_or(has_in ? infinity : default_producer_buffer_size)),
        keep_(options.buffer_keep),
        mode_(options.demand),
        dynamic_(options.dynamic),
        dispatcher_(std::move(dispatcher)),
        outbox_(*this) {
    if (has_out && buffer_size_ != infinity)
      buffer_capacity_ = static_cast<std::uint64_t>(buffer_size_);
  }

  ~Cell() override {
    if (pool_ != nullptr) pool_->close();  // lives on until its last batch comes back
  }

  // ---- wiring (before the run starts) ----------------------------------------------------------

  void add_subscription(Edge<InEvent>* edge, std::string producer, const SubscriptionOptions& o) {
    InSub s;
    s.edge = edge;
    s.producer = std::move(producer);
    s.options = o;
    s.demand = ConsumerDemand(o.max_demand, o.effective_min_demand());
    s.control = o.demand;
    s.cancel = o.cancel;
    in_.push_back(std::move(s));
    ++open_in_;
  }

  void add_subscriber(Edge<OutEvent>* edge, std::string consumer, const SubscriptionOptions& o,
                      std::size_t consumer_instance) {
    OutSub s;
    s.edge = edge;
    s.consumer = std::move(consumer);
    s.options = o;
    s.consumer_instance = consumer_instance;
    out_.push_back(std::move(s));
    ++open_out_;
  }

  // ---- CellControl (called by callbacks through Context) ---------------------------------------

  void post_info(std::any message) override { mailbox_.push_back(std::move(message)); }
  void finish() override { post_info(FinishMarker{}); }
  void stop(Reason reason) override {
    if (!stop_request_) stop_request_ = std::move(reason);
  }
  void set_demand_mode(DemandMode mode) override {
    if constexpr (has_in) {
      return;  // GenStage: a no-op on a producer_consumer
    } else {
      if (mode_ == DemandMode::accumulate && mode == DemandMode::forward) replay_pending_ = true;
      mode_ = mode;
    }
  }
  DemandMode demand_mode() const override { return mode_; }
  void ask(SubscriptionId id, std::int64_t n) override {
    if constexpr (has_in) {
      if (id >= in_.size())
        throw stage_error(name_, "ask on unknown subscription " + std::to_string(id));
      auto& s = in_[id];
      if (s.control != DemandControl::manual)
        throw stage_error(name_, "ask on the automatic subscription to '" + s.producer +
                                     "': only manual subscriptions ask by hand");
      if (n <= 0 || !s.open) return;  // GenStage: ask(from, 0) is a no-op
      if (s.pending + n > s.demand.max_demand())
        throw stage_error(name_, "manual ask of " + std::to_string(n) + " on subscription to '" +
                                     s.producer + "' would exceed max_demand " +
                                     std::to_string(s.demand.max_demand()) + " (outstanding " +
                                     std::to_string(s.pending) + ")");
      s.pending += n;
      grant(s, n);
    } else {
      throw stage_error(name_, "ask: a producer has no subscriptions");
    }
  }
  /// Deferred until the message being handled (if any) is done, like stop(): a callback may
  /// cancel the subscription whose events it is holding.
  void cancel(SubscriptionId id, Reason reason) override {
    if constexpr (has_in) {
      if (id >= in_.size() || !in_[id].open) return;  // GenStage ignores unknown tags
      cancel_requests_.emplace_back(id, std::move(reason));
    } else {
      throw stage_error(name_, "cancel: a producer has no subscriptions");
    }
  }

  void do_cancel(SubscriptionId id, const Reason& reason) {
    if constexpr (has_in) {
      auto& s = in_[id];
      if (!s.open) return;
      close_subscription(s);
      s.edge->cancel(reason);
      run_.notify(s.edge->producer_cell());
      s.edge->discard_unread();  // counted by the edge: sent - received
      after_subscription_closed(id, CancelInfo::Origin::cancelled, reason, s.cancel, true);
    }
  }

  std::size_t buffered_count() const override {
    if constexpr (has_out)
      return buffer_.size() + held_.size() + dispatcher_->buffered();
    else
      return 0;
  }

 protected:
  // ---- the scheduler's entry point -------------------------------------------------------------

  /// Never throws: every exception from user code (handlers, dispatchers, the logger) is caught
  /// here or in fail(), so a cell always finishes and a run never hangs.
  bool run_quantum() noexcept override {
    if (stopped_) {
      end_late_subscribers();
      return false;
    }
    // Busy time is sampled: one quantum in busy_sample_every is timed and counted that many
    // times (two clock reads per quantum cost up to 10 % on short quanta). Every quantum is
    // timed until the first samples are in, so short runs still show their busy time.
    const bool timed = (quanta_++ % busy_sample_every) == 0 || quanta_ <= busy_sample_every;
    const auto t0 =
        timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    bool more = false;
    if constexpr (has_out) replaced_this_quantum_ = false;
    try {
      if (run_.cancel_requested()) {
        do_stop(Reason::shutdown());
      } else {
        if (!started_) start();
        if constexpr (has_out) poll_cancellations();  // before anything new is dispatched
        drain_external();
        std::size_t budget = run_.quantum();
        if constexpr (has_out) poll_outputs();
        if constexpr (has_in)
          if (!stopped_) more = poll_inputs(budget);
        settle();
        if constexpr (has_out) more = more || replacements_ > 0;  // the next quantum replaces
      }
      publish_gauges();
    } catch (...) {
      fail(std::current_exception());
    }
    if (stopped_) end_late_subscribers();  // commands left behind when it stopped mid-queue
    if (timed) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now() - t0)
                          .count();
      const auto weight = quanta_ <= busy_sample_every ? 1 : busy_sample_every;
      busy_ns_.add(static_cast<std::uint64_t>(ns) * weight);
    }
    return more && !stopped_;
  }

 private:
  struct InSub {
    Edge<InEvent>* edge = nullptr;
    std::string producer;
    SubscriptionOptions options;
    std::int64_t pending = 0;  // manual demand: asked and not yet received
    ConsumerDemand demand{1, 0};
    DemandControl control = DemandControl::automatic;
    CancelMode cancel = CancelMode::permanent;
    bool open = true;
  };
  struct OutSub {
    Edge<OutEvent>* edge = nullptr;
    std::string consumer;
    SubscriptionOptions options;
    std::size_t consumer_instance = 0;
    std::int64_t available = 0;  // credit collected from the edge and not yet spent
    bool open = true;
  };
  struct AccEntry {
    bool demand;  // true: a stored demand; false: a run of held events
    std::int64_t n;
  };

  /// The Outbox the dispatcher talks to.
  class OutboxImpl final : public Outbox<OutEvent> {
   public:
    explicit OutboxImpl(Cell& c) : c_(c) {}
    void send(SubscriberId to, std::span<OutEvent> events) override { c_.send(to, events); }
    SharedEvents<OutEvent> share(std::span<OutEvent> events) override {
      if (c_.pool_ == nullptr) c_.pool_ = new BlockPool<OutEvent>();  // owned; see ~Cell
      return SharedEvents<OutEvent>(c_.pool_->make(events));
    }
    void send(SubscriberId to, const SharedEvents<OutEvent>& batch, std::size_t offset,
              std::size_t count) override {
      c_.send_shared(to, batch, offset, count);
    }
    void discard(std::span<OutEvent> events, std::string_view why) override {
      c_.discard(events, why);
    }
    void filtered(std::size_t n) override {
      c_.filtered_.add(n);
      c_.unasked_seen_ += n;
    }
    void unasked(std::size_t n) override { c_.unasked_seen_ += n; }
    void release_info(std::uint64_t token) override { c_.ready_infos_.push_back(token); }
    void ask_on_behalf(SubscriberId of, std::size_t n) override {
      c_.self_asks_.emplace_back(of, n);
    }
    void log(LogLevel level, std::string_view message) override {
      std::string line = "stage '";  // appends, not "literal" + std::string&&: GCC bug 105329
      line += c_.name_;
      line += "': ";
      line += message;
      c_.run_.log(level, line);
    }

   private:
    Cell& c_;
  };

  Context<Out> context() { return Context<Out>(*this, &staged_); }

  // ---- start, stop, failure --------------------------------------------------------------------

  void start() {
    started_ = true;
    if constexpr (has_out)
      for (SubscriberId id = 0; id < out_.size() && !stopped_; ++id)
        subscribed(id);
    if constexpr (has_in) {
      for (SubscriptionId id = 0; id < in_.size(); ++id) {
        auto& s = in_[id];
        if constexpr (HasHandleSubscribe<Handler, Out>) {
          SubscribeInfo si{true, id, 0, s.producer, s.options};
          invoke([&] {
            auto ctx = context();
            handler_.handle_subscribe(si, ctx);
          });
        }
        if (s.control == DemandControl::automatic)
          grant(s, s.demand.subscribe());  // GenStage asks max_demand at once on subscribe
      }
    }
  }

  /// Subscriber `id` joins: handle_subscribe, then the dispatcher.
  void subscribed(SubscriberId id) {
    if constexpr (has_out) {
      if constexpr (HasHandleSubscribe<Handler, Out>) {
        SubscribeInfo si{false, 0, id, out_[id].consumer, out_[id].options};
        invoke([&] {
          auto ctx = context();
          handler_.handle_subscribe(si, ctx);
        });
        if (stopped_) return;
      }
      SubscriberInfo info{id, out_[id].consumer, out_[id].options, out_[id].consumer_instance};
      std::size_t up = 0;
      try {
        up = dispatcher_->subscribe(info, outbox_);
      } catch (const subscription_refused& r) {
        refuse(id, r.what());
        return;
      }
      demand_path(static_cast<std::int64_t>(up));
    }
  }

  /// A subscriber attached while running (Run::attach).
  void late_subscriber(std::any& request) {
    if constexpr (has_out) {
      auto& r = std::any_cast<LateSubscriber<OutEvent>&>(request);
      add_subscriber(r.edge, std::move(r.consumer), r.options, r.consumer_instance);
      if (started_) subscribed(static_cast<SubscriberId>(out_.size() - 1));  // else start() does
    }
  }

  /// A stopped producer ends the subscriptions attached after it stopped, with its reason.
  void end_late_subscribers() noexcept {
    if constexpr (has_out) {
      ExternalCommand cmd;
      while (external_.try_dequeue(cmd)) {
        if (cmd.kind != ExternalCommand::Kind::subscribe) continue;
        auto& r = std::any_cast<LateSubscriber<OutEvent>&>(cmd.message);
        try {
          r.edge->push_end(stop_reason_);
        } catch (...) {  // out of memory copying the reason: end it plainly
          try {
            r.edge->push_end(Reason{Reason::Kind::shutdown, {}});
          } catch (...) {  // cannot happen: an empty message allocates nothing
          }
        }
        run_.notify(r.edge->consumer_cell());
      }
    }
  }

  void fail(std::exception_ptr e) noexcept {
    if constexpr (has_in && has_out) {
      // The exception unwound out of handling a message: what that call emitted is not counted
      // as lost, since its inputs stay counted on their edge (sent, not received).
      if (in_message_) {
        try {
          staged_.clear();
        } catch (...) {  // an event's destructor threw: do_stop clears the rest
        }
      }
    }
    in_message_ = false;  // the exception unwound out of any message being handled
    std::string what = "unknown exception";
    try {
      try {
        std::rethrow_exception(e);
      } catch (const stage_error& se) {
        run_.record_error(e);
        what = se.what();
      } catch (const std::exception& ex) {
        what = ex.what();
        run_.record_error(std::make_exception_ptr(stage_error(name_, what)));
      } catch (...) {
        run_.record_error(std::make_exception_ptr(stage_error(name_, what)));
      }
      run_.log(LogLevel::error, "stage '" + name_ + "' failed: " + what);
    } catch (...) {  // out of memory while reporting: the stage still stops below
    }
    do_stop(Reason::error(what));
    if (run_.fail_fast()) run_.request_cancel();
  }

  /// Stops this instance for good: ends every downstream subscription, cancels every upstream
  /// one, and counts what it still held as lost.
  void do_stop(const Reason& reason) noexcept {
    if (stopped_) return;
    stopped_ = true;
    // Each step may meet user code (a dispatcher, an event's destructor) or run out of memory;
    // whatever happens, the cell is marked finished exactly once.
    auto guarded = [](auto&& step) noexcept {
      try {
        step();
      } catch (...) {  // keep stopping: the run must end
      }
    };
    if constexpr (has_out) {
      for (auto& o : out_) {
        if (!o.open) continue;
        o.open = false;
        guarded([&] { o.edge->push_end(reason); });
        run_.notify(o.edge->consumer_cell());
      }
      guarded([&] {
        lost_.add(buffer_.size() + held_.size() + staged_.size() + dispatcher_->buffered());
      });
      if constexpr (HasDiscardHeld<Handler>)
        guarded([&] { lost_.add(static_cast<std::uint64_t>(handler_.discard_held())); });
      guarded([&] { buffer_.clear(); });
      guarded([&] { held_.clear(); });
      guarded([&] { staged_.clear(); });
    }
    if constexpr (has_in) {
      for (auto& s : in_) {
        if (!s.open) continue;
        close_subscription(s);
        guarded([&] { s.edge->cancel(reason); });
        run_.notify(s.edge->producer_cell());
        s.edge->discard_unread();  // counted by the edge: sent - received
      }
    }
    guarded([&] { publish_gauges(); });
    buffered_.set(0);  // what a dispatcher still holds was counted as lost above
    if constexpr (HasHandleTerminate<Handler>)
      guarded([&] { handler_.handle_terminate(reason); });  // stopping regardless (GenStage too)
    mark_finished(reason);
  }

  void publish_gauges() {
    if constexpr (has_out) {
      buffered_.set(buffer_.size() + held_.size() + dispatcher_->buffered());
      std::int64_t d = 0;
      for (SubscriberId id = 0; id < out_.size(); ++id) {
        auto& o = out_[id];
        if (o.open) d += o.available;
        o.edge->set_queued(o.open ? dispatcher_->queued(id) : 0);
      }
      demand_.set(d);
      accumulating_.set(mode_ == DemandMode::accumulate ? 1 : 0);
    }
  }

  void drain_external() {
    ExternalCommand cmd;
    while (!stopped_ && external_.try_dequeue(cmd)) {
      switch (cmd.kind) {
        case ExternalCommand::Kind::message: {
          const auto token = next_token_++;
          infos_.emplace(token, std::move(cmd.message));
          ready_infos_.push_back(token);
          break;
        }
        case ExternalCommand::Kind::info:
          post_info(std::move(cmd.message));
          break;
        case ExternalCommand::Kind::demand_mode:
          set_demand_mode(cmd.mode);
          break;
        case ExternalCommand::Kind::drain:
          begin_drain();
          break;
        case ExternalCommand::Kind::subscribe:
          late_subscriber(cmd.message);
          break;
        case ExternalCommand::Kind::cancel_inputs:
          if constexpr (has_in) {
            const auto& reason = std::any_cast<const Reason&>(cmd.message);
            for (SubscriptionId id = 0; id < in_.size(); ++id)
              cancel(id, reason);
          }
          break;
      }
      settle();
    }
  }

  // ---- the settle loop: what a callback left behind ---------------------------------------------

  /// Runs a handler callback, then dispatches what it emitted at once (GenStage dispatches a
  /// callback's events when it returns, before anything else happens), then settles the rest.
  template <class F>
  void invoke(F&& f) {
    f();
    after_callback();
  }

  void after_callback() {
    if constexpr (has_out)
      if (!stopped_ && !staged_.empty()) dispatch_staged();
    settle();
  }

  void settle() {
    if (settling_) return;  // the outer loop continues
    settling_ = true;
    struct Reset {
      bool& b;
      ~Reset() { b = false; }
    } reset{settling_};
    for (;;) {
      if (stopped_) return;
      if constexpr (has_out) {
        if (!staged_.empty()) {
          dispatch_staged();
          continue;
        }
      }
      if (in_message_) return;  // stop and cancel wait for the end of the current message
      if (!cancel_requests_.empty()) {
        auto [id, reason] = std::move(cancel_requests_.front());
        cancel_requests_.pop_front();
        do_cancel(id, reason);
        continue;
      }
      if (stop_request_) {
        Reason r = std::move(*stop_request_);
        stop_request_.reset();
        if (r.is_error() && !cascading_) {  // the stage itself chose to stop with an error
          run_.record_error(std::make_exception_ptr(stage_error(name_, "stopped: " + r.message)));
          run_.log(LogLevel::error, "stage '" + name_ + "' stopped: " + r.message);
          do_stop(r);
          if (run_.fail_fast()) run_.request_cancel();
          return;
        }
        do_stop(r);
        return;
      }
      if constexpr (has_out) {
        if (!self_asks_.empty()) {
          auto [id, n] = self_asks_.front();
          self_asks_.pop_front();
          if (id < out_.size() && out_[id].open)
            demand_path(static_cast<std::int64_t>(dispatcher_->ask(id, n, outbox_)));
          continue;
        }
        // Events the dispatcher dropped on purpose or took for no subscriber are replaced, once
        // per quantum: a hash that drops (nearly) everything from an endless source must not
        // keep the cell in this loop, deaf to cancel (run_quantum reschedules it).
        if (replacements_ > 0 && !replaced_this_quantum_) {
          replaced_this_quantum_ = true;
          demand_path(std::exchange(replacements_, 0));
          continue;
        }
        if (replay_pending_) {
          replay_pending_ = false;
          replay_accumulated();
          continue;
        }
      }
      if (!ready_infos_.empty()) {
        const auto token = ready_infos_.front();
        ready_infos_.pop_front();
        deliver_info(token);
        continue;
      }
      if (!mailbox_.empty()) {
        std::any msg = std::move(mailbox_.front());
        mailbox_.pop_front();
        route_info(std::move(msg));
        continue;
      }
      if constexpr (has_in && has_out) {
        if (!input_infos_.empty()) {
          const auto before = input_infos_.size();
          release_input_infos();
          if (input_infos_.size() != before) continue;
        }
      }
      return;
    }
  }

  // ---- infos (GenStage 1.9) ---------------------------------------------------------------------

  /// A posted info: delivered after what is buffered now. On a producer_consumer whose input
  /// still holds unhandled messages, it waits behind them first (GENSTAGE.md 1.8).
  void route_info(std::any msg) {
    if constexpr (has_in && has_out) {
      std::vector<std::uint64_t> behind(in_.size(), 0);
      bool waits = false;
      for (std::size_t i = 0; i < in_.size(); ++i) {
        if (!in_[i].open) continue;
        behind[i] = in_[i].edge->written_position();
        waits = waits || behind[i] > in_[i].edge->read_position();
      }
      if (waits || !input_infos_.empty()) {
        input_infos_.push_back({std::move(behind), std::move(msg)});
        return;
      }
    }
    route_to_output(std::move(msg));
  }

  /// Input infos whose messages have all been handled go on to the output side, in order.
  void release_input_infos() {
    if constexpr (has_in && has_out) {
      while (!input_infos_.empty()) {
        auto& front = input_infos_.front();
        for (std::size_t i = 0; i < in_.size(); ++i)
          if (in_[i].open && in_[i].edge->read_position() < front.behind[i]) return;
        std::any msg = std::move(front.msg);
        input_infos_.pop_front();
        route_to_output(std::move(msg));
      }
    }
  }

  void route_to_output(std::any msg) {
    const auto token = next_token_++;
    infos_.emplace(token, std::move(msg));
    if constexpr (has_out) {
      if (buffer_.empty() && held_.empty()) {
        dispatcher_->info(token, outbox_);
      } else {
        buffered_infos_.emplace_back(buffer_.pushed_total(), token);
      }
    } else {
      ready_infos_.push_back(token);
    }
  }

  void deliver_info(std::uint64_t token) {
    auto it = infos_.find(token);
    if (it == infos_.end()) return;
    std::any msg = std::move(it->second);
    infos_.erase(it);
    if (msg.type() == typeid(FinishMarker)) {
      stop(Reason::normal());
      return;
    }
    if constexpr (HasHandleInfo<Handler, Out>) {
      invoke([&] {
        auto ctx = context();
        handler_.handle_info(msg, ctx);
      });
    } else {
      run_.log(LogLevel::warning, "stage '" + name_ +
                                      "' received an info message but has no handle_info; "
                                      "ignored");
    }
  }

  /// Buffered infos whose events have all left the buffer become ready (in order).
  void release_buffered_infos() {
    if constexpr (has_out) {
      while (!buffered_infos_.empty() && buffered_infos_.front().first <= buffer_.popped_total()) {
        ready_infos_.push_back(buffered_infos_.front().second);
        buffered_infos_.pop_front();
      }
    }
  }

  // ---- producer side ----------------------------------------------------------------------------

  void poll_outputs() {
    if constexpr (has_out) {
      for (SubscriberId id = 0; id < out_.size() && !stopped_; ++id) {
        auto& o = out_[id];
        if (!o.open) continue;
        if (o.edge->cancelled_by_consumer()) {
          consumer_cancelled(id);
          continue;
        }
        o.edge->take_asks([&](std::int64_t n) {
          if (stopped_ || !o.open) return;
          o.available += n;
          demand_path(static_cast<std::int64_t>(
              dispatcher_->ask(id, static_cast<std::size_t>(n), outbox_)));
          settle();
        });
      }
    }
  }

  /// Subscribers that left before this quantum began are closed before it dispatches anything,
  /// so a quantum that starts after Run::detach has returned sends nothing to the detached stage.
  void poll_cancellations() {
    if constexpr (has_out)
      for (SubscriberId id = 0; id < out_.size() && !stopped_; ++id)
        if (out_[id].open && out_[id].edge->cancelled_by_consumer()) consumer_cancelled(id);
  }

  void consumer_cancelled(SubscriberId id) {
    if constexpr (has_out) {
      auto& o = out_[id];
      o.open = false;
      o.available = 0;
      --open_out_;
      const Reason reason = o.edge->cancel_reason();
      const auto up = dispatcher_->cancel(id, outbox_);
      if constexpr (HasHandleCancel<Handler, Out>) {
        CancelInfo info{CancelInfo::Origin::cancelled, reason, 0, id, false};
        invoke([&] {
          auto ctx = context();
          handler_.handle_cancel(info, ctx);
        });
      }
      demand_path(static_cast<std::int64_t>(up));
      settle();
      // A producer nobody consumes from stops, unless it waits for consumers to attach.
      // (While draining, a dynamic one stops too: no consumer can attach to finish the drain.)
      if (open_out_ == 0 && (!dynamic_ || draining_) && !stopped_) do_stop(Reason::shutdown());
    }
  }

  /// GenStage's demand path: serve from the buffer, then forward, accumulate or count.
  void demand_path(std::int64_t k) {
    if constexpr (has_out) {
      if (stopped_) return;
      // The buffer is offered whatever k is: the dispatcher sends only what its subscribers
      // asked for. (GenStage offers min(k, buffered), which strands buffered events when the
      // DemandDispatcher's `pending` absorbs an ask after a subscriber left with demand.)
      if (!buffer_.empty()) {
        const auto before = buffer_.popped_total();
        const auto unasked_before = unasked_seen_;
        take_from_buffer(static_cast<std::int64_t>(buffer_.size()));
        // Events the dispatcher dropped on purpose or took for no subscriber (Outbox::filtered,
        // Outbox::unasked) met no demand.
        k -= static_cast<std::int64_t>((buffer_.popped_total() - before) -
                                       (unasked_seen_ - unasked_before));
      }
      if (k <= 0 || stopped_) return;
      if constexpr (has_in) {
        pc_counter_ += k;
      } else if (mode_ == DemandMode::accumulate) {
        acc_.push_back({true, k});
      } else {
        if (draining_) [[unlikely]]
          return;
        invoke([&] {
          auto ctx = context();
          handler_.handle_demand(static_cast<std::size_t>(k), ctx);
        });
      }
    }
  }

  /// Dispatches up to k buffered events, in order, releasing infos met on the way. Returns what
  /// is left of k.
  std::int64_t take_from_buffer(std::int64_t k) {
    if constexpr (has_out) {
      while (k > 0 && !buffer_.empty() && !stopped_) {
        auto m = std::min<std::uint64_t>(buffer_.size(), static_cast<std::uint64_t>(k));
        if (!buffered_infos_.empty())  // stop at the next info marker
          m = std::min<std::uint64_t>(m, buffered_infos_.front().first - buffer_.popped_total());
        if (m > 0) {
          const auto took = dispatcher_->dispatch(buffer_.front(m), outbox_);
          buffer_.pop_front(took);
          k -= static_cast<std::int64_t>(took);
          if (took < m) {
            release_buffered_infos();
            break;
          }
        }
        release_buffered_infos();  // delivered by the next settle, after this demand path
      }
      release_buffered_infos();
    }
    return k;
  }

  /// Hands what the last callback emitted to the dispatcher; leftovers go to the buffer.
  void dispatch_staged() {
    if constexpr (has_out) {
      if constexpr (!has_in) {
        if (mode_ == DemandMode::accumulate) {
          hold(std::span<OutEvent>(staged_));
          staged_.clear();
          return;
        }
      }
      std::span<OutEvent> all(staged_);
      const auto unasked_before = unasked_seen_;
      const auto took = dispatcher_->dispatch(all, outbox_);
      // Events the dispatcher dropped on purpose (a partition hash's none) or took for no
      // subscriber (a partition whose consumer left) met no demand; GenStage counts them, which
      // stalls a graph whose consumers then wait for events nobody emits.
      const auto dropped = static_cast<std::int64_t>(unasked_seen_ - unasked_before);
      if constexpr (has_in) {  // GenStage 1.8: the events actually sent use up downstream demand
        pc_counter_ =
            std::max<std::int64_t>(pc_counter_ - (static_cast<std::int64_t>(took) - dropped), 0);
      } else if (took == all.size()) {
        replacements_ += dropped;  // the source met its demand with them: ask it for more
      }
      store_leftovers(all.subspan(took));
      staged_.clear();
    }
  }

  void store_leftovers(std::span<OutEvent> rest) {
    if constexpr (has_out) {
      if (rest.empty()) return;
      const auto cap = static_cast<std::uint64_t>(buffer_size_);
      if (keep_ == BufferKeep::first) {
        const auto space = cap > buffer_.size() ? cap - buffer_.size() : 0;
        const auto keep = std::min<std::uint64_t>(space, rest.size());
        for (std::size_t i = 0; i < keep; ++i)
          buffer_.push_back(std::move(rest[i]));
        discard(rest.subspan(keep));
      } else {
        if (rest.size() >= cap) {
          drop_front_of_buffer(buffer_.size());
          discard(rest.first(rest.size() - cap));
          rest = rest.subspan(rest.size() - cap);
        } else if (buffer_.size() + rest.size() > cap) {
          drop_front_of_buffer(buffer_.size() + rest.size() - cap);
        }
        for (auto& e : rest)
          buffer_.push_back(std::move(e));
      }
    }
  }

  void drop_front_of_buffer(std::uint64_t n) {
    if constexpr (has_out) {
      while (n > 0) {
        auto span = buffer_.front_span();
        const auto m = std::min<std::uint64_t>(span.size(), n);
        discard(span.first(m));
        buffer_.pop_front(m);
        n -= m;
      }
      release_buffered_infos();  // GenStage: an info behind dropped events is delivered at once
    }
  }

  /// Events the buffer (or the dispatcher) cannot keep: counted, passed to the hook, logged
  /// unless the hook says not to.
  void discard(std::span<OutEvent> dropped, std::string_view from = "buffer") {
    if constexpr (has_out) {
      if (dropped.empty()) return;
      dropped_.add(dropped.size());
      bool log = true;
      if constexpr (HasHandleDiscarded<Handler, Out>) log = handler_.handle_discarded(dropped);
      if (log)
        run_.log(LogLevel::warning, "stage '" + name_ + "' has discarded " +
                                        std::to_string(dropped.size()) + " events from " +
                                        std::string(from));
    }
  }

  /// Accumulate mode: events emitted by callbacks are held, bounded by buffer_size together with
  /// the buffer (GenStage holds them without bound; see docs).
  void hold(std::span<OutEvent> events) {
    if constexpr (has_out && !has_in) {
      const auto cap = static_cast<std::uint64_t>(buffer_size_);
      const auto used = buffer_.size() + held_.size();
      if (keep_ == BufferKeep::first) {
        const auto space = cap > used ? cap - used : 0;
        const auto keep = std::min<std::uint64_t>(space, events.size());
        discard(events.subspan(keep));
        events = events.first(keep);
      } else if (used + events.size() > cap) {
        auto over = used + events.size() - cap;
        const auto from_held = std::min<std::uint64_t>(over, held_.size());
        drop_oldest_held(from_held);
        over -= from_held;
        discard(events.first(over));
        events = events.subspan(over);
      }
      if (events.empty()) return;
      acc_.push_back({false, static_cast<std::int64_t>(events.size())});  // its own dispatch
      for (auto& e : events)
        held_.push_back(std::move(e));
    }
  }

  void drop_oldest_held(std::uint64_t k) {
    if constexpr (has_out && !has_in) {
      if (k == 0) return;
      discard(held_.front(k));
      held_.pop_front(k);
      for (auto it = acc_.begin(); it != acc_.end() && k > 0;) {
        if (it->demand) {
          ++it;
          continue;
        }
        const auto d = std::min<std::uint64_t>(k, static_cast<std::uint64_t>(it->n));
        it->n -= static_cast<std::int64_t>(d);
        k -= d;
        it = it->n == 0 ? acc_.erase(it) : std::next(it);
      }
    }
  }

  /// Switching back to forward: replay stored demands and held events in arrival order; demands
  /// are not summed (GenStage "does not combine demands when accumulating").
  void replay_accumulated() {
    if constexpr (has_out && !has_in) {
      while (!acc_.empty() && mode_ == DemandMode::forward && !stopped_) {
        const AccEntry e = acc_.front();
        acc_.pop_front();
        if (e.demand) {
          demand_path(e.n);
        } else {
          for (std::int64_t i = 0; i < e.n; ++i) {
            staged_.push_back(std::move(held_.front_span()[0]));
            held_.pop_front(1);
          }
          dispatch_staged();
        }
        settle();
      }
    }
  }

  /// Run::drain on a producer: no more handle_demand; held events are released (forward mode);
  /// the stage finishes once everything it emitted has been dispatched.
  /// A source with handle_drain(ctx) decides itself how to end (a push source delivers what
  /// was pushed, then finishes).
  void begin_drain() {
    if constexpr (has_out && !has_in) {
      if (draining_) return;
      if (mode_ == DemandMode::accumulate) set_demand_mode(DemandMode::forward);
      if constexpr (HasHandleDrain<Handler, Out>) {
        invoke([&] {
          auto ctx = context();
          handler_.handle_drain(ctx);
        });
      } else {
        draining_ = true;
        finish();
      }
    } else if constexpr (has_out && has_in) {
      // A dynamic producer_consumer nobody consumes from could never hand on what it holds, and
      // would not even see its inputs end behind the events it cannot handle: it stops, and
      // what it held is counted as undelivered.
      draining_ = true;
      if (dynamic_ && open_out_ == 0) stop(Reason::shutdown());
    }
  }

  /// Called by the dispatcher through the Outbox.
  void send(SubscriberId to, std::span<OutEvent> events) {
    if constexpr (has_out) {
      if (events.empty()) return;
      auto& o = check_send(to, events.size());
      if (!o.edge->push(events))
        throw stage_error(name_, "the edge to '" + o.consumer + "' is full (" +
                                     std::to_string(events.size()) +
                                     " events): the consumer holds more than its max_demand");
      sent(o, events.size());
    }
  }

  /// Checks a send against the subscriber's demand; returns its subscription.
  OutSub& check_send(SubscriberId to, std::size_t count) {
    if (to >= out_.size() || !out_[to].open)
      throw stage_error(name_, "dispatcher " + dispatcher_->name() +
                                   " sent events to a subscriber that is not subscribed");
    auto& o = out_[to];
    if (static_cast<std::int64_t>(count) > o.available)
      throw stage_error(name_, "dispatcher " + dispatcher_->name() + " sent " +
                                   std::to_string(count) + " events to '" + o.consumer +
                                   "', which asked for only " + std::to_string(o.available));
    return o;
  }

  void sent(OutSub& o, std::size_t count) {
    o.available -= static_cast<std::int64_t>(count);
    events_out_.add(count);
    run_.notify(o.edge->consumer_cell());
  }

  void send_shared(SubscriberId to, const SharedEvents<OutEvent>& batch, std::size_t offset,
                   std::size_t count) {
    if constexpr (has_out) {
      if (count == 0) return;
      if (batch.block() == nullptr || offset + count > batch.size())
        throw stage_error(
            name_, "dispatcher " + dispatcher_->name() + " sent a range outside its shared batch");
      auto& o = check_send(to, count);
      if (!o.edge->push_shared(batch.block(), offset, count))
        throw stage_error(name_, "the edge to '" + o.consumer + "' is full (" +
                                     std::to_string(count) +
                                     " events): the consumer holds more than its max_demand");
      sent(o, count);
    }
  }

  /// The dispatcher turned subscriber `id` down: end that subscription with the reason.
  void refuse(SubscriberId id, const std::string& why) {
    if constexpr (has_out) {
      auto& o = out_[id];
      o.open = false;
      --open_out_;
      o.edge->push_end(Reason::refused(why));
      run_.notify(o.edge->consumer_cell());
      if (open_out_ == 0 && !dynamic_) stop(Reason::shutdown());  // see consumer_cancelled
    }
  }

  // ---- consumer side ----------------------------------------------------------------------------

  void grant(InSub& s, std::int64_t n) {
    s.edge->grant(n);
    run_.notify(s.edge->producer_cell());
  }

  void close_subscription(InSub& s) {
    s.open = false;
    --open_in_;
  }

  /// Handles up to `budget` messages, round robin over subscriptions. Returns true if it stopped
  /// because the budget ran out.
  bool poll_inputs(std::size_t budget) {
    if constexpr (has_in) {
      const std::size_t n = in_.size();
      for (std::size_t empty_in_a_row = 0; empty_in_a_row < n && !stopped_;) {
        if constexpr (has_out)
          if (pc_counter_ <= 0) return false;  // GenStage 1.8: wait for downstream demand
        if (budget == 0) return true;
        const std::size_t i = rr_;
        rr_ = (rr_ + 1) % n;
        auto& s = in_[i];
        const EdgeMessage* m = s.open ? s.edge->peek() : nullptr;
        if (m == nullptr) {
          ++empty_in_a_row;
          continue;
        }
        empty_in_a_row = 0;
        --budget;
        if (m->kind == EdgeMessage::Kind::end)
          producer_ended(static_cast<SubscriptionId>(i));
        else
          handle_message(static_cast<SubscriptionId>(i), *m);
        settle();
      }
    }
    return false;
  }

  /// `E` is InEvent (the edge's own events) or const InEvent (a shared batch).
  template <class E>
  void call_handle_events(std::span<E> events, SubscriptionId from) {
    events_in_.add(events.size());
    auto ctx = context();
    if constexpr (std::is_const_v<E> && !TakesConstEvents<Handler, InEvent, Out>) {
      // Refused when the subscription was declared (Engine::subscribe); kept as a guard.
      throw stage_error(name_,
                        "received a shared batch but handle_events does not take "
                        "std::span<const T>");
    } else if constexpr (HasHandleEventsFrom<Handler, E, Out>) {
      handler_.handle_events(events, from, ctx);
    } else {
      handler_.handle_events(events, ctx);
    }
    after_callback();
  }

  /// GenStage's consumer algorithm (Utils.split_batches, GENSTAGE.md 1.5), exactly: cut the
  /// message into chunks of max - min, compute each chunk's ask, call handle_events on each chunk
  /// and send its ask after the call returns.
  void handle_message(SubscriptionId id, const EdgeMessage& m) {
    if (m.kind == EdgeMessage::Kind::shared)
      handle_message(id, m, in_[id].edge->shared_events_of(m));
    else
      handle_message(id, m, in_[id].edge->events_of(m));
  }

  template <class E>
  void handle_message(SubscriptionId id, const EdgeMessage& m, std::span<E> events) {
    auto& s = in_[id];
    const auto total = m.count;
    if (s.control == DemandControl::manual) {
      if (static_cast<std::int64_t>(total) > s.pending) log_excess(s, total - s.pending);
      s.pending = std::max<std::int64_t>(s.pending - static_cast<std::int64_t>(total), 0);
      in_message_ = true;
      call_handle_events(events, id);
      s.edge->release_events(m, 0, total);
      s.edge->pop();
      in_message_ = false;
      return;
    }
    s.demand.begin(total);
    in_message_ = true;
    std::uint32_t from = 0;
    while (s.demand.more()) {
      const auto chunk = s.demand.next();
      const auto n = static_cast<std::uint32_t>(chunk.size);
      if (chunk.excess > 0) log_excess(s, chunk.excess);
      call_handle_events(events.subspan(from, n), id);
      if (stopped_) {  // stopped from inside the callback: do_stop released the edge
        in_message_ = false;
        return;
      }
      s.edge->release_events(m, from, from + n);
      from += n;
      if (chunk.ask > 0) grant(s, chunk.ask);
      if (stop_request_ || cancel_pending(id)) break;  // the rest is not delivered
    }
    if (from < total) s.edge->release_events(m, from, total, false);
    s.edge->pop();
    in_message_ = false;
  }

  bool cancel_pending(SubscriptionId id) const {
    for (auto& [c, r] : cancel_requests_)
      if (c == id) return true;
    return false;
  }

  void log_excess(const InSub& s, std::int64_t excess) {
    run_.log(LogLevel::error, "stage '" + name_ + "' has received " + std::to_string(excess) +
                                  " events in excess from: '" + s.producer + "'");
  }

  void producer_ended(SubscriptionId id) {
    auto& s = in_[id];
    const Reason reason = s.edge->end_reason();
    s.edge->pop();
    close_subscription(s);
    after_subscription_closed(id, CancelInfo::Origin::producer_ended, reason, s.cancel, false);
  }

  /// handle_cancel, then the cancel mode (GENSTAGE.md 1.10). A producer's normal end closes only
  /// that subscription: the stage finishes when all its inputs have ended.
  void after_subscription_closed(SubscriptionId id, CancelInfo::Origin origin, const Reason& reason,
                                 CancelMode mode, bool own_cancel) {
    if constexpr (has_in) {
      if constexpr (HasHandleCancel<Handler, Out>) {
        CancelInfo info{origin, reason, id, 0, true};
        invoke([&] {
          auto ctx = context();
          handler_.handle_cancel(info, ctx);
        });
        if (stopped_) return;
      }
      bool stop_now = false;
      switch (reason.kind == Reason::Kind::refused ? CancelMode::temporary : mode) {
        case CancelMode::permanent:
          stop_now = own_cancel || !reason.is_normal();
          break;
        case CancelMode::transient:
          stop_now = reason.is_error();
          break;
        case CancelMode::temporary:
          break;
      }
      if (stop_now) {  // GenStage: "consumer ... is stopping after receiving cancel"
        cascading_ = true;
        stop(reason);
        settle();
        return;
      }
      if (open_in_ == 0) {
        if constexpr (has_out)
          finish();  // end downstream after everything emitted so far is dispatched
        else         // a refusal stays visible as the stop reason (Run::attach's caller reads it)
          stop(reason.kind == Reason::Kind::refused ? reason : Reason::normal());
        settle();
      }
    }
  }

  Handler handler_;
  const std::int64_t buffer_size_;
  const BufferKeep keep_;
  DemandMode mode_;
  const bool
      dynamic_;  // consumers attach and leave while it runs: no subscriber is no reason to stop
  std::unique_ptr<Dispatcher<OutEvent>> dispatcher_;
  OutboxImpl outbox_;
  BlockPool<OutEvent>* pool_ = nullptr;  // shared batches (broadcast); closed, not deleted
  static constexpr std::uint64_t busy_sample_every = 8;
  std::uint64_t quanta_ = 0;
  bool draining_ = false;  // Run::drain asked: a source's handle_demand is no longer called

  std::vector<InSub> in_;
  std::size_t open_in_ = 0;
  std::size_t rr_ = 0;
  std::vector<OutSub> out_;
  std::size_t open_out_ = 0;

  Staged<Out> staged_;
  Fifo<OutEvent> buffer_;
  Fifo<OutEvent> held_;
  std::deque<AccEntry> acc_;
  std::int64_t pc_counter_ = 0;

  std::deque<std::any> mailbox_;
  std::map<std::uint64_t, std::any> infos_;
  std::uint64_t next_token_ = 0;
  std::deque<std::pair<std::uint64_t, std::uint64_t>> buffered_infos_;  // (position, token)
  std::deque<std::uint64_t> ready_infos_;
  std::deque<std::pair<SubscriberId, std::size_t>> self_asks_;
  std::uint64_t unasked_seen_ = 0;  // Outbox::filtered and unasked, in all (owner thread)
  std::int64_t replacements_ = 0;   // demand a source is asked again for (dispatch_staged)
  struct InputInfo {
    std::vector<std::uint64_t> behind;  // per subscription: messages to handle first
    std::any msg;
  };
  std::deque<InputInfo> input_infos_;

  std::optional<Reason> stop_request_;
  bool replay_pending_ = false;
  bool replaced_this_quantum_ = false;  // settle: replacements asked this quantum
  bool started_ = false;
  bool stopped_ = false;
  bool settling_ = false;
  bool in_message_ = false;  // handling an inbound message: stop and cancel wait for its end
  std::deque<std::pair<SubscriptionId, Reason>> cancel_requests_;
  bool cascading_ = false;  // stopping because a subscription was cancelled (not our own error)
};

}  // namespace sluice::detail
