#pragma once

#include <any>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <sluice/engine/detail/assert.hpp>
#include <sluice/engine/detail/cell/cell_base.hpp>
#include <sluice/engine/detail/edge.hpp>
#include <sluice/engine/detail/names.hpp>
#include <sluice/engine/detail/plan.hpp>
#include <sluice/engine/dispatcher.hpp>
#include <sluice/engine/metrics.hpp>
#include <sluice/engine/options.hpp>

/// Turning a plan into a run's cells and edges: one path for the stages declared before the run
/// starts (Engine::start) and for those attached while it runs (Run::attach, engine/DESIGN.md 8).
namespace sluice::detail {

/// What a run keeps of each edge: the edge itself and how to read its metrics.
struct EdgeRecord {
  std::shared_ptr<void> edge;
  std::function<EdgeMetrics()> metrics;
};

/// A stage of a run: its plan and its cells' numbers in the run's table.
struct RunStage {
  StagePlan plan;
  std::vector<std::uint32_t> cells;
};

/// One side of a subscription being wired: the stage and its cells (those of an attached stage
/// are not in the run's table yet, so the cells are passed themselves).
struct WireEnd {
  const StagePlan& stage;
  const std::vector<std::uint32_t>& numbers;
  std::function<CellBase&(std::size_t instance)> cell;
};

/// A subscribe command for a running producer cell: posted once the new cells are live.
struct PendingSubscribe {
  std::uint32_t producer_cell;
  ExternalCommand command;
};

/// The edges of one subscription, typed by its event.
class EdgeFactory {
 public:
  virtual ~EdgeFactory() = default;
  /// One edge's rings once the stream has gone round them (they are touched as they are used).
  virtual std::size_t ring_bytes(const SubscriptionOptions& o) const noexcept = 0;
  /// Wires a subscription: an edge from every producer instance to every consumer instance,
  /// recorded in `edges`. Each consumer's end is connected now (its cell has not run yet). Each
  /// producer's end is connected now when `pending` is null (the run has not started), else
  /// handed back as a subscribe command for the running producer (Run::attach).
  virtual void wire(const WireEnd& producer, const WireEnd& consumer,
                    const SubscriptionOptions& options, std::vector<EdgeRecord>& edges,
                    std::vector<PendingSubscribe>* pending) const = 0;
};

template <class Event>
class SubscriptionEdges final : public EdgeFactory {
 public:
  std::size_t ring_bytes(const SubscriptionOptions& o) const noexcept override {
    return Edge<Event>::ring_bytes(static_cast<std::size_t>(o.max_demand),
                                   o.demand == DemandControl::manual);
  }
  void wire(const WireEnd& producer, const WireEnd& consumer, const SubscriptionOptions& options,
            std::vector<EdgeRecord>& edges, std::vector<PendingSubscribe>* pending) const override {
    SLUICE_ASSERT(producer.stage.out == typeid(Event) && consumer.stage.in == typeid(Event),
                  "the plan was validated: both ends carry this event type");
    const auto& dispatcher = *producer.stage.dispatcher;
    for (std::size_t ci = 0; ci < consumer.stage.instances; ++ci) {
      const SubscriptionOptions eo = edge_options(options, dispatcher, ci);
      const auto cname = instance_name(consumer.stage.name, consumer.stage.instances, ci);
      auto& in = *static_cast<InPort<Event>*>(consumer.cell(ci).in_port());
      for (std::size_t pi = 0; pi < producer.stage.instances; ++pi) {
        const auto pname = instance_name(producer.stage.name, producer.stage.instances, pi);
        auto* edge = make(producer.numbers[pi], consumer.numbers[ci], pname, cname, eo, edges);
        in.add_subscription(edge, pname, eo);
        if (pending == nullptr)
          static_cast<OutPort<Event>*>(producer.cell(pi).out_port())
              ->add_subscriber(edge, cname, eo, ci);
        else
          pending->push_back({producer.numbers[pi],
                              {ExternalCommand::Kind::subscribe,
                               std::any(LateSubscriber<Event>{edge, cname, eo, ci})}});
      }
    }
  }

 private:
  static Edge<Event>* make(std::uint32_t producer_cell, std::uint32_t consumer_cell,
                           const std::string& producer, const std::string& consumer,
                           const SubscriptionOptions& eo, std::vector<EdgeRecord>& edges) {
    auto edge =
        std::make_shared<Edge<Event>>(static_cast<std::size_t>(eo.max_demand), producer_cell,
                                      consumer_cell, eo.demand == DemandControl::manual);
    EdgeRecord r;
    r.metrics = [e = edge.get(), producer, consumer,
                 part = eo.partition ? eo.partition->to_string() : std::string()] {
      EdgeMetrics m;
      m.producer = producer;
      m.consumer = consumer;
      m.sent = e->pushed_approx();
      m.received = e->consumed_approx();
      m.untaken = e->untaken_approx();
      m.asked = e->asked_approx();
      m.manual_demand = e->manual();
      m.queued = e->queued_approx();
      m.partition = part;
      return m;
    };
    auto* raw = edge.get();
    r.edge = std::move(edge);
    edges.push_back(std::move(r));
    return raw;
  }
};

/// A subscription's plan for `Event`: `consumer` is stage `consumer_stage` of the plan. A
/// consumer whose handler asks by hand gets manual demand (handler::AsksByHand).
template <class Event>
SubscriptionPlan make_subscription_plan(std::size_t producer, std::size_t consumer,
                                        const StagePlan& consumer_stage,
                                        SubscriptionOptions options) {
  static const auto edges = std::make_shared<const SubscriptionEdges<Event>>();
  if (consumer_stage.asks_by_hand) options.demand = DemandControl::manual;
  return {producer, consumer, std::move(options), typeid(Event), edges};
}

}  // namespace sluice::detail
