// The SDK's parallel helpers (sdk/include/opforge/sdk/parallel.hpp): parallel_for
// covers a range exactly once, and deterministic_sum gives the same bits for any
// thread count; chunks run in the caller's grad mode, on whichever thread.
#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <opforge/opforge.hpp>
#include <opforge/sdk/checks.hpp>
#include <opforge/sdk/parallel.hpp>

using opforge::Context;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;

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

namespace {
// forward runs two chunks of sdk::parallel_for that wait for each other (so that
// a oneTBB worker runs one of them), each viewing its row of the input, which
// requires grad, and noting the thread, its grad mode and whether the view was
// recorded.
struct TwoChunks final : opforge::Function {
  struct Seen {
    std::mutex mu;
    std::set<std::thread::id> threads;
    int grad_on = 0, recorded_views = 0, chunks = 0;
  };
  Seen* seen;
  explicit TwoChunks(Seen* s) : seen(s) {}
  TensorList forward(Context&, TensorSpan in) const override {
    const Tensor& x = in[0];
    Tensor out = Tensor::zeros(x.shape(), x.dtype());
    std::atomic<int> in_flight{0};
    sdk::parallel_for(0, 2, 1, [&](std::int64_t lo, std::int64_t hi) {
      ++in_flight;
      // Bounded: where no worker comes, the caller runs both chunks in turn.
      for (long spin = 0; in_flight.load() < 2 && spin < 20000000; ++spin) std::this_thread::yield();
      for (std::int64_t i = lo; i < hi; ++i) {
        const Tensor row = x.select(0, i);  // recorded (shape.select) only with grad mode on
        out.select(0, i).copy_(row);
        std::lock_guard<std::mutex> lock(seen->mu);
        seen->threads.insert(std::this_thread::get_id());
        seen->grad_on += opforge::grad_enabled();
        seen->recorded_views += row.grad_fn() != nullptr;
        ++seen->chunks;
      }
    });
    return {out};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {g[0]}; }
};
}  // namespace

TEST_CASE("sdk::parallel_for runs every chunk in the caller's grad mode, on a oneTBB worker too", "[sdk][threads]") {
  // Grad mode is per thread, and oneTBB's workers had it on: inside forward (run
  // with it off) a chunk a worker ran recorded the views and ops it called, and
  // an in-place write to an input's view was refused there but not on the op's
  // own thread.
  opforge::set_num_threads(2);
  TwoChunks::Seen seen;
  const opforge::OpHandle op =
      opforge::make_op(opforge::OpSchema("test.two_chunks").input_names({"x"}), std::make_unique<TwoChunks>(&seen));
  const Tensor x = Tensor::from_values({1.0, 2.0, 3.0, 4.0}, {2, 2}).requires_grad_();
  for (int round = 0; round < 20; ++round) {
    const Tensor y = op({x});
    CHECK(y.grad_fn() != nullptr);
    CHECK(y.to_vector() == std::vector<double>{1, 2, 3, 4});
  }
  CHECK(seen.chunks == 40);
  CHECK(seen.grad_on == 0);
  CHECK(seen.recorded_views == 0);
  if (seen.threads.size() < 2) WARN("no oneTBB worker ran a chunk: the check above proved nothing here");
  // Grad mode on or off, chunks run with the caller's.
  {
    std::atomic<int> on{0};
    sdk::parallel_for(0, 2, 1, [&](std::int64_t, std::int64_t) { on += opforge::grad_enabled(); });
    CHECK(on == 2);
    opforge::NoGradGuard no_grad;
    sdk::parallel_for(0, 2, 1, [&](std::int64_t, std::int64_t) { on -= opforge::grad_enabled(); });
    CHECK(on == 2);
  }
  CHECK(opforge::grad_enabled());
  opforge::set_num_threads(0);
}

namespace {
// rows(weight, index) = weight, after sdk::check_indices(index, rows of weight,
// negative indices refused): what an embedding lookup checks first.
struct CheckedRows final : opforge::Function {
  TensorList forward(Context& ctx, TensorSpan in) const override {
    opforge::sdk::check_indices(ctx, in[1], "index", in[0].size(0), "the rows of 'weight'", false);
    return {in[0].clone()};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {g[0], Tensor()}; }
};
}  // namespace

TEST_CASE("sdk: check_indices names the first index out of range, where it sits, and the range", "[sdk]") {
  const opforge::OpHandle rows = opforge::make_op(
      opforge::OpSchema("test.rows").input_names({"weight", "index"}).mixed_dtypes().accepts(opforge::DTypeSet::all()),
      std::make_unique<CheckedRows>());
  const Tensor weight = Tensor::zeros({4, 2});
  auto idx = [](const std::vector<double>& v, const opforge::Dims& shape) {
    return Tensor::from_values(v, shape, opforge::DType::Int64);
  };
  CHECK_NOTHROW(rows({weight, idx({0, 3, 2, 1}, {2, 2})}));
  CHECK_NOTHROW(rows({weight, idx({}, {0})}));
  // A few thousand indices: the vector scan finds one bad element among them.
  std::vector<double> many(5000, 1.0);
  many[4321] = 4;
  CHECK_THROWS_MATCHES(rows({weight, idx(many, {50, 100})}), opforge::IndexError,
                       Catch::Matchers::Message("test.rows: argument 'index': index 4 at position [43, 21] is out of "
                                                "range for the rows of 'weight' of size 4 (expected an index in [0, 4))"));
  CHECK_THROWS_MATCHES(rows({weight, idx({0, -1}, {2})}), opforge::IndexError,
                       Catch::Matchers::Message("test.rows: argument 'index': index -1 at position [1] is out of range "
                                                "for the rows of 'weight' of size 4 (expected an index in [0, 4))"));
  // A transposed index: positions are in its own shape.
  CHECK_THROWS_MATCHES(rows({weight, idx({0, 1, 2, 9, 3, 0}, {2, 3}).transpose(0, 1)}), opforge::IndexError,
                       Catch::Matchers::Message("test.rows: argument 'index': index 9 at position [0, 1] is out of "
                                                "range for the rows of 'weight' of size 4 (expected an index in [0, 4))"));
  CHECK_THROWS_MATCHES(rows({Tensor::zeros({0, 2}), idx({0}, {1})}), opforge::IndexError,
                       Catch::Matchers::Message("test.rows: argument 'index': index 0 at position [0] is out of range "
                                                "for the rows of 'weight' of size 0 (the rows of 'weight' is empty, so "
                                                "no index is valid: give an empty 'index')"));
  CHECK_THROWS_MATCHES(rows({weight, Tensor::zeros({2})}), opforge::DTypeError,
                       Catch::Matchers::Message("test.rows: argument 'index': expected dtype int64 (indices), got "
                                                "float64"));
}
