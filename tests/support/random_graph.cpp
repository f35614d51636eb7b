#include "support/random_graph.hpp"

#include <algorithm>

namespace sluice_test::rg {

namespace {

using I64 = std::int64_t;

class Generator {
 public:
  Generator(Entropy& e, const Knobs& k) : e_(e), k_(k) {}

  GraphSpec run() {
    if (k_.random_run) run_options();
    if (k_.shape == Shape::line)
      line();
    else
      dag();
    if (k_.wild) extras();
    counts();
    return std::move(g_);
  }

 private:
  // ---- values -----------------------------------------------------------------------------------

  /// Out of range as often as not (wild).
  I64 wild_value() {
    constexpr I64 big = I64{1} << 30, top = std::numeric_limits<I64>::max();
    static constexpr I64 values[] = {-1, 0, 1, 2, 3, 7, 10, 64, 1000, big, big + 1, top, -top - 1};
    if (e_.chance(0.5)) return e_.pick(values);
    return e_.uniform<I64>(-3, 200);
  }

  sluice::Partition wild_partition() {
    static constexpr const char* names[] = {"even", "odd", "x", ""};
    if (e_.chance(0.5)) return sluice::Partition(std::string(e_.pick(names)));
    return sluice::Partition(e_.uniform<int>(-2, 5));
  }

  std::string name(Role role, std::size_t index) {
    if (!k_.wild || !e_.chance(0.5)) {
      static constexpr const char* prefixes[] = {"src", "pc", "sink"};
      std::string n = prefixes[static_cast<int>(role)];
      n += std::to_string(index);  // appends ("literal" + std::string&& trips GCC bug 105329)
      return n;
    }
    // Duplicates and empty names among them; now and then any bytes but a line break
    // (compile()'s message is one problem per line).
    static constexpr const char* names[] = {"a", "b", "c", "d", "e", "f", "g", "h", ""};
    if (e_.uniform<int>(0, 7) != 7) return e_.pick(names);
    auto s = e_.bytes(5);
    std::replace(s.begin(), s.end(), '\n', '_');
    return s;
  }

  I64 max_demand() {
    if (one_max_demand_) return *one_max_demand_;
    I64 v = 0;
    if (!k_.max_demands.empty())
      v = e_.pick(k_.max_demands);
    else if (e_.chance(0.4))
      v = e_.uniform<I64>(1, 10);
    else if (e_.chance(0.5))
      v = e_.uniform<I64>(11, 200);
    else
      v = e_.uniform<I64>(201, 2000);
    if (k_.wild && e_.chance(0.3)) v = wild_value();
    if (k_.one_max_demand) one_max_demand_ = v;
    return v;
  }

  Dispatch dispatch() {
    if (e_.chance(k_.broadcast)) return Dispatch::broadcast;
    const double rest = 1.0 - k_.broadcast;
    if (rest > 0 && e_.chance(std::min(1.0, k_.partition / rest))) return Dispatch::partition;
    return Dispatch::demand;
  }

  // ---- stages and subscriptions -----------------------------------------------------------------

  StageSpec& add(Role role) {
    const auto index = g_.stages.size();
    StageSpec s;
    s.role = role;
    s.form = e_.pick(role == Role::source  ? k_.source_forms
                     : role == Role::stage ? k_.stage_forms
                                           : k_.sink_forms);
    s.name = name(role, index);
    s.instances = s.form == Form::push ? 1 : e_.uniform<std::size_t>(1, k_.max_instances);
    if (k_.speeds && !e_.chance(0.6)) s.speed = e_.chance(0.625) ? Speed::slow : Speed::bursty;
    if (role == Role::stage &&
        (s.form == Form::filter || (s.form == Form::handler && e_.chance(k_.filter))))
      s.filter = Filter::drawn(e_);
    if (s.form == Form::push) {
      static constexpr I64 wild_capacities[] = {-5, 0, 1, 2, 16, 1000, 1 << 20};
      s.capacity = k_.wild && e_.chance(0.5) ? e_.pick(wild_capacities) : e_.uniform<I64>(1, 64);
    }
    if (s.form == Form::stream && k_.wild && e_.chance(0.5)) {
      static constexpr I64 wild_capacities[] = {-1, 0, 1, 8, 1000, I64{1} << 31};
      s.capacity = e_.pick(wild_capacities);
    }
    if (role == Role::source && e_.chance(k_.source_buffer))
      s.buffer_size = e_.uniform<I64>(1, 100);
    if (k_.wild) {
      if (e_.chance(0.25)) s.instances = e_.uniform<std::size_t>(0, 4);
      if (e_.chance(0.2)) s.buffer_size = wild_value();
      s.keep_first = e_.chance(0.1);
      s.accumulate = e_.chance(0.1);
      s.dynamic = e_.chance(0.1);
      if (role == Role::sink && s.form == Form::handler) s.mutates = e_.chance(0.5);
      if (role == Role::source && e_.chance(0.2)) s.stray = wild_input(Input{});
    }
    g_.stages.push_back(std::move(s));
    return g_.stages.back();
  }

  void set_dispatch(std::size_t producer, Dispatch d) {
    auto& p = g_.stages[producer];
    p.dispatch = d;
    if (d != Dispatch::partition || !k_.wild || !e_.chance(0.5)) return;  // set by its subscriber
    wild_partitions_.push_back(producer);
    auto& part = p.partition;
    static constexpr Partitioning::By bys[] = {Partitioning::By::key, Partitioning::By::name,
                                               Partitioning::By::default_hash};
    part.by = e_.pick(bys);
    part.count = e_.uniform<I64>(-1, 4);
    if (e_.chance(0.3)) {
      part.listed = true;
      for (int n = e_.uniform<int>(0, 3); n > 0; --n)
        part.names.push_back(wild_partition());
    }
    part.salt = e_.uniform<std::uint64_t>(0, 1'000'000);
    if (e_.chance(0.5)) part.modulus = e_.uniform<I64>(1, 6);
    part.drops = e_.chance(0.3);
    if (e_.chance(0.3)) part.queue_size = wild_value();
  }

  /// `in` with the options of a wild graph drawn.
  Input wild_input(Input in) {
    if (e_.chance(0.3)) in.max_demand = wild_value();
    if (e_.chance(0.15)) in.min_demand = wild_value();
    if (e_.chance(0.15)) in.cancel = static_cast<sluice::CancelMode>(e_.uniform<int>(0, 2));
    if (e_.chance(0.1)) in.selector.on = true;
    in.selector.wrong_type = e_.chance(0.05);
    if (e_.chance(0.15)) in.partition = wild_partition();
    in.manual = e_.chance(0.1);
    return in;
  }

  /// Stage `consumer` subscribes to `producer`.
  void subscribe(std::size_t consumer, std::size_t producer) {
    auto& p = g_.stages[producer];
    auto& c = g_.stages[consumer];
    Input in;
    in.producer = producer;
    in.max_demand = max_demand();
    if (e_.chance(k_.min_demand) && in.max_demand >= 1)
      in.min_demand = e_.uniform<I64>(0, in.max_demand - 1);
    if (k_.cancel_modes) in.cancel = static_cast<sluice::CancelMode>(e_.uniform<int>(0, 2));
    if (p.dispatch == Dispatch::broadcast && e_.chance(k_.selector))
      in.selector = Selector::drawn(e_);
    if (p.dispatch == Dispatch::partition && p.subscribers.empty() &&
        std::find(wild_partitions_.begin(), wild_partitions_.end(), producer) ==
            wild_partitions_.end()) {                     // one subscribing stage, one partition
      p.partition.count = static_cast<I64>(c.instances);  // per instance
      p.partition.salt = e_.uniform<std::uint64_t>(0, 1'000'000);
      p.partition.drops = e_.chance(k_.hash_drops);
    }
    if (k_.wild) in = wild_input(in);
    c.inputs.push_back(in);
    p.subscribers.push_back(consumer);
  }

  /// A producer_consumer buffers less than one inbound message (it handles one only while it has
  /// downstream demand): at most a subscription's max_demand per producer instance.
  void stage_buffer(std::size_t j) {
    auto& s = g_.stages[j];
    if (s.role != Role::stage || !e_.chance(k_.stage_buffer)) return;
    I64 b = 0;
    for (auto& in : s.inputs)
      b += static_cast<I64>(g_.stages[in.producer].instances) * in.max_demand;
    s.buffer_size = b;
  }

  // ---- shapes -----------------------------------------------------------------------------------

  void dag() {
    const auto n = e_.uniform<std::size_t>(k_.min_stages, k_.max_stages);
    // Leave enough later stages to subscribe to each source (two per sink).
    std::size_t max_sources = 1;
    for (std::size_t s = 2; s <= k_.max_sources; ++s)
      if (s < n && ((s + 1) / 2 <= n - s || k_.wild)) max_sources = s;
    const auto sources = e_.uniform<std::size_t>(1, max_sources);
    std::vector<std::size_t> unfed;  // producers nobody subscribes to yet
    for (std::size_t i = 0; i < sources; ++i) {
      add(Role::source);
      set_dispatch(i, dispatch());
      unfed.push_back(i);
    }
    for (std::size_t j = sources; j < n; ++j)
      if (!(k_.wild ? wild_stage() : fed_stage(j, n, unfed))) break;
  }

  /// Adds stage j of n so that every producer gets a subscriber by the end: producers in `unfed`
  /// are taken first. False if every producer is fed already (the graph ends there).
  bool fed_stage(std::size_t j, std::size_t n, std::vector<std::size_t>& unfed) {
    const std::size_t remaining = n - j;  // this stage included
    std::vector<std::size_t> selectable;  // a partition takes one subscribing stage
    for (std::size_t p = 0; p < j; ++p) {
      auto& ps = g_.stages[p];
      if (ps.is_producer() && !(ps.dispatch == Dispatch::partition && !ps.subscribers.empty()))
        selectable.push_back(p);
    }
    if (selectable.empty()) return false;
    auto take_unfed = [&] {
      const auto k = e_.uniform<std::size_t>(0, unfed.size() - 1);
      const auto p = unfed[k];
      unfed.erase(unfed.begin() + static_cast<std::ptrdiff_t>(k));
      return p;
    };
    std::vector<std::size_t> producers;
    const std::vector<std::size_t> unfed_before = unfed;
    if (!unfed.empty() && e_.chance(0.75))
      producers.push_back(take_unfed());
    else
      producers.push_back(e_.pick(selectable));
    if (e_.chance(k_.fan_in)) {
      std::vector<std::size_t> others;
      for (auto p : (unfed.empty() ? selectable : unfed))
        if (p != producers[0]) others.push_back(p);
      if (!others.empty()) producers.push_back(e_.pick(others));
    }
    bool stage = remaining > 1 && e_.chance(k_.stage_share);
    auto unfed_after = [&](bool is_stage) {
      std::size_t u = unfed_before.size();
      for (auto p : producers)
        if (std::find(unfed_before.begin(), unfed_before.end(), p) != unfed_before.end()) --u;
      return u + (is_stage ? 1 : 0);
    };
    // Every producer needs a subscriber by the end: a sink takes at most two unfed producers.
    if ((unfed_after(stage) + 1) / 2 > remaining - 1) stage = false;
    unfed = unfed_before;
    if ((unfed_after(false) + 1) / 2 > remaining - 1) {
      producers.clear();
      producers.push_back(take_unfed());
      if (!unfed.empty()) producers.push_back(take_unfed());
      stage = false;
    } else {
      for (auto p : producers)
        std::erase(unfed, p);
    }
    add(stage ? Role::stage : Role::sink);
    if (stage) set_dispatch(j, dispatch());
    for (auto p : producers)
      subscribe(j, p);
    stage_buffer(j);
    if (stage) unfed.push_back(j);
    return true;
  }

  /// Adds a stage of any role that subscribes to any earlier producer (wild: nobody checks that
  /// every producer is fed).
  bool wild_stage() {
    std::vector<std::size_t> producers;
    for (std::size_t p = 0; p < g_.stages.size(); ++p)
      if (g_.stages[p].is_producer()) producers.push_back(p);
    const auto role = producers.empty() || e_.chance(0.3) ? Role::source
                      : e_.chance(k_.stage_share)         ? Role::stage
                                                          : Role::sink;
    const auto j = g_.stages.size();
    auto& s = add(role);
    if (role == Role::source) {
      set_dispatch(j, dispatch());
      return true;
    }
    const bool fan_in = s.form != Form::stream && e_.chance(k_.fan_in);
    if (role == Role::stage) set_dispatch(j, dispatch());
    subscribe(j, e_.pick(producers));
    if (fan_in) subscribe(j, e_.pick(producers));  // perhaps the same producer twice
    return true;
  }

  void line() {
    add(Role::source);
    auto chain = e_.uniform<std::size_t>(k_.min_chain, k_.max_chain);
    chain = std::min(chain, k_.max_stages - 2);  // room for one sink
    for (std::size_t c = 1; c <= chain; ++c) {
      add(Role::stage);
      subscribe(c, c - 1);
    }
    auto d = dispatch();
    if (d == Dispatch::broadcast && chain == 0 && !k_.source_broadcasts) {
      add(Role::stage);
      subscribe(1, 0);
    }
    const auto fan = g_.stages.size() - 1;
    set_dispatch(fan, d);
    std::size_t sinks = 1, partitions = 0;
    if (d == Dispatch::partition)
      partitions = e_.uniform<std::size_t>(2, k_.max_instances + 1);  // one sink, an instance each
    else
      sinks = std::min(e_.uniform<std::size_t>(1, k_.max_sinks),
                       std::max<std::size_t>(1, k_.max_stages - g_.stages.size()));
    for (std::size_t k = 0; k < sinks; ++k) {
      auto& s = add(Role::sink);
      if (partitions > 0) s.instances = partitions;
      subscribe(g_.stages.size() - 1, fan);
    }
  }

  /// Extra subscriptions to any producer: cycles, self-loops, the same producer twice (wild).
  void extras() {
    std::vector<std::size_t> consumers, producers;
    for (std::size_t i = 0; i < g_.stages.size(); ++i) {
      auto& s = g_.stages[i];
      if (s.role != Role::source && s.form != Form::stream) consumers.push_back(i);
      if (s.is_producer()) producers.push_back(i);
    }
    if (consumers.empty() || producers.empty()) return;
    for (auto n = e_.uniform<std::size_t>(0, k_.max_extra); n > 0; --n) {
      const auto c = e_.pick(consumers);
      subscribe(c, e_.pick(producers));
      g_.stages[c].inputs.back().stage_options = e_.chance(0.2);
    }
  }

  // ---- events and run ---------------------------------------------------------------------------

  /// Deliveries over every edge when source i emits `emitted[i]` (filters and selectors
  /// ignored: an upper bound).
  std::uint64_t deliveries(const std::vector<std::uint64_t>& emitted) const {
    std::vector<std::uint64_t> out(g_.stages.size(), 0);
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < g_.stages.size(); ++i) {
      auto& s = g_.stages[i];
      if (s.role == Role::source) {
        out[i] = emitted[i];
        continue;
      }
      std::uint64_t in = 0;
      for (auto& input : s.inputs) {
        auto& p = g_.stages[input.producer];
        in += out[input.producer] * (p.dispatch == Dispatch::broadcast ? s.instances : 1);
      }
      total += in;
      out[i] = in;
    }
    return total;
  }

  void counts() {
    if (k_.deliveries == 0) {
      for (auto& s : g_.stages)
        if (s.role == Role::source)
          s.counts.assign(s.instances, k_.max_events > 0
                                           ? e_.uniform<std::uint64_t>(0, k_.max_events)
                                           : endless);
      return;
    }
    // As many as the budget of deliveries allows.
    std::vector<std::uint64_t> unit(g_.stages.size(), 0);
    for (std::size_t i = 0; i < g_.stages.size(); ++i)
      if (g_.stages[i].role == Role::source) unit[i] = g_.stages[i].instances;
    const auto per_event = std::max<std::uint64_t>(1, deliveries(unit));
    const auto cap = std::max<std::uint64_t>(1, k_.deliveries / per_event);
    for (auto& s : g_.stages) {
      if (s.role != Role::source) continue;
      for (std::size_t k = 0; k < s.instances; ++k) {
        std::uint64_t c = 0;
        if (e_.chance(0.1))
          c = 0;
        else if (e_.chance(2.0 / 9))
          c = e_.uniform<std::uint64_t>(1, std::min<std::uint64_t>(50, cap));
        else
          c = e_.uniform<std::uint64_t>(std::max<std::uint64_t>(1, cap / 4), cap);
        s.counts.push_back(c);
      }
    }
  }

  void run_options() {
    auto& r = g_.run;
    if (k_.wild && e_.chance(0.3)) {
      static constexpr int concurrencies[] = {-1, 0, 1, 2};
      static constexpr std::size_t quanta[] = {0, 1, 3, 64};
      r.concurrency = e_.pick(concurrencies);
      r.quantum = e_.pick(quanta);
      r.fail_fast = e_.chance(0.5);
      return;
    }
    static constexpr int concurrencies[] = {0, 0, 1, 2, 3};
    static constexpr std::size_t quanta[] = {1, 4, 64, 64, 1000};
    r.concurrency = e_.pick(concurrencies);
    r.quantum = e_.pick(quanta);
    r.direct_handoff = e_.chance(0.7);
  }

  Entropy& e_;
  const Knobs& k_;
  GraphSpec g_;
  std::optional<I64> one_max_demand_;
  std::vector<std::size_t> wild_partitions_;  // producers whose partitions are drawn wild
};

const char* to_string(Role r) {
  static constexpr const char* names[] = {"source", "producer_consumer", "consumer"};
  return names[static_cast<int>(r)];
}
const char* to_string(Form f) {
  static constexpr const char* names[] = {"class",   "from_generator", "from_range", "push",
                                          "map",     "filter",         "flat_map",   "for_each",
                                          "collect", "stream"};
  return names[static_cast<int>(f)];
}
const char* to_string(sluice::CancelMode m) {
  static constexpr const char* names[] = {"permanent", "transient", "temporary"};
  return names[static_cast<int>(m)];
}

std::string describe(const Input& in) {
  std::string out = "max_demand " + std::to_string(in.max_demand) + ", min_demand " +
                    (in.min_demand ? std::to_string(*in.min_demand) : std::string("default")) +
                    ", " + to_string(in.cancel);
  if (in.selector.on)
    out += ", selector %" + std::to_string(in.selector.modulus) +
           (in.selector.accept_equal ? " == " : " != ") + std::to_string(in.selector.residue);
  if (in.selector.wrong_type) out += ", a selector of another event type";
  if (in.partition) out += ", partition " + in.partition->to_string();
  if (in.manual) out += ", manual demand";
  if (in.stage_options) out += ", with the stage's own options";
  return out;
}

std::string describe(const Partitioning& p) {
  static constexpr const char* bys[] = {"by key", "by name", "default hash"};
  std::string out = "partition(";
  if (p.listed) {
    out += "{";
    out += sluice::Partitions(p.names).to_string();
    out += "}";
  } else {
    out += std::to_string(p.count);
  }
  out += ", ";
  out += bys[static_cast<int>(p.by)];
  if (p.modulus != 0) out += " % " + std::to_string(p.modulus);
  if (p.drops) out += ", drops some keys";
  if (p.queue_size) out += ", queue_size " + std::to_string(*p.queue_size);
  return out + ")";
}

}  // namespace

GraphSpec generate(Entropy& entropy, const Knobs& knobs) {
  return Generator(entropy, knobs).run();
}

GraphSpec generate(std::uint64_t seed, const Knobs& knobs) {
  Seeded entropy(seed);
  auto g = generate(entropy, knobs);
  g.seed = seed;
  return g;
}

std::string GraphSpec::describe() const {
  std::string out = (seed ? "seed " + std::to_string(*seed) + ": " : std::string()) +
                    std::to_string(stages.size()) + " stages; run: concurrency " +
                    std::to_string(run.concurrency) + ", quantum " + std::to_string(run.quantum) +
                    ", direct_handoff " + (run.direct_handoff ? "on" : "off") + ", fail_fast " +
                    (run.fail_fast ? "on" : "off") + "\n";
  for (auto& s : stages) {
    out += "  '" + s.name + "': " + to_string(s.role) + " (" + to_string(s.form) + ") x" +
           std::to_string(s.instances);
    if (s.speed != Speed::fast) out += s.speed == Speed::slow ? ", slow" : ", bursty";
    if (s.role == Role::source) {
      out += ", counts";
      for (auto c : s.counts)
        out += c == endless ? std::string(" endless") : std::string(" ") + std::to_string(c);
    }
    if (s.form == Form::push || s.form == Form::stream)
      out += ", capacity " + std::to_string(s.capacity);
    if (s.filter.modulus != 0) out += ", filter %" + std::to_string(s.filter.modulus);
    if (s.is_producer() && s.dispatch != Dispatch::demand)
      out += ", " + (s.dispatch == Dispatch::broadcast ? std::string("broadcast")
                                                       : rg::describe(s.partition));
    if (s.buffer_size) out += ", buffer_size " + std::to_string(*s.buffer_size);
    if (s.mutates) out += ", takes mutable events";
    if (s.keep_first) out += ", buffer_keep first";
    if (s.accumulate) out += ", demand_mode accumulate";
    if (s.dynamic) out += ", dynamic";
    if (s.restart != sluice::Restart::never)
      out += s.restart == sluice::Restart::always ? ", restart always" : ", restart on_failure";
    if (s.tick.count() != 0) out += ", ticks every " + std::to_string(s.tick.count()) + " us";
    if (s.tick_fault_after)
      out += " (fails once after " + std::to_string(*s.tick_fault_after) + " calls)";
    if (s.stray) out += ", with subscription options {" + rg::describe(*s.stray) + "}";
    for (auto& in : s.inputs)
      out += "\n    <- '" + stages[in.producer].name + "' {" + rg::describe(in) + "}";
    out += "\n";
  }
  return out;
}

std::string GraphSpec::instance_name(std::size_t stage, std::size_t instance) const {
  auto& s = stages[stage];
  return s.instances == 1 ? s.name : s.name + "#" + std::to_string(instance);
}

std::optional<std::pair<std::size_t, std::size_t>> GraphSpec::find(std::string_view name,
                                                                   std::size_t instance) const {
  const auto at = name.find('#');
  const auto stage = name.substr(0, at);
  for (std::size_t i = 0; i < stages.size(); ++i)
    if (stages[i].name == stage) {
      if (at != std::string_view::npos) instance = std::stoul(std::string(name.substr(at + 1)));
      return std::pair{i, instance};
    }
  return std::nullopt;
}

std::size_t GraphSpec::fan_out() const {
  std::size_t fan = 0;
  for (std::size_t i = 0; i < stages.size(); ++i)
    if (stages[i].is_producer()) fan = i;
  return fan;
}

}  // namespace sluice_test::rg
