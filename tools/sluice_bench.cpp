// sluice-bench: runs named scenarios (or all of them) through Sluice's public builder API and
// through the alternatives a user could pick, in the same binary, and prints events/s, the ratio
// to each baseline, peak RSS and latency percentiles. Each measurement runs in its own child
// process (fork before any thread exists), so its peak RSS is its own.
//
//   sluice-bench [SCENARIO...] [--events N] [--max-demand N] [--instances N]
//                [--repetitions N] [--engines E1,E2] [--json FILE] [--dot SCENARIO] [--list]
//                [--quick]
#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sluice/sluice.hpp>

#include "baselines.hpp"
#include "tbb_baselines.hpp"
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using I64 = std::int64_t;
using Clock = std::chrono::steady_clock;

struct Params {
  I64 events = 20'000'000;
  I64 max_demand = sluice::default_max_demand;
  std::size_t instances = 4;
  int repetitions = 3;
};

/// Latencies in constant memory (the harness must not weigh on the peak RSS it reports):
/// 32 buckets per power of two, so a percentile is within 2.2 % of the true value.
class Histogram {
 public:
  void add(I64 ns) {
    ++counts_[bucket(ns < 1 ? 1 : ns)];
    ++total_;
  }
  void merge(const Histogram& o) {
    for (std::size_t i = 0; i < counts_.size(); ++i)
      counts_[i] += o.counts_[i];
    total_ += o.total_;
  }
  bool empty() const { return total_ == 0; }
  /// The value below which a fraction q of the samples lie (the bucket's midpoint).
  double percentile(double q) const {
    const auto want = static_cast<std::uint64_t>(std::ceil(q * double(total_)));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= want && counts_[i] > 0) return (low(i) + low(i + 1)) / 2;
    }
    return low(counts_.size());
  }

 private:
  static constexpr int sub = 32;
  static std::size_t bucket(I64 ns) {
    const auto v = static_cast<std::uint64_t>(ns);
    const int e = static_cast<int>(std::bit_width(v)) - 1;  // v in [2^e, 2^(e+1))
    const auto frac = e >= 5 ? (v >> (e - 5)) & (sub - 1) : (v << (5 - e)) & (sub - 1);
    return static_cast<std::size_t>(e) * sub + frac;
  }
  static double low(std::size_t i) {
    return std::ldexp(1.0 + double(i % sub) / sub, static_cast<int>(i / sub));
  }
  std::array<std::uint64_t, 64 * sub> counts_{};
  std::uint64_t total_ = 0;
};

/// What one run of one engine produced.
struct Outcome {
  I64 events = 0;  // events delivered (per consumer for a broadcast)
  double seconds = 0;
  Histogram latency;  // latency scenarios only
};

struct EngineRun {
  std::string engine;
  std::function<Outcome(const Params&)> run;
};

struct Scenario {
  std::string name;
  std::string what;
  /// Declares the Sluice graph (for --dot); null for scenarios without one.
  std::function<void(sluice::Graph&, const Params&)> dot;
  std::vector<EngineRun> engines;
};

[[noreturn]] void wrong(const std::string& scenario, const std::string& engine, I64 got,
                        I64 expected) {
  throw std::runtime_error(scenario + " / " + engine + ": wrong result " + std::to_string(got) +
                           ", expected " + std::to_string(expected));
}

I64 triangle(I64 n) {
  return n * (n - 1) / 2;
}

/// prefix + n, by appends ("literal" + std::string&& trips GCC bug 105329 at -O3).
std::string numbered(const char* prefix, I64 n) {
  std::string s = prefix;
  s += std::to_string(n);
  return s;
}

template <class F>
Outcome timed(I64 events, F&& f) {
  const auto t0 = Clock::now();
  f();
  return {events, std::chrono::duration<double>(Clock::now() - t0).count(), {}};
}

// ---- the user's code: ordinary per-event functions and one summing sink ------------------------

auto counter(I64 n) {
  return sluice::from_generator([i = I64{0}, n]() mutable -> std::optional<I64> {
    if (i == n) return std::nullopt;
    return i++;
  });
}

/// A sink summing what it receives; adds its total to `out` when its input ends (so instances
/// need no shared counter on the event path).
struct Sum {
  std::atomic<I64>* out;
  I64 local = 0;
  void handle_events(std::span<const I64> in, sluice::Context<void>&) {
    for (auto e : in)
      local += e;
  }
  void handle_cancel(const sluice::CancelInfo&, sluice::Context<void>&) {
    out->fetch_add(local);
    local = 0;
  }
};

sluice::StageOptions sink_options(const Params& p, std::size_t instances = 1) {
  return {.instances = instances, .max_demand = p.max_demand};
}

/// Source → (stages - 2) maps (+1) → sum.
void declare_chain(sluice::Graph& g, const Params& p, int stages, std::atomic<I64>& total) {
  auto s = g.source("source", counter(p.events));
  if (stages == 2) {
    s.to("sum", Sum{&total}, sink_options(p));
    return;
  }
  auto m = s.map(
      "map1", [](I64 e) { return e + 1; }, sink_options(p));
  for (int k = 2; k <= stages - 2; ++k)
    m = m.map(
        numbered("map", k), [](I64 e) { return e + 1; }, sink_options(p));
  m.to("sum", Sum{&total}, sink_options(p));
}

Outcome run_graph(const sluice::Graph& g, I64 events) {
  auto compiled = g.compile();
  return timed(events, [&] { compiled.run().wait(); });
}

EngineRun sluice_chain(const std::string& scenario, int stages) {
  return {"sluice", [scenario, stages](const Params& p) {
            std::atomic<I64> total{0};
            sluice::Graph g;
            declare_chain(g, p, stages, total);
            auto o = run_graph(g, p.events);
            const I64 expected = triangle(p.events) + p.events * (stages - 2);
            if (total != expected) wrong(scenario, "sluice", total, expected);
            return o;
          }};
}

/// A baseline: `run(params)` returns the sum its sink(s) computed, checked against
/// `expected(params)`; the whole call is timed.
EngineRun checked(std::string scenario, std::string engine, std::function<I64(const Params&)> run,
                  std::function<I64(const Params&)> expected) {
  return {engine, [=](const Params& p) {
            I64 got = 0;
            auto o = timed(p.events, [&] { got = run(p); });
            if (got != expected(p)) wrong(scenario, engine, got, expected(p));
            return o;
          }};
}

std::vector<EngineRun> tbb_chain(const std::string& scenario, int stages) {
  auto expected = [stages](const Params& p) {
    return triangle(p.events) + p.events * (stages - 2);
  };
  std::vector<EngineRun> out;
  for (bool batched : {false, true}) {
    out.push_back(checked(
        scenario, batched ? "tbb_flow_batch1024" : "tbb_flow",
        [=](const Params& p) { return sluice_bench::flow_chain(p.events, stages, batched); },
        expected));
    out.push_back(checked(
        scenario, batched ? "tbb_pipeline_batch1024" : "tbb_pipeline",
        [=](const Params& p) { return sluice_bench::pipeline_chain(p.events, stages, batched); },
        expected));
  }
  return out;
}

std::vector<EngineRun> handoff_baselines(const std::string& scenario) {
  auto expected = [](const Params& p) { return triangle(p.events); };
  return {checked(
              scenario, "ring",
              [](const Params& p) { return sluice_bench::ring_handoff(p.events, 256); }, expected),
          checked(
              scenario, "moodycamel",
              [](const Params& p) {
                return sluice_bench::moodycamel_demand_handoff(
                    p.events, static_cast<std::size_t>(p.max_demand));
              },
              expected)};
}

/// Event types of the size scenarios: the counter value plus padding, or a heap string.
template <std::size_t Bytes>
struct Padded {
  I64 value = 0;
  std::array<char, Bytes - sizeof(I64)> pad{};
};
template <>
struct Padded<8> {  // std::array<char, 0> still takes a byte: it would make this 16 bytes
  I64 value = 0;
};
static_assert(sizeof(Padded<8>) == 8 && sizeof(Padded<64>) == 64 && sizeof(Padded<1024>) == 1024);

template <class E>
E make_event(I64 i) {
  if constexpr (std::is_same_v<E, std::string>) {
    auto s = std::to_string(i);
    s.resize(32, ' ');  // past the small-string buffer: each event owns a heap block
    return s;
  } else {
    E e;
    e.value = i;
    return e;
  }
}
template <class E>
I64 value_of(const E& e) {
  if constexpr (std::is_same_v<E, std::string>) {
    I64 v = 0;
    std::from_chars(e.data(), e.data() + e.size(), v);
    return v;
  } else {
    return e.value;
  }
}

template <class E>
void declare_sized(sluice::Graph& g, const Params& p, I64& total) {
  g.source("source",
           sluice::from_generator([i = I64{0}, n = p.events]() mutable -> std::optional<E> {
             if (i == n) return std::nullopt;
             return make_event<E>(i++);
           }))
      .for_each(
          "sum", [&total](E e) { total += value_of(e); }, sink_options(p));
}

template <class E>
EngineRun sluice_sized(const std::string& scenario) {
  return {"sluice", [scenario](const Params& p) {
            I64 total = 0;
            sluice::Graph g;
            declare_sized<E>(g, p, total);
            auto o = run_graph(g, p.events);
            if (total != triangle(p.events)) wrong(scenario, "sluice", total, triangle(p.events));
            return o;
          }};
}

/// Source → consumers: demand (each event once), broadcast (each event to all) or partition.
enum class Fan { demand, broadcast, partition };

void declare_fan(sluice::Graph& g, const Params& p, Fan fan, std::size_t n,
                 std::atomic<I64>& total) {
  auto s = g.source("source", counter(p.events));
  switch (fan) {
    case Fan::demand:
      s.to("sum", Sum{&total}, sink_options(p, n));
      break;
    case Fan::broadcast:
      s.broadcast();
      for (std::size_t c = 0; c < n; ++c)
        s.to(numbered("sum", I64(c)), Sum{&total}, sink_options(p));
      break;
    case Fan::partition:
      s.partition(static_cast<int>(n)).to("sum", Sum{&total}, sink_options(p, n));
      break;
  }
}

EngineRun sluice_fan(const std::string& scenario, Fan fan, std::size_t n) {
  return {"sluice", [=](const Params& p) {
            std::atomic<I64> total{0};
            sluice::Graph g;
            declare_fan(g, p, fan, n, total);
            auto o = run_graph(g, p.events);
            const I64 expected = triangle(p.events) * (fan == Fan::broadcast ? I64(n) : 1);
            if (total != expected) wrong(scenario, "sluice", total, expected);
            return o;
          }};
}

std::vector<EngineRun> flow_fan(const std::string& scenario, Fan fan, std::size_t n) {
  auto expected = [=](const Params& p) {
    return triangle(p.events) * (fan == Fan::broadcast ? I64(n) : 1);
  };
  std::vector<EngineRun> out;
  for (bool batched : {false, true})
    out.push_back(checked(
        scenario, batched ? "tbb_flow_batch1024" : "tbb_flow",
        [=](const Params& p) {
          return fan == Fan::broadcast ? sluice_bench::flow_broadcast(p.events, n, batched)
                                       : sluice_bench::flow_fan_out(p.events, n, batched);
        },
        expected));
  return out;
}

void declare_fan_in(sluice::Graph& g, const Params& p, std::size_t n, std::atomic<I64>& total) {
  std::vector<sluice::Stage<void, I64>> sources;
  for (std::size_t k = 0; k < n; ++k)
    sources.push_back(g.source(numbered("source", I64(k)), counter(p.events / I64(n))));
  auto sink = sources[0].to("sum", Sum{&total}, sink_options(p));
  for (std::size_t k = 1; k < n; ++k)
    sink.subscribe(sources[k], sink_options(p));
}

/// A slow consumer: each event costs ~0.5 µs of work; memory must stay bounded.
void declare_slow(sluice::Graph& g, const Params& p, I64& total) {
  g.source("source", counter(p.events / 20))
      .map(
          "map", [](I64 e) { return e + 1; }, sink_options(p))
      .for_each(
          "slow",
          [&total](I64 e) {
            const auto until = Clock::now() + std::chrono::nanoseconds(500);
            while (Clock::now() < until) {
            }
            total += e;
          },
          sink_options(p));
}

// ---- latency --------------------------------------------------------------------------------

/// push → map → map → sink; each event carries its push time; the sink records the delay.
struct LatencyGraph {
  sluice::Graph g;
  sluice::PushHandle<I64> in;
  Histogram seen;  // written by the sink's one instance, read after the run
  std::atomic<I64> count{0};

  LatencyGraph() : in(make()) {}
  sluice::PushHandle<I64> make() {
    auto [h, src] = g.push_source<I64>("push", 1000);
    src.map("map1", [](I64 t) { return t; }, {.max_demand = 10})
        .map("map2", [](I64 t) { return t; }, {.max_demand = 10})
        .for_each("sink",
                  [this](I64 t) {
                    seen.add(now_ns() - t);
                    count.fetch_add(1, std::memory_order_release);  // the pusher acquires
                  },
                  {.max_demand = 10});
    return std::move(h);
  }
  static I64 now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
  }
};

Outcome latency_lone(const Params& p) {
  const I64 n = std::min<I64>(p.events, 20'000);
  LatencyGraph lg;
  auto run = lg.g.run();
  const auto t0 = Clock::now();
  for (I64 i = 0; i < n; ++i) {
    lg.in.push(LatencyGraph::now_ns());
    while (lg.count.load(std::memory_order_acquire) <= i)  // pairs with the sink's release
      std::this_thread::yield();
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  lg.in.close();
  run.wait();
  return {n, s, lg.seen};
}

Outcome latency_load(const Params& p) {
  // Capacity first: push as fast as possible.
  const I64 probe = std::min<I64>(p.events, 2'000'000);
  double capacity = 0;
  {
    LatencyGraph lg;
    auto run = lg.g.run();
    const auto t0 = Clock::now();
    for (I64 i = 0; i < probe; ++i)
      lg.in.push(LatencyGraph::now_ns());
    lg.in.close();
    run.wait();
    capacity = double(probe) / std::chrono::duration<double>(Clock::now() - t0).count();
  }
  // Then half of it, paced.
  const double rate = capacity / 2;
  const I64 n = std::min<I64>(probe, static_cast<I64>(rate * 2.0));  // about 2 s
  LatencyGraph lg;
  auto run = lg.g.run();
  const auto t0 = Clock::now();
  for (I64 i = 0; i < n; ++i) {
    const auto due = t0 + std::chrono::nanoseconds(static_cast<I64>(double(i) * 1e9 / rate));
    while (Clock::now() < due) {
    }
    lg.in.push(LatencyGraph::now_ns());
  }
  lg.in.close();
  run.wait();
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  return {n, s, lg.seen};
}

// ---- the scenarios -------------------------------------------------------------------------

std::vector<Scenario> scenarios() {
  std::vector<Scenario> all;
  auto chain = [&](const std::string& name, int stages, bool with_ring) {
    std::string what = "source -> sum (hand-off)";
    if (stages > 2) {
      what = numbered("source -> ", stages - 2);
      what += " x map -> sum";
    }
    Scenario s{name,
               what,
               [stages](sluice::Graph& g, const Params& p) {
                 static std::atomic<I64> t;
                 declare_chain(g, p, stages, t);
               },
               {sluice_chain(name, stages)}};
    // The ring is the two-core hand-off limit: the chains' reference too (ANCHORS' targets).
    for (auto& b : handoff_baselines(name))
      if (with_ring || b.engine == "ring") s.engines.push_back(b);
    for (auto& b : tbb_chain(name, stages))
      s.engines.push_back(b);
    all.push_back(std::move(s));
  };
  chain("handoff", 2, true);
  chain("chain3", 3, false);
  chain("chain4", 4, false);
  chain("chain8", 8, false);
  for (I64 md : {1, 10, 100, 1000, 10000}) {
    const auto name = numbered("handoff_md", md);
    Scenario s{name,
               numbered("hand-off at max_demand ", md),
               [](sluice::Graph& g, const Params& p) {
                 static std::atomic<I64> t;
                 declare_chain(g, p, 2, t);
               },
               {}};
    auto pinned = [md](std::function<Outcome(const Params&)> f) {
      return [md, f](const Params& p) {
        Params q = p;
        q.max_demand = md;
        if (md < 100) q.events = std::max<I64>(p.events / 20, 1000);  // slow by design
        return f(q);
      };
    };
    s.engines.push_back({"sluice", pinned(sluice_chain(name, 2).run)});
    for (auto& b : handoff_baselines(name))
      s.engines.push_back({b.engine, pinned(b.run)});
    all.push_back(std::move(s));
  }
  auto fan = [&](const std::string& name, Fan f, std::size_t n, const std::string& what) {
    Scenario s{name,
               what,
               [f, n](sluice::Graph& g, const Params& p) {
                 static std::atomic<I64> t;
                 declare_fan(g, p, f, n, t);
               },
               {sluice_fan(name, f, n)}};
    if (f != Fan::partition)
      for (auto& b : flow_fan(name, f, n))
        s.engines.push_back(b);
    all.push_back(std::move(s));
  };
  fan("demand_1to2", Fan::demand, 2, "source -> 2 sums (demand dispatcher)");
  fan("demand_1to4", Fan::demand, 4, "source -> 4 sums (demand dispatcher)");
  fan("broadcast_1to3", Fan::broadcast, 3, "source -> 3 sums, every event to each (per consumer)");
  fan("partition_1to4", Fan::partition, 4, "source -> 4 partitions -> 4 sums");
  fan("partition_1to8", Fan::partition, 8, "source -> 8 partitions -> 8 sums");
  all.push_back({"fanin_4to1",
                 "4 sources -> one sum",
                 [](sluice::Graph& g, const Params& p) {
                   static std::atomic<I64> t;
                   declare_fan_in(g, p, 4, t);
                 },
                 {{"sluice", [](const Params& p) {
                     std::atomic<I64> total{0};
                     sluice::Graph g;
                     declare_fan_in(g, p, 4, total);
                     auto o = run_graph(g, p.events / 4 * 4);
                     const I64 expected = 4 * triangle(p.events / 4);
                     if (total != expected) wrong("fanin_4to1", "sluice", total, expected);
                     return o;
                   }}}});
  all.push_back({"map_instances",
                 "source -> map x instances -> sum",
                 [](sluice::Graph& g, const Params& p) {
                   static std::atomic<I64> t;
                   g.source("source", counter(p.events))
                       .map(
                           "map", [](I64 e) { return e + 1; }, sink_options(p, p.instances))
                       .to("sum", Sum{&t}, sink_options(p));
                 },
                 {{"sluice", [](const Params& p) {
                     std::atomic<I64> total{0};
                     sluice::Graph g;
                     g.source("source", counter(p.events))
                         .map(
                             "map", [](I64 e) { return e + 1; }, sink_options(p, p.instances))
                         .to("sum", Sum{&total}, sink_options(p));
                     auto o = run_graph(g, p.events);
                     if (total != triangle(p.events) + p.events)
                       wrong("map_instances", "sluice", total, triangle(p.events) + p.events);
                     return o;
                   }}}});
  auto sized = [&]<class E>(const std::string& name, const std::string& what) {
    all.push_back({name,
                   what,
                   [](sluice::Graph& g, const Params& p) {
                     static I64 t;
                     declare_sized<E>(g, p, t);
                   },
                   {sluice_sized<E>(name)}});
  };
  sized.template operator()<Padded<8>>("size_8B", "hand-off of 8-byte events");
  sized.template operator()<Padded<64>>("size_64B", "hand-off of 64-byte events");
  sized.template operator()<Padded<1024>>("size_1KiB", "hand-off of 1 KiB events");
  sized.template operator()<std::string>("size_string", "hand-off of 32-char std::string events");
  all.push_back({"slow_consumer",
                 "source -> map -> a sink spending 0.5 us per event (events / 20)",
                 [](sluice::Graph& g, const Params& p) {
                   static I64 t;
                   declare_slow(g, p, t);
                 },
                 {{"sluice", [](const Params& p) {
                     I64 total = 0;
                     sluice::Graph g;
                     declare_slow(g, p, total);
                     const I64 n = p.events / 20;
                     auto o = run_graph(g, n);
                     if (total != triangle(n) + n)
                       wrong("slow_consumer", "sluice", total, triangle(n) + n);
                     return o;
                   }}}});
  all.push_back({"latency_lone",
                 "one event at a time: push -> map -> map -> sink, max_demand 10",
                 [](sluice::Graph& g, const Params&) {
                   LatencyGraph lg;
                   g = lg.g;
                 },
                 {{"sluice", latency_lone}}});
  all.push_back({"latency_load",
                 "same graph, pushed at half its measured capacity",
                 [](sluice::Graph& g, const Params&) {
                   LatencyGraph lg;
                   g = lg.g;
                 },
                 {{"sluice", latency_load}}});
  return all;
}

// ---- measuring in a child process ------------------------------------------------------------

struct Measured {
  std::string scenario, engine;
  I64 events = 0;
  std::optional<double> events_per_second;
  std::optional<std::uint64_t> peak_rss_bytes;
  std::optional<double> p50_ns, p99_ns;
  std::string error;
};

/// Runs `er` `repetitions` times in a child process; the median rate is reported.
Measured measure(const Scenario& s, const EngineRun& er, const Params& p) {
  Measured m{s.name, er.engine, 0, {}, {}, {}, {}, {}};
  int fd[2];
  if (pipe(fd) != 0) throw std::runtime_error("pipe failed");
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {  // the child: measure, report one line, exit
    close(fd[0]);
    std::ostringstream out;
    try {
      std::vector<double> rates;
      Histogram latencies;
      I64 events = 0;
      for (int r = 0; r < p.repetitions; ++r) {
        auto o = er.run(p);
        events = o.events;
        rates.push_back(double(o.events) / o.seconds);
        latencies.merge(o.latency);
      }
      rusage ru{};
      getrusage(RUSAGE_SELF, &ru);
      std::sort(rates.begin(), rates.end());
      out << "ok " << events << ' ' << rates[rates.size() / 2] << ' '
          << static_cast<std::uint64_t>(ru.ru_maxrss) * 1024;
      if (!latencies.empty())
        out << ' ' << latencies.percentile(0.5) << ' ' << latencies.percentile(0.99);
    } catch (const std::exception& e) {
      out << "error " << e.what();
    }
    const auto line = out.str();
    [[maybe_unused]] auto w = write(fd[1], line.data(), line.size());
    close(fd[1]);
    _exit(0);
  }
  close(fd[1]);
  std::string line;
  char buf[512];
  for (ssize_t n; (n = read(fd[0], buf, sizeof buf)) > 0;)
    line.append(buf, static_cast<std::size_t>(n));
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  std::istringstream in(line);
  std::string word;
  in >> word;
  if (word == "ok") {
    double rate = 0, p50 = 0, p99 = 0;
    std::uint64_t rss = 0;
    in >> m.events >> rate >> rss;
    m.events_per_second = rate;
    m.peak_rss_bytes = rss;
    if (in >> p50 >> p99) {
      m.p50_ns = p50;
      m.p99_ns = p99;
    }
  } else if (word == "error") {
    std::getline(in, m.error);
    if (!m.error.empty() && m.error.front() == ' ') m.error.erase(0, 1);
  } else {
    m.error = WIFSIGNALED(status) ? numbered("crashed by signal ", WTERMSIG(status))
                                  : numbered("no result, exit status ", status);
  }
  return m;
}

// ---- output --------------------------------------------------------------------------------

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string json_number(const std::optional<double>& v) {
  if (!v || !std::isfinite(*v)) return "null";
  return fixed(*v, 1);
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
      continue;
    }
    out += c;
  }
  return out + "\"";
}

bool is_baseline(const std::string& engine) {
  return engine != "sluice";
}

/// Ratios of the Sluice result to each baseline measured in the same scenario.
std::map<std::string, double> ratios(const Measured& m, const std::vector<Measured>& all) {
  std::map<std::string, double> r;
  if (is_baseline(m.engine) || !m.events_per_second) return r;
  for (auto& b : all)
    if (b.scenario == m.scenario && is_baseline(b.engine) && b.events_per_second)
      r[b.engine] = *m.events_per_second / *b.events_per_second;
  return r;
}

void write_json(const std::string& path, const std::vector<Measured>& results) {
  std::string out = "[\n";
  for (std::size_t i = 0; i < results.size(); ++i) {
    auto& m = results[i];
    out += "  {\"scenario\": " + json_string(m.scenario) +
           ", \"engine\": " + json_string(m.engine) + ", \"events\": " + std::to_string(m.events) +
           ", \"events_per_second\": " + json_number(m.events_per_second) +
           ", \"peak_rss_bytes\": " +
           (m.peak_rss_bytes ? std::to_string(*m.peak_rss_bytes) : std::string("null")) +
           ", \"p50_ns\": " + json_number(m.p50_ns) + ", \"p99_ns\": " + json_number(m.p99_ns) +
           ", \"ratio_to\": {";
    bool first = true;
    for (auto& [b, r] : ratios(m, results)) {
      out += (first ? "" : ", ") + json_string(b) + ": " + fixed(r, 4);
      first = false;
    }
    out += "}";
    if (!m.error.empty()) out += ", \"error\": " + json_string(m.error);
    out += i + 1 < results.size() ? "},\n" : "}\n";
  }
  out += "]\n";
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) throw std::runtime_error("cannot write " + path);
  std::fwrite(out.data(), 1, out.size(), f);
  std::fclose(f);
}

void print_table(const std::vector<Measured>& results) {
  std::printf("%-16s %-24s %12s %10s %9s %9s  %s\n", "scenario", "engine", "M events/s", "RSS MiB",
              "p50 us", "p99 us", "sluice / baseline");
  std::string last;
  for (auto& m : results) {
    if (m.scenario != last && !last.empty()) std::printf("\n");
    last = m.scenario;
    if (!m.error.empty()) {
      std::printf("%-16s %-24s FAILED: %s\n", m.scenario.c_str(), m.engine.c_str(),
                  m.error.c_str());
      continue;
    }
    std::string r;
    for (auto& [b, v] : ratios(m, results))
      r += (r.empty() ? "" : ", ") + b + " " + fixed(v, v < 10 ? 2 : 0) + "x";
    const double mps = *m.events_per_second / 1e6;
    std::printf("%-16s %-24s %12s %10s %9s %9s  %s\n", m.scenario.c_str(), m.engine.c_str(),
                fixed(mps, mps < 1 ? 3 : 1).c_str(),
                fixed(double(*m.peak_rss_bytes) / (1 << 20), 1).c_str(),
                m.p50_ns ? fixed(*m.p50_ns / 1e3, 1).c_str() : "-",
                m.p99_ns ? fixed(*m.p99_ns / 1e3, 1).c_str() : "-", r.c_str());
  }
}

void progress(std::size_t done, std::size_t total, const std::string& what, bool tty) {
  if (tty) {
    constexpr int width = 30;
    const int filled = static_cast<int>(double(done) / double(total) * width);
    std::fprintf(stderr, "\r[%s%s] %zu/%zu %-40.40s", std::string(std::size_t(filled), '#').c_str(),
                 std::string(std::size_t(width - filled), '.').c_str(), done, total, what.c_str());
    if (done == total) std::fprintf(stderr, "\r%*s\r", width + 60, "");
  } else if (done < total) {
    std::fprintf(stderr, "sluice-bench: %zu/%zu %s\n", done + 1, total, what.c_str());
  }
  std::fflush(stderr);
}

I64 parse_count(const std::string& option, const char* value) {
  I64 v = 0;
  const auto* end = value + std::strlen(value);
  auto [p, ec] = std::from_chars(value, end, v);
  if (ec != std::errc() || p != end || v < 1)
    throw std::invalid_argument("option " + option +
                                " must be a positive integer, got: " + std::string(value));
  return v;
}

int usage(int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: sluice-bench [SCENARIO...] [--events N] [--max-demand N] [--instances N]\n"
               "                    [--repetitions N] [--engines E1,E2] [--json FILE]\n"
               "                    [--dot SCENARIO] [--list] [--quick]\n"
               "  Runs the named scenarios (default: all) with Sluice and the baselines in the\n"
               "  same binary; prints events/s, peak RSS, p50/p99 latency and Sluice's ratio to\n"
               "  each baseline. --quick: 2 M events, 1 repetition (README's main job).\n");
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Params params;
    std::vector<std::string> names;
    std::string json, dot;
    std::vector<std::string> engines;  // empty: all
    bool list = false;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> const char* {
        if (i + 1 >= argc) throw std::invalid_argument("option " + a + " needs a value");
        return argv[++i];
      };
      if (a == "--events") {
        params.events = parse_count(a, value());
      } else if (a == "--max-demand") {
        params.max_demand = parse_count(a, value());
      } else if (a == "--instances") {
        params.instances = static_cast<std::size_t>(parse_count(a, value()));
      } else if (a == "--repetitions") {
        params.repetitions = static_cast<int>(parse_count(a, value()));
      } else if (a == "--json") {
        json = value();
      } else if (a == "--dot") {
        dot = value();
      } else if (a == "--engines") {
        const std::string given = value();
        for (std::size_t at = 0; at <= given.size();) {
          const auto comma = std::min(given.find(',', at), given.size());
          engines.push_back(given.substr(at, comma - at));
          at = comma + 1;
        }
      } else if (a == "--list") {
        list = true;
      } else if (a == "--quick") {
        params.events = 2'000'000;
        params.repetitions = 1;
      } else if (a == "--help" || a == "-h") {
        return usage(0);
      } else if (a.starts_with("-")) {
        std::fprintf(stderr, "sluice-bench: unknown option %s\n", a.c_str());
        return usage(2);
      } else {
        names.push_back(a);
      }
    }
    const auto all = scenarios();
    auto find = [&](const std::string& n) -> const Scenario& {
      for (auto& s : all)
        if (s.name == n) return s;
      throw std::invalid_argument("unknown scenario '" + n + "' (--list shows them)");
    };
    if (list) {
      for (auto& s : all) {
        std::printf("%-16s %s; engines:", s.name.c_str(), s.what.c_str());
        for (auto& e : s.engines)
          std::printf(" %s", e.engine.c_str());
        std::printf("\n");
      }
      return 0;
    }
    if (!dot.empty()) {
      sluice::Graph g;
      find(dot).dot(g, params);
      std::printf("%s", g.to_dot().c_str());
      return 0;
    }
    std::vector<const Scenario*> chosen;
    for (auto& n : names)
      chosen.push_back(&find(n));
    if (chosen.empty())
      for (auto& s : all)
        chosen.push_back(&s);
    auto wanted = [&](const EngineRun& e) {
      return engines.empty() ||
             std::find(engines.begin(), engines.end(), e.engine) != engines.end();
    };
    for (auto& e : engines) {
      bool known = false;
      for (auto& s : all)
        for (auto& r : s.engines)
          known = known || r.engine == e;
      if (!known) throw std::invalid_argument("unknown engine '" + e + "' (--list shows them)");
    }
    std::size_t total = 0, done = 0;
    for (auto* s : chosen)
      for (auto& e : s->engines)
        total += wanted(e) ? 1 : 0;
    const bool tty = isatty(STDERR_FILENO) != 0;
    std::vector<Measured> results;
    for (auto* s : chosen)
      for (auto& e : s->engines) {
        if (!wanted(e)) continue;
        progress(done, total, s->name + " / " + e.engine, tty);
        results.push_back(measure(*s, e, params));
        ++done;
      }
    progress(done, total, "", tty);
    std::printf(
        "sluice-bench: %lld events per run (fewer where a scenario says), max_demand %lld, "
        "median of %d, %u hardware threads\n\n",
        static_cast<long long>(params.events), static_cast<long long>(params.max_demand),
        params.repetitions, std::thread::hardware_concurrency());
    print_table(results);
    if (!json.empty()) write_json(json, results);
    for (auto& m : results)
      if (!m.error.empty()) return 1;
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sluice-bench: %s\n", e.what());
    return 2;
  }
}
