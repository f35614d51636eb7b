#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <sluice/engine/plan.hpp>
#include <sluice/engine/stage_ref.hpp>
#include <sluice/engine/validate.hpp>
#include <sluice/graph/options.hpp>

namespace sluice::detail {

/// A declared stage: the engine's plan of it, and what the builder adds.
struct GraphNode {
  StagePlan stage;
  std::string what;  ///< how it was made: "map", "from_range", "class", ... (DOT)
  StageOptions options;
  std::string dispatcher = "demand";
  /// Found while declaring; compile() reports them first, before the validator's.
  std::vector<Problem> problems;
  bool function_handler = false;  ///< for_each, collect, map, filter, flat_map: it cannot ask

  void problem(std::string option, std::string message) {
    problems.push_back({stage.name, std::move(option), std::move(message)});
  }
};

/// What a graph's runs cannot share: each run claims all of them before it starts (refused,
/// with `why`, if one is taken). A push source's and a stream's claim is never given back (the
/// application's handle or range belongs to that run); a collect's is given back when its sink
/// stops (one run at a time writes the container).
struct Claim {
  std::string why;
  std::shared_ptr<std::atomic<bool>> taken = std::make_shared<std::atomic<bool>>(false);
};

/// A graph under construction, shared by the Graph and its Stage handles.
struct GraphData {
  std::vector<GraphNode> nodes;
  std::vector<SubscriptionPlan> links;
  std::uint64_t owner = new_owner_tag();  ///< its Stages' owner(); the compiled Engine's too
  std::vector<Claim> claims;
};

/// The engine's plan of `g`'s stages and subscriptions, with what fusion needs to know
/// (engine/DESIGN.md 10): whether a stage may be fused, and whether its dispatcher is the
/// demand one.
inline Plan plan_of(const GraphData& g) {
  Plan plan;
  for (auto& n : g.nodes) {
    plan.stages.push_back(n.stage);
    plan.stages.back().fuse = n.options.fuse;
    plan.stages.back().demand_dispatcher = n.dispatcher == "demand";
  }
  plan.subscriptions = g.links;
  return plan;
}

/// Claims every claim of `g` for a new run, or none: throws std::logic_error with the reason of
/// the first one taken. Gives them back when destroyed, unless dismissed (the run started).
class RunClaims {
 public:
  explicit RunClaims(const GraphData& g) {
    for (auto& c : g.claims) {
      if (c.taken->exchange(true)) {  // seq_cst: pairs with the store giving it back
        give_back();
        throw std::logic_error("sluice: " + c.why);
      }
      held_.push_back(c.taken.get());
    }
  }
  RunClaims(const RunClaims&) = delete;
  RunClaims& operator=(const RunClaims&) = delete;
  ~RunClaims() { give_back(); }
  void dismiss() { held_.clear(); }

 private:
  void give_back() {
    for (auto* t : held_)
      t->store(false);
    held_.clear();
  }
  std::vector<std::atomic<bool>*> held_;
};

/// The most events a push source or a stream may hold (a std::counting_semaphore counts them;
/// the same bound as max_demand's).
inline constexpr std::int64_t max_capacity = std::int64_t{1} << 30;

/// The problem with a push source's or a stream's capacity, if any.
inline std::optional<std::string> capacity_problem(const std::string& stage,
                                                   std::int64_t capacity) {
  if (capacity < 1)
    return "stage '" + stage +
           "': option capacity must be at least 1, got: " + std::to_string(capacity);
  if (capacity > max_capacity)
    return "stage '" + stage +
           "': option capacity must be at most 2^30, got: " + std::to_string(capacity);
  return std::nullopt;
}

/// The problem with a stream's capacity when its producer has `instances` instances (it asks
/// each of them for a part of the capacity: at least one event each), if any.
inline std::optional<std::string> stream_capacity_problem(const std::string& stream,
                                                          std::int64_t capacity,
                                                          const std::string& producer,
                                                          std::size_t instances) {
  if (auto p = capacity_problem(stream, capacity)) return p;
  if (static_cast<std::uint64_t>(capacity) < instances)
    return "stage '" + stream + "': option capacity must be at least " + std::to_string(instances) +
           ", the instances of '" + producer +
           "' (the stream asks each of them for a part of it), got: " + std::to_string(capacity);
  return std::nullopt;
}

}  // namespace sluice::detail
