#pragma once

// The umbrella header: everything a user needs. (It lives in graph/ because graph sees every
// component; the fluent builder will join it here.)

#include <sluice/dispatchers/broadcast.hpp>
#include <sluice/dispatchers/demand.hpp>
#include <sluice/dispatchers/partition.hpp>
#include <sluice/engine/engine.hpp>
