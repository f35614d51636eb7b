#pragma once

#include <atomic>
#include <concepts>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>

#include <sluice/engine/context.hpp>
#include <sluice/engine/each.hpp>

/// The handlers behind the builder's function stages (map, filter, flat_map, for_each, collect).
namespace sluice::detail {

// Function stages read their input through either span: their own events (moved from) or a
// broadcast's shared batch (read only).
template <class In, class Out, class F>
struct MapStage {
  F f;
  static constexpr bool fusible = true;  // per event, no state: it may be fused
  /// Fused (engine/DESIGN.md 10), when it keeps the type: each event becomes its result where
  /// it is, and the next stage reads the same span.
  void map_in_place(
      std::span<In> in) requires std::same_as<In, Out> && std::is_move_assignable_v<In> {
    for (auto& e : in)
      e = f(std::move(e));
  }
  void handle_events(std::span<In> in, Context<Out>& ctx) {
    auto it = in.begin();
    ctx.emit_generated(in.size(), [&] { return std::optional<Out>(f(std::move(*it++))); });
  }
  void handle_events(std::span<const In> in,
                     Context<Out>& ctx) requires std::invocable<F&, const In&> {
    auto it = in.begin();
    ctx.emit_generated(in.size(), [&] { return std::optional<Out>(f(*it++)); });
  }
};

template <class In, class F>
struct FilterStage {
  F keep;
  static constexpr bool fusible = true;  // per event, no state: it may be fused
  /// Fused: moves the events it keeps to the front of `in`, in order; returns how many. For
  /// trivially copyable events there is no branch on keep() (as Context::emit_kept).
  std::size_t filter_in_place(std::span<In> in) requires std::is_move_assignable_v<In> {
    std::size_t kept = 0;
    for (auto& e : in) {
      const bool k = keep(std::as_const(e));
      if constexpr (std::is_trivially_copyable_v<In>) {
        in[kept] = e;
        kept += k ? 1 : 0;
      } else if (k) {
        if (&in[kept] != &e) in[kept] = std::move(e);
        ++kept;
      }
    }
    return kept;
  }
  void handle_events(std::span<In> in, Context<In>& ctx) { ctx.emit_kept(in, keep); }
  void handle_events(std::span<const In> in,
                     Context<In>& ctx) requires std::copy_constructible<In> {
    ctx.emit_kept(in, keep);
  }
};

template <class In, class Out, class F>
struct FlatMapStage {
  F f;
  static constexpr bool fusible = true;  // per event, no state: it may be fused
  void handle_events(std::span<In> in, Context<Out>& ctx) {
    for (auto& e : in)
      ctx.emit_all(f(std::move(e)));
  }
  void handle_events(std::span<const In> in,
                     Context<Out>& ctx) requires std::invocable<F&, const In&> {
    for (auto& e : in)
      ctx.emit_all(f(e));
  }
};

/// The sink behind Stage::collect: appends to the application's container. Its run's claim on
/// the container is given back when it stops (release: the next run that claims it sees every
/// append).
template <class In, class Container>
struct CollectSink {
  Container* out;
  std::shared_ptr<std::atomic<bool>> claim;
  void handle_events(std::span<In> in, Context<void>&) {
    for (auto& e : in)
      out->push_back(std::move(e));
  }
  void handle_events(std::span<const In> in, Context<void>&) requires std::copy_constructible<In> {
    for (auto& e : in)
      out->push_back(e);
  }
  void handle_terminate(const Reason&) { claim->store(false); }
};

/// The function of Stage::inspect: calls `f` on the event, returns the event.
template <class T, class F>
struct Inspect {
  F f;
  T operator()(T&& e) {
    f(std::as_const(e));
    return std::move(e);
  }
  T operator()(const T& e) {
    f(e);
    return e;
  }
};

/// The function of Stage::scan: folds the event into its accumulator, returns a copy of it.
template <class T, class Acc, class F>
struct Scan {
  Acc acc;
  F f;
  Acc operator()(T&& e) {
    acc = f(std::move(acc), std::move(e));
    return acc;
  }
  Acc operator()(const T& e) requires std::invocable<F&, Acc&&, const T&> {
    acc = f(std::move(acc), e);
    return acc;
  }
};

/// The function of Stage::merge: the event itself.
template <class T>
struct Same {
  T operator()(T&& e) const { return std::move(e); }
  T operator()(const T& e) const { return e; }
};

/// The handlers of the function stages: they never call ctx.ask (manual demand is refused).
template <class Handler>
inline constexpr bool is_function_stage = false;
template <class In, class F>
inline constexpr bool is_function_stage<EachHandler<In, F>> = true;
template <class In, class Out, class F>
inline constexpr bool is_function_stage<MapStage<In, Out, F>> = true;
template <class In, class F>
inline constexpr bool is_function_stage<FilterStage<In, F>> = true;
template <class In, class C>
inline constexpr bool is_function_stage<CollectSink<In, C>> = true;
template <class In, class Out, class F>
inline constexpr bool is_function_stage<FlatMapStage<In, Out, F>> = true;

}  // namespace sluice::detail
