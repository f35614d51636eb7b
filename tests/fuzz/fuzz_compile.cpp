// libFuzzer target: the fuzzer's bytes describe a graph (stages of every kind with random names,
// instances and options, out-of-range values included; dispatchers with random partitions; extra
// subscriptions, duplicates, self-loops and cycles included), built through the public builder,
// then compiled. compile() must return or throw sluice::option_error whose every line names a
// stage (or is a cycle or an empty name); Stage::partition() may throw option_error for invalid
// dispatcher options (documented). Small graphs that compiled are also run to completion in
// manual mode (tiny event counts). Anything else (another exception, a compile() message that
// names no stage, a run that cannot finish, events lost by a finished run, a crash, a sanitizer
// report) is a finding: the target prints the decoded graph and aborts.
//
// Left out on purpose (known findings, see the audit report; they would be found at once and
// hide everything else): subscribing to a stage of another Graph (out-of-bounds read in
// compile()), push_source capacities above INT_MAX (std::counting_semaphore overflow), huge
// instance counts (compile() time and memory grow with them), RunOptions::concurrency far above
// the core count, max_demand near 2^30 in runs (each edge allocates 2 * max_demand events), and
// line breaks in stage names (they split compile()'s one-problem-per-line message).
//
// SLUICE_FUZZ_VERBOSE=1 prints each input's graph and outcome (to describe a corpus entry).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>
#include <vector>

#include <sluice/sluice.hpp>

#include <fuzzer/FuzzedDataProvider.h>

namespace {

using I64 = std::int64_t;

// ---- handlers ----------------------------------------------------------------------------------

struct CountSource {  // a class source: emits `left` events, then finishes
  int left = 0;
  bool done = false;
  void handle_demand(std::size_t n, sluice::Context<int>& ctx) {
    for (; n > 0 && left > 0; --n, --left)
      ctx.emit(int{left});
    if (left == 0 && !done) {
      done = true;
      ctx.finish();
    }
  }
};

struct AddOne {  // a class producer_consumer that can read a broadcast's shared batch
  void handle_events(std::span<const int> in, sluice::Context<int>& ctx) {
    for (int x : in)
      ctx.emit(x + 1);
  }
};

struct ConstSink {
  void handle_events(std::span<const int>, sluice::Context<void>&) {}
};

struct MutSink {  // refused under a broadcast (it would modify shared events)
  void handle_events(std::span<int> in, sluice::Context<void>&) {
    for (auto& x : in)
      x = 0;
  }
};

// ---- decoding ----------------------------------------------------------------------------------

struct Decoded {
  std::string desc;  // the builder calls, as pseudo-code
  bool runnable = true;
  std::string not_runnable;  // why not
  void no_run(const char* why) {
    if (runnable) not_runnable = why;
    runnable = false;
  }
};

template <class T, std::size_t N>
T pick(FuzzedDataProvider& in, const T (&values)[N]) {
  return values[in.ConsumeIntegralInRange<std::size_t>(0, N - 1)];
}

I64 demand_value(FuzzedDataProvider& in) {
  static constexpr I64 values[] = {-1,
                                   0,
                                   1,
                                   2,
                                   3,
                                   7,
                                   10,
                                   64,
                                   1000,
                                   I64{1} << 30,
                                   (I64{1} << 30) + 1,
                                   std::numeric_limits<I64>::max(),
                                   std::numeric_limits<I64>::min()};
  if (in.ConsumeBool()) return pick(in, values);
  return in.ConsumeIntegralInRange<I64>(-3, 200);
}

std::string partition_name(FuzzedDataProvider& in) {
  static constexpr const char* names[] = {"even", "odd", "x", ""};
  return pick(in, names);
}

sluice::Partition partition_value(FuzzedDataProvider& in, std::string& desc) {
  if (in.ConsumeBool()) {
    const auto name = partition_name(in);
    desc += "'" + name + "'";
    return sluice::Partition(name);
  }
  const auto i = in.ConsumeIntegralInRange<int>(-2, 5);
  desc += std::to_string(i);
  return sluice::Partition(i);
}

std::string stage_name(FuzzedDataProvider& in) {
  static constexpr const char* names[] = {"a", "b", "c", "d", "e", "f", "g", "h", ""};
  if (in.ConsumeIntegralInRange<int>(0, 7) == 0) {
    // Any bytes but '\n': compile()'s message is one problem per line, and names are not checked
    // (a name with a line break splits its problem in two: a known finding).
    auto s = in.ConsumeRandomLengthString(5);
    for (auto& c : s)
      if (c == '\n') c = '_';
    return s;
  }
  return pick(in, names);
}

sluice::StageOptions stage_options(FuzzedDataProvider& in, Decoded& d) {
  sluice::StageOptions o;
  const auto flags = in.ConsumeIntegral<std::uint16_t>();
  std::string s;
  if (flags & 1) {
    o.instances = in.ConsumeIntegralInRange<std::size_t>(0, 4);
    s += " .instances=" + std::to_string(o.instances);
  }
  if (flags & 2) {
    o.max_demand = demand_value(in);
    s += " .max_demand=" + std::to_string(o.max_demand);
  }
  if (flags & 4) {
    o.min_demand = demand_value(in);
    s += " .min_demand=" + std::to_string(*o.min_demand);
  }
  if (flags & 8) {
    o.cancel = static_cast<sluice::CancelMode>(in.ConsumeIntegralInRange<int>(0, 2));
    s += " .cancel=" + std::to_string(static_cast<int>(o.cancel));
  }
  if (flags & 16) {
    s += " .partition=";
    o.partition = partition_value(in, s);
  }
  if (flags & 32) {
    o.demand = sluice::DemandControl::manual;
    s += " .demand=manual";
  }
  if (flags & 64) {
    if (in.ConsumeBool()) {
      o.selector = sluice::selector<int>([](const int& x) { return x % 2 == 0; });
      s += " .selector=<int>";
    } else {
      o.selector = sluice::selector<long>([](const long&) { return true; });
      s += " .selector=<long>";
    }
  }
  if (flags & 128) {
    o.buffer_size = demand_value(in);
    s += " .buffer_size=" + std::to_string(*o.buffer_size);
  }
  if (flags & 256) {
    o.buffer_keep = sluice::BufferKeep::first;
    s += " .buffer_keep=first";
  }
  if (flags & 512) {
    o.demand_mode = sluice::DemandMode::accumulate;
    s += " .demand_mode=accumulate";
  }
  if (flags & 1024) {
    o.dynamic = true;
    s += " .dynamic";
  }
  d.desc += "{" + s + " }";
  // What keeps a valid graph from finishing on its own, or makes a run too big to fuzz.
  if (o.demand == sluice::DemandControl::manual) d.no_run("manual demand");
  if (o.demand_mode == sluice::DemandMode::accumulate) d.no_run("accumulate demand mode");
  if (o.max_demand > 4096) d.no_run("large max_demand");
  return o;
}

// ---- the graph ---------------------------------------------------------------------------------

struct Ref {
  int kind;  // 0: source (Stage<void, int>), 1: producer_consumer, 2: sink
  std::size_t index;
};

struct Builder {
  sluice::Graph g;
  std::vector<sluice::Stage<void, int>> sources;
  std::vector<sluice::Stage<int, int>> mids;
  std::vector<sluice::Stage<int, void>> sinks;
  std::vector<Ref> producers, consumers;
  std::vector<sluice::PushHandle<int>> pushes;
  std::deque<std::vector<int>> collected;
  std::vector<sluice::PullStream<int>> streams;

  template <class F>
  void with_producer(const Ref& r, F&& f) {
    if (r.kind == 0)
      f(sources[r.index]);
    else
      f(mids[r.index]);
  }
  std::string name_of(const Ref& r) {
    if (r.kind == 0) return sources[r.index].name();
    if (r.kind == 1) return mids[r.index].name();
    return sinks[r.index].name();
  }
  void add_source(sluice::Stage<void, int> s) {
    producers.push_back({0, sources.size()});
    sources.push_back(std::move(s));
  }
  void add_mid(sluice::Stage<int, int> s) {
    producers.push_back({1, mids.size()});
    consumers.push_back({1, mids.size()});
    mids.push_back(std::move(s));
  }
  void add_sink(sluice::Stage<int, void> s) {
    consumers.push_back({2, sinks.size()});
    sinks.push_back(std::move(s));
  }
};

[[noreturn]] void finding(const std::string& what, const Decoded& d) {
  std::fprintf(stderr, "\n==== sluice fuzz finding: %s\n---- graph:\n%s----\n", what.c_str(),
               d.desc.c_str());
  std::abort();
}

/// Every line of compile()'s message names a stage (or is one of the graph-wide problems).
void check_message(std::string_view all, const Decoded& d) {
  std::size_t at = 0;
  while (at <= all.size()) {
    auto nl = all.find('\n', at);
    if (nl == std::string_view::npos) nl = all.size();
    const auto line = all.substr(at, nl - at);
    const bool ok = line.starts_with("stage '") || line == "a stage needs a non-empty name" ||
                    line.starts_with("the subscriptions form a cycle through stage '");
    if (!ok)
      finding("a compile() problem that names no stage: \"" + std::string(line) + "\"\nwhole:\n" +
                  std::string(all),
              d);
    at = nl + 1;
  }
}

void set_dispatcher(FuzzedDataProvider& in, Builder& b, const Ref& r, Decoded& d) {
  const auto choice = in.ConsumeIntegralInRange<int>(0, 5);
  if (choice == 0) return;
  std::string s = "  " + b.name_of(r);
  try {
    b.with_producer(r, [&](auto& stage) {
      if (choice == 1) {
        s += ".broadcast()\n";
        stage.broadcast();
        return;
      }
      const auto count = in.ConsumeIntegralInRange<int>(-1, 4);
      sluice::PartitionDispatcherOptions po;
      if (in.ConsumeBool()) po.queue_size = demand_value(in);
      const auto q = " {.queue_size=" + std::to_string(po.queue_size) + "}";
      if (choice == 2) {
        s += ".partition(" + std::to_string(count) + q + ")\n";
        stage.partition(count, po);
      } else if (choice == 3) {
        const auto k = in.ConsumeIntegralInRange<int>(1, 6);  // may exceed the count: run error
        s += ".partition(" + std::to_string(count) + ", x % " + std::to_string(k) + q + ")\n";
        stage.partition(
            count, [k](int& x) { return (x < 0 ? -x : x) % k; }, po);
      } else if (choice == 4) {
        std::vector<sluice::Partition> names;
        std::string list;
        const auto n = in.ConsumeIntegralInRange<int>(0, 3);
        for (int i = 0; i < n; ++i) {
          list += (i ? ", " : "");
          names.push_back(partition_value(in, list));
        }
        const bool by_name = in.ConsumeBool();
        s += ".partition({" + list + "}, " + (by_name ? "even/odd names" : "x % 3") + q + ")\n";
        if (by_name)
          stage.partition(
              std::move(names), [](int& x) { return std::string(x % 2 == 0 ? "even" : "odd"); },
              po);
        else
          stage.partition(
              std::move(names), [](int& x) { return (x < 0 ? -x : x) % 3; }, po);
      } else {
        s += ".partition(" + std::to_string(count) + ", drop odd" + q + ")\n";
        stage.partition(
            count,
            [count](int& x) -> std::optional<int> {
              if (x % 2 != 0 || count < 1) return std::nullopt;
              return (x < 0 ? -x : x) % count;
            },
            po);
      }
    });
  } catch (const sluice::option_error& e) {
    s += "    -> option_error at declaration: " + std::string(e.what()) + "\n";
  }
  d.desc += s;
}

void build(FuzzedDataProvider& in, Builder& b, Decoded& d) {
  const auto stages = in.ConsumeIntegralInRange<int>(1, 8);
  for (int i = 0; i < stages; ++i) {
    auto kind = in.ConsumeIntegralInRange<int>(0, 12);
    if (kind > 3 && b.producers.empty()) kind = 0;
    auto name = stage_name(in);
    d.desc += "  ";
    if (kind <= 3) {
      const auto events = in.ConsumeIntegralInRange<int>(0, 20);
      std::ptrdiff_t capacity = 0;
      if (kind == 3) {
        static constexpr std::ptrdiff_t capacities[] = {-5, 0, 1, 2, 16, 1000, 1 << 20};
        capacity = pick(in, capacities);
      }
      auto o = stage_options(in, d);
      if (kind == 0) {
        d.desc += " range source '" + name + "' of " + std::to_string(events) + "\n";
        b.add_source(b.g.source(name, sluice::from_range(std::vector<int>(events, 1)), o));
      } else if (kind == 1) {
        d.desc += " generator source '" + name + "' of " + std::to_string(events) + "\n";
        b.add_source(b.g.source(name, sluice::from_generator([k = events]() mutable {
                                  return k > 0 ? std::optional<int>(k--) : std::nullopt;
                                }),
                                o));
      } else if (kind == 2) {
        d.desc += " class source '" + name + "' of " + std::to_string(events) + "\n";
        b.add_source(b.g.source<int>(name, CountSource{events}, o));
      } else {
        d.desc += " push source '" + name + "' capacity " + std::to_string(capacity) + "\n";
        auto [handle, stage] = b.g.push_source<int>(name, capacity, o);
        b.pushes.push_back(handle);
        b.add_source(stage);
      }
      if (in.ConsumeBool()) set_dispatcher(in, b, b.producers.back(), d);
      continue;
    }
    const auto parent =
        b.producers[in.ConsumeIntegralInRange<std::size_t>(0, b.producers.size() - 1)];
    std::int64_t capacity = 0;
    if (kind == 10) {
      static constexpr std::int64_t capacities[] = {-1, 0, 1, 8, 1000, std::int64_t{1} << 31};
      capacity = pick(in, capacities);
    }
    auto o = kind == 10 ? sluice::StageOptions{} : stage_options(in, d);
    d.desc += " <- '" + b.name_of(parent) + "': ";
    b.with_producer(parent, [&](auto& p) {
      switch (kind) {
        case 4:
          d.desc += "map '" + name + "'\n";
          b.add_mid(p.map(
              name, [](int x) { return x + 1; }, o));
          break;
        case 5:
          d.desc += "filter '" + name + "'\n";
          b.add_mid(p.filter(
              name, [](const int& x) { return x % 3 != 0; }, o));
          break;
        case 6:
          d.desc += "flat_map '" + name + "'\n";
          b.add_mid(p.flat_map(
              name,
              [](int x) {
                return std::vector<int>{x, -x};
              },
              o));
          break;
        case 7:
          d.desc += "then '" + name + "' (AddOne)\n";
          b.add_mid(p.template then<int>(name, AddOne{}, o));
          break;
        case 8:
          d.desc += "for_each '" + name + "'\n";
          b.add_sink(p.for_each(
              name, [](int) {}, o));
          break;
        case 9:
          d.desc += "collect '" + name + "'\n";
          b.add_sink(p.collect(name, b.collected.emplace_back(), o));
          break;
        case 10:
          d.desc += "stream '" + name + "' capacity " + std::to_string(capacity) + "\n";
          b.streams.push_back(p.stream(name, capacity));
          d.no_run("a stream needs a reader");
          break;
        case 11:
          d.desc += "to '" + name + "' (ConstSink)\n";
          b.add_sink(p.to(name, ConstSink{}, o));
          break;
        default:
          d.desc += "to '" + name + "' (MutSink)\n";
          b.add_sink(p.to(name, MutSink{}, o));
          break;
      }
    });
    if (kind >= 4 && kind <= 7 && in.ConsumeBool()) set_dispatcher(in, b, b.producers.back(), d);
  }
  // Extra subscriptions: fan-in, duplicates, self-loops, cycles.
  const auto extra = in.ConsumeIntegralInRange<int>(0, 5);
  for (int i = 0; i < extra && !b.consumers.empty(); ++i) {
    const auto c = b.consumers[in.ConsumeIntegralInRange<std::size_t>(0, b.consumers.size() - 1)];
    const auto p = b.producers[in.ConsumeIntegralInRange<std::size_t>(0, b.producers.size() - 1)];
    d.desc += "  '" + b.name_of(c) + "'.subscribe('" + b.name_of(p) + "', ";
    auto o = stage_options(in, d);
    d.desc += ")\n";
    b.with_producer(p, [&](auto& producer) {
      if (c.kind == 1)
        b.mids[c.index].subscribe(producer, o);
      else
        b.sinks[c.index].subscribe(producer, o);
    });
  }
}

void run_it(FuzzedDataProvider& in, const sluice::CompiledGraph& compiled, Builder& b, Decoded& d) {
  static constexpr std::size_t quanta[] = {0, 1, 3, 64};
  static constexpr int concurrencies[] = {-1, 0, 1, 2};
  sluice::RunOptions ro;
  ro.quantum = pick(in, quanta);
  ro.concurrency = pick(in, concurrencies);
  ro.fail_fast = in.ConsumeBool();
  ro.manual = true;
  ro.logger = [](sluice::LogLevel, std::string_view) {};
  d.desc += "  run {.quantum=" + std::to_string(ro.quantum) +
            " .concurrency=" + std::to_string(ro.concurrency) +
            " .fail_fast=" + std::to_string(ro.fail_fast) + "}\n";
  if (ro.quantum == 0 || ro.concurrency < 0) {
    std::string expected;
    if (ro.quantum == 0) expected += "run option quantum must be at least 1, got: 0";
    if (ro.concurrency < 0)
      expected += std::string(expected.empty() ? "" : "\n") +
                  "run option concurrency must be 0 (hardware) or more, got: " +
                  std::to_string(ro.concurrency);
    try {
      auto run = compiled.run(ro);
      finding("invalid run options accepted", d);
    } catch (const sluice::option_error& e) {
      if (e.what() != expected)
        finding("run options refused with \"" + std::string(e.what()) + "\", expected \"" +
                    expected + "\"",
                d);
    }
    return;
  }
  if (!d.runnable) return;
  for (auto& h : b.pushes)
    h.close();  // a closed push source finishes once its (empty) stream is taken
  bool dynamic = d.desc.find(".dynamic") != std::string::npos;
  auto run = compiled.run(ro);
  try {
    if (dynamic)
      run.drain();
    else
      run.wait();
  } catch (const sluice::stage_error&) {
    return;  // a hash computing an unknown partition: a documented run failure
  } catch (const std::logic_error& e) {
    finding(std::string("a compiled graph cannot finish: ") + e.what(), d);
  }
  const auto m = run.metrics();
  if (m.undelivered() != 0)
    finding("a finished run left " + std::to_string(m.undelivered()) + " events undelivered", d);
}

bool verbose() {
  static const bool v = std::getenv("SLUICE_FUZZ_VERBOSE") != nullptr;
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  Decoded d;
  Builder b;
  std::string outcome;
  try {
    build(in, b, d);
    (void)b.g.to_dot();
    std::optional<sluice::CompiledGraph> compiled;
    try {
      compiled.emplace(b.g.compile());
      outcome = "compiled";
    } catch (const sluice::option_error& e) {
      check_message(e.what(), d);
      outcome = std::string("option_error:\n") + e.what();
    }
    if (compiled) {
      run_it(in, *compiled, b, d);
      if (!d.runnable) outcome += " (not run: " + d.not_runnable + ")";
    }
  } catch (const std::exception& e) {
    finding(std::string("unexpected exception: ") + typeid(e).name() + ": " + e.what(), d);
  } catch (...) {
    finding("unexpected non-std exception", d);
  }
  if (verbose()) std::fprintf(stderr, "---- graph:\n%s---- %s\n", d.desc.c_str(), outcome.c_str());
  return 0;
}
