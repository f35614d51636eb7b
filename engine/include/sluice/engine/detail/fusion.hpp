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

/// The one cell of a group whose head consumes `In` and whose host emits `Out` (void: a
/// consumer): named after the host, it is the host's cell, with its producer options and
/// dispatcher, and the members run inside it.
template <class In, class Out>
class FusedCells final : public CellFactory {
 public:
  explicit FusedCells(FusionGroup group) : group_(std::move(group)) {}

  std::vector<std::unique_ptr<CellBase>> make(RunCore& core, const StagePlan& stage,
                                              std::uint32_t first) const override {
    // Built from the host back to the head: each step takes the next one.
    auto step = group_.host.cells->host_step(group_.host_chunk);
    auto* host = dynamic_cast<FusedHost<Out>*>(step.get());
    SLUICE_ASSERT(host != nullptr, "a host step is a FusedHost of the host's output");
    std::vector<const FusedCounters*> counters(group_.members.size());
    for (std::size_t i = group_.members.size(); i-- > 0;) {
      const auto& m = group_.members[i];
      step = m.cells->member_step(m, std::move(step));
      counters[i] = &member_counters(*step);
    }
    std::unique_ptr<FusedStep<In>> head(static_cast<FusedStep<In>*>(step.release()));
    std::vector<std::unique_ptr<CellBase>> cells;
    cells.push_back(std::make_unique<Cell<In, Out, FusedHandler<In, Out>>>(
        core, stage.name, 0, first,
        FusedHandler<In, Out>(std::move(head), host, std::move(counters), group_.subscription),
        stage.producer, instance_dispatcher<Out>(stage)));
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

template <class In, class Out, class Handler>
std::shared_ptr<const CellFactory> group_cells_of(const FusionGroup& group) {
  if constexpr (!std::is_void_v<In> && !std::is_void_v<Out>) {
    if constexpr (FusibleHandler<Handler>)  // the head of a group ending in a consumer
      if (group.host.kind == StageKind::consumer)
        return std::make_shared<const FusedCells<In, void>>(group);
    if (group.host.kind == StageKind::producer_consumer)  // the host, a producer_consumer
      return std::make_shared<const FusedCells<In, Out>>(group);
  }
  SLUICE_ASSERT(false, "asked of a consumer host's head or of a producer_consumer host");
  return nullptr;
}

/// Where the pass finds a group: its stages, head first and host last, and the subscriptions
/// between them (the head's input first).
struct GroupShape {
  std::vector<std::size_t> stages;
  std::vector<std::size_t> links;
};

/// The stages of `plan`, each after every stage it feeds (Kahn's algorithm from the sinks; the
/// plan is acyclic, validation saw to it; a stage in a cycle would be left out).
inline std::vector<std::size_t> downstream_first(
    const Plan& plan, const std::vector<std::vector<std::size_t>>& ins,
    const std::vector<std::vector<std::size_t>>& outs) {
  const auto n = plan.stages.size();
  std::vector<std::size_t> left(n), order, ready;
  for (std::size_t s = 0; s < n; ++s)
    if ((left[s] = outs[s].size()) == 0) ready.push_back(s);
  while (!ready.empty()) {
    const auto s = ready.back();
    ready.pop_back();
    order.push_back(s);
    for (auto link : ins[s])
      if (--left[plan.subscriptions[link].producer] == 0)
        ready.push_back(plan.subscriptions[link].producer);
  }
  return order;
}

/// The groups of `plan` (engine/DESIGN.md 10, steps 1-4), found from the sinks upward:
/// 1. A host is a consumer or a producer_consumer with one instance and one subscription,
///    demand automatic, that may be fused (StageOptions::fuse) and has no restart policy (a
///    restart replaces one stage's handler; engine/DESIGN.md 12).
/// 2. Walking up from it, each producer joins as a member while it is a function stage (map,
///    filter, flat_map) with one instance, one subscription and one subscriber (the stage
///    below it), a demand dispatcher, not dynamic, that may be fused, has no restart policy,
///    and not already in a group, whose own subscription is permanent and whose subscriber's to it
///    is not temporary; under a producer_consumer host, only while it keeps the host's input type.
/// 3. The head's own producer does not share its batches (a broadcast's consumers read shared
///    events in place: a head must own its input). A group has at least one member.
/// 4. Hosts are taken downstream first, so a function stage joins the longest group it can.
inline std::vector<GroupShape> fusion_groups(const Plan& plan) {
  const auto n = plan.stages.size();
  std::vector<std::vector<std::size_t>> ins(n), outs(n);
  for (std::size_t i = 0; i < plan.subscriptions.size(); ++i) {
    ins[plan.subscriptions[i].consumer].push_back(i);
    outs[plan.subscriptions[i].producer].push_back(i);
  }
  std::vector<bool> used(n, false);
  auto one_input = [&](std::size_t s) {
    return ins[s].size() == 1 &&
           plan.subscriptions[ins[s][0]].options.demand == DemandControl::automatic;
  };
  auto member = [&](std::size_t s, const StagePlan& host) {
    const auto& st = plan.stages[s];
    if (used[s] || !st.fuse || !st.demand_dispatcher || st.instances != 1 || !st.cells->fusible() ||
        st.producer.dynamic || outs[s].size() != 1 || !one_input(s) ||
        st.restart.restart != Restart::never)
      return false;
    if (host.kind == StageKind::producer_consumer && (st.in != host.in || st.out != host.in))
      return false;
    // Below it, a temporary subscription would let the stages under a failed member go on
    // (a cell of their own would finish normally, delivering what they hold): not fused.
    if (plan.subscriptions[outs[s][0]].options.cancel == CancelMode::temporary) return false;
    // Its own input permanent: a shutdown or a failure above stops it, as it stops the whole
    // cell (under another mode it would finish normally, and the stages below with it).
    if (plan.subscriptions[ins[s][0]].options.cancel != CancelMode::permanent) return false;
    const auto& above = plan.stages[plan.subscriptions[ins[s][0]].producer];
    return above.dispatcher && !above.dispatcher->shares_events();
  };
  std::vector<GroupShape> groups;
  for (const auto h : downstream_first(plan, ins, outs)) {
    const auto& host = plan.stages[h];
    if (used[h] || host.kind == StageKind::producer || !host.fuse || host.instances != 1 ||
        !host.cells->can_host() || !one_input(h) || host.restart.restart != Restart::never)
      continue;
    GroupShape g;
    g.stages.push_back(h);
    for (auto link = ins[h][0]; member(plan.subscriptions[link].producer, host);) {
      const auto m = plan.subscriptions[link].producer;
      g.links.push_back(link);
      g.stages.push_back(m);
      link = ins[m][0];
    }
    if (g.stages.size() < 2) continue;
    g.links.push_back(ins[g.stages.back()][0]);
    std::reverse(g.stages.begin(), g.stages.end());
    std::reverse(g.links.begin(), g.links.end());
    for (auto st : g.stages)
      used[st] = true;
    groups.push_back(std::move(g));
  }
  return groups;
}

/// The plan a run is made of (steps 5-6): each group's host gets the group's cell factory and
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
    group.subscription = {group.members.back().name, host_link.options,
                          plan.stages[head_link.producer].instances};
    group.host_chunk = host_link.options.max_demand - host_link.options.effective_min_demand();
    auto& host = out.stages[h];
    // The stage that knows both of the cell's types (DESIGN.md 10, step 5).
    host.cells = (group.host.kind == StageKind::consumer ? group.members.front() : group.host)
                     .cells->group_cells(group);
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
