#pragma once

// The only file that names moodycamel. Three install layouts exist:
//   Debian libconcurrentqueue-dev : <concurrentqueue/concurrentqueue.h>
//   upstream `cmake --install`     : <moodycamel/concurrentqueue.h>
//   vendored / add_subdirectory    : "concurrentqueue.h"
#if __has_include(<concurrentqueue/concurrentqueue.h>)
#include <concurrentqueue/concurrentqueue.h>
#elif __has_include(<moodycamel/concurrentqueue.h>)
#include <moodycamel/concurrentqueue.h>
#else
#include <concurrentqueue.h>
#endif

namespace sluice {

using MpmcProducerToken = moodycamel::ProducerToken;

/// Lock-free multi-producer queue (moodycamel's). Used where threads outside the engine meet it:
/// commands to a cell (infos, demand-mode changes), a push source's input and a stream's output
/// (the application's edges); never between two cells.
template <class T>
using MpmcQueue = moodycamel::ConcurrentQueue<T>;

}  // namespace sluice
