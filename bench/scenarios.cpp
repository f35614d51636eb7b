// The scenarios (see scenarios.hpp): the user's code, the Sluice graphs and the baselines of each.
#include "scenarios.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <optional>
#include <span>
#include <stdexcept>
#include <thread>

#include "baselines.hpp"
#include "genstage.hpp"
#include "tbb_baselines.hpp"
#include <support/stages.hpp>

namespace sluice_bench {
namespace {

[[noreturn]] void wrong(const std::string& scenario, const std::string& engine, I64 got,
                        I64 expected) {
  throw std::runtime_error(scenario + " / " + engine + ": wrong result " + std::to_string(got) +
                           ", expected " + std::to_string(expected));
}

I64 triangle(I64 n) {
  return n * (n - 1) / 2;
}

// ---- the user's code: ordinary per-event functions and one summing sink ------------------------

auto counter(I64 n) {
  return sluice::from_generator([i = I64{0}, n]() mutable -> std::optional<I64> {
    if (i == n) return std::nullopt;
    return i++;
  });
}

/// A sink summing what it receives; adds its total to `*total` when its input ends (so instances
/// need no shared counter on the event path).
using Sum = sluice_test::SummingSink<I64>;

sluice::StageOptions sink_options(const Params& p, std::size_t instances = 1) {
  return {.instances = instances, .max_demand = p.max_demand};
}

/// Source → `c.maps` maps (+1) → a filter keeping even values if `c.filter` → sum. `fused`
/// false: every stage in a cell of its own (StageOptions::fuse), as class stages or stages
/// with several instances would be.
void declare_chain(sluice::Graph& g, const Params& p, Chain c, std::atomic<I64>& total,
                   bool fused = true) {
  // Lambdas, as a user writes them (a function's name would be an indirect call per event).
  auto map = [](I64 e) { return plus_one(e); };
  auto keep = [](const I64& e) { return is_even(e); };
  auto o = sink_options(p);
  o.fuse = fused;
  auto s = g.source("source", counter(p.events));
  if (c.maps == 0 && !c.filter) {
    s.to("sum", Sum{&total}, o);
    return;
  }
  auto m = c.maps == 0 ? s.filter("even", keep, o) : s.map("map1", map, o);
  for (int k = 2; k <= c.maps; ++k)
    m = m.map(numbered("map", k), map, o);
  if (c.maps > 0 && c.filter) m = m.filter("even", keep, o);
  m.to("sum", Sum{&total}, o);
}

/// Source → batch of 100 (Stage::batch) → a sink summing each batch.
void declare_batched(sluice::Graph& g, const Params& p, std::atomic<I64>& total) {
  g.source("source", counter(p.events))
      .batch("batch", {.size = 100, .timeout = std::chrono::seconds(1)})
      .for_each("sum", [&total, sum = I64{0}, seen = I64{0},
                        n = p.events](const std::vector<I64>& b) mutable {
        for (auto e : b)
          sum += e;
        seen += static_cast<I64>(b.size());
        if (seen == n) total = sum;
      });
}

Outcome run_graph(const sluice::Graph& g, I64 events) {
  auto compiled = g.compile();
  return timed(events, [&] { compiled.run().wait(); });
}

EngineRun sluice_chain(const std::string& scenario, Chain c, bool fused = true) {
  return {"sluice", [scenario, c, fused](const Params& p) {
            std::atomic<I64> total{0};
            sluice::Graph g;
            declare_chain(g, p, c, total, fused);
            auto o = run_graph(g, p.events);
            const I64 expected = chain_sum(p.events, c);
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

std::vector<EngineRun> tbb_chain(const std::string& scenario, Chain c) {
  auto expected = [c](const Params& p) { return chain_sum(p.events, c); };
  std::vector<EngineRun> out;
  for (bool batched : {false, true}) {
    out.push_back(checked(
        scenario, batched ? "tbb_flow_batch1024" : "tbb_flow",
        [=](const Params& p) { return flow_chain(p.events, c, batched); }, expected));
    out.push_back(checked(
        scenario, batched ? "tbb_pipeline_batch1024" : "tbb_pipeline",
        [=](const Params& p) { return pipeline_chain(p.events, c, batched); }, expected));
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

/// GenStage itself (genstage.hpp): gs_bench.exs `variant` at the run's max_demand, on at most
/// genstage::scaled_events events; the time is the one GenStage reports (VM start-up outside).
EngineRun genstage_engine(std::string variant) {
  return {genstage::engine_name, [variant](const Params& p) {
            const auto r = genstage::run(variant, genstage::scaled_events(p.events, p.max_demand),
                                         p.max_demand);
            return Outcome{r.events, r.seconds, {}};
          }};
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
      // The key a user would write, with the partition count a constant as in the flow graph
      // baseline (a division by a run-time count costs more than the rest of the dispatch).
      if (n == 4)
        s.partition(4, [](const I64& e) {
           return e % 4;
         }).to("sum", Sum{&total}, sink_options(p, 4));
      else if (n == 8)
        s.partition(8, [](const I64& e) {
           return e % 8;
         }).to("sum", Sum{&total}, sink_options(p, 8));
      else
        throw std::invalid_argument("partition scenarios have 4 or 8 partitions");
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
          switch (fan) {
            case Fan::broadcast:
              return total(flow_broadcast(p.events, n, batched));
            case Fan::partition:
              if (n == 4) return total(flow_partition<4>(p.events, batched));
              if (n == 8) return total(flow_partition<8>(p.events, batched));
              throw std::invalid_argument("partition scenarios have 4 or 8 partitions");
            default:
              return total(flow_fan_out(p.events, n, batched));
          }
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

}  // namespace

// ---- the scenarios -------------------------------------------------------------------------

std::vector<Scenario> scenarios() {
  std::vector<Scenario> all;
  // gs_variant: GenStage's reference shape of the same chain (its map doubles; Sluice's adds 1).
  auto chain = [&](const std::string& name, Chain c, bool with_ring, const char* gs_variant,
                   bool fused = true) {
    std::string what = "source -> ";
    if (c.maps > 0) {
      what += numbered("", c.maps);
      what += " x map -> ";
    }
    if (c.filter) what += "filter -> ";
    what += "sum";
    if (c.maps == 0 && !c.filter) what += " (hand-off)";
    if (!fused) what += ", every stage a cell of its own (fuse = false)";
    if (gs_variant != nullptr) {
      what += "; genstage: ";
      what += gs_variant;
    }
    Scenario s{name,
               what,
               [c, fused](sluice::Graph& g, const Params& p) {
                 static std::atomic<I64> t;
                 declare_chain(g, p, c, t, fused);
               },
               {sluice_chain(name, c, fused)}};
    // The ring is the two-core hand-off limit: the chains' reference too (ANCHORS' targets).
    for (auto& b : handoff_baselines(name))
      if (with_ring || b.engine == "ring") s.engines.push_back(b);
    for (auto& b : tbb_chain(name, c))
      s.engines.push_back(b);
    if (gs_variant != nullptr) s.engines.push_back(genstage_engine(gs_variant));
    all.push_back(std::move(s));
  };
  chain("handoff", {0, false}, true, nullptr);
  chain("chain3", {1, false}, false, "gs_linear3");  // ANCHORS: producer -> map -> sum
  chain("chain4", {1, true}, false, "gs_linear4");   // ANCHORS: producer -> map -> filter -> sum
  chain("chain8", {5, true}, false, nullptr);
  chain("chain3_unfused", {1, false}, false, nullptr, false);
  chain("chain4_unfused", {1, true}, false, nullptr, false);
  chain("chain8_unfused", {5, true}, false, nullptr, false);
  {
    // Issue 20's target: a batch of 100 between a source and a sink at 0.8 x chain3 or more.
    const std::string name = "batch100";
    Scenario b{name,
               "source -> batch of 100 -> sum of each batch; chain3: source -> map -> sum in the "
               "same run",
               [](sluice::Graph& g, const Params& p) {
                 static std::atomic<I64> t;
                 declare_batched(g, p, t);
               },
               {{"sluice", [name](const Params& p) {
                   std::atomic<I64> total{0};
                   sluice::Graph g;
                   declare_batched(g, p, total);
                   auto o = run_graph(g, p.events);
                   const I64 expected = chain_sum(p.events, {0, false});
                   if (total != expected) wrong(name, "sluice", total, expected);
                   return o;
                 }}}};
    auto c3 = sluice_chain(name, {1, false});
    c3.engine = "sluice_chain3";
    b.engines.push_back(std::move(c3));
    all.push_back(std::move(b));
  }
  for (auto& t : timer_chain_scenarios())
    all.push_back(std::move(t));
  for (I64 md : {1, 10, 100, 1000, 10000}) {
    const auto name = numbered("handoff_md", md);
    // GenStage has no two-stage reference shape: the closest is gs_linear3, a map more.
    Scenario s{name,
               numbered("hand-off at max_demand ", md) +
                   "; genstage: gs_linear3 (producer -> map -> sum: one stage more)",
               [](sluice::Graph& g, const Params& p) {
                 static std::atomic<I64> t;
                 declare_chain(g, p, {0, false}, t);
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
    s.engines.push_back({"sluice", pinned(sluice_chain(name, {0, false}).run)});
    for (auto& b : handoff_baselines(name))
      s.engines.push_back({b.engine, pinned(b.run)});
    s.engines.push_back({genstage::engine_name, pinned(genstage_engine("gs_linear3").run)});
    all.push_back(std::move(s));
  }
  // gs_variant: GenStage's closest reference shape, which has a map before each sum.
  auto fan = [&](const std::string& name, Fan f, std::size_t n, const std::string& what,
                 const char* gs_variant = nullptr) {
    Scenario s{name,
               gs_variant == nullptr ? what
                                     : what + "; genstage: " + gs_variant +
                                           " (a map before each sum: one stage more)",
               [f, n](sluice::Graph& g, const Params& p) {
                 static std::atomic<I64> t;
                 declare_fan(g, p, f, n, t);
               },
               {sluice_fan(name, f, n)}};
    for (auto& b : flow_fan(name, f, n))
      s.engines.push_back(b);
    if (gs_variant != nullptr) s.engines.push_back(genstage_engine(gs_variant));
    all.push_back(std::move(s));
  };
  fan("demand_1to2", Fan::demand, 2, "source -> 2 sums (demand dispatcher)", "gs_demand2");
  fan("demand_1to4", Fan::demand, 4, "source -> 4 sums (demand dispatcher)");
  fan("broadcast_1to3", Fan::broadcast, 3, "source -> 3 sums, every event to each (per consumer)");
  fan("partition_1to4", Fan::partition, 4, "source -> 4 partitions -> 4 sums", "gs_partition4");
  fan("partition_1to8", Fan::partition, 8, "source -> 8 partitions -> 8 sums");
  all.push_back({"fanin_4to1",
                 "4 sources -> one sum",
                 [](sluice::Graph& g, const Params& p) {
                   static std::atomic<I64> t;
                   declare_fan_in(g, p, 4, t);
                 },
                 {{"sluice",
                   [](const Params& p) {
                     std::atomic<I64> total{0};
                     sluice::Graph g;
                     declare_fan_in(g, p, 4, total);
                     auto o = run_graph(g, p.events / 4 * 4);
                     const I64 expected = 4 * triangle(p.events / 4);
                     if (total != expected) wrong("fanin_4to1", "sluice", total, expected);
                     return o;
                   }},
                  checked(
                      "fanin_4to1", "tbb_flow",
                      [](const Params& p) { return flow_fan_in(p.events / 4, 4, false); },
                      [](const Params& p) { return 4 * triangle(p.events / 4); }),
                  checked(
                      "fanin_4to1", "tbb_flow_batch1024",
                      [](const Params& p) { return flow_fan_in(p.events / 4, 4, true); },
                      [](const Params& p) { return 4 * triangle(p.events / 4); })}});
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
  for (auto& t : timer_scenarios())
    all.push_back(std::move(t));
  all.push_back(rate_limit_scenario());
  all.push_back(map_blocking_scenario());
  all.push_back(wordcount_scenario());
  return all;
}

}  // namespace sluice_bench
