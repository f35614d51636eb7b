// The run's timer service (engine/DESIGN.md 11; detail/timer_service.hpp). Compiled here so that
// no public header pulls in the operating system's futex interface.
#include <algorithm>
#include <cerrno>
#include <ctime>

#include <sluice/engine/detail/timer_service.hpp>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace sluice::detail {

namespace {

// std::atomic<std::uint32_t> is a plain 32-bit word on Linux: the futex works on its address.
std::uint32_t* futex_word(std::atomic<std::uint32_t>& a) noexcept {
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  return reinterpret_cast<std::uint32_t*>(&a);
}

/// Sleeps while `word` holds `seen`, until `deadline` on CLOCK_MONOTONIC (steady_clock's) or
/// for ever. Returns on a wake, a signal, a deadline, or at once if `word` has changed.
void futex_wait_until(std::atomic<std::uint32_t>& word, std::uint32_t seen,
                      std::optional<TimePoint> deadline) noexcept {
  timespec ts{};
  if (deadline) {
    const auto ns = deadline->time_since_epoch().count();
    ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  }
  // FUTEX_WAIT_BITSET takes an absolute deadline on CLOCK_MONOTONIC.
  syscall(SYS_futex, futex_word(word), FUTEX_WAIT_BITSET_PRIVATE, seen, deadline ? &ts : nullptr,
          nullptr, FUTEX_BITSET_MATCH_ANY);
}

void futex_wake(std::atomic<std::uint32_t>& word) noexcept {
  syscall(SYS_futex, futex_word(word), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

/// std::push_heap keeps the greatest first: the earliest wake-up.
bool later(const TimerService::Wake& a, const TimerService::Wake& b) noexcept {
  return a.at > b.at;
}

}  // namespace

void TimerService::request(Wake w) {
  const auto at = w.at.time_since_epoch().count();
  requests_.enqueue(std::move(w));
  if (clock_.is_virtual()) return;  // Run::advance collects it
  std::call_once(started_, [this] { thread_ = std::thread([this] { loop(); }); });
  // H1: the queue's enqueue is a release, which a later load may pass; the fence keeps it
  // before the load of next_ns_ (it pairs with the fence in loop(), step 1).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (at < next_ns_.load()) {  // H1: the service would sleep past it
    signal_.fetch_add(1);
    futex_wake(signal_);
  }
}

void TimerService::stop() {
  if (stopping_.exchange(true)) return;
  signal_.fetch_add(1);
  futex_wake(signal_);
  // The thread is started under started_; stop() runs when no cell can run, so no request (and
  // so no start) races with it.
  if (thread_.joinable()) thread_.join();
}

void TimerService::collect() {
  Wake w;
  while (requests_.try_dequeue(w)) {
    heap_.push_back(w);
    std::push_heap(heap_.begin(), heap_.end(), later);
  }
}

std::optional<TimePoint> TimerService::earliest() {
  collect();
  if (heap_.empty()) return std::nullopt;
  return heap_.front().at;
}

void TimerService::wake_due(TimePoint now) {
  while (!heap_.empty() && heap_.front().at <= now) {
    std::pop_heap(heap_.begin(), heap_.end(), later);
    const auto w = heap_.back();
    heap_.pop_back();
    w.due->store(true, std::memory_order_relaxed);  // H2: notify() publishes it
    notify_(w.cell);
  }
}

/// The service thread, one pass per wake (H1):
/// 1. Say it is awake (next_ns_ = never): a request sent from now on signals.
/// 2. Read the signal word, then collect the requests.
/// 3. Wake every cell whose wake-up is due.
/// 4. Publish the next deadline, then sleep until it, unless the signal word has moved since
///    step 2 (a request came that step 2 may have missed).
void TimerService::loop() {
  for (;;) {
    next_ns_.store(never);  // 1
    // H1: keeps the store before collect()'s reads of the queue (pairs with request()'s fence).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const auto seen = signal_.load();  // 2
    if (stopping_.load()) return;
    collect();
    wake_due(clock_.now());  // 3
    std::optional<TimePoint> next;
    if (!heap_.empty()) next = heap_.front().at;
    next_ns_.store(next ? next->time_since_epoch().count() : never);  // 4
    futex_wait_until(signal_, seen, next);
  }
}

}  // namespace sluice::detail
