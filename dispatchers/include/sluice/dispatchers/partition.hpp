#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <sluice/dispatchers/detail/partition_index.hpp>
#include <sluice/dispatchers/detail/scatter.hpp>
#include <sluice/dispatchers/partitions.hpp>
#include <sluice/engine/buffer.hpp>
#include <sluice/engine/dispatcher.hpp>
#include <sluice/engine/options.hpp>

namespace sluice {

/// GenStage's PartitionDispatcher (GENSTAGE.md 2.3): each event goes to exactly one partition,
/// chosen by the hash, which may also rewrite the event (it gets `Event&`) or drop it (return an
/// empty std::optional). At most one subscriber per partition; upstream demand is each ask, less
/// what was already asked for departed subscribers (`pending`).
///
/// The hash returns the partition: an integer (a partition name, which for a count n is the
/// index 0..n-1), a Partition or a string name, or a std::optional of one of those.
///
/// Differences from GenStage (docs/GENSTAGE.md): per-partition queues are bounded (queue_size:
/// upstream demand is held back while a subscribed partition's queue is full; a partition
/// without a subscriber drops by queue_keep) and counted in the producer's buffered metric and each
/// edge's `queued` metric; events a cancelled partition still queued are reported as dropped
/// (GenStage discards them silently); events the hash drops are counted in the producer's
/// `filtered` metric; events the hash drops, and events for a partition whose subscriber has left,
/// meet no demand (GenStage counts them against it, which starves the other partitions'
/// consumers: they wait for events the producer was never asked for again).
template <class Event, class Hash = DefaultPartitionHash>
class PartitionDispatcher final : public Dispatcher<Event> {
 public:
  explicit PartitionDispatcher(Partitions partitions, Hash hash = {},
                               PartitionDispatcherOptions options = {})
      : partitions_(std::move(partitions)), hash_(std::move(hash)), options_(options) {
    check(partitions_, options_);
    index_ = detail::PartitionIndex(partitions_);
    dense_ = partitions_.dense();
    parts_.resize(partitions_.size());
    nparts_ = parts_.size();
    cursors_.resize(nparts_);
  }

  // ---- validation (before running) ------------------------------------------------------------

  /// Refuses invalid dispatcher options (option_error naming the option), without making a
  /// dispatcher: what the constructor and the factories check.
  static void check(const Partitions& partitions, const PartitionDispatcherOptions& options) {
    constexpr bool default_hash = std::is_same_v<Hash, DefaultPartitionHash>;
    if constexpr (default_hash)
      static_assert(
          requires(const Event& e) { std::hash<Event>{}(e); },
          "the partition dispatcher's default hash needs std::hash<Event>; pass a "
          "hash function");
    check_partition_options(partitions, options, default_hash);
  }

  void validate(const SubscriberInfo& s) const override {
    this->refuse_selector(s);
    slot_of_subscription(s);
  }

  std::vector<std::string> validate_subscribers(std::span<const SubscriberInfo> subscribers,
                                                bool more_may_attach) const override {
    std::vector<std::string> problems;
    std::vector<std::string> owner(parts_.size());
    for (auto& s : subscribers) {
      std::size_t slot = 0;
      try {
        slot = slot_of_subscription(s);
      } catch (const option_error& e) {
        problems.push_back("consumer '" + std::string(s.consumer) + "': " + e.what());
        continue;
      }
      if (!owner[slot].empty())
        problems.push_back("consumer '" + std::string(s.consumer) + "': option partition " +
                           partitions_[slot].to_string() + " is already taken by '" + owner[slot] +
                           "'");
      else
        owner[slot] = std::string(s.consumer);
    }
    for (std::size_t i = 0; i < owner.size() && !more_may_attach; ++i)
      if (owner[i].empty())
        problems.push_back("partition " + partitions_[i].to_string() +
                           " has no subscriber (its events would only be dropped)");
    return problems;
  }

  std::optional<Partition> default_partition(std::size_t consumer_instance) const override {
    if (consumer_instance >= partitions_.size()) return std::nullopt;
    return partitions_[consumer_instance];
  }

  std::string name() const override { return "partition"; }

  // ---- the dispatcher ---------------------------------------------------------------------------

  std::size_t subscribe(const SubscriberInfo& s, Outbox<Event>&) override {
    const auto slot = slot_of_subscription(s);
    auto& p = parts_[slot];
    if (p.subscriber)  // GenStage raises (the producer crashes); here only the newcomer is refused
      throw subscription_refused("option partition " + partitions_[slot].to_string() +
                                 " is already taken");
    p.subscriber = s.id;
    if (std::exchange(p.orphan, false)) --orphans_;
    slot_of_[s.id] = slot;
    return 0;
  }

  std::size_t cancel(SubscriberId id, Outbox<Event>& out) override {
    auto it = slot_of_.find(id);
    if (it == slot_of_.end()) return 0;
    const auto slot = it->second;
    slot_of_.erase(it);
    auto& p = parts_[slot];
    p.subscriber.reset();
    if (!std::exchange(p.orphan, true)) ++orphans_;
    if (p.queue.empty()) {
      pending_ += p.demand;
      p.demand = 0;
      return release_withheld();  // a backed-up partition may just have left
    }
    // GenStage discards the queue and asks upstream for as many replacements; we report them.
    const auto k = p.queue.size();
    drop_front(slot, k, "the queue of cancelled partition " + partitions_[slot].to_string(), out);
    p.demand = 0;
    withheld_ += static_cast<std::int64_t>(k);
    release_passed_infos(out);
    return release_withheld();
  }

  std::size_t ask(SubscriberId id, std::size_t n, Outbox<Event>& out) override {
    auto it = slot_of_.find(id);
    if (it == slot_of_.end()) return 0;
    auto& p = parts_[it->second];
    const auto left = send_queued(it->second, static_cast<std::int64_t>(n), out);
    p.demand += left;
    const auto already = std::min<std::int64_t>(pending_, static_cast<std::int64_t>(n));
    pending_ -= already;
    withheld_ += static_cast<std::int64_t>(n) - already;
    return release_withheld();
  }

  std::size_t dispatch(std::span<Event> events, Outbox<Event>& out) override {
    if (waiting_ == 0) return 0;
    if (orphans_ == 0) {
      const auto chunk = std::min(events.size(), static_cast<std::size_t>(waiting_));
      if (chunk * nparts_ * sizeof(Event) <= scatter_bytes) return scatter(events, out);
    }
    return dispatch_by_batches(events, out);
  }

  void info(std::uint64_t token, Outbox<Event>& out) override {
    std::size_t backed_up = 0;
    for (auto& p : parts_)
      if (!p.queue.empty()) {
        p.queue.mark(token);
        ++backed_up;
      }
    if (backed_up == 0)
      out.release_info(token);
    else
      infos_.push_back({token, backed_up});
  }

  std::size_t buffered() const override {
    std::size_t n = 0;
    for (auto& p : parts_)
      n += p.queue.size();
    return n;
  }

  std::size_t queued(SubscriberId id) const override {
    auto it = slot_of_.find(id);
    return it == slot_of_.end() ? 0 : parts_[it->second].queue.size();
  }

  // ---- introspection (tests) ------------------------------------------------------------------
  std::int64_t waiting() const { return waiting_; }
  /// Upstream demand held back while a subscribed partition's queue is full.
  std::int64_t withheld() const { return withheld_; }
  std::int64_t pending() const { return pending_; }
  /// A partition's integer demand (0 while it has a queue).
  std::int64_t demand_of(const Partition& p) const { return parts_[index_.slot(p)].demand; }
  std::size_t queue_size_of(const Partition& p) const {
    return parts_[index_.slot(p)].queue.size();
  }

 private:
  struct Part {
    std::optional<SubscriberId> subscriber;
    std::int64_t demand = 0;   // GenStage's integer demand; 0 while the queue is not empty
    Buffer<Event> queue;       // events beyond demand, and infos (GenStage's partition queue)
    std::vector<Event> batch;  // this dispatch's events for the partition (capacity reused)
    /// Its subscriber left (none has taken it since): its events meet no demand, so the other
    /// partitions' consumers are not starved by events nobody asked for.
    bool orphan = false;
  };
  struct PendingInfo {
    std::uint64_t token;
    std::size_t partitions_left;
  };

  /// dispatch's fast path: each partition's events are moved into a run of `stride` slots of one
  /// scratch buffer, through a write cursor per partition (no capacity check per event, nothing
  /// in the loop the compiler must reload). Taken while every partition has, or never had, a
  /// subscriber and the runs fit in scatter_bytes.
  static constexpr std::size_t scatter_bytes = std::size_t{1} << 20;

  std::size_t scatter(std::span<Event> events, Outbox<Event>& out) {
    // No partition receives more than min(events, waiting_) events: a run of that many each.
    const auto stride = std::min(events.size(), static_cast<std::size_t>(waiting_));
    detail::ScatterRuns<Event> runs(scratch_.reserve(stride * nparts_), stride, cursors_);
    Event** const cur = cursors_.data();
    std::size_t taken = 0;
    std::size_t none = 0;
    // In chunks of at most waiting_ events (more than one only when the hash drops some): no
    // check of the demand left per event.
    while (taken < events.size() && waiting_ > 0) {
      const auto end = taken + std::min(events.size() - taken, static_cast<std::size_t>(waiting_));
      std::size_t dropped = 0;
      for (std::size_t i = taken; i < end; ++i) {
        const auto slot = hash(events[i]);
        if (slot < 0) {
          ++dropped;
          continue;
        }
        ::new (cur[slot]) Event(std::move(events[i]));  // then counted: a throw leaves it out
        ++cur[slot];
      }
      waiting_ -= static_cast<std::int64_t>(end - taken - dropped);
      none += dropped;
      taken = end;
    }
    if (none > 0) out.filtered(none);
    for (std::size_t slot = 0; slot < nparts_; ++slot)
      deliver(slot, runs.run(slot), out);
    return taken;
  }

  /// dispatch's general path: a batch per partition (capacity reused), for dispatches with a
  /// partition whose subscriber left, or too large for scatter's runs.
  [[gnu::noinline]] std::size_t dispatch_by_batches(std::span<Event> events, Outbox<Event>& out) {
    std::size_t taken = 0;
    std::size_t none = 0;
    // Events for a partition whose subscriber left meet no demand while the subscribed
    // partitions still wait for theirs (their consumers would starve otherwise). Upstream demand
    // beyond what the subscribed partitions wait for (asked for consumers that left) is used up
    // by them, as in GenStage: a producer whose subscribed partitions are served is not asked
    // again and again for events nobody takes.
    std::size_t unasked = 0;
    std::int64_t live = 0;  // demand the subscribed partitions still wait for
    if (orphans_ > 0)
      for (auto& p : parts_)
        if (p.subscriber) live += p.demand;
    auto scatter = [&]<bool any_orphan>() {
      for (; taken < events.size() && waiting_ > 0; ++taken) {
        Event& e = events[taken];
        const auto slot = hash(e);
        if (slot < 0) {
          ++none;
          continue;
        }
        auto& p = parts_[static_cast<std::size_t>(slot)];
        p.batch.push_back(std::move(e));
        if constexpr (any_orphan) {
          if (!p.orphan) {
            if (static_cast<std::int64_t>(p.batch.size()) <= p.demand) --live;
          } else if (waiting_ <= live) {
            ++unasked;
            continue;
          }
        }
        --waiting_;
      }
    };
    if (orphans_ == 0)
      scatter.template operator()<false>();
    else
      scatter.template operator()<true>();
    if (none > 0) out.filtered(none);
    if (unasked > 0) out.unasked(unasked);
    for (std::size_t slot = 0; slot < parts_.size(); ++slot) {
      auto& p = parts_[slot];
      deliver(slot, p.batch, out);
      p.batch.clear();
    }
    return taken;
  }

  std::size_t slot_of_subscription(const SubscriberInfo& s) const {
    if (!s.options.partition)
      throw option_error(
          "option partition is required when subscribing to a partition "
          "dispatcher (it has " +
          std::to_string(partitions_.size()) + " partitions: " + partitions_.to_string() + ")");
    return index_.slot(*s.options.partition);
  }

  /// The slot of the event's partition, or -1 if the hash drops it.
  std::ptrdiff_t hash(Event& e) {
    if constexpr (std::is_same_v<Hash, DefaultPartitionHash>) {
      std::uint64_t h = static_cast<std::uint64_t>(std::hash<Event>{}(e));
      h ^= h >> 33;  // fmix64 (MurmurHash3): std::hash of an integer is the integer itself
      h *= 0xff51afd7ed558ccdULL;
      h ^= h >> 33;
      h *= 0xc4ceb9fe1a85ec53ULL;
      h ^= h >> 33;
      // Multiply-high on the top 32 bits instead of h % n (a 64-bit division costs ~40 cycles);
      // uniform because h is mixed.
      return static_cast<std::ptrdiff_t>(((h >> 32) * nparts_) >> 32);
    } else {
      return resolve(std::invoke(hash_, e));
    }
  }

  /// The slot a hash's result names (an integer, a Partition or a name, or an optional of one:
  /// empty is -1, the event is dropped); the common case, an index of partitions given as a
  /// count, inline (PartitionIndex resolves the others).
  template <class R>
  std::ptrdiff_t resolve(R&& r) const {
    using T = std::remove_cvref_t<R>;
    if constexpr (requires {
                    r.has_value();
                    *r;
                  }) {
      if (!r.has_value()) return -1;
      return resolve(*r);
    } else if constexpr (std::integral<T>) {
      const auto i = static_cast<std::int64_t>(r);
      if (!dense_) return index_.resolve_index(i);
      // No call that returns on this path, so dense_ stays invariant in the dispatch loop and
      // the compiler takes the test out of it.
      if (i < 0 || i >= static_cast<std::int64_t>(nparts_)) index_.unknown_index(i);
      return static_cast<std::ptrdiff_t>(i);
    } else {
      static_assert(std::is_constructible_v<Partition, R>,
                    "a partition hash must return the partition: an integer, a sluice::Partition, "
                    "a string name, or a std::optional of one of those (empty: drop the event)");
      return index_.resolve_partition(Partition(std::forward<R>(r)));
    }
  }

  /// Back-pressure per partition (GenStage asks upstream for every ask, so the queue of a
  /// partition slower than the others grows without bound): while a subscribed partition holds
  /// queue_size events or more, upstream demand is held back; it is passed on, all at once, when
  /// every subscribed partition is below queue_size again. Returns what to ask upstream now.
  std::size_t release_withheld() {
    if (withheld_ == 0) return 0;
    const auto limit = static_cast<std::size_t>(options_.queue_size);
    for (auto& p : parts_)
      if (p.subscriber && p.queue.size() >= limit) return 0;
    const auto up = std::exchange(withheld_, 0);
    waiting_ += up;
    return static_cast<std::size_t>(up);
  }

  /// Sends up to n queued events, one message per run between info markers, releasing the
  /// infos passed. Returns what is left of n.
  std::int64_t send_queued(std::size_t slot, std::int64_t n, Outbox<Event>& out) {
    auto& p = parts_[slot];
    while (n > 0 && !p.queue.empty()) {
      auto run = p.queue.front_run(static_cast<std::uint64_t>(n));
      if (!run.empty()) {
        out.send(*p.subscriber, run);
        p.queue.pop_front(run.size());
        n -= static_cast<std::int64_t>(run.size());
      }
      release_passed_infos(out);
    }
    release_passed_infos(out);
    return n;
  }

  /// Sends a partition's newly dispatched events as far as its demand goes; queues the rest.
  void deliver(std::size_t slot, std::span<Event> batch, Outbox<Event>& out) {
    if (batch.empty()) return;
    auto& p = parts_[slot];
    if (p.queue.empty() && p.demand > 0) {
      const auto now = std::min<std::size_t>(static_cast<std::size_t>(p.demand), batch.size());
      out.send(*p.subscriber, batch.first(now));
      p.demand -= static_cast<std::int64_t>(now);
      batch = batch.subspan(now);
    }
    enqueue(slot, batch, out);
  }

  /// Queues events beyond a partition's demand. A subscribed partition's queue is bounded by
  /// the withheld demand (release_withheld: at most queue_size plus the demand already passed
  /// upstream); an unsubscribed one's (a dynamic producer's partition nobody took yet) keeps
  /// queue_size events, by queue_keep, and reports the others as dropped.
  void enqueue(std::size_t slot, std::span<Event> events, Outbox<Event>& out) {
    auto& p = parts_[slot];
    if (events.empty()) return;
    if (p.subscriber)
      p.queue.append(events);
    else
      enqueue_unsubscribed(slot, events, out);
  }
  [[gnu::noinline]] void enqueue_unsubscribed(std::size_t slot, std::span<Event> events,
                                              Outbox<Event>& out) {
    const auto why = "the queue of partition " + partitions_[slot].to_string();
    parts_[slot].queue.push(events, static_cast<std::uint64_t>(options_.queue_size),
                            options_.queue_keep,
                            [&](std::span<Event> dropped) { out.discard(dropped, why); });
  }

  /// Drops the n oldest queued events of a partition (reported as dropped).
  void drop_front(std::size_t slot, std::uint64_t n, const std::string& why, Outbox<Event>& out) {
    parts_[slot].queue.drop_front(n, [&](std::span<Event> dropped) { out.discard(dropped, why); });
  }

  /// Infos whose markers every backed-up partition has passed (or dropped) are released.
  void release_passed_infos(Outbox<Event>& out) {
    auto passed = [&](std::uint64_t token) {
      for (auto& i : infos_)
        if (i.token == token) --i.partitions_left;
    };
    for (auto& p : parts_) {
      if (p.subscriber)
        p.queue.release_passed(passed);
      else
        p.queue.release_all(passed);  // nobody will take its events: no info waits for them
    }
    while (!infos_.empty() && infos_.front().partitions_left == 0) {
      out.release_info(infos_.front().token);
      infos_.pop_front();
    }
  }

  Partitions partitions_;
  Hash hash_;
  PartitionDispatcherOptions options_;
  detail::PartitionIndex index_;
  std::vector<Part> parts_;
  std::size_t nparts_ = 0;            // parts_.size(), kept where the hash's loop reads it
  bool dense_ = true;                 // partitions given as a count: index i is slot i
  detail::RawBuffer<Event> scratch_;  // scatter()'s runs (capacity reused)
  std::vector<Event*> cursors_;       // scatter()'s write cursor per partition
  std::map<SubscriberId, std::size_t> slot_of_;
  std::deque<PendingInfo> infos_;
  std::int64_t waiting_ = 0;  // upstream demand not yet used by dispatch
  std::int64_t pending_ = 0;  // asked upstream for subscribers that left
  std::int64_t withheld_ =
      0;  // demand for upstream, held back while a subscribed partition is backed up
  std::size_t orphans_ = 0;  // partitions whose subscriber left
};

}  // namespace sluice

namespace sluice {

/// The factory the engine takes for a producer's dispatcher (one per producer instance), with
/// the default hash (std::hash<Event>, mixed). Invalid options throw option_error here.
template <class Event>
auto partition_dispatcher(Partitions partitions, PartitionDispatcherOptions options = {}) {
  PartitionDispatcher<Event>::check(partitions, options);
  return [partitions, options]() -> std::unique_ptr<Dispatcher<Event>> {
    return std::make_unique<PartitionDispatcher<Event>>(partitions, DefaultPartitionHash{},
                                                        options);
  };
}

/// Same, with a hash: `hash(Event&)` returns the partition (or an empty optional to drop the
/// event) and may rewrite the event.
template <class Event, class Hash>
requires std::invocable<Hash&, Event&>
auto partition_dispatcher(Partitions partitions, Hash hash,
                          PartitionDispatcherOptions options = {}) {
  PartitionDispatcher<Event, Hash>::check(partitions, options);
  return [partitions, hash, options]() -> std::unique_ptr<Dispatcher<Event>> {
    return std::make_unique<PartitionDispatcher<Event, Hash>>(partitions, hash, options);
  };
}

}  // namespace sluice
