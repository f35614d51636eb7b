#include <iostream>

#include <sluice/engine/detail/system.hpp>

#include <unistd.h>

namespace sluice::detail {

std::uint64_t physical_memory() noexcept {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0)
    return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page);
#endif
  return 0;
}

std::function<void(LogLevel, std::string_view)> default_logger() {
  return [](LogLevel level, std::string_view msg) {
    static constexpr const char* names[] = {"info", "warning", "error"};
    std::cerr << "[sluice " << names[static_cast<int>(level)] << "] " << msg << '\n';
  };
}

}  // namespace sluice::detail
