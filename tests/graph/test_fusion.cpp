// Fusion (engine/DESIGN.md 10): a chain of function stages and the consumer it ends in run in one
// cell. Results, per-stage metrics, failures, the host's callbacks, DOT and the Run calls that
// address a fused member, and the shapes that must not be fused.
#include <algorithm>
#include <any>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <sluice/sluice.hpp>

#include <doctest/doctest.h>

#include <support/stages.hpp>

namespace {

using I64 = std::int64_t;

const sluice::StageMetrics& stage(const sluice::Metrics& m, const std::string& name) {
  for (auto& s : m.stages)
    if (s.name == name) return s;
  throw std::out_of_range("no stage " + name);
}

const sluice::EdgeMetrics& edge(const sluice::Metrics& m, const std::string& producer,
                                const std::string& consumer) {
  for (auto& e : m.edges)
    if (e.producer == producer && e.consumer == consumer) return e;
  throw std::out_of_range("no edge " + producer + " -> " + consumer);
}

auto endless() {
  return sluice::from_generator([i = I64{0}]() mutable -> std::optional<I64> { return i++; });
}

/// 0, 1, ..., n - 1 from a generator (instances each run their own).
auto counting(I64 n) {
  return sluice::from_generator([i = I64{0}, n]() mutable -> std::optional<I64> {
    if (i == n) return std::nullopt;
    return i++;
  });
}

/// The `cluster_fused` blocks of a DOT text (empty: nothing fused).
std::vector<std::string> fused_clusters(const std::string& dot) {
  std::vector<std::string> out;
  for (auto at = dot.find("subgraph cluster_fused"); at != std::string::npos;
       at = dot.find("subgraph cluster_fused", at + 1))
    out.push_back(dot.substr(at, dot.find("  }\n", at) - at));
  return out;
}

bool lists(const std::string& cluster, const std::string& name) {
  return cluster.find("\"" + name + "\";") != std::string::npos;
}

/// What a class host was told, in order; shared by the engine's copies of the handler.
struct HostLog {
  std::vector<std::string> calls;  // "subscribe", "events", "cancel", "info", "terminate"
  std::vector<std::size_t> chunks;
  std::string peer;
  sluice::SubscriptionId subscription = 99;
  std::int64_t max_demand = 0;
  sluice::CancelInfo cancel;
  sluice::Reason terminate;
  I64 sum = 0;
  std::size_t events = 0;

  std::size_t count(std::string_view call) const {
    return static_cast<std::size_t>(std::count(calls.begin(), calls.end(), call));
  }
};

/// A consumer class with every callback, recording them (and the events' sum) in a HostLog.
/// Stops itself (ctx.stop) once it has seen `stop_after` events, if set.
struct RecordingHost {
  std::shared_ptr<HostLog> log = std::make_shared<HostLog>();
  std::optional<std::size_t> stop_after;

  void handle_subscribe(const sluice::SubscribeInfo& info, sluice::Context<void>&) {
    log->calls.emplace_back("subscribe");
    log->peer = std::string(info.peer);
    log->subscription = info.subscription;
    log->max_demand = info.options.max_demand;
  }
  void handle_events(std::span<I64> in, sluice::Context<void>& ctx) {
    if (log->calls.empty() || log->calls.back() != "events") log->calls.emplace_back("events");
    log->chunks.push_back(in.size());
    log->events += in.size();
    for (auto x : in)
      log->sum += x;
    if (stop_after && log->events >= *stop_after) ctx.stop();
  }
  void handle_cancel(const sluice::CancelInfo& info, sluice::Context<void>&) {
    log->calls.emplace_back("cancel");
    log->cancel = info;
  }
  void handle_info(std::any&, sluice::Context<void>&) { log->calls.emplace_back("info"); }
  void handle_terminate(const sluice::Reason& reason) {
    log->calls.emplace_back("terminate");
    log->terminate = reason;
  }
};

/// map -> filter -> flat_map -> map (to another type) -> collect over 0..n-1; `fuse` on every
/// stage.
std::vector<std::string> chain_results(bool fuse, std::size_t* clusters) {
  sluice::Graph g;
  std::vector<std::string> out;
  const sluice::StageOptions o{.fuse = fuse};
  g.source("numbers", sluice::from_range(std::views::iota(0, 100'000)))
      .map(
          "triple", [](int x) { return 3 * I64{x}; }, o)
      .filter(
          "even", [](const I64& x) { return x % 2 == 0; }, o)
      .flat_map(
          "twice",
          [](I64 x) {
            return std::vector<I64>{x, x + 1};
          },
          o)
      .map(
          "text", [](I64 x) { return std::to_string(x); }, o)
      .collect("out", out, o);
  *clusters = fused_clusters(g.to_dot()).size();
  g.run().wait();
  return out;
}

/// Boxes 0..n-1 -> map in place -> filter in place -> unbox -> collect.
std::vector<I64> boxed_results(bool fuse) {
  sluice::Graph g;
  std::vector<I64> out;
  const sluice::StageOptions o{.fuse = fuse};
  g.source("boxes",
           sluice::from_generator([i = 0]() mutable -> std::optional<std::unique_ptr<int>> {
             if (i == 10'000) return std::nullopt;
             return std::make_unique<int>(i++);
           }))
      .map(
          "double",
          [](std::unique_ptr<int> p) {
            *p *= 2;
            return p;
          },
          o)
      .filter(
          "not3", [](const std::unique_ptr<int>& p) { return *p % 3 != 0; }, o)
      .map(
          "unbox", [](std::unique_ptr<int> p) { return I64{*p}; }, o)
      .collect("out", out, o);
  g.run().wait();
  return out;
}

/// Strings -> map in place -> filter in place -> collect.
std::vector<std::string> string_results(bool fuse) {
  std::vector<std::string> words;
  for (int i = 0; i < 5000; ++i)
    words.push_back(std::string(static_cast<std::size_t>(i % 37), 'x') + std::to_string(i));
  sluice::Graph g;
  std::vector<std::string> out;
  const sluice::StageOptions o{.fuse = fuse};
  g.source("words", sluice::from_range(words))
      .map(
          "shout", [](std::string s) { return s + "!"; }, o)
      .filter(
          "odd_length", [](const std::string& s) { return s.size() % 2 == 1; }, o)
      .collect("out", out, o);
  g.run().wait();
  return out;
}

}  // namespace

TEST_SUITE("graph.fusion") {
TEST_CASE("fusion: results are identical fused and unfused") {
  SUBCASE("map, filter, flat_map, map to another type, collect") {
    std::size_t fused_clusters_n = 0, unfused_clusters_n = 0;
    const auto fused = chain_results(true, &fused_clusters_n);
    const auto unfused = chain_results(false, &unfused_clusters_n);
    CHECK(fused_clusters_n == 1);
    CHECK(unfused_clusters_n == 0);
    std::vector<std::string> expected;
    for (I64 x = 0; x < 100'000; ++x)
      if ((3 * x) % 2 == 0) {
        expected.push_back(std::to_string(3 * x));
        expected.push_back(std::to_string(3 * x + 1));
      }
    REQUIRE(expected.size() == 100'000);
    CHECK(fused == expected);
    CHECK(unfused == expected);
  }
  SUBCASE("move-only events through map and filter in place") {
    const auto fused = boxed_results(true);
    const auto unfused = boxed_results(false);
    std::vector<I64> expected;
    for (I64 x = 0; x < 10'000; ++x)
      if ((2 * x) % 3 != 0) expected.push_back(2 * x);
    CHECK(fused == expected);
    CHECK(unfused == expected);
  }
  SUBCASE("strings through map and filter in place") {
    const auto fused = string_results(true);
    const auto unfused = string_results(false);
    CHECK(fused.size() > 1000);
    CHECK(fused == unfused);
    for (auto& s : fused) {
      CHECK(s.size() % 2 == 1);
      CHECK(s.back() == '!');
    }
  }
}

TEST_CASE("fusion: each member has its own stage metrics and edges") {
  sluice::Graph g;
  I64 sum = 0;
  g.source("numbers", sluice::from_range(std::views::iota(0, 1000)))
      .map("double", [](int x) { return 2 * x; })
      .filter("mod3", [](const int& x) { return x % 3 == 0; })
      .for_each("sink", [&](int x) { sum += x; });
  const auto clusters = fused_clusters(g.to_dot());
  REQUIRE(clusters.size() == 1);
  auto run = g.run();
  run.wait();
  const auto m = run.metrics();
  const auto& map = stage(m, "double");
  const auto& filter = stage(m, "mod3");
  const auto& sink = stage(m, "sink");
  CHECK(map.kind == sluice::StageKind::producer_consumer);
  CHECK(filter.kind == sluice::StageKind::producer_consumer);
  CHECK(sink.kind == sluice::StageKind::consumer);
  CHECK(map.events_in == 1000);
  CHECK(map.events_out == 1000);
  CHECK(filter.events_in == 1000);
  CHECK(filter.events_out == 334);  // 2x % 3 == 0 for x = 0, 3, ..., 999
  CHECK(sink.events_in == 334);
  for (auto* s : {&map, &filter, &sink}) {
    CAPTURE(s->name);
    CHECK(s->finished);
    CHECK(s->stop_reason == "normal");
  }
  const auto& e1 = edge(m, "double", "mod3");
  CHECK(e1.sent == 1000);
  CHECK(e1.received == 1000);
  const auto& e2 = edge(m, "mod3", "sink");
  CHECK(e2.sent == 334);
  CHECK(e2.received == 334);
  const auto& in = edge(m, "numbers", "double");
  CHECK(in.sent == 1000);
  CHECK(in.received == 1000);
  CHECK(m.undelivered() == 0);
  I64 expected = 0;
  for (int x = 0; x < 1000; x += 3)
    expected += 2 * x;
  CHECK(sum == expected);
}

TEST_CASE("fusion: a member that throws fails the run naming that member") {
  auto lines = std::make_shared<std::vector<std::string>>();
  auto mutex = std::make_shared<std::mutex>();
  sluice::RunOptions options;  // fail_fast by default
  options.logger = [lines, mutex](sluice::LogLevel, std::string_view line) {
    std::lock_guard lock(*mutex);
    lines->emplace_back(line);
  };
  RecordingHost host;
  sluice::Graph g;
  g.source("numbers", sluice::from_range(std::views::iota(0, 1000)))
      .map("above", [](int x) { return I64{x}; })
      .map("boom",
           [](I64 x) {
             if (x == 500) throw std::runtime_error("no 500 here");
             return x;
           })
      .filter("below", [](const I64&) { return true; })
      .to("sink", host);
  REQUIRE(fused_clusters(g.to_dot()).size() == 1);
  auto run = g.run(options);
  bool thrown = false;
  try {
    run.wait();
  } catch (const sluice::stage_error& e) {
    thrown = true;
    CHECK(e.stage() == "boom");
    CHECK(std::string(e.what()) == "stage 'boom': no 500 here");
  }
  CHECK(thrown);
  const auto m = run.metrics();
  CHECK(stage(m, "above").stop_reason == "shutdown");
  CHECK(stage(m, "boom").stop_reason == "no 500 here");
  CHECK(stage(m, "below").stop_reason == "no 500 here");
  CHECK(stage(m, "sink").stop_reason == "no 500 here");
  for (auto name : {"above", "boom", "below", "sink"}) {
    CAPTURE(name);
    CHECK(stage(m, name).finished);
  }
  CHECK(stage(m, "boom").events_out < 1000);
  CHECK(host.log->events < 1000);
  {
    std::lock_guard lock(*mutex);
    CHECK(std::count(lines->begin(), lines->end(), "stage 'boom' failed: no 500 here") == 1);
    CHECK(std::none_of(lines->begin(), lines->end(), [](const std::string& l) {
      return l.find("stage 'sink' failed") != std::string::npos;
    }));
  }
  // The host hears its producer's end, then its own stop, once each and in that order.
  const auto& calls = host.log->calls;
  REQUIRE(host.log->count("cancel") == 1);
  REQUIRE(host.log->count("terminate") == 1);
  REQUIRE(calls.size() >= 2);
  CHECK(calls[calls.size() - 2] == "cancel");
  CHECK(calls.back() == "terminate");
  CHECK(host.log->cancel.origin == sluice::CancelInfo::Origin::producer_ended);
  CHECK(host.log->cancel.reason.is_error());
  CHECK(host.log->cancel.reason.message == "no 500 here");
  CHECK(host.log->terminate.is_error());
  CHECK(host.log->terminate.message == "no 500 here");
}

TEST_CASE(
    "fusion: a temporary subscription below a member keeps them apart, so the member's error "
    "reaches the host as normal") {
  RecordingHost host;
  sluice::Graph g;
  g.source("numbers", sluice::from_range(std::views::iota(0, 1000)))
      .map("boom",
           [](int x) {
             if (x == 500) throw std::runtime_error("no 500 here");
             return I64{x};
           })
      .to("sink", host, {.cancel = sluice::CancelMode::temporary});
  // Not fused: under a temporary subscription the host outlives a failed member (a producer_
  // consumer host would go on delivering what it holds), which one cell cannot do.
  REQUIRE(fused_clusters(g.to_dot()).empty());
  auto run = g.run(sluice_test::quiet({.fail_fast = false}));  // only the cancel modes act
  CHECK_THROWS_WITH_AS(run.wait(), "stage 'boom': no 500 here", sluice::stage_error);
  const auto m = run.metrics();
  CHECK(stage(m, "boom").stop_reason == "no 500 here");
  CHECK(stage(m, "sink").stop_reason == "normal");
  REQUIRE(host.log->count("cancel") == 1);
  REQUIRE(host.log->count("terminate") == 1);
  CHECK(host.log->calls.back() == "terminate");
  CHECK(host.log->cancel.reason.message == "no 500 here");
  CHECK(host.log->terminate.is_normal());
}

TEST_CASE("fusion: the host's class callbacks as a stage of its own would get them") {
  RecordingHost host;
  sluice::Graph g;
  g.source("numbers", sluice::from_range(std::views::iota(0, 1000)))
      .flat_map("expand", [](int x) { return std::vector<I64>(20, I64{x}); })
      .map("same", [](I64 x) { return x; })
      .to("sink", host, {.max_demand = 10});
  REQUIRE(fused_clusters(g.to_dot()).size() == 1);
  g.run().wait();
  const auto& log = *host.log;
  CHECK(log.count("subscribe") == 1);
  CHECK(log.peer == "same");
  CHECK(log.subscription == 0);
  CHECK(log.max_demand == 10);
  CHECK(log.events == 20'000);
  CHECK(log.sum == 20 * I64{999} * 1000 / 2);
  REQUIRE_FALSE(log.chunks.empty());
  CHECK(*std::max_element(log.chunks.begin(), log.chunks.end()) <= 5);  // max - min demand
  CHECK(std::find(log.chunks.begin(), log.chunks.end(), 0) == log.chunks.end());
  CHECK(log.count("cancel") == 1);
  CHECK(log.cancel.origin == sluice::CancelInfo::Origin::producer_ended);
  CHECK(log.cancel.reason.is_normal());
  CHECK(log.cancel.subscription == 0);
  CHECK(log.count("terminate") == 1);
  CHECK(log.terminate.is_normal());
  REQUIRE(log.calls.size() == 4);
  CHECK(log.calls == std::vector<std::string>{"subscribe", "events", "cancel", "terminate"});
}

TEST_CASE("fusion: a head whose producer has several instances") {
  RecordingHost host;
  sluice::Graph g;
  g.source("numbers", counting(1000), {.instances = 3})
      .map("plus1", [](I64 x) { return x + 1; })
      .to("sink", host);
  const auto clusters = fused_clusters(g.to_dot());
  REQUIRE(clusters.size() == 1);
  CHECK(lists(clusters[0], "plus1"));
  CHECK(lists(clusters[0], "sink"));
  auto run = g.run();
  run.wait();
  const auto& log = *host.log;
  CHECK(log.events == 3000);
  CHECK(log.sum == 3 * (I64{1000} * 1001 / 2));
  CHECK(log.count("subscribe") == 1);
  CHECK(log.count("cancel") == 1);
  CHECK(log.cancel.origin == sluice::CancelInfo::Origin::producer_ended);
  CHECK(log.count("terminate") == 1);
  CHECK(log.terminate.is_normal());
  CHECK(log.calls.back() == "terminate");
  const auto m = run.metrics();
  CHECK(stage(m, "plus1").events_in == 3000);
  CHECK(stage(m, "sink").events_in == 3000);
  CHECK(m.undelivered() == 0);
}

TEST_CASE("fusion: ctx.cancel(0) from the host cancels every head subscription") {
  struct Canceller {
    std::shared_ptr<HostLog> log = std::make_shared<HostLog>();
    void handle_events(std::span<I64> in, sluice::Context<void>& ctx) {
      log->events += in.size();
      log->chunks.push_back(in.size());
      if (log->events == 100) ctx.cancel(0);
    }
    void handle_cancel(const sluice::CancelInfo& info, sluice::Context<void>&) {
      log->calls.emplace_back("cancel");
      log->cancel = info;
    }
    void handle_terminate(const sluice::Reason& reason) {
      log->calls.emplace_back("terminate");
      log->terminate = reason;
    }
  };
  for (const bool fuse : {true, false}) {
    CAPTURE(fuse);
    Canceller host;
    sluice::Graph g;
    g.source("numbers", endless(), {.instances = 3})
        .map("m", [](I64 x) { return x; }, {.fuse = fuse})
        .to("sink", host, {.max_demand = 10});
    CHECK(fused_clusters(g.to_dot()).size() == (fuse ? 1 : 0));
    auto run = g.run();
    CHECK_NOTHROW(run.wait());
    const auto& log = *host.log;
    // No chunk after the cancel, as a consumer gets none of a batch after cancelling.
    CHECK(log.events == 100);
    CHECK(log.count("cancel") == 1);
    CHECK(log.cancel.origin == sluice::CancelInfo::Origin::cancelled);
    CHECK(log.count("terminate") == 1);
    CHECK(log.terminate.is_normal());
    const auto m = run.metrics();
    CHECK(stage(m, "sink").events_in == 100);
    CHECK(stage(m, "sink").stop_reason == "normal");
    CHECK(stage(m, "m").stop_reason == "shutdown");
    for (auto& s : m.stages)
      CHECK(s.finished);
  }
}

TEST_CASE("fusion: fuse = false keeps stages apart, and attach to a fused member is refused") {
  SUBCASE("DOT: one cluster listing the group, none when a member or the host opts out") {
    auto dot = [](bool member, bool host) {
      sluice::Graph g;
      g.source("numbers", sluice::from_range(std::views::iota(0, 10)))
          .map("m", [](int x) { return x; }, {.fuse = member})
          .for_each("sink", [](int) {}, {.fuse = host});
      return g.to_dot();
    };
    const auto both = fused_clusters(dot(true, true));
    REQUIRE(both.size() == 1);
    CHECK(lists(both[0], "m"));
    CHECK(lists(both[0], "sink"));
    CHECK_FALSE(lists(both[0], "numbers"));
    CHECK(dot(false, true).find("cluster_fused") == std::string::npos);
    CHECK(dot(true, false).find("cluster_fused") == std::string::npos);
  }
  SUBCASE("a member opting out splits the chain; results unchanged") {
    for (const bool first : {true, false}) {
      CAPTURE(first);
      sluice::Graph g;
      std::vector<int> out;
      g.source("numbers", sluice::from_range(std::views::iota(0, 1000)))
          .map("m", [](int x) { return x + 1; }, {.fuse = first})
          .filter("f", [](const int& x) { return x % 2 == 0; }, {.fuse = !first})
          .collect("sink", out);
      const auto clusters = fused_clusters(g.to_dot());
      if (first) {  // f opted out: m cannot reach the sink, f cannot host
        CHECK(clusters.empty());
      } else {  // m opted out: f and the sink
        REQUIRE(clusters.size() == 1);
        CHECK_FALSE(lists(clusters[0], "m"));
        CHECK(lists(clusters[0], "f"));
        CHECK(lists(clusters[0], "sink"));
      }
      auto run = g.run();
      run.wait();
      REQUIRE(out.size() == 500);
      for (std::size_t i = 0; i < out.size(); ++i)
        CHECK(out[i] == 2 * static_cast<int>(i) + 2);
      const auto m = run.metrics();
      CHECK(stage(m, "m").events_out == 1000);
      CHECK(stage(m, "f").events_out == 500);
      CHECK(m.undelivered() == 0);
    }
  }
  SUBCASE("attach to a fused member throws; to a member that opted out it works") {
    for (const bool fuse : {true, false}) {
      CAPTURE(fuse);
      sluice::Graph g;
      auto m = g.source("numbers", endless()).map("m", [](I64 x) { return x; }, {.fuse = fuse});
      m.for_each("sink", [](I64) {});
      auto run = g.run();
      if (fuse) {
        try {
          run.attach(m, "late", [](I64) {});
          FAIL("attach to a fused member did not throw");
        } catch (const sluice::option_error& e) {
          const std::string what = e.what();
          CHECK(what.find("'m' is fused into 'sink'") != std::string::npos);
          CHECK(what.find("StageOptions::fuse = false") != std::string::npos);
        }
      } else {
        auto late = run.attach(m, "late", [](I64) {});
        run.detach(late);
        CHECK(stage(run.metrics(), "late").finished);
      }
      run.cancel();
    }
  }
}

TEST_CASE("fusion: stages that must not be fused still give correct results") {
  SUBCASE("a map with two instances") {
    sluice::Graph g;
    auto sum = std::make_shared<std::atomic<I64>>(0);
    auto m = g.source("numbers", sluice::from_range(std::views::iota(0, 10'000)))
                 .map("double", [](int x) { return 2 * I64{x}; }, {.instances = 2});
    m.for_each("sink", [sum](I64 x) { *sum += x; });
    CHECK(g.to_dot().find("cluster_fused") == std::string::npos);
    auto run = g.run();
    run.wait();
    CHECK(*sum == 2 * (I64{9999} * 10'000 / 2));
    CHECK(run.describe(m).instances == 2);
    const auto metrics = run.metrics();
    CHECK(metrics.undelivered() == 0);
  }
  SUBCASE("maps whose producer broadcasts") {
    sluice::Graph g;
    std::vector<I64> a, b;
    auto src = g.source("numbers", sluice::from_range(std::views::iota(0, 10'000)));
    src.broadcast();
    auto ma = src.map("plus1", [](const int& x) { return I64{x} + 1; });
    ma.collect("a", a);
    src.map("minus1", [](const int& x) { return I64{x} - 1; }).collect("b", b);
    CHECK(g.to_dot().find("cluster_fused") == std::string::npos);
    auto run = g.run();
    run.wait();
    REQUIRE(a.size() == 10'000);
    REQUIRE(b.size() == 10'000);
    for (std::size_t i = 0; i < a.size(); ++i) {
      CHECK(a[i] == static_cast<I64>(i) + 1);
      CHECK(b[i] == static_cast<I64>(i) - 1);
    }
    CHECK(run.describe(ma).instances == 1);  // a stage of its own
  }
  SUBCASE("a stream (manual demand) after a map") {
    sluice::Graph g;
    auto out = g.source("numbers", sluice::from_range(std::views::iota(0, 5000)))
                   .map("square", [](int x) { return I64{x} * x; })
                   .stream("out", 64);
    CHECK(g.to_dot().find("cluster_fused") == std::string::npos);
    auto run = g.run();
    std::vector<I64> seen;
    for (auto& x : out)
      seen.push_back(x);
    run.wait();
    REQUIRE(seen.size() == 5000);
    for (std::size_t i = 0; i < seen.size(); ++i)
      CHECK(seen[i] == static_cast<I64>(i * i));
  }
}

TEST_CASE("fusion: a host that stops itself ends the run normally") {
  RecordingHost host;
  host.stop_after = 1000;
  sluice::Graph g;
  g.source("numbers", endless())
      .map("m", [](I64 x) { return x * 2; })
      .filter("f", [](const I64& x) { return x % 4 == 0; })
      .to("sink", host, {.max_demand = 100});
  REQUIRE(fused_clusters(g.to_dot()).size() == 1);
  auto run = g.run();
  CHECK_NOTHROW(run.wait());
  const auto m = run.metrics();
  CHECK(stage(m, "m").finished);
  CHECK(stage(m, "m").stop_reason == "shutdown");
  CHECK(stage(m, "f").finished);
  CHECK(stage(m, "f").stop_reason == "shutdown");
  CHECK(stage(m, "sink").finished);
  CHECK(stage(m, "sink").stop_reason == "normal");
  const auto& log = *host.log;
  CHECK(log.events >= 1000);
  CHECK(log.events < 1050);  // no chunk after the stop (chunks of at most 50)
  CHECK(stage(m, "sink").events_in == log.events);
  CHECK(log.count("terminate") == 1);
  CHECK(log.terminate.is_normal());
  CHECK(log.calls.back() == "terminate");
}

TEST_CASE("fusion: detach of the host finishes the group, and a member cannot be addressed") {
  sluice::Graph g;
  auto src = g.source("numbers", endless(), {.dynamic = true});
  auto m = src.map("m", [](I64 x) { return x + 1; });
  RecordingHost host;
  auto sink = m.to("sink", host);
  auto run = g.run();
  REQUIRE(fused_clusters(g.to_dot()).size() == 1);
  auto refused = [](auto&& call) {
    try {
      call();
    } catch (const sluice::option_error& e) {
      const std::string what = e.what();
      CHECK(what.find("stage 'm' is fused into 'sink'") != std::string::npos);
      CHECK(what.find("StageOptions::fuse = false") != std::string::npos);
      return true;
    }
    return false;
  };
  CHECK(refused([&] { run.describe(m); }));
  CHECK(refused([&] { run.send_info(m, std::any(1)); }));
  CHECK(refused([&] { run.detach(m); }));
  const auto summary = run.describe(sink);
  CHECK(summary.name == "sink");
  CHECK(summary.kind == sluice::StageKind::consumer);
  CHECK(summary.instances == 1);
  run.send_info(sink, std::any(1));  // the host's handle_info
  run.detach(sink);
  CHECK(host.log->count("info") == 1);
  CHECK(host.log->count("cancel") == 1);
  CHECK(host.log->cancel.origin == sluice::CancelInfo::Origin::cancelled);
  CHECK(host.log->calls.back() == "terminate");
  auto metrics = run.metrics();
  CHECK(stage(metrics, "sink").finished);
  CHECK(stage(metrics, "sink").stop_reason == "normal");
  CHECK(stage(metrics, "m").finished);
  CHECK(stage(metrics, "m").stop_reason == "shutdown");
  CHECK_FALSE(stage(metrics, "numbers").finished);  // dynamic: it stays
  run.drain();
  metrics = run.metrics();
  CHECK(stage(metrics, "numbers").finished);
}

}  // TEST_SUITE("graph.fusion")

namespace {
/// A producer_consumer written as a class: doubles every event.
struct Doubler {
  void handle_events(std::span<I64> in, sluice::Context<I64>& ctx) {
    for (auto e : in)
      ctx.emit(2 * e);
  }
};

/// source -> filter (odd) -> Doubler (class) -> sum, and source -> map -> map (partition 2) ->
/// 2 sums; `fuse` on every stage. Returns both sums and the fused clusters of each graph.
struct PcHostRun {
  I64 doubled = 0, partitioned = 0;
  std::vector<std::string> clusters_a, clusters_b;
};
PcHostRun run_pc_hosts(bool fuse) {
  PcHostRun r;
  sluice::StageOptions o;
  o.fuse = fuse;
  {
    sluice::Graph g;
    std::atomic<I64> sum{0};
    g.source("numbers", sluice::from_range(std::views::iota(I64{0}, I64{100'000})))
        .filter(
            "odd", [](const I64& x) { return x % 2 == 1; }, o)
        .then<I64>("double", Doubler{}, o)
        .for_each(
            "sum", [&](I64 x) { sum += x; }, o);
    r.clusters_a = fused_clusters(g.to_dot());
    g.run().wait();
    r.doubled = sum;
  }
  {
    sluice::Graph g;
    std::atomic<I64> sum{0};
    auto o2 = o;
    o2.instances = 2;
    g.source("numbers", sluice::from_range(std::views::iota(I64{0}, I64{100'000})))
        .map(
            "plus1", [](I64 x) { return x + 1; }, o)
        .map(
            "plus2", [](I64 x) { return x + 2; }, o)
        .partition(2, [](const I64& x) { return static_cast<std::size_t>(x % 2); })
        .for_each(
            "sum", [&](I64 x) { sum += x; }, o2);
    r.clusters_b = fused_clusters(g.to_dot());
    g.run().wait();
    r.partitioned = sum;
  }
  return r;
}
}  // namespace

TEST_CASE(
    "fusion: a producer_consumer hosts the function stages before it when they keep its type") {
  const auto fused = run_pc_hosts(true);
  const auto apart = run_pc_hosts(false);
  CHECK(fused.doubled == apart.doubled);
  CHECK(fused.doubled == 2 * I64{50'000} * 50'000);  // twice the sum of the odd numbers below 10^5
  CHECK(fused.partitioned == apart.partitioned);
  CHECK(fused.partitioned == I64{99'999} * 100'000 / 2 + 3 * I64{100'000});
  // The filter runs in the class stage's cell; the sum after it has no function stage to host.
  REQUIRE(fused.clusters_a.size() == 1);
  CHECK(lists(fused.clusters_a[0], "odd"));
  CHECK(lists(fused.clusters_a[0], "double"));
  CHECK_FALSE(lists(fused.clusters_a[0], "sum"));
  // A run of maps ends in the last one, which keeps its partition dispatcher.
  REQUIRE(fused.clusters_b.size() == 1);
  CHECK(lists(fused.clusters_b[0], "plus1"));
  CHECK(lists(fused.clusters_b[0], "plus2"));
  CHECK(apart.clusters_a.empty());
  CHECK(apart.clusters_b.empty());
}
