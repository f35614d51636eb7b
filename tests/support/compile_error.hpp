#pragma once
// What compile() says of a graph: the operator tests' check of their bad options.

#include <string>

#include <sluice/sluice.hpp>

namespace sluice_test {

/// What compile() refuses `g` with (its option_error's text), or "compiled".
inline std::string compile_error(sluice::Graph& g) {
  try {
    g.compile();
  } catch (const sluice::option_error& e) {
    return e.what();
  }
  return "compiled";
}

}  // namespace sluice_test
