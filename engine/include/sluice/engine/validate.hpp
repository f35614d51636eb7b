#pragma once

#include <sluice/engine/detail/validate.hpp>
#include <sluice/engine/plan.hpp>

/// The one validator of a plan (engine/DESIGN.md 8): Problem and Problems, and validate(), which
/// finds every problem of a whole plan at once. The engine's own declarations, Engine::start
/// and Run::attach use its parts.
namespace sluice {

using detail::Problem;
using detail::Problems;
using detail::validate;
/// The builder's words for options a stage cannot use.
using detail::function_cannot_ask;
using detail::producer_subscribes_to_nothing;

}  // namespace sluice
