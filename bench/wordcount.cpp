// The wordcount scenario: a real workload over real text. Lines are pushed from application
// threads, split into words, partitioned by word, counted, and the (word, count) pairs read
// back; against oneTBB's parallel_reduce over the same lines (one unordered_map per chunk,
// merged) and a single-threaded loop, in the same run. Every engine's counts are checked: the
// same number of words and of distinct words as the single-threaded loop found.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_reduce.h>

#include "scenarios.hpp"

namespace sluice_bench {
namespace {

using Counts = std::unordered_map<std::string, I64>;
using Pair = std::pair<std::string, I64>;

/// Calls `f(word)` for each run of characters between blanks (space, tab, CR, form feed).
template <class F>
void for_each_word(std::string_view line, F&& f) {
  constexpr std::string_view blanks = " \t\r\f\v";
  std::size_t i = line.find_first_not_of(blanks);
  while (i != std::string_view::npos) {
    const auto end = line.find_first_of(blanks, i);
    f(line.substr(i, end == std::string_view::npos ? std::string_view::npos : end - i));
    i = end == std::string_view::npos ? end : line.find_first_not_of(blanks, end);
  }
}

/// The text: the machine's licence texts (/usr/share/common-licenses, and every package's
/// /usr/share/doc/*/copyright), read once, its lines repeated in whole passes until they hold
/// at least `bytes` (one pass at the least: about 12 MB on a Debian machine).
class Corpus {
 public:
  static const Corpus& of(std::size_t bytes) {
    static std::mutex m;
    static std::unique_ptr<Corpus> c;
    std::lock_guard lock(m);
    if (!c || c->bytes_ != bytes) c.reset(new Corpus(bytes));
    return *c;
  }
  const std::vector<std::string_view>& lines() const { return lines_; }
  I64 words() const { return words_; }
  std::size_t distinct() const { return distinct_; }

 private:
  explicit Corpus(std::size_t bytes) : bytes_(bytes) {
    namespace fs = std::filesystem;
    std::vector<fs::path> files;
    std::error_code ec;
    for (auto& e : fs::directory_iterator("/usr/share/common-licenses", ec))
      if (e.is_regular_file()) files.push_back(e.path());
    for (auto& e : fs::directory_iterator("/usr/share/doc", ec))
      if (fs::is_regular_file(e.path() / "copyright")) files.push_back(e.path() / "copyright");
    std::sort(files.begin(), files.end());  // the same text, in the same order, on every run
    for (auto& f : files) {
      std::ifstream in(f, std::ios::binary);
      text_.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      if (!text_.empty() && text_.back() != '\n') text_ += '\n';
    }
    if (text_.empty())
      throw std::runtime_error(
          "wordcount: no text found in /usr/share/common-licenses or /usr/share/doc/*/copyright");
    std::vector<std::string_view> once;
    for (std::size_t at = 0; at < text_.size();) {
      const auto nl = text_.find('\n', at);
      if (nl > at) once.emplace_back(text_.data() + at, nl - at);
      at = nl + 1;
    }
    for (std::size_t held = 0; held < bytes;)
      for (auto l : once) {
        lines_.push_back(l);
        held += l.size() + 1;
      }
    Counts all;
    for (auto l : lines_)
      for_each_word(l, [&](std::string_view w) {
        ++all[std::string(w)];
        ++words_;
      });
    distinct_ = all.size();
  }

  std::size_t bytes_;
  std::string text_;
  std::vector<std::string_view> lines_;
  I64 words_ = 0;
  std::size_t distinct_ = 0;
};

std::size_t corpus_bytes(const Params& p) {
  // 20 MB at the default 20 M events, scaled with --events (at least 64 KiB).
  return std::max<std::size_t>(static_cast<std::size_t>(p.events), 64 * 1024);
}

/// Checks an engine's counts against the corpus; throws naming the engine if they differ.
void check(const char* engine, const Corpus& c, I64 words, std::size_t distinct) {
  if (words == c.words() && distinct == c.distinct()) return;
  std::ostringstream s;
  s << "wordcount: " << engine << " counted " << words << " words (" << distinct
    << " distinct), expected " << c.words() << " (" << c.distinct() << ")";
  throw std::runtime_error(s.str());
}

/// The count stage: a producer_consumer that counts the words of its partition and, once all
/// its inputs have ended, emits its (word, count) pairs (a Flow reduce).
struct Count {
  Counts counts;
  std::size_t open = 0;
  void handle_subscribe(const sluice::SubscribeInfo& s, sluice::Context<Pair>&) {
    if (s.upstream) ++open;
  }
  void handle_events(std::span<std::string> words, sluice::Context<Pair>&) {
    for (auto& w : words)
      ++counts[std::move(w)];
  }
  void handle_cancel(const sluice::CancelInfo& i, sluice::Context<Pair>& ctx) {
    if (!i.upstream || --open > 0) return;
    while (!counts.empty()) {
      auto node = counts.extract(counts.begin());
      ctx.emit(Pair{std::move(node.key()), node.mapped()});
    }
  }
};

constexpr std::size_t pushers = 2;
constexpr std::size_t instances = 2;

/// Declares the graph; `pairs` receives the counts.
sluice::PushHandle<std::string> declare(sluice::Graph& g, std::vector<Pair>& pairs) {
  auto [in, lines] = g.push_source<std::string>("lines", 4096);
  lines
      .flat_map("split",
                [](const std::string& line) {
                  std::vector<std::string> words;
                  for_each_word(line, [&](std::string_view w) { words.emplace_back(w); });
                  return words;
                },
                {.instances = instances})
      .partition(instances)
      .then<Pair>("count", Count{}, {.instances = instances})
      .collect("pairs", pairs);
  return std::move(in);
}

Outcome sluice_wordcount(const Params& p) {
  const auto& c = Corpus::of(corpus_bytes(p));
  std::vector<Pair> pairs;
  sluice::Graph g;
  auto in = declare(g, pairs);
  const auto& lines = c.lines();
  const auto outcome = timed(c.words(), [&] {
    auto run = g.run();
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < pushers; ++t)
      threads.emplace_back([&, t] {
        for (std::size_t i = t; i < lines.size(); i += pushers)
          in.push(std::string(lines[i]));
      });
    for (auto& t : threads)
      t.join();
    in.close();
    run.wait();
  });
  I64 words = 0;
  for (auto& [w, n] : pairs)
    words += n;
  check("sluice", c, words, pairs.size());
  return outcome;
}

Outcome serial_wordcount(const Params& p) {
  const auto& c = Corpus::of(corpus_bytes(p));
  Counts counts;
  const auto outcome = timed(c.words(), [&] {
    for (auto l : c.lines())
      for_each_word(l, [&](std::string_view w) { ++counts[std::string(w)]; });
  });
  I64 words = 0;
  for (auto& [w, n] : counts)
    words += n;
  check("serial", c, words, counts.size());
  return outcome;
}

/// parallel_reduce's body: one map per body (a chunk, and the chunks it took over), merged
/// into the larger one when two meet.
struct ReduceBody {
  const std::vector<std::string_view>* lines;
  Counts counts;
  explicit ReduceBody(const std::vector<std::string_view>& l) : lines(&l) {}
  ReduceBody(ReduceBody& other, oneapi::tbb::split) : lines(other.lines) {}
  void operator()(const oneapi::tbb::blocked_range<std::size_t>& r) {
    for (auto i = r.begin(); i != r.end(); ++i)
      for_each_word((*lines)[i], [&](std::string_view w) { ++counts[std::string(w)]; });
  }
  void join(ReduceBody& other) {
    if (counts.size() < other.counts.size()) std::swap(counts, other.counts);
    for (auto& [w, n] : other.counts)
      counts[w] += n;
  }
};

Outcome tbb_reduce_wordcount(const Params& p) {
  const auto& c = Corpus::of(corpus_bytes(p));
  ReduceBody body(c.lines());
  const auto outcome = timed(c.words(), [&] {
    oneapi::tbb::parallel_reduce(oneapi::tbb::blocked_range<std::size_t>(0, c.lines().size()),
                                 body);
  });
  I64 words = 0;
  for (auto& [w, n] : body.counts)
    words += n;
  check("tbb_parallel_reduce", c, words, body.counts.size());
  return outcome;
}

}  // namespace

Scenario wordcount_scenario() {
  return {"wordcount",
          "licence texts, whole passes until --events bytes: 2 threads push lines -> split x2 "
          "-> partition by word -> count x2 -> pairs (events: words)",
          [](sluice::Graph& g, const Params&) {
            static std::vector<Pair> pairs;
            declare(g, pairs);
          },
          {{"sluice", sluice_wordcount},
           {"tbb_parallel_reduce", tbb_reduce_wordcount},
           {"serial", serial_wordcount}}};
}

}  // namespace sluice_bench
