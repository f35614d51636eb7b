#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <sluice/engine/options.hpp>

namespace sluice {

/// Identifies one subscriber of a producer (one edge). Dense from 0 in subscription order.
using SubscriberId = std::uint32_t;

/// What a dispatcher learns about a new subscriber.
struct SubscriberInfo {
  SubscriberId id = 0;
  std::string_view consumer;  ///< the consumer stage's name (with its instance)
  SubscriptionOptions options;
  std::size_t instance = 0;  ///< the consumer's instance index
};

enum class LogLevel { info, warning, error };

/// What a dispatcher may do on its producer's behalf. Implemented by the engine; valid only
/// during the dispatcher call it is passed to. Owner stage only; never blocks.
template <class Event>
class Outbox {
 public:
  /// Moves `events` to subscriber `to` as one message. The dispatcher must not send more than
  /// the demand that subscriber asked for (it is a protocol error, reported as a stage failure).
  virtual void send(SubscriberId to, std::span<Event> events) = 0;
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

/// A producer-side policy deciding which subscriber receives each event (GenStage's dispatcher
/// behaviour: subscribe, cancel, ask, dispatch, info). Every operation that returns a count
/// returns the demand to pass on to the producer (its buffer, then handle_demand).
///
/// A dispatcher instance belongs to one producer instance and is only ever called from that
/// instance's thread, so it needs no synchronisation.
template <class Event>
class Dispatcher {
 public:
  virtual ~Dispatcher() = default;

  /// Checks a subscription before anything runs. Throws option_error naming the option.
  virtual void validate(const SubscriberInfo& /*subscriber*/) const {}
  /// A subscriber joined. Returns upstream demand. May throw option_error to refuse it.
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
  /// A short name for logs and metrics.
  virtual std::string name() const = 0;
};

}  // namespace sluice
