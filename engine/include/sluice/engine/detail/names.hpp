#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace sluice::detail {

/// A fresh tag telling apart the stages of different engines and graphs (StageRef::owner, the
/// builder Stage's owner()).
inline std::uint64_t new_owner_tag() {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);  // only uniqueness matters: no ordering
}
/// The owner an Engine made from a graph takes (the graph's, so its stages are accepted).
struct OwnerTag {
  std::uint64_t value;
};

/// `s` with its control characters escaped (\n, \r, \t, \xNN): stage names in one-line reports.
inline std::string escape_controls(const std::string& s) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u != 0x7f) {
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 0xf];
    }
  }
  return out;
}

/// One instance's name: the stage's, with "#i" when it has several.
inline std::string instance_name(const std::string& stage, std::size_t instances, std::size_t i) {
  return instances == 1 ? stage : stage + "#" + std::to_string(i);
}

}  // namespace sluice::detail
