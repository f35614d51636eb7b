#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <sluice/engine/buffer.hpp>
#include <sluice/engine/detail/edge.hpp>
#include <sluice/engine/detail/emit_buffer.hpp>
#include <sluice/engine/detail/shared_block.hpp>
#include <sluice/engine/dispatcher.hpp>
#include <sluice/engine/options.hpp>

namespace sluice::detail {

/// The producer side of a cell: its subscribers (one edge each) and their demand, its
/// dispatcher, the events a callback emitted (staged until it returns), the buffer of events
/// beyond demand, and in accumulate mode the held demands and events. Owner thread only.
///
/// It moves events and keeps the counts; the cell decides what a demand leads to (section 4 of
/// engine/DESIGN.md) and calls the handler. Dropped events go to the `drop(span)` the cell
/// passes (counted, handle_discarded, logged); infos whose events have left the buffer go to
/// the `release(token)` it passes.
template <class Out>
class Output {
 public:
  struct Subscriber {
    Edge<Out>* edge = nullptr;
    std::string consumer;
    SubscriptionOptions options;
    std::size_t consumer_instance = 0;
    std::int64_t demand = 0;  // asks collected from the edge and not yet spent
    bool open = true;
  };
  /// One entry of accumulate mode, in arrival order: a demand, or a run of held events.
  struct Accumulated {
    bool demand;
    std::int64_t n;
  };

  Output(const std::string& stage, std::int64_t buffer_size, BufferKeep keep,
         std::unique_ptr<Dispatcher<Out>> dispatcher)
      : stage_(stage),
        buffer_size_(static_cast<std::uint64_t>(buffer_size)),
        keep_(keep),
        dispatcher_(std::move(dispatcher)) {}
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;
  ~Output() {
    if (pool_ != nullptr) pool_->close();  // lives on until its last batch comes back
  }

  Dispatcher<Out>& dispatcher() noexcept { return *dispatcher_; }
  EmitBuffer<Out>& staged() noexcept { return staged_; }
  Buffer<Out>& buffer() noexcept { return buffer_; }

  // ---- subscribers -----------------------------------------------------------------------------

  SubscriberId add(Edge<Out>* edge, std::string consumer, const SubscriptionOptions& o,
                   std::size_t consumer_instance) {
    subs_.push_back({edge, std::move(consumer), o, consumer_instance, 0, true});
    ++open_;
    return static_cast<SubscriberId>(subs_.size() - 1);
  }
  std::size_t size() const noexcept { return subs_.size(); }
  std::size_t open() const noexcept { return open_; }
  Subscriber& operator[](SubscriberId id) noexcept { return subs_[id]; }
  SubscriberInfo info(SubscriberId id) const {
    auto& s = subs_[id];
    return {id, s.consumer, s.options, s.consumer_instance};
  }
  /// Closes `s`: it gets nothing more. Returns its consumer cell (to notify).
  std::uint32_t close(Subscriber& s) noexcept {
    s.open = false;
    s.demand = 0;
    --open_;
    return s.edge->consumer_cell();
  }

  // ---- sending (the Outbox the dispatcher calls) ------------------------------------------------

  /// Moves `events` to subscriber `to` as one message, within its demand. Returns its consumer
  /// cell (to notify). Throws stage_error for a send the protocol forbids.
  std::uint32_t send(SubscriberId to, std::span<Out> events) {
    auto& s = check_send(to, events.size());
    if (!s.edge->push(events)) throw full(s, events.size());
    s.demand -= static_cast<std::int64_t>(events.size());
    return s.edge->consumer_cell();
  }
  std::uint32_t send(SubscriberId to, const SharedEvents<Out>& batch, std::size_t offset,
                     std::size_t count) {
    if (batch.block() == nullptr || offset + count > batch.size())
      throw stage_error(
          stage_, "dispatcher " + dispatcher_->name() + " sent a range outside its shared batch");
    auto& s = check_send(to, count);
    if (!s.edge->push_shared(batch.block(), offset, count)) throw full(s, count);
    s.demand -= static_cast<std::int64_t>(count);
    return s.edge->consumer_cell();
  }
  /// A batch that several subscribers read (broadcast): from this producer's pool.
  SharedEvents<Out> share(std::span<Out> events) {
    if (pool_ == nullptr) pool_ = new BlockPool<Out>();  // owned; see ~Output
    return SharedEvents<Out>(pool_->make(events));
  }

  // ---- the buffer
  // --------------------------------------------------------------------------------

  /// Offers up to `k` buffered events to the dispatcher, in runs up to each info marker, and
  /// releases the infos passed. Returns how many it took.
  template <class Release>
  std::uint64_t offer_buffer(std::int64_t k, Outbox<Out>& out, Release&& release) {
    std::uint64_t taken = 0;
    while (k > 0 && !buffer_.empty()) {
      auto run = buffer_.front_run(static_cast<std::uint64_t>(k));
      if (!run.empty()) {
        const auto took = dispatcher_->dispatch(run, out);
        buffer_.pop_front(took);
        taken += took;
        k -= static_cast<std::int64_t>(took);
        if (took < run.size()) break;
      }
      buffer_.release_passed(release);
    }
    buffer_.release_passed(release);
    return taken;
  }

  /// Events a dispatch left over go to the buffer (bounded: buffer_size, buffer_keep).
  template <class Drop, class Release>
  void store_leftovers(std::span<Out> rest, Drop&& drop, Release&& release) {
    buffer_.push(rest, buffer_size_, keep_, drop);
    buffer_.release_passed(release);  // an info behind dropped events is delivered at once
  }

  // ---- accumulate mode (producers)
  // ---------------------------------------------------------------

  /// Holds what a callback emitted, bounded by buffer_size together with the buffer (GenStage
  /// holds it without bound; docs/GENSTAGE.md).
  template <class Drop>
  void hold(std::span<Out> events, Drop&& drop) {
    const auto used = buffer_.size() + held_.size();
    if (keep_ == BufferKeep::first) {
      const auto space = buffer_size_ > used ? buffer_size_ - used : 0;
      const auto keep = static_cast<std::size_t>(std::min<std::uint64_t>(space, events.size()));
      if (keep < events.size()) drop(events.subspan(keep));
      events = events.first(keep);
    } else if (used + events.size() > buffer_size_) {
      auto over = used + events.size() - buffer_size_;
      const auto from_held = std::min<std::uint64_t>(over, held_.size());
      drop_oldest_held(from_held, drop);
      over -= from_held;
      if (over > 0) drop(events.first(static_cast<std::size_t>(over)));
      events = events.subspan(static_cast<std::size_t>(over));
    }
    if (events.empty()) return;
    accumulated_.push_back({false, static_cast<std::int64_t>(events.size())});
    held_.append(events);
  }
  /// A demand arriving in accumulate mode: stored, replayed in order on forward.
  void hold_demand(std::int64_t n) { accumulated_.push_back({true, n}); }
  bool has_accumulated() const noexcept { return !accumulated_.empty(); }
  Accumulated next_accumulated() {
    const auto e = accumulated_.front();
    accumulated_.pop_front();
    return e;
  }
  /// Moves the `n` oldest held events to the staged events (a replayed run).
  void stage_held(std::int64_t n) {
    while (n > 0 && !held_.empty()) {
      auto run = held_.front_run(static_cast<std::uint64_t>(n));
      for (auto& e : run)
        staged_.push_back(std::move(e));
      held_.pop_front(run.size());
      n -= static_cast<std::int64_t>(run.size());
    }
  }

  // ---- stopping, gauges
  // --------------------------------------------------------------------------

  /// Destroys every event it holds (buffer, held, staged, the dispatcher's own are counted by
  /// the dispatcher); returns how many it held, dispatcher's included.
  std::uint64_t discard_all() {
    const auto n = buffer_.size() + held_.size() + staged_.size() + dispatcher_->buffered();
    buffer_.clear();
    held_.clear();
    staged_.clear();
    return n;
  }
  /// Events held beyond demand: the buffer, held events, the dispatcher's queues.
  std::size_t buffered() const { return buffer_.size() + held_.size() + dispatcher_->buffered(); }
  bool holds_nothing() const noexcept { return buffer_.empty() && held_.empty(); }
  /// The open subscribers' demand in all; publishes each edge's queued gauge.
  std::int64_t publish_gauges() {
    std::int64_t d = 0;
    for (SubscriberId id = 0; id < subs_.size(); ++id) {
      auto& s = subs_[id];
      if (s.open) d += s.demand;
      s.edge->set_queued(s.open ? dispatcher_->queued(id) : 0);
    }
    return d;
  }

 private:
  Subscriber& check_send(SubscriberId to, std::size_t count) {
    if (to >= subs_.size() || !subs_[to].open)
      throw stage_error(stage_, "dispatcher " + dispatcher_->name() +
                                    " sent events to a subscriber that is not subscribed");
    auto& s = subs_[to];
    if (static_cast<std::int64_t>(count) > s.demand)
      throw stage_error(stage_, "dispatcher " + dispatcher_->name() + " sent " +
                                    std::to_string(count) + " events to '" + s.consumer +
                                    "', which asked for only " + std::to_string(s.demand));
    return s;
  }
  stage_error full(const Subscriber& s, std::size_t count) const {
    return stage_error(stage_, "the edge to '" + s.consumer + "' is full (" +
                                   std::to_string(count) +
                                   " events): the consumer holds more than its max_demand");
  }
  template <class Drop>
  void drop_oldest_held(std::uint64_t k, Drop&& drop) {
    if (k == 0) return;
    held_.drop_front(k, drop);
    for (auto it = accumulated_.begin(); it != accumulated_.end() && k > 0;) {
      if (it->demand) {
        ++it;
        continue;
      }
      const auto d = std::min<std::uint64_t>(k, static_cast<std::uint64_t>(it->n));
      it->n -= static_cast<std::int64_t>(d);
      k -= d;
      it = it->n == 0 ? accumulated_.erase(it) : std::next(it);
    }
  }

  const std::string& stage_;
  const std::uint64_t buffer_size_;
  const BufferKeep keep_;
  std::unique_ptr<Dispatcher<Out>> dispatcher_;
  BlockPool<Out>* pool_ = nullptr;  // shared batches (broadcast); closed, not deleted
  std::vector<Subscriber> subs_;
  std::size_t open_ = 0;
  EmitBuffer<Out> staged_;
  Buffer<Out> buffer_;
  Buffer<Out> held_;                     // accumulate mode: events emitted meanwhile
  std::deque<Accumulated> accumulated_;  // accumulate mode: arrival order
};

}  // namespace sluice::detail
