// libFuzzer target: the fuzzer's bytes are the entropy of the shared random-graph model
// (support/random_graph.hpp) with its wild knobs: stages of every kind with random names,
// instances and options, out-of-range values included; dispatchers with random partitions; extra
// subscriptions, duplicates, self-loops and cycles included. The graph is declared through the
// public builder, then compiled. compile() must return or throw sluice::option_error whose every
// line names a stage (or is a cycle or an empty name); Stage::partition() may throw option_error
// for invalid dispatcher options (documented). Small graphs that compiled are also run to
// completion in manual mode (tiny event counts). Anything else (another exception, a compile()
// message that names no stage, a run that cannot finish, events lost by a finished run, a crash,
// a sanitizer report) is a finding: the target prints the graph and aborts.
//
// Left out on purpose (known findings, see the audit report; they would be found at once and
// hide everything else): subscribing to a stage of another Graph (out-of-bounds read in
// compile()), push_source capacities above INT_MAX (std::counting_semaphore overflow), huge
// instance counts (compile() time and memory grow with them), RunOptions::concurrency far above
// the core count, max_demand near 2^30 in runs (each edge allocates 2 * max_demand events), and
// line breaks in stage names (they split compile()'s one-problem-per-line message).
//
// SLUICE_FUZZ_VERBOSE=1 prints each input's graph and outcome (to describe a corpus entry).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>
#include <vector>

#include <sluice/sluice.hpp>

#include "support/random_graph_builder.hpp"
#include "support/stages.hpp"
#include <fuzzer/FuzzedDataProvider.h>

namespace {

namespace rg = sluice_test::rg;

/// The fuzzer's bytes as the generator's entropy. Run out, they draw the smallest numbers and
/// no chances: a plain graph.
class Bytes final : public rg::Entropy {
 public:
  explicit Bytes(FuzzedDataProvider& in) : in_(in) {}
  std::uint64_t number(std::uint64_t lo, std::uint64_t hi) override {
    return in_.ConsumeIntegralInRange<std::uint64_t>(lo, hi);
  }
  bool chance(double p) override { return 256 - in_.ConsumeIntegral<std::uint8_t>() <= p * 256; }
  std::string bytes(std::size_t max) override { return in_.ConsumeRandomLengthString(max); }

 private:
  FuzzedDataProvider& in_;
};

rg::Knobs knobs() {
  rg::Knobs k;
  k.shape = rg::Shape::dag;
  k.wild = true;
  k.min_stages = 1;
  k.max_stages = 8;
  k.source_forms = {rg::Form::handler, rg::Form::generator, rg::Form::range, rg::Form::push};
  k.stage_forms = {rg::Form::handler, rg::Form::map, rg::Form::filter, rg::Form::flat_map};
  k.sink_forms = {rg::Form::handler, rg::Form::for_each, rg::Form::collect, rg::Form::stream};
  k.broadcast = 0.3;
  k.partition = 0.3;
  k.min_demand = 0.3;
  k.cancel_modes = true;
  k.source_buffer = 0.2;
  k.stage_buffer = 0.2;
  k.max_events = 20;
  k.random_run = true;
  return k;
}

// ---- the stages ---------------------------------------------------------------------------------

struct AddOne {  // a class producer_consumer that can read a broadcast's shared batch
  void handle_events(std::span<const int> in, sluice::Context<int>& ctx) {
    for (int x : in)
      ctx.emit(x + 1);
  }
};

struct MutSink {  // refused under a broadcast (it would modify shared events)
  void handle_events(std::span<int> in, sluice::Context<void>&) {
    for (auto& x : in)
      x = 0;
  }
};

std::uint64_t key(int x) {
  return static_cast<std::uint64_t>(x);
}

/// Each stage's code for the shared builder: int events, a few of each.
struct Code {
  const rg::GraphSpec& spec;

  int events(std::size_t i) const {
    auto& c = spec.stages[i].counts;
    return c.empty() ? 0 : static_cast<int>(c[0]);
  }
  sluice_test::CountingSource<int> source(std::size_t i) const { return {0, events(i)}; }
  auto generator(std::size_t i) const {
    return [k = events(i)]() mutable { return k > 0 ? std::optional<int>(k--) : std::nullopt; };
  }
  std::vector<int> range(std::size_t i) const {
    return std::vector<int>(static_cast<std::size_t>(events(i)), 1);
  }
  AddOne stage(std::size_t) const { return {}; }
  auto map(std::size_t) const {
    return [](int x) { return x + 1; };
  }
  auto filter(std::size_t i) const {
    return [f = spec.stages[i].filter](const int& x) { return f.keeps(key(x)); };
  }
  auto flat_map(std::size_t) const {
    return [](int x) { return std::vector<int>{x, -x}; };
  }
  sluice_test::NullSink<const int> sink(std::size_t) const { return {}; }
  MutSink mutating_sink(std::size_t) const { return {}; }
  auto for_each(std::size_t) const {
    return [](int) {};
  }
  auto selector(std::size_t i, std::size_t k) const {
    return [sel = spec.stages[i].inputs[k].selector](const int& x) { return sel.accepts(key(x)); };
  }
  template <class Declare>
  void partition(std::size_t i, Declare&& declare) const {
    const auto p = spec.stages[i].partition;  // may send events to an unknown partition
    if (p.by == rg::Partitioning::By::name)
      declare([p](int& x) { return p.name_of(key(x)); });
    else
      declare([p](int& x) { return p.of(key(x)); });
  }
};

// ---- the oracle ---------------------------------------------------------------------------------

struct Finding {
  const rg::GraphSpec& spec;
  std::string notes;  // what happened after the spec was drawn

  [[noreturn]] void operator()(const std::string& what) const {
    std::fprintf(stderr, "\n==== sluice fuzz finding: %s\n---- graph:\n%s%s----\n", what.c_str(),
                 spec.describe().c_str(), notes.c_str());
    std::abort();
  }
};

/// Every line of compile()'s message names a stage (or is one of the graph-wide problems).
void check_message(std::string_view all, const Finding& finding) {
  std::size_t at = 0;
  while (at <= all.size()) {
    auto nl = all.find('\n', at);
    if (nl == std::string_view::npos) nl = all.size();
    const auto line = all.substr(at, nl - at);
    const bool ok = line.starts_with("stage '") || line == "a stage needs a non-empty name" ||
                    line.starts_with("the subscriptions form a cycle through stage '");
    if (!ok)
      finding("a compile() problem that names no stage: \"" + std::string(line) + "\"\nwhole:\n" +
              std::string(all));
    at = nl + 1;
  }
}

/// Why a valid graph would not finish on its own, or would be too big to fuzz (empty: runs).
std::string not_runnable(const rg::GraphSpec& spec) {
  auto input = [](const rg::Input& in) -> std::string {
    if (in.manual) return "manual demand";
    if (in.max_demand > 4096) return "large max_demand";
    return {};
  };
  for (auto& s : spec.stages) {
    if (s.form == rg::Form::stream) return "a stream needs a reader";
    if (s.accumulate) return "accumulate demand mode";
    if (s.stray)
      if (auto why = input(*s.stray); !why.empty()) return why;
    for (auto& in : s.inputs)
      if (auto why = input(in); !why.empty()) return why;
  }
  return {};
}

void run_it(const sluice::CompiledGraph& compiled, rg::Built<int>& built, Finding& finding) {
  const auto& spec = finding.spec;
  auto ro = sluice_test::quiet(spec.run.options());
  ro.manual = true;
  if (ro.quantum == 0 || ro.concurrency < 0) {
    std::string expected;
    if (ro.quantum == 0) expected += "run option quantum must be at least 1, got: 0";
    if (ro.concurrency < 0)
      expected += std::string(expected.empty() ? "" : "\n") +
                  "run option concurrency must be 0 (hardware) or more, got: " +
                  std::to_string(ro.concurrency);
    try {
      auto run = compiled.run(ro);
      finding("invalid run options accepted");
    } catch (const sluice::option_error& e) {
      // The run options' problems first; then what start() finds in the graph, if anything (a
      // max_demand whose edges cannot fit in memory), each naming its stage.
      const std::string_view what = e.what();
      if (!what.starts_with(expected) ||
          (what.size() > expected.size() && what[expected.size()] != '\n'))
        finding("run options refused with \"" + std::string(what) + "\", expected \"" + expected +
                "\"");
      if (what.size() > expected.size()) check_message(what.substr(expected.size() + 1), finding);
    }
    return;
  }
  if (auto why = not_runnable(spec); !why.empty()) {
    finding.notes += "---- not run: " + why + "\n";
    return;
  }
  for (auto& h : built.pushes)
    h.close();  // a closed push source finishes once its (empty) stream is taken
  bool dynamic = false;
  for (auto& s : spec.stages)
    dynamic = dynamic || s.dynamic;
  auto run = compiled.run(ro);
  try {
    if (dynamic)
      run.drain();
    else
      run.wait();
  } catch (const sluice::stage_error&) {
    return;  // a hash computing an unknown partition: a documented run failure
  } catch (const std::logic_error& e) {
    finding(std::string("a compiled graph cannot finish: ") + e.what());
  }
  const auto m = run.metrics();
  if (m.undelivered() != 0)
    finding("a finished run left " + std::to_string(m.undelivered()) + " events undelivered");
}

bool verbose() {
  static const bool v = std::getenv("SLUICE_FUZZ_VERBOSE") != nullptr;
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  Bytes entropy(in);
  const auto spec = rg::generate(entropy, knobs());
  Finding finding{spec, {}};
  std::string outcome;
  try {
    Code code{spec};
    auto built = rg::build<int>(spec, code);
    for (auto& refused : built.refused_dispatchers)
      finding.notes += "---- option_error at declaration: " + refused + "\n";
    (void)built.graph.to_dot();
    std::optional<sluice::CompiledGraph> compiled;
    try {
      compiled.emplace(built.graph.compile());
      outcome = "compiled";
    } catch (const sluice::option_error& e) {
      check_message(e.what(), finding);
      outcome = std::string("option_error:\n") + e.what();
    }
    if (compiled) run_it(*compiled, built, finding);
  } catch (const std::exception& e) {
    finding(std::string("unexpected exception: ") + typeid(e).name() + ": " + e.what());
  } catch (...) {
    finding("unexpected non-std exception");
  }
  if (verbose())
    std::fprintf(stderr, "---- graph:\n%s%s---- %s\n", spec.describe().c_str(),
                 finding.notes.c_str(), outcome.c_str());
  return 0;
}
