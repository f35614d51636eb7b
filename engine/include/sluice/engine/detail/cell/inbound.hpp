#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <sluice/engine/context.hpp>
#include <sluice/engine/detail/assert.hpp>
#include <sluice/engine/detail/consumer_demand.hpp>
#include <sluice/engine/detail/edge.hpp>
#include <sluice/engine/options.hpp>

namespace sluice::detail {

/// GenStage's cancel modes (GENSTAGE.md 1.10): whether a consumer stops when one of its
/// subscriptions closes with `reason`. `own_cancel`: the consumer cancelled it itself (a
/// permanent subscription then stops it whatever the reason). A refusal never stops it.
inline bool stops_on_close(CancelMode mode, const Reason& reason, bool own_cancel) noexcept {
  if (reason.kind == Reason::Kind::refused) return false;
  switch (mode) {
    case CancelMode::permanent:
      return own_cancel || !reason.is_normal();
    case CancelMode::transient:
      return reason.is_error();
    case CancelMode::temporary:
      return false;
  }
  return false;
}

/// The consumer side of a cell: its subscriptions (one edge each), the order it reads them in,
/// their demand (GenStage's consumer algorithm for automatic ones, the stage's own asks for
/// manual ones) and the cancels its callbacks requested. Owner thread only. It decides; the
/// cell calls the handler and notifies the producers.
template <class In>
class Inbound {
 public:
  struct Subscription {
    Edge<In>* edge = nullptr;
    std::string producer;
    SubscriptionOptions options;
    ConsumerDemand demand{1, 0};  // automatic subscriptions
    std::int64_t asked = 0;       // manual subscriptions: asked and not yet received
    bool open = true;
    bool manual() const noexcept { return options.demand == DemandControl::manual; }
  };

  void add(Edge<In>* edge, std::string producer, const SubscriptionOptions& o) {
    Subscription s;
    s.edge = edge;
    s.producer = std::move(producer);
    s.options = o;
    s.demand = ConsumerDemand(o.max_demand, o.effective_min_demand());
    subs_.push_back(std::move(s));
    ++open_;
  }

  std::size_t size() const noexcept { return subs_.size(); }
  std::size_t open() const noexcept { return open_; }
  Subscription& operator[](SubscriptionId id) noexcept { return subs_[id]; }

  /// Closes `s` (its producer ended it, or it was cancelled).
  void close(Subscription& s) noexcept {
    s.open = false;
    --open_;
  }

  struct Ready {
    SubscriptionId id;
    const EdgeMessage* message;
  };
  /// The next subscription with a message to handle, round robin from where the last call
  /// stopped; nullopt once a whole round found none.
  std::optional<Ready> next_ready() noexcept {
    for (std::size_t tried = 0; tried < subs_.size(); ++tried) {
      const auto id = static_cast<SubscriptionId>(next_);
      next_ = next_ + 1 == subs_.size() ? 0 : next_ + 1;
      if (!subs_[id].open) continue;
      if (const EdgeMessage* m = subs_[id].edge->peek()) return Ready{id, m};
    }
    return std::nullopt;
  }

  /// A manual ask of `n` on `id` (GenStage ask/3): checked, then counted. Returns the amount to
  /// ask on the edge (0: nothing to do). Throws stage_error for an ask the stage may not make.
  std::int64_t manual_ask(const std::string& stage, SubscriptionId id, std::int64_t n) {
    if (id >= subs_.size())
      throw stage_error(stage, "ask on unknown subscription " + std::to_string(id));
    auto& s = subs_[id];
    if (!s.manual())
      throw stage_error(stage, "ask on the automatic subscription to '" + s.producer +
                                   "': only manual subscriptions ask by hand");
    if (n <= 0 || !s.open) return 0;  // GenStage: ask(from, 0) is a no-op
    if (s.asked + n > s.demand.max_demand())
      throw stage_error(stage, "manual ask of " + std::to_string(n) + " on subscription to '" +
                                   s.producer + "' would exceed max_demand " +
                                   std::to_string(s.demand.max_demand()) + " (outstanding " +
                                   std::to_string(s.asked) + ")");
    s.asked += n;
    return n;
  }

  /// Cancels requested by callbacks, carried out between messages (settle).
  void request_cancel(SubscriptionId id, Reason reason) {
    if (id >= subs_.size() || !subs_[id].open) return;  // GenStage ignores unknown tags
    cancels_.emplace_back(id, std::move(reason));
  }
  bool cancel_requested(SubscriptionId id) const noexcept {
    for (auto& c : cancels_)
      if (c.first == id) return true;
    return false;
  }
  bool has_cancels() const noexcept { return !cancels_.empty(); }
  /// The oldest requested cancel; has_cancels() must be true.
  std::pair<SubscriptionId, Reason> next_cancel() {
    SLUICE_ASSERT(!cancels_.empty(), "next_cancel with no cancel requested");
    auto c = std::move(cancels_.front());
    cancels_.pop_front();
    return c;
  }

  /// Where each open subscription's producer has written to (an info waits behind it).
  std::vector<std::uint64_t> written_positions() const {
    std::vector<std::uint64_t> at(subs_.size(), 0);
    for (std::size_t i = 0; i < subs_.size(); ++i)
      if (subs_[i].open) at[i] = subs_[i].edge->written_position();
    return at;
  }
  /// True once every open subscription has read up to `at`.
  bool has_read(const std::vector<std::uint64_t>& at) const {
    for (std::size_t i = 0; i < subs_.size(); ++i)
      if (subs_[i].open && subs_[i].edge->read_position() < at[i]) return false;
    return true;
  }

 private:
  std::vector<Subscription> subs_;
  std::size_t open_ = 0;
  std::size_t next_ = 0;  // round robin
  std::deque<std::pair<SubscriptionId, Reason>> cancels_;
};

}  // namespace sluice::detail
