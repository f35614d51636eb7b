// The `genstage` engine of sluice-bench: Elixir's GenStage itself, running the reference shapes
// of ../shared/genstage-bench (gs_bench.exs) in a child process, so that GenStage's figures come
// from the same run and the same machine as Sluice's.
//
// Where the folder is: SLUICE_GENSTAGE_BENCH (the environment) if set, else the path CMake found
// at configure time (the source tree's ../shared/genstage-bench). gen_stage is compiled once into
// a cache folder (the build tree's genstage_ebin, or SLUICE_GENSTAGE_EBIN) by the folder's
// build.sh. The time is the one gs_bench.exs reports: the VM's start-up is outside it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sluice_bench::genstage {

/// The engine's name in sluice-bench's scenarios and table.
inline constexpr const char* engine_name = "genstage";

/// What one RESULT line of gs_bench.exs says.
struct Result {
  std::string name;
  std::int64_t events = 0;
  double seconds = 0;
};

/// Reads gs_bench.exs's output (stdout and stderr): its last line starting with "RESULT " must
/// name `variant` and have events > 0, seconds > 0 and ok=1. Anything else throws
/// std::runtime_error naming the variant and quoting the output (on one line).
Result parse_result(std::string_view variant, std::string_view output);

/// The events GenStage runs for a run asked of `events` at `max_demand`: capped so that one run
/// takes a few seconds at most (GenStage runs ~13 M events/s at max_demand 1000 on 2 cores,
/// ~6 M/s at 100, ~1 M/s at 10, ~0.2 M/s at 1).
std::int64_t scaled_events(std::int64_t events, std::int64_t max_demand);

/// The caps of scaled_events, for the table's note.
inline constexpr const char* scaling_note =
    "at most 20 M events per run (10 M at max_demand 100-999, 2 M at 10-99, 200 k below 10)";

/// Why the engine cannot run here (no genstage-bench folder, no elixir/elixirc), or "" if it can.
std::string unavailable();

/// Compiles gen_stage once (on disk: later processes reuse it) and returns the ebin folder.
/// Throws std::runtime_error if build.sh fails.
std::string ebin();

/// Runs gs_bench.exs `variant` on `events` events at `max_demand` and checks its RESULT line
/// (and that it ran `events` events).
Result run(const std::string& variant, std::int64_t events, std::int64_t max_demand);

}  // namespace sluice_bench::genstage
