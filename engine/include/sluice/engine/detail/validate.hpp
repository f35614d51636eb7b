#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <sluice/engine/detail/names.hpp>
#include <sluice/engine/detail/plan.hpp>
#include <sluice/engine/detail/system.hpp>
#include <sluice/engine/dispatcher.hpp>
#include <sluice/engine/options.hpp>

/// The one validator of a plan. compile(), Engine's declarations, Engine::start and Run::attach
/// all ask it; each check is written once, and returns structured problems.
namespace sluice::detail {

/// One thing wrong with a plan, found before anything runs.
struct Problem {
  std::string stage;    ///< the stage it is about ("" for a run option or a cycle)
  std::string option;   ///< the option at fault ("" for the topology)
  std::string message;  ///< the line a user reads, naming the stage and the option
  /// Stages whose own problems make this one say nothing new (a producer nobody consumes, when
  /// its declaration already failed): reported only when none of them has one of its own.
  std::vector<std::string> follows_from = {};
  std::string peer = {};  ///< a subscription's producer (the problem names it too)
};

/// Problems in the order found; the report leaves out follow-ups (Problem::follows_from).
class Problems {
 public:
  void add(Problem p) { all_.push_back(std::move(p)); }
  void add(std::vector<Problem> ps) {
    for (auto& p : ps)
      all_.push_back(std::move(p));
  }
  bool empty() const noexcept { return all_.empty(); }
  const std::vector<Problem>& all() const noexcept { return all_; }
  /// True if a problem that follows from nothing names `stage`.
  bool names(const std::string& stage) const {
    return std::any_of(all_.begin(), all_.end(), [&](const Problem& p) {
      return p.follows_from.empty() && (p.stage == stage || p.peer == stage);
    });
  }
  /// One problem per line, follow-ups left out.
  std::string report() const {
    std::string out;
    for (auto& p : all_) {
      const bool redundant = std::any_of(p.follows_from.begin(), p.follows_from.end(),
                                         [&](const std::string& s) { return names(s); });
      if (redundant) continue;
      out += (out.empty() ? "" : "\n") + escape_controls(p.message);  // one line each
    }
    return out;
  }
  /// Throws option_error with the report, if there is anything to report.
  void throw_if_any() const {
    if (empty()) return;
    if (auto r = report(); !r.empty()) throw option_error(r);
  }

 private:
  std::vector<Problem> all_;
};

/// Throws option_error with the first of `found`, if any (the engine API's declarations, and
/// Run::attach, refuse at the first problem).
inline void throw_first(const std::vector<Problem>& found) {
  if (!found.empty()) throw option_error(found.front().message);
}

// ---- a stage on its own -------------------------------------------------------------------------

/// Its name: non-empty, no control characters (a line break would split the one-problem-per-line
/// reports and the logs; shown escaped), not taken by `taken(name)`.
template <class Taken>
std::vector<Problem> name_problems(const std::string& name, Taken&& taken) {
  if (name.empty()) return {{"", "name", "a stage needs a non-empty name"}};
  const std::string shown = escape_controls(name);
  if (shown != name)
    return {{shown, "name",
             "stage '" + shown +
                 "': option name must not contain control characters (shown "
                 "escaped)"}};
  if (taken(name)) return {{name, "name", "stage '" + name + "': name already used"}};
  return {};
}

/// Its instances: at least 1, at most max_instances (each instance is a cell with an edge to
/// every instance of its producers and consumers: far beyond this, memory runs out first).
inline std::vector<Problem> instances_problems(const std::string& name, std::size_t instances) {
  if (instances == 0)
    return {
        {name, "instances", "stage '" + name + "': option instances must be at least 1, got: 0"}};
  if (instances > max_instances)
    return {{name, "instances",
             "stage '" + name + "': option instances must be at most " +
                 std::to_string(max_instances) + ", got: " + std::to_string(instances)}};
  return {};
}

/// Everything about a stage that does not need the rest of the graph (but its dispatcher
/// factory: dispatcher_problems). `taken`: whether a name is already used. A bad name or count
/// of instances is the only problem reported; the options' problems are all reported.
template <class Taken>
std::vector<Problem> stage_problems(const StagePlan& s, Taken&& taken) {
  auto found = name_problems(s.name, taken);
  if (!found.empty()) return found;
  found = instances_problems(s.name, s.instances);
  if (!found.empty()) return found;
  const auto& o = s.producer;
  auto add = [&](const char* option, const std::string& text) {
    found.push_back({s.name, option, "stage '" + s.name + "': option " + option + text});
  };
  if (s.kind == StageKind::consumer) {  // the builder's StageOptions can set these on anything
    if (o.buffer_size) add("buffer_size", ": a consumer has no output");
    if (o.buffer_keep != BufferKeep::last) add("buffer_keep", ": a consumer has no output");
  } else if (o.buffer_size && *o.buffer_size <= 0) {
    add("buffer_size", " must be greater than 0, got: " + std::to_string(*o.buffer_size));
  }
  if (s.kind != StageKind::producer && o.demand_mode != DemandMode::forward)
    add("demand_mode", ": only producers have a demand mode");
  if (s.kind == StageKind::consumer && o.dynamic)
    add("dynamic", ": a consumer has no output to attach to");
  const auto& r = s.restart;
  if (r.max_restarts < 0)
    add("max_restarts", " must be at least 0, got: " + std::to_string(r.max_restarts));
  else if (r.max_restarts == 0 && r.restart != Restart::never)
    add("max_restarts", " is 0: option restart would allow no restart (leave restart at never)");
  if (r.restart_window <= Duration::zero())
    add("restart_window",
        " must be positive, got: " + std::to_string(r.restart_window.count()) + " ns");
  if (r.restart != Restart::never && s.cells && !s.cells->restartable())
    add("restart",
        ": this stage's handler cannot be remade (a push source or a stream, whose "
        "queue the application holds; or a handler that is not copyable or whose "
        "move may throw)");
  return found;
}

/// What a stage's dispatcher factory said (make_stage_plan), as a problem.
inline std::vector<Problem> dispatcher_problems(const std::string& stage, const std::string& said) {
  if (said.empty()) return {};
  return {{stage, "dispatcher", "stage '" + stage + "': " + said}};
}

/// What a producer given subscription options is told (the builder's StageOptions hold both
/// kinds of option).
inline std::string producer_subscribes_to_nothing(const char* option) {
  return std::string("option ") + option + ": a producer subscribes to nothing";
}

/// What a function stage (map, filter, flat_map, for_each, collect) with manual demand is told:
/// nothing in it would ever ask.
inline std::string function_cannot_ask(StageKind kind, const std::string& what) {
  return kind == StageKind::consumer
             ? "option demand: manual demand needs a consumer class that calls ctx.ask; a "
               "function sink cannot ask"
             : "option demand: manual demand needs a stage class that calls ctx.ask; a "
               "function stage (" +
                   what + ") cannot ask";
}

// ---- a subscription
// -------------------------------------------------------------------------------

/// The subscription's own options, and the producer's dispatcher's checks for each consumer
/// instance (which also resolves each instance's partition). Both stages must be valid.
inline std::vector<Problem> options_problems(const StagePlan& c, const StagePlan& p,
                                             const SubscriptionOptions& o) {
  const std::string where = "stage '" + c.name + "' subscribing to '" + p.name + "': ";
  auto one = [&](const char* option, std::string text) {
    return std::vector<Problem>{{c.name, option, where + std::move(text), {}, p.name}};
  };
  if (o.max_demand < 1)
    return one("max_demand", "option max_demand must be equal to or greater than 1, got: " +
                                 std::to_string(o.max_demand));
  if (o.max_demand > (std::int64_t{1} << 30))
    return one("max_demand",
               "option max_demand must be at most 2^30, got: " + std::to_string(o.max_demand));
  if (o.min_demand && *o.min_demand < 0)
    return one("min_demand", "option min_demand must be equal to or greater than 0, got: " +
                                 std::to_string(*o.min_demand));
  if (o.min_demand && *o.min_demand >= o.max_demand)
    return one("min_demand", "option min_demand must be equal to or less than " +
                                 std::to_string(o.max_demand - 1) +
                                 ", got: " + std::to_string(*o.min_demand));
  const DispatcherBase& d = *p.dispatcher;
  if (o.selector.has_value() && o.selector.type() != d.selector_type())
    return one("selector",
               "option selector must be made with sluice::selector<Event>(predicate) for this "
               "producer's event type");
  if (d.shares_events() && !c.consumes_const)
    return one("handle_events", "the " + d.name() +
                                    " dispatcher shares each event between its consumers, so "
                                    "handle_events must take std::span<const T>");
  for (std::size_t ci = 0; ci < c.instances; ++ci) {
    const std::string cname = instance_name(c.name, c.instances, ci);
    try {
      d.validate(SubscriberInfo{0, cname, edge_options(o, d, ci), ci});
    } catch (const option_error& e) {
      return {{c.name,
               "partition",
               "stage '" + cname + "' subscribing to '" + p.name + "': " + e.what(),
               {},
               p.name}};
    }
  }
  return {};
}

/// A declared subscription: its kinds and event type (checked at compile time through the
/// typed APIs; at run time for code that keeps the types itself), that it is the only one
/// between the two stages, and its options.
inline std::vector<Problem> subscription_problems(const Plan& plan, std::size_t index) {
  const auto& s = plan.subscriptions[index];
  const auto& c = plan.stages[s.consumer];
  const auto& p = plan.stages[s.producer];
  auto one = [&](std::string text) {
    return std::vector<Problem>{{c.name, "", std::move(text), {}, p.name}};
  };
  if (c.kind == StageKind::producer)
    return one("stage '" + c.name + "' is a producer: it cannot subscribe to '" + p.name + "'");
  if (p.kind == StageKind::consumer)
    return one("stage '" + c.name + "' cannot subscribe to '" + p.name + "', a consumer");
  if (c.in != s.event || p.out != s.event)
    return one("stage '" + c.name + "' subscribing to '" + p.name + "': event types differ");
  for (std::size_t i = 0; i < index; ++i)
    if (plan.subscriptions[i].consumer == s.consumer &&
        plan.subscriptions[i].producer == s.producer)
      return one("stage '" + c.name + "': already subscribed to '" + p.name + "'");
  return options_problems(c, p, s.options);
}

// ---- the whole graph
// -------------------------------------------------------------------------------

/// The subscribers each instance of producer `p` will have, in the order a run wires them
/// (names owned by `names`); `valid(k)`: subscription k passed its checks.
template <class Valid>
std::vector<SubscriberInfo> subscribers_of(const Plan& plan, std::size_t p, Valid&& valid,
                                           std::vector<std::string>& names) {
  std::vector<SubscriberInfo> out;
  names.clear();
  for (std::size_t k = 0; k < plan.subscriptions.size(); ++k) {
    auto& s = plan.subscriptions[k];
    if (s.producer != p || !valid(k)) continue;
    auto& c = plan.stages[s.consumer];
    for (std::size_t ci = 0; ci < c.instances; ++ci) {
      out.push_back(SubscriberInfo{static_cast<SubscriberId>(out.size()),
                                   {},
                                   edge_options(s.options, *plan.stages[p].dispatcher, ci),
                                   ci});
      names.push_back(instance_name(c.name, c.instances, ci));
    }
  }
  for (std::size_t i = 0; i < out.size(); ++i)
    out[i].consumer = names[i];  // the names no longer move
  return out;
}

/// A cycle through valid subscriptions (depth-first over producer -> consumer), if any.
template <class Valid>
std::optional<Problem> cycle_problem(const Plan& plan, Valid&& valid) {
  const auto n = plan.stages.size();
  std::vector<int> color(n, 0);
  std::size_t on_cycle = 0;  // a stage the back edge leads to: one on the cycle
  std::function<bool(std::size_t)> dfs = [&](std::size_t u) {
    color[u] = 1;
    for (std::size_t k = 0; k < plan.subscriptions.size(); ++k) {
      auto& s = plan.subscriptions[k];
      if (s.producer != u || !valid(k)) continue;
      if (color[s.consumer] == 1) {
        on_cycle = s.consumer;
        return true;
      }
      if (color[s.consumer] == 0 && dfs(s.consumer)) return true;
    }
    color[u] = 2;
    return false;
  };
  for (std::size_t i = 0; i < n; ++i)
    if (color[i] == 0 && dfs(i))
      return Problem{
          "", "",
          "the subscriptions form a cycle through stage '" + plan.stages[on_cycle].name + "'"};
  return std::nullopt;
}

/// The topology: every consumer subscribed, every producer consumed (unless dynamic), each
/// producer's dispatcher content with its whole set of valid subscriptions, no cycle through
/// them. A missing subscription or subscriber follows from the stage's own problems.
/// `usable(i)`: stage i passed its checks (its dispatcher can be asked); `valid(k)`:
/// subscription k did.
template <class Usable, class Valid>
std::vector<Problem> topology_problems(const Plan& plan, Usable&& usable, Valid&& valid) {
  std::vector<Problem> found;
  const auto n = plan.stages.size();
  std::vector<bool> has_sub(n), has_consumer(n);
  for (auto& s : plan.subscriptions) {
    has_sub[s.consumer] = true;
    has_consumer[s.producer] = true;
  }
  std::vector<std::string> names;
  for (std::size_t i = 0; i < n; ++i) {
    auto& d = plan.stages[i];
    if (d.kind != StageKind::producer && !has_sub[i])
      found.push_back(
          {d.name, "", "stage '" + d.name + "': a consumer with no subscription", {d.name}});
    const bool dynamic = d.producer.dynamic;
    if (d.kind != StageKind::consumer && !has_consumer[i] && !dynamic)
      found.push_back({d.name,
                       "",
                       "stage '" + d.name +
                           "': a producer with no subscriber (make it dynamic to attach "
                           "consumers while it runs)",
                       {d.name}});
    if (d.kind != StageKind::consumer && (has_consumer[i] || dynamic) && usable(i))
      for (auto& problem :
           d.dispatcher->validate_subscribers(subscribers_of(plan, i, valid, names), dynamic))
        found.push_back({d.name, "partition", "stage '" + d.name + "': " + problem, {d.name}});
  }
  if (auto cycle = cycle_problem(plan, valid)) found.push_back(std::move(*cycle));
  return found;
}

/// The rings of `edges` edges of a subscription at `max_demand`: refused when they cannot fit
/// in this machine's memory (they hold up to max_demand events, and a long stream goes round
/// them).
inline std::vector<Problem> memory_problems(const std::string& consumer,
                                            const std::string& producer, std::int64_t max_demand,
                                            std::size_t ring_bytes, std::size_t edges) {
  const auto memory = physical_memory();
  const double need = static_cast<double>(ring_bytes) * static_cast<double>(edges);
  if (memory == 0 || need <= static_cast<double>(memory)) return {};
  constexpr double mib = 1024.0 * 1024.0;
  return {{consumer, "max_demand",
           "stage '" + consumer + "' subscribing to '" + producer + "': max_demand " +
               std::to_string(max_demand) + " needs " +
               std::to_string(static_cast<std::uint64_t>(need / mib)) +
               " MiB of edge buffers, more than this machine's memory (" +
               std::to_string(static_cast<std::uint64_t>(static_cast<double>(memory) / mib)) +
               " MiB); lower max_demand"}};
}

/// Every problem of a whole plan, in order: each stage's (first those its declaration found,
/// `declared[i]`: the builder's checks), each subscription's between stages that passed theirs,
/// then the topology.
inline Problems validate(const Plan& plan, const std::vector<std::vector<Problem>>& declared) {
  Problems found;
  const auto n = plan.stages.size();
  std::vector<bool> usable(n), valid(plan.subscriptions.size());
  for (std::size_t i = 0; i < n; ++i) {
    auto& s = plan.stages[i];
    if (i < declared.size()) found.add(declared[i]);
    auto own = stage_problems(s, [&](const std::string& name) {
      for (std::size_t j = 0; j < i; ++j)
        if (plan.stages[j].name == name) return true;
      return false;
    });
    usable[i] = own.empty() && (s.kind == StageKind::consumer || s.dispatcher != nullptr);
    found.add(std::move(own));
  }
  for (std::size_t k = 0; k < plan.subscriptions.size(); ++k) {
    auto& sub = plan.subscriptions[k];
    if (!usable[sub.producer] || !usable[sub.consumer]) continue;  // they said why already
    auto own = subscription_problems(plan, k);
    valid[k] = own.empty();
    found.add(std::move(own));
  }
  found.add(topology_problems(
      plan, [&](std::size_t i) { return usable[i]; }, [&](std::size_t k) { return valid[k]; }));
  return found;
}

/// A run's own options.
inline std::vector<Problem> run_options_problems(const RunOptions& o) {
  std::vector<Problem> found;
  if (o.quantum == 0)
    found.push_back({"", "quantum", "run option quantum must be at least 1, got: 0"});
  if (o.concurrency < 0)
    found.push_back({"", "concurrency",
                     "run option concurrency must be 0 (hardware) or more, got: " +
                         std::to_string(o.concurrency)});
  if (o.concurrency > max_concurrency)
    found.push_back({"", "concurrency",
                     "run option concurrency must be at most " + std::to_string(max_concurrency) +
                         ", got: " + std::to_string(o.concurrency)});
  return found;
}

}  // namespace sluice::detail
