#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace sluice::detail {

/// An append-only array whose elements never move: segments of 64, 128, 256... slots. One
/// thread at a time appends; any thread reads without a lock while it grows. Holds a run's
/// cells and its stages (Run::attach adds to both while the run goes on).
///
/// Synchronization
///   Writers : one thread at a time (Engine::start, then Run::attach under the run's mutex) ->
///             the segments and size_.
///   H1      : a writer stores the element (and its segment), then size_ (release); a reader
///             that loads size_ (acquire) sees every element below it. A reader that holds an
///             index from an edge or a command got it through a release/acquire chain that
///             began after the element was stored, so it sees the element without reading size_.
///   Progress: wait-free reads; elements live until the table is destroyed.
template <class T>
class StableTable {
 public:
  StableTable() = default;
  StableTable(const StableTable&) = delete;
  StableTable& operator=(const StableTable&) = delete;
  ~StableTable() {
    for (auto& s : segments_)
      delete[] s.load(std::memory_order_relaxed);  // the owner, after every reader
  }

  /// The index the next element added will have. Writer only.
  std::uint32_t next_index() const noexcept {
    return static_cast<std::uint32_t>(size_.load(std::memory_order_relaxed));  // writer only
  }
  /// Makes room for `more` elements, so the next `more` add() calls do not allocate. Writer only.
  void reserve(std::size_t more) {
    const auto n = size_.load(std::memory_order_relaxed);  // writer only
    for (std::size_t i = n; i < n + more; ++i) {
      const auto k = locate(i).first;
      if (segments_[k].load(std::memory_order_relaxed) == nullptr)  // writer only
        segments_[k].store(new T[first << k]{},
                           std::memory_order_relaxed);  // published by add's release (H1)
    }
  }
  /// Appends an element (its index is next_index()). Writer only.
  void add(T value) {
    const auto i = size_.load(std::memory_order_relaxed);  // writer only
    reserve(1);
    slot(i) = std::move(value);
    size_.store(i + 1, std::memory_order_release);  // H1
  }
  /// The elements published so far. Any thread.
  std::size_t size() const noexcept { return size_.load(std::memory_order_acquire); }  // H1
  /// Any thread, for an index below size() or handed over as H1 says.
  const T& operator[](std::size_t i) const noexcept { return slot(i); }

 private:
  static constexpr std::size_t first = 64;  // segment k holds first << k slots
  static constexpr std::size_t max_segments = 26;

  static std::pair<std::size_t, std::size_t> locate(std::size_t i) noexcept {
    const auto k = static_cast<std::size_t>(std::bit_width(i / first + 1) - 1);
    return {k, i - first * ((std::size_t{1} << k) - 1)};
  }
  T& slot(std::size_t i) const noexcept {
    const auto [k, offset] = locate(i);
    return segments_[k].load(std::memory_order_relaxed)[offset];  // ordered by H1
  }

  std::array<std::atomic<T*>, max_segments> segments_{};
  std::atomic<std::size_t> size_{0};
};

}  // namespace sluice::detail
