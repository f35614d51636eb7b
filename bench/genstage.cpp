// The genstage engine (genstage.hpp): finding Elixir and the reference scripts, compiling
// gen_stage once, running gs_bench.exs in a child process and reading its RESULT line.
#include "genstage.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>
#include <vector>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

#ifndef SLUICE_GENSTAGE_BENCH_DIR
#define SLUICE_GENSTAGE_BENCH_DIR ""
#endif
#ifndef SLUICE_GENSTAGE_EBIN_DIR
#define SLUICE_GENSTAGE_EBIN_DIR ""
#endif

namespace sluice_bench::genstage {
namespace {

/// `text` on one line, its lines joined by " | " without their indentation (sluice-bench passes
/// an error on as one line), at most ~400 characters.
std::string one_line(std::string_view text) {
  std::string out;
  bool line_start = true, gap = false;
  for (char c : text) {
    if (c == '\n' || c == '\r') {
      gap = !out.empty();
      line_start = true;
      continue;
    }
    if (line_start && (c == ' ' || c == '\t')) continue;
    if (gap) out += " | ";
    gap = line_start = false;
    out += c;
  }
  if (out.size() > 400) out = out.substr(0, 400) + " ...";
  return out.empty() ? "(nothing)" : out;
}

[[noreturn]] void fail(std::string_view variant, const std::string& what, std::string_view output) {
  throw std::runtime_error("genstage " + std::string(variant) + ": " + what +
                           "; its output: " + one_line(output));
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

std::string bench_dir() {
  return env_or("SLUICE_GENSTAGE_BENCH", SLUICE_GENSTAGE_BENCH_DIR);
}

std::string ebin_dir() {
  auto d = env_or("SLUICE_GENSTAGE_EBIN", SLUICE_GENSTAGE_EBIN_DIR);
  if (d.empty()) d = env_or("TMPDIR", "/tmp") + "/sluice_genstage_ebin";
  return d;
}

bool on_path(const std::string& program) {
  const std::string path = env_or("PATH", "/usr/bin:/bin");
  for (std::size_t at = 0; at <= path.size();) {
    const auto colon = std::min(path.find(':', at), path.size());
    const auto dir = colon == at ? std::string(".") : path.substr(at, colon - at);
    if (access((dir + "/" + program).c_str(), X_OK) == 0) return true;
    at = colon + 1;
  }
  return false;
}

struct Ran {
  int status = 0;      // waitpid's
  std::string output;  // stdout and stderr
};

/// Runs `argv` (looked up on PATH; no shell) with stdout and stderr into one pipe.
Ran spawn(const std::vector<std::string>& argv) {
  int fd[2];
  if (pipe(fd) != 0) throw std::runtime_error("genstage: pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addclose(&actions, fd[0]);
  posix_spawn_file_actions_adddup2(&actions, fd[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, fd[1], STDERR_FILENO);
  posix_spawn_file_actions_addclose(&actions, fd[1]);
  std::vector<char*> args;
  for (auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fd[1]);
  if (rc != 0) {
    close(fd[0]);
    throw std::runtime_error("genstage: cannot start " + argv[0] + " (error " + std::to_string(rc) +
                             ")");
  }
  Ran r;
  char buf[4096];
  for (ssize_t n; (n = read(fd[0], buf, sizeof buf)) > 0;)
    r.output.append(buf, static_cast<std::size_t>(n));
  close(fd[0]);
  waitpid(pid, &r.status, 0);
  return r;
}

bool exited_ok(int status) {
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::string status_text(int status) {
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "exit status " + std::to_string(WEXITSTATUS(status));
}

template <class T>
bool parse_number(std::string_view s, T& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

Result parse_result(std::string_view variant, std::string_view output) {
  std::string_view line;
  for (std::size_t at = 0; at < output.size();) {
    const auto nl = std::min(output.find('\n', at), output.size());
    auto l = output.substr(at, nl - at);
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    if (l.starts_with("RESULT ")) line = l;
    at = nl + 1;
  }
  if (line.empty()) fail(variant, "no RESULT line", output);
  std::map<std::string_view, std::string_view> fields;
  for (std::size_t at = 7; at < line.size();) {
    const auto sp = std::min(line.find(' ', at), line.size());
    const auto word = line.substr(at, sp - at);
    if (const auto eq = word.find('='); eq != std::string_view::npos)
      fields[word.substr(0, eq)] = word.substr(eq + 1);
    at = sp + 1;
  }
  for (const char* key : {"name", "events", "seconds", "ok"})
    if (!fields.contains(key)) fail(variant, std::string("RESULT line without ") + key, output);
  Result r;
  r.name = fields["name"];
  if (r.name != variant) fail(variant, "RESULT line names " + r.name, output);
  if (fields["ok"] != "1") fail(variant, "RESULT says ok=" + std::string(fields["ok"]), output);
  if (!parse_number(fields["events"], r.events) || r.events <= 0)
    fail(variant, "RESULT has bad events=" + std::string(fields["events"]), output);
  if (!parse_number(fields["seconds"], r.seconds) || !std::isfinite(r.seconds) || r.seconds <= 0)
    fail(variant, "RESULT has bad seconds=" + std::string(fields["seconds"]), output);
  return r;
}

std::int64_t scaled_events(std::int64_t events, std::int64_t max_demand) {
  const std::int64_t cap = max_demand < 10     ? 200'000
                           : max_demand < 100  ? 2'000'000
                           : max_demand < 1000 ? 10'000'000
                                               : 20'000'000;
  return std::min(events, cap);
}

std::string unavailable() {
  const auto dir = bench_dir();
  if (dir.empty())
    return "no genstage-bench folder known: set SLUICE_GENSTAGE_BENCH to "
           "../shared/genstage-bench";
  if (access((dir + "/gs_bench.exs").c_str(), R_OK) != 0 ||
      access((dir + "/build.sh").c_str(), R_OK) != 0)
    return "no gs_bench.exs and build.sh in " + dir + " (SLUICE_GENSTAGE_BENCH names the folder)";
  if (!on_path("elixir") || !on_path("elixirc"))
    return "elixir not found: tools/install_deps.sh --genstage installs it";
  return "";
}

std::string ebin() {
  static std::mutex m;
  static std::string built;
  std::lock_guard lock(m);
  if (!built.empty()) return built;
  const auto dir = ebin_dir();
  const auto stamp = dir + "/.sluice_built";  // written once build.sh has succeeded
  if (access(stamp.c_str(), R_OK) != 0) {
    auto r = spawn({"bash", bench_dir() + "/build.sh", dir});
    if (!exited_ok(r.status))
      throw std::runtime_error("genstage: " + bench_dir() + "/build.sh " + dir + " failed (" +
                               status_text(r.status) + "): " + one_line(r.output));
    std::ofstream(stamp) << bench_dir() << '\n';
  }
  built = dir;
  return built;
}

Result run(const std::string& variant, std::int64_t events, std::int64_t max_demand) {
  auto r = spawn({"elixir", "-pa", ebin(), bench_dir() + "/gs_bench.exs", variant,
                  std::to_string(events), std::to_string(max_demand)});
  if (!exited_ok(r.status)) fail(variant, "elixir ended with " + status_text(r.status), r.output);
  auto result = parse_result(variant, r.output);
  if (result.events != events)
    fail(variant,
         "ran " + std::to_string(result.events) + " events, asked " + std::to_string(events),
         r.output);
  return result;
}

}  // namespace sluice_bench::genstage
