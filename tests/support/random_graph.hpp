#pragma once
// Random graphs, one model for the stress suite, the reliability suite and the fuzz target:
//   - a plain-data spec of a graph (GraphSpec): stages with their role, how the test writes them
//     (Form), instances, options, subscriptions and dispatchers, and the run options;
//   - a generator (generate) that draws a spec from an Entropy (a seed, or the fuzzer's bytes)
//     within Knobs: a DAG of any shape (stress, fuzz) or a line, a source then a chain then the
//     sinks behind the chain's last stage (reliability); valid graphs, or wild ones (fuzz) with
//     names and values out of range, options where they do not apply, cycles and duplicates;
//   - a builder (random_graph_builder.hpp) that declares a spec through the public builder, with
//     the test's own code for each stage.
// The spec is data only: what a selector accepts, what a filter keeps and where a partition
// sends an event are functions of the event's 64-bit key (the test says what an event's key is),
// so the stages that run a graph and the checks that check it compute the same answers.
// Public API only.

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sluice/sluice.hpp>

namespace sluice_test::rg {

// ---- where the randomness comes from ------------------------------------------------------------

class Entropy {
 public:
  virtual ~Entropy() = default;
  /// A whole number in [lo, hi].
  virtual std::uint64_t number(std::uint64_t lo, std::uint64_t hi) = 0;
  /// True with probability p.
  virtual bool chance(double p) = 0;
  /// Up to `max` bytes of any value.
  virtual std::string bytes(std::size_t max) = 0;

  /// A number of type T in [lo, hi] (signed ranges included).
  template <std::integral T>
  T uniform(T lo, T hi) {
    const auto span = static_cast<std::uint64_t>(hi) - static_cast<std::uint64_t>(lo);
    return static_cast<T>(static_cast<std::uint64_t>(lo) + number(0, span));
  }
  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v.at(uniform<std::size_t>(0, v.size() - 1));
  }
  template <class T, std::size_t N>
  const T& pick(const T (&v)[N]) {
    return v[uniform<std::size_t>(0, N - 1)];
  }
};

/// A seeded generator: the same seed, the same draws.
class Seeded final : public Entropy {
 public:
  explicit Seeded(std::uint64_t seed) : g_(seed) {}
  std::uint64_t number(std::uint64_t lo, std::uint64_t hi) override {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(g_);
  }
  bool chance(double p) override { return std::bernoulli_distribution(p)(g_); }
  std::string bytes(std::size_t max) override {
    std::string s(uniform<std::size_t>(0, max), '\0');
    for (auto& c : s)
      c = static_cast<char>(number(0, 255));
    return s;
  }

 private:
  std::mt19937_64 g_;
};

// ---- keys ---------------------------------------------------------------------------------------

inline std::uint64_t mix(std::uint64_t x) {  // splitmix64's finalizer
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// A deterministic number per event key and salt: selectors, filters and partitions use it.
inline std::uint64_t hash(std::uint64_t key, std::uint64_t salt) {
  return mix(key ^ mix(salt));
}

// ---- the spec -----------------------------------------------------------------------------------

/// A stage's role: producer, producer_consumer or consumer.
enum class Role : std::uint8_t { source, stage, sink };

/// How the test writes a stage: a class of its own (every role), or one of the builder's
/// function stages.
enum class Form : std::uint8_t {
  handler,
  generator,  // sources: from_generator
  range,      // sources: from_range
  push,       // sources: push_source (the test pushes)
  map,
  filter,
  flat_map,
  for_each,
  collect,
  stream,
};

enum class Dispatch : std::uint8_t { demand, broadcast, partition };

/// How fast a stage's code is meant to run (the test's code decides what slow means).
enum class Speed : std::uint8_t { fast, slow, bursty };

/// A source's event count that never runs out.
inline constexpr std::uint64_t endless = std::numeric_limits<std::uint64_t>::max();

/// A broadcast subscription's selector: accepts an event when hash(key) % modulus is (or is not)
/// `residue`.
struct Selector {
  bool on = false;
  std::uint64_t salt = 0, modulus = 1, residue = 0;
  bool accept_equal = false;  // true: few events pass; false: most do
  bool wrong_type = false;    // wild: a selector of another event type
  bool accepts(std::uint64_t key) const {
    return !on || (hash(key, salt) % modulus == residue) == accept_equal;
  }
  /// One that rejects some events: modulus 2-5, any residue, either way.
  static Selector drawn(Entropy& e) {
    Selector s;
    s.on = true;
    s.salt = e.uniform<std::uint64_t>(0, 1'000'000);
    s.modulus = e.uniform<std::uint64_t>(2, 5);
    s.residue = e.uniform<std::uint64_t>(0, s.modulus - 1);
    s.accept_equal = e.chance(0.5);
    return s;
  }
};

/// What a producer_consumer keeps: all events (modulus 0), or those whose hash(key) % modulus is
/// not 0.
struct Filter {
  std::uint64_t modulus = 0, salt = 0;
  bool keeps(std::uint64_t key) const { return modulus == 0 || hash(key, salt) % modulus != 0; }
  /// One that drops a half to a quarter of the events.
  static Filter drawn(Entropy& e) {
    Filter f;
    f.modulus = e.uniform<std::uint64_t>(2, 4);
    f.salt = e.uniform<std::uint64_t>(0, 1'000'000);
    return f;
  }
};

/// A partition dispatcher. `by_key`: an event's partition is its partition key (hash(key) %
/// keys) modulo `modulus` (0: `count`), and with `drops` some keys are dropped (the hash returns
/// an empty optional); `by_name`: the partition named "even" or "odd" after the partition key;
/// `by_default`: the dispatcher's own hash (std::hash).
struct Partitioning {
  enum class By : std::uint8_t { key, name, default_hash };
  static constexpr std::uint64_t keys = 32;
  By by = By::key;
  std::int64_t count = 1;
  bool listed = false;  // wild: the partitions listed by name or number instead of counted
  std::vector<sluice::Partition> names;
  std::uint64_t salt = 0;
  std::int64_t modulus = 0;  // wild: may exceed the partitions (an unknown partition)
  bool drops = false;
  std::optional<std::int64_t> queue_size;

  std::uint64_t key(std::uint64_t k) const { return hash(k, salt) % keys; }
  std::optional<std::int64_t> of(std::uint64_t k) const {
    const auto pk = key(k);
    const auto m = modulus != 0 ? modulus : count;
    if ((drops && pk % 7 == 3) || m < 1) return std::nullopt;
    return static_cast<std::int64_t>(pk % static_cast<std::uint64_t>(m));
  }
  std::string name_of(std::uint64_t k) const { return key(k) % 2 == 0 ? "even" : "odd"; }
  sluice::Partitions partitions() const {
    return listed ? sluice::Partitions(names) : sluice::Partitions(count);
  }
};

/// A subscription, as the consumer declares it.
struct Input {
  std::size_t producer = 0;  // stage index
  std::int64_t max_demand = sluice::default_max_demand;
  std::optional<std::int64_t> min_demand;
  sluice::CancelMode cancel = sluice::CancelMode::permanent;
  Selector selector;
  // wild:
  std::optional<sluice::Partition> partition;
  bool manual = false;         // DemandControl::manual
  bool stage_options = false;  // also carries the stage's own options (compile() refuses them)

  /// GenStage's consumer cuts each message into chunks of at most this many events.
  std::int64_t chunk() const { return max_demand - min_demand.value_or(max_demand / 2); }
};

struct StageSpec {
  Role role = Role::source;
  Form form = Form::handler;
  std::string name;
  std::size_t instances = 1;
  Speed speed = Speed::fast;
  std::vector<std::uint64_t> counts;     // sources: events per instance (`endless`: no end)
  std::int64_t capacity = 1000;          // push sources and streams
  Filter filter;                         // producer_consumers
  Dispatch dispatch = Dispatch::demand;  // producers
  Partitioning partition;                // when dispatch == partition
  std::optional<std::int64_t> buffer_size;
  std::vector<Input> inputs;             // stages and sinks; inputs[0] is declared with the stage
  std::vector<std::size_t> subscribers;  // producers: the stages subscribed to it
  bool mutates = false;                  // handler sinks: takes std::span<E> (a broadcast refuses)
  sluice::Restart restart = sluice::Restart::never;  // StageOptions::restart (a test sets it)
  /// A timer (a test sets it; the test's code decides what its ticks do): a period, 0 for none.
  std::chrono::microseconds tick{0};
  /// With a tick: each instance's first tick once it has made this many calls fails, once.
  std::optional<std::uint64_t> tick_fault_after;
  // wild:
  bool keep_first = false, accumulate = false, dynamic = false;
  std::optional<Input> stray;  // sources: subscription options where none apply

  bool is_producer() const { return role != Role::sink; }
  const Input* input_from(std::size_t producer) const {
    for (auto& in : inputs)
      if (in.producer == producer) return &in;
    return nullptr;
  }
};

struct RunSpec {
  int concurrency = 0;
  std::size_t quantum = 64;
  bool direct_handoff = true;
  bool fail_fast = true;
  sluice::RunOptions options() const {
    sluice::RunOptions o;
    o.concurrency = concurrency;
    o.quantum = quantum;
    o.direct_handoff = direct_handoff;
    o.fail_fast = fail_fast;
    return o;
  }
};

struct GraphSpec {
  std::optional<std::uint64_t> seed;  // when drawn from a seed
  std::vector<StageSpec> stages;
  RunSpec run;

  /// The graph, one stage per line, for a failure's message.
  std::string describe() const;
  /// An instance's name as metrics and errors give it: the stage's name, "#i" after it when the
  /// stage has several instances.
  std::string instance_name(std::size_t stage, std::size_t instance) const;
  /// The (stage, instance) a name from the metrics names ("pc3", "pc3#1"); `instance` when the
  /// name has no "#".
  std::optional<std::pair<std::size_t, std::size_t>> find(std::string_view name,
                                                          std::size_t instance = 0) const;
  /// The stage that feeds the sinks in a line (Shape::line): the last producer.
  std::size_t fan_out() const;
};

// ---- the generator ------------------------------------------------------------------------------

enum class Shape : std::uint8_t {
  dag,   // sources, then stages that subscribe to earlier producers (fan-in too)
  line,  // one source, a chain of producer_consumers, the sinks behind the chain's last stage
};

/// What generate() may draw. Probabilities are per stage or per subscription.
struct Knobs {
  Shape shape = Shape::dag;
  std::size_t min_stages = 2, max_stages = 12;  // max_stages bounds a line too
  std::size_t max_sources = 3;                  // dag
  double stage_share = 0.6;  // dag: a stage after the sources is a producer_consumer
  double fan_in = 0.25;      // dag: a consumer also subscribes to a second producer
  std::size_t min_chain = 0, max_chain = 2, max_sinks = 3;  // line
  std::size_t max_instances = 3;
  std::vector<Form> source_forms{Form::handler}, stage_forms{Form::handler},
      sink_forms{Form::handler};
  double broadcast = 0.30, partition = 0.25;  // a producer's dispatcher (else demand)
  /// line: false puts a producer_consumer between the source and a broadcast.
  bool source_broadcasts = true;
  double selector = 0.4;    // a broadcast's subscription selects
  double hash_drops = 0.0;  // a partition hash drops some keys
  double filter = 0.3;      // a handler producer_consumer filters (filter stages always do)
  /// A subscription's max_demand: one of these, or (empty) 1-10, 11-200 or 201-2000.
  std::vector<std::int64_t> max_demands;
  bool one_max_demand = false;  // the same max_demand for every subscription
  double min_demand = 0.7;      // a subscription sets min_demand
  bool cancel_modes = false;    // a subscription's cancel mode is drawn (else permanent)
  double source_buffer = 0.3, stage_buffer = 0.5;
  bool speeds = false;  // some stages slow or bursty
  /// Sources: counts that keep the deliveries over every edge within this budget (dag); 0: each
  /// source emits up to `max_events` per instance, or (0) is endless.
  std::uint64_t deliveries = 0, max_events = 0;
  bool random_run = false;  // draw the run options (else the defaults)
  /// Names and values out of range, options where they do not apply, `max_extra` extra
  /// subscriptions (cycles, self-loops, twice the same), producers nobody subscribes to.
  bool wild = false;
  std::size_t max_extra = 5;
};

GraphSpec generate(Entropy& entropy, const Knobs& knobs);
/// The same from a seed (kept in the spec).
GraphSpec generate(std::uint64_t seed, const Knobs& knobs);

}  // namespace sluice_test::rg
