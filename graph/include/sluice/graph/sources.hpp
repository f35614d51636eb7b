#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <ranges>
#include <type_traits>
#include <utility>

#include <sluice/engine/context.hpp>

namespace sluice {

namespace detail {

template <class R>
struct RangeSource {
  using Out = std::ranges::range_value_t<R>;
  static constexpr const char* what = "from_range";
  static constexpr bool single_instance = true;
  std::shared_ptr<R> range;  // shared by copies: each run starts its own iteration
  std::optional<std::ranges::iterator_t<R>> it;
  void handle_demand(std::size_t n, Context<Out>& ctx) {
    if (!it) it = std::ranges::begin(*range);
    const auto end = std::ranges::end(*range);
    for (std::size_t i = 0; i < n && *it != end; ++i, ++*it)
      ctx.emit(Out(**it));
    if (*it == end) ctx.finish();
  }
};

template <class O, class F>
struct GeneratorSource {
  using Out = O;
  static constexpr const char* what = "from_generator";
  static constexpr bool single_instance = false;
  std::optional<F> f;
  void handle_demand(std::size_t n, Context<Out>& ctx) {
    std::size_t got = 0;
    if constexpr (std::is_nothrow_move_constructible_v<F> && sizeof(F) <= 64) {
      // Worked on in a local, the generator's state stays in registers: the emitted events'
      // stores cannot alias it.
      F g = std::move(*f);
      try {
        got = ctx.emit_generated(n, g);
      } catch (...) {
        f.emplace(std::move(g));
        throw;
      }
      f.emplace(std::move(g));
    } else {
      got = ctx.emit_generated(n, *f);
    }
    if (got < n) ctx.finish();
  }
};

}  // namespace detail

/// Makes a source that emits the elements of `range` in order, exactly as demand asks
/// (GenStage's from_enumerable), then finishes. The range is kept (moved in) by the graph; every
/// run iterates it from the start.
template <std::ranges::forward_range R>
auto from_range(R&& range) {
  using Stored = std::remove_cvref_t<R>;
  return detail::RangeSource<Stored>{std::make_shared<Stored>(std::forward<R>(range)), {}};
}

/// Makes a source from a callable returning std::optional<T>: each call gives the next event;
/// an empty optional ends the stream. Each run (and each instance) gets its own copy of `f`.
template <class F>
requires requires(F& f) {
  f().has_value();
}
auto from_generator(F f) {
  using Out = typename std::invoke_result_t<F&>::value_type;
  return detail::GeneratorSource<Out, F>{std::move(f)};
}

}  // namespace sluice
