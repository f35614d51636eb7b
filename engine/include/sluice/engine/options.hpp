#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

namespace sluice {

/// A buffer size meaning "no bound" (GenStage's :infinity).
inline constexpr std::int64_t infinity = std::numeric_limits<std::int64_t>::max();

inline constexpr std::int64_t default_max_demand = 1000;
inline constexpr std::int64_t default_producer_buffer_size = 10000;

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

/// Per-subscription options (GenStage's subscription options).
struct SubscriptionOptions {
  std::int64_t max_demand = default_max_demand;           ///< most events in flight, >= 1
  std::optional<std::int64_t> min_demand = std::nullopt;  ///< re-ask threshold; default max/2
  CancelMode cancel = CancelMode::permanent;
  std::optional<std::int64_t> partition = std::nullopt;  ///< for partition dispatchers
  DemandControl demand = DemandControl::automatic;

  std::int64_t effective_min_demand() const noexcept { return min_demand.value_or(max_demand / 2); }
};

/// Options of a producer or producer_consumer.
struct ProducerOptions {
  /// Events kept beyond demand. Default: 10000 for a producer, `infinity` for a producer_consumer.
  std::optional<std::int64_t> buffer_size = std::nullopt;
  BufferKeep buffer_keep = BufferKeep::last;
  DemandMode demand = DemandMode::forward;  ///< producers only
};

/// An invalid option or topology, found before anything runs. The message names the stage and
/// the option.
class option_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A stage failed while running: a callback threw, or it broke the protocol. what() names the
/// stage.
class stage_error : public std::runtime_error {
 public:
  stage_error(std::string stage, const std::string& message)
      : std::runtime_error("stage '" + stage + "': " + message), stage_(std::move(stage)) {}
  const std::string& stage() const noexcept { return stage_; }

 private:
  std::string stage_;
};

/// Why a subscription or a stage ended.
struct Reason {
  enum class Kind : std::uint8_t { normal, shutdown, error };
  Kind kind = Kind::normal;
  std::string message;

  static Reason normal() { return {}; }
  static Reason shutdown() { return {Kind::shutdown, "shutdown"}; }
  static Reason error(std::string m) { return {Kind::error, std::move(m)}; }
  bool is_normal() const noexcept { return kind == Kind::normal; }
  bool is_error() const noexcept { return kind == Kind::error; }
};

}  // namespace sluice
