// The oneTBB baselines' functions that are not templates, and the int64_t fan-outs, compiled on
// their own with loops aligned (bench/CMakeLists.txt).
#include "tbb_baselines.hpp"

namespace sluice_bench {

std::int64_t flow_chain(std::int64_t events, Chain c, bool batched) {
  namespace flow = oneapi::tbb::flow;
  flow::graph g;
  std::int64_t sum = 0, next = 0;
  auto run = [&]<class Msg>(auto&& source_body, auto&& map, auto&& add, auto&& keep) {
    flow::input_node<Msg> src(g, source_body);
    std::vector<std::unique_ptr<flow::function_node<Msg, Msg>>> maps;
    for (int k = 0; k < c.maps; ++k)
      maps.push_back(std::make_unique<flow::function_node<Msg, Msg>>(g, flow::serial, map));
    using Filter = flow::multifunction_node<Msg, std::tuple<Msg>>;
    Filter filter(g, flow::serial, [&](const Msg& m, typename Filter::output_ports_type& ports) {
      keep(m, std::get<0>(ports));
    });
    flow::function_node<Msg> sink(g, flow::serial, [&](const Msg& m) { add(sum, m); });
    flow::sender<Msg>* last = &src;
    for (auto& m : maps) {
      flow::make_edge(*last, *m);
      last = m.get();
    }
    if (c.filter) {
      flow::make_edge(*last, filter);
      flow::make_edge(flow::output_port<0>(filter), sink);
    } else {
      flow::make_edge(*last, sink);
    }
    src.activate();
    g.wait_for_all();
  };
  if (batched) {
    using Msg = std::vector<std::int64_t>;
    run.template operator()<Msg>(
        each_batch<Msg>(next, events),
        [](Msg m) {
          for (auto& e : m)
            e = plus_one(e);
          return m;
        },
        [](std::int64_t& s, const Msg& m) {
          for (auto e : m)
            s += e;
        },
        [](const Msg& m, auto& out) {
          Msg kept;
          kept.reserve(m.size());
          for (auto e : m)
            if (is_even(e)) kept.push_back(e);
          out.try_put(std::move(kept));
        });
  } else {
    run.template operator()<std::int64_t>(
        each_event<std::int64_t>(next, events), [](std::int64_t e) { return plus_one(e); },
        [](std::int64_t& s, std::int64_t e) { s += e; },
        [](std::int64_t e, auto& out) {
          if (is_even(e)) out.try_put(e);
        });
  }
  return sum;
}

std::int64_t pipeline_chain(std::int64_t events, Chain c, bool batched) {
  namespace tbb = oneapi::tbb;
  std::int64_t next = 0, sum = 0;
  const auto mode = tbb::filter_mode::serial_in_order;
  if (batched) {
    using Msg = std::vector<std::int64_t>;
    auto chain = tbb::make_filter<void, Msg>(mode, each_batch<Msg>(next, events));
    for (int k = 0; k < c.maps; ++k)
      chain = chain & tbb::make_filter<Msg, Msg>(mode, [](Msg m) {
                for (auto& e : m)
                  e = plus_one(e);
                return m;
              });
    if (c.filter)
      chain = chain & tbb::make_filter<Msg, Msg>(mode, [](Msg m) {
                std::erase_if(m, [](std::int64_t e) { return !is_even(e); });
                return m;
              });
    tbb::parallel_pipeline(16, chain & tbb::make_filter<Msg, void>(mode, [&](const Msg& m) {
                                 for (auto e : m)
                                   sum += e;
                               }));
  } else {
    using Msg = std::optional<std::int64_t>;
    auto chain = tbb::make_filter<void, Msg>(mode, each_event<Msg>(next, events));
    for (int k = 0; k < c.maps; ++k)
      chain = chain & tbb::make_filter<Msg, Msg>(mode, [](Msg e) { return plus_one(*e); });
    if (c.filter)
      chain = chain & tbb::make_filter<Msg, Msg>(
                          mode, [](Msg e) { return is_even(*e) ? e : std::nullopt; });
    tbb::parallel_pipeline(16, chain & tbb::make_filter<Msg, void>(mode, [&](Msg e) {
                                 if (e) sum += *e;
                               }));
  }
  return sum;
}

std::int64_t flow_fan_in(std::int64_t per_source, std::size_t sources, bool batched) {
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
    run.template operator()<Msg>([&](std::int64_t& n) { return each_batch<Msg>(n, per_source); },
                                 [](std::int64_t& s, const Msg& m) {
                                   for (auto e : m)
                                     s += e;
                                 });
  } else {
    run.template operator()<std::int64_t>(
        [&](std::int64_t& n) { return each_event<std::int64_t>(n, per_source); },
        [](std::int64_t& s, std::int64_t e) { s += e; });
  }
  return sum;
}

template Tallies flow_fan_out<std::int64_t>(std::int64_t, std::size_t, bool);
template Tallies flow_broadcast<std::int64_t>(std::int64_t, std::size_t, bool);
template Tallies flow_partition<4, std::int64_t>(std::int64_t, bool);
template Tallies flow_partition<8, std::int64_t>(std::int64_t, bool);

}  // namespace sluice_bench
