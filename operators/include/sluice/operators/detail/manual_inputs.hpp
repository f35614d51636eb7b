#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <sluice/engine/context.hpp>
#include <sluice/engine/time.hpp>

namespace sluice::detail {

/// The upstream subscriptions of an operator that asks by hand (handler::AsksByHand:
/// RateLimiter, Take): what each may have outstanding, and what it has. The operator calls
/// subscribed / received / closed from its callbacks and asks through ask().
class ManualInputs {
 public:
  struct Subscription {
    std::int64_t max_demand = 0;
    std::int64_t outstanding = 0;  // asked, not yet received
    bool open = false;
  };

  /// handle_subscribe of an upstream subscription. The first one starts a zero timer that
  /// delivers `start` to the operator's handle_info on its next turn: its first asks wait until
  /// every subscription is known (handle_subscribe is called for each in turn, and an ask from
  /// the first would take everything before the others are known).
  template <class Out, class Start>
  void subscribed(const SubscribeInfo& info, Context<Out>& ctx, Start start) {
    if (!info.upstream) return;
    if (subs_.size() <= info.subscription) subs_.resize(info.subscription + 1);
    subs_[info.subscription] = {info.options.max_demand, info.outstanding, true};
    outstanding_ += info.outstanding;  // after a restart: what the failed handler asked
    if (!started_) ctx.send_after(Duration::zero(), start);
    started_ = true;
  }
  /// `n` events arrived on `from`.
  void received(SubscriptionId from, std::int64_t n) noexcept {
    outstanding_ -= n;
    if (from < subs_.size()) subs_[from].outstanding -= n;
  }
  /// handle_cancel: an upstream subscription closed. Returns true if it was open; what it had
  /// outstanding will not come.
  bool closed(const CancelInfo& info) noexcept {
    if (!info.upstream || info.subscription >= subs_.size()) return false;
    auto& s = subs_[info.subscription];
    if (!s.open) return false;
    s.open = false;
    outstanding_ -= s.outstanding;
    s.outstanding = 0;
    return true;
  }
  /// Asks `n` (> 0) more on subscription `id`, counted.
  template <class Out>
  void ask(Context<Out>& ctx, std::size_t id, std::int64_t n) {
    subs_[id].outstanding += n;
    outstanding_ += n;
    ctx.ask(static_cast<SubscriptionId>(id), n);
  }

  const std::vector<Subscription>& subscriptions() const noexcept { return subs_; }
  std::size_t open() const noexcept {
    std::size_t n = 0;
    for (auto& s : subs_)
      n += s.open ? 1 : 0;
    return n;
  }
  /// Outstanding over all subscriptions.
  std::int64_t outstanding() const noexcept { return outstanding_; }

 private:
  std::vector<Subscription> subs_;
  std::int64_t outstanding_ = 0;
  bool started_ = false;
};

}  // namespace sluice::detail
