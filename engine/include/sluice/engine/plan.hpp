#pragma once

#include <sluice/engine/detail/plan.hpp>
#include <sluice/engine/detail/wiring.hpp>

/// The plan: a graph before it runs, as plain data (engine/DESIGN.md 8). A builder writes it
/// (sluice::Graph does), validate.hpp checks it, and an Engine made from it runs it.
namespace sluice {

using detail::Plan;
using detail::StagePlan;
using detail::SubscriptionPlan;
/// A stage's plan for a handler: make_stage_plan<In, Out>(name, kind, instances, producer
/// options, handler, dispatcher factory, what the factory said).
using detail::make_stage_plan;
/// A subscription's plan for its event type: make_subscription_plan<Event>(producer, consumer,
/// the consumer's StagePlan, options).
using detail::make_subscription_plan;
/// Gives a stage the dispatchers a factory makes (and the one validation asks).
using detail::set_dispatcher;

}  // namespace sluice
