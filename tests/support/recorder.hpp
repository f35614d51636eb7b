#pragma once
// A recording Outbox for dispatcher-level tests (the ports of GenStage's *_dispatcher_test.exs):
// everything a dispatcher does through its Outbox, in order, with the events as values.

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sluice/engine/dispatcher.hpp>

#include <doctest/doctest.h>

namespace sluice_test {

/// One message sent to a subscriber (GenStage's {:"$gen_consumer", {_, ref}, events}).
template <class E>
struct SentTo {
  sluice::SubscriberId to;
  std::vector<E> events;
  bool operator==(const SentTo&) const = default;
};

struct Logged {
  sluice::LogLevel level;
  std::string message;
};

template <class E>
class Recorder final : public sluice::Outbox<E> {
 public:
  using Sent = SentTo<E>;
  std::vector<Sent> sent;
  std::vector<std::uint64_t> infos;
  std::vector<std::pair<sluice::SubscriberId, std::size_t>> asked_on_behalf;
  std::vector<Logged> logs;
  std::vector<E> discarded;
  std::vector<std::string> discard_reasons;
  std::size_t shared_sends = 0;  // sends of a shared batch (no copy per subscriber)
  std::size_t batches_made = 0;  // calls to share()
  std::size_t filtered_count = 0;
  std::size_t unasked_count = 0;

  void send(sluice::SubscriberId to, std::span<E> events) override {
    sent.push_back({to, std::vector<E>(std::make_move_iterator(events.begin()),
                                       std::make_move_iterator(events.end()))});
  }
  sluice::SharedEvents<E> share(std::span<E> events) override {
    ++batches_made;
    return sluice::SharedEvents<E>::make(events);
  }
  void send(sluice::SubscriberId to, const sluice::SharedEvents<E>& batch, std::size_t offset,
            std::size_t count) override {
    ++shared_sends;
    auto part = batch.events().subspan(offset, count);
    // Consecutive runs of one batch to the same subscriber read as one GenStage message.
    sent.push_back({to, std::vector<E>(part.begin(), part.end())});
  }
  void discard(std::span<E> events, std::string_view why) override {
    for (auto& e : events)
      discarded.push_back(std::move(e));
    discard_reasons.emplace_back(why);
  }
  void filtered(std::size_t n) override { filtered_count += n; }
  void unasked(std::size_t n) override { unasked_count += n; }
  void release_info(std::uint64_t token) override { infos.push_back(token); }
  void ask_on_behalf(sluice::SubscriberId of, std::size_t n) override {
    asked_on_behalf.emplace_back(of, n);
  }
  void log(sluice::LogLevel level, std::string_view message) override {
    logs.push_back({level, std::string(message)});
  }

  /// The messages sent since the last call, forgotten (assert_received, then flush).
  std::vector<Sent> take_sent() { return std::exchange(sent, {}); }
  bool quiet() const {
    return sent.empty() && infos.empty() && asked_on_behalf.empty() && logs.empty() &&
           discarded.empty();
  }
};

/// GenStage's {:ok, leftovers, state}: dispatch returns how many it took; the rest stay put.
template <class E>
struct Dispatched {
  std::size_t taken;
  std::vector<E> leftovers;
};

template <class E>
Dispatched<E> dispatch(sluice::Dispatcher<E>& d, Recorder<E>& out, std::vector<E> events) {
  const auto taken = d.dispatch(std::span<E>(events), out);
  std::vector<E> leftovers;
  if (taken <= events.size())
    leftovers.assign(std::make_move_iterator(events.begin() + static_cast<std::ptrdiff_t>(taken)),
                     std::make_move_iterator(events.end()));
  return {taken, std::move(leftovers)};
}

template <class E>
std::string show(const std::vector<E>& es) {
  std::ostringstream s;
  s << "[";
  for (std::size_t j = 0; j < es.size(); ++j)
    s << (j ? "," : "") << es[j];
  s << "]";
  return s.str();
}

template <class E>
std::string show(const std::vector<SentTo<E>>& ss) {
  std::ostringstream s;
  s << "[";
  for (std::size_t i = 0; i < ss.size(); ++i)
    s << (i ? ", " : "") << "id " << ss[i].to << " <- " << show(ss[i].events);
  s << "]";
  return s.str();
}

}  // namespace sluice_test

namespace doctest {
template <class E>
struct StringMaker<std::vector<sluice_test::SentTo<E>>> {
  static String convert(const std::vector<sluice_test::SentTo<E>>& v) {
    return String(sluice_test::show(v).c_str());
  }
};
}  // namespace doctest
