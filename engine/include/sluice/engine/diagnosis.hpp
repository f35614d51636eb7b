#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string>
#include <unordered_map>
#include <vector>

#include <sluice/engine/metrics.hpp>

namespace sluice {

/// One reason a stage or an edge is waiting (Run::diagnose).
struct Finding {
  enum class Kind {
    accumulating,     ///< a producer in accumulate mode holds its demand (set_demand_mode)
    full_buffer,      ///< a producer's buffer is at buffer_size: what it emits beyond demand drops
    awaits_input,     ///< a source has demand it has not met: it waits for an external push, a
                      ///< message or a timer
    awaits_upstream,  ///< a producer_consumer has demand from downstream and no input to meet it
    consumer_busy,    ///< a consumer has events on the edge it has not handled (slow, or blocked
                      ///< inside a callback)
    awaits_downstream,  ///< a producer_consumer leaves events on its input: none of its own
                        ///< consumers asks (it handles events only as they ask)
    outstanding,  ///< the consumer asked and waits for the producer (see the producer's finding)
    zero_demand,  ///< the consumer asks for nothing more (manual demand not asked, or it is
                  ///< done), so the producer sends nothing on this edge
    restarted,    ///< the stage failed and was restarted (StageOptions::restart): how often, the
                  ///< last reason; a stage that keeps failing shows here before it escalates
  };
  Kind kind;
  std::string stage;     ///< the stage (instance) the finding is about; for an edge, the producer
  std::string consumer;  ///< for an edge: the consumer; empty for a stage
  std::string message;   ///< one line a person can act on, naming the stages and the figures
};

/// Why a run is waiting, stage by stage and edge by edge, read off one Metrics snapshot. It
/// describes the state, not whether the run is stuck: a caller that has seen no progress for a
/// while (the counters in Metrics stop moving) asks for it to learn which stage waits on what.
struct Diagnosis {
  std::vector<Finding> findings;

  bool empty() const noexcept { return findings.empty(); }
  /// The findings of one kind (tests and tools).
  std::vector<Finding> of(Finding::Kind kind) const {
    std::vector<Finding> out;
    std::copy_if(findings.begin(), findings.end(), std::back_inserter(out),
                 [&](const Finding& f) { return f.kind == kind; });
    return out;
  }
  /// One line per finding; "no stage is waiting" when there is none.
  std::string to_string() const {
    if (findings.empty()) return "no stage is waiting\n";
    std::string out;
    for (auto& f : findings) {
      out += f.message;
      out += '\n';
    }
    return out;
  }
};

namespace detail {

inline std::string quoted(const std::string& name) {
  return "'" + name + "'";
}

/// What a stage itself says: accumulate mode, a full buffer, demand it cannot meet.
inline void diagnose_stage(const StageMetrics& s, std::vector<Finding>& out) {
  auto num = [](auto v) { return std::to_string(v); };
  const std::string who = "stage " + quoted(s.name);
  if (s.accumulating) {
    out.push_back({Finding::Kind::accumulating,
                   s.name,
                   {},
                   who + " is in accumulate mode: it holds " + num(s.demand) + " demand and " +
                       num(s.buffered) + " events until set_demand_mode(forward)"});
    return;
  }
  if (s.buffer_capacity > 0 && s.buffered >= s.buffer_capacity)
    out.push_back({Finding::Kind::full_buffer,
                   s.name,
                   {},
                   who + " has a full buffer (" + num(s.buffered) + " of " +
                       num(s.buffer_capacity) +
                       " events): what it emits beyond demand is dropped (buffer_keep)"});
  if (s.demand <= 0 || s.buffered != 0) return;
  if (s.kind == StageKind::producer)
    out.push_back({Finding::Kind::awaits_input,
                   s.name,
                   {},
                   who + " has " + num(s.demand) +
                       " demand it has not met: it waits for input from outside the graph (an "
                       "external push, a message, a timer)"});
  else
    out.push_back({Finding::Kind::awaits_upstream,
                   s.name,
                   {},
                   who + " has " + num(s.demand) +
                       " demand from downstream and no input to meet it: it waits for its "
                       "producers"});
}

/// What an edge says: events its consumer has not handled, events asked and not sent, or zero
/// demand.
inline void diagnose_edge(const EdgeMetrics& e,
                          const std::unordered_map<std::string, const StageMetrics*>& by_name,
                          std::vector<Finding>& out) {
  auto num = [](auto v) { return std::to_string(v); };
  auto finished = [&](const std::string& name) {
    auto it = by_name.find(name);
    return it != by_name.end() && it->second->finished;
  };
  if (finished(e.consumer)) return;
  const std::string edge = "edge " + quoted(e.producer) + " -> " + quoted(e.consumer) + ": ";
  const auto in_flight = e.sent >= e.received ? e.sent - e.received : 0;
  const auto outstanding = e.asked > e.sent ? e.asked - e.sent : 0;
  auto c = by_name.find(e.consumer);
  const bool held_back = c != by_name.end() && c->second->kind == StageKind::producer_consumer &&
                         c->second->demand <= 0;
  if (in_flight > 0 && held_back) {
    out.push_back({Finding::Kind::awaits_downstream, e.producer, e.consumer,
                   edge + quoted(e.consumer) + " has " + num(in_flight) +
                       " events it does not handle yet: none of its own consumers asks"});
  } else if (in_flight > 0) {
    out.push_back({Finding::Kind::consumer_busy, e.producer, e.consumer,
                   edge + quoted(e.consumer) + " has " + num(in_flight) +
                       " events it has not handled (slow, or blocked in a callback)"});
  } else if (finished(e.producer)) {
    return;  // the edge has ended; the consumer finishes when all its inputs have
  } else if (outstanding > 0) {
    out.push_back(
        {Finding::Kind::outstanding, e.producer, e.consumer,
         edge + quoted(e.consumer) + " waits for " + num(outstanding) + " events it asked for"});
  } else {
    std::string held;
    if (e.queued > 0) held = "; " + quoted(e.producer) + " queues " + num(e.queued) + " for it";
    auto p = by_name.find(e.producer);
    if (p != by_name.end() && p->second->buffered > 0 && e.queued == 0)
      held = "; " + quoted(e.producer) + " holds " + num(p->second->buffered) + " events";
    out.push_back({Finding::Kind::zero_demand, e.producer, e.consumer,
                   edge + "zero demand: " + quoted(e.consumer) + " asks for nothing more" +
                       (e.manual_demand ? " (manual demand: it must call ask)" : "") + held});
  }
}

}  // namespace detail

/// Reads a Metrics snapshot (Run::metrics) into findings; finished stages and edges whose
/// consumer has finished are left out.
inline Diagnosis diagnose(const Metrics& m) {
  Diagnosis d;
  std::unordered_map<std::string, const StageMetrics*> by_name;
  for (auto& s : m.stages)
    by_name.emplace(s.name, &s);
  for (auto& s : m.stages) {
    if (s.restarts > 0)
      d.findings.push_back(
          {Finding::Kind::restarted,
           s.name,
           {},
           "stage " + detail::quoted(s.name) + " was restarted " + std::to_string(s.restarts) +
               " time" + (s.restarts == 1 ? "" : "s") + ", last after: " + s.last_restart_reason});
    if (!s.finished && s.kind != StageKind::consumer) detail::diagnose_stage(s, d.findings);
  }
  for (auto& e : m.edges)
    detail::diagnose_edge(e, by_name, d.findings);
  return d;
}

}  // namespace sluice
