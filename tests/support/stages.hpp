#pragma once
// The small stages the suites and the benchmarks share: sources that count, run for ever or
// wait, sinks that discard, count or sum, and run options that discard the engine's log lines.
// Public API only. The engine copies a handler for each instance: what a test reads after the run
// lives behind a pointer the copies share.

#include <any>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include <sluice/sluice.hpp>

namespace sluice_test {

/// Emits next, next + 1, ..., limit - 1 as demand arrives (one ctx.emit per event), then
/// finishes. `E` is built from the std::int64_t count.
template <class E = std::int64_t>
struct CountingSource {
  std::int64_t next = 0;
  std::int64_t limit = 0;
  void handle_demand(std::size_t n, sluice::Context<E>& ctx) {
    for (std::size_t i = 0; i < n && next < limit; ++i)
      ctx.emit(static_cast<E>(next++));
    if (next == limit) ctx.finish();
  }
};

/// Emits 0, 1, 2, ... for as long as it is asked (a cancel, a stop or a failure ends the run).
/// `emitted` counts what it emitted: one instance, read after the run.
template <class E = std::int64_t>
struct EndlessSource {
  std::shared_ptr<std::int64_t> emitted = std::make_shared<std::int64_t>(0);
  void handle_demand(std::size_t n, sluice::Context<E>& ctx) {
    for (std::size_t i = 0; i < n; ++i)
      ctx.emit(static_cast<E>((*emitted)++));
  }
};

/// Emits nothing; any message (send_info) finishes it.
template <class E = std::int64_t>
struct IdleSource {
  void handle_demand(std::size_t, sluice::Context<E>&) {}
  void handle_info(std::any&, sluice::Context<E>& ctx) { ctx.finish(); }
};

/// Takes its events and does nothing with them. It takes them mutable (std::span<E>), which a
/// broadcast refuses; NullSink<const E> reads them shared.
template <class E = std::int64_t>
struct NullSink {
  void handle_events(std::span<E>, sluice::Context<void>&) {}
};

/// Counts the events it receives, over all its instances.
template <class E = std::int64_t>
struct CountingSink {
  std::shared_ptr<std::atomic<std::int64_t>> count = std::make_shared<std::atomic<std::int64_t>>(0);
  void handle_events(std::span<const E> in, sluice::Context<void>&) {
    count->fetch_add(static_cast<std::int64_t>(in.size()), std::memory_order_relaxed);
  }
};

/// Sums what it receives; each instance adds its sum to `*total` when an input ends (so the
/// instances share no counter on the event path). Read `*total` after the run.
template <class E = std::int64_t>
struct SummingSink {
  std::atomic<std::int64_t>* total;
  std::int64_t local = 0;
  void handle_events(std::span<const E> in, sluice::Context<void>&) {
    for (const auto& e : in)
      local += static_cast<std::int64_t>(e);
  }
  void handle_cancel(const sluice::CancelInfo&, sluice::Context<void>&) {
    total->fetch_add(local);
    local = 0;
  }
};

/// A logger that discards every line.
inline void discard_log(sluice::LogLevel, std::string_view) {}

/// `options` with a logger that discards every line: the runs that fail, stop or drop on
/// purpose, whose log would only be noise.
inline sluice::RunOptions quiet(sluice::RunOptions options = {}) {
  options.logger = discard_log;
  return options;
}

}  // namespace sluice_test
