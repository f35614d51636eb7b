// oneTBB baselines for sluice-bench and the benchmark suites: the same shapes written the way a
// oneTBB user would, on flow graph (one event per message, or user-made batches of 1024) and on
// parallel_pipeline (one event per token, or a batch of 1024 per token).
//
// Every function moves the int64_t events 0..events-1 through its shape and returns what the
// sink(s) summed, so the caller can check it. Stage k (k >= 1) of a chain adds 1 to each event
// (the same "map" the Sluice scenarios run), so a chain of `stages` stages sums
// events*(events-1)/2 + events*(stages-2).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/parallel_pipeline.h>

namespace sluice_bench {

inline constexpr std::size_t flow_batch = 1024;

/// The user's hand-made batch: the next (up to) 1024 events of 0..events-1.
inline std::vector<std::int64_t> next_batch(std::int64_t& next, std::int64_t events) {
  std::vector<std::int64_t> m;
  const auto n = std::min<std::int64_t>(static_cast<std::int64_t>(flow_batch), events - next);
  m.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    m.push_back(next++);
  return m;
}

/// Source → (stages - 2) serial maps (+1) → serial sum, on flow graph. `batched`: each message
/// is a std::vector of up to 1024 events the user batched by hand.
inline std::int64_t flow_chain(std::int64_t events, int stages, bool batched) {
  namespace flow = oneapi::tbb::flow;
  flow::graph g;
  std::int64_t sum = 0;
  if (batched) {
    using Msg = std::vector<std::int64_t>;
    std::int64_t next = 0;
    flow::input_node<Msg> src(g, [&](oneapi::tbb::flow_control& fc) -> Msg {
      if (next >= events) {
        fc.stop();
        return {};
      }
      return next_batch(next, events);
    });
    std::vector<std::unique_ptr<flow::function_node<Msg, Msg>>> maps;
    for (int k = 0; k < stages - 2; ++k)
      maps.push_back(std::make_unique<flow::function_node<Msg, Msg>>(g, flow::serial, [](Msg m) {
        for (auto& e : m)
          e += 1;
        return m;
      }));
    flow::function_node<Msg> sink(g, flow::serial, [&](const Msg& m) {
      for (auto e : m)
        sum += e;
    });
    if (maps.empty()) {
      flow::make_edge(src, sink);
    } else {
      flow::make_edge(src, *maps.front());
      for (std::size_t k = 1; k < maps.size(); ++k)
        flow::make_edge(*maps[k - 1], *maps[k]);
      flow::make_edge(*maps.back(), sink);
    }
    src.activate();
    g.wait_for_all();
  } else {
    std::int64_t next = 0;
    flow::input_node<std::int64_t> src(g, [&](oneapi::tbb::flow_control& fc) -> std::int64_t {
      if (next >= events) {
        fc.stop();
        return 0;
      }
      return next++;
    });
    std::vector<std::unique_ptr<flow::function_node<std::int64_t, std::int64_t>>> maps;
    for (int k = 0; k < stages - 2; ++k)
      maps.push_back(std::make_unique<flow::function_node<std::int64_t, std::int64_t>>(
          g, flow::serial, [](std::int64_t e) { return e + 1; }));
    flow::function_node<std::int64_t> sink(g, flow::serial, [&](std::int64_t e) { sum += e; });
    if (maps.empty()) {
      flow::make_edge(src, sink);
    } else {
      flow::make_edge(src, *maps.front());
      for (std::size_t k = 1; k < maps.size(); ++k)
        flow::make_edge(*maps[k - 1], *maps[k]);
      flow::make_edge(*maps.back(), sink);
    }
    src.activate();
    g.wait_for_all();
  }
  return sum;
}

/// The same chain on parallel_pipeline, every filter serial_in_order. `batched`: a token carries
/// 1024 events (each token then runs all stages on one thread); otherwise one event per token,
/// 16 tokens in flight.
inline std::int64_t pipeline_chain(std::int64_t events, int stages, bool batched) {
  namespace tbb = oneapi::tbb;
  std::int64_t next = 0, sum = 0;
  const auto mode = tbb::filter_mode::serial_in_order;
  if (batched) {
    using Msg = std::vector<std::int64_t>;
    auto chain = tbb::make_filter<void, Msg>(mode, [&](tbb::flow_control& fc) -> Msg {
      if (next >= events) {
        fc.stop();
        return {};
      }
      return next_batch(next, events);
    });
    for (int k = 0; k < stages - 2; ++k)
      chain = chain & tbb::make_filter<Msg, Msg>(mode, [](Msg m) {
                for (auto& e : m)
                  e += 1;
                return m;
              });
    tbb::parallel_pipeline(16, chain & tbb::make_filter<Msg, void>(mode, [&](const Msg& m) {
                                 for (auto e : m)
                                   sum += e;
                               }));
  } else {
    auto chain =
        tbb::make_filter<void, std::int64_t>(mode, [&](tbb::flow_control& fc) -> std::int64_t {
          if (next >= events) {
            fc.stop();
            return 0;
          }
          return next++;
        });
    for (int k = 0; k < stages - 2; ++k)
      chain = chain & tbb::make_filter<std::int64_t, std::int64_t>(
                          mode, [](std::int64_t e) { return e + 1; });
    tbb::parallel_pipeline(
        16, chain & tbb::make_filter<std::int64_t, void>(mode, [&](std::int64_t e) { sum += e; }));
  }
  return sum;
}

/// Source → `consumers` sums, each event to one of them: a flow graph function_node with
/// concurrency `consumers` (what a flow graph user writes for a demand dispatcher).
inline std::int64_t flow_fan_out(std::int64_t events, std::size_t consumers, bool batched) {
  namespace flow = oneapi::tbb::flow;
  flow::graph g;
  std::atomic<std::int64_t> sum{0};
  std::int64_t next = 0;
  if (batched) {
    using Msg = std::vector<std::int64_t>;
    flow::input_node<Msg> src(g, [&](oneapi::tbb::flow_control& fc) -> Msg {
      if (next >= events) {
        fc.stop();
        return {};
      }
      return next_batch(next, events);
    });
    flow::function_node<Msg> sink(g, consumers, [&](const Msg& m) {
      std::int64_t s = 0;
      for (auto e : m)
        s += e;
      sum.fetch_add(s);
    });
    flow::make_edge(src, sink);
    src.activate();
    g.wait_for_all();
  } else {
    flow::input_node<std::int64_t> src(g, [&](oneapi::tbb::flow_control& fc) -> std::int64_t {
      if (next >= events) {
        fc.stop();
        return 0;
      }
      return next++;
    });
    flow::function_node<std::int64_t> sink(g, consumers, [&](std::int64_t e) { sum.fetch_add(e); });
    flow::make_edge(src, sink);
    src.activate();
    g.wait_for_all();
  }
  return sum.load();
}

/// Source → broadcast_node → `consumers` serial sums (each sees every event). Returns the sum
/// of all consumers' sums.
inline std::int64_t flow_broadcast(std::int64_t events, std::size_t consumers, bool batched) {
  namespace flow = oneapi::tbb::flow;
  flow::graph g;
  std::vector<std::int64_t> sums(consumers * 8, 0);  // 8 apart: no false sharing
  std::int64_t next = 0;
  if (batched) {
    using Msg = std::shared_ptr<const std::vector<std::int64_t>>;
    flow::input_node<Msg> src(g, [&](oneapi::tbb::flow_control& fc) -> Msg {
      if (next >= events) {
        fc.stop();
        return {};
      }
      return std::make_shared<const std::vector<std::int64_t>>(next_batch(next, events));
    });
    flow::broadcast_node<Msg> fan(g);
    std::vector<std::unique_ptr<flow::function_node<Msg>>> sinks;
    for (std::size_t c = 0; c < consumers; ++c) {
      sinks.push_back(std::make_unique<flow::function_node<Msg>>(g, flow::serial,
                                                                 [&s = sums[c * 8]](const Msg& m) {
                                                                   for (auto e : *m)
                                                                     s += e;
                                                                 }));
      flow::make_edge(fan, *sinks.back());
    }
    flow::make_edge(src, fan);
    src.activate();
    g.wait_for_all();
  } else {
    flow::input_node<std::int64_t> src(g, [&](oneapi::tbb::flow_control& fc) -> std::int64_t {
      if (next >= events) {
        fc.stop();
        return 0;
      }
      return next++;
    });
    flow::broadcast_node<std::int64_t> fan(g);
    std::vector<std::unique_ptr<flow::function_node<std::int64_t>>> sinks;
    for (std::size_t c = 0; c < consumers; ++c) {
      sinks.push_back(std::make_unique<flow::function_node<std::int64_t>>(
          g, flow::serial, [&s = sums[c * 8]](std::int64_t e) { s += e; }));
      flow::make_edge(fan, *sinks.back());
    }
    flow::make_edge(src, fan);
    src.activate();
    g.wait_for_all();
  }
  std::int64_t total = 0;
  for (auto s : sums)
    total += s;
  return total;
}

namespace detail {
template <class T, std::size_t>
using Same = T;
template <class T, std::size_t... K>
auto repeat_tuple(std::index_sequence<K...>) -> std::tuple<Same<T, K>...>;
/// std::tuple<T, T, ..., T> (N times): a multifunction_node's output ports.
template <class T, std::size_t N>
using Repeat = decltype(repeat_tuple<T>(std::make_index_sequence<N>{}));
}  // namespace detail

/// Source → a serial multifunction_node routing each event to port `e % N` → N serial sums
/// (what a flow graph user writes for a partition dispatcher). `batched`: each 1024-event message
/// is split into N messages, one per partition.
template <std::size_t N>
std::int64_t flow_partition(std::int64_t events, bool batched) {
  namespace flow = oneapi::tbb::flow;
  flow::graph g;
  std::vector<std::int64_t> sums(N * 8, 0);  // 8 apart: no false sharing
  std::int64_t next = 0;
  auto run = [&]<class Msg>(auto&& source_body, auto&& route, auto&& add) {
    using Router = flow::multifunction_node<Msg, detail::Repeat<Msg, N>>;
    flow::input_node<Msg> src(g, source_body);
    Router router(g, flow::serial, [&](const Msg& in, typename Router::output_ports_type& ports) {
      route(
          in, [&]<std::size_t... K>(std::index_sequence<K...>) {
            return [&](std::size_t k, Msg m) {
              ((k == K ? (void)std::get<K>(ports).try_put(std::move(m)) : void()), ...);
            };
          }(std::make_index_sequence<N>{}));
    });
    std::vector<std::unique_ptr<flow::function_node<Msg>>> sinks;
    for (std::size_t k = 0; k < N; ++k)
      sinks.push_back(std::make_unique<flow::function_node<Msg>>(
          g, flow::serial, [&s = sums[k * 8], &add](const Msg& m) { add(s, m); }));
    [&]<std::size_t... K>(std::index_sequence<K...>) {
      (flow::make_edge(flow::output_port<K>(router), *sinks[K]), ...);
    }
    (std::make_index_sequence<N>{});
    flow::make_edge(src, router);
    src.activate();
    g.wait_for_all();
  };
  if (batched) {
    using Msg = std::vector<std::int64_t>;
    run.template operator()<Msg>(
        [&](oneapi::tbb::flow_control& fc) -> Msg {
          if (next >= events) {
            fc.stop();
            return {};
          }
          return next_batch(next, events);
        },
        [](const Msg& in, auto put) {
          std::array<Msg, N> parts;
          for (auto& p : parts)
            p.reserve(in.size() / N + 64);
          for (auto e : in)
            parts[static_cast<std::size_t>(e) % N].push_back(e);
          for (std::size_t k = 0; k < N; ++k)
            put(k, std::move(parts[k]));
        },
        [](std::int64_t& s, const Msg& m) {
          for (auto e : m)
            s += e;
        });
  } else {
    run.template operator()<std::int64_t>(
        [&](oneapi::tbb::flow_control& fc) -> std::int64_t {
          if (next >= events) {
            fc.stop();
            return 0;
          }
          return next++;
        },
        [](std::int64_t e, auto put) { put(static_cast<std::size_t>(e) % N, e); },
        [](std::int64_t& s, std::int64_t e) { s += e; });
  }
  std::int64_t total = 0;
  for (auto s : sums)
    total += s;
  return total;
}

/// `sources` input_nodes, each emitting 0..per_source-1, → one serial sum (fan-in).
inline std::int64_t flow_fan_in(std::int64_t per_source, std::size_t sources, bool batched) {
  namespace flow = oneapi::tbb::flow;
  flow::graph g;
  std::int64_t sum = 0;
  std::vector<std::int64_t> next(sources * 8, 0);  // each source's counter, 8 apart
  auto run = [&]<class Msg>(auto&& make_source, auto&& add) {
    flow::function_node<Msg> sink(g, flow::serial, [&](const Msg& m) { add(sum, m); });
    std::vector<std::unique_ptr<flow::input_node<Msg>>> srcs;
    for (std::size_t k = 0; k < sources; ++k) {
      srcs.push_back(std::make_unique<flow::input_node<Msg>>(g, make_source(next[k * 8])));
      flow::make_edge(*srcs.back(), sink);
    }
    for (auto& s : srcs)
      s->activate();
    g.wait_for_all();
  };
  if (batched) {
    using Msg = std::vector<std::int64_t>;
    run.template operator()<Msg>(
        [&](std::int64_t& n) {
          return [&n, per_source](oneapi::tbb::flow_control& fc) -> Msg {
            if (n >= per_source) {
              fc.stop();
              return {};
            }
            return next_batch(n, per_source);
          };
        },
        [](std::int64_t& s, const Msg& m) {
          for (auto e : m)
            s += e;
        });
  } else {
    run.template operator()<std::int64_t>(
        [&](std::int64_t& n) {
          return [&n, per_source](oneapi::tbb::flow_control& fc) -> std::int64_t {
            if (n >= per_source) {
              fc.stop();
              return 0;
            }
            return n++;
          };
        },
        [](std::int64_t& s, std::int64_t e) { s += e; });
  }
  return sum;
}

}  // namespace sluice_bench
