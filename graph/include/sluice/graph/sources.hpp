#pragma once

#include <any>
#include <cstddef>
#include <memory>
#include <optional>
#include <ranges>
#include <type_traits>
#include <utility>

#include <sluice/engine/context.hpp>
#include <sluice/engine/time.hpp>

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

/// from_generator(f, {.poll_every = T}): what f has now goes out as demand asks; when f has
/// nothing yet, it is called again T later, on a timer (no thread waits for it), for as long as
/// there is demand. It ends when the run is drained or cancelled.
template <class O, class F>
struct PollingSource {
  using Out = O;
  static constexpr const char* what = "from_generator";
  static constexpr bool single_instance = false;
  struct Poll {};  // its timer's message
  std::optional<F> f;
  Duration every;
  std::size_t wanted = 0;  // demand f has not met yet
  bool polling = false;    // a Poll is pending
  bool draining = false;
  void handle_demand(std::size_t n, Context<Out>& ctx) {
    wanted += n;
    pull(ctx);
  }
  void handle_info(std::any& message, Context<Out>& ctx) {
    if (std::any_cast<Poll>(&message) == nullptr) return;
    polling = false;
    pull(ctx);
  }
  void handle_drain(Context<Out>& ctx) {
    draining = true;
    ctx.finish();  // once what it emitted has been dispatched
  }
  void pull(Context<Out>& ctx) {
    if (draining || polling || wanted == 0) return;
    wanted -= ctx.emit_generated(wanted, *f);
    if (wanted == 0) return;
    ctx.send_after(every, Poll{});
    polling = true;
  }
};

}  // namespace detail

/// Options of from_generator.
struct GeneratorOptions {
  /// Set: an empty optional from the generator means "nothing yet", not the end: the source
  /// calls it again this long after (a timer on the run's clock), and ends only when the run is
  /// drained or cancelled. Must be positive.
  std::optional<Duration> poll_every = std::nullopt;
};

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

/// A source that polls a callable returning std::optional<T> (a queue, a file that grows, a
/// device): each call gives the next event, or nothing yet; with nothing, it is called again
/// `options.poll_every` later, on a timer, while demand lasts. It runs until the run is drained
/// (it then finishes once what it emitted has been dispatched) or cancelled. Throws
/// option_error for a poll_every that is missing or not positive.
template <class F>
requires requires(F& f) {
  f().has_value();
}
auto from_generator(F f, GeneratorOptions options) {
  using Out = typename std::invoke_result_t<F&>::value_type;
  if (!options.poll_every || *options.poll_every <= Duration::zero())
    throw option_error("from_generator: GeneratorOptions::poll_every must be set and positive");
  return detail::PollingSource<Out, F>{std::move(f), *options.poll_every};
}

}  // namespace sluice
