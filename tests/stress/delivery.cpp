#include "stress/delivery.hpp"

#include <any>
#include <chrono>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <thread>

#include "support/random_graph_builder.hpp"

namespace stress {

rg::Knobs knobs(std::uint64_t deliveries, bool hash_drops) {
  rg::Knobs k;
  k.shape = rg::Shape::dag;
  k.min_stages = 2;
  k.max_stages = 12;
  k.speeds = true;
  k.random_run = true;
  k.deliveries = deliveries;
  // Partition hashes that drop some events (std::nullopt): they used to stall a producer that
  // emits exactly its demand (see the case in test_stress.cpp).
  k.hash_drops = hash_drops ? 0.3 : 0.0;
  return k;
}

void add_timers(rg::GraphSpec& spec) {
  rg::Seeded e(rg::mix(spec.seed.value_or(0) ^ 0x71e5));
  for (auto& s : spec.stages) {
    if (s.form != rg::Form::handler || !e.chance(0.35)) continue;
    s.tick = std::chrono::microseconds(e.uniform<std::int64_t>(20, 1000));
    if (!e.chance(0.5)) continue;
    s.tick_fault_after = e.uniform<std::uint64_t>(0, 20);
    s.restart = e.chance(0.5) ? sluice::Restart::on_failure : sluice::Restart::always;
  }
}

// ---- handlers -----------------------------------------------------------------------------------

namespace {

void spin_for(std::chrono::nanoseconds d, InstanceRecord& r) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until)
    r.work = rg::mix(r.work);
}

/// A slow stage spins about 2 µs per event; a bursty one sleeps 1 ms about once in 30 calls.
void pace(rg::Speed speed, InstanceRecord& r, std::size_t events) {
  if (speed == rg::Speed::slow) {
    spin_for(std::chrono::nanoseconds(2000) * static_cast<std::int64_t>(events), r);
  } else if (speed == rg::Speed::bursty) {
    r.work = rg::mix(r.work);
    if (r.work % 30 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

/// A timer's message.
struct Tick {};

/// From each handler's first handle_subscribe (a restarted instance's new handler starts again).
template <class Out>
void start_ticking(const rg::StageSpec& spec, bool& started, sluice::Context<Out>& ctx) {
  if (started || spec.tick.count() == 0) return;
  started = true;
  ctx.send_every(spec.tick, Tick{});
}

/// A tick: counted; the stage's fault, once per instance, once it has made enough calls. It emits
/// nothing first, so what the restart loses is the instance's buffer: its last events.
template <class Out>
void on_tick(const rg::StageSpec& spec, InstanceRecord& r, const std::any& message,
             sluice::Context<Out>& ctx) {
  if (std::any_cast<Tick>(&message) == nullptr) {
    r.problem("handle_info got a message that is no tick");
    return;
  }
  ++r.ticks;
  if (!spec.tick_fault_after || r.faulted || r.calls < *spec.tick_fault_after) return;
  r.faulted = true;
  r.emitted_at_fault = r.emitted.size();
  throw std::runtime_error("stress: the tick's fault in " + std::string(ctx.name()));
}

struct SourceHandler {
  const rg::StageSpec* spec = nullptr;
  std::uint32_t id = 0;
  std::vector<InstanceRecord>* records = nullptr;
  bool finished = false;  // each instance has its own copy (a restart a new one)
  bool ticking = false;

  void handle_subscribe(const sluice::SubscribeInfo&, sluice::Context<Ev>& ctx) {
    start_ticking(*spec, ticking, ctx);
  }
  void handle_info(std::any& m, sluice::Context<Ev>& ctx) {
    on_tick(*spec, (*records)[ctx.instance()], m, ctx);
  }
  void handle_demand(std::size_t n, sluice::Context<Ev>& ctx) {
    const auto inst = static_cast<std::uint32_t>(ctx.instance());
    auto& r = (*records)[inst];
    ++r.calls;
    if (n == 0) r.problem("handle_demand called with 0");
    const std::size_t limit = spec->counts[inst];
    std::size_t k = 0;
    for (; k < n && r.emitted.size() < limit; ++k) {
      const auto seq = static_cast<std::uint32_t>(r.emitted.size());
      ctx.emit(Ev{id, inst, seq, id, inst, seq});
      r.emitted.push_back(Origin{id, inst, seq});
    }
    pace(spec->speed, r, k);
    // Demand may still come after finish(), until the end it queued is handled (GenStage's
    // from_enumerable stops the same way): it emits nothing more, and finishes once.
    if (r.emitted.size() == limit && !finished) {
      finished = true;
      ctx.finish();
    }
  }
};

/// What a consumer side checks and records for each batch.
void on_receive(const rg::StageSpec& spec, InstanceRecord& r, std::span<const Ev> in,
                sluice::SubscriptionId from) {
  if (in.empty()) {
    r.problem("handle_events called with no events");
    return;
  }
  ++r.calls;
  if (r.subs.size() <= from) r.subs.resize(from + 1);
  auto& sub = r.subs[from];
  if (!sub.known) {
    sub.known = true;
    sub.hop_stage = in.front().hop_stage;
    sub.hop_inst = in.front().hop_inst;
  }
  for (auto& e : in)
    if (e.hop_stage != sub.hop_stage || e.hop_inst != sub.hop_inst) {
      r.problem("subscription " + std::to_string(from) + " delivered an event from stage " +
                std::to_string(e.hop_stage) + "#" + std::to_string(e.hop_inst) +
                " but earlier ones from stage " + std::to_string(sub.hop_stage) + "#" +
                std::to_string(sub.hop_inst));
      break;
    }
  const rg::Input* input = spec.input_from(sub.hop_stage);
  if (input == nullptr) {
    r.problem("received events from stage " + std::to_string(sub.hop_stage) +
              ", which it does not subscribe to");
  } else if (static_cast<std::int64_t>(in.size()) > input->chunk()) {
    // GenStage's consumer cuts each message into chunks of max_demand - min_demand.
    r.problem("a batch of " + std::to_string(in.size()) + " events from stage " +
              std::to_string(sub.hop_stage) +
              ", more than max_demand - min_demand = " + std::to_string(input->chunk()));
  }
  r.received.insert(r.received.end(), in.begin(), in.end());
}

struct StageHandler {
  const rg::StageSpec* spec = nullptr;
  std::uint32_t id = 0;
  std::vector<InstanceRecord>* records = nullptr;
  bool ticking = false;

  void handle_subscribe(const sluice::SubscribeInfo&, sluice::Context<Ev>& ctx) {
    start_ticking(*spec, ticking, ctx);
  }
  void handle_info(std::any& m, sluice::Context<Ev>& ctx) {
    on_tick(*spec, (*records)[ctx.instance()], m, ctx);
  }

  void handle_events(std::span<const Ev> in, sluice::SubscriptionId from,
                     sluice::Context<Ev>& ctx) {
    const auto inst = static_cast<std::uint32_t>(ctx.instance());
    auto& r = (*records)[inst];
    on_receive(*spec, r, in, from);
    for (auto& e : in) {
      const auto o = origin_of(e);
      if (!spec->filter.keeps(key_of(o))) continue;
      ctx.emit(
          Ev{o.src, o.src_inst, o.seq, id, inst, static_cast<std::uint32_t>(r.emitted.size())});
      r.emitted.push_back(o);
    }
    pace(spec->speed, r, in.size());
  }
};

struct SinkHandler {
  const rg::StageSpec* spec = nullptr;
  std::vector<InstanceRecord>* records = nullptr;
  bool ticking = false;

  void handle_subscribe(const sluice::SubscribeInfo&, sluice::Context<void>& ctx) {
    start_ticking(*spec, ticking, ctx);
  }
  void handle_info(std::any& m, sluice::Context<void>& ctx) {
    on_tick(*spec, (*records)[ctx.instance()], m, ctx);
  }

  void handle_events(std::span<const Ev> in, sluice::SubscriptionId from,
                     sluice::Context<void>& ctx) {
    auto& r = (*records)[ctx.instance()];
    on_receive(*spec, r, in, from);
    pace(spec->speed, r, in.size());
  }
};

/// The stress graph's code for the shared builder.
struct Code {
  const rg::GraphSpec& spec;
  Records& records;

  SourceHandler source(std::size_t i) { return {&spec.stages[i], id(i), &records.stages[i]}; }
  StageHandler stage(std::size_t i) { return {&spec.stages[i], id(i), &records.stages[i]}; }
  SinkHandler sink(std::size_t i) { return {&spec.stages[i], &records.stages[i]}; }
  auto selector(std::size_t i, std::size_t k) const {
    return [sel = spec.stages[i].inputs[k].selector](const Ev& e) {
      return sel.accepts(key_of(origin_of(e)));
    };
  }
  template <class Declare>
  void partition(std::size_t i, Declare&& declare) const {
    declare([p = spec.stages[i].partition](Ev& e) { return p.of(key_of(origin_of(e))); });
  }
  static std::uint32_t id(std::size_t i) { return static_cast<std::uint32_t>(i); }
};

}  // namespace

sluice::Graph build(const rg::GraphSpec& spec, Records& records) {
  for (std::size_t i = 0; i < spec.stages.size(); ++i)
    for (std::size_t k = 0; k < records.stages[i].size(); ++k)
      records.stages[i][k].work = rg::mix(spec.seed.value_or(0) ^ (i << 8) ^ k);
  Code code{spec, records};
  return rg::build<Ev>(spec, code).graph;
}

// ---- checks -------------------------------------------------------------------------------------

std::string Findings::to_string() const {
  std::string out;
  for (auto& p : problems)
    out += p + "\n";
  if (failed > problems.size())
    out += "... and " + std::to_string(failed - problems.size()) + " more\n";
  return out;
}

namespace {

constexpr std::uint64_t kUnbounded = std::numeric_limits<std::uint64_t>::max();

std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) {
  return a > kUnbounded - b ? kUnbounded : a + b;
}

std::string instance_name(const rg::GraphSpec& g, std::size_t stage, std::size_t inst) {
  return g.stages[stage].name + "#" + std::to_string(inst);
}

}  // namespace

std::uint64_t buffered_bound(const rg::GraphSpec& spec, std::size_t stage) {
  auto& s = spec.stages[stage];
  if (!s.is_producer()) return 0;
  std::uint64_t bound = kUnbounded;
  if (s.buffer_size)
    bound = static_cast<std::uint64_t>(*s.buffer_size);
  else if (s.role == rg::Role::source)
    bound = static_cast<std::uint64_t>(sluice::default_producer_buffer_size);
  if (s.dispatch == rg::Dispatch::partition) {
    // The partition queues (counted in `buffered` too) hold events the dispatcher took on
    // demand its subscribers asked for and it has not sent yet: at most their max_demand each.
    for (auto c : s.subscribers) {
      auto& cs = spec.stages[c];
      bound = saturating_add(
          bound, static_cast<std::uint64_t>(cs.input_from(stage)->max_demand) * cs.instances);
    }
  }
  return bound;
}

std::vector<std::string> unexpected_logs(const rg::GraphSpec& spec, const Records& records,
                                         const std::vector<std::string>& lines) {
  std::vector<std::string> out;
  for (auto& line : lines) {
    bool expected = false;
    for (std::size_t i = 0; i < spec.stages.size() && !expected; ++i)
      for (std::size_t k = 0; k < spec.stages[i].instances && !expected; ++k)
        expected = records.stages[i][k].faulted &&
                   line.starts_with("stage '" + spec.instance_name(i, k) + "' restarted (");
    if (line.starts_with("stage '") &&
        line.find("DemandDispatcher expects a maximum demand of") != std::string::npos) {
      const auto end = line.find('\'', 7);
      auto where = spec.find(line.substr(7, end - 7), 0);
      if (where && spec.stages[where->first].dispatch == rg::Dispatch::demand) {
        auto& p = spec.stages[where->first];
        for (auto c : p.subscribers)
          expected =
              expected || spec.stages[c].input_from(where->first)->max_demand !=
                              spec.stages[p.subscribers[0]].input_from(where->first)->max_demand;
      }
    }
    if (!expected) out.push_back(line);
  }
  return out;
}

void check_sample(const rg::GraphSpec& spec, const sluice::Metrics& m,
                  const sluice::Metrics* previous, Findings& f) {
  for (std::size_t k = 0; k < m.stages.size(); ++k) {
    auto& s = m.stages[k];
    auto where = spec.find(s.name, s.instance);
    ++f.checks;
    if (!where) {
      f.fail("metrics name a stage '" + s.name + "' the graph does not have");
      continue;
    }
    // `buffered` is one value its owner publishes: whatever read we get was true at some point.
    const auto bound = buffered_bound(spec, where->first);
    if (s.buffered > bound)
      f.fail("while running: " + instance_name(spec, where->first, where->second) + " buffered " +
             std::to_string(s.buffered) + " events, more than its bound " + std::to_string(bound));
    // Counters written by one thread only grow: successive reads never go back.
    if (previous && k < previous->stages.size() && previous->stages[k].name == s.name &&
        previous->stages[k].instance == s.instance) {
      auto& p = previous->stages[k];
      if (s.events_in < p.events_in || s.events_out < p.events_out)
        f.fail("while running: the counters of " + s.name + " went back");
    }
  }
  if (previous && previous->edges.size() == m.edges.size())
    for (std::size_t k = 0; k < m.edges.size(); ++k) {
      auto& e = m.edges[k];
      auto& p = previous->edges[k];
      if (e.producer != p.producer || e.consumer != p.consumer) continue;
      ++f.checks;
      if (e.sent < p.sent || e.received < p.received)
        f.fail("while running: the counters of edge " + e.producer + " -> " + e.consumer +
               " went back");
    }
}

Findings check(const rg::GraphSpec& spec, const Records& records, const sluice::Metrics& m) {
  Findings f;
  const auto n = spec.stages.size();

  // What the handlers saw themselves.
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t k = 0; k < records.stages[i].size(); ++k)
      for (auto& p : records.stages[i][k].problems)
        f.fail(instance_name(spec, i, k) + ": " + p);

  // Sources emitted what they were told, in sequence.
  for (std::size_t i = 0; i < n; ++i) {
    auto& s = spec.stages[i];
    if (s.role != rg::Role::source) continue;
    for (std::size_t k = 0; k < s.instances; ++k) {
      auto& e = records.stages[i][k].emitted;
      ++f.checks;
      if (e.size() != s.counts[k])
        f.fail(instance_name(spec, i, k) + " emitted " + std::to_string(e.size()) + " events of " +
               std::to_string(s.counts[k]));
    }
  }

  // What a restart lost: the instance's buffer when its tick failed, the last events it had
  // emitted then (its `lost`, which the final checks below expect nowhere else).
  std::map<std::pair<std::size_t, std::size_t>, std::uint64_t> lost_by;
  for (auto& s : m.stages)
    if (auto where = spec.find(s.name, s.instance)) lost_by[*where] = s.lost;
  auto lost_range = [&](std::size_t p, std::size_t pi) -> std::pair<std::size_t, std::size_t> {
    auto& r = records.stages[p][pi];
    const auto lost = lost_by[{p, pi}];
    if (!r.faulted || lost > r.emitted_at_fault) return {0, 0};  // the final checks report it
    return {r.emitted_at_fault - lost, r.emitted_at_fault};
  };

  // received_from[c][ci][(p, pi)]: hop sequence numbers, in arrival order.
  using Key = std::pair<std::size_t, std::size_t>;
  std::vector<std::vector<std::map<Key, std::vector<std::uint32_t>>>> from(n);
  for (std::size_t c = 0; c < n; ++c) {
    from[c].resize(spec.stages[c].instances);
    for (std::size_t ci = 0; ci < spec.stages[c].instances; ++ci)
      for (auto& e : records.stages[c][ci].received) {
        const Key key{e.hop_stage, e.hop_inst};
        ++f.checks;
        if (e.hop_stage >= n || !spec.stages[e.hop_stage].is_producer() ||
            e.hop_inst >= spec.stages[e.hop_stage].instances) {
          f.fail(instance_name(spec, c, ci) + " received an event from no producer (hop " +
                 std::to_string(e.hop_stage) + "#" + std::to_string(e.hop_inst) + ")");
          continue;
        }
        auto& emitted = records.stages[e.hop_stage][e.hop_inst].emitted;
        if (e.hop_seq >= emitted.size() || !(emitted[e.hop_seq] == origin_of(e))) {
          f.fail(instance_name(spec, c, ci) + " received event " + std::to_string(e.hop_seq) +
                 " of " + instance_name(spec, e.hop_stage, e.hop_inst) +
                 ", which is not what that instance emitted there");
          continue;
        }
        from[c][ci][key].push_back(e.hop_seq);
      }
  }

  // FIFO per edge: hop sequence numbers strictly increase.
  for (std::size_t c = 0; c < n; ++c)
    for (std::size_t ci = 0; ci < from[c].size(); ++ci)
      for (auto& [key, seqs] : from[c][ci]) {
        ++f.checks;
        for (std::size_t k = 1; k < seqs.size(); ++k)
          if (seqs[k] <= seqs[k - 1]) {
            f.fail("edge " + instance_name(spec, key.first, key.second) + " -> " +
                   instance_name(spec, c, ci) + ": event " + std::to_string(seqs[k]) +
                   " arrived after event " + std::to_string(seqs[k - 1]));
            break;
          }
      }

  // At every producer instance: exactly what its dispatcher promises.
  std::vector<std::vector<std::uint64_t>> hash_dropped(n);
  for (std::size_t p = 0; p < n; ++p) {
    auto& ps = spec.stages[p];
    if (!ps.is_producer()) continue;
    hash_dropped[p].resize(ps.instances);
    for (std::size_t pi = 0; pi < ps.instances; ++pi) {
      auto& emitted = records.stages[p][pi].emitted;
      const Key key{p, pi};
      const std::string pname = instance_name(spec, p, pi);
      const auto [lost_from, lost_to] = lost_range(p, pi);
      auto was_lost = [&](std::size_t k) { return k >= lost_from && k < lost_to; };
      auto got = [&](std::size_t c, std::size_t ci) -> const std::vector<std::uint32_t>& {
        static const std::vector<std::uint32_t> none;
        auto it = from[c][ci].find(key);
        return it == from[c][ci].end() ? none : it->second;
      };
      if (ps.dispatch == rg::Dispatch::demand) {
        std::vector<std::uint32_t> times(emitted.size(), 0);
        for (auto c : ps.subscribers)
          for (std::size_t ci = 0; ci < spec.stages[c].instances; ++ci)
            for (auto k : got(c, ci))
              ++times[k];
        for (std::size_t k = 0; k < emitted.size(); ++k) {
          ++f.checks;
          const std::uint32_t want = was_lost(k) ? 0 : 1;
          if (times[k] != want) {
            f.fail("demand: event " + std::to_string(k) + " of " + pname + " reached " +
                   std::to_string(times[k]) + " subscribers instead of " +
                   (want == 0 ? "none (a restart lost it)" : "exactly one"));
            break;
          }
        }
      } else if (ps.dispatch == rg::Dispatch::broadcast) {
        for (auto c : ps.subscribers) {
          auto& sel = spec.stages[c].input_from(p)->selector;
          std::vector<std::uint32_t> expected;
          for (std::size_t k = 0; k < emitted.size(); ++k)
            if (!was_lost(k) && sel.accepts(key_of(emitted[k])))
              expected.push_back(static_cast<std::uint32_t>(k));
          for (std::size_t ci = 0; ci < spec.stages[c].instances; ++ci) {
            ++f.checks;
            auto& g = got(c, ci);
            if (g != expected)
              f.fail("broadcast: " + instance_name(spec, c, ci) + " received " +
                     std::to_string(g.size()) + " events of " + pname + ", expected the " +
                     std::to_string(expected.size()) + " its selector accepts, in order");
          }
        }
      } else {  // partition
        ++f.checks;
        if (ps.subscribers.size() != 1) {
          f.fail("partition: " + pname + " has " + std::to_string(ps.subscribers.size()) +
                 " subscribing stages (the generator makes one)");
          continue;
        }
        const auto c = ps.subscribers[0];
        std::vector<std::vector<std::uint32_t>> expected(spec.stages[c].instances);
        for (std::size_t k = 0; k < emitted.size(); ++k) {
          if (was_lost(k)) continue;
          const auto part = ps.partition.of(key_of(emitted[k]));
          if (part)
            expected[static_cast<std::size_t>(*part)].push_back(static_cast<std::uint32_t>(k));
          else
            ++hash_dropped[p][pi];
        }
        for (std::size_t ci = 0; ci < expected.size(); ++ci) {
          ++f.checks;
          auto& g = got(c, ci);
          if (g != expected[ci])
            f.fail("partition: " + instance_name(spec, c, ci) + " (partition " +
                   std::to_string(ci) + ") received " + std::to_string(g.size()) + " events of " +
                   pname + ", expected the " + std::to_string(expected[ci].size()) +
                   " the hash sends there, each once, in order");
          // Each key in order (a partition's events arrive in order, so each key's do).
          std::map<std::uint64_t, std::uint32_t> last;
          for (auto k : g) {
            const auto pkey = ps.partition.key(key_of(emitted[k]));
            auto it = last.find(pkey);
            if (it != last.end() && it->second >= k) {
              f.fail("partition: key " + std::to_string(pkey) + " of " + pname +
                     " out of order at " + instance_name(spec, c, ci));
              break;
            }
            last[pkey] = k;
          }
        }
      }
    }
  }

  // The final metrics: exact once the run has ended.
  std::map<Key, std::uint64_t> sent_by;  // producer instance -> events on its edges
  std::size_t expected_edges = 0;
  for (std::size_t c = 0; c < n; ++c)
    for (auto& in : spec.stages[c].inputs)
      expected_edges += spec.stages[in.producer].instances * spec.stages[c].instances;
  ++f.checks;
  if (m.edges.size() != expected_edges)
    f.fail("metrics list " + std::to_string(m.edges.size()) + " edges, the graph has " +
           std::to_string(expected_edges));
  for (auto& e : m.edges) {
    auto p = spec.find(e.producer, 0);
    auto c = spec.find(e.consumer, 0);
    ++f.checks;
    if (!p || !c) {
      f.fail("metrics name an edge " + e.producer + " -> " + e.consumer + " the graph lacks");
      continue;
    }
    sent_by[*p] += e.sent;
    const std::string edge = e.producer + " -> " + e.consumer;
    if (e.sent != e.received)
      f.fail("edge " + edge + ": sent " + std::to_string(e.sent) + ", received " +
             std::to_string(e.received) + " after the run");
    auto& g = from[c->first][c->second];
    auto it = g.find(*p);
    const std::uint64_t handled = it == g.end() ? 0 : it->second.size();
    if (e.received != handled)
      f.fail("edge " + edge + ": metrics say " + std::to_string(e.received) +
             " received, the consumer handled " + std::to_string(handled));
    if (e.queued != 0) f.fail("edge " + edge + ": still queues " + std::to_string(e.queued));
  }
  ++f.checks;
  std::uint64_t lost = 0;  // by restarts only (checked below)
  for (auto& s : m.stages)
    lost += s.lost;
  if (m.undelivered() != lost)
    f.fail("undelivered events after the run: " + std::to_string(m.undelivered()) + ", of which " +
           std::to_string(lost) + " lost in restarts");
  for (auto& s : m.stages) {
    auto where = spec.find(s.name, s.instance);
    ++f.checks;
    if (!where) {
      f.fail("metrics name a stage '" + s.name + "' the graph does not have");
      continue;
    }
    const auto [i, k] = *where;
    const std::string who = instance_name(spec, i, k);
    if (!s.finished) f.fail(who + " has not finished");
    if (s.stop_reason != "normal") f.fail(who + " stopped: " + s.stop_reason);
    if (s.dropped != 0) f.fail(who + " dropped " + std::to_string(s.dropped) + " events");
    auto& rec = records.stages[i][k];
    if (s.restarts != (rec.faulted ? 1U : 0U))
      f.fail(who + " restarted " + std::to_string(s.restarts) + " times; its fault was " +
             (rec.faulted ? "thrown once" : "not thrown"));
    if (s.lost != 0 && !rec.faulted) f.fail(who + " lost " + std::to_string(s.lost) + " events");
    if (rec.faulted && s.lost > rec.emitted_at_fault)
      f.fail(who + " lost " + std::to_string(s.lost) + " events in a restart, more than the " +
             std::to_string(rec.emitted_at_fault) + " it had emitted");
    if (s.buffered != 0) f.fail(who + " still buffers " + std::to_string(s.buffered) + " events");
    if (s.buffered > buffered_bound(spec, i)) f.fail(who + " buffered beyond its bound");
    if (spec.stages[i].role != rg::Role::source && s.events_in != rec.received.size())
      f.fail(who + ": events_in " + std::to_string(s.events_in) + ", handled " +
             std::to_string(rec.received.size()));
    if (spec.stages[i].is_producer()) {
      if (s.events_out != sent_by[{i, k}])
        f.fail(who + ": events_out " + std::to_string(s.events_out) + ", its edges carried " +
               std::to_string(sent_by[{i, k}]));
      const std::uint64_t filtered = hash_dropped[i].empty() ? 0 : hash_dropped[i][k];
      if (s.filtered != filtered)
        f.fail(who + ": filtered " + std::to_string(s.filtered) + ", its hash dropped " +
               std::to_string(filtered));
      // RELIABILITY.md's identity at each producer that makes no copies: every event it
      // emitted was sent once, filtered, dropped or lost, and none is still buffered.
      if (spec.stages[i].dispatch != rg::Dispatch::broadcast &&
          rec.emitted.size() != s.events_out + s.filtered + s.dropped + s.lost + s.buffered)
        f.fail(who + ": emitted " + std::to_string(rec.emitted.size()) + " events, but sent " +
               std::to_string(s.events_out) + ", filtered " + std::to_string(s.filtered) +
               ", dropped " + std::to_string(s.dropped) + ", lost " + std::to_string(s.lost) +
               " and buffers " + std::to_string(s.buffered));
    }
  }
  return f;
}

}  // namespace stress
