#pragma once

// The umbrella header: everything a user needs (it lives in graph/, the layer that sees every
// component).

#include <sluice/dispatchers/broadcast.hpp>
#include <sluice/dispatchers/demand.hpp>
#include <sluice/dispatchers/partition.hpp>
#include <sluice/engine/engine.hpp>
#include <sluice/graph/graph.hpp>
#include <sluice/operators/batch.hpp>
#include <sluice/operators/map_blocking.hpp>
#include <sluice/operators/rate_limit.hpp>
#include <sluice/operators/take.hpp>
