#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace sluice {

/// An invalid option or topology, found before anything runs. The message names the stage and
/// the option.
class option_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A stage failed while running: a callback threw, or it broke the protocol. what() names the
/// stage.
class stage_error : public std::runtime_error {
 public:
  stage_error(std::string stage, const std::string& message)
      : std::runtime_error("stage '" + stage + "': " + message), stage_(std::move(stage)) {}
  const std::string& stage() const noexcept { return stage_; }

 private:
  std::string stage_;
};

/// Why a subscription or a stage ended.
struct Reason {
  /// `refused`: the producer's dispatcher turned the subscription down (GenStage's
  /// :already_subscribed); it never stops the consumer, whatever its cancel mode.
  enum class Kind : std::uint8_t { normal, shutdown, error, refused };
  Kind kind = Kind::normal;
  std::string message;

  static Reason normal() { return {}; }
  static Reason shutdown() { return {Kind::shutdown, "shutdown"}; }
  static Reason error(std::string m) { return {Kind::error, std::move(m)}; }
  static Reason refused(std::string m) { return {Kind::refused, std::move(m)}; }
  bool is_normal() const noexcept { return kind == Kind::normal; }
  bool is_error() const noexcept { return kind == Kind::error; }
};

}  // namespace sluice
