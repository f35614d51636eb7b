// The oneTBB baselines of bench/ (sluice-bench, bench_shapes and bench_dispatchers run these, and
// no others): the same shapes written the way a oneTBB user would, on flow graph (one event per
// message, or user-made batches of 1024) and on parallel_pipeline (one event per token, or a
// batch of 1024 per token). They are the closest honest equivalents a user could build, not the
// same protocol: flow graph nodes queue without bound (no back-pressure).
//
// Every function moves the events 0..events-1 (int64_t, or a larger event built from the count)
// through its shape and returns what its sink(s) saw, so the caller can check it: a chain its
// sum (chain_sum gives the expected one), a fan-out a Tally per consumer.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <oneapi/tbb/combinable.h>
#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/parallel_pipeline.h>

namespace sluice_bench {

inline constexpr std::size_t flow_batch = 1024;

/// The user's hand-made batch: the next (up to) 1024 events of 0..events-1 (`E` is built from
/// the count).
template <class E = std::int64_t>
std::vector<E> next_batch(std::int64_t& next, std::int64_t events) {
  std::vector<E> m;
  const auto n = std::min<std::int64_t>(static_cast<std::int64_t>(flow_batch), events - next);
  m.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    m.push_back(E(next++));
  return m;
}

template <class T>
inline constexpr bool is_shared_ptr = false;
template <class T>
inline constexpr bool is_shared_ptr<std::shared_ptr<T>> = true;

/// A source body (input_node, or parallel_pipeline's first filter) emitting next..events-1, one
/// per call, as a `Msg` (an event, or an optional of one).
template <class Msg>
auto each_event(std::int64_t& next, std::int64_t events) {
  return [&next, events](oneapi::tbb::flow_control& fc) -> Msg {
    if (next >= events) {
      fc.stop();
      return Msg{};
    }
    return Msg(next++);
  };
}

/// The same in the user's batches of up to 1024 events: `Msg` is a std::vector, or a
/// shared_ptr to a const one (what a broadcast_node passes on without copying).
template <class Msg>
auto each_batch(std::int64_t& next, std::int64_t events) {
  return [&next, events](oneapi::tbb::flow_control& fc) -> Msg {
    if (next >= events) {
      fc.stop();
      return Msg{};
    }
    if constexpr (is_shared_ptr<Msg>) {
      using Batch = std::remove_const_t<typename Msg::element_type>;
      return std::make_shared<const Batch>(next_batch<typename Batch::value_type>(next, events));
    } else {
      return next_batch<typename Msg::value_type>(next, events);
    }
  };
}

/// A linear chain: source → `maps` maps (+1 each) → a filter keeping even values (if `filter`)
/// → sum. ANCHORS' shapes: {1, false} is producer → map → sum, {1, true} producer → map →
/// filter → sum.
struct Chain {
  int maps = 0;
  bool filter = false;
};
/// The user's per-event functions, the same in every engine.
inline std::int64_t plus_one(std::int64_t e) {
  return e + 1;
}
inline bool is_even(const std::int64_t& e) {
  return e % 2 == 0;
}
/// What the chain's sum receives from the events 0..events-1.
inline std::int64_t chain_sum(std::int64_t events, Chain c) {
  const std::int64_t lo = c.maps, hi = events - 1 + c.maps;  // after the maps
  if (events <= 0) return 0;
  if (!c.filter) return (lo + hi) * events / 2;
  const std::int64_t first = lo + (lo & 1), last = hi - (hi & 1);  // the even values
  if (first > last) return 0;
  return (first + last) * ((last - first) / 2 + 1) / 2;
}

/// The chain on flow graph, every node serial. `batched`: each message is a std::vector of up to
/// 1024 events the user batched by hand; otherwise one event per message, the filter a
/// multifunction_node that forwards the events it keeps.
std::int64_t flow_chain(std::int64_t events, Chain c, bool batched);

/// The chain on parallel_pipeline, every filter serial_in_order. `batched`: a token carries
/// 1024 events (each token then runs all stages on one thread); otherwise one event per token,
/// 16 tokens in flight, and the filter stage passes a std::optional (empty: dropped) to the sum.
std::int64_t pipeline_chain(std::int64_t events, Chain c, bool batched);

// ---- fan-out: what each consumer saw ---------------------------------------------------------

/// What one consumer saw: the sum of its events' values, the sum of their check words (the same
/// unless an event was torn: a large event's check is its last word, so both ends are read),
/// and, behind a partition, how many of its events belonged to another partition. One cache line
/// each: no false sharing between consumers.
struct alignas(64) Tally {
  std::int64_t sum = 0, check = 0, foreign = 0;
};
using Tallies = std::vector<Tally>;

/// An int64_t event is its own value and check word. Larger events bring their own overloads
/// (found by argument-dependent lookup) and a constructor from the int64_t count.
inline std::int64_t value_of(std::int64_t e) {
  return e;
}
inline std::int64_t check_of(std::int64_t e) {
  return e;
}

/// Adds a message (an event, a batch, or a shared batch) to `t`; behind partition `part` of
/// `Parts` (Parts > 0), counts the events of other partitions. A batch is added up in locals.
template <std::size_t Parts = 0, class Msg>
void take(Tally& t, const Msg& m, std::size_t part = 0) {
  if constexpr (is_shared_ptr<Msg>) {
    take<Parts>(t, *m, part);
  } else if constexpr (requires { m.begin(); }) {
    Tally local;
    for (const auto& e : m)
      take<Parts>(local, e, part);
    t.sum += local.sum;
    t.check += local.check;
    t.foreign += local.foreign;
  } else {
    t.sum += value_of(m);
    if constexpr (!std::is_same_v<Msg, std::int64_t>) t.check += check_of(m);
    if constexpr (Parts > 0) t.foreign += static_cast<std::size_t>(value_of(m)) % Parts != part;
  }
}

/// The tallies once the run is over (an int64_t's check word is its value).
template <class E>
Tallies finished(Tallies t) {
  if constexpr (std::is_same_v<E, std::int64_t>)
    for (auto& x : t)
      x.check = x.sum;
  return t;
}

inline std::int64_t total(const Tallies& t) {
  std::int64_t sum = 0;
  for (auto& x : t)
    sum += x.sum;
  return sum;
}

/// Source → `consumers` sums, each event to one of them: a flow graph function_node with
/// concurrency `consumers` (what a flow graph user writes for a demand dispatcher), summing into
/// per-thread tallies. Returns one tally, the threads' combined.
template <class E = std::int64_t>
Tallies flow_fan_out(std::int64_t events, std::size_t consumers, bool batched) {
  namespace flow = oneapi::tbb::flow;
  flow::graph g;
  oneapi::tbb::combinable<Tally> sums;
  std::int64_t next = 0;
  auto run = [&]<class Msg>(auto&& source_body) {
    flow::input_node<Msg> src(g, source_body);
    flow::function_node<Msg> sink(g, consumers, [&sums](const Msg& m) { take(sums.local(), m); });
    flow::make_edge(src, sink);
    src.activate();
    g.wait_for_all();
  };
  if (batched)
    run.template operator()<std::vector<E>>(each_batch<std::vector<E>>(next, events));
  else
    run.template operator()<E>(each_event<E>(next, events));
  Tallies out(1);
  sums.combine_each([&out](const Tally& t) {
    out[0].sum += t.sum;
    out[0].check += t.check;
  });
  return finished<E>(std::move(out));
}

/// Source → broadcast_node → `consumers` serial sums (each sees every event). Batched: a
/// shared_ptr to a const batch per message, so the consumers share it (zero copy, as the
/// engine's shared batches; a plain std::vector would be copied once per consumer).
template <class E = std::int64_t>
Tallies flow_broadcast(std::int64_t events, std::size_t consumers, bool batched) {
  namespace flow = oneapi::tbb::flow;
  flow::graph g;
  Tallies tallies(consumers);
  std::int64_t next = 0;
  auto run = [&]<class Msg>(auto&& source_body) {
    flow::input_node<Msg> src(g, source_body);
    flow::broadcast_node<Msg> fan(g);
    std::vector<std::unique_ptr<flow::function_node<Msg>>> sinks;
    for (auto& t : tallies) {
      sinks.push_back(std::make_unique<flow::function_node<Msg>>(
          g, flow::serial, [&t](const Msg& m) { take(t, m); }));
      flow::make_edge(fan, *sinks.back());
    }
    flow::make_edge(src, fan);
    src.activate();
    g.wait_for_all();
  };
  using Shared = std::shared_ptr<const std::vector<E>>;
  if (batched)
    run.template operator()<Shared>(each_batch<Shared>(next, events));
  else
    run.template operator()<E>(each_event<E>(next, events));
  return finished<E>(std::move(tallies));
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
/// is split into N messages, one per partition. Tally k counts what did not belong to k.
template <std::size_t N, class E = std::int64_t>
Tallies flow_partition(std::int64_t events, bool batched) {
  namespace flow = oneapi::tbb::flow;
  flow::graph g;
  Tallies tallies(N);
  std::int64_t next = 0;
  auto run = [&]<class Msg>(auto&& source_body, auto&& route) {
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
          g, flow::serial, [&t = tallies[k], k](const Msg& m) { take<N>(t, m, k); }));
    [&]<std::size_t... K>(std::index_sequence<K...>) {
      (flow::make_edge(flow::output_port<K>(router), *sinks[K]), ...);
    }
    (std::make_index_sequence<N>{});
    flow::make_edge(src, router);
    src.activate();
    g.wait_for_all();
  };
  auto key = [](const E& e) { return static_cast<std::size_t>(value_of(e)) % N; };
  if (batched) {
    using Msg = std::vector<E>;
    run.template operator()<Msg>(each_batch<Msg>(next, events), [&key](const Msg& in, auto put) {
      std::array<Msg, N> split;
      for (auto& p : split)
        p.reserve(in.size() / N + 64);
      for (const auto& e : in)
        split[key(e)].push_back(e);
      for (std::size_t k = 0; k < N; ++k)
        put(k, std::move(split[k]));
    });
  } else {
    run.template operator()<E>(each_event<E>(next, events),
                               [&key](const E& e, auto put) { put(key(e), e); });
  }
  return finished<E>(std::move(tallies));
}

/// `sources` input_nodes, each emitting 0..per_source-1, → one serial sum (fan-in).
std::int64_t flow_fan_in(std::int64_t per_source, std::size_t sources, bool batched);

// The int64_t fan-outs are compiled once, in tbb_baselines.cpp (with its loops aligned).
extern template Tallies flow_fan_out<std::int64_t>(std::int64_t, std::size_t, bool);
extern template Tallies flow_broadcast<std::int64_t>(std::int64_t, std::size_t, bool);
extern template Tallies flow_partition<4, std::int64_t>(std::int64_t, bool);
extern template Tallies flow_partition<8, std::int64_t>(std::int64_t, bool);

}  // namespace sluice_bench
