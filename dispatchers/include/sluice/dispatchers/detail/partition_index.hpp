#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include <sluice/dispatchers/partitions.hpp>
#include <sluice/engine/options.hpp>

namespace sluice::detail {

/// Where each partition of a partition dispatcher is (its slot, 0..n-1), by index or by name,
/// and what a hash's result names.
class PartitionIndex {
 public:
  PartitionIndex() = default;
  explicit PartitionIndex(const Partitions& partitions) : partitions_(partitions) {
    for (std::size_t i = 0; i < partitions_.size(); ++i) {
      const Partition& p = partitions_[i];
      if (p.is_index())
        by_index_.emplace(p.index(), i);
      else
        by_name_.emplace(p.name(), i);
    }
  }

  std::size_t slot(const Partition& p) const {
    if (p.is_index()) {
      auto it = by_index_.find(p.index());
      if (it != by_index_.end()) return it->second;
    } else {
      auto it = by_name_.find(p.name());
      if (it != by_name_.end()) return it->second;
    }
    throw option_error("option partition must be one of " + partitions_.to_string() +
                       ", got: " + p.to_string());
  }

  /// The slot of partition index `i` (partitions given as a list of integers) or of partition
  /// `p` (a name, or an index). Throws std::runtime_error for a partition it does not have (and
  /// unknown_index always does). The dispatcher resolves an index of partitions given as a count
  /// itself, inline in its loop; these are calls.
  [[gnu::noinline]] std::ptrdiff_t resolve_index(std::int64_t i) const {
    if (auto it = by_index_.find(i); it != by_index_.end())
      return static_cast<std::ptrdiff_t>(it->second);
    unknown_index(i);
  }
  [[noreturn, gnu::noinline]] void unknown_index(std::int64_t i) const {
    throw unknown(std::to_string(i));
  }
  [[gnu::noinline]] std::ptrdiff_t resolve_partition(const Partition& p) const {
    try {
      return static_cast<std::ptrdiff_t>(slot(p));
    } catch (const option_error&) {
      throw unknown(p.to_string());
    }
  }

 private:
  std::runtime_error unknown(const std::string& what) const {
    return std::runtime_error("partition dispatcher: the hash computed unknown partition " + what +
                              " for an event (partitions: " + partitions_.to_string() + ")");
  }

  Partitions partitions_{std::int64_t{0}};
  std::unordered_map<std::int64_t, std::size_t> by_index_;
  std::unordered_map<std::string, std::size_t> by_name_;
};

}  // namespace sluice::detail
