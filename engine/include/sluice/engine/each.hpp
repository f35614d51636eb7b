#pragma once

#include <concepts>
#include <span>

#include <sluice/engine/context.hpp>

namespace sluice {

/// A consumer handler calling `f(event)` for each event (Run::attach with a function; the
/// builder's for_each). It reads an edge's own events (moved from) or a broadcast's shared batch.
template <class In, class F>
struct EachHandler {
  F f;
  void handle_events(std::span<In> in, Context<void>&) {
    for (auto& e : in)
      f(std::move(e));
  }
  void handle_events(std::span<const In> in,
                     Context<void>&) requires std::invocable<F&, const In&> {
    for (auto& e : in)
      f(e);
  }
};

}  // namespace sluice
