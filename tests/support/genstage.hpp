#pragma once

// Stage handlers modelled on the fixtures of GenStage's own test suite (test/gen_stage_test.exs:
// Counter, Forwarder, Doubler, Postponer, Discarder, Sleeper), recording what they see in a log,
// as the Elixir tests do in the test process's mailbox. Runs are manual (deterministic, on the
// test thread), so the log is exact.

#include <any>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <sluice/sluice.hpp>

namespace sluice_test {

using Ev = std::string;
using Log = std::vector<std::string>;

/// Renders a batch: runs of consecutive integers as "a..b", the rest comma-separated.
inline std::string fmt(std::span<const Ev> evs) {
  std::string out;
  std::size_t i = 0;
  auto as_int = [](const Ev& e) -> std::optional<long long> {
    if (e.empty() || e.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    return std::stoll(e);
  };
  while (i < evs.size()) {
    if (!out.empty()) out += ",";
    auto a = as_int(evs[i]);
    std::size_t j = i;
    if (a) {
      while (j + 1 < evs.size()) {
        auto b = as_int(evs[j + 1]);
        if (!b || *b != *a + static_cast<long long>(j + 1 - i)) break;
        ++j;
      }
    }
    out += (j > i + 1) ? evs[i] + ".." + evs[j] : evs[i];
    if (j == i + 1) out += "," + evs[j];
    i = j + 1;
  }
  return out;
}
inline std::string fmt(std::span<Ev> evs) {
  return fmt(std::span<const Ev>(evs.data(), evs.size()));
}

/// "a..b" as fmt renders the integers a..b.
inline std::string ints(long long a, long long b) {
  std::vector<Ev> v;
  for (long long i = a; i <= b; ++i)
    v.push_back(std::to_string(i));
  return fmt(std::span<const Ev>(v));
}
/// GenStage's dbl(a..b): a,a,a+1,a+1,...,b,b.
inline std::string dbl(long long a, long long b) {
  std::vector<Ev> v;
  for (long long i = a; i <= b; ++i) {
    v.push_back(std::to_string(i));
    v.push_back(std::to_string(i));
  }
  return fmt(std::span<const Ev>(v));
}
inline std::vector<Ev> atoms(std::initializer_list<const char*> xs) {
  return std::vector<Ev>(xs.begin(), xs.end());
}

inline std::string reason_str(const sluice::Reason& r) {
  switch (r.kind) {
    case sluice::Reason::Kind::normal:
      return "normal";
    case sluice::Reason::Kind::shutdown:
      return "shutdown";
    default:
      return "error:" + r.message;
  }
}
inline std::string cancel_str(const sluice::CancelInfo& i) {
  return std::string(i.origin == sluice::CancelInfo::Origin::cancelled ? "cancel " : "down ") +
         reason_str(i.reason);
}

/// Info messages the fixtures understand.
struct Queue {  // emit these events (GenStage's {:queue, events})
  std::vector<Ev> events;
};
struct Ask {  // manual demand: ask n on subscription sub
  sluice::SubscriptionId sub;
  std::int64_t n;
};
struct CancelSub {  // cancel subscription sub with reason
  sluice::SubscriptionId sub;
  sluice::Reason reason;
};
struct StopWith {  // stop the stage with a reason
  sluice::Reason reason;
};
struct SetMode {
  sluice::DemandMode mode;
};

/// Logs the info messages of the shared vocabulary, or performs them. Returns true if handled.
template <class Out>
bool common_info(Log* log, std::any& m, sluice::Context<Out>& c) {
  if (auto* s = std::any_cast<std::string>(&m)) {
    log->push_back("info " + *s);
  } else if (auto* a = std::any_cast<Ask>(&m)) {
    c.ask(a->sub, a->n);
  } else if (auto* x = std::any_cast<CancelSub>(&m)) {
    c.cancel(x->sub, x->reason);
  } else if (auto* st = std::any_cast<StopWith>(&m)) {
    c.stop(st->reason);
  } else if (auto* sm = std::any_cast<SetMode>(&m)) {
    c.set_demand_mode(sm->mode);
  } else {
    return false;
  }
  return true;
}

/// GenStage's Counter: handle_demand(d) emits next..next+d-1 (up to `limit`, then finishes);
/// {:queue, events} infos emit events.
struct Counter {
  Log* log;
  long long next = 0;
  long long limit = -1;        // < 0: endless
  bool emit_on_demand = true;  // false: like Counter with a pid state (emits nothing)
  void handle_demand(std::size_t d, sluice::Context<Ev>& c) {
    log->push_back("demand " + std::to_string(d));
    if (!emit_on_demand) return;
    for (std::size_t i = 0; i < d && (limit < 0 || next < limit); ++i)
      c.emit(std::to_string(next++));
    if (limit >= 0 && next >= limit) c.finish();
  }
  void handle_info(std::any& m, sluice::Context<Ev>& c) {
    if (auto* q = std::any_cast<Queue>(&m))
      c.emit_all(q->events);
    else
      common_info(log, m, c);
  }
  void handle_subscribe(const sluice::SubscribeInfo& i, sluice::Context<Ev>&) {
    log->push_back("producer_subscribed " + std::string(i.peer));
  }
  void handle_cancel(const sluice::CancelInfo& i, sluice::Context<Ev>&) {
    log->push_back("producer_cancelled " + cancel_str(i));
  }
};

/// GenStage's DemandProducer: handle_demand(d) emits [d].
struct DemandProducer {
  Log* log;
  void handle_demand(std::size_t d, sluice::Context<Ev>& c) {
    log->push_back("demand " + std::to_string(d));
    c.emit(std::to_string(d));
  }
  void handle_info(std::any& m, sluice::Context<Ev>& c) { common_info(log, m, c); }
};

/// GenStage's Forwarder: logs "<tag> <batch>" for each batch.
struct Forwarder {
  Log* log;
  std::string tag = "consumed";
  std::int64_t ask_on_subscribe = 0;  // manual demand: ask this much in handle_subscribe
  void handle_events(std::span<Ev> evs, sluice::SubscriptionId, sluice::Context<void>&) {
    log->push_back(tag + " " + fmt(evs));
  }
  void handle_subscribe(const sluice::SubscribeInfo& i, sluice::Context<void>& c) {
    log->push_back(tag + "_subscribed " + std::string(i.peer));
    if (ask_on_subscribe > 0) c.ask(i.subscription, ask_on_subscribe);
  }
  void handle_cancel(const sluice::CancelInfo& i, sluice::Context<void>&) {
    log->push_back(tag + "_cancelled " + cancel_str(i));
  }
  void handle_info(std::any& m, sluice::Context<void>& c) { common_info(log, m, c); }
};

/// GenStage's Doubler: logs "producer_consumed <batch>" and emits each event twice.
struct Doubler {
  Log* log;
  void handle_events(std::span<Ev> evs, sluice::Context<Ev>& c) {
    log->push_back("producer_consumed " + fmt(evs));
    for (auto& e : evs) {
      c.emit(e);
      c.emit(e);
    }
  }
  void handle_cancel(const sluice::CancelInfo& i, sluice::Context<Ev>&) {
    log->push_back("producer_consumer_cancelled " + cancel_str(i));
  }
  void handle_info(std::any& m, sluice::Context<Ev>& c) { common_info(log, m, c); }
};

/// GenStage's Postponer: handle_events emits nothing and posts itself the events; handle_info
/// logs and emits them.
struct Postponer {
  Log* log;
  struct Postponed {
    std::vector<Ev> evs;
  };
  void handle_events(std::span<Ev> evs, sluice::Context<Ev>& c) {
    c.async_info(Postponed{std::vector<Ev>(evs.begin(), evs.end())});
  }
  void handle_info(std::any& m, sluice::Context<Ev>& c) {
    if (auto* p = std::any_cast<Postponed>(&m)) {
      log->push_back("postponed " + fmt(std::span<const Ev>(p->evs)));
      c.emit_all(p->evs);
    }
  }
};

/// GenStage's Discarder: logs and emits nothing.
struct Discarder {
  Log* log;
  void handle_events(std::span<Ev> evs, sluice::Context<Ev>&) {
    log->push_back("discarded " + fmt(evs));
  }
};

/// GenStage's Sleeper: logs its first batch, then never asks again (a manual subscription that
/// asks max once).
struct Sleeper {
  Log* log;
  std::int64_t initial_ask = 10;
  void handle_subscribe(const sluice::SubscribeInfo& i, sluice::Context<void>& c) {
    c.ask(i.subscription, initial_ask);
  }
  void handle_events(std::span<Ev> evs, sluice::Context<void>&) {
    log->push_back("sleep " + fmt(evs));
  }
};

/// The lines of `log` whose first word is `word`.
inline Log only(const Log& log, const std::string& word) {
  Log out;
  for (auto& l : log)
    if (l.rfind(word + " ", 0) == 0) out.push_back(l);
  return out;
}

inline sluice::RunOptions manual(Log* warnings = nullptr) {
  sluice::RunOptions o;
  o.manual = true;
  o.logger = [warnings](sluice::LogLevel, std::string_view m) {
    if (warnings) warnings->push_back(std::string(m));
  };
  return o;
}

template <class E = Ev>
auto demand() {
  return sluice::demand_dispatcher<E>();
}

}  // namespace sluice_test

namespace sluice_test {

/// A DemandDispatcher that logs "sent <batch>" for every message it sends, in the producer's
/// own order, so a test can see sends and handle_info calls interleaved exactly.
struct LoggingDemandDispatcher final : sluice::Dispatcher<Ev> {
  Log* log;
  sluice::DemandDispatcher<Ev> inner;

  explicit LoggingDemandDispatcher(Log* l) : log(l) {}

  struct Tap final : sluice::Outbox<Ev> {
    Log* lines;
    sluice::Outbox<Ev>* out;
    Tap(Log* l, sluice::Outbox<Ev>* o) : lines(l), out(o) {}
    void send(sluice::SubscriberId to, std::span<Ev> events) override {
      lines->push_back("sent " + fmt(events));
      out->send(to, events);
    }
    void send(sluice::SubscriberId to, const sluice::SharedEvents<Ev>& batch, std::size_t offset,
              std::size_t count) override {
      out->send(to, batch, offset, count);
    }
    void discard(std::span<Ev> events, std::string_view why) override { out->discard(events, why); }
    void filtered(std::size_t n) override { out->filtered(n); }
    void unasked(std::size_t n) override { out->unasked(n); }
    void release_info(std::uint64_t token) override { out->release_info(token); }
    void ask_on_behalf(sluice::SubscriberId of, std::size_t n) override {
      out->ask_on_behalf(of, n);
    }
    void log(sluice::LogLevel level, std::string_view m) override { out->log(level, m); }
  };

  std::size_t subscribe(const sluice::SubscriberInfo& s, sluice::Outbox<Ev>& out) override {
    Tap t{log, &out};
    return inner.subscribe(s, t);
  }
  std::size_t cancel(sluice::SubscriberId s, sluice::Outbox<Ev>& out) override {
    Tap t{log, &out};
    return inner.cancel(s, t);
  }
  std::size_t ask(sluice::SubscriberId s, std::size_t n, sluice::Outbox<Ev>& out) override {
    Tap t{log, &out};
    return inner.ask(s, n, t);
  }
  std::size_t dispatch(std::span<Ev> events, sluice::Outbox<Ev>& out) override {
    Tap t{log, &out};
    return inner.dispatch(events, t);
  }
  std::string name() const override { return "LoggingDemandDispatcher"; }
};

inline sluice::DispatcherFactory<Ev> logging_demand(Log* log) {
  return [log] { return std::make_unique<LoggingDemandDispatcher>(log); };
}

}  // namespace sluice_test
