#pragma once
// What the long-running suites (stress, reliability) read from the environment and print about
// a run while they watch it.

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include <sluice/sluice.hpp>

namespace sluice_test {

/// A whole number from the environment (decimal, or hexadecimal after 0x), if set.
inline std::optional<std::uint64_t> env_number(const char* var) {
  const char* v = std::getenv(var);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::strtoull(v, nullptr, 0);
}

/// The metrics, a line per stage instance and per edge.
inline std::string dump(const sluice::Metrics& m) {
  std::string out = "metrics:\n";
  for (auto& s : m.stages)
    out += "  stage " + s.name + " (instance " + std::to_string(s.instance) + "): in " +
           std::to_string(s.events_in) + " out " + std::to_string(s.events_out) + " buffered " +
           std::to_string(s.buffered) + " demand " + std::to_string(s.demand) + " dropped " +
           std::to_string(s.dropped) + " lost " + std::to_string(s.lost) + " filtered " +
           std::to_string(s.filtered) + (s.finished ? " finished: " + s.stop_reason : "") + "\n";
  for (auto& e : m.edges)
    out += "  edge " + e.producer + " -> " + e.consumer + ": sent " + std::to_string(e.sent) +
           " received " + std::to_string(e.received) + " untaken " + std::to_string(e.untaken) +
           " queued " + std::to_string(e.queued) +
           (e.partition.empty() ? "" : " partition " + e.partition) + "\n";
  return out;
}

}  // namespace sluice_test
