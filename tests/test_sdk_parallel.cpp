// The SDK's parallel helpers (sdk/include/opforge/sdk/parallel.hpp): parallel_for
// covers a range exactly once, and deterministic_sum gives the same bits for any
// thread count.
#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <vector>

#include <opforge/opforge.hpp>
#include <opforge/sdk/parallel.hpp>

namespace sdk = opforge::sdk;

TEST_CASE("sdk::parallel_for visits every index of the range exactly once", "[sdk][threads]") {
  opforge::set_num_threads(3);
  for (std::int64_t n : {0, 1, 5, 1000, 100003}) {
    for (std::int64_t grain : {1, 7, 4096, 1000000}) {
      std::vector<std::atomic<int>> seen(static_cast<std::size_t>(n));
      for (auto& s : seen) s = 0;
      std::atomic<std::int64_t> calls{0};
      sdk::parallel_for(0, n, grain, [&](std::int64_t lo, std::int64_t hi) {
        CHECK(lo < hi);
        ++calls;
        for (std::int64_t i = lo; i < hi; ++i) ++seen[static_cast<std::size_t>(i)];
      });
      INFO("n = " << n << ", grain = " << grain);
      std::int64_t wrong = 0;
      for (auto& s : seen) wrong += s != 1;
      CHECK(wrong == 0);
      if (n == 0) CHECK(calls == 0);
      if (n > 0 && n <= grain) CHECK(calls == 1);  // one grain or less: inline, one call
    }
  }
  opforge::set_num_threads(0);
}

TEST_CASE("sdk::deterministic_sum: the sum, the same bits for 1, 2 and 3 threads", "[sdk][threads]") {
  // Terms of mixed magnitude, so the order of the additions shows in the rounding.
  auto term = [](std::int64_t i) { return std::sin(0.37 * static_cast<double>(i)) * std::exp(double(i % 17)); };
  for (std::int64_t n : {0, 1, 7, 8, 9, 4096, 4097, 250001}) {
    double exact = 0;  // compensated reference
    double comp = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      const double y = term(i) - comp, t = exact + y;
      comp = (t - exact) - y;
      exact = t;
    }
    std::vector<double> got;
    for (int threads : {1, 2, 3}) {
      opforge::set_num_threads(threads);
      got.push_back(sdk::deterministic_sum(n, term));
    }
    opforge::set_num_threads(0);
    INFO("n = " << n);
    CHECK(got[0] == got[1]);
    CHECK(got[0] == got[2]);
    double scale = 0;
    for (std::int64_t i = 0; i < n; ++i) scale += std::abs(term(i));
    CHECK(std::abs(got[0] - exact) <= 1e-14 * scale);
  }
  CHECK(sdk::deterministic_sum(0, [](std::int64_t) { return 1.0; }) == 0.0);
  CHECK(sdk::deterministic_sum(10000, [](std::int64_t) { return 1.0f; }) == 10000.0);  // float terms, double sum
}
