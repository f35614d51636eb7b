#pragma once

#include <memory>
#include <utility>

namespace sluice::detail {

/// Calls `(state->*Act)()` when it is destroyed. Held through one shared_ptr by every copy of a
/// stage (in the graph, its compiled graphs and the run) or of a handle, it acts when the last
/// of them goes: a push source's stream closes, a stream's reader sees the end, instead of
/// waiting for ever on something no one can feed.
template <class State, void (State::*Act)()>
struct LastHolder {
  std::shared_ptr<State> state;
  explicit LastHolder(std::shared_ptr<State> s) : state(std::move(s)) {}
  LastHolder(const LastHolder&) = delete;
  LastHolder& operator=(const LastHolder&) = delete;
  ~LastHolder() { ((*state).*Act)(); }
};

}  // namespace sluice::detail
