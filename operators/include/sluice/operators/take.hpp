#pragma once

#include <algorithm>
#include <any>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <ranges>
#include <span>
#include <string>
#include <vector>

#include <sluice/engine/context.hpp>
#include <sluice/engine/errors.hpp>
#include <sluice/engine/options.hpp>
#include <sluice/engine/time.hpp>
#include <sluice/operators/detail/manual_inputs.hpp>

namespace sluice {

namespace detail {
/// The take stage's first timer: its subscriptions are known (ManualInputs::subscribed).
struct TakeStart {};
}  // namespace detail

/// A producer_consumer that passes on the first `n` events it receives, then ends: downstream
/// once they are dispatched, and upstream by cancelling its subscriptions (a source with no
/// other subscriber stops: Akka's take, Elixir's Stream.take).
///
/// It asks by hand (manual demand), in order:
///  1. On its first turn (a zero timer, once every subscription is known), and after each
///     chunk it receives, each open subscription is asked for up to min(its max_demand, events
///     still wanted) outstanding. With one input it never asks for more than it passes.
///  2. A chunk passes on up to the events still wanted; with several inputs, what arrives
///     beyond that (asked for before the n-th event came) is consumed and not passed on.
///  3. Once `n` have passed, it ends (Context::finish): take(0) ends on its first turn.
template <class T>
class Take {
 public:
  static constexpr DemandControl demand = DemandControl::manual;
  /// option_error for a negative n.
  explicit Take(std::int64_t n) : left_(n) {
    if (n < 0) throw option_error("take: n must be at least 0, got: " + std::to_string(n));
  }

  void handle_subscribe(const SubscribeInfo& info, Context<T>& ctx) {
    inputs_.subscribed(info, ctx, detail::TakeStart{});
  }
  void handle_events(std::span<T> in, SubscriptionId from, Context<T>& ctx) {
    const auto k = received(in.size(), from);
    ctx.emit_all(std::ranges::subrange(std::make_move_iterator(in.begin()),
                                       std::make_move_iterator(in.begin() + k)));
    next(ctx);
  }
  void handle_events(std::span<const T> in, SubscriptionId from,
                     Context<T>& ctx) requires std::copy_constructible<T> {
    const auto k = received(in.size(), from);
    ctx.emit_all(in.first(static_cast<std::size_t>(k)));
    next(ctx);
  }
  void handle_info(std::any& message, Context<T>& ctx) {
    if (std::any_cast<detail::TakeStart>(&message) != nullptr) next(ctx);
  }
  void handle_cancel(const CancelInfo& info, Context<T>&) { inputs_.closed(info); }

 private:
  /// Step 2: how many of `n` events from `from` pass.
  std::ptrdiff_t received(std::size_t n, SubscriptionId from) noexcept {
    const auto got = static_cast<std::int64_t>(n);
    inputs_.received(from, got);
    const auto k = std::min(got, left_);
    left_ -= k;
    return static_cast<std::ptrdiff_t>(k);
  }

  /// Steps 1 and 3.
  void next(Context<T>& ctx) {
    if (left_ == 0) {
      ctx.finish();
      return;
    }
    const auto& subs = inputs_.subscriptions();
    for (std::size_t id = 0; id < subs.size(); ++id) {
      if (!subs[id].open) continue;
      const auto n = std::min(subs[id].max_demand, left_) - subs[id].outstanding;
      if (n > 0) inputs_.ask(ctx, id, n);
    }
  }

  std::int64_t left_;  // events still wanted
  detail::ManualInputs inputs_;
};

}  // namespace sluice
