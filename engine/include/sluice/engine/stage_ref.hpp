#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>

#include <sluice/engine/detail/names.hpp>

namespace sluice {

/// A typed handle to a declared stage of an Engine: `In` is what it consumes (void for a
/// producer), `Out` what it emits (void for a consumer).
template <class In, class Out>
class StageRef {
 public:
  using input_type = In;
  using output_type = Out;
  StageRef() = default;
  std::size_t id() const noexcept { return id_; }
  /// The engine (or graph) that declared it: a Run refuses the stages of another.
  std::uint64_t owner() const noexcept { return owner_; }

 private:
  friend class Engine;
  friend class Run;
  StageRef(std::size_t id, std::uint64_t owner) : id_(id), owner_(owner) {}
  std::size_t id_ = SIZE_MAX;
  std::uint64_t owner_ = 0;
};

/// Tags telling apart the stages of different engines and graphs: a builder gives its engine its
/// own (an Engine made from a plan takes it, so its runs accept the builder's stage handles).
using detail::new_owner_tag;
using detail::OwnerTag;

/// A stage handle a Run accepts: the engine's StageRef or the builder's Stage.
template <class S>
concept StageHandle = requires(const S& s) {
  { s.id() } -> std::convertible_to<std::size_t>;
};

}  // namespace sluice
