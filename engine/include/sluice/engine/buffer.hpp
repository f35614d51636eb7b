#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <utility>

#include <sluice/engine/fifo.hpp>
#include <sluice/engine/options.hpp>

namespace sluice {

/// Events held beyond demand, in order: a producer's buffer, and each partition's queue of a
/// partition dispatcher. A Fifo with GenStage's bound (a capacity and which events a full
/// buffer keeps) and info markers (an info waits behind the events buffered before it).
/// Single-threaded: the owning cell's (or dispatcher's) thread only.
template <class T>
class Buffer {
 public:
  /// Appends `events` (moved from), keeping at most `capacity` in all: `first` keeps what is
  /// already here and drops the newest, `last` drops the oldest (the buffer's front, then the
  /// front of `events`). Each dropped run is passed to `drop(std::span<T>)` before it is
  /// destroyed. Infos whose events were all dropped become passed (release_passed).
  template <class Drop>
  void push(std::span<T> events, std::uint64_t capacity, BufferKeep keep, Drop&& drop) {
    if (events.empty()) return;
    if (keep == BufferKeep::first) {
      const auto space = capacity > size() ? capacity - size() : 0;
      const auto kept = static_cast<std::size_t>(std::min<std::uint64_t>(space, events.size()));
      fifo_.append(events.first(kept));
      if (kept < events.size()) drop(events.subspan(kept));
      return;
    }
    if (events.size() >= capacity) {
      drop_front(size(), drop);
      const auto over = static_cast<std::size_t>(events.size() - capacity);
      if (over > 0) drop(events.first(over));
      events = events.subspan(over);
    } else if (size() + events.size() > capacity) {
      drop_front(size() + events.size() - capacity, drop);
    }
    fifo_.append(events);
  }
  /// Appends without a bound.
  void append(std::span<T> events) { fifo_.append(events); }

  /// Drops the `n` oldest events, passing each contiguous run to `drop` first.
  template <class Drop>
  void drop_front(std::uint64_t n, Drop&& drop) {
    while (n > 0 && !fifo_.empty()) {
      auto run = fifo_.front_span();
      const auto m = static_cast<std::size_t>(std::min<std::uint64_t>(run.size(), n));
      drop(run.first(m));
      fifo_.pop_front(m);
      n -= m;
    }
  }

  /// Puts an info marker behind every event buffered now.
  void mark(std::uint64_t token) { markers_.push_back({fifo_.pushed_total(), token}); }
  bool has_markers() const noexcept { return !markers_.empty(); }

  /// The front run: at most `n` events, contiguous, and never past the next marker (so an info
  /// is released between the events before it and those after it).
  std::span<T> front_run(std::uint64_t n) {
    auto m = std::min<std::uint64_t>(fifo_.size(), n);
    if (!markers_.empty()) m = std::min(m, markers_.front().position - fifo_.popped_total());
    return fifo_.front(static_cast<std::size_t>(m));
  }
  void pop_front(std::size_t n) noexcept { fifo_.pop_front(n); }

  /// Passes to `release(token)`, in order, every info whose events have all left (sent or
  /// dropped).
  template <class Release>
  void release_passed(Release&& release) {
    while (!markers_.empty() && markers_.front().position <= fifo_.popped_total()) {
      const auto token = markers_.front().token;
      markers_.pop_front();
      release(token);
    }
  }

  /// Passes every info to `release(token)`, in order, whatever is still buffered (a buffer
  /// nobody will send from: a partition without a subscriber).
  template <class Release>
  void release_all(Release&& release) {
    while (!markers_.empty()) {
      const auto token = markers_.front().token;
      markers_.pop_front();
      release(token);
    }
  }

  std::size_t size() const noexcept { return fifo_.size(); }
  bool empty() const noexcept { return fifo_.empty(); }
  /// Destroys the events (markers stay, now passed).
  void clear() noexcept { fifo_.clear(); }

 private:
  struct Marker {
    std::uint64_t position;  // passed once the buffer has popped this many events in all
    std::uint64_t token;
  };
  Fifo<T> fifo_;
  std::deque<Marker> markers_;
};

}  // namespace sluice
