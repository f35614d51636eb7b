// StableTable, the append-only table a reader may index while a writer appends.
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include <sluice/engine/detail/stable_table.hpp>

#include <doctest/doctest.h>

TEST_CASE("stable table: a reader indexes it while a writer appends, nothing moves") {
  sluice::detail::StableTable<std::unique_ptr<std::uint64_t>> table;
  constexpr std::uint64_t n = 20'000;  // many segments: 64, 128, ... 16384
  std::atomic<bool> done{false};
  std::uint64_t checked = 0, wrong = 0;
  std::thread reader([&] {
    for (bool last = false; !last;) {  // the last pass starts after the writer has finished
      last = done.load();
      const auto size = table.size();
      for (std::size_t i = size > 100 ? size - 100 : 0; i < size; ++i, ++checked)
        if (*table[i] != i) ++wrong;
    }
  });
  std::vector<const std::uint64_t*> where;
  std::uint64_t misnumbered = 0, moved = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    misnumbered += table.next_index() != i;
    table.add(std::make_unique<std::uint64_t>(i));
    where.push_back(table[i].get());
  }
  done = true;
  reader.join();
  CHECK(checked > 0);
  CHECK(wrong == 0);
  CHECK(misnumbered == 0);
  CHECK(table.size() == n);
  for (std::uint64_t i = 0; i < n; ++i)
    moved += table[i].get() != where[i];
  CHECK(moved == 0);
}
