#pragma once

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <sluice/engine/errors.hpp>
#include <sluice/engine/options.hpp>

namespace sluice {

/// The partitions of a partition dispatcher: a count n (partitions 0..n-1) or a list of names
/// (integers or strings, GenStage's `partitions: [:odd, :even]`).
class Partitions {
 public:
  template <std::integral I>
  Partitions(I count) : count_(static_cast<std::int64_t>(count)) {  // NOLINT: implicit by design
    if (count_ > max_partitions) return;  // refused by the dispatcher: not materialised
    for (std::int64_t i = 0; i < count_; ++i)
      names_.emplace_back(i);
  }
  Partitions(std::vector<Partition> names)  // NOLINT: implicit by design
      : names_(std::move(names)), count_(static_cast<std::int64_t>(names_.size())), listed_(true) {}

  std::size_t size() const noexcept { return names_.size(); }
  const Partition& operator[](std::size_t i) const { return names_[i]; }
  /// Given as a count: partition i is named i.
  bool dense() const noexcept { return !listed_; }
  bool all_integers() const {
    return std::all_of(names_.begin(), names_.end(), [](auto& p) { return p.is_index(); });
  }
  std::int64_t requested_count() const noexcept { return count_; }
  /// "0, 1, 2" or "'odd', 'even'".
  std::string to_string() const {
    std::string s;
    for (std::size_t i = 0; i < names_.size(); ++i)
      s += (i ? ", " : "") + names_[i].to_string();
    return s;
  }

 private:
  std::vector<Partition> names_;
  std::int64_t count_ = 0;
  bool listed_ = false;
};

struct PartitionDispatcherOptions {
  /// A partition's queue of events beyond its consumer's demand (GenStage: no bound). While a
  /// subscribed partition queues this many, the dispatcher holds back upstream demand
  /// (back-pressure: nothing is dropped); a partition without a subscriber keeps this many.
  std::int64_t queue_size = default_producer_buffer_size;
  /// Which events the full queue of a partition without a subscriber keeps; the others are
  /// dropped, counted and passed to the producer's handle_discarded hook.
  BufferKeep queue_keep = BufferKeep::last;
};

/// Selects the default hash: std::hash<Event>, mixed, modulo the number of partitions.
struct DefaultPartitionHash {};

/// Refuses invalid partition dispatcher options (option_error naming the option).
/// `default_hash`: no hash was given, so the partitions must be integers.
inline void check_partition_options(const Partitions& partitions,
                                    const PartitionDispatcherOptions& options, bool default_hash) {
  if (partitions.requested_count() < 1)
    throw option_error("option partitions must name at least 1 partition, got: " +
                       std::to_string(partitions.requested_count()));
  if (partitions.requested_count() > max_partitions)
    throw option_error("option partitions must name at most " + std::to_string(max_partitions) +
                       " partitions, got: " + std::to_string(partitions.requested_count()));
  if (options.queue_size < 1)
    throw option_error("option queue_size must be greater than 0, got: " +
                       std::to_string(options.queue_size));
  if (default_hash && !partitions.all_integers())
    throw option_error(
        "option hash is required when partitions are not integers (got partitions: " +
        partitions.to_string() + ")");
  std::set<std::int64_t> indices;
  std::set<std::string> names;
  for (std::size_t i = 0; i < partitions.size(); ++i) {
    const Partition& p = partitions[i];
    const bool fresh =
        p.is_index() ? indices.insert(p.index()).second : names.insert(p.name()).second;
    if (!fresh)
      throw option_error("option partitions: partition " + p.to_string() + " is listed twice");
  }
}

}  // namespace sluice
