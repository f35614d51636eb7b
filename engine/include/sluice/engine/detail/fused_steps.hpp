#pragma once

#include <algorithm>
#include <any>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sluice/engine/context.hpp>
#include <sluice/engine/detail/cell/inbound.hpp>
#include <sluice/engine/detail/owned_counter.hpp>
#include <sluice/engine/errors.hpp>
#include <sluice/engine/handler.hpp>
#include <sluice/engine/metrics.hpp>

/// The parts of a fused group's one cell (engine/DESIGN.md 10): each member stage is a step that
/// handles a batch and hands what it emitted to the next, on the same thread, with no edge
/// between them; the host (the consumer the group ends in) is the last step.
namespace sluice::detail {

/// A fused member threw: its name, and what it threw. Cell::fail reports the member, not the
/// host, as the stage that failed.
struct fused_member_error {
  std::string stage;
  std::exception_ptr original;
};

/// What the steps of a group call back into: the group's cell, as its host sees it. It forwards
/// everything to the cell, except that the host's one subscription (id 0) stands for all of the
/// head's (one per producer instance), and a stop or a cancel is remembered so the host gets no
/// further chunk.
class HostControl final : public CellControl {
 public:
  void bind(CellControl& cell, void* staged) noexcept {
    cell_ = &cell;
    staged_ = staged;
  }
  /// The cell's staged events (a Staged<Out>*; null for a consumer): where the host emits.
  void* staged() const noexcept { return staged_; }
  bool bound() const noexcept { return cell_ != nullptr; }
  void set_subscriptions(std::size_t n) noexcept { subscriptions_ = n; }
  /// The host stopped, or cancelled its subscription (all of the head's): it gets no further
  /// chunk, as a consumer gets none of a batch after a cancel of its subscription.
  bool no_more_chunks() const noexcept { return stop_requested_ || input_cancelled_; }
  /// The host stopped the group itself (a stop, a cancel of its own, or a throw): metrics
  /// then show the members above it as a producer whose subscriber left ("shutdown").
  void host_stopped() noexcept { host_stopped_.set(1); }
  bool host_stopped_published() const noexcept { return host_stopped_.get() != 0; }

  void post_message(std::any message) override { cell_->post_message(std::move(message)); }
  std::shared_ptr<WakeTarget> wake_target() override { return cell_->wake_target(); }
  std::string_view name() const noexcept override { return cell_->name(); }
  std::size_t instance() const noexcept override { return cell_->instance(); }
  void post_info(std::any message) override { cell_->post_info(std::move(message)); }
  void finish() override { cell_->finish(); }
  void stop(Reason reason) override {
    stop_requested_ = true;
    host_stopped();
    cell_->stop(std::move(reason));
  }
  void set_demand_mode(DemandMode mode) override { cell_->set_demand_mode(mode); }
  DemandMode demand_mode() const override { return cell_->demand_mode(); }
  void ask(SubscriptionId id, std::int64_t n) override { cell_->ask(id, n); }
  TimerId start_timer(Duration delay, Duration period, std::any message) override {
    return cell_->start_timer(delay, period, std::move(message));
  }
  bool cancel_timer(TimerId id) override { return cell_->cancel_timer(id); }
  void resume_after(std::exception_ptr error, std::uint64_t lost) override {
    cell_->resume_after(std::move(error), lost);
  }
  TimePoint now() const noexcept override { return cell_->now(); }
  void cancel(SubscriptionId id, Reason reason) override {
    host_stopped();
    if (id != 0) {
      cell_->cancel(static_cast<SubscriptionId>(subscriptions_ + id), std::move(reason));
      return;
    }
    input_cancelled_ = true;
    for (SubscriptionId s = 0; s < subscriptions_; ++s)
      cell_->cancel(s, reason);
  }
  std::size_t buffered_count() const override { return cell_->buffered_count(); }
  void dispatch_staged() override { cell_->dispatch_staged(); }

 private:
  CellControl* cell_ = nullptr;
  void* staged_ = nullptr;
  std::size_t subscriptions_ = 1;
  bool stop_requested_ = false;
  bool input_cancelled_ = false;
  OwnedCounter<std::uint32_t> host_stopped_;
};

class FusedStepBase {
 public:
  virtual ~FusedStepBase() = default;
};

/// One member of a fused group, from its input on.
template <class In>
class FusedStep : public FusedStepBase {
 public:
  /// Handles `events` and passes on what they became, down to the host.
  virtual void push(std::span<In> events, HostControl& control) = 0;
};

/// A handler that may be a fused member: it says `static constexpr bool fusible = true` (the
/// builder's map, filter and flat_map: a function per event, no state, no other callback).
template <class Handler>
concept FusibleHandler = requires {
  requires Handler::fusible;
};

/// A member's figures, written by the thread running the group (its StageMetrics).
struct FusedCounters {
  std::string name;
  OwnedCounter<std::uint64_t> in, out;
  OwnedCounter<std::uint64_t> taken;         ///< in, by calls that returned (its edge's received)
  OwnedCounter<std::uint32_t> stopped_here;  ///< 1: the group's stop began with this stage
};

/// A member step, whose figures the group's cell publishes.
class CountedStep {
 public:
  virtual const FusedCounters& counters() const noexcept = 0;

 protected:
  ~CountedStep() = default;
};

/// Rethrows the exception being handled as the fused member `stage`'s.
[[noreturn]] inline void rethrow_as_member(const std::string& stage) {
  throw fused_member_error{stage, std::current_exception()};
}

/// A function stage (map, filter, flat_map: its handler says `fusible`) as a step: its
/// handle_events emits into a buffer of its own, which the next step then reads.
template <class In, class Out, class Handler>
class FunctionStep final : public FusedStep<In>, public CountedStep {
 public:
  FunctionStep(std::string name, Handler handler, std::unique_ptr<FusedStepBase> next)
      : handler_(std::move(handler)), next_(static_cast<FusedStep<Out>*>(next.release())) {
    counters_.name = std::move(name);
  }
  void push(std::span<In> events, HostControl& control) override {
    counters_.in.add(events.size());
    if constexpr (std::same_as<In, Out> && requires(Handler & h) { h.map_in_place(events); }) {
      call([&] { handler_.map_in_place(events); });  // a map that keeps the type: in place
      pass_on(events.size(), events, control);
    } else if constexpr (std::same_as<In, Out> &&
                         requires(Handler & h) { h.filter_in_place(events); }) {
      std::size_t kept = 0;
      call([&] { kept = handler_.filter_in_place(events); });  // a filter: in place
      pass_on(events.size(), events.first(kept), control);
    } else {  // any other member: it emits into a buffer of its own, which the next step reads
      Context<Out> ctx(control, &out_);
      call([&] { handler_.handle_events(events, ctx); });
      struct Clear {
        EmitBuffer<Out>& b;
        ~Clear() { b.clear(); }
      } clear{out_};
      pass_on(events.size(), std::span<Out>(out_), control);
    }
  }

 private:
  /// Calls the handler; what it throws is this member's, and the group's stop began here.
  template <class F>
  void call(F&& f) {
    try {
      f();
    } catch (...) {
      counters_.stopped_here.set(1);
      rethrow_as_member(counters_.name);
    }
  }
  /// The call returned: `taken` events taken, `out` passed on to the next step.
  void pass_on(std::size_t taken, std::span<Out> out, HostControl& control) {
    counters_.taken.add(taken);
    counters_.out.add(out.size());
    next_->push(out, control);
  }

 public:
  const FusedCounters& counters() const noexcept override { return counters_; }

 private:
  Handler handler_;
  EmitBuffer<Out> out_;
  std::unique_ptr<FusedStep<Out>> next_;
  FusedCounters counters_;
};

/// The host's callbacks other than handle_events, and its figure. `Out`: the host's output
/// (void for a consumer).
template <class Out>
class FusedHost {
 public:
  virtual void subscribe(const SubscribeInfo& info, HostControl& control) = 0;
  virtual void cancel(const CancelInfo& info, HostControl& control) = 0;
  /// False if the host has no handle_info.
  virtual bool info(std::any& message, HostControl& control) = 0;
  virtual void terminate(const Reason& reason) = 0;
  /// Events its buffer or dispatcher dropped: whether to log them (its handle_discarded, or
  /// yes without one).
  virtual bool discarded(std::span<EventOf<Out>> events) = 0;
  virtual std::uint64_t events_in() const noexcept = 0;
  /// Events its handle_events calls that returned took (its input edge's received).
  virtual std::uint64_t events_taken() const noexcept = 0;

 protected:
  ~FusedHost() = default;
};

/// The stage a group ends in (a consumer, or a producer_consumer whose members keep its input
/// type), as its last step: it gets what the last member emitted in chunks of at most
/// max_demand - min_demand events (GenStage's batches for its subscription), and emits into
/// the group's cell's output.
template <class In, class Out, class Handler>
class HostStep final : public FusedStep<In>, public FusedHost<Out> {
 public:
  HostStep(Handler handler, std::int64_t chunk)
      : handler_(std::move(handler)),
        chunk_(static_cast<std::size_t>(std::max<std::int64_t>(chunk, 1))) {}

  void push(std::span<In> events, HostControl& control) override {
    auto ctx = context(control);
    for (std::size_t from = 0; from < events.size() && !control.no_more_chunks();) {
      const auto n = std::min(chunk_, events.size() - from);
      in_.add(n);
      if constexpr (handler::HandlesEventsFrom<Handler, In, Out>)
        handler_.handle_events(events.subspan(from, n), SubscriptionId{0}, ctx);
      else
        handler_.handle_events(events.subspan(from, n), ctx);
      // Each chunk's events are dispatched when its call returns, as a cell of its own does;
      // only then is the chunk taken (a dispatcher that throws leaves it unreceived).
      if constexpr (!std::is_void_v<Out>) control.dispatch_staged();
      taken_.add(n);
      from += n;
    }
  }
  void subscribe(const SubscribeInfo& info, HostControl& control) override {
    if constexpr (handler::HandlesSubscribe<Handler, Out>) {
      auto ctx = context(control);
      handler_.handle_subscribe(info, ctx);
    }
  }
  void cancel(const CancelInfo& info, HostControl& control) override {
    if constexpr (handler::HandlesCancel<Handler, Out>) {
      auto ctx = context(control);
      handler_.handle_cancel(info, ctx);
    }
  }
  bool info(std::any& message, HostControl& control) override {
    if constexpr (handler::HandlesInfo<Handler, Out>) {
      auto ctx = context(control);
      handler_.handle_info(message, ctx);
      return true;
    }
    return false;
  }
  void terminate(const Reason& reason) override {
    if constexpr (handler::HandlesTerminate<Handler>) handler_.handle_terminate(reason);
  }
  bool discarded(std::span<EventOf<Out>> events) override {
    if constexpr (!std::is_void_v<Out> && handler::HandlesDiscarded<Handler, Out>)
      return handler_.handle_discarded(events);
    return true;
  }
  std::uint64_t events_in() const noexcept override { return in_.get(); }
  std::uint64_t events_taken() const noexcept override { return taken_.get(); }

 private:
  static Context<Out> context(HostControl& control) {
    return Context<Out>(control, static_cast<Staged<Out>*>(control.staged()));
  }

  Handler handler_;
  const std::size_t chunk_;
  OwnedCounter<std::uint64_t> in_, taken_;
};

/// What a group's cell tells its host of its subscriptions: the host has one, to the last
/// member, whatever the head has.
struct FusedSubscription {
  std::string peer;                    ///< the last member's name
  SubscriptionOptions options;         ///< the host's own subscription options
  std::size_t head_subscriptions = 1;  ///< one per producer instance
};

/// The handler of a group's cell: the head's input goes through the steps; the host's other
/// callbacks are forwarded, those about its input translated from the head's subscriptions to
/// the host's one (those about its subscribers, as they are).
template <class In, class Out>
class FusedHandler {
 public:
  FusedHandler(std::unique_ptr<FusedStep<In>> first, FusedHost<Out>* host,
               std::vector<const FusedCounters*> members, FusedSubscription sub)
      : first_(std::move(first)), host_(host), members_(std::move(members)), sub_(std::move(sub)) {
    control_->set_subscriptions(sub_.head_subscriptions);
  }

  // What the host's callbacks throw is the host's failure: Cell::fail calls cell_failed.
  void handle_events(std::span<In> events, Context<Out>& ctx) {
    first_->push(events, control(ctx));
  }
  /// Once, on the first of the head's subscriptions.
  void handle_subscribe(const SubscribeInfo& about, Context<Out>& ctx) {
    if (!about.upstream) {  // a subscriber of a producer_consumer host
      host_->subscribe(about, control(ctx));
      return;
    }
    if (subscribed_++ > 0) return;
    const SubscribeInfo info{true, 0, 0, sub_.peer, sub_.options, 0};
    host_->subscribe(info, control(ctx));
  }
  /// Once: when the last of the head's subscriptions closes, or when one closing stops the
  /// group (its cancel mode, or a cancel from this side).
  void handle_cancel(const CancelInfo& info, Context<Out>& ctx) {
    if (!info.upstream) {  // a subscriber of a producer_consumer host left
      host_->cancel(info, control(ctx));
      return;
    }
    ++closed_;
    if (cancel_told_) return;
    if (closed_ < sub_.head_subscriptions && info.origin != CancelInfo::Origin::cancelled &&
        !stops_on_close(CancelMode::permanent, info.reason, false))  // a head's (fusion.hpp)
      return;
    cancel_told_ = true;
    if (info.origin == CancelInfo::Origin::cancelled) control(ctx).host_stopped();  // its own
    host_->cancel({info.origin, info.reason, 0, 0, true}, control(ctx));
  }
  void handle_info(std::any& message, Context<Out>& ctx) { host_->info(message, control(ctx)); }
  template <class E>
  requires std::same_as<E, Out>
  bool handle_discarded(std::span<E> events) { return host_->discarded(events); }
  /// The host hears what it would have as a stage of its own: when a member failed, its
  /// producer's end (handle_cancel) with the error, then the error (every subscription inside
  /// a group cascades it: fusion.hpp).
  void handle_terminate(const Reason& reason) {
    if (stop_origin() < members_.size() && !cancel_told_ && control_->bound()) {
      cancel_told_ = true;
      try {
        host_->cancel({CancelInfo::Origin::producer_ended, reason, 0, 0, true}, *control_);
      } catch (...) {  // stopping regardless, as handle_terminate itself
      }
    }
    host_->terminate(reason);
  }

  /// Any thread: the members' figures, then the host's (`cell`: the cell's own), and the
  /// links between them as edges (what the host had not received when it stopped shows as
  /// sent and not received, as on an edge).
  void fused_metrics(Metrics& m, StageMetrics cell) const {
    // Where the stop began, the stages above it stopped as a producer whose subscriber left;
    // it and those below, for the cell's reason (the cascade through permanent and transient
    // subscriptions).
    const auto origin = stop_origin();
    const auto k = members_.size();
    auto stop_reason = [&](std::size_t j) {
      return cell.finished && j < origin && origin <= k ? std::string("shutdown")
                                                        : cell.stop_reason;
    };
    for (std::size_t i = 0; i < members_.size(); ++i) {
      const auto& c = *members_[i];
      StageMetrics s;
      s.name = c.name;
      s.kind = StageKind::producer_consumer;
      s.events_in = c.in.get();
      s.events_out = c.out.get();
      s.finished = cell.finished;
      s.stop_reason = stop_reason(i);
      m.stages.push_back(std::move(s));
      EdgeMetrics e;
      e.producer = c.name;
      e.consumer = i + 1 < members_.size() ? members_[i + 1]->name : cell.name;
      e.sent = e.asked = c.out.get();
      e.received = i + 1 < members_.size() ? members_[i + 1]->taken.get() : host_->events_taken();
      m.edges.push_back(std::move(e));
    }
    cell.events_in = host_->events_in();
    cell.stop_reason = stop_reason(k);
    m.stages.push_back(std::move(cell));
  }

  /// Owner thread: the group's cell failed. Unless a member threw, the failure is the host's
  /// (its handler, or its dispatcher).
  void cell_failed() noexcept {
    if (stop_origin() > members_.size()) control_->host_stopped();
  }
  /// Owner thread, while failing: the head handled the chunk in hand (what failed came after).
  bool head_took_input() const noexcept { return members_.front()->stopped_here.get() == 0; }

 private:
  /// Where the group's stop began: a member (0..k-1) that threw, the host (k) that stopped,
  /// cancelled or threw, or none (k + 1: it came from the group's input, or has not stopped).
  std::size_t stop_origin() const noexcept {
    for (std::size_t i = 0; i < members_.size(); ++i)
      if (members_[i]->stopped_here.get() != 0) return i;
    return control_->host_stopped_published() ? members_.size() : members_.size() + 1;
  }
  HostControl& control(Context<Out>& ctx) {
    if (!control_->bound()) control_->bind(control_of(ctx), staged_of(ctx));
    return *control_;
  }

  std::unique_ptr<FusedStep<In>> first_;
  FusedHost<Out>* host_;  // the last step
  std::vector<const FusedCounters*> members_;
  FusedSubscription sub_;
  std::unique_ptr<HostControl> control_ = std::make_unique<HostControl>();  // stays put
  std::size_t subscribed_ = 0, closed_ = 0;
  bool cancel_told_ = false;
};

template <class Handler>
inline constexpr bool is_fused_handler = false;
template <class In, class Out>
inline constexpr bool is_fused_handler<FusedHandler<In, Out>> = true;

}  // namespace sluice::detail
