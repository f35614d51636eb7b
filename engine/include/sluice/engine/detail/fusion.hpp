#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include <sluice/engine/detail/assert.hpp>
#include <sluice/engine/detail/cell/cell.hpp>
#include <sluice/engine/detail/fused_steps.hpp>
#include <sluice/engine/detail/plan.hpp>

/// Fusion, a pass over the plan when a run starts (engine/DESIGN.md 10): a chain of function
/// stages and the consumer it ends in become one cell, which calls them in turn on each batch.
namespace sluice::detail {

/// One fused group, as its cell needs it: the members (head first) and the host, with the
/// subscriptions that tie them.
struct FusionGroup {
  std::vector<StagePlan> members;
  StagePlan host;
  FusedSubscription subscription;
  std::int64_t host_chunk = 1;  ///< the host's batches: max_demand - min_demand
};

inline std::unique_ptr<FusedStepBase> CellFactory::member_step(
    const StagePlan&, std::unique_ptr<FusedStepBase>) const {
  SLUICE_ASSERT(false, "the fusion pass asks only a fusible stage");
  return nullptr;
}
inline std::unique_ptr<FusedStepBase> CellFactory::host_step(std::int64_t) const {
  SLUICE_ASSERT(false, "the fusion pass asks only a consumer to host");
  return nullptr;
}
inline std::shared_ptr<const CellFactory> CellFactory::group_cells(const FusionGroup&) const {
  SLUICE_ASSERT(false, "the fusion pass asks only a fusible stage to head a group");
  return nullptr;
}

/// The one cell of a group whose head consumes `In`: named after the host, it is the host's
/// cell (a consumer), and the members run inside it.
template <class In>
class FusedCells final : public CellFactory {
 public:
  explicit FusedCells(FusionGroup group) : group_(std::move(group)) {}

  std::vector<std::unique_ptr<CellBase>> make(RunCore& core, const StagePlan& stage,
                                              std::uint32_t first) const override {
    // Built from the host back to the head: each step takes the next one.
    auto step = group_.host.cells->host_step(group_.host_chunk);
    auto* host = dynamic_cast<FusedHost*>(step.get());
    SLUICE_ASSERT(host != nullptr, "a host step is a FusedHost");
    std::vector<const FusedCounters*> counters(group_.members.size());
    for (std::size_t i = group_.members.size(); i-- > 0;) {
      const auto& m = group_.members[i];
      step = m.cells->member_step(m, std::move(step));
      counters[i] = &member_counters(*step);
    }
    std::unique_ptr<FusedStep<In>> head(static_cast<FusedStep<In>*>(step.release()));
    std::vector<std::unique_ptr<CellBase>> cells;
    cells.push_back(std::make_unique<Cell<In, void, FusedHandler<In>>>(
        core, stage.name, 0, first,
        FusedHandler<In>(std::move(head), host, std::move(counters), group_.subscription),
        ProducerOptions{}, nullptr));
    return cells;
  }

 private:
  /// A member step's counters (every member step is a FunctionStep: it has them).
  static const FusedCounters& member_counters(const FusedStepBase& step) {
    const auto* c = dynamic_cast<const CountedStep*>(&step);
    SLUICE_ASSERT(c != nullptr, "a member step is a FunctionStep");
    return c->counters();
  }

  FusionGroup group_;
};

template <class In>
std::shared_ptr<const CellFactory> make_group_cells(const FusionGroup& group) {
  return std::make_shared<const FusedCells<In>>(group);
}

/// Where the pass finds a group: its stages, head first and host last, and the subscriptions
/// between them (the head's input first).
struct GroupShape {
  std::vector<std::size_t> stages;
  std::vector<std::size_t> links;
};

/// The groups of `plan` (engine/DESIGN.md 10, steps 1-3). A stage joins a group when:
/// 1. The host is a consumer with one instance and one subscription, demand automatic, that
///    may be fused (StageOptions::fuse).
/// 2. Walking up from it, each producer is a function stage (map, filter, flat_map) with one
///    instance, one subscription and one subscriber (the stage below it), a demand
///    dispatcher, not dynamic, that may be fused; the walk stops at the first that is not.
/// 3. The head's own producer does not share its batches (a broadcast's consumers read shared
///    events in place: a head must own its input). A group has at least one member.
inline std::vector<GroupShape> fusion_groups(const Plan& plan) {
  const auto n = plan.stages.size();
  std::vector<std::vector<std::size_t>> ins(n), outs(n);
  for (std::size_t i = 0; i < plan.subscriptions.size(); ++i) {
    ins[plan.subscriptions[i].consumer].push_back(i);
    outs[plan.subscriptions[i].producer].push_back(i);
  }
  auto one_input = [&](std::size_t s) {
    return ins[s].size() == 1 &&
           plan.subscriptions[ins[s][0]].options.demand == DemandControl::automatic;
  };
  auto member = [&](std::size_t s) {
    const auto& st = plan.stages[s];
    if (!st.fuse || st.instances != 1 || !st.cells->fusible() || st.producer.dynamic ||
        outs[s].size() != 1 || !one_input(s))
      return false;
    const auto& above = plan.stages[plan.subscriptions[ins[s][0]].producer];
    return above.dispatcher && !above.dispatcher->shares_events();
  };
  std::vector<GroupShape> groups;
  for (std::size_t h = 0; h < n; ++h) {
    const auto& host = plan.stages[h];
    if (host.kind != StageKind::consumer || !host.fuse || host.instances != 1 ||
        !host.cells->can_host() || !one_input(h))
      continue;
    GroupShape g;
    g.stages.push_back(h);
    for (auto link = ins[h][0]; member(plan.subscriptions[link].producer);) {
      const auto m = plan.subscriptions[link].producer;
      g.links.push_back(link);
      g.stages.push_back(m);
      link = ins[m][0];
    }
    if (g.stages.size() < 2) continue;
    g.links.push_back(ins[g.stages.back()][0]);
    std::reverse(g.stages.begin(), g.stages.end());
    std::reverse(g.links.begin(), g.links.end());
    groups.push_back(std::move(g));
  }
  return groups;
}

/// The plan a run is made of (steps 4-5): each group's host gets the group's cell factory and
/// takes the head's input type; each member is marked as run by the host, and the
/// subscriptions inside a group are dropped. The head's input subscription stays as declared:
/// wiring connects it to the host's cell.
inline Plan fuse(const Plan& plan) {
  Plan out = plan;
  std::vector<bool> inner(plan.subscriptions.size(), false);
  for (const auto& g : fusion_groups(plan)) {
    const auto h = g.stages.back();
    const auto& head_link = plan.subscriptions[g.links.front()];
    const auto& host_link = plan.subscriptions[g.links.back()];
    FusionGroup group;
    for (std::size_t i = 0; i + 1 < g.stages.size(); ++i)
      group.members.push_back(plan.stages[g.stages[i]]);
    group.host = plan.stages[h];
    group.subscription = {group.members.back().name,
                          host_link.options,
                          head_link.options.cancel,
                          plan.stages[head_link.producer].instances,
                          {}};
    for (std::size_t i = 1; i < g.links.size(); ++i)
      group.subscription.inner_cancel.push_back(plan.subscriptions[g.links[i]].options.cancel);
    group.host_chunk = host_link.options.max_demand - host_link.options.effective_min_demand();
    auto& host = out.stages[h];
    host.cells = group.members.front().cells->group_cells(group);
    host.in = group.members.front().in;
    host.consumes_const = false;
    for (std::size_t i = 0; i + 1 < g.stages.size(); ++i)
      out.stages[g.stages[i]].fused_into = h;
    for (std::size_t i = 1; i < g.links.size(); ++i)
      inner[g.links[i]] = true;
  }
  out.subscriptions.clear();
  for (std::size_t i = 0; i < plan.subscriptions.size(); ++i)
    if (!inner[i]) out.subscriptions.push_back(plan.subscriptions[i]);
  return out;
}

}  // namespace sluice::detail
