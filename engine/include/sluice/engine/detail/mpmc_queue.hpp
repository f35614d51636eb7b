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

namespace sluice::detail {

/// Lock-free multi-producer queue. Used for control messages that reach a cell from threads
/// outside the engine (infos, demand-mode changes); never on the event path.
template <class T>
using MpmcQueue = moodycamel::ConcurrentQueue<T>;

}  // namespace sluice::detail
