#pragma once
// The random-graph model's builder (random_graph.hpp has the spec and the generator): declares a
// GraphSpec through the public builder, with the test's own code for each stage.

#include <cstddef>
#include <deque>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <sluice/sluice.hpp>

#include "support/random_graph.hpp"

namespace sluice_test::rg {

/// What build() declared, besides the graph.
template <class E>
struct Built {
  sluice::Graph graph;
  std::vector<sluice::PushHandle<E>> pushes;     // the push sources', in stage order
  std::vector<sluice::PullStream<E>> streams;    // the streams', in stage order
  std::deque<std::vector<E>> collected;          // what each collect stage fills, in stage order
  std::vector<std::string> refused_dispatchers;  // wild: declarations that threw option_error
};

namespace detail {

[[noreturn]] inline void no_code(const StageSpec& s, const char* what) {
  throw std::logic_error("random graph: stage '" + s.name + "' needs " + what +
                         ", which the test's code does not provide");
}

/// Stands for build()'s declare function in a requires-expression.
struct AnyHash {
  template <class Hash>
  void operator()(Hash) const {}
};

template <class E, class Code>
class Builder {
 public:
  Builder(const GraphSpec& spec, Code& code) : spec_(spec), code_(code) {}

  Built<E> build() {
    const auto n = spec_.stages.size();
    sources_.resize(n);
    stages_.resize(n);
    sinks_.resize(n);
    for (std::size_t i = 0; i < n; ++i)
      declare(i);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t k = 1; k < spec_.stages[i].inputs.size(); ++k)
        with_producer(spec_.stages[i].inputs[k].producer, [&](auto& producer) {
          auto o = subscription(i, k);
          if (stages_[i])
            stages_[i]->subscribe(producer, std::move(o));
          else if (sinks_[i])
            sinks_[i]->subscribe(producer, std::move(o));
          else
            throw std::logic_error("random graph: stage '" + spec_.stages[i].name +
                                   "' cannot take another subscription");
        });
    return std::move(out_);
  }

 private:
  template <class F>
  void with_producer(std::size_t p, F&& f) {
    if (sources_[p])
      f(*sources_[p]);
    else if (stages_[p])
      f(*stages_[p]);
    else
      throw std::logic_error("random graph: stage " + std::to_string(p) + " is no producer");
  }

  sluice::StageOptions own_options(const StageSpec& s) const {
    sluice::StageOptions o;
    o.instances = s.instances;
    o.buffer_size = s.buffer_size;
    if (s.keep_first) o.buffer_keep = sluice::BufferKeep::first;
    if (s.accumulate) o.demand_mode = sluice::DemandMode::accumulate;
    o.dynamic = s.dynamic;
    o.restart = s.restart;
    o.max_restarts = 100;
    return o;
  }

  /// Sets the subscription fields of `o` from `in` (input `k` of stage `i`; a stray one on a
  /// source when k is npos).
  void set_subscription(sluice::StageOptions& o, const Input& in, std::size_t i, std::size_t k) {
    o.max_demand = in.max_demand;
    o.min_demand = in.min_demand;
    o.cancel = in.cancel;
    o.partition = in.partition;
    if (in.manual) o.demand = sluice::DemandControl::manual;
    using Other = std::conditional_t<std::is_same_v<E, long>, int, long>;
    if (in.selector.wrong_type) {
      o.selector = sluice::selector<Other>([](const Other&) { return true; });
    } else if (in.selector.on) {
      if (k == std::string::npos) {
        o.selector = sluice::selector<E>([](const E&) { return true; });
      } else if constexpr (requires { code_.selector(i, k); }) {
        o.selector = sluice::selector<E>(code_.selector(i, k));
      } else {
        no_code(spec_.stages[i], "selector(stage, input)");
      }
    }
  }

  /// The options of stage i's subscription k (k > 0: an extra one, declared by subscribe()).
  sluice::StageOptions subscription(std::size_t i, std::size_t k) {
    auto& s = spec_.stages[i];
    auto& in = s.inputs[k];
    auto o = in.stage_options ? own_options(s) : sluice::StageOptions{};
    set_subscription(o, in, i, k);
    return o;
  }

  void declare(std::size_t i) {
    auto& s = spec_.stages[i];
    if (s.role == Role::source) {
      auto o = own_options(s);
      if (s.stray) set_subscription(o, *s.stray, i, std::string::npos);
      sources_[i] = declare_source(s, i, std::move(o));
      set_dispatcher(*sources_[i], s, i);
      return;
    }
    auto o = own_options(s);
    set_subscription(o, s.inputs.at(0), i, 0);
    with_producer(s.inputs[0].producer, [&](auto& p) {
      if (s.role == Role::stage) {
        stages_[i] = declare_stage(p, s, i, std::move(o));
        set_dispatcher(*stages_[i], s, i);
      } else {
        declare_sink(p, s, i, std::move(o));
      }
    });
  }

  sluice::Stage<void, E> declare_source(const StageSpec& s, std::size_t i, sluice::StageOptions o) {
    auto& g = out_.graph;
    switch (s.form) {
      case Form::handler:
        if constexpr (requires { code_.source(i); })
          return g.template source<E>(s.name, code_.source(i), std::move(o));
        no_code(s, "source(stage)");
      case Form::generator:
        if constexpr (requires { code_.generator(i); })
          return g.source(s.name, sluice::from_generator(code_.generator(i)), std::move(o));
        no_code(s, "generator(stage)");
      case Form::range:
        if constexpr (requires { code_.range(i); })
          return g.source(s.name, sluice::from_range(code_.range(i)), std::move(o));
        no_code(s, "range(stage)");
      case Form::push: {
        auto [handle, stage] = g.template push_source<E>(s.name, s.capacity, std::move(o));
        out_.pushes.push_back(std::move(handle));
        return stage;
      }
      default:
        no_code(s, "a source form");
    }
  }

  template <class P>
  sluice::Stage<E, E> declare_stage(P& p, const StageSpec& s, std::size_t i,
                                    sluice::StageOptions o) {
    switch (s.form) {
      case Form::handler:
        if constexpr (requires { code_.stage(i); })
          return p.template then<E>(s.name, code_.stage(i), std::move(o));
        no_code(s, "stage(stage)");
      case Form::map:
        if constexpr (requires { code_.map(i); }) return p.map(s.name, code_.map(i), std::move(o));
        no_code(s, "map(stage)");
      case Form::filter:
        if constexpr (requires { code_.filter(i); })
          return p.filter(s.name, code_.filter(i), std::move(o));
        no_code(s, "filter(stage)");
      case Form::flat_map:
        if constexpr (requires { code_.flat_map(i); })
          return p.flat_map(s.name, code_.flat_map(i), std::move(o));
        no_code(s, "flat_map(stage)");
      default:
        no_code(s, "a producer_consumer form");
    }
  }

  template <class P>
  void declare_sink(P& p, const StageSpec& s, std::size_t i, sluice::StageOptions o) {
    switch (s.form) {
      case Form::handler:
        if (s.mutates) {
          if constexpr (requires { code_.mutating_sink(i); })
            sinks_[i] = p.to(s.name, code_.mutating_sink(i), std::move(o));
          else
            no_code(s, "mutating_sink(stage)");
        } else if constexpr (requires { code_.sink(i); }) {
          sinks_[i] = p.to(s.name, code_.sink(i), std::move(o));
        } else {
          no_code(s, "sink(stage)");
        }
        return;
      case Form::for_each:
        if constexpr (requires { code_.for_each(i); })
          sinks_[i] = p.for_each(s.name, code_.for_each(i), std::move(o));
        else
          no_code(s, "for_each(stage)");
        return;
      case Form::collect:
        sinks_[i] = p.collect(s.name, out_.collected.emplace_back(), std::move(o));
        return;
      case Form::stream:
        out_.streams.push_back(p.stream(s.name, s.capacity));
        return;
      default:
        no_code(s, "a consumer form");
    }
  }

  template <class P>
  void set_dispatcher(P& producer, const StageSpec& s, std::size_t i) {
    if (s.dispatch == Dispatch::demand) return;
    try {
      if (s.dispatch == Dispatch::broadcast) {
        producer.broadcast();
        return;
      }
      sluice::PartitionDispatcherOptions po;
      if (s.partition.queue_size) po.queue_size = *s.partition.queue_size;
      if (s.partition.by == Partitioning::By::default_hash) {
        if constexpr (requires(const E& e) { std::hash<E>{}(e); })
          producer.partition(s.partition.partitions(), po);
        else
          no_code(s, "std::hash of its events (the partition's default hash)");
      } else if constexpr (requires { code_.partition(i, AnyHash{}); }) {
        code_.partition(i, [&](auto hash) {
          producer.partition(s.partition.partitions(), std::move(hash), po);
        });
      } else {
        no_code(s, "partition(stage, declare)");
      }
    } catch (const sluice::option_error& e) {
      out_.refused_dispatchers.push_back(e.what());
    }
  }

  const GraphSpec& spec_;
  Code& code_;
  Built<E> out_;
  std::vector<std::optional<sluice::Stage<void, E>>> sources_;
  std::vector<std::optional<sluice::Stage<E, E>>> stages_;
  std::vector<std::optional<sluice::Stage<E, void>>> sinks_;
};

}  // namespace detail

/// Declares `spec` through the public builder, with events of type E. `code` writes the stages:
/// for each form the spec uses, it has the member that returns stage i's code.
///   sources            source(i): a handler class;  generator(i): a () -> std::optional<E>;
///                      range(i): a range of E (push sources need nothing)
///   producer_consumers stage(i): a handler class;  map(i), filter(i), flat_map(i): functions
///   consumers          sink(i): a handler class;  mutating_sink(i): one taking std::span<E>;
///                      for_each(i): a function (collect and stream need nothing)
///   selectors          selector(i, k): the predicate of stage i's subscription k
///   partitions         partition(i, declare): calls declare(hash) with producer i's hash
/// A member the spec needs and the code lacks is a std::logic_error.
template <class E, class Code>
Built<E> build(const GraphSpec& spec, Code& code) {
  return detail::Builder<E, Code>(spec, code).build();
}

}  // namespace sluice_test::rg
