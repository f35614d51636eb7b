// Shared by the reliability suite: the event type (a heap-allocated string, so LeakSanitizer sees
// any event a failure path forgets), seeds, the watchdog that turns a hang into a failure with a
// metrics dump, and the balance every run's counters must strike. The graphs come from the shared
// random-graph model (support/random_graph.hpp).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

#include <support/random_graph_builder.hpp>
#include <support/stages.hpp>
#include <support/watch.hpp>

namespace rel {

namespace rg = sluice_test::rg;
using sluice_test::dump;
using sluice_test::env_number;
using sluice_test::quiet;

/// An event: an id (its key: what partitions, filters and selectors look at) and a body long
/// enough to live on the heap.
struct Ev {
  std::uint64_t id = 0;
  std::string body;
};

inline Ev make_ev(std::uint64_t id) {
  return Ev{id, "event " + std::to_string(id) + " with a body that lives on the heap"};
}

/// An exception that carries an event (heap memory the failure path must free).
class EventFault : public std::runtime_error {
 public:
  EventFault(const std::string& what, Ev ev) : std::runtime_error(what), ev_(std::move(ev)) {}
  const Ev& event() const noexcept { return ev_; }

 private:
  Ev ev_;
};

/// Seed counts are divided by this under sanitizers (slower by 3 to 15 times).
inline int sanitizer_divisor() {
#if defined(__SANITIZE_THREAD__)
  return 8;
#elif defined(__SANITIZE_ADDRESS__)
  return 3;
#else
  return 1;
#endif
}

/// The seeds a seeded test runs: SLUICE_FAULT_SEED replays one; otherwise `count` (scaled
/// down under sanitizers, or SLUICE_FAULT_SEEDS) seeds from `base`.
inline std::vector<std::uint64_t> seeds(std::uint64_t base, int count) {
  if (auto one = env_number("SLUICE_FAULT_SEED")) return {*one};
  auto n = static_cast<std::uint64_t>(count / sanitizer_divisor());
  if (auto forced = env_number("SLUICE_FAULT_SEEDS")) n = *forced;
  std::vector<std::uint64_t> out;
  if (auto first = env_number("SLUICE_FAULT_SEED_BASE")) base = *first;
  for (std::uint64_t i = 0; i < n; ++i)
    out.push_back(base + i);
  return out;
}

/// Anything that moves while a run works.
inline std::uint64_t activity(const sluice::Metrics& m) {
  std::uint64_t a = 0;
  for (auto& s : m.stages)
    a += s.events_in + s.events_out + s.lost + s.dropped + s.filtered + (s.finished ? 1 : 0);
  for (auto& e : m.edges)
    a += e.sent + e.received + static_cast<std::uint64_t>(e.untaken);
  return a;
}

/// How long nothing at all may move before a wait is declared hung: generous, so a slow or
/// loaded machine never fails a test (SLUICE_STALL_SECONDS overrides it).
inline std::chrono::seconds stall_limit() {
  return std::chrono::seconds(env_number("SLUICE_STALL_SECONDS").value_or(60));
}

/// Polls `ready` (every millisecond) until it holds; true then. If neither the run's metrics nor
/// `mine` (the test's own counters) move for stall_limit(), reports `what` with a metrics dump
/// and returns false.
template <class Ready>
bool await(const sluice::Run& run, Ready&& ready, const std::string& what,
           const std::function<std::uint64_t()>& mine = {}) {
  auto last = activity(run.metrics()) + (mine ? mine() : 0);
  auto since = std::chrono::steady_clock::now();
  while (!ready()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const auto now_activity = activity(run.metrics()) + (mine ? mine() : 0);
    const auto now = std::chrono::steady_clock::now();
    if (now_activity != last) {
      last = now_activity;
      since = now;
    } else if (now - since > stall_limit()) {
      FAIL_CHECK("no progress for " << stall_limit().count() << " s while waiting for " << what
                                    << "\n"
                                    << dump(run.metrics()));
      return false;
    }
  }
  return true;
}

/// After a failed await: cancels the run and waits for it to end; a run that does not end even
/// then would hang the Run's destructor, so the process stops here with the dump.
inline void abandon(sluice::Run& run) {
  run.request_cancel();
  if (await(
          run, [&] { return run.done(); }, "the run to end after request_cancel"))
    return;
  std::fprintf(stderr, "reliability: the run does not end even after a cancel:\n%s\n",
               dump(run.metrics()).c_str());
  std::abort();
}

/// Waits for the run to end (watchdog); false if it hung (the run was then abandoned).
inline bool await_done(sluice::Run& run, const std::string& what = "the run to end") {
  if (await(
          run, [&] { return run.done(); }, what))
    return true;
  abandon(run);
  return false;
}

inline bool is_instance_of(const std::string& instance, const std::string& stage) {
  return instance == stage || instance.rfind(stage + "#", 0) == 0;
}

// ---- the balance ----------------------------------------------------------------------------

using i64 = std::int64_t;

inline i64 as_signed(std::uint64_t v) {
  return static_cast<i64>(v);
}

/// What the stages' metrics count as dropped and as filtered.
struct Dropped {
  i64 dropped = 0, filtered = 0;
};
inline Dropped dropped_and_filtered(const sluice::Metrics& m) {
  Dropped d;
  for (auto& st : m.stages) {
    d.dropped += as_signed(st.dropped);
    d.filtered += as_signed(st.filtered);
  }
  return d;
}

/// The extra copies a broadcast at stage `x` made: what it sent over its edges, plus what its
/// subscriptions' selectors rejected (`rejected`), less what it dispatched once (`emitted`, less
/// what it kept back: dropped or lost).
inline i64 broadcast_copies(const sluice::Metrics& m, const std::string& x, i64 emitted,
                            i64 rejected) {
  i64 sent = 0, kept_back = 0;
  for (auto& e : m.edges)
    if (is_instance_of(e.producer, x)) sent += as_signed(e.sent);
  for (auto& st : m.stages)
    if (is_instance_of(st.name, x)) kept_back += as_signed(st.dropped + st.lost);
  return sent + rejected - (emitted - kept_back);
}

/// Every event is accounted for:
/// produced + copies == delivered + dropped + filtered + undelivered.
inline void check_balance(const sluice::Metrics& m, i64 produced, i64 copies, i64 delivered,
                          i64 dropped, i64 filtered) {
  const i64 undelivered = as_signed(m.undelivered());
  CAPTURE(produced);
  CAPTURE(copies);
  CAPTURE(delivered);
  CAPTURE(dropped);
  CAPTURE(filtered);
  CAPTURE(undelivered);
  INFO(dump(m));
  CHECK(produced + copies == delivered + dropped + filtered + undelivered);
}

}  // namespace rel
