// Throughput baselines for the sluice benchmarks (bench/baselines.cpp).
//
// Each baseline moves the int64_t events 0..N-1 from one producer thread to
// one consumer thread, which sums them; the sum is returned so that callers
// can check it against N*(N-1)/2. The calling thread only starts and joins the
// two std::threads, so thread start-up is part of whatever the caller times.
//
//   ring_handoff               hand-written SPSC ring (rigtorp-style cached
//                              indices), batched publication on both sides:
//                              the two-core hand-off limit.
//   moodycamel_demand_handoff  moodycamel::ConcurrentQueue with tokens and
//                              bulk operations, bounded by a GenStage-style
//                              demand (credit) counter.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sluice_bench {

/// Hand-written SPSC ring: the producer writes up to `batch` events per tail publication; the
/// consumer drains all available events per head publication.
std::int64_t ring_handoff(std::int64_t events, std::size_t batch);

/// moodycamel::ConcurrentQueue with a GenStage-style demand protocol: at most `max_demand`
/// events in flight.
std::int64_t moodycamel_demand_handoff(std::int64_t events, std::size_t max_demand);

}  // namespace sluice_bench
