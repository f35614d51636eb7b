#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <typeindex>
#include <utility>
#include <vector>

#include <sluice/engine/detail/shared_block.hpp>
#include <sluice/engine/options.hpp>

namespace sluice {

/// Thrown by Dispatcher::subscribe to turn a subscriber down (GenStage's {:error, reason}, as
/// for a consumer subscribing twice to a broadcast): the subscription is cancelled with
/// Reason::refused(what()), which never stops the consumer, and the producer goes on.
class subscription_refused : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Identifies one subscriber of a producer (one edge). Dense from 0 in subscription order.
using SubscriberId = std::uint32_t;

/// What a dispatcher learns about a new subscriber.
struct SubscriberInfo {
  SubscriberId id = 0;
  std::string_view consumer;  ///< the consumer stage's name (with its instance)
  SubscriptionOptions options;
  std::size_t instance = 0;  ///< the consumer's instance index
};

/// A handle to one immutable batch of events that several subscribers read without a copy
/// (what a broadcast sends). Copying the handle shares the batch; the batch is destroyed when
/// the last handle and the last subscriber reading it let go. Get one from Outbox::share (pooled,
/// no allocation in steady state) or SharedEvents::make.
template <class Event>
class SharedEvents {
 public:
  SharedEvents() = default;
  /// Moves `events` into a new batch on the heap (dispatchers should prefer Outbox::share).
  static SharedEvents make(std::span<Event> events) {
    auto* b = detail::SharedBlock<Event>::allocate(events.size(), nullptr);
    b->fill(events);
    return SharedEvents(b);
  }
  explicit SharedEvents(detail::SharedBlock<Event>* adopted) noexcept : block_(adopted) {}
  SharedEvents(const SharedEvents& o) noexcept : block_(o.block_) {
    if (block_) block_->retain();
  }
  SharedEvents(SharedEvents&& o) noexcept : block_(std::exchange(o.block_, nullptr)) {}
  SharedEvents& operator=(SharedEvents o) noexcept {
    std::swap(block_, o.block_);
    return *this;
  }
  ~SharedEvents() {
    if (block_) block_->release();
  }

  std::span<const Event> events() const noexcept {
    return block_ ? block_->events() : std::span<const Event>{};
  }
  std::size_t size() const noexcept { return events().size(); }
  /// The engine's view of the batch (for Outbox implementations).
  detail::SharedBlock<Event>* block() const noexcept { return block_; }

 private:
  detail::SharedBlock<Event>* block_ = nullptr;
};

/// What a dispatcher may do on its producer's behalf. Implemented by the engine; valid only
/// during the dispatcher call it is passed to. Owner stage only; never blocks.
template <class Event>
class Outbox {
 public:
  /// Moves `events` to subscriber `to` as one message. The dispatcher must not send more than
  /// the demand that subscriber asked for (it is a protocol error, reported as a stage failure).
  virtual void send(SubscriberId to, std::span<Event> events) = 0;
  /// Moves `events` into one immutable batch that several subscribers can read without a copy.
  /// Only for dispatchers whose shares_events() is true.
  virtual SharedEvents<Event> share(std::span<Event> events) {
    return SharedEvents<Event>::make(events);
  }
  /// Sends events [offset, offset + count) of a shared batch to subscriber `to` as one message
  /// (its consumer reads them as std::span<const Event>). Same demand rule as send().
  virtual void send(SubscriberId to, const SharedEvents<Event>& batch, std::size_t offset,
                    std::size_t count) = 0;
  /// Events the dispatcher gives up (a full queue, a cancelled partition): counted as dropped
  /// in the producer's metrics, passed to its handle_discarded hook and logged with `why`.
  virtual void discard(std::span<Event> events, std::string_view why) = 0;
  /// `n` of the events passed to this dispatch call were dropped on purpose (a partition hash
  /// returning none): counted in the producer's `filtered` metric, not as a loss. They meet no
  /// demand: the engine does not count them against the producer's demand, and asks a source
  /// that met its demand with them for as many more (otherwise the consumers could wait for
  /// ever for events they asked for).
  virtual void filtered(std::size_t n) = 0;
  /// `n` of the events passed to this dispatch call were taken without any subscriber's demand
  /// (a partition whose subscriber has left keeps or drops them): like filtered(), they meet no
  /// demand, but they are not counted as filtered (they are in the dispatcher's buffered count,
  /// or were passed to discard()).
  virtual void unasked(std::size_t n) = 0;
  /// Delivers the info message `token` to the producer's handle_info now.
  virtual void release_info(std::uint64_t token) = 0;
  /// Asks again on behalf of `of`, as if that subscriber had asked `n` (BroadcastDispatcher's
  /// selector re-ask).
  virtual void ask_on_behalf(SubscriberId of, std::size_t n) = 0;
  /// Logs through the run's logger, naming the producer.
  virtual void log(LogLevel level, std::string_view message) = 0;

 protected:
  ~Outbox() = default;
};

/// What the engine asks a dispatcher before anything runs; independent of the event type.
class DispatcherBase {
 public:
  virtual ~DispatcherBase() = default;
  /// Checks one subscription's options when it is declared, before anything runs. Throws
  /// option_error naming the option. The default accepts no `partition` and no `selector`
  /// (a dispatcher that does not use them must not silently ignore them).
  virtual void validate(const SubscriberInfo& subscriber) const {
    if (subscriber.options.partition)
      throw option_error("option partition: the " + name() + " dispatcher has no partitions");
    refuse_selector(subscriber);
  }
  /// True if it reads SubscriptionOptions::selector (a broadcast): the engine then checks that
  /// the selector is a Selector<Event> of its event type.
  virtual bool selects() const { return false; }
  /// The selector type for its events (Selector<Event>).
  virtual std::type_index selector_type() const = 0;
  /// Checks the whole set of subscribers one producer instance will have when the run starts;
  /// returns every problem found (each a line naming the consumer and the option).
  /// `more_may_attach`: the producer is dynamic (ProducerOptions::dynamic), so consumers may
  /// still attach while it runs; a missing subscriber is then not a problem.
  virtual std::vector<std::string> validate_subscribers(
      std::span<const SubscriberInfo> /*subscribers*/, bool /*more_may_attach*/) const {
    return {};
  }
  /// The partition a subscription without a `partition` option takes: consumer instance i
  /// takes the i-th partition. nullopt: this dispatcher has no partitions.
  virtual std::optional<Partition> default_partition(std::size_t /*consumer_instance*/) const {
    return std::nullopt;
  }
  /// True if the dispatcher sends shared batches (Outbox::share): its consumers then read
  /// std::span<const Event>, and their handle_events must take that.
  virtual bool shares_events() const { return false; }
  /// A short name for logs and metrics.
  virtual std::string name() const = 0;

 protected:
  /// For validate(): a dispatcher that does not select refuses a selector.
  void refuse_selector(const SubscriberInfo& subscriber) const {
    if (subscriber.options.selector.has_value() && !selects())
      throw option_error("option selector: only a broadcast dispatcher selects events");
  }
};

/// A producer-side policy deciding which subscriber receives each event (GenStage's dispatcher
/// behaviour: subscribe, cancel, ask, dispatch, info). Every operation that returns a count
/// returns the demand to pass on to the producer (its buffer, then handle_demand).
///
/// A dispatcher instance belongs to one producer instance and is only ever called from that
/// instance's thread, so it needs no synchronisation.
template <class Event>
class Dispatcher : public DispatcherBase {
 public:
  std::type_index selector_type() const final { return typeid(Selector<Event>); }
  /// A subscriber joined. Returns upstream demand. May throw option_error to fail the
  /// producer, or subscription_refused to turn the subscriber down and keep going.
  virtual std::size_t subscribe(const SubscriberInfo& subscriber, Outbox<Event>& out) = 0;
  /// A subscriber left. Returns upstream demand.
  virtual std::size_t cancel(SubscriberId subscriber, Outbox<Event>& out) = 0;
  /// Subscriber `from` asked for `n` more events. Returns upstream demand.
  virtual std::size_t ask(SubscriberId from, std::size_t n, Outbox<Event>& out) = 0;
  /// Sends what it can of `events` (moving them) and returns how many it took from the front;
  /// the rest are leftovers for the producer's buffer, in order.
  virtual std::size_t dispatch(std::span<Event> events, Outbox<Event>& out) = 0;
  /// Delivers `token` after everything the dispatcher holds (GenStage's info/2).
  virtual void info(std::uint64_t token, Outbox<Event>& out) { out.release_info(token); }
  /// Events the dispatcher itself holds (counted in the producer's buffered metric).
  virtual std::size_t buffered() const { return 0; }
  /// Of those, the events held for subscriber `id` (its edge's `queued` metric: partition skew).
  virtual std::size_t queued(SubscriberId /*id*/) const { return 0; }
};

}  // namespace sluice
