#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <sluice/engine/options.hpp>
#include <sluice/engine/time.hpp>

namespace sluice {

/// One stage instance, as last published by the thread running it (approximate while running,
/// exact once the run has ended).
struct StageMetrics {
  std::string name;
  std::size_t instance = 0;
  StageKind kind = StageKind::producer;
  std::uint64_t events_in = 0;        ///< events handed to handle_events
  std::uint64_t events_out = 0;       ///< events sent to subscribers
  std::uint64_t buffered = 0;         ///< events in the producer buffer (and dispatcher queues)
  std::uint64_t dropped = 0;          ///< events discarded by a full buffer (passed to the hook)
  std::uint64_t lost = 0;             ///< events discarded because the stage stopped early
                                      ///< (a push source's: also what its stream still queued)
  std::uint64_t filtered = 0;         ///< events its dispatcher dropped on purpose (hash: none)
  std::int64_t demand = 0;            ///< demand received from subscribers and not yet served
  std::uint64_t buffer_capacity = 0;  ///< its buffer_size (0: no bound, or no output)
  bool accumulating = false;          ///< a producer in accumulate demand mode (GenStage demand/2)
  double busy_seconds = 0;            ///< time spent running
  bool finished = false;
  /// Once finished: why ("normal", "shutdown" or the error message).
  std::string stop_reason;
  /// Times it was restarted (StageOptions::restart), the last restart's reason and when it was
  /// (on the run's clock).
  std::uint64_t restarts = 0;
  std::string last_restart_reason;
  TimePoint last_restart_at{};
  /// Failures that cost only their events and left the handler in place (Context::resume_after:
  /// a map_blocking call that threw), counted toward max_restarts as restarts are.
  std::uint64_t resumes = 0;
};

/// One subscription (edge).
struct EdgeMetrics {
  std::string producer;
  std::string consumer;
  std::uint64_t sent = 0;      ///< events the producer put on the edge
  std::uint64_t received = 0;  ///< events the consumer has handled (sent - received: in flight,
                               ///< or lost if the consumer stopped early)
  std::int64_t untaken = 0;    ///< demand asked and not yet taken by the producer
  std::uint64_t asked = 0;     ///< demand the consumer asked in all (asked - sent: outstanding)
  bool manual_demand = false;  ///< the consumer asks by hand (DemandControl::manual)
  std::uint64_t queued = 0;    ///< events the producer's dispatcher holds for this consumer
                               ///< (a partition's queue: skew shows here)
  std::string partition;       ///< the partition this edge takes, if any ("3", "'odd'")
};

struct Metrics {
  std::vector<StageMetrics> stages;
  std::vector<EdgeMetrics> edges;

  /// Events emitted and not handed to any consumer: held by stages that stopped early, plus
  /// what sits (or was dropped unread) on edges. Exact once the run is done.
  std::uint64_t undelivered() const {
    std::uint64_t n = 0;
    for (auto& s : stages)
      n += s.lost;
    for (auto& e : edges)
      n += e.sent - e.received;
    return n;
  }
};

}  // namespace sluice
