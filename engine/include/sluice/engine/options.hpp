#pragma once

#include <any>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <sluice/engine/errors.hpp>
#include <sluice/engine/time.hpp>

namespace sluice {

/// A buffer size meaning "no bound" (GenStage's :infinity).
inline constexpr std::int64_t infinity = std::numeric_limits<std::int64_t>::max();

inline constexpr std::int64_t default_max_demand = 1000;
inline constexpr std::int64_t default_producer_buffer_size = 10000;

/// Upper bounds on sizes (an option_error beyond them, instead of running out of memory or
/// threads): instances of one stage, partitions of one partition dispatcher, and
/// RunOptions::concurrency.
inline constexpr std::size_t max_instances = 4096;
inline constexpr std::int64_t max_partitions = 65536;
inline constexpr int max_concurrency = 1024;

/// What a consumer does when one of its subscriptions is cancelled (GenStage `:cancel`).
enum class CancelMode {
  permanent,  ///< stop on any cancellation reason (default)
  transient,  ///< stop unless the reason is normal or shutdown
  temporary,  ///< never stop; the subscription is just removed
};

/// How a producer passes demand to `handle_demand` (GenStage `:demand`).
enum class DemandMode { forward, accumulate };

/// Which events a full producer buffer keeps (GenStage `:buffer_keep`).
enum class BufferKeep { first, last };

/// Who asks for events on a subscription (GenStage's `{:automatic | :manual, state}`).
enum class DemandControl { automatic, manual };

/// A partition of a partition dispatcher: an index (partitions given as a count n are 0..n-1)
/// or a name (partitions given as a list, GenStage's `[:odd, :even]`).
class Partition {
 public:
  template <std::integral I>
  Partition(I index) : index_(static_cast<std::int64_t>(index)) {}  // NOLINT: implicit by design
  Partition(std::string name) : name_(std::move(name)), named_(true) {}  // NOLINT
  Partition(const char* name) : name_(name), named_(true) {}             // NOLINT

  bool is_index() const noexcept { return !named_; }
  std::int64_t index() const noexcept { return index_; }
  const std::string& name() const noexcept { return name_; }
  /// "3", or the name in quotes: "'odd'".
  std::string to_string() const { return named_ ? "'" + name_ + "'" : std::to_string(index_); }
  friend bool operator==(const Partition&, const Partition&) = default;

 private:
  // Two plain members rather than a std::variant: GCC 12 reports -Wmaybe-uninitialized false
  // positives on variant<int64_t, std::string> copies at -O1.
  std::int64_t index_ = 0;
  std::string name_;
  bool named_ = false;
};

/// A broadcast subscription's selector (GenStage's `:selector`): the subscriber receives only the
/// events it returns true for. Make one with sluice::selector<Event>(predicate).
template <class Event>
using Selector = std::function<bool(const Event&)>;

/// Wraps a predicate on `const Event&` for SubscriptionOptions::selector.
template <class Event, class F>
std::any selector(F predicate) {
  return Selector<Event>(std::move(predicate));
}

/// Where a stage stands in a graph (GenStage's three kinds).
enum class StageKind { producer, producer_consumer, consumer };

/// How loud a log line is (GenStage's Logger levels).
enum class LogLevel { info, warning, error };

/// Per-subscription options (GenStage's subscription options).
struct SubscriptionOptions {
  std::int64_t max_demand = default_max_demand;           ///< most events in flight, >= 1
  std::optional<std::int64_t> min_demand = std::nullopt;  ///< re-ask threshold; default max/2
  CancelMode cancel = CancelMode::permanent;
  /// For partition dispatchers; default: consumer instance i takes the i-th partition.
  std::optional<Partition> partition = std::nullopt;
  DemandControl demand = DemandControl::automatic;
  /// For broadcast dispatchers: a Selector<Event> (see sluice::selector); empty: every event.
  std::any selector = {};

  std::int64_t effective_min_demand() const noexcept { return min_demand.value_or(max_demand / 2); }
};

/// Options of a producer or producer_consumer.
struct ProducerOptions {
  /// Events kept beyond demand. Default: 10000 for a producer, `infinity` for a producer_consumer.
  std::optional<std::int64_t> buffer_size = std::nullopt;
  BufferKeep buffer_keep = BufferKeep::last;
  DemandMode demand_mode = DemandMode::forward;  ///< producers only (GenStage's :demand)
  /// Consumers attach to it while the run goes on (Run::attach) and leave (Run::detach): it may
  /// have no subscriber when the run starts, and it keeps running when its last subscriber
  /// leaves (otherwise it stops then). Run::drain or Run::cancel ends it.
  bool dynamic = false;
};

/// Whether a stage instance that fails is restarted with a fresh handler (OTP's restart values;
/// engine/DESIGN.md 12).
enum class Restart {
  never,       ///< a failure stops it, as it always has (OTP `temporary`)
  on_failure,  ///< restarted after a failure: an exception from a callback, or a stop with an
               ///< error reason (OTP `transient`)
  always,      ///< also after it stops itself normally while it still has an input open (a
               ///< producer_consumer or consumer: a source that finishes is done; OTP `permanent`)
};

/// A stage's restart policy: which failures restart it, and how many restarts within a window of
/// the run's clock it may have before the next failure escalates as if it had no policy (OTP's
/// intensity and period).
struct RestartOptions {
  Restart restart = Restart::never;
  int max_restarts = 3;
  Duration restart_window = std::chrono::seconds(5);
};

/// How a run executes.
struct RunOptions {
  /// Threads of the run's oneTBB arena; 0 means oneTBB's default (the cores this process may
  /// use).
  int concurrency = 0;
  /// Run a cell made runnable by the current one next, on the same thread (no new task).
  bool direct_handoff = true;
  /// Messages a cell handles before it yields to others.
  std::size_t quantum = 64;
  /// End the whole run at the first stage failure (otherwise only cancel modes propagate it).
  bool fail_fast = true;
  /// Deterministic mode for tests: nothing runs until Run::run_until_idle() is called, and then
  /// everything runs on the calling thread in scheduling order.
  bool manual = false;
  /// Where warnings and errors go (GenStage's log lines). Default: standard error.
  std::function<void(LogLevel, std::string_view)> logger = {};
};

}  // namespace sluice
