#pragma once

#include <algorithm>
#include <any>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <sluice/engine/context.hpp>
#include <sluice/engine/errors.hpp>
#include <sluice/engine/options.hpp>
#include <sluice/engine/time.hpp>
#include <sluice/operators/detail/manual_inputs.hpp>

namespace sluice {

/// Options of a rate limit stage (Broadway's rate_limiting, Akka's throttle): a token bucket.
struct RateLimitOptions {
  /// On average this many events pass per `per` (at least 1; no default: say it).
  std::int64_t events = 0;
  /// On the run's clock; positive.
  Duration per = std::chrono::seconds(1);
  /// The bucket: at most this many pass at once, after a quiet spell (at least 1). Default:
  /// `events`.
  std::optional<std::int64_t> burst = std::nullopt;

  std::int64_t effective_burst() const noexcept { return burst.value_or(events); }
};

namespace detail {

/// 128-bit integers for the bucket's products of a count and nanoseconds (GCC and Clang).
__extension__ typedef __int128 Wide;

/// The first invalid option of `o`: its name and what is wrong.
inline std::optional<std::pair<std::string, std::string>> rate_limit_options_problem(
    const RateLimitOptions& o) {
  if (o.events < 1)
    return std::pair{std::string("events"), "must be at least 1, got: " + std::to_string(o.events)};
  if (o.per <= Duration::zero())
    return std::pair{std::string("per"),
                     "must be positive, got: " + std::to_string(o.per.count()) + " ns"};
  if (o.effective_burst() < 1)
    return std::pair{std::string("burst"),
                     "must be at least 1, got: " + std::to_string(o.effective_burst())};
  return std::nullopt;
}

/// The rate limit stage's timer (a timer's message): enough tokens may be in to ask again.
struct RateLimitTick {};
/// The rate limit stage's first timer: its subscriptions are known (ManualInputs::subscribed).
struct RateLimitStart {};

/// A token bucket on a clock: `burst` tokens at most, one more every `per / events`, counted
/// exactly in integers (no drift over a long run). It starts full.
class TokenBucket {
 public:
  TokenBucket(std::int64_t events, Duration per, std::int64_t burst) noexcept
      : events_(events), per_(per.count()), burst_(burst), tokens_(burst) {}

  /// Adds the tokens earned since the last call (the first call only sets the time).
  void refill(TimePoint now) noexcept {
    if (!started_) {
      started_ = true;
      last_ = now;
      return;
    }
    const auto elapsed = now > last_ ? (now - last_).count() : 0;
    last_ = now;
    if (tokens_ >= burst_) return;  // a full bucket earns nothing, not even a part
    // progress_ counts in units of 1 / (events x per) token: each ns earns `events` units, a
    // token costs `per` units.
    const auto total =
        static_cast<detail::Wide>(progress_) + static_cast<detail::Wide>(elapsed) * events_;
    const auto earned = total / per_;
    if (earned >= burst_ - tokens_) {
      tokens_ = burst_;
      progress_ = 0;
    } else {
      tokens_ += static_cast<std::int64_t>(earned);
      progress_ = static_cast<std::int64_t>(total % per_);
    }
  }
  /// How long from the last refill until the bucket holds `target` (at most burst) tokens.
  Duration until(std::int64_t target) const noexcept {
    if (tokens_ >= target) return Duration::zero();
    const auto units = static_cast<detail::Wide>(target - tokens_) * per_ - progress_;
    return Duration(static_cast<std::int64_t>((units + events_ - 1) / events_));
  }
  void take(std::int64_t n) noexcept { tokens_ -= n; }
  std::int64_t tokens() const noexcept { return tokens_; }
  std::int64_t burst() const noexcept { return burst_; }

 private:
  std::int64_t events_;
  std::int64_t per_;  // ns
  std::int64_t burst_;
  std::int64_t tokens_;
  std::int64_t progress_ = 0;  // towards the next token, in [0, per_)
  TimePoint last_{};
  bool started_ = false;
};

}  // namespace detail

/// A producer_consumer that passes its events on unchanged, at most `events` per `per` on
/// average and `burst` at once (a token bucket that starts full, Akka's throttle). It asks
/// upstream only for events it has tokens for (manual demand), so nothing piles up in it and
/// nothing is dropped: a fast source is slowed down by back-pressure.
///
/// How it asks, in order (each time events pass, a tick fires or a subscription changes):
///  1. The bucket earns its tokens since the last time (one every per / events).
///  2. Free tokens are those not promised yet: tokens minus what is asked and not yet received
///     (so what arrives can always pass at once, and never more than burst pass at once).
///  3. If at least `step` are free (step = events per millisecond, between 1 and burst / 2), or
///     the bucket is full, they are asked for, shared between the open subscriptions: each may
///     have at most its max_demand, and burst / (open subscriptions) rounded down, outstanding,
///     so the idle producers together always leave at least that share to the others (a stage
///     whose burst is below its number of inputs fails on its first turn, saying so).
///  4. Otherwise, if a subscription could take more, the stage's one timer is armed for when
///     `step` more are free: a fast limiter wakes about once per millisecond, a slow one when
///     each token is in.
/// The bucket counts events where they enter the stage: events beyond what its subscribers ask
/// wait in its output buffer, so a consumer that stalls and resumes can receive up to twice
/// burst at once (docs/OPERATORS.md).
/// Events pass in the order they arrive. A stage with several instances limits each on its
/// own; Stage::rate_limit has one.
template <class T>
class RateLimiter {
 public:
  /// Its subscriptions are manual: it asks for what its tokens allow (handler::AsksByHand).
  static constexpr DemandControl demand = DemandControl::manual;
  /// option_error for an invalid option.
  explicit RateLimiter(RateLimitOptions options)
      : bucket_(checked(options).events, options.per, options.effective_burst()),
        step_(step_of(options)) {}

  void handle_subscribe(const SubscribeInfo& info, Context<T>& ctx) {
    inputs_.subscribed(info, ctx, detail::RateLimitStart{});
  }
  void handle_events(std::span<T> in, SubscriptionId from, Context<T>& ctx) {
    passed(in.size(), from, ctx.now());
    ctx.emit_all(std::ranges::subrange(std::make_move_iterator(in.begin()),
                                       std::make_move_iterator(in.end())));
    ask_more(ctx);
  }
  void handle_events(std::span<const T> in, SubscriptionId from,
                     Context<T>& ctx) requires std::copy_constructible<T> {
    passed(in.size(), from, ctx.now());
    ctx.emit_all(in);
    ask_more(ctx);
  }
  void handle_info(std::any& message, Context<T>& ctx) {
    if (std::any_cast<detail::RateLimitTick>(&message) != nullptr)
      armed_ = false;
    else if (std::any_cast<detail::RateLimitStart>(&message) == nullptr)
      return;
    else if (static_cast<std::int64_t>(inputs_.open()) > bucket_.burst())
      throw stage_error(std::string(ctx.name()),
                        "rate_limit: burst " + std::to_string(bucket_.burst()) + " is below its " +
                            std::to_string(inputs_.open()) +
                            " inputs: each input needs a token to be asked for (raise burst, or "
                            "merge the inputs in front of it)");
    ask_more(ctx);
  }
  /// A closed subscription's outstanding events will not come: their tokens are free again.
  void handle_cancel(const CancelInfo& info, Context<T>& ctx) {
    if (inputs_.closed(info)) ask_more(ctx);
  }

 private:
  static const RateLimitOptions& checked(const RateLimitOptions& o) {
    if (auto p = detail::rate_limit_options_problem(o))
      throw option_error("RateLimitOptions::" + p->first + " " + p->second);
    return o;
  }
  /// Step 3's threshold: the tokens of one millisecond, between 1 and half the bucket (so a
  /// tick that comes late loses no tokens to a full bucket).
  static std::int64_t step_of(const RateLimitOptions& o) noexcept {
    const auto per_ms =
        static_cast<detail::Wide>(o.events) * 1'000'000 / static_cast<detail::Wide>(o.per.count());
    const auto half = std::max<std::int64_t>(1, o.effective_burst() / 2);
    return static_cast<std::int64_t>(std::clamp<detail::Wide>(per_ms, 1, half));
  }

  /// `n` events of subscription `from` arrive at `now`: they take their tokens (earned up to
  /// now first: a full bucket earns nothing until they are taken).
  void passed(std::size_t n, SubscriptionId from, TimePoint now) noexcept {
    const auto k = static_cast<std::int64_t>(n);
    bucket_.refill(now);
    bucket_.take(k);
    inputs_.received(from, k);
  }

  void ask_more(Context<T>& ctx) {
    bucket_.refill(ctx.now());  // step 1
    const auto open = static_cast<std::int64_t>(inputs_.open());
    if (open == 0) return;
    const auto& subs = inputs_.subscriptions();
    const auto share = std::max<std::int64_t>(bucket_.burst() / open, 1);
    auto room = [&](const detail::ManualInputs::Subscription& s) {
      return s.open ? std::min(s.max_demand, share) - s.outstanding : 0;
    };
    auto free = bucket_.tokens() - inputs_.outstanding();  // step 2
    if (free >= step_ || bucket_.tokens() >= bucket_.burst()) {
      // Step 3: round robin from where the last round started, an even part of what is left
      // to each subscription in turn.
      auto left = open;
      for (std::size_t k = 0; k < subs.size() && free > 0; ++k) {
        const auto id = (next_ + k) % subs.size();
        if (!subs[id].open) continue;
        const auto part = (free + left - 1) / left;
        --left;
        const auto n = std::min(part, room(subs[id]));
        if (n <= 0) continue;
        inputs_.ask(ctx, id, n);
        free -= n;
      }
      next_ = (next_ + 1) % subs.size();
    }
    // Step 4.
    if (armed_) return;
    bool wants = false;
    for (auto& s : subs)
      wants = wants || room(s) > 0;
    if (!wants) return;  // an arrival calls us again
    const auto target = std::min(bucket_.burst(), inputs_.outstanding() + step_);
    if (bucket_.tokens() >= target) return;  // full: asked above as far as rooms allow
    ctx.send_after(bucket_.until(target), detail::RateLimitTick{});
    armed_ = true;
  }

  detail::TokenBucket bucket_;
  std::int64_t step_;
  detail::ManualInputs inputs_;
  std::size_t next_ = 0;  // where step 3's round robin starts
  bool armed_ = false;    // the stage's timer is pending
};

}  // namespace sluice
