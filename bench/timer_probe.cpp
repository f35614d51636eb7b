// timer_probe: the measurements behind bench/RESULTS.md "Timers (issue 19)" that sluice-bench's
// table cannot show (public API only, besides the operating system's own calls).
//
//   timer_probe futex [N]
//       How late a thread wakes from FUTEX_WAIT_BITSET with an absolute CLOCK_MONOTONIC
//       deadline 0-2 ms ahead (the timer service's sleep), N times: the kernel's share of a
//       timer's lateness on this machine, without Sluice.
//   timer_probe flood [STAGES PENDING FIRINGS]
//       timers_flood (default 4 stages x 10000 timers of 0-2 ms, 4 M firings), per stage: the
//       lateness percentiles and the longest gaps between two firings (time the stage did not
//       run while its timers were due), then firings per stage in 50 ms windows, with the
//       thread that ran the last of them.
//   timer_probe slack NS PROGRAM [ARGS...]
//       Runs PROGRAM with a timer slack of NS nanoseconds (prctl PR_SET_TIMERSLACK: every thread
//       it makes inherits it, and it is kept across execve); Linux's default is 50 us.
#include <algorithm>
#include <any>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include <sluice/sluice.hpp>

#include <linux/futex.h>
#include <support/stages.hpp>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace {

using I64 = std::int64_t;

/// splitmix64, as bench/timers.cpp.
struct Random {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }
};

constexpr I64 max_delay_ns = 2'000'000;

/// The value at fraction q of `v` (sorted here), in microseconds.
double percentile_us(std::vector<I64> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return double(v[static_cast<std::size_t>(q * double(v.size() - 1))]) / 1e3;
}

I64 monotonic_ns() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return I64(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

int futex_probe(int n) {
  std::uint32_t word = 0;
  Random random{1};
  std::vector<I64> late;
  for (int i = 0; i < n; ++i) {
    const I64 deadline =
        monotonic_ns() + static_cast<I64>(random.next() % std::uint64_t(max_delay_ns + 1));
    const timespec ts{static_cast<time_t>(deadline / 1'000'000'000),
                      static_cast<long>(deadline % 1'000'000'000)};
    syscall(SYS_futex, &word, FUTEX_WAIT_BITSET_PRIVATE, 0, &ts, nullptr, FUTEX_BITSET_MATCH_ANY);
    late.push_back(monotonic_ns() - deadline);
  }
  std::printf("futex wake lateness, %d sleeps of 0-2 ms: p50 %.1f us, p99 %.1f us\n", n,
              percentile_us(late, 0.5), percentile_us(late, 0.99));
  return 0;
}

// ---- flood -----------------------------------------------------------------------------------

struct Firing {
  I64 at_ns;    // since the run began
  I64 late_ns;  // handle_info's ctx.now() minus the deadline
  long thread;  // the thread that ran handle_info
};

sluice::TimePoint began;

/// bench/timers.cpp's TimerLoad, recording every firing.
struct Recording {
  struct Due {
    sluice::TimePoint deadline;
  };
  std::vector<Firing>* out;
  I64 quota;
  I64 pending;
  Random random;
  I64 started = 0;

  void handle_subscribe(const sluice::SubscribeInfo&, sluice::Context<I64>& ctx) {
    while (started < quota && started < pending)
      start(ctx);
  }
  void handle_demand(std::size_t, sluice::Context<I64>&) {}
  void handle_info(std::any& message, sluice::Context<I64>& ctx) {
    const auto now = ctx.now();
    const auto* due = std::any_cast<Due>(&message);
    if (due == nullptr) return;
    out->push_back({(now - began).count(), (now - due->deadline).count(), syscall(SYS_gettid)});
    if (static_cast<I64>(out->size()) == quota) {
      ctx.finish();
      return;
    }
    if (started < quota) start(ctx);
  }
  void start(sluice::Context<I64>& ctx) {
    const auto delay =
        sluice::Duration(static_cast<I64>(random.next() % std::uint64_t(max_delay_ns + 1)));
    ctx.send_after(delay, Due{ctx.now() + delay});
    ++started;
  }
};

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) * 1e-6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

int flood(I64 stages, I64 pending, I64 firings) {
  std::vector<std::vector<Firing>> fired(static_cast<std::size_t>(stages));
  for (auto& f : fired)
    f.reserve(static_cast<std::size_t>(firings / stages));
  sluice::Graph g;
  std::vector<sluice::Stage<void, I64>> sources;
  for (I64 k = 0; k < stages; ++k)
    sources.push_back(g.source<I64>("timers" + std::to_string(k),
                                    Recording{&fired[std::size_t(k)], firings / stages, pending,
                                              Random{static_cast<std::uint64_t>(k + 1)}}));
  auto sink = sources[0].to("sink", sluice_test::NullSink<I64>{});
  for (I64 k = 1; k < stages; ++k)
    sink.subscribe(sources[std::size_t(k)]);
  auto compiled = g.compile();
  const double cpu0 = cpu_seconds();
  began = std::chrono::steady_clock::now();
  compiled.run().wait();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  const double cpu = cpu_seconds() - cpu0;
  std::printf(
      "%lld stages x %lld timers of 0-2 ms, %lld firings: %.2f s, %.2f M firings/s, "
      "CPU %.0f %% of one core\n",
      static_cast<long long>(stages), static_cast<long long>(pending),
      static_cast<long long>(firings / stages * stages), seconds,
      double(firings / stages * stages) / seconds / 1e6, 100 * cpu / seconds);
  I64 last = 0;
  for (std::size_t k = 0; k < fired.size(); ++k) {
    const auto& f = fired[k];
    std::vector<I64> late, gaps;
    for (std::size_t i = 0; i < f.size(); ++i) {
      late.push_back(f[i].late_ns);
      if (i > 0) gaps.push_back(f[i].at_ns - f[i - 1].at_ns);
    }
    if (!f.empty()) last = std::max(last, f.back().at_ns);
    std::sort(gaps.rbegin(), gaps.rend());
    std::printf("stage %zu: lateness p50 %.0f, p99 %.0f, max %.0f us; longest gaps (us):", k,
                percentile_us(late, 0.5), percentile_us(late, 0.99), percentile_us(late, 1));
    for (std::size_t i = 0; i < 3 && i < gaps.size(); ++i)
      std::printf(" %.0f", double(gaps[i]) / 1e3);
    std::printf("\n");
  }
  std::printf("firings per stage in 50 ms windows (thread of the last one):\n");
  constexpr I64 window = 50'000'000;
  std::vector<std::size_t> at(fired.size(), 0);
  for (I64 end = window; end < last + window; end += window) {
    std::printf("  t < %5lld ms:", static_cast<long long>(end / 1'000'000));
    for (std::size_t k = 0; k < fired.size(); ++k) {
      std::size_t n = 0;
      long thread = 0;
      for (; at[k] < fired[k].size() && fired[k][at[k]].at_ns < end; ++at[k], ++n)
        thread = fired[k][at[k]].thread;
      if (n == 0)
        std::printf(" %16s", "-");
      else
        std::printf(" %7zu (%6ld)", n, thread);
    }
    std::printf("\n");
  }
  return 0;
}

I64 arg(int argc, char** argv, int i, I64 otherwise) {
  return argc > i ? std::atoll(argv[i]) : otherwise;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "futex") return futex_probe(static_cast<int>(arg(argc, argv, 2, 2000)));
  if (mode == "flood")
    return flood(arg(argc, argv, 2, 4), arg(argc, argv, 3, 10'000), arg(argc, argv, 4, 4'000'000));
  if (mode == "slack" && argc > 3) {
    if (prctl(PR_SET_TIMERSLACK, std::strtoul(argv[2], nullptr, 10), 0, 0, 0) != 0) {
      std::perror("timer_probe: prctl(PR_SET_TIMERSLACK)");
      return 1;
    }
    execvp(argv[3], argv + 3);
    std::perror("timer_probe: execvp");
    return 1;
  }
  std::fprintf(stderr,
               "usage: timer_probe futex [N] | flood [STAGES PENDING FIRINGS] | "
               "slack NS PROGRAM [ARGS...]\n");
  return 2;
}
