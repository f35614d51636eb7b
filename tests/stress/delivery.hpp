// The stress suite over the shared random-graph model (support/random_graph.hpp): its knobs (DAGs
// of 2-12 stages written as classes, random instances, dispatchers, demand options, speeds and
// run options), the stage code that records what every instance emitted and received, and the
// checker that verifies, at every producer, that each edge delivered exactly what its
// dispatcher promises.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <sluice/sluice.hpp>

#include "support/random_graph.hpp"

namespace stress {

namespace rg = sluice_test::rg;

/// An event: its origin (source stage, source instance, sequence there) and its immediate hop
/// (the stage instance that emitted it and its position in that instance's output).
struct Ev {
  std::uint32_t src = 0, src_inst = 0, seq = 0;
  std::uint32_t hop_stage = 0, hop_inst = 0, hop_seq = 0;
};

struct Origin {
  std::uint32_t src = 0, src_inst = 0, seq = 0;
  friend bool operator==(const Origin&, const Origin&) = default;
};

inline Origin origin_of(const Ev& e) {
  return {e.src, e.src_inst, e.seq};
}

/// What the spec's selectors, filters and partitions look at: the origin.
inline std::uint64_t key_of(const Origin& o) {
  return (std::uint64_t{o.src} << 48) ^ (std::uint64_t{o.src_inst} << 32) ^ o.seq;
}

/// The stress graphs: up to `deliveries` events over all edges; `hash_drops`: some partition
/// hashes drop events (std::nullopt).
rg::Knobs knobs(std::uint64_t deliveries, bool hash_drops);

/// Timers and restarts on top of a drawn graph (from their own draws, so a seed's graph is the
/// same with and without them): about a third of the stages keep a periodic timer (20 us to
/// 1 ms); half of those fail once per instance, at the first tick after a few calls, under a
/// restart policy (on_failure or always). The failing call emits nothing; the restarted
/// instance loses its buffer (a suffix of what it emitted, which the checker leaves out of what
/// its edges must deliver, and expects as its `lost`).
void add_timers(rg::GraphSpec& spec);

// ---- what each stage instance saw ---------------------------------------------------------------

/// One stage instance's record. Written only by the instance (one thread at a time), read after
/// the run has ended.
struct InstanceRecord {
  std::vector<Origin> emitted;  // by hop_seq
  std::vector<Ev> received;     // in arrival order
  std::vector<std::string> problems;
  struct Sub {
    bool known = false;
    std::uint32_t hop_stage = 0, hop_inst = 0;
  };
  std::vector<Sub> subs;               // by SubscriptionId
  std::uint64_t work = 0;              // a sink for the spin loops
  std::uint64_t calls = 0, ticks = 0;  // handle_demand / handle_events calls; timer ticks
  bool faulted = false;                // its tick's fault was thrown (once per instance)
  std::size_t emitted_at_fault = 0;    // emitted.size() then
  void problem(std::string p) {
    if (problems.size() < 20) problems.push_back(std::move(p));
  }
};

struct Records {
  std::vector<std::vector<InstanceRecord>> stages;  // [stage][instance]
  explicit Records(const rg::GraphSpec& g) {
    for (auto& s : g.stages)
      stages.emplace_back(s.instances);
  }
};

/// The checker's findings: an empty list means every check passed.
struct Findings {
  std::vector<std::string> problems;
  std::size_t checks = 0;
  void fail(std::string p) {
    if (problems.size() < 40) problems.push_back(std::move(p));
    ++failed;
  }
  std::size_t failed = 0;
  std::string to_string() const;
};

/// Every log line the engine wrote during a run (any thread).
struct LogSink {
  std::mutex mutex;
  std::vector<std::string> lines;
};

/// The log lines a run of `spec` should not have written. The expected ones are GenStage's
/// warning of a DemandDispatcher whose subscribers ask different max_demand, and the restart of
/// an instance whose fault was thrown.
std::vector<std::string> unexpected_logs(const rg::GraphSpec& spec, const Records& records,
                                         const std::vector<std::string>& lines);

/// Builds the sluice graph of `spec`, recording into `records`.
sluice::Graph build(const rg::GraphSpec& spec, Records& records);

/// The bound a stage instance's `buffered` metric may never exceed.
std::uint64_t buffered_bound(const rg::GraphSpec& spec, std::size_t stage);

/// Checks a finished run: records against the dispatchers' promises, and the final metrics.
Findings check(const rg::GraphSpec& spec, const Records& records,
               const sluice::Metrics& final_metrics);

/// Checks one metrics sample taken while running, against the previous one (nullptr: first).
void check_sample(const rg::GraphSpec& spec, const sluice::Metrics& m,
                  const sluice::Metrics* previous, Findings& f);

}  // namespace stress
