#pragma once

#include <cstddef>

namespace sluice::detail {

/// The one cache-line constant. Not std::hardware_destructive_interference_size: GCC 12 warns
/// when it is used in a header (-Winterference-size) and Clang 14 + libstdc++ lacks it.
inline constexpr std::size_t cache_line_size = 64;

}  // namespace sluice::detail
