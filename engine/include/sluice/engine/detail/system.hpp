#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

#include <sluice/engine/options.hpp>

/// What the engine asks of the operating system and the standard streams, compiled once in
/// engine/src/system.cpp so that no public header pulls <iostream> or an OS header into a user's
/// translation unit.
namespace sluice::detail {

/// This machine's physical memory in bytes (0: unknown).
std::uint64_t physical_memory() noexcept;

/// The logger of a run that was given none: one line per message on standard error.
std::function<void(LogLevel, std::string_view)> default_logger();

}  // namespace sluice::detail
