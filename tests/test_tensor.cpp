// Tensor: factories, metadata, data access, copies, dtype conversion, autograd
// flags on leaves, the error for every bad input, and memory accounting.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <stdexcept>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <opforge/opforge.hpp>

using opforge::Dims;
using opforge::DType;
using opforge::Tensor;
using Catch::Matchers::Message;

namespace {

// y = 2x, for making a non-leaf without depending on any plugin.
class Twice final : public opforge::Function {
 public:
  opforge::TensorList forward(opforge::Context&, opforge::TensorSpan in) const override {
    std::vector<double> v = in[0].to_vector();
    for (double& x : v) x *= 2;
    return {Tensor::from_values(v, in[0].shape(), in[0].dtype())};
  }
  opforge::TensorList backward(opforge::Context&, opforge::TensorSpan g) const override {
    std::vector<double> v = g[0].to_vector();
    for (double& x : v) x *= 2;
    return {Tensor::from_values(v, g[0].shape(), g[0].dtype())};
  }
};

const opforge::OpHandle& twice_op() {
  static const opforge::OpHandle h =
      opforge::make_op(opforge::OpSchema("test.twice").input_names({"x"}), std::make_unique<Twice>());
  return h;
}

void require_all(const Tensor& t, double v) {
  for (double x : t.to_vector()) REQUIRE(x == v);
}

}  // namespace

// ---- factories ----------------------------------------------------------------------

TEST_CASE("tensor: empty/zeros/ones/full have the requested shape, dtype and values", "[tensor]") {
  const Dims shape{2, 3, 4};
  for (DType dt : {DType::Float32, DType::Float64, DType::Int64, DType::Bool}) {
    CAPTURE(opforge::dtype_name(dt));
    Tensor e = Tensor::empty(shape, dt);
    CHECK(e.shape() == shape);
    CHECK(e.dtype() == dt);
    CHECK(e.numel() == 24);
    CHECK(e.nbytes() == 24 * opforge::itemsize(dt));
    CHECK(reinterpret_cast<std::uintptr_t>(e.data_ptr()) % 64 == 0);

    Tensor z = Tensor::zeros(shape, dt);
    CHECK(z.shape() == shape);
    CHECK(z.dtype() == dt);
    require_all(z, 0.0);

    Tensor o = Tensor::ones(shape, dt);
    CHECK(o.dtype() == dt);
    require_all(o, 1.0);
  }
  Tensor f = Tensor::full({5}, 2.5, DType::Float32);
  CHECK(f.dtype() == DType::Float32);
  require_all(f, 2.5);
  CHECK(Tensor::full({3}, -7.0, DType::Int64).to_vector() == std::vector<double>{-7, -7, -7});
  CHECK(Tensor::full({2}, 3.0, DType::Bool).to_vector() == std::vector<double>{1, 1});
  // Default dtype is float64.
  CHECK(Tensor::zeros({2}).dtype() == DType::Float64);
  CHECK(Tensor::ones({2}).dtype() == DType::Float64);
}

namespace {
int g_throwing_deleter_calls = 0;
void throwing_deleter(void*, void*) {
  ++g_throwing_deleter_calls;
  throw std::runtime_error("deleter refused");
}
}  // namespace

TEST_CASE("tensor: a from_blob deleter that throws is stopped and reported on stderr, not std::terminate",
          "[tensor]") {
  // The storage is freed from destructors (noexcept): the exception used to
  // reach std::terminate.
  std::vector<double> mem{1, 2};
  std::fflush(stderr);
  const int saved = ::dup(2);
  std::FILE* capture = std::tmpfile();
  REQUIRE(capture != nullptr);
  ::dup2(::fileno(capture), 2);
  {
    Tensor t = Tensor::from_blob(mem.data(), {2}, DType::Float64, &throwing_deleter, nullptr);
    Tensor view = t.slice(0, 0, 1);
    t = Tensor();
    CHECK(g_throwing_deleter_calls == 0);
  }
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::rewind(capture);
  std::string err;
  for (int c; (c = std::fgetc(capture)) != EOF;) err += static_cast<char>(c);
  std::fclose(capture);
  CHECK(g_throwing_deleter_calls == 1);
  CHECK_THAT(err, Catch::Contains("opforge: the deleter of a tensor's memory (given to Tensor::from_blob or "
                                  "from_dlpack) threw (deleter refused); the memory it was to free may have leaked. "
                                  "A deleter must not throw: fix it."));
}

TEST_CASE("tensor: zero-size tensors are valid and hold no elements", "[tensor]") {
  Tensor t = Tensor::zeros({3, 0, 2});
  CHECK(t.numel() == 0);
  CHECK(t.nbytes() == 0);
  CHECK(t.dim() == 3);
  CHECK(t.shape() == Dims{3, 0, 2});
  Tensor c = t.clone();
  CHECK(c.numel() == 0);
  CHECK(c.shape() == Dims{3, 0, 2});
}

TEST_CASE("tensor: to_vector of a zero-size tensor is empty", "[tensor]") {
  // Passes in a Release build, but to_vector() wraps the (empty) vector's data()
  // -- a null pointer -- with from_blob and copy_typed then calls memcpy(nullptr,
  // src, 0): undefined behaviour, and UBSan (OPFORGE_SANITIZE=ON) aborts here
  // ("null pointer passed as argument 1"). Fix: return early when numel == 0.
  CHECK(Tensor::zeros({3, 0, 2}).to_vector().empty());
  CHECK(Tensor::zeros({0}, DType::Float32).to_vector().empty());
}

TEST_CASE("tensor: scalar makes a 0-d one-element tensor", "[tensor]") {
  Tensor s = Tensor::scalar(3.25);
  CHECK(s.dim() == 0);
  CHECK(s.shape().empty());
  CHECK(s.numel() == 1);
  CHECK(s.item() == 3.25);
  CHECK(s.dtype() == DType::Float64);
  CHECK(s.describe() == "float64[]");
  Tensor s32 = Tensor::scalar(0.5, DType::Float32);
  CHECK(s32.dtype() == DType::Float32);
  CHECK(s32.item() == 0.5);
}

TEST_CASE("tensor: from_values lays values out row-major in the given shape", "[tensor]") {
  Tensor t = Tensor::from_values({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(t.shape() == Dims{2, 3});
  CHECK(t.to_vector() == std::vector<double>{1, 2, 3, 4, 5, 6});
  const double* p = t.data<double>();
  CHECK(p[0 * 3 + 2] == 3);  // [0, 2]
  CHECK(p[1 * 3 + 0] == 4);  // [1, 0]

  Tensor v = Tensor::from_values({1.5, -2.5}, DType::Float32);
  CHECK(v.shape() == Dims{2});
  CHECK(v.dtype() == DType::Float32);
  CHECK(v.data<float>()[0] == 1.5f);
  CHECK(v.data<float>()[1] == -2.5f);

  Tensor i = Tensor::from_values({3, -4}, {2}, DType::Int64);
  CHECK(i.data<std::int64_t>()[1] == -4);
}

TEST_CASE("tensor: randn: same seed gives the same tensor, another seed another", "[tensor]") {
  for (DType dt : {DType::Float32, DType::Float64}) {
    CAPTURE(opforge::dtype_name(dt));
    Tensor a = Tensor::randn({4, 5}, dt, 42);
    Tensor b = Tensor::randn({4, 5}, dt, 42);
    Tensor c = Tensor::randn({4, 5}, dt, 43);
    CHECK(a.dtype() == dt);
    CHECK(a.shape() == Dims{4, 5});
    CHECK(a.to_vector() == b.to_vector());
    CHECK(a.data_ptr() != b.data_ptr());
    const auto va = a.to_vector(), vc = c.to_vector();
    int equal = 0;
    for (std::size_t i = 0; i < va.size(); ++i) equal += va[i] == vc[i];
    CHECK(equal == 0);
  }
  // A prefix of a longer draw is the same draw: element i depends on (seed, i) only.
  const auto longer = Tensor::randn({9}, DType::Float64, 5).to_vector();
  const auto shorter = Tensor::randn({7}, DType::Float64, 5).to_vector();
  CHECK(std::vector<double>(longer.begin(), longer.begin() + 7) == shorter);
}

TEST_CASE("tensor: randn without a seed draws a new one each call, and manual_seed restarts the stream", "[tensor]") {
  // Every call without a seed gave seed 0's numbers: two weight matrices
  // initialised that way started with the same values.
  opforge::manual_seed(7);
  const std::vector<double> a = Tensor::randn({4, 4}).to_vector();
  const std::vector<double> b = Tensor::randn({4, 4}).to_vector();
  const std::vector<double> c = Tensor::randn({2, 3}, DType::Float32).to_vector();
  CHECK(a != b);
  CHECK(std::vector<double>(a.begin(), a.begin() + 6) != c);
  CHECK(a != Tensor::randn({4, 4}, DType::Float64, 0).to_vector());
  opforge::manual_seed(7);  // the same stream again
  CHECK(Tensor::randn({4, 4}).to_vector() == a);
  CHECK(Tensor::randn({4, 4}).to_vector() == b);
  opforge::manual_seed(8);
  CHECK(Tensor::randn({4, 4}).to_vector() != a);
  // An explicit seed is the same tensor whatever the stream did.
  CHECK(Tensor::randn({4, 4}, DType::Float64, 3).to_vector() == Tensor::randn({4, 4}, DType::Float64, 3).to_vector());
}

TEST_CASE("tensor: randn is standard normal: mean ~ 0, variance ~ 1 over 1e5 samples", "[tensor]") {
  const std::int64_t n = 100000;
  for (DType dt : {DType::Float32, DType::Float64}) {
    for (std::uint64_t seed : {0ull, 1ull, 123456789ull}) {
      CAPTURE(opforge::dtype_name(dt), seed);
      const auto v = Tensor::randn({n}, dt, seed).to_vector();
      double sum = 0, sq = 0;
      int finite = 0;
      for (double x : v) {
        sum += x;
        sq += x * x;
        finite += std::isfinite(x);
      }
      CHECK(finite == n);
      const double mean = sum / n;
      const double var = sq / n - mean * mean;
      // Standard error of the mean is 1/sqrt(n) ~ 0.0032; of the variance ~ 0.0045.
      CHECK(std::abs(mean) < 0.02);
      CHECK(std::abs(var - 1.0) < 0.03);
    }
  }
}

TEST_CASE("tensor: randn refuses integer dtypes", "[tensor]") {
  REQUIRE_THROWS_MATCHES(Tensor::randn({3}, DType::Int64, 0), opforge::DTypeError,
                         Message("Tensor::randn: argument 'dtype': expected float32 or float64, got int64"));
}

// ---- ranges, eye, rand, *_like ---------------------------------------------------

namespace {
// The elements of a tensor, with its dtype and shape checked, for comparisons
// that also see which factory path made it.
std::vector<double> values_of(const Tensor& t, DType dtype, const Dims& shape) {
  CHECK(t.dtype() == dtype);
  CHECK(t.shape() == shape);
  CHECK(t.is_contiguous());
  CHECK_FALSE(t.requires_grad());
  return t.to_vector();
}
std::vector<std::int64_t> int64_values(const Tensor& t) {
  REQUIRE(t.dtype() == DType::Int64);
  const std::int64_t* p = t.data<std::int64_t>();
  return std::vector<std::int64_t>(p, p + t.numel());
}
constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kInt64Min = std::numeric_limits<std::int64_t>::min();
}  // namespace

TEST_CASE("tensor: arange with integer arguments is int64, exact, as torch.arange", "[tensor][factories]") {
  CHECK(values_of(Tensor::arange(5), DType::Int64, {5}) == std::vector<double>{0, 1, 2, 3, 4});
  CHECK(values_of(Tensor::arange(2, 11, 3), DType::Int64, {3}) == std::vector<double>{2, 5, 8});
  CHECK(values_of(Tensor::arange(10, 0, -3), DType::Int64, {4}) == std::vector<double>{10, 7, 4, 1});
  CHECK(values_of(Tensor::arange(-3, 3, 2), DType::Int64, {3}) == std::vector<double>{-3, -1, 1});
  // Any integer type takes the int64 path (int, unsigned, short, int64_t).
  CHECK(values_of(Tensor::arange(3u), DType::Int64, {3}) == std::vector<double>{0, 1, 2});
  CHECK(values_of(Tensor::arange(static_cast<short>(1), std::int64_t{3}), DType::Int64, {2}) ==
        std::vector<double>{1, 2});
  // Empty: end == start, whatever the step's sign.
  CHECK(values_of(Tensor::arange(0), DType::Int64, {0}).empty());
  CHECK(values_of(Tensor::arange(3, 3), DType::Int64, {0}).empty());
  CHECK(values_of(Tensor::arange(3, 3, -1), DType::Int64, {0}).empty());
  // Another dtype: the exact int64 values, converted.
  CHECK(values_of(Tensor::arange(0, 5, 2, DType::Float32), DType::Float32, {3}) == std::vector<double>{0, 2, 4});
  CHECK(values_of(Tensor::arange(4, DType::Float64), DType::Float64, {4}) == std::vector<double>{0, 1, 2, 3});
  // Exact where double is not: 2^63 - 3 and 2^63 - 2 have no double of their own.
  CHECK(int64_values(Tensor::arange(kInt64Max - 2, kInt64Max)) ==
        std::vector<std::int64_t>{kInt64Max - 2, kInt64Max - 1});
  // end - start = 2^64 - 1 and i * step pass int64, the values do not (hand-worked:
  // ceil((2^64 - 1) / (2^63 - 1)) = 3; -2^63, -2^63 + 2^63 - 1 = -1, -1 + 2^63 - 1).
  CHECK(int64_values(Tensor::arange(kInt64Min, kInt64Max, kInt64Max)) ==
        std::vector<std::int64_t>{kInt64Min, -1, kInt64Max - 1});
  CHECK(int64_values(Tensor::arange(kInt64Max, kInt64Min, kInt64Min)) == std::vector<std::int64_t>{kInt64Max, -1});
}

TEST_CASE("tensor: arange with a floating argument is float64 by default, values start + i * step",
          "[tensor][factories]") {
  CHECK(values_of(Tensor::arange(2.5), DType::Float64, {3}) == std::vector<double>{0, 1, 2});
  CHECK(values_of(Tensor::arange(0, 2.5), DType::Float64, {3}) == std::vector<double>{0, 1, 2});
  CHECK(values_of(Tensor::arange(0.5, 3, 0.75), DType::Float64, {4}) == std::vector<double>{0.5, 1.25, 2, 2.75});
  CHECK(values_of(Tensor::arange(-1, -2.5, -0.25), DType::Float64, {6}) ==
        std::vector<double>{-1, -1.25, -1.5, -1.75, -2, -2.25});
  // Literal values printed by torch 1.13 (torch.arange(a, b, s, dtype=...).tolist(), /usr/bin/python3).
  CHECK(values_of(Tensor::arange(0.0, 1.0, 0.1), DType::Float64, {10}) ==
        std::vector<double>{0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6000000000000001, 0.7000000000000001, 0.8,
                            0.9});
  CHECK(values_of(Tensor::arange(0.0, 1.0, 0.1, DType::Float32), DType::Float32, {10}) ==
        std::vector<double>{0.0, 0.10000000149011612, 0.20000000298023224, 0.30000001192092896, 0.4000000059604645,
                            0.5, 0.6000000238418579, 0.699999988079071, 0.800000011920929, 0.8999999761581421});
  CHECK(values_of(Tensor::arange(10, 0, -1.5), DType::Float64, {7}) ==
        std::vector<double>{10.0, 8.5, 7.0, 5.5, 4.0, 2.5, 1.0});
  // ceil((1.3 - 1.0) / 0.1) = ceil(3.0000000000000004) = 4: torch 1.13 gives
  // [1.0, 1.1, 1.2, 1.3] too (NumPy also has 4, its last 1.3000000000000003).
  CHECK(values_of(Tensor::arange(1.0, 1.3, 0.1), DType::Float64, {4}) == std::vector<double>{1.0, 1.1, 1.2, 1.3});
  // int64 from whole doubles.
  CHECK(int64_values(Tensor::arange(0.0, 5.0, 2.0, DType::Int64)) == std::vector<std::int64_t>{0, 2, 4});
  CHECK(values_of(Tensor::arange(0.0), DType::Float64, {0}).empty());
  CHECK(values_of(Tensor::arange(1.5, 1.5, -2.0, DType::Float32), DType::Float32, {0}).empty());
}

TEST_CASE("tensor: arange refuses a zero or wrong-signed step, non-finite or fractional values, too many elements",
          "[tensor][factories]") {
  using opforge::DTypeError;
  using opforge::ValueError;
  REQUIRE_THROWS_MATCHES(Tensor::arange(0, 5, 0), ValueError,
                         Message("Tensor::arange: argument 'step': expected a nonzero step, got 0"));
  REQUIRE_THROWS_MATCHES(Tensor::arange(0.0, 5.0, 0.0), ValueError,
                         Message("Tensor::arange: argument 'step': expected a nonzero step, got 0"));
  // PyTorch: "upper bound and larger bound inconsistent with step sign".
  REQUIRE_THROWS_MATCHES(Tensor::arange(5, 0), ValueError,
                         Message("Tensor::arange: argument 'step': expected a negative step to go from start 5 down "
                                 "to end 0, got 1"));
  REQUIRE_THROWS_MATCHES(Tensor::arange(0.0, 2.5, -0.5), ValueError,
                         Message("Tensor::arange: argument 'step': expected a positive step to go from start 0 up to "
                                 "end 2.5, got -0.5"));
  REQUIRE_THROWS_MATCHES(Tensor::arange(0.0, INFINITY), ValueError,
                         Message("Tensor::arange: argument 'end': expected a finite number, got inf"));
  REQUIRE_THROWS_MATCHES(Tensor::arange(std::nan(""), 1.0), ValueError,
                         Message("Tensor::arange: argument 'start': expected a finite number, got nan"));
  // An infinite step would give ceil(5 / inf) = 0 elements, not [0].
  REQUIRE_THROWS_MATCHES(Tensor::arange(0.0, 5.0, -INFINITY), ValueError,
                         Message("Tensor::arange: argument 'step': expected a finite number, got -inf"));
  REQUIRE_THROWS_MATCHES(Tensor::arange(0.0, 5.0, 0.5, DType::Int64), ValueError,
                         Message("Tensor::arange: argument 'step': expected a whole number in [-2^63, 2^63) for an "
                                 "int64 result, got 0.5"));
  // An unsigned end past int64's range goes as a double, and int64 cannot hold it.
  REQUIRE_THROWS_MATCHES(Tensor::arange(std::uint64_t{1} << 63), ValueError,
                         Message("Tensor::arange: argument 'end': expected a whole number in [-2^63, 2^63) for an "
                                 "int64 result, got 9.223372036854776e+18"));
  // Counts whose bytes reach 2^63: (2^63 - 1) / 8 = 1152921504606846975 elements of 8 bytes at most.
  REQUIRE_THROWS_MATCHES(Tensor::arange(kInt64Min, kInt64Max), ValueError,
                         Message("Tensor::arange: arguments 'start', 'end', 'step': expected at most "
                                 "1152921504606846975 elements (int64 data of less than 2^63 bytes), got "
                                 "18446744073709551615 (ceil((end - start) / step) for start -9223372036854775808, "
                                 "end 9223372036854775807, step 1)"));
  REQUIRE_THROWS_MATCHES(Tensor::arange(0.0, 1e300, 1.0, DType::Float32), ValueError,
                         Message("Tensor::arange: arguments 'start', 'end', 'step': expected at most "
                                 "2305843009213693951 elements (float32 data of less than 2^63 bytes), got 1e+300 "
                                 "(ceil((end - start) / step) for start 0, end 1e+300, step 1)"));
  // end - start overflows double.
  REQUIRE_THROWS_MATCHES(Tensor::arange(-1e308, 1e308, 1e300), ValueError,
                         Message("Tensor::arange: arguments 'start', 'end', 'step': expected at most "
                                 "1152921504606846975 elements (float64 data of less than 2^63 bytes), got inf "
                                 "(ceil((end - start) / step) for start -1e+308, end 1e+308, step 1e+300)"));
  // PyTorch has no bool arange ("arange_cpu" not implemented for 'Bool').
  REQUIRE_THROWS_MATCHES(Tensor::arange(3, DType::Bool), DTypeError,
                         Message("Tensor::arange: argument 'dtype': expected float32, float64 or int64, got bool"));
  REQUIRE_THROWS_MATCHES(Tensor::arange(3.0, static_cast<DType>(7)), DTypeError,
                         Message("Tensor::arange: argument 'dtype': expected float32, float64 or int64, got the value "
                                 "7 (not a DType)"));
}

TEST_CASE("tensor: linspace counts up from start and down from end, as torch.linspace", "[tensor][factories]") {
  CHECK(values_of(Tensor::linspace(0, 1, 5), DType::Float64, {5}) == std::vector<double>{0, 0.25, 0.5, 0.75, 1});
  CHECK(values_of(Tensor::linspace(3, -3, 7, DType::Float32), DType::Float32, {7}) ==
        std::vector<double>{3, 2, 1, 0, -1, -2, -3});
  // Literal values printed by torch 1.13 (torch.linspace(a, b, n, dtype=...).tolist()). The
  // second half is end - (steps - 1 - i) * step: 1 - 1/3 = 0.6666666666666667, where
  // 2 * (1/3) is 0.6666666666666666; and 0.1 + 2 * 0.1 would end at 0.30000000000000004.
  CHECK(values_of(Tensor::linspace(0, 1, 4), DType::Float64, {4}) ==
        std::vector<double>{0.0, 0.3333333333333333, 0.6666666666666667, 1.0});
  CHECK(values_of(Tensor::linspace(0, 1, 4, DType::Float32), DType::Float32, {4}) ==
        std::vector<double>{0.0, 0.3333333432674408, 0.6666666269302368, 1.0});
  CHECK(values_of(Tensor::linspace(0.1, 0.3, 3), DType::Float64, {3}) == std::vector<double>{0.1, 0.2, 0.3});
  CHECK(values_of(Tensor::linspace(0.1, 0.3, 3, DType::Float32), DType::Float32, {3}) ==
        std::vector<double>{0.10000000149011612, 0.20000000298023224, 0.30000001192092896});
  CHECK(values_of(Tensor::linspace(1, 2, 6), DType::Float64, {6}) ==
        std::vector<double>{1.0, 1.2, 1.4, 1.6, 1.8, 2.0});
  CHECK(values_of(Tensor::linspace(1, 2, 6, DType::Float32), DType::Float32, {6}) ==
        std::vector<double>{1.0, 1.2000000476837158, 1.399999976158142, 1.600000023841858, 1.7999999523162842, 2.0});
  // int64: step and values in double, truncated toward zero (torch 1.13 gives these).
  CHECK(int64_values(Tensor::linspace(0, 10, 4, DType::Int64)) == std::vector<std::int64_t>{0, 3, 6, 10});
  CHECK(int64_values(Tensor::linspace(10, 0, 4, DType::Int64)) == std::vector<std::int64_t>{10, 6, 3, 0});
  CHECK(int64_values(Tensor::linspace(-5, 5, 4, DType::Int64)) == std::vector<std::int64_t>{-5, -1, 1, 5});
  CHECK(int64_values(Tensor::linspace(0.7, 9.9, 3, DType::Int64)) == std::vector<std::int64_t>{0, 4, 9});
  // A long one ends exactly at end (torch 1.13's vectorised kernel can miss its last
  // bits on long outputs; the formula here is its scalar one).
  const auto v = values_of(Tensor::linspace(-3.7, 11.2, 101), DType::Float64, {101});
  CHECK(v.front() == -3.7);
  CHECK(v.back() == 11.2);
  for (int i = 0; i < 101; ++i) CHECK(std::abs(v[static_cast<std::size_t>(i)] - (-3.7 + 0.149 * i)) < 1e-13);
  // steps 1 gives [start]; 0 gives nothing.
  CHECK(values_of(Tensor::linspace(3, 1, 1), DType::Float64, {1}) == std::vector<double>{3});
  CHECK(int64_values(Tensor::linspace(-2.5, 1, 1, DType::Int64)) == std::vector<std::int64_t>{-2});
  CHECK(values_of(Tensor::linspace(0, 1, 0), DType::Float64, {0}).empty());
  CHECK(values_of(Tensor::linspace(0, 1, 0, DType::Int64), DType::Int64, {0}).empty());
  // end - start overflows: computed on the halves (hand-worked; PyTorch gives NaN here).
  const double big = std::numeric_limits<double>::max();
  CHECK(values_of(Tensor::linspace(-big, big, 5), DType::Float64, {5}) ==
        std::vector<double>{-big, -big / 2, 0, big / 2, big});
  const double big32 = std::numeric_limits<float>::max();
  CHECK(values_of(Tensor::linspace(big32, -big32, 3, DType::Float32), DType::Float32, {3}) ==
        std::vector<double>{big32, 0, -big32});
}

TEST_CASE("tensor: linspace refuses a negative count, non-finite ends, ends the dtype cannot hold",
          "[tensor][factories]") {
  using opforge::DTypeError;
  using opforge::ValueError;
  REQUIRE_THROWS_MATCHES(Tensor::linspace(0, 1, -1), ValueError,
                         Message("Tensor::linspace: argument 'steps': expected a count >= 0, got -1"));
  REQUIRE_THROWS_MATCHES(Tensor::linspace(0, 1, kInt64Max), ValueError,
                         Message("Tensor::linspace: argument 'steps': expected at most 1152921504606846975 elements "
                                 "(float64 data of less than 2^63 bytes), got 9223372036854775807"));
  // torch.linspace(0, inf, 3) is [nan, nan, nan].
  REQUIRE_THROWS_MATCHES(Tensor::linspace(0, INFINITY, 3), ValueError,
                         Message("Tensor::linspace: argument 'end': expected a finite number, got inf"));
  REQUIRE_THROWS_MATCHES(Tensor::linspace(std::nan(""), 1, 3), ValueError,
                         Message("Tensor::linspace: argument 'start': expected a finite number, got nan"));
  REQUIRE_THROWS_MATCHES(Tensor::linspace(0, 1e19, 3, DType::Int64), ValueError,
                         Message("Tensor::linspace: argument 'end': expected a number in [-2^63, 2^63) for an int64 "
                                 "result (a fraction is truncated), got 1e+19"));
  REQUIRE_THROWS_MATCHES(Tensor::linspace(-1e39, 0, 3, DType::Float32), ValueError,
                         Message("Tensor::linspace: argument 'start': expected a number within float32's range "
                                 "(magnitude at most 3.4028234663852886e+38), got -1e+39"));
  REQUIRE_THROWS_MATCHES(Tensor::linspace(0, 1, 3, DType::Bool), DTypeError,
                         Message("Tensor::linspace: argument 'dtype': expected float32, float64 or int64, got bool"));
}

TEST_CASE("tensor: eye has ones on the diagonal, in every dtype", "[tensor][factories]") {
  CHECK(values_of(Tensor::eye(3), DType::Float64, {3, 3}) == std::vector<double>{1, 0, 0, 0, 1, 0, 0, 0, 1});
  CHECK(values_of(Tensor::eye(2, DType::Float32), DType::Float32, {2, 2}) == std::vector<double>{1, 0, 0, 1});
  CHECK(values_of(Tensor::eye(2, 3, DType::Int64), DType::Int64, {2, 3}) == std::vector<double>{1, 0, 0, 0, 1, 0});
  // torch.eye(3, 2, dtype=torch.bool): [[True, False], [False, True], [False, False]].
  CHECK(values_of(Tensor::eye(3, 2, DType::Bool), DType::Bool, {3, 2}) == std::vector<double>{1, 0, 0, 1, 0, 0});
  CHECK(values_of(Tensor::eye(0), DType::Float64, {0, 0}).empty());
  CHECK(values_of(Tensor::eye(2, 0), DType::Float64, {2, 0}).empty());
  // Sizes whose product alone does not overflow, with a 0: empty, as in zeros.
  CHECK(Tensor::eye(std::int64_t{1} << 61, 0).numel() == 0);
}

TEST_CASE("tensor: eye refuses negative sizes and sizes whose bytes overflow", "[tensor][factories]") {
  REQUIRE_THROWS_MATCHES(Tensor::eye(-1), opforge::ValueError,
                         Message("Tensor::eye: argument 'n': expected a size >= 0, got -1"));
  REQUIRE_THROWS_MATCHES(Tensor::eye(2, -3), opforge::ValueError,
                         Message("Tensor::eye: argument 'm': expected a size >= 0, got -3"));
  const std::int64_t big = std::int64_t{1} << 32;
  REQUIRE_THROWS_MATCHES(Tensor::eye(big), opforge::ValueError,
                         Message("Tensor::eye: argument 'n': expected at most 1152921504606846975 elements (float64 "
                                 "data of less than 2^63 bytes), got 4294967296 x 4294967296"));
  REQUIRE_THROWS_MATCHES(Tensor::eye(big, big / 2, DType::Bool), opforge::ValueError,
                         Message("Tensor::eye: arguments 'n', 'm': expected at most 9223372036854775807 elements "
                                 "(bool data of less than 2^63 bytes), got 4294967296 x 2147483648"));
  REQUIRE_THROWS_MATCHES(Tensor::eye(2, static_cast<DType>(9)), opforge::DTypeError,
                         Message("Tensor::eye: argument 'dtype': expected float32, float64, int64 or bool, got the "
                                 "value 9 (not a DType)"));
}

TEST_CASE("tensor: rand is uniform, 0 <= x < 1, and a function of the seed", "[tensor][factories]") {
  const std::int64_t n = 100000;
  for (DType dt : {DType::Float32, DType::Float64}) {
    for (std::uint64_t seed : {0ull, 1ull, 123456789ull}) {
      CAPTURE(opforge::dtype_name(dt), seed);
      const auto v = values_of(Tensor::rand({n}, dt, seed), dt, {n});
      double sum = 0, sq = 0, lo = 1, hi = 0;
      int in_range = 0;
      for (double x : v) {
        sum += x;
        sq += x * x;
        lo = std::min(lo, x);
        hi = std::max(hi, x);
        in_range += x >= 0 && x < 1;
      }
      CHECK(in_range == n);
      const double mean = sum / n, var = sq / n - mean * mean;
      // Uniform [0, 1): mean 1/2 (standard error 0.29 / sqrt(n) ~ 0.0009), variance 1/12.
      CHECK(std::abs(mean - 0.5) < 0.005);
      CHECK(std::abs(var - 1.0 / 12) < 0.003);
      CHECK(lo < 0.001);  // P(all 1e5 above 0.001) = 0.999^1e5 ~ e^-100
      CHECK(hi > 0.999);
    }
  }
  // Same seed, same tensor; another seed, other values.
  const auto a = Tensor::rand({4, 5}, DType::Float64, 42).to_vector();
  CHECK(Tensor::rand({4, 5}, DType::Float64, 42).to_vector() == a);
  const auto c = Tensor::rand({4, 5}, DType::Float64, 43).to_vector();
  int equal = 0;
  for (std::size_t i = 0; i < a.size(); ++i) equal += a[i] == c[i];
  CHECK(equal == 0);
  // Element i depends on (seed, i) only: a prefix of a longer draw, whatever the shape.
  const auto longer = Tensor::rand({9}, DType::Float64, 5).to_vector();
  CHECK(std::vector<double>(longer.begin(), longer.begin() + 6) == Tensor::rand({2, 3}, DType::Float64, 5).to_vector());
  // float32 elements are the float64 ones cut to 24 bits.
  const auto d64 = Tensor::rand({1000}, DType::Float64, 9).to_vector();
  const auto d32 = Tensor::rand({1000}, DType::Float32, 9).to_vector();
  for (std::size_t i = 0; i < d64.size(); ++i) REQUIRE(d32[i] == std::floor(d64[i] * 0x1p24) * 0x1p-24);
  // Seed 6496286's element 1 has its top 25 bits set (found by a search over seeds):
  // its float64 value rounded to float32 would be 1; cut to 24 bits it is 1 - 2^-24.
  const auto e64 = Tensor::rand({2}, DType::Float64, 6496286).to_vector();
  const auto e32 = Tensor::rand({2}, DType::Float32, 6496286).to_vector();
  CHECK(e64[1] >= 1 - 0x1p-25);
  CHECK(static_cast<float>(e64[1]) == 1.0f);
  CHECK(e32[1] == 1 - 0x1p-24);
}

TEST_CASE("tensor: rand refuses integer dtypes and negative sizes as randn does", "[tensor][factories]") {
  REQUIRE_THROWS_MATCHES(Tensor::rand({3}, DType::Int64, 0), opforge::DTypeError,
                         Message("Tensor::rand: argument 'dtype': expected float32 or float64, got int64"));
  REQUIRE_THROWS_MATCHES(Tensor::rand({3}, DType::Bool, 0), opforge::DTypeError,
                         Message("Tensor::rand: argument 'dtype': expected float32 or float64, got bool"));
  REQUIRE_THROWS_MATCHES(Tensor::rand({2, -1}, DType::Float32, 0), opforge::ValueError,
                         Message("Tensor::rand: argument 'shape': expected sizes >= 0, got [2, -1]"));
  CHECK(values_of(Tensor::rand({0, 3}, DType::Float32, 0), DType::Float32, {0, 3}).empty());
}

TEST_CASE("tensor: *_like take the shape and dtype, not the strides or requires_grad", "[tensor][factories]") {
  // A transposed float32 leaf that requires grad: the results are contiguous [3, 2]
  // tensors that do not.
  const Tensor base = Tensor::from_values({1, 2, 3, 4, 5, 6}, {2, 3}, DType::Float32).requires_grad_();
  const Tensor t = base.transpose(0, 1);
  REQUIRE_FALSE(t.is_contiguous());
  CHECK(values_of(Tensor::zeros_like(t), DType::Float32, {3, 2}) == std::vector<double>(6, 0));
  CHECK(values_of(Tensor::ones_like(t), DType::Float32, {3, 2}) == std::vector<double>(6, 1));
  CHECK(values_of(Tensor::full_like(t, -2.5), DType::Float32, {3, 2}) == std::vector<double>(6, -2.5));
  values_of(Tensor::empty_like(t), DType::Float32, {3, 2});
  CHECK(values_of(Tensor::randn_like(t, 7), DType::Float32, {3, 2}) ==
        Tensor::randn({3, 2}, DType::Float32, 7).to_vector());
  CHECK(values_of(Tensor::rand_like(t, 7), DType::Float32, {3, 2}) ==
        Tensor::rand({3, 2}, DType::Float32, 7).to_vector());
  // Other dtypes and shapes.
  const Tensor i = Tensor::full({2}, 9, DType::Int64);
  CHECK(values_of(Tensor::full_like(i, -7), DType::Int64, {2}) == std::vector<double>{-7, -7});
  CHECK(values_of(Tensor::zeros_like(Tensor::ones({}, DType::Bool)), DType::Bool, {}) == std::vector<double>{0});
  CHECK(values_of(Tensor::ones_like(Tensor::empty({0, 4})), DType::Float64, {0, 4}).empty());
}

TEST_CASE("tensor: *_like refuse an undefined tensor, randn_like/rand_like an integer one", "[tensor][factories]") {
  const std::string undefined =
      ": argument 't': expected a tensor, got an undefined one (a default-constructed Tensor, or the .grad() of a "
      "tensor that has none: a non-leaf without retain_grad(), for instance a parameter reassigned with w = w - lr * "
      "w.grad() instead of updated in place under a NoGradGuard, or a leaf before its first backward or after "
      "zero_grad())";
  const Tensor u;
  REQUIRE_THROWS_MATCHES(Tensor::empty_like(u), opforge::ValueError, Message("Tensor::empty_like" + undefined));
  REQUIRE_THROWS_MATCHES(Tensor::zeros_like(u), opforge::ValueError, Message("Tensor::zeros_like" + undefined));
  REQUIRE_THROWS_MATCHES(Tensor::ones_like(u), opforge::ValueError, Message("Tensor::ones_like" + undefined));
  REQUIRE_THROWS_MATCHES(Tensor::full_like(u, 1), opforge::ValueError, Message("Tensor::full_like" + undefined));
  REQUIRE_THROWS_MATCHES(Tensor::randn_like(u, 0), opforge::ValueError, Message("Tensor::randn_like" + undefined));
  REQUIRE_THROWS_MATCHES(Tensor::rand_like(u, 0), opforge::ValueError, Message("Tensor::rand_like" + undefined));
  const Tensor i = Tensor::zeros({2}, DType::Int64);
  REQUIRE_THROWS_MATCHES(Tensor::randn_like(i, 0), opforge::DTypeError,
                         Message("Tensor::randn_like: argument 't': expected dtype float32 or float64, got int64"));
  REQUIRE_THROWS_MATCHES(Tensor::rand_like(Tensor::zeros({2}, DType::Bool), 0), opforge::DTypeError,
                         Message("Tensor::rand_like: argument 't': expected dtype float32 or float64, got bool"));
  REQUIRE_THROWS_MATCHES(Tensor::full_like(i, std::nan("")), opforge::ValueError,
                         Message("Tensor::full_like: argument 'value': nan cannot be stored in an int64 tensor (int64 "
                                 "holds whole numbers in [-2^63, 2^63); a fraction is truncated); pass a finite value "
                                 "in that range"));
}

// ---- metadata ----------------------------------------------------------------------

TEST_CASE("tensor: shape, strides, numel, dim, size and describe", "[tensor]") {
  Tensor t = Tensor::zeros({2, 3, 4}, DType::Float32);
  CHECK(t.shape() == Dims{2, 3, 4});
  CHECK(t.strides() == Dims{12, 4, 1});
  CHECK(t.numel() == 24);
  CHECK(t.dim() == 3);
  CHECK(t.size(0) == 2);
  CHECK(t.size(1) == 3);
  CHECK(t.size(2) == 4);
  CHECK(t.size(-1) == 4);
  CHECK(t.size(-2) == 3);
  CHECK(t.size(-3) == 2);
  CHECK(t.is_contiguous());
  CHECK(t.describe() == "float32[2, 3, 4]");
  CHECK(Tensor::zeros({5}, DType::Int64).describe() == "int64[5]");
  CHECK(Tensor().describe() == "undefined");
  CHECK(Tensor::zeros({5}).strides() == Dims{1});
  CHECK(Tensor::scalar(1).strides().empty());
}

TEST_CASE("tensor: size() with an axis out of range names the valid range", "[tensor]") {
  Tensor t = Tensor::zeros({2, 3});
  REQUIRE_THROWS_MATCHES(t.size(2), opforge::IndexError,
                         Message("Tensor::size: argument 'axis': expected an axis in [-2, 2) for a tensor of "
                                 "shape [2, 3], got 2"));
  REQUIRE_THROWS_MATCHES(t.size(-3), opforge::IndexError,
                         Message("Tensor::size: argument 'axis': expected an axis in [-2, 2) for a tensor of "
                                 "shape [2, 3], got -3"));
  REQUIRE_THROWS_MATCHES(Tensor::scalar(1).size(0), opforge::IndexError,
                         Message("Tensor::size: argument 'axis': expected an axis in [0, 0) for a tensor of "
                                 "shape [], got 0"));
}

// ---- data -------------------------------------------------------------------------

TEST_CASE("tensor: item reads a one-element tensor and refuses more elements", "[tensor]") {
  CHECK(Tensor::from_values({4.5}, {1, 1}).item() == 4.5);
  CHECK(Tensor::full({1}, 7, DType::Int64).item() == 7);
  CHECK(Tensor::full({1}, 1, DType::Bool).item() == 1);
  REQUIRE_THROWS_MATCHES(Tensor::zeros({2, 2}).item(), opforge::ShapeError,
                         Message("Tensor::item: expected a tensor with one element, got shape [2, 2] (4 elements); reduce "
                                 "it first (sum(), mean()) or read the elements with to_vector()"));
  REQUIRE_THROWS_MATCHES(Tensor::zeros({0}).item(), opforge::ShapeError,
                         Message("Tensor::item: expected a tensor with one element, got shape [0] (0 elements); reduce "
                                 "it first (sum(), mean()) or read the elements with to_vector()"));
}

TEST_CASE("tensor: to_vector converts every dtype to double in row-major order", "[tensor]") {
  CHECK(Tensor::from_values({1.5, 2.5, 3.5}, DType::Float32).to_vector() == std::vector<double>{1.5, 2.5, 3.5});
  CHECK(Tensor::from_values({1, 2, 3, 4}, {2, 2}, DType::Int64).to_vector() == std::vector<double>{1, 2, 3, 4});
  CHECK(Tensor::from_values({0, 2, 0}, DType::Bool).to_vector() == std::vector<double>{0, 1, 0});
}

TEST_CASE("tensor: data<T>() with the wrong T is a DTypeError", "[tensor]") {
  Tensor t = Tensor::zeros({3}, DType::Float64);
  CHECK(t.data<double>() == t.data_ptr());
  REQUIRE_THROWS_MATCHES(t.data<float>(), opforge::DTypeError,
                         Message("data<T>(): expected dtype float32, got float64"));
  REQUIRE_THROWS_MATCHES(Tensor::zeros({3}, DType::Float32).data<std::int64_t>(), opforge::DTypeError,
                         Message("data<T>(): expected dtype int64, got float32"));
}

TEST_CASE("tensor: clone is a deep copy", "[tensor]") {
  Tensor a = Tensor::from_values({1, 2, 3, 4}, {2, 2});
  Tensor b = a.clone();
  CHECK(b.data_ptr() != a.data_ptr());
  CHECK(b.storage() != a.storage());
  CHECK(b.shape() == a.shape());
  CHECK(b.dtype() == a.dtype());
  CHECK(b.to_vector() == a.to_vector());
  b.data<double>()[0] = 100;
  CHECK(a.to_vector() == std::vector<double>{1, 2, 3, 4});
  a.data<double>()[3] = -1;
  CHECK(b.to_vector() == std::vector<double>{100, 2, 3, 4});
}

TEST_CASE("tensor: clone and to() are recorded on a tensor that requires grad, as in PyTorch", "[tensor][grad]") {
  // They copied without recording: (h.tanh() + h.clone().square()).sum() gave w
  // the gradient of the first term only, silently.
  Tensor x = Tensor::from_values({1, 2}).requires_grad_();
  Tensor y = twice_op()({x});
  Tensor c = y.clone();
  CHECK_FALSE(c.is_leaf());
  CHECK(c.requires_grad());
  CHECK(c.to_vector() == std::vector<double>{2, 4});
  CHECK(c.data_ptr() != y.data_ptr());
  (c * c).sum().backward();  // d/dx (2x)^2 = 8x
  CHECK(x.grad().to_vector() == std::vector<double>{8, 16});

  // A strided tensor's clone, and -0.0 kept.
  Tensor z = Tensor::from_values({-0.0, 3, 4, 5}, Dims{2, 2}).requires_grad_();
  Tensor zc = z.transpose(0, 1).clone();
  CHECK(zc.is_contiguous());
  CHECK(std::signbit(zc.to_vector()[0]));
  zc.sum().backward();
  CHECK(z.grad().to_vector() == std::vector<double>{1, 1, 1, 1});

  // float64 -> float32 -> float64 inside a graph: the gradient comes back in each dtype.
  Tensor w = Tensor::from_values({0.5, -1.5}).requires_grad_();
  Tensor f = w.to(DType::Float32);
  CHECK(f.dtype() == DType::Float32);
  CHECK(f.requires_grad());
  Tensor back = (f * f).to(DType::Float64);
  back.sum().backward();
  CHECK(w.grad().dtype() == DType::Float64);
  CHECK(w.grad().to_vector() == std::vector<double>{1.0, -3.0});

  // To an integer dtype, or with grad mode off, or on a detached tensor: a plain copy.
  CHECK_FALSE(w.to(DType::Int64).requires_grad());
  {
    opforge::NoGradGuard no_grad;
    CHECK(y.clone().is_leaf());
    CHECK_FALSE(y.clone().requires_grad());
    CHECK_FALSE(w.to(DType::Float32).requires_grad());
  }
  CHECK_FALSE(y.detach().clone().requires_grad());
}

TEST_CASE("tensor: to() between floating dtypes passes the gradient through a round trip", "[tensor][grad]") {
  Tensor x = Tensor::randn({3, 4}, DType::Float64, 5).requires_grad_();
  Tensor y = (x.to(DType::Float32).to(DType::Float64) * x).sum();
  y.backward();
  // d/dx (q(x) x) = q(x) + x, where q rounds to float32 (its derivative taken as
  // 1); the second term comes back through the float32 path, so rounded too, as
  // in PyTorch: q(x) + q(x).
  const std::vector<double> v = x.detach().to_vector(), g = x.grad().to_vector();
  for (std::size_t i = 0; i < v.size(); ++i) CHECK(g[i] == 2.0 * static_cast<double>(static_cast<float>(v[i])));
}

TEST_CASE("tensor: to(dtype) converts values into a new tensor", "[tensor]") {
  Tensor d = Tensor::from_values({1.5, -2.25, 3.0}, DType::Float64);
  Tensor f = d.to(DType::Float32);
  CHECK(f.dtype() == DType::Float32);
  CHECK(f.shape() == d.shape());
  CHECK(f.data_ptr() != d.data_ptr());
  CHECK(f.data<float>()[0] == 1.5f);
  CHECK(f.data<float>()[1] == -2.25f);
  CHECK(f.data<float>()[2] == 3.0f);

  Tensor i = Tensor::from_values({1.9, -2.9, 0.0}).to(DType::Int64);
  CHECK(i.dtype() == DType::Int64);
  CHECK(i.data<std::int64_t>()[0] == 1);   // truncation toward zero
  CHECK(i.data<std::int64_t>()[1] == -2);

  Tensor b = Tensor::from_values({0.0, 0.5, -3.0}).to(DType::Bool);
  CHECK(b.to_vector() == std::vector<double>{0, 1, 1});

  Tensor back = Tensor::from_values({7, 8}, DType::Int64).to(DType::Float64);
  CHECK(back.data<double>()[1] == 8.0);

  // Same dtype: the same tensor, not a copy.
  CHECK(d.to(DType::Float64).is_same(d));
}

TEST_CASE("tensor: detach shares the data but is a leaf without grad", "[tensor]") {
  Tensor x = Tensor::from_values({1, 2, 3}).requires_grad_();
  Tensor y = twice_op()({x});
  REQUIRE(y.grad_fn() != nullptr);
  Tensor d = y.detach();
  CHECK(d.data_ptr() == y.data_ptr());
  CHECK(d.storage() == y.storage());
  CHECK(d.is_leaf());
  CHECK(d.grad_fn() == nullptr);
  CHECK_FALSE(d.requires_grad());
  CHECK_FALSE(d.grad().defined());
  // y keeps its history.
  CHECK(y.grad_fn() != nullptr);
  CHECK(y.requires_grad());
  // Detaching a leaf that requires grad gives one that does not.
  Tensor dx = x.detach();
  CHECK(dx.data_ptr() == x.data_ptr());
  CHECK_FALSE(dx.requires_grad());
  CHECK(x.requires_grad());
  // Writes through one are seen by the other (same memory).
  d.data<double>()[0] = 42;
  CHECK(y.to_vector()[0] == 42);
}

TEST_CASE("tensor: the version counter is shared by every view of the data", "[tensor]") {
  Tensor a = Tensor::zeros({3});
  CHECK(a.version() == 0);
  Tensor copy = a;
  Tensor view = a.detach();
  Tensor other = a.clone();
  view.bump_version();
  CHECK(a.version() == 1);
  CHECK(copy.version() == 1);
  CHECK(view.version() == 1);
  CHECK(other.version() == 0);  // its own storage
  a.bump_version();
  CHECK(view.version() == 2);
}

// ---- autograd flags ---------------------------------------------------------------

TEST_CASE("tensor: requires_grad_ on a leaf sets and clears the flag", "[tensor]") {
  Tensor x = Tensor::zeros({2});
  CHECK_FALSE(x.requires_grad());
  CHECK(x.is_leaf());
  CHECK(&x.requires_grad_() == &x);  // returns *this for chaining
  CHECK(x.requires_grad());
  x.requires_grad_(false);
  CHECK_FALSE(x.requires_grad());
  CHECK(Tensor::zeros({2}, DType::Float32).requires_grad_().requires_grad());
}

TEST_CASE("tensor: requires_grad_ on a non-leaf is refused with a message naming its op", "[tensor]") {
  Tensor x = Tensor::from_values({1, 2}).requires_grad_();
  Tensor y = twice_op()({x});
  CHECK_FALSE(y.is_leaf());
  CHECK(y.requires_grad());
  const char* msg =
      "Tensor::requires_grad_: the tensor is the output of 'test.twice' (not a leaf); requires_grad can only be "
      "set on leaves. Use detach() to make a leaf.";
  REQUIRE_THROWS_MATCHES(y.requires_grad_(), opforge::AutogradError, Message(msg));
  REQUIRE_THROWS_MATCHES(y.requires_grad_(false), opforge::AutogradError, Message(msg));
  CHECK(y.requires_grad());
}

TEST_CASE("tensor: requires_grad_ on a non-floating tensor is refused", "[tensor]") {
  Tensor i = Tensor::zeros({2}, DType::Int64);
  REQUIRE_THROWS_MATCHES(i.requires_grad_(), opforge::DTypeError,
                         Message("Tensor::requires_grad_: only float32 and float64 tensors can require grad, "
                                 "got int64"));
  CHECK_FALSE(i.requires_grad());
  REQUIRE_THROWS_MATCHES(Tensor::zeros({2}, DType::Bool).requires_grad_(), opforge::DTypeError,
                         Message("Tensor::requires_grad_: only float32 and float64 tensors can require grad, "
                                 "got bool"));
  i.requires_grad_(false);  // clearing is always allowed
  CHECK_FALSE(i.requires_grad());
}

TEST_CASE("tensor: set_grad checks shape and dtype, zero_grad forgets", "[tensor]") {
  Tensor x = Tensor::zeros({2});
  x.set_grad(Tensor::ones({2}));
  CHECK(x.grad().to_vector() == std::vector<double>{1, 1});
  REQUIRE_THROWS_MATCHES(x.set_grad(Tensor::ones({3})), opforge::ShapeError,
                         Message("Tensor::set_grad: argument 'grad': expected float64[2], got float64[3]"));
  REQUIRE_THROWS_MATCHES(x.set_grad(Tensor::ones({2}, DType::Float32)), opforge::ShapeError,
                         Message("Tensor::set_grad: argument 'grad': expected float64[2], got float32[2]"));
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
}

// ---- bad input ---------------------------------------------------------------------

TEST_CASE("tensor: from_values with the wrong number of values", "[tensor]") {
  REQUIRE_THROWS_MATCHES(Tensor::from_values({1, 2, 3, 4, 5}, {2, 3}), opforge::ShapeError,
                         Message("Tensor::from_values: argument 'values': expected 6 values for shape [2, 3], got 5"));
  REQUIRE_THROWS_MATCHES(Tensor::from_values({1, 2}, Dims{}), opforge::ShapeError,
                         Message("Tensor::from_values: argument 'values': expected 1 values for shape [], got 2"));
}

TEST_CASE("tensor: negative sizes are refused", "[tensor]") {
  // Each message names the function called and its argument.
  const std::string msg = ": argument 'shape': expected sizes >= 0, got [2, -1]";
  REQUIRE_THROWS_MATCHES(Tensor::empty({2, -1}), opforge::ValueError, Message("Tensor::empty" + msg));
  REQUIRE_THROWS_MATCHES(Tensor::zeros({2, -1}), opforge::ValueError, Message("Tensor::zeros" + msg));
  REQUIRE_THROWS_MATCHES(Tensor::ones({2, -1}), opforge::ValueError, Message("Tensor::ones" + msg));
  REQUIRE_THROWS_MATCHES(Tensor::full({2, -1}, 1.0), opforge::ValueError, Message("Tensor::full" + msg));
  REQUIRE_THROWS_MATCHES(Tensor::randn({2, -1}), opforge::ValueError, Message("Tensor::randn" + msg));
  // The product is positive here, so only the per-size check can catch it.
  REQUIRE_THROWS_MATCHES(Tensor::from_values({1, 2, 3, 4, 5, 6}, {-2, -3}), opforge::ValueError,
                         Message("Tensor::from_values: argument 'shape': expected sizes >= 0, got [-2, -3]"));
  // Nor is a value that is no DType.
  REQUIRE_THROWS_MATCHES(Tensor::empty({2}, static_cast<DType>(7)), opforge::DTypeError,
                         Message("Tensor::empty: argument 'dtype': expected float32, float64, int64 or bool, got the "
                                 "value 7 (not a DType)"));
}

TEST_CASE("tensor: more than 8 dimensions are refused", "[tensor]") {
  const char* msg = "opforge tensors have at most 8 dimensions; got 9";
  REQUIRE_THROWS_MATCHES(Tensor::zeros({1, 1, 1, 1, 1, 1, 1, 1, 1}), opforge::ShapeError, Message(msg));
  REQUIRE_THROWS_MATCHES(Dims(std::vector<std::int64_t>(9, 1)), opforge::ShapeError, Message(msg));
  Dims d{1, 1, 1, 1, 1, 1, 1, 1};
  Tensor t8 = Tensor::zeros(d);  // 8 is allowed
  CHECK(t8.dim() == 8);
  REQUIRE_THROWS_MATCHES(d.push_back(1), opforge::ShapeError, Message(msg));
  REQUIRE_THROWS_MATCHES(d.resize(9), opforge::ShapeError, Message(msg));
  CHECK(d.size() == 8);
}

TEST_CASE("tensor: a shape whose byte size overflows is refused", "[tensor]") {
  // 2^32 * 2^32 elements would wrap to 0 in int64: a "tensor" with that shape, a
  // 0-byte allocation and kernels reading far out of bounds.
  const std::int64_t big = std::int64_t{1} << 32;
  REQUIRE_THROWS_MATCHES(Tensor::zeros({big, big}), opforge::ValueError,
                         Message("Tensor::zeros: argument 'shape': [4294967296, 4294967296]: float64 data of that "
                                 "size does not fit in memory addresses (more than 2^63 bytes)"));
  // The element count fits in int64 but the bytes do not (2^61 float32 elements).
  REQUIRE_THROWS_MATCHES(Tensor::empty({std::int64_t{1} << 61}, DType::Float32), opforge::ValueError,
                         Message("Tensor::empty: argument 'shape': [2305843009213693952]: float32 data of that size "
                                 "does not fit in memory addresses (more than 2^63 bytes)"));
  CHECK_THROWS_AS(Tensor::randn({big, big}), opforge::ValueError);
  // A 0 makes the tensor empty, whatever the other sizes, as long as they do not
  // overflow on their own.
  const Tensor empty = Tensor::zeros({std::int64_t{1} << 61, 0});
  CHECK(empty.numel() == 0);
  CHECK(empty.nbytes() == 0);
  CHECK_THROWS_AS(Tensor::zeros({big, big, 0}), opforge::ValueError);
}

TEST_CASE("tensor: from_values with an overflowing shape is refused without overflowing itself",
          "[tensor]") {
  // from_values compares values.size() with Dims::product() before
  // make_contiguous_impl checks for overflow: product() of [2^32, 2^32] is signed
  // overflow (UB; it wraps to 0 in practice, so the empty list "matches"). Under
  // UBSan (OPFORGE_SANITIZE=ON) this test aborts in Dims::product.
  const std::int64_t big = std::int64_t{1} << 32;
  CHECK_THROWS_AS(Tensor::from_values({}, {big, big}), opforge::ValueError);
}

TEST_CASE("tensor: from_values with a negative size reports the negative size", "[tensor]") {
  // Not "expected -1 values for shape [-1]": the bad size is named first.
  REQUIRE_THROWS_MATCHES(Tensor::from_values({1}, {-1}), opforge::ValueError,
                         Message("Tensor::from_values: argument 'shape': expected sizes >= 0, got [-1]"));
}

TEST_CASE("tensor: any use of an undefined tensor names the call, and where such tensors come from", "[tensor]") {
  const char* origins =
      "a default-constructed Tensor, or the .grad() of a tensor that has none: a non-leaf without retain_grad(), "
      "for instance a parameter reassigned with w = w - lr * w.grad() instead of updated in place under a "
      "NoGradGuard, or a leaf before its first backward or after zero_grad()";
  Tensor u;
  CHECK_FALSE(u.defined());
  CHECK_FALSE(static_cast<bool>(u));
  CHECK_FALSE(u.requires_grad());
  REQUIRE_THROWS_MATCHES(u.numel(), opforge::ValueError,
                         Message(std::string("Tensor::numel: the tensor is undefined (") + origins + ")"));
  REQUIRE_THROWS_MATCHES(u.item(), opforge::ValueError,
                         Message(std::string("Tensor::item: the tensor is undefined (") + origins + ")"));
  REQUIRE_THROWS_MATCHES(u.backward(), opforge::ValueError,
                         Message(std::string("Tensor::backward: the tensor is undefined (") + origins + ")"));
}

TEST_CASE("tensor: set_grad with a tensor that has a grad_fn stores data only and leaks nothing", "[tensor]") {
  // Stored as it is, y = f(x) in x.grad would be a cycle: x -> grad y -> y's node
  // -> edge -> x, and none of them would ever be freed.
  const std::int64_t base = opforge::live_bytes();
  {
    Tensor x = Tensor::from_values({1, 2}).requires_grad_();
    Tensor y = twice_op()({x});
    x.set_grad(y);
    CHECK(x.grad().to_vector() == std::vector<double>{2, 4});
    CHECK(x.grad().grad_fn() == nullptr);
    CHECK(x.grad().data_ptr() == y.data_ptr());  // no copy
    CHECK(y.grad_fn() != nullptr);               // y itself keeps its history
  }
  CHECK(opforge::live_bytes() == base);
}

// ---- memory ------------------------------------------------------------------------

TEST_CASE("tensor: live_bytes rises by numel*itemsize per allocation and falls when the tensor dies", "[tensor]") {
  const std::int64_t base = opforge::live_bytes();
  {
    Tensor a = Tensor::empty({3, 5}, DType::Float64);
    CHECK(opforge::live_bytes() - base == 3 * 5 * 8);
    {
      Tensor b = Tensor::zeros({7}, DType::Float32);
      CHECK(opforge::live_bytes() - base == 3 * 5 * 8 + 7 * 4);
      Tensor c = Tensor::ones({9}, DType::Bool);
      CHECK(opforge::live_bytes() - base == 3 * 5 * 8 + 7 * 4 + 9);
      Tensor d = Tensor::randn({10}, DType::Float32, 1);
      Tensor e = Tensor::from_values({1, 2}, DType::Int64);
      CHECK(opforge::live_bytes() - base == 120 + 28 + 9 + 40 + 16);
    }
    CHECK(opforge::live_bytes() - base == 3 * 5 * 8);
    Tensor c = a.clone();
    CHECK(opforge::live_bytes() - base == 2 * 120);
    Tensor f = a.to(DType::Float32);
    CHECK(opforge::live_bytes() - base == 2 * 120 + 60);
  }
  CHECK(opforge::live_bytes() == base);
}

TEST_CASE("tensor: peak_bytes tracks the high-water mark", "[tensor]") {
  opforge::reset_peak_bytes();
  const std::int64_t base = opforge::live_bytes();
  CHECK(opforge::peak_bytes() == base);
  { Tensor big = Tensor::empty({1000}); }
  CHECK(opforge::live_bytes() == base);
  CHECK(opforge::peak_bytes() == base + 8000);
  opforge::reset_peak_bytes();
  CHECK(opforge::peak_bytes() == base);
}

TEST_CASE("tensor: copies of a Tensor share storage and never copy data", "[tensor]") {
  const std::int64_t base = opforge::live_bytes();
  Tensor a = Tensor::from_values({1, 2, 3});
  const std::int64_t after_a = opforge::live_bytes();
  CHECK(after_a - base == 24);
  Tensor b = a;            // copy construction
  Tensor c;
  c = a;                   // copy assignment
  std::vector<Tensor> many(100, a);
  CHECK(opforge::live_bytes() == after_a);
  CHECK(b.is_same(a));
  CHECK(c.is_same(a));
  CHECK(b.data_ptr() == a.data_ptr());
  CHECK(b.storage() == a.storage());
  b.data<double>()[1] = 20;
  CHECK(a.to_vector() == std::vector<double>{1, 20, 3});
  CHECK(many[99].to_vector() == std::vector<double>{1, 20, 3});
  // The storage lives as long as any copy does.
  a = Tensor();
  b = Tensor();
  many.clear();
  CHECK(opforge::live_bytes() == after_a);
  CHECK(c.to_vector() == std::vector<double>{1, 20, 3});
  c = Tensor();
  CHECK(opforge::live_bytes() == base);
}

namespace {
// The /proc/self/smaps entry of the mapping that holds address p: its lines, or
// empty when no mapping holds it.
std::vector<std::string> smaps_entry(const void* p) {
  std::ifstream in("/proc/self/smaps");
  std::vector<std::string> entry;
  std::string line;
  bool inside = false;
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  while (std::getline(in, line)) {
    std::uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {  // a mapping's first line
      if (inside) break;
      inside = addr >= lo && addr < hi;
    }
    if (inside) entry.push_back(line);
  }
  return entry;
}

// One smaps entry, read: its range, whether it carries huge-page advice, and its
// text for failure messages.
struct Mapping {
  std::uintptr_t lo = 0, hi = 0;
  bool advised = false;
  std::string text;
};
Mapping read_mapping(const std::vector<std::string>& entry) {
  Mapping m;
  for (const std::string& l : entry) m.text += l + "\n";
  if (entry.empty()) return m;
  char dash = 0;
  std::istringstream(entry.front()) >> std::hex >> m.lo >> dash >> m.hi;
  for (const std::string& l : entry)
    if (l.rfind("VmFlags:", 0) == 0) m.advised = l.find(" hg") != std::string::npos;
  return m;
}
}  // namespace

TEST_CASE("tensor: every fresh tensor's data is 64-byte aligned and its own, whatever the heap returns",
          "[tensor][memory]") {
  // Small blocks come from the heap at its 16-byte alignment and are aligned by
  // the core; interleaving odd-sized heap blocks varies where each one starts.
  std::vector<Tensor> keep;
  std::vector<std::unique_ptr<char[]>> noise;
  for (std::int64_t n = 0; n < 600; n += (n < 80 ? 1 : 7)) {
    noise.emplace_back(new char[static_cast<std::size_t>(1 + n % 29)]);
    Tensor t = Tensor::empty({n}, DType::Float32);
    CAPTURE(n);
    REQUIRE(reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 64 == 0);
    float* p = t.data<float>();
    for (std::int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(n * 1000 + i);
    keep.push_back(std::move(t));
  }
  // No tensor's data overlaps another's: every value written is still there.
  for (const Tensor& t : keep) {
    const std::int64_t n = t.numel();
    const float* p = t.data<float>();
    for (std::int64_t i = 0; i < n; ++i) REQUIRE(p[i] == static_cast<float>(n * 1000 + i));
  }
}

TEST_CASE("tensor: a large tensor gets its own huge-page mapping, kept for the next one of its size, then returned",
          "[tensor][memory]") {
  opforge::release_cached_memory();
  const std::int64_t base = opforge::live_bytes();
  const void* data = nullptr;
  Mapping alive;
  {
    // 6 MiB: above the 4 MiB threshold of a mapping of its own.
    opforge::Tensor t = opforge::Tensor::full({768, 1024}, 1.5, opforge::DType::Float64);
    data = t.data<double>();
    CHECK(reinterpret_cast<std::uintptr_t>(data) % 64 == 0);
    CHECK(opforge::live_bytes() - base == 768 * 1024 * 8);
    const std::vector<double> v = t.to_vector();
    CHECK(v.front() == 1.5);
    CHECK(v.back() == 1.5);

    const std::vector<std::string> entry = smaps_entry(data);
    alive = read_mapping(entry);
    INFO("the mapping that holds the tensor's data (/proc/self/smaps):\n" << alive.text);
    REQUIRE(!entry.empty());
    // The mapping starts on a 2 MiB boundary and is a whole number of 2 MiB pages.
    CHECK(alive.lo % (2u << 20) == 0);
    CHECK((alive.hi - alive.lo) % (2u << 20) == 0);
    CHECK(alive.hi - alive.lo >= 768u * 1024u * 8u);
    // Where the kernel offers transparent huge pages, the mapping asked for them.
    std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
    std::string mode;
    std::getline(thp, mode);
    if (mode.find("[never]") == std::string::npos && !mode.empty()) CHECK(alive.advised);
    CHECK(opforge::cached_memory_bytes() == 0);
  }
  CHECK(opforge::live_bytes() == base);
  // Kept for reuse: counted as cached, not live, and the next tensor of that
  // size gets the same block (with its own values).
  const auto block = static_cast<std::int64_t>(alive.hi - alive.lo);
  CHECK(opforge::cached_memory_bytes() == block);
  {
    opforge::Tensor again = opforge::Tensor::full({1024, 768}, -2.0, opforge::DType::Float64);
    CHECK(again.data<double>() == data);
    CHECK(again.to_vector() == std::vector<double>(768 * 1024, -2.0));
    CHECK(opforge::cached_memory_bytes() == 0);
    // A tensor of another size does not take it.
  }
  CHECK(opforge::cached_memory_bytes() == block);
  CHECK(opforge::release_cached_memory() == block);
  CHECK(opforge::cached_memory_bytes() == 0);
  // Returned to the system: the tensor's mapping is gone. The address itself
  // may be mapped again by then by anything else in the process (the C
  // library's allocator, a thread's stack), so what is checked is that no
  // mapping of the tensor's exact range with huge-page advice is left.
  const Mapping after = read_mapping(smaps_entry(data));
  INFO("what holds the address once the block was released:\n" << after.text);
  CHECK_FALSE((after.lo == alive.lo && after.hi == alive.hi && after.advised));
}

TEST_CASE("tensor: a mid-size tensor (128 KiB to 4 MiB) gets a block that the next one of a nearby size reuses",
          "[tensor][memory]") {
  // From the C library's heap such blocks came back as fresh pages on most
  // calls (faulted and zeroed again): an svd of a 256 x 256 matrix spent a
  // fifth of its time there.
  opforge::release_cached_memory();
  const void* data = nullptr;
  {
    const opforge::Tensor small = opforge::Tensor::full({1000}, 1.0);  // 8 KB: from the heap, never kept
    opforge::Tensor t = opforge::Tensor::full({256, 256}, 0.5);     // 512 KiB
    data = t.data_ptr();
    CHECK(reinterpret_cast<std::uintptr_t>(data) % 64 == 0);
    CHECK(t.to_vector() == std::vector<double>(256 * 256, 0.5));
  }
  // Kept: a whole number of pages, at most 12.5% over the tensor's bytes.
  const std::int64_t kept = opforge::cached_memory_bytes();
  CHECK(kept % 4096 == 0);
  CHECK(kept >= 256 * 256 * 8);
  CHECK(kept <= 256 * 256 * 8 * 9 / 8);
  {
    // 1.6% bigger: the same size class (an eighth of 512 KiB), so the same
    // block, with its own values.
    opforge::Tensor again = opforge::Tensor::full({260, 256}, -1.0);
    CHECK(again.data_ptr() == data);
    CHECK(again.to_vector() == std::vector<double>(260 * 256, -1.0));
    CHECK(opforge::cached_memory_bytes() == 0);
    // Half the size: another class, a block of its own.
    const opforge::Tensor half = opforge::Tensor::zeros({128, 256});
    CHECK(half.data_ptr() != data);
    CHECK(half.to_vector() == std::vector<double>(128 * 256, 0.0));
  }
  CHECK(opforge::cached_memory_bytes() > kept);
  CHECK(opforge::release_cached_memory() > kept);
  CHECK(opforge::cached_memory_bytes() == 0);
}

TEST_CASE("tensor: a tensor of 32 MiB keeps its block for the next one of its size", "[tensor][memory]") {
  // 2048 x 2048 float64: 32 MiB of data, a 34 MiB mapping with the header. It was
  // not kept (the limit counted 32 MiB of mapping), and every call faulted and
  // zeroed 17 huge pages again.
  opforge::release_cached_memory();
  const void* data = nullptr;
  { data = opforge::Tensor::empty({2048, 2048}).data_ptr(); }
  CHECK(opforge::cached_memory_bytes() == std::int64_t{34} << 20);
  const opforge::Tensor again = opforge::Tensor::full({2048, 2048}, 2.0);
  CHECK(again.data_ptr() == data);
  CHECK(again.to_vector()[2048 * 2048 - 1] == 2.0);
  CHECK(opforge::cached_memory_bytes() == 0);
}

TEST_CASE("tensor: blocks over 34 MiB go back to the system at once, at most 68 MiB is kept, oldest dropped first",
          "[tensor][memory]") {
  opforge::release_cached_memory();
  const void* data = nullptr;
  Mapping alive;
  {
    opforge::Tensor t = opforge::Tensor::zeros({10 << 20}, opforge::DType::Float32);  // 40 MiB
    data = t.data_ptr();
    alive = read_mapping(smaps_entry(data));
  }
  CHECK(opforge::cached_memory_bytes() == 0);  // 40 MiB: not kept
  const Mapping after = read_mapping(smaps_entry(data));
  CHECK_FALSE((after.lo == alive.lo && after.hi == alive.hi && after.advised));
  // Five tensors of 15 MiB (blocks of 16 MiB with the header, in 2 MiB pages)
  // die in turn: four are kept (64 MiB), the first one freed is dropped.
  const std::int64_t block = std::int64_t{16} << 20;
  std::vector<const void*> order;
  {
    std::vector<opforge::Tensor> ts;
    for (int i = 0; i < 5; ++i) ts.push_back(opforge::Tensor::empty({15 << 18}, opforge::DType::Float32));
    for (const auto& t : ts) order.push_back(t.data_ptr());
    for (auto& t : ts) t = opforge::Tensor();  // freed first to last
  }
  CHECK(opforge::cached_memory_bytes() == 4 * block);
  // Taken most recent first.
  const opforge::Tensor a = opforge::Tensor::empty({15 << 18}, opforge::DType::Float32);
  CHECK(a.data_ptr() == order[4]);
  const opforge::Tensor b = opforge::Tensor::empty({15 << 18}, opforge::DType::Float32);
  CHECK(b.data_ptr() == order[3]);
  CHECK(opforge::release_cached_memory() == 2 * block);
  CHECK(opforge::cached_memory_bytes() == 0);
}

TEST_CASE("tensor: large and small tensors interoperate (copy, views, arithmetic)", "[tensor][memory]") {
  opforge::Tensor big = opforge::Tensor::randn({1100, 1000}, opforge::DType::Float32, 5);  // 4.4 MB
  opforge::Tensor small = big.slice(0, 3, 5).clone();                                     // 8 KB
  const std::vector<double> vb = big.to_vector(), vs = small.to_vector();
  for (std::size_t j = 0; j < vs.size(); ++j) CHECK(vs[j] == vb[3 * 1000 + j]);
  opforge::Tensor copy = big.clone();
  CHECK(copy.to_vector() == vb);
}

TEST_CASE("tensor: an allocation the system refuses is a MemoryError that says how much and for what",
          "[tensor][memory][errors]") {
  // 2^40 x 2^10 float64 = 8 PiB: fits 63-bit addresses, not any machine.
  const std::int64_t base = opforge::live_bytes();
  try {
    opforge::Tensor t = opforge::Tensor::empty({std::int64_t{1} << 40, 1024}, opforge::DType::Float64);
    FAIL("an 8 PiB tensor was allocated");
  } catch (const opforge::MemoryError& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Catch::StartsWith("out of memory: a float64 tensor of shape [1099511627776, 1024] needs "
                                      "9007199254740992 bytes (8388608.0 GiB), which the system refused"));
    CHECK_THAT(msg, Catch::Contains("live tensors hold"));
    CHECK(e.kind() == opforge::ErrorKind::Memory);
  }
  CHECK(opforge::live_bytes() == base);  // nothing counted for the failed tensor
  // The process goes on: the next allocation works.
  CHECK(opforge::Tensor::ones({4}).to_vector() == std::vector<double>{1, 1, 1, 1});
}

TEST_CASE("tensor: an op whose output cannot be allocated names the op", "[tensor][memory][errors]") {
  // linalg.outer of two 2^22 vectors: a 2^44-element (128 TiB) float64 output.
  const opforge::Tensor a = opforge::Tensor::ones({std::int64_t{1} << 22});
  try {
    opforge::op("linalg.outer")({a, a});
    FAIL("a 128 TiB tensor was allocated");
  } catch (const opforge::MemoryError& e) {
    CHECK_THAT(std::string(e.what()),
               Catch::StartsWith("linalg.outer: out of memory: a float64 tensor of shape [4194304, 4194304] needs "));
  }
}

TEST_CASE("int64 tensors refuse values they cannot hold instead of storing INT64_MIN", "[tensor]") {
  // NaN, infinities and values beyond [-2^63, 2^63) have no int64 (the
  // conversion is undefined behaviour; it stored -9223372036854775808).
  const double nan = std::nan("");
  Tensor t = Tensor::zeros({3}, DType::Int64);
  CHECK_THROWS_MATCHES(t.fill_(nan), opforge::ValueError,
                       Message("Tensor::fill_: argument 'value': nan cannot be stored in an int64 tensor (int64 holds "
                               "whole numbers in [-2^63, 2^63); a fraction is truncated); pass a finite value in that "
                               "range"));
  CHECK_THROWS_AS(t.fill_(1e30), opforge::ValueError);
  CHECK_THROWS_AS(t.fill_(0x1p63), opforge::ValueError);
  CHECK(t.to_vector() == std::vector<double>{0, 0, 0});  // untouched
  CHECK(t.fill_(-0x1p63).to_vector()[0] == -0x1p63);   // the smallest int64 fits
  CHECK(t.fill_(2.5).to_vector() == std::vector<double>{2, 2, 2});  // truncated, as NumPy and PyTorch
  CHECK_THROWS_AS(Tensor::full({2}, -INFINITY, DType::Int64), opforge::ValueError);
  CHECK_THROWS_AS(Tensor::scalar(nan, DType::Int64), opforge::ValueError);
  CHECK_THROWS_MATCHES(Tensor::from_values({1, 1e19}, DType::Int64), opforge::ValueError,
                       Message("Tensor::from_values: argument 'values': element 1 (1e+19) cannot be stored in an "
                               "int64 tensor (int64 holds whole numbers in [-2^63, 2^63); a fraction is truncated); "
                               "pass finite values in that range"));
  // Conversions name the first element int64 cannot hold; copy_ leaves its destination as it was.
  const Tensor f = Tensor::from_values({1.5, -2.5, nan, 4}, {2, 2});
  CHECK_THROWS_MATCHES(f.transpose(0, 1).to(DType::Int64), opforge::ValueError,
                       Message("Tensor::to: element 1 (row-major) of the float64[2, 2] source is nan, which int64 "
                               "cannot hold (int64 holds whole numbers in [-2^63, 2^63); a fraction is truncated); "
                               "replace such values first (elementwise.where, or clamp to that range)"));
  Tensor d = Tensor::full({2, 2}, 7, DType::Int64);
  CHECK_THROWS_AS(d.copy_(f.to(DType::Float32)), opforge::ValueError);
  CHECK(d.to_vector() == std::vector<double>{7, 7, 7, 7});
  CHECK(f.slice(0, 0, 1).to(DType::Int64).to_vector() == std::vector<double>{1, -2});
  CHECK(d.copy_(Tensor::full({2, 2}, -3.9)).to_vector() == std::vector<double>{-3, -3, -3, -3});
}

TEST_CASE("printing a tensor shows int64 elements exactly", "[tensor]") {
  // Through double and the stream's 6 digits, 9007199254740993 printed as 9.0072e+15.
  Tensor t = Tensor::empty({3, 1}, DType::Int64);
  std::int64_t* p = t.data<std::int64_t>();
  p[0] = 9007199254740993;
  p[1] = -5;
  p[2] = INT64_MIN;
  std::ostringstream os;
  os << t.transpose(0, 1);
  CHECK(os.str() == "Tensor(int64[1, 3], [[    9007199254740993,                   -5, -9223372036854775808]])");
}

TEST_CASE("printing a tensor: nested rows, one format for all elements, the edges of big tensors, its grad state",
          "[tensor]") {
  // It printed the first 8 elements as one flat list: a 3 x 4 matrix showed 8 of its 12.
  auto text = [](const Tensor& t) {
    std::ostringstream os;
    os << t;
    return os.str();
  };
  CHECK(text(Tensor::from_values({1, 2, 3, 4, 5, 6}, {2, 3}).transpose(0, 1)) ==
        "Tensor(float64[3, 2], [[1.0, 4.0],\n"
        "                       [2.0, 5.0],\n"
        "                       [3.0, 6.0]])");
  CHECK(text(Tensor::from_values({0.5, -2, 0.25}, DType::Float32)) == "Tensor(float32[3], [ 0.5000, -2.0000,  0.2500])");
  CHECK(text(Tensor::from_values({1e-10, 3e9, -2})) == "Tensor(float64[3], [ 1.0000e-10,  3.0000e+09, -2.0000e+00])");
  CHECK(text(Tensor::from_values({std::nan(""), 1, -std::numeric_limits<double>::infinity()})) ==
        "Tensor(float64[3], [ nan,  1.0, -inf])");
  CHECK(text(Tensor::from_values({1, 0}, DType::Bool)) == "Tensor(bool[2], [ true, false])");
  CHECK(text(Tensor::full({}, 2.5)) == "Tensor(float64[], 2.5000)");
  CHECK(text(Tensor::zeros({0, 3})) == "Tensor(float64[0, 3], [])");
  // Three axes: a blank line between the blocks of the first.
  CHECK(text(Tensor::from_values({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2}, DType::Int64)) ==
        "Tensor(int64[2, 2, 2], [[[1, 2],\n"
        "                         [3, 4]],\n"
        "\n"
        "                        [[5, 6],\n"
        "                         [7, 8]]])");
  // Over 1000 elements: the first and last three along each axis.
  std::vector<double> v(1001);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i);
  CHECK(text(Tensor::from_values(v)) == "Tensor(float64[1001], [   0.0,    1.0,    2.0, ...,  998.0,  999.0, 1000.0])");
  // Whether it requires grad, and the op that made it.
  Tensor w = Tensor::from_values({1.5, -1}).requires_grad_();
  CHECK(text(w) == "Tensor(float64[2], [ 1.5000, -1.0000], requires_grad)");
  CHECK(text(w * 2.0) == "Tensor(float64[2], [ 3.0, -2.0], grad_fn=elementwise.mul)");
  CHECK(text(Tensor()) == "Tensor(undefined)");
}

TEST_CASE("printing, to_vector and nbytes of a huge expanded view: no copy, no wrap-around", "[tensor]") {
  // 10^10 elements over one value: printing once copied all of them (80 GB).
  const Tensor big = Tensor::full({1}, 2.5).expand({100000, 100000});
  std::ostringstream os;
  os << big;
  const std::string row = "[2.5000, 2.5000, 2.5000, ..., 2.5000, 2.5000, 2.5000]";
  const std::string pad = ",\n" + std::string(std::string("Tensor(float64[100000, 100000], [").size(), ' ');
  CHECK(os.str() == "Tensor(float64[100000, 100000], [" + row + pad + row + pad + row + pad + "..." + pad + row + pad +
                        row + pad + row + "])");
  std::ostringstream oi;
  oi << Tensor::full({1}, 7.0).to(DType::Int64).expand({100000, 100000});
  CHECK_THAT(oi.str(), Catch::Matchers::StartsWith("Tensor(int64[100000, 100000], [[7, 7, 7, ..., 7, 7, 7],\n"));
  CHECK(big.nbytes() == std::size_t{80000000000});
  // 2^62 elements: numel x 8 bytes does not fit in 64 bits, nor the vector in memory.
  const Tensor huge = Tensor::ones({1}).expand({std::int64_t{1} << 31, std::int64_t{1} << 31});
  CHECK_THROWS_MATCHES(huge.nbytes(), opforge::ShapeError,
                       Message("Tensor::nbytes: float64[2147483648, 2147483648] has 4611686018427387904 "
                                      "elements of 8 bytes, more bytes than 64 bits can count"));
  CHECK_THROWS_AS(huge.to_vector(), opforge::MemoryError);
}
