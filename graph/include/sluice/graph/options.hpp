#pragma once

#include <any>
#include <cstddef>
#include <cstdint>
#include <optional>

#include <sluice/engine/options.hpp>

namespace sluice {

/// Options of one declared stage: how many instances, its producer side (buffer, demand mode)
/// and its input subscription(s) (GenStage's subscription options).
struct StageOptions {
  std::size_t instances = 1;
  // ---- input subscription ----
  std::int64_t max_demand = default_max_demand;
  std::optional<std::int64_t> min_demand = std::nullopt;
  CancelMode cancel = CancelMode::permanent;
  std::optional<Partition> partition = std::nullopt;  ///< default: instance i takes partition i
  DemandControl demand = DemandControl::automatic;
  std::any selector = {};  ///< broadcast only: sluice::selector<T>(predicate)
  // ---- output (producers, producer_consumers) ----
  std::optional<std::int64_t> buffer_size = std::nullopt;
  BufferKeep buffer_keep = BufferKeep::last;
  DemandMode demand_mode = DemandMode::forward;  ///< producers only
  /// Consumers may attach while it runs (Run::attach) and leave (Run::detach): it needs no
  /// subscriber when the run starts and keeps running when its last one leaves, until
  /// Run::drain or Run::cancel.
  bool dynamic = false;
  // ---- fusion (engine/DESIGN.md 10) ----
  /// A chain of function stages (map, filter, flat_map; one instance each) and the consumer it
  /// ends in run in one cell, which calls them in turn on each batch, with no edge between
  /// them; metrics, errors and DOT still name each stage. False keeps this stage in a cell of
  /// its own (as a member or as the consumer hosting them).
  bool fuse = true;
  // ---- supervision (engine/DESIGN.md 12) ----
  /// Restart an instance that fails with a fresh copy of its handler, keeping its subscriptions
  /// on both sides (OTP's transient: on_failure; permanent: always, which also restarts a
  /// stage that stops itself normally while an input is open). What the failed call held is
  /// counted as lost.
  Restart restart = Restart::never;
  /// Restarts allowed within restart_window of the run's clock; the next failure escalates as
  /// if there were no policy (OTP's intensity and period).
  int max_restarts = 3;
  Duration restart_window = std::chrono::seconds(5);

  SubscriptionOptions subscription() const {
    return {max_demand, min_demand, cancel, partition, demand, selector};
  }
  ProducerOptions producer() const { return {buffer_size, buffer_keep, demand_mode, dynamic}; }
  RestartOptions restart_options() const { return {restart, max_restarts, restart_window}; }
};

}  // namespace sluice
