#pragma once

#include <algorithm>
#include <any>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include <sluice/engine/context.hpp>
#include <sluice/engine/detail/cell/cell_base.hpp>
#include <sluice/engine/detail/cell/output.hpp>
#include <sluice/engine/dispatcher.hpp>
#include <sluice/engine/handler.hpp>
#include <sluice/engine/options.hpp>

namespace sluice::detail {

/// The producer side of a cell (of a producer or a producer_consumer): its subscribers join
/// and leave, their asks go to the dispatcher, demand goes to the buffer, then to
/// handle_demand (forward), to storage (accumulate) or to the downstream demand of a
/// producer_consumer (engine/DESIGN.md 4), and what callbacks emit is dispatched, the rest
/// buffered. A mixin over the cell `C` (CRTP): the cell calls the handler and settles; the
/// Output part keeps the state and moves the events.
template <class C, class Out>
class ProducerSide : public OutPort<Out> {
 public:
  void add_subscriber(Edge<Out>* edge, std::string consumer, const SubscriptionOptions& options,
                      std::size_t consumer_instance) override {
    out_.add(edge, std::move(consumer), options, consumer_instance);
  }

 protected:
  ProducerSide(const std::string& stage, const ProducerOptions& o, bool producer_consumer,
               std::unique_ptr<Dispatcher<Out>> dispatcher)
      : out_(stage, buffer_size(o, producer_consumer), o.buffer_keep, std::move(dispatcher)),
        outbox_(*this),
        mode_(o.demand_mode) {}

  /// The Outbox the dispatcher talks to.
  class OutboxImpl final : public Outbox<Out> {
   public:
    explicit OutboxImpl(ProducerSide& p) : p_(p) {}
    void send(SubscriberId to, std::span<Out> events) override {
      if (!events.empty()) p_.sent(events.size(), p_.out_.send(to, events));
    }
    SharedEvents<Out> share(std::span<Out> events) override { return p_.out_.share(events); }
    void send(SubscriberId to, const SharedEvents<Out>& batch, std::size_t offset,
              std::size_t count) override {
      if (count > 0) p_.sent(count, p_.out_.send(to, batch, offset, count));
    }
    void discard(std::span<Out> events, std::string_view why) override { p_.discard(events, why); }
    void filtered(std::size_t n) override {
      p_.self().filtered_.add(n);
      p_.unasked_seen_ += n;
    }
    void unasked(std::size_t n) override { p_.unasked_seen_ += n; }
    void release_info(std::uint64_t token) override { p_.self().mail_.ready(token); }
    void ask_on_behalf(SubscriberId of, std::size_t n) override {
      p_.self_asks_.emplace_back(of, n);
    }
    void log(LogLevel level, std::string_view message) override {
      std::string line = "stage '";  // appends, not "literal" + std::string&&: GCC bug 105329
      line += p_.self().name_;
      line += "': ";
      line += message;
      p_.self().run_.log(level, line);
    }

   private:
    ProducerSide& p_;
  };

  Output<Out> out_;
  OutboxImpl outbox_;
  DemandMode mode_;
  bool replay_pending_ = false;         // accumulate -> forward: replay what was accumulated
  bool replaced_this_quantum_ = false;  // replacements are asked once per quantum
  std::int64_t downstream_demand_ = 0;  // producer_consumer: asked of it and not yet sent
  std::int64_t replacements_ = 0;       // producer: demand met by events that met no demand
  std::uint64_t unasked_seen_ = 0;      // Outbox::filtered and unasked, in all
  std::int64_t handler_owes_ = 0;       // producer: asked of handle_demand, not yet emitted
  bool replaying_held_ = false;         // dispatching held events again: not newly emitted
  bool drain_asked_ = false;            // handle_drain was called (a restart calls it again)
  SubscriberId told_ = 0;               // subscribers the handler has heard of (subscribed)
  std::deque<std::pair<SubscriberId, std::size_t>> self_asks_;  // Outbox::ask_on_behalf

  C& self() noexcept { return static_cast<C&>(*this); }
  static constexpr bool is_producer = !C::is_producer_consumer;

  // ---- subscribers join and leave
  // ----------------------------------------------------------------

  void start_subscribers() {
    for (SubscriberId id = 0; id < out_.size() && self().phase_ < Phase::stopping; ++id)
      subscribed(id);
  }

  /// Subscriber `id` joins: handle_subscribe, then the dispatcher (which may refuse it).
  void subscribed(SubscriberId id) {
    auto& c = self();
    told_ = std::max(told_, id + 1);  // a restart in this call tells the new handler of it
    if constexpr (handler::HandlesSubscribe<typename C::handler_type, Out>) {
      const SubscribeInfo info{false, 0, id, out_[id].consumer, out_[id].options, 0};
      c.invoke([&](auto& ctx) { c.handler_.handle_subscribe(info, ctx); });
      if (c.phase_ >= Phase::stopping) return;
    }
    std::size_t up = 0;
    try {
      up = out_.dispatcher().subscribe(out_.info(id), outbox_);
    } catch (const subscription_refused& r) {
      refuse(id, r.what());
      return;
    }
    demand_path(static_cast<std::int64_t>(up));
  }

  /// A subscriber attached while running (Run::attach, engine/DESIGN.md 8, attach step 5).
  void late_subscriber(std::any& request) {
    auto& r = std::any_cast<LateSubscriber<Out>&>(request);
    out_.add(r.edge, std::move(r.consumer), r.options, r.consumer_instance);
    if (self().phase_ != Phase::created) subscribed(static_cast<SubscriberId>(out_.size() - 1));
  }

  /// A stopped producer ends the subscriptions attached after it stopped, with its reason.
  void end_late_subscribers() noexcept {
    auto& c = self();
    ExternalCommand cmd;
    while (c.external_.try_dequeue(cmd)) {
      if (cmd.kind != ExternalCommand::Kind::subscribe) continue;
      auto& r = std::any_cast<LateSubscriber<Out>&>(cmd.message);
      end_edge(*r.edge, c.stop_reason_);
      c.run_.notify(r.edge->consumer_cell());
    }
  }

  /// Ends an edge with `reason`, or plainly if copying the reason runs out of memory.
  static void end_edge(Edge<Out>& edge, const Reason& reason) noexcept {
    try {
      edge.push_end(reason);
    } catch (...) {
      try {
        edge.push_end(Reason{Reason::Kind::shutdown, {}});
      } catch (...) {  // cannot happen: an empty message allocates nothing
      }
    }
  }

  /// The dispatcher turned subscriber `id` down: that subscription ends with the reason.
  void refuse(SubscriberId id, const std::string& why) {
    auto& c = self();
    auto& s = out_[id];
    const auto consumer = out_.close(s);
    s.edge->push_end(Reason::refused(why));
    c.run_.notify(consumer);
    if (out_.open() == 0 && !c.dynamic_) c.stop(Reason::shutdown());  // see consumer_cancelled
  }

  /// Subscribers that left before this quantum began are closed before it dispatches anything,
  /// so a quantum that starts after Run::detach has returned sends nothing to the detached stage.
  void poll_cancellations() {
    for (SubscriberId id = 0; id < out_.size() && self().phase_ < Phase::stopping; ++id)
      if (out_[id].open && out_[id].edge->cancelled_by_consumer()) consumer_cancelled(id);
  }

  /// The asks that arrived, one by one, to the dispatcher (engine/DESIGN.md 2 step 3).
  void poll_asks() {
    auto& c = self();
    for (SubscriberId id = 0; id < out_.size() && c.phase_ < Phase::stopping; ++id) {
      auto& s = out_[id];
      if (!s.open) continue;
      if (s.edge->cancelled_by_consumer()) {
        consumer_cancelled(id);
        continue;
      }
      s.edge->take_asks([&](std::int64_t n) {
        if (c.phase_ >= Phase::stopping || !s.open) return;
        s.demand += n;
        demand_path(static_cast<std::int64_t>(
            out_.dispatcher().ask(id, static_cast<std::size_t>(n), outbox_)));
        c.settle();
      });
    }
  }

  /// A subscriber cancelled (engine/DESIGN.md 6, cancel from the producer's side).
  void consumer_cancelled(SubscriberId id) {
    auto& c = self();
    auto& s = out_[id];
    out_.close(s);
    const Reason reason = s.edge->cancel_reason();
    const auto up = out_.dispatcher().cancel(id, outbox_);
    if constexpr (handler::HandlesCancel<typename C::handler_type, Out>) {
      const CancelInfo info{CancelInfo::Origin::cancelled, reason, 0, id, false};
      c.invoke([&](auto& ctx) { c.handler_.handle_cancel(info, ctx); });
    }
    demand_path(static_cast<std::int64_t>(up));
    c.settle();
    // A producer nobody consumes from stops, unless it waits for consumers to attach.
    // (While draining, a dynamic one stops too: no consumer can attach to finish the drain.)
    if (out_.open() == 0 && (!c.dynamic_ || c.phase_ == Phase::draining) &&
        c.phase_ < Phase::stopping)
      c.do_stop(Reason::shutdown());
  }

  // ---- demand and dispatch (engine/DESIGN.md 4)
  // --------------------------------------------------

  /// GenStage's demand path: `k` more events are wanted downstream. The buffer is offered
  /// first, whatever k is: the dispatcher sends only what its subscribers asked for (GenStage
  /// offers min(k, buffered), which strands buffered events when the DemandDispatcher's
  /// `pending` absorbs an ask after a subscriber left with demand). What the buffer did not
  /// meet goes on by the stage's kind and demand mode.
  void demand_path(std::int64_t k) {
    auto& c = self();
    if (c.phase_ >= Phase::stopping) return;
    if (!out_.buffer().empty()) {
      const auto unasked_before = unasked_seen_;
      const auto took = out_.offer_buffer(static_cast<std::int64_t>(out_.buffer().size()), outbox_,
                                          release_info());
      // Events the dispatcher dropped on purpose or took for no subscriber (Outbox::filtered,
      // Outbox::unasked) met no demand.
      k -= static_cast<std::int64_t>(took - (unasked_seen_ - unasked_before));
    }
    if (k <= 0 || c.phase_ >= Phase::stopping) return;
    if constexpr (C::is_producer_consumer) {
      downstream_demand_ += k;
    } else if (mode_ == DemandMode::accumulate) {
      out_.hold_demand(k);
    } else if (c.phase_ != Phase::draining) {
      handler_owes_ += k;
      c.invoke([&](auto& ctx) { c.handler_.handle_demand(static_cast<std::size_t>(k), ctx); });
    }
  }

  /// Hands what the last callback emitted to the dispatcher; leftovers go to the buffer.
  void dispatch_staged() {
    auto& staged = out_.staged();
    if constexpr (is_producer) {
      // Beyond what it owes, events go to the buffer; a restart asks what is still owed again.
      if (!replaying_held_)
        handler_owes_ =
            std::max<std::int64_t>(handler_owes_ - static_cast<std::int64_t>(staged.size()), 0);
      if (mode_ == DemandMode::accumulate) {
        out_.hold(std::span<Out>(staged), dropper());
        staged.clear();
        return;
      }
    }
    std::span<Out> all(staged);
    const auto unasked_before = unasked_seen_;
    const auto took = out_.dispatcher().dispatch(all, outbox_);
    // Events the dispatcher dropped on purpose (a partition hash's none) or took for no
    // subscriber (a partition whose consumer left) met no demand; GenStage counts them, which
    // stalls a graph whose consumers then wait for events nobody emits.
    const auto unasked = static_cast<std::int64_t>(unasked_seen_ - unasked_before);
    if constexpr (C::is_producer_consumer) {  // GenStage 1.8: events sent use up the demand
      downstream_demand_ = std::max<std::int64_t>(
          downstream_demand_ - (static_cast<std::int64_t>(took) - unasked), 0);
    } else if (took == all.size()) {
      replacements_ += unasked;  // the source met its demand with them: ask it for more
    }
    out_.store_leftovers(all.subspan(took), dropper(), release_info());
    staged.clear();
  }

  /// Accumulate -> forward: stored demands and held events replayed in arrival order; demands
  /// are not summed (GenStage "does not combine demands when accumulating").
  void replay_accumulated() {
    auto& c = self();
    while (out_.has_accumulated() && mode_ == DemandMode::forward && c.phase_ < Phase::stopping) {
      const auto e = out_.next_accumulated();
      if (e.demand) {
        demand_path(e.n);
      } else {
        out_.stage_held(e.n);
        replaying_held_ = true;
        dispatch_staged();
        replaying_held_ = false;
      }
      c.settle();
    }
  }

  /// Settle step 1 (engine/DESIGN.md 5): what the last callback emitted, dispatched.
  bool dispatch_emitted() {
    if (out_.staged().empty()) return false;
    dispatch_staged();
    return true;
  }

  void begin_quantum() noexcept { replaced_this_quantum_ = false; }
  /// Demand met by events that met no demand is asked again in the next quantum.
  bool wants_another_quantum() const noexcept { return replacements_ > 0; }

  /// The producer's settle step (engine/DESIGN.md 5, step 5); true if one did something.
  bool settle_output() {
    if (!self_asks_.empty()) {
      const auto [id, n] = self_asks_.front();
      self_asks_.pop_front();
      if (id < out_.size() && out_[id].open)
        demand_path(static_cast<std::int64_t>(out_.dispatcher().ask(id, n, outbox_)));
      return true;
    }
    // Events the dispatcher dropped on purpose or took for no subscriber are replaced, once
    // per quantum: a hash that drops (nearly) everything from an endless source must not keep
    // the cell in this loop, deaf to cancel (run_quantum reschedules it).
    if (replacements_ > 0 && !replaced_this_quantum_) {
      replaced_this_quantum_ = true;
      demand_path(std::exchange(replacements_, 0));
      return true;
    }
    if (replay_pending_) {
      replay_pending_ = false;
      replay_accumulated();
      return true;
    }
    return false;
  }

  /// Run::drain (engine/DESIGN.md 7). A producer calls handle_demand no more: it ends its own
  /// way with handle_drain (a push source delivers what was pushed), or finishes once what it
  /// emitted has been dispatched. A dynamic producer_consumer nobody consumes from could never
  /// hand on what it holds: it stops, and what it held is counted as undelivered.
  void begin_drain() {
    auto& c = self();
    if constexpr (is_producer) {
      if (c.phase_ == Phase::draining) return;
      if (mode_ == DemandMode::accumulate) c.set_demand_mode(DemandMode::forward);
      if constexpr (handler::HandlesDrain<typename C::handler_type, Out>) {
        drain_asked_ = true;
        c.invoke([&](auto& ctx) { c.handler_.handle_drain(ctx); });
      } else {
        c.phase_ = Phase::draining;
        c.finish();
      }
    } else {
      c.phase_ = Phase::draining;
      if (c.dynamic_ && out_.open() == 0) c.stop(Reason::shutdown());
    }
  }

  /// An info posted to this stage, routed to the output: delivered now if nothing is
  /// buffered, else behind the buffered events (the dispatcher may hold it behind its own).
  void route_to_output(std::uint64_t token) {
    if (out_.holds_nothing())
      out_.dispatcher().info(token, outbox_);
    else
      out_.buffer().mark(token);
  }

  /// Stopping: every open subscriber's edge ends with `reason`; what it held is lost.
  void end_all(const Reason& reason) noexcept {
    auto& c = self();
    for (SubscriberId id = 0; id < out_.size(); ++id) {
      auto& s = out_[id];
      if (!s.open) continue;
      const auto consumer = out_.close(s);
      end_edge(*s.edge, reason);
      c.run_.notify(consumer);  // after the end is on the edge: the consumer must see it
    }
    try {
      c.lost_.add(out_.discard_all());
    } catch (...) {  // an event's destructor threw: keep stopping
    }
  }

  // ---- a restart (engine/DESIGN.md 12) ----------------------------------------------------------

  /// Step 2: what the failed call emitted is discarded, and the buffer with it (GenStage's state
  /// dies with the process); returns how many events the buffer held. Infos behind them are
  /// released.
  std::uint64_t drop_buffer() {
    const auto n = out_.buffer().size();
    out_.buffer().clear();
    out_.buffer().release_passed(release_info());
    return n;
  }
  /// Step 5: the new handler hears of each open subscriber (the dispatcher keeps its state).
  void resubscribe_subscribers() {
    auto& c = self();
    if constexpr (handler::HandlesSubscribe<typename C::handler_type, Out>) {
      for (SubscriberId id = 0; id < told_ && c.phase_ < Phase::stopping && !c.failed_again_;
           ++id) {
        if (!out_[id].open) continue;
        const SubscribeInfo info{false, 0, id, out_[id].consumer, out_[id].options, 0};
        c.invoke([&](auto& ctx) { c.handler_.handle_subscribe(info, ctx); });
      }
    }
  }
  /// Step 6: a producer's new handler is asked for what the old one owed (forward mode; a
  /// draining producer is asked for nothing, as before).
  void restore_demand() {
    if constexpr (is_producer) {
      auto& c = self();
      if constexpr (handler::HandlesDrain<typename C::handler_type, Out>) {
        if (drain_asked_) {  // the new handler ends its own way too
          c.invoke([&](auto& ctx) { c.handler_.handle_drain(ctx); });
          return;
        }
      }
      if (handler_owes_ <= 0 || c.phase_ != Phase::running) return;
      if (mode_ == DemandMode::accumulate)
        out_.hold_demand(std::exchange(handler_owes_, 0));  // replayed on forward
      else
        demand_path(std::exchange(handler_owes_, 0));
    }
  }

  void publish_output_gauges() {
    auto& c = self();
    c.buffered_.set(out_.buffered());
    c.demand_.set(out_.publish_gauges());
    c.accumulating_.set(mode_ == DemandMode::accumulate ? 1 : 0);
  }

 private:
  void sent(std::size_t n, std::uint32_t consumer_cell) {
    self().events_out_.add(n);
    self().run_.notify(consumer_cell);
  }

  /// Events the buffer or the dispatcher cannot keep: counted, passed to the hook, logged
  /// unless the hook says not to.
  void discard(std::span<Out> dropped, std::string_view from = "buffer") {
    auto& c = self();
    if (dropped.empty()) return;
    c.dropped_.add(dropped.size());
    bool log = true;
    if constexpr (handler::HandlesDiscarded<typename C::handler_type, Out>)
      log = c.handler_.handle_discarded(dropped);
    if (log)
      c.run_.log(LogLevel::warning, "stage '" + c.name_ + "' has discarded " +
                                        std::to_string(dropped.size()) + " events from " +
                                        std::string(from));
  }
  auto dropper() {
    return [this](std::span<Out> d) { discard(d); };
  }
  auto release_info() {
    return [this](std::uint64_t token) { self().mail_.ready(token); };
  }
};

}  // namespace sluice::detail
