// EmitBuffer, where a stage's emitted events wait for its dispatcher: growth, order, and what
// append_generated and append_kept leave behind when the user's function throws.
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <sluice/engine/detail/emit_buffer.hpp>

#include <doctest/doctest.h>

TEST_SUITE("engine.buffers") {

TEST_CASE("emit buffer: grows, keeps order, clears without freeing") {
  sluice::detail::EmitBuffer<std::string> b;
  for (int i = 0; i < 1000; ++i)
    b.push_back(std::to_string(i));
  REQUIRE(b.size() == 1000);
  CHECK(b[999] == "999");
  const auto* data = b.data();
  b.clear();
  CHECK(b.empty());
  b.push_back(std::string("x"));
  CHECK(b.data() == data);  // capacity kept: no allocation in steady state
}

TEST_CASE("emit buffer: append_generated stops at max or at the first empty, across growth") {
  sluice::detail::EmitBuffer<std::string> b;
  int next = 0;
  auto gen = [&]() -> std::optional<std::string> {
    if (next == 700) return std::nullopt;
    return std::to_string(next++);
  };
  CHECK(b.append_generated(600, gen) == 600);  // past the first capacity (256): grows twice
  REQUIRE(b.size() == 600);
  CHECK(b[0] == "0");
  CHECK(b[599] == "599");
  CHECK(b.append_generated(0, gen) == 0);
  CHECK(b.append_generated(500, gen) == 100);  // ran dry
  CHECK(next == 700);
  REQUIRE(b.size() == 700);
  CHECK(b[699] == "699");
  CHECK(b.append_generated(5, gen) == 0);
  CHECK(b.size() == 700);
}

TEST_CASE("emit buffer: what append_generated appended before a throw stays") {
  sluice::detail::EmitBuffer<std::string> b;
  b.push_back(std::string("first"));
  int next = 0;
  auto gen = [&]() -> std::optional<std::string> {
    if (next == 300) throw std::runtime_error("boom");
    return std::to_string(next++);
  };
  CHECK_THROWS_AS(b.append_generated(1000, gen), std::runtime_error);
  REQUIRE(b.size() == 301);
  CHECK(b[0] == "first");
  CHECK(b[300] == "299");
}

TEST_CASE("emit buffer: append_kept keeps the accepted events in order, across growth") {
  // Trivially copyable events take the branch-free loop; the last store past the kept ones must
  // not show.
  sluice::detail::EmitBuffer<std::int64_t> ints;
  std::vector<std::int64_t> in(1000);
  for (std::size_t i = 0; i < in.size(); ++i)
    in[i] = static_cast<std::int64_t>(i);
  auto multiple_of_3 = [](const std::int64_t& e) { return e % 3 == 0; };
  CHECK(ints.append_kept(std::span<std::int64_t>(in), multiple_of_3) == 334);
  REQUIRE(ints.size() == 334);
  for (std::size_t i = 0; i < ints.size(); ++i)
    CHECK(ints[i] == static_cast<std::int64_t>(3 * i));
  auto none = [](const std::int64_t&) { return false; };
  CHECK(ints.append_kept(std::span<const std::int64_t>(in), none) == 0);
  CHECK(ints.size() == 334);

  // Owning events: moved from a mutable span, copied from a const one.
  sluice::detail::EmitBuffer<std::string> strings;
  std::vector<std::string> words{std::string(40, 'a'), "b", std::string(40, 'c'), "d"};
  auto long_word = [](const std::string& w) { return w.size() > 1; };
  CHECK(strings.append_kept(std::span<const std::string>(words), long_word) == 2);
  CHECK(words[0] == std::string(40, 'a'));  // copied
  CHECK(strings.append_kept(std::span<std::string>(words), long_word) == 2);
  CHECK(words[0].empty());  // moved from
  CHECK(words[1] == "b");   // not kept: untouched
  REQUIRE(strings.size() == 4);
  CHECK(strings[3] == std::string(40, 'c'));
}

TEST_CASE("emit buffer: what append_kept appended before a throw stays") {
  sluice::detail::EmitBuffer<std::string> b;
  std::vector<std::string> in{"0", "1", "2", "boom", "4"};
  auto keep = [](const std::string& e) {
    if (e == "boom") throw std::runtime_error("boom");
    return e != "1";
  };
  CHECK_THROWS_AS(b.append_kept(std::span<std::string>(in), keep), std::runtime_error);
  REQUIRE(b.size() == 2);
  CHECK(b[0] == "0");
  CHECK(b[1] == "2");
}

}  // TEST_SUITE("engine.buffers")
