// sluice-bench's genstage engine reads the RESULT line gs_bench.exs prints: a good line gives the
// events and seconds GenStage measured; anything else is an error naming the variant and quoting
// the output. Pure parsing: no Elixir needed.
#include <stdexcept>
#include <string>

#include <doctest/doctest.h>

#include <genstage.hpp>

using sluice_bench::genstage::parse_result;
using sluice_bench::genstage::scaled_events;

namespace {
std::string error_of(std::string_view variant, std::string_view output) {
  try {
    parse_result(variant, output);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST_SUITE("tools.genstage") {

TEST_CASE("a good RESULT line gives GenStage's events and seconds") {
  const auto r = parse_result(
      "gs_linear3",
      "RESULT name=gs_linear3 events=5000000 seconds=0.384661 eps=12998468 ok=1 maxrss_kb=-1\n");
  CHECK(r.name == "gs_linear3");
  CHECK(r.events == 5'000'000);
  CHECK(r.seconds == doctest::Approx(0.384661));
}

TEST_CASE("the RESULT line is found among other output") {
  const auto r = parse_result("gs_demand2",
                              "warning: something\r\n"
                              "RESULT name=gs_demand2 events=10 seconds=1.5 eps=7 ok=1\r\n"
                              "bye\n");
  CHECK(r.events == 10);
  CHECK(r.seconds == doctest::Approx(1.5));
}

TEST_CASE("ok=0 is an error naming the variant and quoting the output") {
  const auto e = error_of("gs_linear4",
                          "RESULT name=gs_linear4 events=10 seconds=0.1 eps=100 ok=0 maxrss_kb=-1\n"
                          "CHECKSUM MISMATCH in gs_linear4: got 1 want 2\n");
  CHECK(e.find("genstage gs_linear4: RESULT says ok=0") == 0);
  CHECK(e.find("CHECKSUM MISMATCH") != std::string::npos);
  CHECK(e.find('\n') == std::string::npos);  // sluice-bench passes errors on as one line
}

TEST_CASE("a missing field is an error") {
  CHECK(error_of("gs_linear3", "RESULT name=gs_linear3 events=10 eps=100 ok=1")
            .find("genstage gs_linear3: RESULT line without seconds") == 0);
  CHECK(error_of("gs_linear3", "RESULT name=gs_linear3 seconds=1 ok=1")
            .find("RESULT line without events") != std::string::npos);
  CHECK(error_of("gs_linear3", "RESULT name=gs_linear3 events=10 seconds=1")
            .find("RESULT line without ok") != std::string::npos);
  CHECK(
      error_of("gs_linear3", "RESULT events=10 seconds=1 ok=1").find("RESULT line without name") !=
      std::string::npos);
}

TEST_CASE("bad numbers and another variant's line are errors") {
  CHECK(error_of("gs_linear3", "RESULT name=gs_linear3 events=ten seconds=1 ok=1")
            .find("bad events=ten") != std::string::npos);
  CHECK(error_of("gs_linear3", "RESULT name=gs_linear3 events=10 seconds=0.000000 ok=1")
            .find("bad seconds=0.000000") != std::string::npos);
  CHECK(error_of("gs_linear3", "RESULT name=gs_linear3 events=0 seconds=1 ok=1")
            .find("bad events=0") != std::string::npos);
  CHECK(error_of("gs_linear3", "RESULT name=gs_partition4 events=10 seconds=1 ok=1")
            .find("RESULT line names gs_partition4") != std::string::npos);
}

TEST_CASE("garbage or nothing is an error quoting the output") {
  const auto e =
      error_of("gs_partition4",
               "** (UndefinedFunctionError) function GenStage.start_link/2 is undefined\n"
               "    gs_bench.exs:87\n");
  CHECK(e.find("genstage gs_partition4: no RESULT line; its output: ** (UndefinedFunctionError)") ==
        0);
  CHECK(e.find("is undefined | gs_bench.exs:87") != std::string::npos);
  CHECK(error_of("gs_partition4", "").find("no RESULT line; its output: (nothing)") !=
        std::string::npos);
  CHECK(error_of("gs_partition4", "RESULTS name=gs_partition4 events=1 seconds=1 ok=1")
            .find("no RESULT line") != std::string::npos);
}

TEST_CASE("GenStage's events are capped by max_demand") {
  CHECK(scaled_events(20'000'000, 1000) == 20'000'000);
  CHECK(scaled_events(50'000'000, 10'000) == 20'000'000);
  CHECK(scaled_events(2'000'000, 1000) == 2'000'000);
  CHECK(scaled_events(20'000'000, 100) == 10'000'000);
  CHECK(scaled_events(20'000'000, 10) == 2'000'000);
  CHECK(scaled_events(1'000'000, 1) == 200'000);
}

}  // TEST_SUITE("tools.genstage")
