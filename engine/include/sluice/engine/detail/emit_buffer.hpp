#pragma once

#include <algorithm>
#include <cstddef>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>

namespace sluice::detail {

/// Where a callback's emitted events wait for dispatch: a growable array reused from call to
/// call. Its append is the hottest line of a producer (one per event), so the fast path is a
/// compare and a store through raw pointers; growing is out of line.
template <class T>
class EmitBuffer {
 public:
  EmitBuffer() = default;
  EmitBuffer(const EmitBuffer&) = delete;
  EmitBuffer& operator=(const EmitBuffer&) = delete;
  ~EmitBuffer() {
    clear();
    if (begin_) std::allocator<T>{}.deallocate(begin_, static_cast<std::size_t>(cap_ - begin_));
  }

  void push_back(T&& v) {
    if (cur_ == cap_) [[unlikely]]
      grow();
    std::construct_at(cur_, std::move(v));
    ++cur_;
  }
  void push_back(const T& v) { push_back(T(v)); }

  /// Appends the values `next()` yields (each a std::optional<T>; empty: no more), at most `max`;
  /// returns how many. The write position stays in a local for the loop: push_back per event
  /// must reload it after every store (an event store may alias it, or the generator's state),
  /// which puts a store-to-load round trip on every event. What was appended stays if next()
  /// throws.
  template <class G>
  std::size_t append_generated(std::size_t max, G& next) {
    std::size_t done = 0;
    while (done < max) {
      if (cur_ == cap_) grow();
      T* p = cur_;
      T* const end = p + std::min(max - done, static_cast<std::size_t>(cap_ - p));
      const Commit commit{*this, p};
      for (; p != end; ++p) {
        auto e = next();
        if (!e) {
          done += static_cast<std::size_t>(p - cur_);
          return done;
        }
        std::construct_at(p, std::move(*e));
      }
      done += static_cast<std::size_t>(p - cur_);
    }
    return done;
  }

  /// Appends the events of `in` that `keep` accepts, in order: moved from a mutable span, copied
  /// from a const one. Returns how many. Trivially copyable events are stored unconditionally
  /// and the write position advances by the predicate's result: no branch on it (the store past
  /// the last kept event lands in reserved capacity and needs no destruction). What was appended
  /// stays if keep() throws.
  template <class E, class P>
  std::size_t append_kept(std::span<E> in, P& keep) {
    while (static_cast<std::size_t>(cap_ - cur_) < in.size())
      grow();
    T* p = cur_;
    const Commit commit{*this, p};
    if constexpr (std::is_trivially_copyable_v<T>) {
      for (auto& e : in) {
        const bool k = keep(std::as_const(e));
        std::construct_at(p, e);
        p += k ? 1 : 0;
      }
    } else {
      for (auto& e : in)
        if (keep(std::as_const(e))) {
          if constexpr (std::is_const_v<E>)
            std::construct_at(p, e);
          else
            std::construct_at(p, std::move(e));
          ++p;
        }
    }
    return static_cast<std::size_t>(p - cur_);
  }

  std::size_t size() const noexcept { return static_cast<std::size_t>(cur_ - begin_); }
  bool empty() const noexcept { return cur_ == begin_; }
  T* data() noexcept { return begin_; }
  T& operator[](std::size_t i) noexcept { return begin_[i]; }
  operator std::span<T>() noexcept { return {begin_, size()}; }

  /// Destroys the content; keeps the capacity.
  void clear() noexcept {
    std::destroy(begin_, cur_);
    cur_ = begin_;
  }

 private:
  /// Stores a loop's local write position back into cur_ on every exit, exceptions included.
  struct Commit {
    EmitBuffer& b;
    T*& p;
    ~Commit() { b.cur_ = p; }
  };

  [[gnu::noinline]] void grow() {
    const std::size_t old = static_cast<std::size_t>(cap_ - begin_);
    const std::size_t cap = old == 0 ? 256 : old * 2;
    T* fresh = std::allocator<T>{}.allocate(cap);
    const std::size_t n = size();
    for (std::size_t i = 0; i < n; ++i) {
      std::construct_at(fresh + i, std::move(begin_[i]));
      std::destroy_at(begin_ + i);
    }
    if (begin_) std::allocator<T>{}.deallocate(begin_, old);
    begin_ = fresh;
    cur_ = fresh + n;
    cap_ = fresh + cap;
  }

  T* begin_ = nullptr;
  T* cur_ = nullptr;
  T* cap_ = nullptr;
};

}  // namespace sluice::detail
