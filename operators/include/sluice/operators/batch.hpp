#pragma once

#include <algorithm>
#include <any>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <sluice/engine/context.hpp>
#include <sluice/engine/errors.hpp>
#include <sluice/engine/time.hpp>

namespace sluice {

/// Why a batch was emitted (Broadway's BatchInfo.trigger, plus max_keys).
enum class BatchTrigger : std::uint8_t {
  size,      ///< it reached BatchOptions::size
  timeout,   ///< BatchOptions::timeout after its first event
  flush,     ///< the input ended (or the run drained): every open batch is flushed
  max_keys,  ///< a batch of another key had to open while max_keys were open: the oldest goes
};

/// A batch of one key (Stage::batch with a key function): its events in arrival order.
template <class K, class T>
struct Batch {
  K key;
  std::vector<T> events;
  BatchTrigger trigger = BatchTrigger::size;
};

/// Options of a batch stage (Broadway's batch_size and batch_timeout).
struct BatchOptions {
  /// A batch is emitted once it holds this many events (at least 1).
  std::size_t size = 100;
  /// ... or this long after its first event, whichever comes first; later events do not extend
  /// it (Broadway). On the run's clock; positive.
  Duration timeout = std::chrono::seconds(1);
  /// Open batches (keys) at most: one more flushes the oldest first (trigger max_keys). With
  /// `size`, it bounds the events the stage holds: size x max_keys.
  std::size_t max_keys = 1024;
};

namespace detail {

/// The first invalid option of `o`: its name and what is wrong.
inline std::optional<std::pair<std::string, std::string>> batch_options_problem(
    const BatchOptions& o) {
  if (o.size < 1) return std::pair{std::string("size"), std::string("must be at least 1, got: 0")};
  if (o.timeout <= Duration::zero())
    return std::pair{std::string("timeout"),
                     "must be positive, got: " + std::to_string(o.timeout.count()) + " ns"};
  if (o.max_keys < 1)
    return std::pair{std::string("max_keys"), std::string("must be at least 1, got: 0")};
  return std::nullopt;
}

/// The key of an unkeyed batch stage: every event has the same.
struct NoKey {
  std::monostate operator()(const auto&) const noexcept { return {}; }
};

/// The batch stage's timer (a timer's message): the oldest open batch may be due.
struct BatchTimeout {};

}  // namespace detail

/// A producer_consumer that groups its events into batches (Broadway's batcher): one open batch
/// per key (`KeyOf(const T&) -> K`, hashable), emitted when it holds `size` events, `timeout`
/// after its first event, when `max_keys` batches are open and another key comes (the oldest),
/// or when the input ends (all open batches, oldest first). Events keep their arrival order
/// within a batch. Output: `std::vector<T>` without a key (detail::NoKey), Batch<K, T> with.
///
/// Demand is GenStage's for a producer_consumer: it takes input only while its subscribers ask
/// for batches, so it holds at most size x max_keys events, plus the batches waiting for demand.
/// If the stage stops otherwise than by its input's end (a cancel, a failure), the events of
/// its open batches are counted as lost.
template <class T, class KeyOf = detail::NoKey>
class Batcher {
 public:
  using key_type = std::remove_cvref_t<std::invoke_result_t<const KeyOf&, const T&>>;
  static constexpr bool keyed = !std::is_same_v<KeyOf, detail::NoKey>;
  using output_type = std::conditional_t<keyed, Batch<key_type, T>, std::vector<T>>;

  /// option_error for an invalid option.
  explicit Batcher(BatchOptions options, KeyOf key_of = {})
      : options_(options), key_of_(std::move(key_of)) {
    if (auto p = detail::batch_options_problem(options_))
      throw option_error("BatchOptions::" + p->first + " " + p->second);
  }

  void handle_subscribe(const SubscribeInfo& info, Context<output_type>&) {
    if (info.upstream) ++inputs_;
  }
  void handle_events(std::span<T> in, Context<output_type>& ctx) { take(in, ctx); }
  void handle_events(std::span<const T> in,
                     Context<output_type>& ctx) requires std::copy_constructible<T> {
    take(in, ctx);
  }
  /// The stage's one timer, armed for the oldest open batch's deadline: every open batch due
  /// is emitted, oldest first, and the timer armed again for the next one. (All batches have
  /// the same timeout, so the order they opened in is the order they fall due in: one timer
  /// serves them all, and a batch emitted by size costs no timer.)
  void handle_info(std::any& message, Context<output_type>& ctx) {
    if (std::any_cast<detail::BatchTimeout>(&message) == nullptr) return;
    armed_ = false;
    const auto now = ctx.now();
    while (oldest_ < order_.size()) {
      auto it = open_.find(order_[oldest_].first);
      if (it == open_.end() || it->second.generation != order_[oldest_].second) {
        ++oldest_;  // emitted already
        continue;
      }
      if (it->second.deadline > now) break;
      ++oldest_;
      emit(it, BatchTrigger::timeout, ctx);
    }
    arm(ctx);
  }
  /// The last input ended (normally, or by a cancel mode that keeps the stage): every open
  /// batch is flushed, oldest first, before the stage ends downstream.
  void handle_cancel(const CancelInfo& info, Context<output_type>& ctx) {
    if (!info.upstream || inputs_ == 0 || --inputs_ > 0) return;
    auto order = std::exchange(order_, {});
    for (auto k = std::exchange(oldest_, 0); k < order.size(); ++k) {
      auto it = open_.find(order[k].first);
      if (it != open_.end() && it->second.generation == order[k].second)
        emit(it, BatchTrigger::flush, ctx);
    }
  }
  /// The stage stops with batches open (a cancel, a failure): their events are lost.
  std::uint64_t discard_held() noexcept {
    std::uint64_t n = 0;
    for (auto& [key, b] : open_)
      n += b.events.size();
    open_.clear();
    order_.clear();
    oldest_ = 0;
    return n;
  }

  /// Open batches now (a gauge for tests and metrics).
  std::size_t open_batches() const noexcept { return open_.size(); }

 private:
  struct Open {
    std::vector<T> events;
    TimePoint deadline;  // when it times out
    std::uint64_t generation = 0;
  };
  using Map = std::unordered_map<key_type, Open>;

  /// The keys of a call's events, before any is added: a key function that throws leaves the
  /// open batches as they were, so a failure loses the call's events (counted as its inputs)
  /// and discard_held() the earlier ones, each once.
  template <class Span>
  void take_keys(Span in) {
    if constexpr (keyed) {
      keys_.clear();
      for (auto& e : in)
        keys_.push_back(key_of_(std::as_const(e)));
    }
  }

  /// A call's events, moved (a span of T) or copied (a broadcast's const T).
  template <class E>
  void take(std::span<E> in, Context<output_type>& ctx) {
    if constexpr (keyed) {
      take_keys(in);
      for (std::size_t k = 0; k < in.size(); ++k) {
        auto it = open_.find(keys_[k]);
        if (it == open_.end()) it = open(std::move(keys_[k]), ctx);
        it->second.events.push_back(forward(in[k]));
        if (it->second.events.size() >= options_.size) emit(it, BatchTrigger::size, ctx);
      }
    } else {  // one batch: appended a run at a time
      for (std::size_t k = 0; k < in.size();) {
        auto it = open_.find(key_type{});
        if (it == open_.end()) it = open(key_type{}, ctx);
        auto& events = it->second.events;
        const auto n = std::min(options_.size - events.size(), in.size() - k);
        const auto from = in.begin() + static_cast<std::ptrdiff_t>(k);
        if constexpr (std::is_const_v<E>)
          events.insert(events.end(), from, from + static_cast<std::ptrdiff_t>(n));
        else
          events.insert(events.end(), std::make_move_iterator(from),
                        std::make_move_iterator(from + static_cast<std::ptrdiff_t>(n)));
        k += n;
        if (events.size() >= options_.size) emit(it, BatchTrigger::size, ctx);
      }
    }
  }
  static T&& forward(T& e) noexcept { return std::move(e); }
  static const T& forward(const T& e) noexcept { return e; }

  typename Map::iterator open(key_type key, Context<output_type>& ctx) {
    if (open_.size() >= options_.max_keys) evict_oldest(ctx);
    const auto generation = ++last_generation_;
    Open b;
    b.events.reserve(std::min<std::size_t>(options_.size, 1024));
    b.generation = generation;
    const auto now = ctx.now();
    b.deadline = options_.timeout < TimePoint::max() - now ? now + options_.timeout
                                                           : TimePoint::max();  // no wrap
    order_.emplace_back(key, generation);
    auto it = open_.emplace(std::move(key), std::move(b)).first;
    arm(ctx);
    return it;
  }

  /// The timer for the oldest open batch, unless one is armed already (it fires no later).
  void arm(Context<output_type>& ctx) {
    if (armed_) return;
    while (oldest_ < order_.size()) {
      auto it = open_.find(order_[oldest_].first);
      if (it != open_.end() && it->second.generation == order_[oldest_].second) {
        const auto now = ctx.now();
        ctx.send_after(it->second.deadline > now ? it->second.deadline - now : Duration::zero(),
                       detail::BatchTimeout{});
        armed_ = true;
        return;
      }
      ++oldest_;
    }
  }

  void evict_oldest(Context<output_type>& ctx) {
    while (oldest_ < order_.size()) {
      const auto& [key, generation] = order_[oldest_++];
      auto it = open_.find(key);
      if (it != open_.end() && it->second.generation == generation) {  // (emit may rebuild
                                                                       // order_: break after)
        emit(it, BatchTrigger::max_keys, ctx);
        break;
      }
    }
  }

  void emit(typename Map::iterator it, BatchTrigger trigger, Context<output_type>& ctx) {
    auto events = std::move(it->second.events);
    if constexpr (keyed)
      ctx.emit(output_type{it->first, std::move(events), trigger});
    else
      ctx.emit(std::move(events));
    open_.erase(it);
    compact_order();
  }

  /// order_ lists the batches in the order they opened, one live entry per open batch and the
  /// entries of batches emitted since: rebuilt once those outnumber the open batches (amortised
  /// O(1) per batch, memory proportional to the open batches).
  void compact_order() {
    if (order_.size() - open_.size() <= open_.size() + 64) return;
    std::vector<std::pair<key_type, std::uint64_t>> live;
    live.reserve(open_.size());
    for (auto k = oldest_; k < order_.size(); ++k) {
      auto it = open_.find(order_[k].first);
      if (it != open_.end() && it->second.generation == order_[k].second)
        live.push_back(std::move(order_[k]));
    }
    order_ = std::move(live);
    oldest_ = 0;
  }

  BatchOptions options_;
  KeyOf key_of_;
  Map open_;
  std::vector<std::pair<key_type, std::uint64_t>> order_;  // (key, generation) by opening
  std::size_t oldest_ = 0;                                 // order_ before it: skipped
  std::uint64_t last_generation_ = 0;
  bool armed_ = false;          // the stage's timer is pending
  std::size_t inputs_ = 0;      // open upstream subscriptions
  std::vector<key_type> keys_;  // the call's keys (take_keys)
};

}  // namespace sluice
