#pragma once

#include <cstdio>
#include <cstdlib>

/// SLUICE_ASSERT(condition, "what must hold"): a precondition the engine relies on, checked where
/// SLUICE_ASSERTIONS is defined (the debug and sanitizer presets; CMake's SLUICE_ASSERTIONS option)
/// and compiled out otherwise (release). A failed one prints where and why, then aborts: it is a
/// bug in the library (or in a dispatcher), never bad input, which gets an exception.
#if defined(SLUICE_ASSERTIONS)
#define SLUICE_ASSERT(condition, why) \
  ((condition) ? static_cast<void>(0) \
               : ::sluice::detail::assertion_failed(#condition, why, __FILE__, __LINE__))
#else
#define SLUICE_ASSERT(condition, why) static_cast<void>(0)
#endif

namespace sluice::detail {
[[noreturn]] inline void assertion_failed(const char* condition, const char* why, const char* file,
                                          int line) noexcept {
  std::fprintf(stderr, "%s:%d: sluice assertion failed: %s (%s)\n", file, line, condition, why);
  std::abort();
}
}  // namespace sluice::detail
