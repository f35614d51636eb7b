// sluice-bench: runs named scenarios (or all of them) through Sluice's public builder API and
// through the alternatives a user could pick, in the same binary, and prints events/s, the ratio
// to each baseline, peak RSS and latency percentiles. Each measurement runs in its own child
// process (fork before any thread exists), so its peak RSS is its own. The genstage engine runs
// Elixir's GenStage (bench/genstage.hpp) where Elixir is installed, and is skipped with a note
// where it is not.
//
//   sluice-bench [SCENARIO...] [--events N] [--max-demand N] [--instances N]
//                [--repetitions N] [--engines E1,E2] [--json FILE] [--dot SCENARIO] [--list]
//                [--quick]
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sluice/sluice.hpp>

#include "genstage.hpp"
#include "scenarios.hpp"
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using namespace sluice_bench;

// ---- measuring in a child process ------------------------------------------------------------

struct Measured {
  std::string scenario, engine;
  I64 events = 0;
  std::optional<double> events_per_second;
  std::optional<std::uint64_t> peak_rss_bytes;
  std::optional<double> p50_ns, p99_ns;
  std::optional<double> cpu_percent;  // of one core (the timer scenarios)
  std::string error;
};

/// The median of `v`; none if it is empty.
std::optional<double> median(std::vector<double> v) {
  if (v.empty()) return std::nullopt;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// `v`, or "-" for none (a field of the child's line).
std::string field(const std::optional<double>& v) {
  return v ? std::to_string(*v) : std::string("-");
}

/// Runs `er` `repetitions` times in a child process; the median rate (and CPU) is reported.
Measured measure(const Scenario& s, const EngineRun& er, const Params& p) {
  Measured m{s.name, er.engine, 0, {}, {}, {}, {}, {}, {}};
  int fd[2];
  if (pipe(fd) != 0) throw std::runtime_error("pipe failed");
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {  // the child: measure, report one line, exit
    close(fd[0]);
    std::ostringstream out;
    try {
      std::vector<double> rates, cpu;
      Histogram latencies;
      I64 events = 0;
      for (int r = 0; r < p.repetitions; ++r) {
        auto o = er.run(p);
        events = o.events;
        if (o.has_rate) rates.push_back(double(o.events) / o.seconds);
        if (o.cpu_percent) cpu.push_back(*o.cpu_percent);
        latencies.merge(o.latency);
      }
      // The peak RSS of this process, or of its largest child (the genstage engine's VM) if
      // larger.
      rusage self{}, children{};
      getrusage(RUSAGE_SELF, &self);
      getrusage(RUSAGE_CHILDREN, &children);
      std::optional<double> p50, p99;
      if (!latencies.empty()) {
        p50 = latencies.percentile(0.5);
        p99 = latencies.percentile(0.99);
      }
      // ok EVENTS RATE RSS P50 P99 CPU, "-" for what was not measured.
      out << "ok " << events << ' ' << field(median(rates)) << ' '
          << static_cast<std::uint64_t>(std::max(self.ru_maxrss, children.ru_maxrss)) * 1024 << ' '
          << field(p50) << ' ' << field(p99) << ' ' << field(median(cpu));
    } catch (const std::exception& e) {
      out << "error " << e.what();
    }
    const auto line = out.str();
    [[maybe_unused]] auto w = write(fd[1], line.data(), line.size());
    close(fd[1]);
    _exit(0);
  }
  close(fd[1]);
  std::string line;
  char buf[512];
  for (ssize_t n; (n = read(fd[0], buf, sizeof buf)) > 0;)
    line.append(buf, static_cast<std::size_t>(n));
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  std::istringstream in(line);
  std::string word;
  in >> word;
  if (word == "ok") {
    auto number = [&in]() -> std::optional<double> {
      std::string f;
      in >> f;
      if (f.empty() || f == "-") return std::nullopt;
      return std::stod(f);
    };
    std::uint64_t rss = 0;
    in >> m.events;
    m.events_per_second = number();
    in >> rss;
    m.peak_rss_bytes = rss;
    m.p50_ns = number();
    m.p99_ns = number();
    m.cpu_percent = number();
  } else if (word == "error") {
    std::getline(in, m.error);
    if (!m.error.empty() && m.error.front() == ' ') m.error.erase(0, 1);
  } else {
    m.error = WIFSIGNALED(status) ? numbered("crashed by signal ", WTERMSIG(status))
                                  : numbered("no result, exit status ", status);
  }
  return m;
}

// ---- output --------------------------------------------------------------------------------

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string json_number(const std::optional<double>& v, int decimals = 1) {
  if (!v || !std::isfinite(*v)) return "null";
  return fixed(*v, decimals);
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
      continue;
    }
    out += c;
  }
  return out + "\"";
}

bool is_baseline(const std::string& engine) {
  return engine != "sluice";
}

/// Ratios of the Sluice result to each baseline measured in the same scenario.
std::map<std::string, double> ratios(const Measured& m, const std::vector<Measured>& all) {
  std::map<std::string, double> r;
  if (is_baseline(m.engine) || !m.events_per_second) return r;
  for (auto& b : all)
    if (b.scenario == m.scenario && is_baseline(b.engine) && b.events_per_second)
      r[b.engine] = *m.events_per_second / *b.events_per_second;
  return r;
}

void write_json(const std::string& path, const std::vector<Measured>& results) {
  std::string out = "[\n";
  for (std::size_t i = 0; i < results.size(); ++i) {
    auto& m = results[i];
    out += "  {\"scenario\": " + json_string(m.scenario) +
           ", \"engine\": " + json_string(m.engine) + ", \"events\": " + std::to_string(m.events) +
           ", \"events_per_second\": " + json_number(m.events_per_second) +
           ", \"peak_rss_bytes\": " +
           (m.peak_rss_bytes ? std::to_string(*m.peak_rss_bytes) : std::string("null")) +
           ", \"p50_ns\": " + json_number(m.p50_ns) + ", \"p99_ns\": " + json_number(m.p99_ns) +
           ", \"cpu_percent\": " + json_number(m.cpu_percent, 4) + ", \"ratio_to\": {";
    bool first = true;
    for (auto& [b, r] : ratios(m, results)) {
      out += (first ? "" : ", ") + json_string(b) + ": " + fixed(r, 4);
      first = false;
    }
    out += "}";
    if (!m.error.empty()) out += ", \"error\": " + json_string(m.error);
    out += i + 1 < results.size() ? "},\n" : "}\n";
  }
  out += "]\n";
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) throw std::runtime_error("cannot write " + path);
  std::fwrite(out.data(), 1, out.size(), f);
  std::fclose(f);
}

/// 20000000 -> "20M", 200000 -> "200k", 1000 -> "1000".
std::string short_count(I64 n) {
  if (n >= 1'000'000 && n % 100'000 == 0)
    return fixed(double(n) / 1e6, n % 1'000'000 == 0 ? 0 : 1) + "M";
  if (n >= 10'000 && n % 1000 == 0) return std::to_string(n / 1000) + "k";
  return std::to_string(n);
}

void print_table(const std::vector<Measured>& results) {
  std::printf("%-20s %-24s %7s %12s %10s %9s %9s %7s  %s\n", "scenario", "engine", "events",
              "M events/s", "RSS MiB", "p50 us", "p99 us", "CPU %", "sluice / baseline");
  std::string last;
  for (auto& m : results) {
    if (m.scenario != last && !last.empty()) std::printf("\n");
    last = m.scenario;
    if (!m.error.empty()) {
      std::printf("%-20s %-24s FAILED: %s\n", m.scenario.c_str(), m.engine.c_str(),
                  m.error.c_str());
      continue;
    }
    std::string r;
    for (auto& [b, v] : ratios(m, results))
      r += (r.empty() ? "" : ", ") + b + " " + fixed(v, v < 10 ? 2 : 0) + "x";
    auto shown = [](const std::optional<double>& v, double scale) {
      if (!v) return std::string("-");
      const double x = *v / scale;
      if (x >= 1) return fixed(x, 1);
      char buf[32];  // three significant digits: a timer scenario's 0.00102 M/s
      std::snprintf(buf, sizeof buf, "%.3g", x);
      return std::string(buf);
    };
    std::printf("%-20s %-24s %7s %12s %10s %9s %9s %7s  %s\n", m.scenario.c_str(), m.engine.c_str(),
                short_count(m.events).c_str(), shown(m.events_per_second, 1e6).c_str(),
                fixed(double(*m.peak_rss_bytes) / (1 << 20), 1).c_str(),
                m.p50_ns ? fixed(*m.p50_ns / 1e3, 1).c_str() : "-",
                m.p99_ns ? fixed(*m.p99_ns / 1e3, 1).c_str() : "-", shown(m.cpu_percent, 1).c_str(),
                r.c_str());
  }
}

void progress(std::size_t done, std::size_t total, const std::string& what, bool tty) {
  if (tty) {
    constexpr int width = 30;
    const int filled = static_cast<int>(double(done) / double(total) * width);
    std::fprintf(stderr, "\r[%s%s] %zu/%zu %-40.40s", std::string(std::size_t(filled), '#').c_str(),
                 std::string(std::size_t(width - filled), '.').c_str(), done, total, what.c_str());
    if (done == total) std::fprintf(stderr, "\r%*s\r", width + 60, "");
  } else if (done < total) {
    std::fprintf(stderr, "sluice-bench: %zu/%zu %s\n", done + 1, total, what.c_str());
  }
  std::fflush(stderr);
}

I64 parse_count(const std::string& option, const char* value) {
  I64 v = 0;
  const auto* end = value + std::strlen(value);
  auto [p, ec] = std::from_chars(value, end, v);
  if (ec != std::errc() || p != end || v < 1)
    throw std::invalid_argument("option " + option +
                                " must be a positive integer, got: " + std::string(value));
  return v;
}

int usage(int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: sluice-bench [SCENARIO...] [--events N] [--max-demand N] [--instances N]\n"
               "                    [--repetitions N] [--engines E1,E2] [--json FILE]\n"
               "                    [--dot SCENARIO] [--list] [--quick]\n"
               "  Runs the named scenarios (default: all) with Sluice and the baselines in the\n"
               "  same binary; prints events/s, peak RSS, p50/p99 latency and Sluice's ratio to\n"
               "  each baseline. --quick: 2 M events, 1 repetition (README's main job).\n");
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Params params;
    std::vector<std::string> names;
    std::string json, dot;
    std::vector<std::string> engines;  // empty: all
    bool list = false;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> const char* {
        if (i + 1 >= argc) throw std::invalid_argument("option " + a + " needs a value");
        return argv[++i];
      };
      if (a == "--events") {
        params.events = parse_count(a, value());
      } else if (a == "--max-demand") {
        params.max_demand = parse_count(a, value());
      } else if (a == "--instances") {
        params.instances = static_cast<std::size_t>(parse_count(a, value()));
      } else if (a == "--repetitions") {
        params.repetitions = static_cast<int>(parse_count(a, value()));
      } else if (a == "--json") {
        json = value();
      } else if (a == "--dot") {
        dot = value();
      } else if (a == "--engines") {
        const std::string given = value();
        for (std::size_t at = 0; at <= given.size();) {
          const auto comma = std::min(given.find(',', at), given.size());
          engines.push_back(given.substr(at, comma - at));
          at = comma + 1;
        }
      } else if (a == "--list") {
        list = true;
      } else if (a == "--quick") {
        params.events = 2'000'000;
        params.repetitions = 1;
      } else if (a == "--help" || a == "-h") {
        return usage(0);
      } else if (a.starts_with("-")) {
        std::fprintf(stderr, "sluice-bench: unknown option %s\n", a.c_str());
        return usage(2);
      } else {
        names.push_back(a);
      }
    }
    const auto all = scenarios();
    auto find = [&](const std::string& n) -> const Scenario& {
      for (auto& s : all)
        if (s.name == n) return s;
      throw std::invalid_argument("unknown scenario '" + n + "' (--list shows them)");
    };
    if (list) {
      for (auto& s : all) {
        std::printf("%-20s %s; engines:", s.name.c_str(), s.what.c_str());
        for (auto& e : s.engines)
          std::printf(" %s", e.engine.c_str());
        std::printf("\n");
      }
      return 0;
    }
    if (!dot.empty()) {
      sluice::Graph g;
      find(dot).dot(g, params);
      std::printf("%s", g.to_dot().c_str());
      return 0;
    }
    std::vector<const Scenario*> chosen;
    for (auto& n : names)
      chosen.push_back(&find(n));
    if (chosen.empty())
      for (auto& s : all)
        chosen.push_back(&s);
    auto wanted = [&](const EngineRun& e) {
      return engines.empty() ||
             std::find(engines.begin(), engines.end(), e.engine) != engines.end();
    };
    for (auto& e : engines) {
      bool known = false;
      for (auto& s : all)
        for (auto& r : s.engines)
          known = known || r.engine == e;
      if (!known) throw std::invalid_argument("unknown engine '" + e + "' (--list shows them)");
    }
    // GenStage needs Elixir and ../shared/genstage-bench: without them its engine is skipped,
    // with one note, and the others run. gen_stage is compiled here, once, before any run.
    std::string genstage_note;
    const bool wants_genstage = [&] {
      for (auto* s : chosen)
        for (auto& e : s->engines)
          if (e.engine == genstage::engine_name && wanted(e)) return true;
      return false;
    }();
    bool skip_genstage = false;
    if (wants_genstage) {
      std::string why = genstage::unavailable();
      if (why.empty()) {
        try {
          genstage::ebin();
        } catch (const std::exception& e) {
          why = e.what();
        }
      }
      skip_genstage = !why.empty();
      genstage_note = skip_genstage ? "genstage: skipped (" + why + ")"
                                    : std::string(
                                          "genstage: Elixir's GenStage running "
                                          "gs_bench.exs (--list names each scenario's "
                                          "shape), timed by itself without the VM's "
                                          "start-up;\n  ") +
                                          genstage::scaling_note + "; RSS: the VM's peak";
    }
    auto runs = [&](const EngineRun& e) {
      return wanted(e) && !(skip_genstage && e.engine == genstage::engine_name);
    };
    std::size_t total = 0, done = 0;
    for (auto* s : chosen)
      for (auto& e : s->engines)
        total += runs(e) ? 1 : 0;
    const bool tty = isatty(STDERR_FILENO) != 0;
    std::vector<Measured> results;
    for (auto* s : chosen)
      for (auto& e : s->engines) {
        if (!runs(e)) continue;
        progress(done, total, s->name + " / " + e.engine, tty);
        results.push_back(measure(*s, e, params));
        ++done;
      }
    progress(done, total, "", tty);
    std::printf(
        "sluice-bench: %lld events per run (fewer where a scenario says), max_demand %lld, "
        "median of %d, %u hardware threads\n\n",
        static_cast<long long>(params.events), static_cast<long long>(params.max_demand),
        params.repetitions, std::thread::hardware_concurrency());
    print_table(results);
    if (!genstage_note.empty()) std::printf("\n%s\n", genstage_note.c_str());
    if (!json.empty()) write_json(json, results);
    for (auto& m : results)
      if (!m.error.empty()) return 1;
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sluice-bench: %s\n", e.what());
    return 2;
  }
}
