// Drain and cancel under load: random graphs (the shared model's lines) fed by fast endless
// generators or by application threads pushing, stopped when the sinks have seen a random number of
// events (never after a random sleep) by drain(), cancel() (from the test thread or another one),
// request_cancel() from inside a stage, or by destroying the Run. Then: no exception escapes a
// destructor, whatever state the objects are destroyed in.
//
// Seeded: each failure prints its seed; SLUICE_FAULT_SEED=<seed> replays one.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <reliability/common.hpp>

namespace {

namespace rg = sluice_test::rg;
using rel::Ev;

enum class Stop {
  drain,
  drain_from_thread,
  cancel,
  cancel_from_thread,
  request_from_stage,
  destroy
};
constexpr int stop_kinds = 6;
constexpr const char* stop_names[] = {"drain",
                                      "drain from another thread",
                                      "cancel",
                                      "cancel from another thread",
                                      "request_cancel from a stage",
                                      "destroying the Run"};

struct Counters {
  std::atomic<std::uint64_t> generated{0};  // by the generators
  std::atomic<std::uint64_t> pushed{0};     // successful pushes
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> rejected_filter{0};
  std::atomic<std::uint64_t> rejected_selector{0};
  std::array<std::atomic<std::uint64_t>, 8> emitted{};  // by stage
  std::atomic<sluice::Run*> run{nullptr};               // for request_cancel from a stage
  std::atomic<bool> requested{false};
  std::uint64_t request_at = 0;
};

/// A random line (support/random_graph.hpp): an endless generator or a push source, a chain of
/// 0 to 2 maps and filters, and the sinks behind the chain's last stage; and how it is stopped.
struct Scenario {
  rg::GraphSpec graph;
  Stop stop = Stop::drain;
  std::size_t pushers = 1;    // threads pushing into a push source
  std::uint64_t stop_at = 0;  // events the sinks have seen

  bool push() const { return graph.stages[0].form == rg::Form::push; }
  std::size_t fan() const { return graph.fan_out(); }
  rg::Dispatch disp() const { return graph.stages[fan()].dispatch; }
  std::string describe() const {
    std::string s =
        std::string(stop_names[static_cast<int>(stop)]) + " at " + std::to_string(stop_at);
    if (push()) s += "; " + std::to_string(pushers) + " threads push";
    return s + "\n" + graph.describe();
  }
};

Scenario make_scenario(std::uint64_t seed) {
  rg::Seeded e(seed);
  Scenario s;
  s.stop = static_cast<Stop>(seed % stop_kinds);
  const bool push = e.uniform<int>(0, 2) == 0;
  rg::Knobs k;
  k.shape = rg::Shape::line;
  k.max_stages = 6;
  k.max_instances = 2;
  k.source_forms = {push ? rg::Form::push : rg::Form::generator};
  k.stage_forms = {rg::Form::map, rg::Form::filter};
  k.sink_forms = {rg::Form::for_each};
  k.broadcast = 1.0 / 3;
  k.partition = 1.0 / 3;
  // A push source's own emitted count comes from its counters, which count a broadcast's
  // copies: a stage after it broadcasts instead.
  k.source_broadcasts = !push;
  k.selector = 0.5;
  k.max_demands = {1, 3, 64, 1000};
  k.one_max_demand = true;
  k.min_demand = 0.0;
  k.source_buffer = 0.0;
  k.stage_buffer = 0.0;
  s.graph = rg::generate(e, k);
  s.graph.seed = seed;
  s.pushers = e.uniform<std::size_t>(1, 2);
  s.stop_at = e.uniform<std::uint64_t>(1, 20000);
  return s;
}

using CountersPtr = std::shared_ptr<Counters>;

/// The scenario's stages, for the shared builder: endless generators, functions that count what
/// they pass and reject, sinks that count deliveries (and may request the cancel).
struct Code {
  const Scenario& s;
  CountersPtr c;

  auto generator(std::size_t) const {
    return [c = c, i = std::uint64_t{0}]() mutable -> std::optional<Ev> {
      c->generated.fetch_add(1, std::memory_order_relaxed);
      c->emitted[0].fetch_add(1, std::memory_order_relaxed);
      return rel::make_ev(i++);
    };
  }
  auto map(std::size_t i) const {
    return [c = c, i](Ev e) {
      c->emitted[i].fetch_add(1, std::memory_order_relaxed);
      e.id = e.id * 7 + 1;
      return e;
    };
  }
  auto filter(std::size_t i) const {
    return [c = c, i, f = s.graph.stages[i].filter](const Ev& e) {
      const bool keep = f.keeps(e.id);
      if (keep)
        c->emitted[i].fetch_add(1, std::memory_order_relaxed);
      else
        c->rejected_filter.fetch_add(1, std::memory_order_relaxed);
      return keep;
    };
  }
  auto selector(std::size_t i, std::size_t k) const {
    return [c = c, sel = s.graph.stages[i].inputs[k].selector](const Ev& e) {
      const bool keep = sel.accepts(e.id);
      if (!keep) c->rejected_selector.fetch_add(1, std::memory_order_relaxed);
      return keep;
    };
  }
  template <class Declare>
  void partition(std::size_t i, Declare&& declare) const {
    declare([p = s.graph.stages[i].partition](Ev& e) { return p.of(e.id); });
  }
  auto for_each(std::size_t) const {
    return [c = c](const Ev& e) {
      if (e.body.empty()) throw std::logic_error("an event lost its body");
      const auto n = c->delivered.fetch_add(1, std::memory_order_relaxed) + 1;
      // At the first delivery from request_at on once the test thread has published the
      // Run (a sink can get there before it does; the sources are endless, so one comes).
      if (c->request_at != 0 && n >= c->request_at && !c->requested.load())
        if (auto* r = c->run.load(); r != nullptr && !c->requested.exchange(true))
          r->request_cancel();
    };
  }
};

using rel::as_signed;
using rel::i64;

/// produced + copies == delivered + dropped + filtered + undelivered, where `produced` is what
/// the generators made (or, for a push source, `push_emitted`), and `copies` the extra copies a
/// broadcast made.
void check_accounting(const Scenario& s, Counters& c, const sluice::Metrics& m,
                      std::uint64_t produced) {
  auto [dropped, filtered] = rel::dropped_and_filtered(m);
  filtered += as_signed(c.rejected_filter.load() + c.rejected_selector.load());
  i64 copies = 0;
  if (s.disp() == rg::Dispatch::broadcast) {
    const auto emitted = s.fan() == 0 ? produced : c.emitted[s.fan()].load();
    copies = rel::broadcast_copies(m, s.graph.stages[s.fan()].name, as_signed(emitted),
                                   as_signed(c.rejected_selector.load()));
  }
  rel::check_balance(m, as_signed(produced), copies, as_signed(c.delivered.load()), dropped,
                     filtered);
}

/// The events the push source took in: what it sent, dropped, or still held when it stopped
/// (in its buffer or in the push handle's queue: both are counted as lost).
std::uint64_t push_emitted(const Scenario& s, const sluice::Metrics& m) {
  std::uint64_t n = 0;
  for (auto& st : m.stages)
    if (st.name == s.graph.stages[0].name) n += st.events_out + st.dropped + st.lost;
  return n;
}

struct Pushers {
  std::vector<std::thread> threads;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> closed{0};

  /// Blocking push() when the run will be drained (drain frees every slot); push_for in a loop
  /// otherwise, so the timed push is exercised too.
  void start(sluice::PushHandle<Ev> h, std::size_t n, bool blocking, CountersPtr c) {
    for (std::size_t t = 0; t < n; ++t)
      threads.emplace_back([this, h, t, blocking, c]() mutable {
        for (std::uint64_t i = 0; !stop.load(); ++i) {
          try {
            const auto id = (std::uint64_t{t} << 40) | i;
            if (blocking) {
              h.push(rel::make_ev(id));
            } else if (!h.push_for(rel::make_ev(id), std::chrono::milliseconds(1))) {
              continue;
            }
            c->pushed.fetch_add(1, std::memory_order_relaxed);
          } catch (const sluice::closed_error&) {
            closed.fetch_add(1);
            return;
          }
        }
      });
  }
  void join() {
    stop = true;
    for (auto& t : threads)
      t.join();
    threads.clear();
  }
  ~Pushers() {
    if (!threads.empty()) join();
  }
};

void run_scenario(const Scenario& s) {
  auto c = std::make_shared<Counters>();
  if (s.stop == Stop::request_from_stage) c->request_at = s.stop_at;
  Code code{s, c};
  auto built = rg::build<Ev>(s.graph, code);
  const bool draining = s.stop == Stop::drain || s.stop == Stop::drain_from_thread;
  Pushers pushers;
  std::optional<sluice::Run> run_slot;
  run_slot.emplace(built.graph.run(rel::quiet()));
  auto& run = *run_slot;
  c->run = &run;
  if (s.push()) pushers.start(built.pushes.at(0), s.pushers, draining, c);
  auto mine = [&] { return c->delivered.load() + c->pushed.load() + c->generated.load(); };
  if (!rel::await(
          run, [&] { return c->delivered.load() >= s.stop_at || run.done(); },
          "the sinks to see events", mine))
    return rel::abandon(run);
  if (s.stop != Stop::request_from_stage) REQUIRE_FALSE(run.done());  // endless sources
  switch (s.stop) {
    case Stop::drain: {
      CHECK_NOTHROW(run.drain());
      break;
    }
    case Stop::drain_from_thread: {
      std::thread t([&] { CHECK_NOTHROW(run.drain()); });
      if (!rel::await_done(run)) {
        t.join();
        return;
      }
      t.join();
      break;
    }
    case Stop::cancel:
    case Stop::cancel_from_thread: {
      sluice::Run::CancelReport report;
      if (s.stop == Stop::cancel) {
        report = run.cancel();
      } else {
        std::thread t([&] { report = run.cancel(); });
        if (!rel::await_done(run)) {
          t.join();
          return;
        }
        t.join();
      }
      CHECK(run.done());
      CHECK(report.undelivered == report.metrics.undelivered());
      std::uint64_t dropped = 0;
      for (auto& st : report.metrics.stages)
        dropped += st.dropped;
      CHECK(report.dropped == dropped);
      break;
    }
    case Stop::request_from_stage:
      if (!rel::await_done(run)) return;
      CHECK(c->requested.load());
      break;
    case Stop::destroy: {
      // The destructor cancels and waits: it must return, not throw. Nothing the watchdog can
      // see moves while it works, so this is a hang detector with a deadline far beyond any
      // slow machine's join, not a speed check.
      std::atomic<bool> gone{false};
      std::thread t([&] {
        CHECK_NOTHROW(run_slot.reset());
        gone = true;
      });
      const auto deadline = std::chrono::steady_clock::now() + 10 * rel::stall_limit();
      while (!gone.load() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      if (!gone.load()) {
        std::fprintf(stderr, "reliability: seed %llu: ~Run does not return\n",
                     static_cast<unsigned long long>(*s.graph.seed));
        std::abort();
      }
      t.join();
      if (s.push()) built.pushes[0].close();
      pushers.join();
      return;
    }
  }
  if (s.push()) {
    built.pushes[0].close();
    pushers.join();
  }
  REQUIRE(run.done());
  CHECK_NOTHROW(run.wait());  // a drain or a cancel is no stage failure
  const auto m = run.metrics();
  if (draining) {
    // Drain loses nothing: every event emitted (every successful push) is delivered.
    CHECK(m.undelivered() == 0);
    for (auto& st : m.stages) {
      CHECK(st.dropped == 0);
      CHECK(st.stop_reason == "normal");
    }
    const auto produced = s.push() ? c->pushed.load() : c->generated.load();
    if (s.push()) CHECK(push_emitted(s, m) == c->pushed.load());
    check_accounting(s, *c, m, produced);
  } else {
    // A cancel loses events but reports each: every successful push is sent, dropped or lost.
    const auto produced = s.push() ? c->pushed.load() : c->generated.load();
    if (s.push()) CHECK(push_emitted(s, m) == c->pushed.load());
    check_accounting(s, *c, m, produced);
  }
}

}  // namespace

TEST_SUITE("reliability.drain_cancel") {

bool drains_a_push_source(const Scenario& s) {
  return s.push() && (s.stop == Stop::drain || s.stop == Stop::drain_from_thread);
}

TEST_CASE("drain and cancel under load: nothing is lost or every loss is reported") {
  for (auto seed : rel::seeds(0x53u << 20, 150)) {
    const auto s = make_scenario(seed);
    if (drains_a_push_source(s) && !rel::env_number("SLUICE_FAULT_SEED")) continue;
    CAPTURE(seed);
    INFO(s.describe());
    if (rel::env_number("SLUICE_VERBOSE")) MESSAGE(seed << " " << s.describe());
    run_scenario(s);
  }
}

// Found here (seeds 87031824, 87031837, 87031842): a push() that returned normally while the
// run was being drained could enqueue its event after the push source had taken its last events
// and finished. Now a push in flight holds the source back (PushState's pending count).
TEST_CASE("drain delivers every successful push") {
  for (auto seed : rel::seeds(0x53u << 20, 150)) {
    const auto s = make_scenario(seed);
    if (!drains_a_push_source(s)) continue;
    CAPTURE(seed);
    INFO(s.describe());
    run_scenario(s);
  }
}

enum class State { before_run, running, failed, cancelled, drained };
constexpr const char* state_names[] = {"before run", "running", "failed", "cancelled",
                                       "after drain"};

/// A push source, a map that throws (in the failed state: at its 3rd event), a
/// stream; then the Graph, the push handle, the stream and the Run are destroyed in `order`.
void destroy_in(State state, const std::array<int, 4>& order) {
  std::optional<sluice::Graph> graph;
  graph.emplace();
  // Armed in every state but a drain's; reached only in the failed state.
  const int throw_at = state == State::failed ? 3 : (state == State::drained ? -1 : 1'000'000);
  auto [h, src] = graph->push_source<Ev>("in", 8);
  std::optional<sluice::PushHandle<Ev>> handle(h);
  std::optional<sluice::PullStream<Ev>> stream(src.map("maybe-throws",
                                                       [throw_at, n = 0](Ev e) mutable {
                                                         if (++n == throw_at)
                                                           throw rel::EventFault("injected in map",
                                                                                 std::move(e));
                                                         return e;
                                                       })
                                                   .stream("out", 4));
  std::optional<sluice::Run> run;
  if (state != State::before_run) run.emplace(graph->run(rel::quiet()));
  std::uint64_t id = 0;
  auto feed = [&](std::uint64_t n) {  // never blocks: the run may be gone or full
    try {
      for (std::uint64_t i = 0; i < n; ++i)
        if (!handle->push_for(rel::make_ev(id++), std::chrono::milliseconds(1))) break;
    } catch (const sluice::closed_error&) {  // the source has stopped: pushes are refused
      CHECK(state != State::running);
    }
  };
  switch (state) {
    case State::before_run:
      break;
    case State::running:
      feed(20);
      CHECK(stream->next().has_value());
      break;
    case State::failed: {
      // No reader here: the map fails on its 3rd event, before the stream's capacity is used.
      const bool ended = rel::await(
          *run,
          [&] {
            feed(1);
            return run->done();
          },
          "the map to fail");
      if (!ended) rel::abandon(*run);
      CHECK_THROWS_AS(run->wait(), sluice::stage_error);
      break;
    }
    case State::cancelled:
      feed(20);
      CHECK(stream->next().has_value());
      run->cancel();
      break;
    case State::drained: {
      feed(3);
      std::thread reader([&] {
        while (stream->next()) {
        }
      });
      CHECK_NOTHROW(run->drain());
      reader.join();
      break;
    }
  }
  for (int which : order) {
    switch (which) {
      case 0:
        CHECK_NOTHROW(graph.reset());
        break;
      case 1:
        CHECK_NOTHROW(handle.reset());
        break;
      case 2:
        CHECK_NOTHROW(stream.reset());
        break;
      default:
        CHECK_NOTHROW(run.reset());
        break;
    }
  }
}

TEST_CASE("no exception escapes a destructor: Run Graph push handle and stream in every state") {
  for (int st = 0; st < 5; ++st) {
    std::array<int, 4> order{0, 1, 2, 3};
    do {
      CAPTURE(state_names[st]);
      CAPTURE(order[0]);
      CAPTURE(order[1]);
      CAPTURE(order[2]);
      CAPTURE(order[3]);
      destroy_in(static_cast<State>(st), order);
    } while (std::next_permutation(order.begin(), order.end()));
  }
}

}  // TEST_SUITE("reliability.drain_cancel")
