#pragma once

#include <any>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include <sluice/engine/detail/assert.hpp>

namespace sluice::detail {

/// The infos of a cell (GenStage 1.9: messages for handle_info), from the moment they are
/// posted to their delivery, in order. Owner thread only.
///
/// An info is *posted* (ctx.async_info, Run::async_info: delivered after the events emitted
/// before it), or *sent* (Run::send_info: delivered as soon as the cell runs). A posted info
/// first waits behind the inbound messages not yet handled (a producer_consumer, GENSTAGE.md
/// 1.8), then gets a token and waits behind the buffered events (the producer's buffer and
/// dispatcher hold the token), and becomes *ready* when they have left; ready infos are
/// delivered in order.
class Mailbox {
 public:
  /// Posted: routed by the cell's settle loop (after the callback that posted it).
  void post(std::any info) { posted_.push_back(std::move(info)); }
  bool has_posted() const noexcept { return !posted_.empty(); }
  /// The oldest posted info; has_posted() must be true.
  std::any next_posted() {
    SLUICE_ASSERT(!posted_.empty(), "next_posted with nothing posted");
    auto info = std::move(posted_.front());
    posted_.pop_front();
    return info;
  }

  /// A posted info waiting behind inbound messages: until every subscription has read up to
  /// `positions` (Inbound::written_positions when it was posted).
  void wait_behind_inputs(std::vector<std::uint64_t> positions, std::any info) {
    behind_inputs_.push_back({std::move(positions), std::move(info)});
  }
  bool waits_behind_inputs() const noexcept { return !behind_inputs_.empty(); }
  /// The oldest info waiting behind inbound messages, once `has_read(positions)` says they
  /// have all been handled.
  template <class HasRead>
  std::optional<std::any> next_passed_inputs(HasRead&& has_read) {
    if (behind_inputs_.empty() || !has_read(behind_inputs_.front().positions)) return std::nullopt;
    auto info = std::move(behind_inputs_.front().info);
    behind_inputs_.pop_front();
    return info;
  }

  /// Keeps `info` under a new token (what buffers and dispatchers hold).
  std::uint64_t store(std::any info) {
    const auto token = next_token_++;
    stored_.emplace(token, std::move(info));
    return token;
  }
  /// The info of `token` is to be delivered, after those made ready before it.
  void ready(std::uint64_t token) { ready_.push_back(token); }
  bool has_ready() const noexcept { return !ready_.empty(); }
  /// The next ready info (nullopt: none, or its token was unknown).
  std::optional<std::any> next_ready() {
    if (ready_.empty()) return std::nullopt;
    const auto token = ready_.front();
    ready_.pop_front();
    auto it = stored_.find(token);
    if (it == stored_.end()) return std::nullopt;
    auto info = std::move(it->second);
    stored_.erase(it);
    return info;
  }

 private:
  struct BehindInputs {
    std::vector<std::uint64_t> positions;
    std::any info;
  };
  std::deque<std::any> posted_;
  std::deque<BehindInputs> behind_inputs_;
  std::map<std::uint64_t, std::any> stored_;  // a user dispatcher may release tokens in any order
  std::deque<std::uint64_t> ready_;
  std::uint64_t next_token_ = 0;
};

}  // namespace sluice::detail
