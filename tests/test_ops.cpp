// The standard op plugins (elementwise, reduce, linalg), tested through the
// loaded-plugin path only: every op is resolved by name with opforge::op(), as a
// user program does, so these tests also prove that each plugin loads and
// registers its ops.
//
// For every op: values against references worked by hand or by a naive loop
// (float32 and float64), gradients against finite differences (gradcheck, float64),
// float32 gradients against float64 ones, and the exact message of each bad call.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <opforge/opforge.hpp>
#include <opforge/sdk/gradcheck.hpp>

#include "op_checks.hpp"

namespace {

using Catch::Matchers::Contains;
using Catch::Matchers::Message;
using opforge::Dims;
using opforge::DType;
using opforge::OpHandle;
using opforge::Tensor;

// ---- helpers --------------------------------------------------------------------

Tensor values(const std::vector<double>& v, const Dims& shape, DType dtype) {
  return Tensor::from_values(v, shape, dtype);
}

// Hand-worked cases use small binary fractions: exact in both dtypes, so only the
// final rounding to float32 can differ.
double exact_tolerance(DType dtype) { return dtype == DType::Float32 ? 1e-6 : 1e-12; }

// Every element within abs + rel * |want|; on failure, reports the first element
// that is not (one assertion per call, not one per element).
void require_values(const Tensor& got, const std::vector<double>& want, double rel, double abs = 0) {
  const std::vector<double> g = got.to_vector();
  REQUIRE(g.size() == want.size());
  std::size_t i = 0;
  while (i < g.size() && g[i] == Approx(want[i]).epsilon(rel).margin(abs)) ++i;
  if (i == g.size()) return;
  INFO("element " << i << " of " << g.size());
  REQUIRE(g[i] == Approx(want[i]).epsilon(rel).margin(abs));
}

// One op and the shapes of its inputs, for the checks that apply to every op alike.
struct OpCase {
  std::string name;
  std::vector<Dims> shapes;
};

const std::vector<OpCase>& all_ops() {
  static const std::vector<OpCase> cases = {
      {"elementwise.add", {{3, 4}, {3, 4}}},
      {"elementwise.sub", {{3, 4}, {3, 4}}},
      {"elementwise.mul", {{3, 4}, {3, 4}}},
      {"elementwise.square", {{3, 4}}},
      {"reduce.sum", {{3, 4, 2}}},
      {"linalg.mv", {{4, 3}, {3}}},
      {"linalg.matmul", {{4, 3}, {3, 5}}},
      // Dimensions of 1: xtensor gives them stride 0, BLAS still needs the right leading dimension.
      {"linalg.mv", {{1, 3}, {3}}},
      {"linalg.mv", {{3, 1}, {1}}},
      {"linalg.matmul", {{1, 3}, {3, 1}}},
      {"linalg.matmul", {{3, 1}, {1, 4}}},
  };
  return cases;
}

const std::vector<OpCase>& two_input_ops() {
  static const std::vector<OpCase> cases = [] {
    std::vector<OpCase> v;
    for (const OpCase& c : all_ops())
      if (c.shapes.size() == 2) v.push_back(c);
    return v;
  }();
  return cases;
}

std::vector<Tensor> random_inputs(const OpCase& c, DType dtype, std::uint64_t seed) {
  std::vector<Tensor> v;
  for (std::size_t i = 0; i < c.shapes.size(); ++i) v.push_back(Tensor::randn(c.shapes[i], dtype, seed + i));
  return v;
}

// Fresh leaves copied from `inputs`; those whose flag is set require grad.
std::vector<Tensor> leaves(const std::vector<Tensor>& inputs, const std::vector<bool>& requires_grad) {
  std::vector<Tensor> v;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    Tensor t = inputs[i].clone();
    if (requires_grad[i]) t.requires_grad_(true);
    v.push_back(t);
  }
  return v;
}

// Runs the op and backpropagates a fixed random output gradient (seed 99).
void run_backward(const OpHandle& op, const std::vector<Tensor>& inputs) {
  Tensor out = op(inputs);
  out.backward(Tensor::randn(out.shape(), out.dtype(), 99));
}

// ---- elementwise values -------------------------------------------------------------

TEST_CASE("elementwise_add_matches_hand_computed_values", "[ops][elementwise]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const Tensor a = values({1, 2, 3, 4, 5, 6}, {2, 3}, dtype);
  const Tensor b = values({0.5, -1, 2, 10, 0, -6}, {2, 3}, dtype);
  const Tensor out = opforge::op("elementwise.add")({a, b});
  REQUIRE(out.shape() == Dims{2, 3});
  REQUIRE(out.dtype() == dtype);
  require_values(out, {1.5, 1, 5, 14, 5, 0}, exact_tolerance(dtype));
}

TEST_CASE("elementwise_sub_matches_hand_computed_values", "[ops][elementwise]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const Tensor a = values({1, 2, 3, 4, 5, 6}, {2, 3}, dtype);
  const Tensor b = values({0.5, -1, 2, 10, 0, -6}, {2, 3}, dtype);
  const Tensor out = opforge::op("elementwise.sub")({a, b});
  REQUIRE(out.shape() == Dims{2, 3});
  REQUIRE(out.dtype() == dtype);
  require_values(out, {0.5, 3, 1, -6, 5, 12}, exact_tolerance(dtype));
}

TEST_CASE("elementwise_mul_matches_hand_computed_values", "[ops][elementwise]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const Tensor a = values({1, 2, 3, 4, 5, 6}, {2, 3}, dtype);
  const Tensor b = values({0.5, -1, 2, 10, 0, -6}, {2, 3}, dtype);
  const Tensor out = opforge::op("elementwise.mul")({a, b});
  REQUIRE(out.shape() == Dims{2, 3});
  REQUIRE(out.dtype() == dtype);
  require_values(out, {0.5, -2, 6, 40, 0, -36}, exact_tolerance(dtype));
}

TEST_CASE("elementwise_square_matches_hand_computed_values", "[ops][elementwise]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const Tensor x = values({-3, -0.5, 0, 2, 1.5}, {5}, dtype);
  const Tensor out = opforge::op("elementwise.square")({x});
  REQUIRE(out.shape() == Dims{5});
  REQUIRE(out.dtype() == dtype);
  require_values(out, {9, 0.25, 0, 4, 2.25}, exact_tolerance(dtype));
}

// Above the parallel grain (32 K elements), so the split over threads is exercised too.
TEST_CASE("elementwise_ops_match_naive_loop_on_large_tensors", "[ops][elementwise]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const Tensor a = Tensor::randn({300, 401}, dtype, 1);
  const Tensor b = Tensor::randn({300, 401}, dtype, 2);
  const std::vector<double> va = a.to_vector(), vb = b.to_vector();
  std::vector<double> add(va.size()), sub(va.size()), mul(va.size()), sq(va.size());
  for (std::size_t i = 0; i < va.size(); ++i) {
    add[i] = va[i] + vb[i];
    sub[i] = va[i] - vb[i];
    mul[i] = va[i] * vb[i];
    sq[i] = va[i] * va[i];
  }
  const double tol = exact_tolerance(dtype);
  require_values(opforge::op("elementwise.add")({a, b}), add, tol, tol);
  require_values(opforge::op("elementwise.sub")({a, b}), sub, tol, tol);
  require_values(opforge::op("elementwise.mul")({a, b}), mul, tol, tol);
  require_values(opforge::op("elementwise.square")({a}), sq, tol, tol);
}

// ---- reduce values ------------------------------------------------------------------

TEST_CASE("reduce_sum_matches_hand_computed_value", "[ops][reduce]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const Tensor x = values({1, 2, 3, 4, 5, 6.5}, {2, 3}, dtype);
  const Tensor s = opforge::op("reduce.sum")({x});
  REQUIRE(s.shape() == Dims{});
  REQUIRE(s.dtype() == dtype);
  REQUIRE(s.item() == 21.5);
}

// Every rank is valid input: a 0-d tensor sums to its value, an 8-d one (the
// most opforge allows) to the sum of all its elements.
TEST_CASE("reduce_sum_accepts_any_rank", "[ops][reduce]") {
  const OpHandle sum = opforge::op("reduce.sum");
  REQUIRE(sum({Tensor::scalar(-2.5)}).item() == -2.5);
  REQUIRE(sum({Tensor::ones({2, 2, 2, 2, 2, 2, 2, 2})}).item() == 256.0);
}

TEST_CASE("reduce_sum_of_an_empty_tensor_is_zero", "[ops][reduce]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const Tensor s = opforge::op("reduce.sum")({Tensor::zeros({0, 3}, dtype)});
  REQUIRE(s.shape() == Dims{});
  REQUIRE(s.item() == 0.0);
}

// Many chunks, so the parallel path and the in-order combination both run.
TEST_CASE("reduce_sum_matches_naive_loop_on_a_large_tensor", "[ops][reduce]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const Tensor x = Tensor::randn({1000, 257}, dtype, 5);
  double want = 0;
  for (double v : x.to_vector()) want += v;
  const double got = opforge::op("reduce.sum")({x}).item();
  // float64: only the order of additions differs. float32: the double sum is
  // rounded once to float32 at the end.
  REQUIRE(got == Approx(want).epsilon(dtype == DType::Float32 ? 1e-6 : 1e-12));
}

// 1e8 + 1 == 1e8 in float32 (the spacing there is 8): summed in float32 the ones
// would vanish; accumulated in double they all count.
TEST_CASE("reduce_sum_accumulates_float32_in_double", "[ops][reduce]") {
  std::vector<double> v(1002, 1.0);
  v.front() = 1e8;
  v.back() = -1e8;
  const Tensor s = opforge::op("reduce.sum")({Tensor::from_values(v, DType::Float32)});
  REQUIRE(s.dtype() == DType::Float32);
  REQUIRE(s.item() == 1000.0);
}

// The chunking is fixed, not derived from the thread count, so the result is
// bit-identical with 1 thread and with several.
TEST_CASE("reduce_sum_is_bitwise_identical_for_any_thread_count", "[ops][reduce]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const OpHandle sum = opforge::op("reduce.sum");
  const Tensor x = Tensor::randn({1 << 20}, dtype, 11);
  const int saved_threads = opforge::num_threads();
  std::vector<double> results;
  for (int threads : {1, 2, 4}) {
    opforge::set_num_threads(threads);
    results.push_back(sum({x}).item());
  }
  opforge::set_num_threads(saved_threads);
  REQUIRE(results[0] == results[1]);
  REQUIRE(results[0] == results[2]);
}

// ---- linalg values ------------------------------------------------------------------

TEST_CASE("linalg_mv_matches_hand_computed_values", "[ops][linalg]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const Tensor A = values({1, 2, 3, 4, 5, 6}, {2, 3}, dtype);
  const Tensor x = values({2, 1, 0.5}, {3}, dtype);
  const Tensor y = opforge::op("linalg.mv")({A, x});
  REQUIRE(y.shape() == Dims{2});
  REQUIRE(y.dtype() == dtype);
  require_values(y, {1 * 2 + 2 * 1 + 3 * 0.5, 4 * 2 + 5 * 1 + 6 * 0.5}, exact_tolerance(dtype));
}

// Includes shapes with a dimension of 1, where xtensor gives the view a stride of
// 0 and the BLAS leading dimension must still come out right.
TEST_CASE("linalg_mv_matches_naive_loop", "[ops][linalg]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  const auto mn = GENERATE(std::make_pair(37, 53), std::make_pair(1, 5), std::make_pair(5, 1), std::make_pair(1, 1));
  const std::int64_t m = mn.first, n = mn.second;
  INFO(opforge::dtype_name(dtype) << " A [" << m << ", " << n << "]");
  const Tensor A = Tensor::randn({m, n}, dtype, 3);
  const Tensor x = Tensor::randn({n}, dtype, 4);
  const std::vector<double> a = A.to_vector(), xv = x.to_vector();
  std::vector<double> want(static_cast<std::size_t>(m), 0.0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) want[i] += a[i * n + j] * xv[j];
  const double tol = dtype == DType::Float32 ? 1e-5 : 1e-12;
  require_values(opforge::op("linalg.mv")({A, x}), want, tol, tol);
}

// BLAS refuses a leading dimension of 0, so empty shapes take their own path.
TEST_CASE("linalg_mv_with_an_empty_dimension", "[ops][linalg]") {
  const OpHandle mv = opforge::op("linalg.mv");
  const Tensor zero_cols = mv({Tensor::ones({3, 0}), Tensor::ones({0})});
  REQUIRE(zero_cols.shape() == Dims{3});
  require_values(zero_cols, {0, 0, 0}, 0);
  REQUIRE(mv({Tensor::ones({0, 3}), Tensor::ones({3})}).shape() == Dims{0});
}

TEST_CASE("linalg_matmul_matches_hand_computed_values", "[ops][linalg]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const Tensor A = values({1, 2, 3, 4, 5, 6}, {3, 2}, dtype);
  const Tensor B = values({1, 0, -1, 2, 1, 0.5}, {2, 3}, dtype);
  const Tensor C = opforge::op("linalg.matmul")({A, B});
  REQUIRE(C.shape() == Dims{3, 3});
  REQUIRE(C.dtype() == dtype);
  require_values(C, {5, 2, 0, 11, 4, -1, 17, 6, -2}, exact_tolerance(dtype));
}

TEST_CASE("linalg_matmul_matches_naive_loop", "[ops][linalg]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  const auto mkn = GENERATE(std::vector<std::int64_t>{17, 23, 29}, std::vector<std::int64_t>{1, 4, 3},
                            std::vector<std::int64_t>{4, 1, 3}, std::vector<std::int64_t>{4, 3, 1},
                            std::vector<std::int64_t>{1, 1, 1});
  const std::int64_t m = mkn[0], k = mkn[1], n = mkn[2];
  INFO(opforge::dtype_name(dtype) << " A [" << m << ", " << k << "], B [" << k << ", " << n << "]");
  const Tensor A = Tensor::randn({m, k}, dtype, 6);
  const Tensor B = Tensor::randn({k, n}, dtype, 7);
  const std::vector<double> a = A.to_vector(), b = B.to_vector();
  std::vector<double> want(static_cast<std::size_t>(m * n), 0.0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t p = 0; p < k; ++p) want[i * n + j] += a[i * k + p] * b[p * n + j];
  const double tol = dtype == DType::Float32 ? 1e-5 : 1e-12;
  require_values(opforge::op("linalg.matmul")({A, B}), want, tol, tol);
}

TEST_CASE("linalg_matmul_with_an_empty_inner_dimension_gives_zeros", "[ops][linalg]") {
  const Tensor C = opforge::op("linalg.matmul")({Tensor::ones({2, 0}), Tensor::ones({0, 3})});
  REQUIRE(C.shape() == Dims{2, 3});
  require_values(C, {0, 0, 0, 0, 0, 0}, 0);
}

// ---- gradients ------------------------------------------------------------------------

// gradcheck makes every input require grad and compares each element of each
// input's gradient with central finite differences.
TEST_CASE("every_op_passes_gradcheck_in_float64", "[ops][grad]") {
  const OpCase c = GENERATE(Catch::Generators::from_range(all_ops()));
  const std::uint64_t seed = GENERATE(10u, 20u);
  INFO(c.name << ", seed " << seed);
  const std::vector<Tensor> inputs = random_inputs(c, DType::Float64, seed);
  const opforge::sdk::GradcheckResult res = opforge::sdk::gradcheck(opforge::op(c.name), inputs);
  INFO(res.message);
  REQUIRE(res.ok);
  std::int64_t total = 0;
  for (const Tensor& t : inputs) total += t.numel();
  REQUIRE(res.elements_checked == total);  // every element of every input was checked
}

// With one input requiring grad, that input gets the same gradient as when all do
// (the op's partial path computes it right) and the other gets none.
TEST_CASE("only_the_input_that_requires_grad_gets_a_gradient", "[ops][grad]") {
  const OpCase c = GENERATE(Catch::Generators::from_range(two_input_ops()));
  const std::size_t which = GENERATE(0u, 1u);
  const std::size_t other = 1 - which;
  INFO(c.name << ", only input " << which << " requires grad");
  const OpHandle op = opforge::op(c.name);
  const std::vector<Tensor> inputs = random_inputs(c, DType::Float64, 30);

  const std::vector<Tensor> all = leaves(inputs, {true, true});
  run_backward(op, all);
  std::vector<bool> flags(2, false);
  flags[which] = true;
  const std::vector<Tensor> one = leaves(inputs, flags);
  run_backward(op, one);

  REQUIRE(one[which].grad().defined());
  REQUIRE_FALSE(one[other].grad().defined());
  require_values(one[which].grad(), all[which].grad().to_vector(), 1e-12, 1e-12);
}

// Inputs drawn in float32 and widened exactly to float64, so the two runs see the
// same values: the gradients differ by float32 rounding in the op only.
TEST_CASE("float32_gradients_match_float64_gradients", "[ops][grad]") {
  const OpCase c = GENERATE(Catch::Generators::from_range(all_ops()));
  INFO(c.name);
  const OpHandle op = opforge::op(c.name);
  const std::vector<Tensor> in32 = random_inputs(c, DType::Float32, 40);
  std::vector<Tensor> in64;
  for (const Tensor& t : in32) in64.push_back(t.to(DType::Float64));
  const std::vector<bool> all(c.shapes.size(), true);
  const std::vector<Tensor> x32 = leaves(in32, all), x64 = leaves(in64, all);

  Tensor out32 = op(x32), out64 = op(x64);
  const Tensor w64 = Tensor::randn(out64.shape(), DType::Float32, 41).to(DType::Float64);
  out32.backward(w64.to(DType::Float32));
  out64.backward(w64);

  for (std::size_t i = 0; i < x32.size(); ++i) {
    INFO("input " << i);
    REQUIRE(x32[i].grad().defined());
    REQUIRE(x32[i].grad().dtype() == DType::Float32);
    require_values(x32[i].grad(), x64[i].grad().to_vector(), 1e-4, 1e-5);
  }
}

// A square whose backward forgets the factor 2 (returns x g, not 2 x g).
class WrongGrad final : public opforge::Function {
 public:
  opforge::TensorList forward(opforge::Context& ctx, opforge::TensorSpan in) const override {
    ctx.save_for_backward(in[0]);
    return {opforge::op("elementwise.square")({in[0]})};
  }
  opforge::TensorList backward(opforge::Context& ctx, opforge::TensorSpan g) const override {
    return {opforge::op("elementwise.mul")({ctx.saved_tensors()[0], g[0]})};
  }
};

// Without this, a gradcheck that always passed would make every test above vacuous.
TEST_CASE("gradcheck_fails_on_a_wrong_gradient_and_names_op_input_and_element", "[ops][grad]") {
  const OpHandle wrong =
      opforge::make_op(opforge::OpSchema("test.wrong_square").input_names({"x"}), std::make_unique<WrongGrad>());
  const Tensor x = Tensor::randn({6}, DType::Float64, 50);
  const opforge::sdk::GradcheckResult res = opforge::sdk::gradcheck(wrong, {x});
  REQUIRE_FALSE(res.ok);

  // gradcheck weights the output with randn(seed 1); the error at element j is
  // |x_j w_j| (analytic x w, numeric 2 x w), so the worst element is the largest |x_j w_j|.
  const std::vector<double> xv = x.to_vector();
  const std::vector<double> w = Tensor::randn({6}, DType::Float64, opforge::sdk::GradcheckOptions{}.seed).to_vector();
  std::size_t worst = 0;
  for (std::size_t j = 1; j < xv.size(); ++j)
    if (std::abs(xv[j] * w[j]) > std::abs(xv[worst] * w[worst])) worst = j;
  REQUIRE_THAT(res.message, Contains("'test.wrong_square'") && Contains("input 0 'x'") &&
                                Contains("element " + std::to_string(worst) + ":"));
}

// ---- what backward keeps alive ------------------------------------------------------------
// The tensor an op must not save is made by another op inside a scope, so only the
// graph could keep it alive: after the scope the live bytes must have grown by the
// output alone.

TEST_CASE("linalg_mv_keeps_only_what_backward_needs", "[ops][linalg][memory]") {
  const OpHandle square = opforge::op("elementwise.square");
  const OpHandle mv = opforge::op("linalg.mv");
  SECTION("A needs grad: x is kept, A is not") {
    Tensor A0 = Tensor::randn({64, 32}, DType::Float64, 1);
    A0.requires_grad_(true);
    const Tensor x = Tensor::randn({32}, DType::Float64, 2);
    const std::int64_t before = opforge::live_bytes();
    Tensor y;
    { y = mv({square({A0}), x}); }
    REQUIRE(opforge::live_bytes() - before == static_cast<std::int64_t>(y.nbytes()));
    y.backward(Tensor::ones({64}));
    REQUIRE(A0.grad().defined());
  }
  SECTION("x needs grad: A is kept, x is not") {
    const Tensor A = Tensor::randn({64, 32}, DType::Float64, 1);
    Tensor x0 = Tensor::randn({32}, DType::Float64, 2);
    x0.requires_grad_(true);
    const std::int64_t before = opforge::live_bytes();
    Tensor y;
    { y = mv({A, square({x0})}); }
    REQUIRE(opforge::live_bytes() - before == static_cast<std::int64_t>(y.nbytes()));
    y.backward(Tensor::ones({64}));
    REQUIRE(x0.grad().defined());
  }
}

TEST_CASE("linalg_matmul_keeps_only_what_backward_needs", "[ops][linalg][memory]") {
  const OpHandle square = opforge::op("elementwise.square");
  const OpHandle matmul = opforge::op("linalg.matmul");
  SECTION("A needs grad: B is kept, A is not") {
    Tensor A0 = Tensor::randn({16, 32}, DType::Float64, 1);
    A0.requires_grad_(true);
    const Tensor B = Tensor::randn({32, 8}, DType::Float64, 2);
    const std::int64_t before = opforge::live_bytes();
    Tensor C;
    { C = matmul({square({A0}), B}); }
    REQUIRE(opforge::live_bytes() - before == static_cast<std::int64_t>(C.nbytes()));
    C.backward(Tensor::ones({16, 8}));
    REQUIRE(A0.grad().defined());
  }
  SECTION("B needs grad: A is kept, B is not") {
    const Tensor A = Tensor::randn({16, 32}, DType::Float64, 1);
    Tensor B0 = Tensor::randn({32, 8}, DType::Float64, 2);
    B0.requires_grad_(true);
    const std::int64_t before = opforge::live_bytes();
    Tensor C;
    { C = matmul({A, square({B0})}); }
    REQUIRE(opforge::live_bytes() - before == static_cast<std::int64_t>(C.nbytes()));
    C.backward(Tensor::ones({16, 8}));
    REQUIRE(B0.grad().defined());
  }
}

// Backward needs only the input's shape, never its data.
TEST_CASE("reduce_sum_keeps_no_tensor_for_backward", "[ops][reduce][memory]") {
  const OpHandle square = opforge::op("elementwise.square");
  const OpHandle sum = opforge::op("reduce.sum");
  Tensor x0 = Tensor::randn({64, 32}, DType::Float64, 1);
  x0.requires_grad_(true);
  const std::int64_t before = opforge::live_bytes();
  Tensor s;
  { s = sum({square({x0})}); }
  REQUIRE(opforge::live_bytes() - before == static_cast<std::int64_t>(s.nbytes()));
  s.backward();
  REQUIRE(x0.grad().shape() == Dims{64, 32});
}

// ---- bad input ----------------------------------------------------------------------------
// Each message names the op, the argument, what was expected and what came.

using opforge_tests::BadCall;
using opforge_tests::f32;
using opforge_tests::f64;
using opforge_tests::i64;
using opforge_tests::require_refused;

// elementwise ops and reduce.sum take any rank; elementwise operands broadcast,
// so a rank mismatch is refused only when the shapes do not broadcast.
TEST_CASE("wrong_rank_is_refused_naming_op_and_argument", "[ops][errors]") {
  const std::vector<BadCall> calls = {
      {"linalg.mv", {f64({3}), f64({3})}, "linalg.mv: argument 'A': expected a 2-D tensor, got float64[3]"},
      {"linalg.mv", {f64({2, 3}), f64({3, 1})}, "linalg.mv: argument 'x': expected a 1-D tensor, got float64[3, 1]"},
      // matmul takes NumPy's ranks (batched, 1-D operands): a rank mismatch shows as a size mismatch.
      {"linalg.matmul", {f64({2, 3, 1}), f64({3, 2})},
       "linalg.matmul: argument 'B': expected size 1 on axis -2 (the size of the last axis of 'A', of shape "
       "[2, 3, 1]), got shape [3, 2]"},
      {"linalg.matmul", {f64({2, 3}), f64({4})},
       "linalg.matmul: argument 'B': expected shape [3] (the size of the last axis of 'A'), got [4]"},
      {"elementwise.add", {f64({6}), f64({2, 3})},
       "elementwise.add: argument 'a' of shape [6] and argument 'b' of shape [2, 3] do not broadcast: axis -1 has "
       "sizes 6 and 3 (sizes must be equal, or one of them 1)"},
  };
  require_refused<opforge::ShapeError>(calls);
}

TEST_CASE("wrong_shape_is_refused_naming_expected_and_actual", "[ops][errors]") {
  const std::vector<BadCall> calls = {
      {"linalg.mv", {f64({2, 4}), f64({3})},
       "linalg.mv: argument 'x': expected shape [4] (the number of columns of 'A'), got [3]"},
      {"linalg.matmul", {f64({2, 4}), f64({3, 5})},
       "linalg.matmul: argument 'B': expected shape [4, 5] (its rows must match the columns of 'A'), got [3, 5]"},
      {"elementwise.add", {f64({2, 3}), f64({3, 2})},
       "elementwise.add: argument 'a' of shape [2, 3] and argument 'b' of shape [3, 2] do not broadcast: axis -1 "
       "has sizes 3 and 2 (sizes must be equal, or one of them 1)"},
      {"elementwise.sub", {f64({2, 3}), f64({2, 4})},
       "elementwise.sub: argument 'a' of shape [2, 3] and argument 'b' of shape [2, 4] do not broadcast: axis -1 "
       "has sizes 3 and 4 (sizes must be equal, or one of them 1)"},
      {"elementwise.mul", {f64({5}), f64({4})},
       "elementwise.mul: argument 'a' of shape [5] and argument 'b' of shape [4] do not broadcast: axis -1 has "
       "sizes 5 and 4 (sizes must be equal, or one of them 1)"},
  };
  require_refused<opforge::ShapeError>(calls);
}

// Refused by the core from the schema, before the op's code runs.
TEST_CASE("mixed_dtypes_are_refused_naming_both_dtypes", "[ops][errors]") {
  const std::string rule = "; all inputs must share one dtype), got ";
  const std::vector<BadCall> calls = {
      {"elementwise.add", {f64({3}), f32({3})},
       "elementwise.add: argument 'b' (input 1): expected dtype float64 (the dtype of 'a'" + rule + "float32; convert one of them with .to() first"},
      {"elementwise.sub", {f64({3}), f32({3})},
       "elementwise.sub: argument 'b' (input 1): expected dtype float64 (the dtype of 'a'" + rule + "float32; convert one of them with .to() first"},
      {"elementwise.mul", {f32({3}), f64({3})},
       "elementwise.mul: argument 'b' (input 1): expected dtype float32 (the dtype of 'a'" + rule + "float64; convert one of them with .to() first"},
      {"linalg.mv", {f64({2, 3}), f32({3})},
       "linalg.mv: argument 'x' (input 1): expected dtype float64 (the dtype of 'A'" + rule + "float32; convert one of them with .to() first"},
      {"linalg.matmul", {f32({2, 3}), f64({3, 2})},
       "linalg.matmul: argument 'B' (input 1): expected dtype float32 (the dtype of 'A'" + rule + "float64; convert one of them with .to() first"},
  };
  require_refused<opforge::DTypeError>(calls);
}

// add, sub and mul take int64 too (tested in test_ops_elementwise); these do not.
TEST_CASE("int64_input_is_refused_by_every_float_only_op", "[ops][errors]") {
  const std::string expected = ": expected dtype float32, float64, got int64; convert it with .to() first";
  const std::vector<BadCall> calls = {
      {"elementwise.square", {i64({3})}, "elementwise.square: argument 'x' (input 0)" + expected},
      {"reduce.mean", {i64({3})}, "reduce.mean: argument 'x' (input 0)" + expected},
      {"linalg.mv", {f64({2, 3}), i64({3})}, "linalg.mv: argument 'x' (input 1)" + expected},
      {"linalg.matmul", {i64({2, 3}), f64({3, 2})}, "linalg.matmul: argument 'A' (input 0)" + expected},
  };
  require_refused<opforge::DTypeError>(calls);
}

TEST_CASE("an_undefined_input_is_refused_naming_where_undefined_tensors_come_from", "[ops][errors]") {
  // W = W - lr * W.grad() makes W a non-leaf, whose .grad() stays undefined: the
  // next step's call said only "expected a tensor, got an undefined one".
  Tensor w = Tensor::from_values({1.0, 2.0}).requires_grad_();
  Tensor w2 = w - 0.1 * Tensor::ones({2});
  CHECK_FALSE(w2.grad().defined());
  const std::vector<BadCall> calls = {
      {"elementwise.mul", {f64({2}), w2.grad()},
       "elementwise.mul: argument 'b' (input 1): expected a tensor, got an undefined one (a default-constructed "
       "Tensor, or the .grad() of a tensor that has none: a non-leaf without retain_grad(), for instance a parameter "
       "reassigned with w = w - lr * w.grad() instead of updated in place under a NoGradGuard, or a leaf before its "
       "first backward or after zero_grad())"},
  };
  require_refused<opforge::ValueError>(calls);
}

TEST_CASE("wrong_number_of_inputs_is_refused_listing_the_inputs", "[ops][errors]") {
  const std::vector<BadCall> calls = {
      {"elementwise.add", {f64({3})}, "elementwise.add: expected 2 inputs (a, b), got 1"},
      {"elementwise.sub", {f64({3}), f64({3}), f64({3})}, "elementwise.sub: expected 2 inputs (a, b), got 3"},
      {"elementwise.mul", {}, "elementwise.mul: expected 2 inputs (a, b), got 0"},
      {"elementwise.square", {f64({3}), f64({3})}, "elementwise.square: expected 1 input (x), got 2"},
      {"reduce.sum", {}, "reduce.sum: expected 1 input (x), got 0"},
      {"linalg.mv", {f64({2, 3})}, "linalg.mv: expected 2 inputs (A, x), got 1"},
      {"linalg.matmul", {f64({2, 3}), f64({3, 2}), f64({2})}, "linalg.matmul: expected 2 inputs (A, B), got 3"},
  };
  require_refused<opforge::ValueError>(calls);
}

}  // namespace
