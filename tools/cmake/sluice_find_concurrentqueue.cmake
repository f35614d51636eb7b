# moodycamel ConcurrentQueue: upstream installs a CMake config; Debian ships headers only.
find_package(concurrentqueue CONFIG QUIET)
if(NOT TARGET concurrentqueue::concurrentqueue)
  find_path(SLUICE_CQ_INCLUDE concurrentqueue/concurrentqueue.h REQUIRED)
  add_library(concurrentqueue::concurrentqueue INTERFACE IMPORTED)
  target_include_directories(concurrentqueue::concurrentqueue SYSTEM INTERFACE "${SLUICE_CQ_INCLUDE}")
endif()
