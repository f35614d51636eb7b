#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include <sluice/engine/context.hpp>
#include <sluice/engine/detail/cell/cell_base.hpp>
#include <sluice/engine/detail/cell/inbound.hpp>
#include <sluice/engine/detail/edge.hpp>
#include <sluice/engine/handler.hpp>
#include <sluice/engine/options.hpp>

namespace sluice::detail {

/// The consumer side of a cell (of a consumer or a producer_consumer): reads its subscriptions,
/// cuts each message into chunks for handle_events (GenStage's consumer algorithm,
/// engine/DESIGN.md 3), asks again, and ends or cancels subscriptions under their cancel mode
/// (engine/DESIGN.md 6). A mixin over the cell `C` (CRTP): the cell calls the handler and
/// settles; the Inbound part keeps the state.
template <class C, class In>
class ConsumerSide : public InPort<In> {
 public:
  void add_subscription(Edge<In>* edge, std::string producer,
                        const SubscriptionOptions& options) override {
    in_.add(edge, std::move(producer), options);
  }

 protected:
  Inbound<In> in_;
  SubscriptionId told_ = 0;  // subscriptions the handler has heard of (start_subscriptions)
  /// The chunk being handled, from its automatic subscription's message (release_in_hand).
  struct InHand {
    SubscriptionId id = 0;
    const EdgeMessage* message = nullptr;
    std::uint32_t from = 0, upto = 0;
    bool set = false;
  } in_hand_;

  C& self() noexcept { return static_cast<C&>(*this); }

  /// On start: handle_subscribe for each subscription, and the first ask of the automatic ones
  /// (GenStage asks max_demand at once on subscribe).
  void start_subscriptions() {
    auto& c = self();
    for (SubscriptionId id = 0; id < in_.size(); ++id) {
      auto& s = in_[id];
      told_ = id + 1;  // a restart in this call tells the new handler of it, not of later ones
      if constexpr (handler::HandlesSubscribe<typename C::handler_type, typename C::output_type>) {
        const SubscribeInfo info{true, id, 0, s.producer, s.options, 0};
        c.invoke([&](auto& ctx) { c.handler_.handle_subscribe(info, ctx); });
      }
      if (!s.manual()) ask_upstream(s, s.demand.subscribe());
    }
  }

  /// A restart's step 5 (engine/DESIGN.md 12): the new handler hears of each open subscription;
  /// nothing is asked, since what was asked is still outstanding.
  void resubscribe_subscriptions() {
    auto& c = self();
    if constexpr (handler::HandlesSubscribe<typename C::handler_type, typename C::output_type>) {
      for (SubscriptionId id = 0; id < told_ && c.phase_ < Phase::stopping && !c.failed_again_;
           ++id) {
        auto& s = in_[id];
        if (!s.open) continue;
        const SubscribeInfo info{true, id, 0, s.producer, s.options, s.manual() ? s.asked : 0};
        c.invoke([&](auto& ctx) { c.handler_.handle_subscribe(info, ctx); });
      }
    }
  }
  bool has_open_input() const noexcept { return in_.open() > 0; }

  void ask_upstream(typename Inbound<In>::Subscription& s, std::int64_t n) {
    s.edge->ask(n);
    self().run_.notify(s.edge->producer_cell());
  }

  /// Handles up to `budget` messages, round robin over the subscriptions. Returns true if it
  /// stopped because the budget ran out (the cell has more to do).
  bool poll_inputs(std::size_t budget) {
    auto& c = self();
    while (c.phase_ < Phase::stopping) {
      if (!c.may_take_input()) return false;  // GenStage 1.8: wait for downstream demand
      if (budget == 0) return true;
      const auto ready = in_.next_ready();
      if (!ready) return false;
      --budget;
      if (ready->message->kind == EdgeMessage::Kind::end)
        producer_ended(ready->id);
      else if (ready->message->kind == EdgeMessage::Kind::shared)
        handle_message(ready->id, *ready->message,
                       in_[ready->id].edge->shared_events_of(*ready->message));
      else
        handle_message(ready->id, *ready->message, in_[ready->id].edge->events_of(*ready->message));
      c.settle();
    }
    return false;
  }

  /// One inbound message: whole to a manual subscription; in GenStage's chunks to an automatic
  /// one, each chunk's ask sent after handle_events returns. `E` is In (the edge's own events)
  /// or const In (a shared batch).
  template <class E>
  void handle_message(SubscriptionId id, const EdgeMessage& m, std::span<E> events) {
    auto& c = self();
    auto& s = in_[id];
    const auto total = m.count;
    c.in_message_ = true;
    if (s.manual()) {
      if (static_cast<std::int64_t>(total) > s.asked) log_excess(s, total - s.asked);
      s.asked = std::max<std::int64_t>(s.asked - static_cast<std::int64_t>(total), 0);
      call_handle_events(events, id);
      s.edge->release_events(m, 0, total);
      s.edge->pop();
      c.in_message_ = false;
      return;
    }
    s.demand.begin(total);
    std::uint32_t from = 0;
    while (s.demand.more()) {
      const auto chunk = s.demand.next();
      const auto n = static_cast<std::uint32_t>(chunk.size);
      if (chunk.excess > 0) log_excess(s, chunk.excess);
      in_hand_ = {id, &m, from, from + n, true};
      call_handle_events(events.subspan(from, n), id);
      in_hand_.set = false;
      if (c.phase_ >= Phase::stopping) {  // stopped inside the callback: the edge was released
        c.in_message_ = false;
        return;
      }
      s.edge->release_events(m, from, from + n);
      from += n;
      if (chunk.ask > 0) ask_upstream(s, chunk.ask);
      if (c.stop_request_ || in_.cancel_requested(id)) break;  // the rest is not delivered
    }
    if (from < total) s.edge->release_events(m, from, total, false);
    s.edge->pop();
    c.in_message_ = false;
  }

  template <class E>
  void call_handle_events(std::span<E> events, SubscriptionId from) {
    auto& c = self();
    using H = typename C::handler_type;
    using Out = typename C::output_type;
    c.events_in_.add(events.size());
    c.inputs_in_call_ = events.size();  // a restart counts them as lost (engine/DESIGN.md 12)
    struct Reset {
      std::uint64_t& n;
      ~Reset() { n = 0; }
    } reset{c.inputs_in_call_};
    if constexpr (std::is_const_v<E> && !handler::ConsumesConst<H, In, Out>) {
      // Refused when the subscription was declared (Engine::subscribe); kept as a guard.
      throw stage_error(c.name_,
                        "received a shared batch but handle_events does not take "
                        "std::span<const T>");
    } else if constexpr (handler::HandlesEventsFrom<H, E, Out>) {
      c.invoke([&](auto& ctx) { c.handler_.handle_events(events, from, ctx); });
    } else {
      c.invoke([&](auto& ctx) { c.handler_.handle_events(events, ctx); });
    }
  }

  void log_excess(const typename Inbound<In>::Subscription& s, std::int64_t excess) {
    self().run_.log(LogLevel::error, "stage '" + self().name_ + "' has received " +
                                         std::to_string(excess) + " events in excess from: '" +
                                         s.producer + "'");
  }

  /// The producer ended the subscription (its end message, behind its last events).
  void producer_ended(SubscriptionId id) {
    auto& s = in_[id];
    const Reason reason = s.edge->end_reason();
    s.edge->pop();
    in_.close(s);
    subscription_closed(id, CancelInfo::Origin::producer_ended, reason, false);
  }

  /// Settle step 3 (engine/DESIGN.md 5): the oldest requested cancel, if any, carried out.
  bool settle_cancel() {
    if (!in_.has_cancels()) return false;
    auto [id, reason] = in_.next_cancel();
    do_cancel(id, reason);
    return true;
  }

  /// Run::detach: every subscription cancelled (carried out by settle step 3).
  void cancel_inputs(const Reason& reason) {
    for (SubscriptionId id = 0; id < in_.size(); ++id)
      self().cancel(id, reason);
  }

  /// A cancel the stage requested (settle carries it out between messages), or Run::detach's
  /// (engine/DESIGN.md 6, cancel from a consumer's side).
  void do_cancel(SubscriptionId id, const Reason& reason) {
    auto& s = in_[id];
    if (!s.open) return;
    in_.close(s);
    s.edge->cancel(reason);
    self().run_.notify(s.edge->producer_cell());
    s.edge->discard_unread();  // counted by the edge: sent - received
    subscription_closed(id, CancelInfo::Origin::cancelled, reason, true);
  }

  /// handle_cancel, then the cancel mode (GENSTAGE.md 1.10). A producer's normal end closes
  /// only that subscription: the stage finishes when all its inputs have ended (unless its
  /// handler finishes itself: handler::FinishesItself).
  void subscription_closed(SubscriptionId id, CancelInfo::Origin origin, const Reason& reason,
                           bool own_cancel) {
    auto& c = self();
    if constexpr (handler::HandlesCancel<typename C::handler_type, typename C::output_type>) {
      const CancelInfo info{origin, reason, id, 0, true};
      c.invoke([&](auto& ctx) { c.handler_.handle_cancel(info, ctx); });
      if (c.phase_ >= Phase::stopping) return;
    }
    if (stops_on_close(in_[id].options.cancel, reason, own_cancel)) {
      c.cascading_ = true;  // GenStage: "consumer ... is stopping after receiving cancel"
      c.stop(reason);
    } else if (in_.open() == 0 && (!handler::FinishesItself<typename C::handler_type> ||
                                   reason.kind == Reason::Kind::refused)) {
      if constexpr (C::is_producer_consumer)
        c.finish();  // end downstream after everything emitted so far is dispatched
      else           // a refusal stays visible as the stop reason (Run::attach's caller reads it)
        c.stop(reason.kind == Reason::Kind::refused ? reason : Reason::normal());
    } else {
      return;
    }
    c.settle();
  }

  /// A fused group failed after its head had taken the chunk in hand (a later member or the
  /// host threw): the chunk counts as received, as the head's edge would have counted it had it
  /// been a cell of its own (engine/DESIGN.md 10, step 4). Before cancel_all.
  void release_in_hand() noexcept {
    if (!in_hand_.set) return;
    in_hand_.set = false;
    in_[in_hand_.id].edge->release_events(*in_hand_.message, in_hand_.from, in_hand_.upto);
  }

  /// Stopping: every open subscription is cancelled with the stop's reason.
  void cancel_all(const Reason& reason) noexcept {
    for (SubscriptionId id = 0; id < in_.size(); ++id) {
      auto& s = in_[id];
      if (!s.open) continue;
      in_.close(s);
      try {
        s.edge->cancel(reason);
      } catch (...) {  // out of memory copying the reason: the producer still sees the cancel
      }
      self().run_.notify(s.edge->producer_cell());
      s.edge->discard_unread();  // counted by the edge: sent - received
    }
  }
};

}  // namespace sluice::detail
