// The linalg family beyond mv and 2-D matmul (which tests/test_ops.cpp covers):
// batched matmul, dot, outer, solve, inverse, det, logdet, cholesky, qr, svd,
// lstsq_solve. Every op is resolved by name through the loaded plugin.
//
// For every op: values against hand-worked cases and against independent
// references (naive loops, Gaussian elimination, or the defining identities
// A = Q R, A = U diag(S) Vᵀ, L Lᵀ = A...), gradients against finite differences
// (gradcheck, float64), the harness checks (sdk::check_op), float32 forward against
// float64, and the exact message of each bad call.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <cstdint>
#include <string>
#include <vector>

#include <opforge/opforge.hpp>
#include <opforge/sdk/gradcheck.hpp>

#include "op_checks.hpp"
#include <opforge/sdk/harness.hpp>

namespace {

using Catch::Matchers::Message;
using opforge::Dims;
using opforge::DType;
using opforge::OpHandle;
using opforge::Tensor;
using opforge::TensorList;

// ---- helpers --------------------------------------------------------------------------

Tensor values(const std::vector<double>& v, const Dims& shape, DType dtype = DType::Float64) {
  return Tensor::from_values(v, shape, dtype);
}

// Every element within abs + rel * |want|; on failure, reports the first element that is not.
void require_values(const Tensor& got, const std::vector<double>& want, double rel, double abs = 0) {
  const std::vector<double> g = got.to_vector();
  REQUIRE(g.size() == want.size());
  std::size_t i = 0;
  while (i < g.size() && g[i] == Approx(want[i]).epsilon(rel).margin(abs)) ++i;
  if (i == g.size()) return;
  INFO("element " << i << " of " << g.size());
  REQUIRE(g[i] == Approx(want[i]).epsilon(rel).margin(abs));
}

// Tolerances for results of O(n³) factorizations on small well-conditioned inputs.
double tol(DType dtype) { return dtype == DType::Float32 ? 2e-5 : 1e-12; }

std::string name(DType dtype) { return opforge::dtype_name(dtype); }

// randn [n, n] + n·I (well conditioned, det > 0 for these sizes).
Tensor shifted(std::int64_t n, std::uint64_t seed, DType dtype = DType::Float64) {
  std::vector<double> v = Tensor::randn({n, n}, DType::Float64, seed).to_vector();
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i * n + i)] += static_cast<double>(n);
  return values(v, {n, n}, dtype);
}

// X Xᵀ + n·I: symmetric positive-definite.
Tensor spd(std::int64_t n, std::uint64_t seed, DType dtype = DType::Float64) {
  const std::vector<double> x = Tensor::randn({n, n}, DType::Float64, seed).to_vector();
  std::vector<double> a(static_cast<std::size_t>(n * n));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double acc = i == j ? static_cast<double>(n) : 0.0;
      for (std::int64_t p = 0; p < n; ++p) acc += x[i * n + p] * x[j * n + p];
      a[i * n + j] = acc;
    }
  return values(a, {n, n}, dtype);
}

// diag(d) embedded in [m, n] plus 0.1·randn: singular values near d, well apart.
Tensor near_diag(std::int64_t m, std::int64_t n, const std::vector<double>& d, std::uint64_t seed,
                 DType dtype = DType::Float64) {
  std::vector<double> a = Tensor::randn({m, n}, DType::Float64, seed).to_vector();
  for (double& v : a) v *= 0.1;
  for (std::size_t i = 0; i < d.size(); ++i) a[i * static_cast<std::size_t>(n) + i] += d[i];
  return values(a, {m, n}, dtype);
}

// Row-major matrix product of [m, k] and [k, n] given as vectors.
std::vector<double> mm(const std::vector<double>& a, const std::vector<double>& b, std::int64_t m, std::int64_t k,
                       std::int64_t n) {
  std::vector<double> c(static_cast<std::size_t>(m * n), 0.0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t p = 0; p < k; ++p) c[i * n + j] += a[i * k + p] * b[p * n + j];
  return c;
}
std::vector<double> transposed(const std::vector<double>& a, std::int64_t m, std::int64_t n) {
  std::vector<double> t(a.size());
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) t[j * m + i] = a[i * n + j];
  return t;
}
std::vector<double> identity(std::int64_t n) {
  std::vector<double> e(static_cast<std::size_t>(n * n), 0.0);
  for (std::int64_t i = 0; i < n; ++i) e[i * n + i] = 1;
  return e;
}

// Gaussian elimination with partial pivoting: X = A⁻¹ B, A [n, n], B [n, k]; the
// determinant as a by-product. The test's own reference, independent of LAPACK.
struct Elimination {
  std::vector<double> x;
  double det = 1;
};
Elimination eliminate(std::vector<double> a, std::vector<double> b, std::int64_t n, std::int64_t k) {
  Elimination r;
  for (std::int64_t c = 0; c < n; ++c) {
    std::int64_t p = c;
    for (std::int64_t i = c + 1; i < n; ++i)
      if (std::abs(a[i * n + c]) > std::abs(a[p * n + c])) p = i;
    if (p != c) {
      for (std::int64_t j = 0; j < n; ++j) std::swap(a[c * n + j], a[p * n + j]);
      for (std::int64_t j = 0; j < k; ++j) std::swap(b[c * k + j], b[p * k + j]);
      r.det = -r.det;
    }
    r.det *= a[c * n + c];
    for (std::int64_t i = c + 1; i < n; ++i) {
      const double f = a[i * n + c] / a[c * n + c];
      for (std::int64_t j = c; j < n; ++j) a[i * n + j] -= f * a[c * n + j];
      for (std::int64_t j = 0; j < k; ++j) b[i * k + j] -= f * b[c * k + j];
    }
  }
  r.x.assign(static_cast<std::size_t>(n * k), 0.0);
  for (std::int64_t i = n; i-- > 0;)
    for (std::int64_t j = 0; j < k; ++j) {
      double s = b[i * k + j];
      for (std::int64_t p = i + 1; p < n; ++p) s -= a[i * n + p] * r.x[p * k + j];
      r.x[i * k + j] = s / a[i * n + i];
    }
  return r;
}

// NumPy's matmul by loops: 1-D operands promoted (and the axis dropped), batch axes broadcast.
std::vector<double> naive_matmul(const Tensor& A, const Tensor& B, Dims* out_shape) {
  std::vector<std::int64_t> sa(A.shape().begin(), A.shape().end()), sb(B.shape().begin(), B.shape().end());
  const bool a1 = sa.size() == 1, b1 = sb.size() == 1;
  if (a1) sa.insert(sa.begin(), 1);
  if (b1) sb.push_back(1);
  const std::int64_t m = sa[sa.size() - 2], k = sa.back(), n = sb.back();
  std::vector<std::int64_t> ba(sa.begin(), sa.end() - 2), bb(sb.begin(), sb.end() - 2);
  const std::size_t r = std::max(ba.size(), bb.size());
  ba.insert(ba.begin(), r - ba.size(), 1);
  bb.insert(bb.begin(), r - bb.size(), 1);
  std::vector<std::int64_t> batch(r);
  std::int64_t count = 1;
  for (std::size_t i = 0; i < r; ++i) {
    batch[i] = std::max(ba[i], bb[i]);
    count *= batch[i];
  }
  const std::vector<double> a = A.to_vector(), b = B.to_vector();
  std::vector<double> c(static_cast<std::size_t>(count * m * n), 0.0);
  for (std::int64_t o = 0; o < count; ++o) {
    std::int64_t rem = o, ia = 0, ib = 0, stride_a = 1, stride_b = 1;
    for (std::size_t i = r; i-- > 0;) {
      const std::int64_t idx = rem % batch[i];
      rem /= batch[i];
      ia += (ba[i] == 1 ? 0 : idx) * stride_a;
      ib += (bb[i] == 1 ? 0 : idx) * stride_b;
      stride_a *= ba[i];
      stride_b *= bb[i];
    }
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j)
        for (std::int64_t p = 0; p < k; ++p)
          c[(o * m + i) * n + j] += a[(ia * m + i) * k + p] * b[(ib * k + p) * n + j];
  }
  Dims shape;
  for (std::int64_t d : batch) shape.push_back(d);
  if (!a1) shape.push_back(m);
  if (!b1) shape.push_back(n);
  *out_shape = shape;
  return c;
}

void require_gradcheck(const std::string& op, const std::vector<Tensor>& inputs) {
  INFO(op);
  opforge_tests::require_gradcheck(opforge::op(op), inputs);
}

// ---- matmul: batched, broadcast, 1-D operands ---------------------------------------------

struct MatmulCase {
  Dims a, b;
};
const std::vector<MatmulCase>& matmul_cases() {
  static const std::vector<MatmulCase> cases = {
      {{2, 3, 4}, {2, 4, 5}},           // batch against batch
      {{2, 3, 4}, {4, 5}},              // B one matrix: the single-gemm path
      {{3, 4}, {2, 4, 5}},              // A one matrix, broadcast over B's batch
      {{3, 1, 2, 4}, {5, 4, 3}},        // both broadcast: batch [3, 5]
      {{2, 1, 3, 4}, {1, 2, 4, 2}},     // size-1 batch axes on both sides
      {{4}, {2, 4, 5}},                 // 1-D A: a row, the axis dropped
      {{2, 3, 4}, {4}},                 // 1-D B: a column, the axis dropped
      {{3, 4}, {4}},                    // matrix x vector
      {{4}, {4, 5}},                    // vector x matrix
      {{4}, {4}},                       // vector x vector: 0-d
      {{1, 1}, {3, 1, 1}},              // sizes of 1 everywhere
  };
  return cases;
}

TEST_CASE("linalg_matmul_batched_matches_naive_loops", "[linalg][matmul]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  const MatmulCase c = GENERATE(Catch::Generators::from_range(matmul_cases()));
  INFO(name(dtype) << " A " << c.a << " B " << c.b);
  const Tensor A = Tensor::randn(c.a, dtype, 1), B = Tensor::randn(c.b, dtype, 2);
  Dims want_shape;
  const std::vector<double> want = naive_matmul(A, B, &want_shape);
  const Tensor C = opforge::op("linalg.matmul")({A, B});
  REQUIRE(C.shape() == want_shape);
  REQUIRE(C.dtype() == dtype);
  require_values(C, want, dtype == DType::Float32 ? 1e-5 : 1e-12, dtype == DType::Float32 ? 1e-5 : 1e-12);
}

TEST_CASE("linalg_matmul_batched_hand_computed", "[linalg][matmul]") {
  // Two 2x2 matrices times one 2x1 column (broadcast), then the 1-D forms.
  const OpHandle matmul = opforge::op("linalg.matmul");
  const Tensor A = values({1, 2, 3, 4, 0, 1, -1, 0}, {2, 2, 2});
  const Tensor x = values({1, 0.5}, {2, 1});
  const Tensor C = matmul({A, x});
  REQUIRE(C.shape() == Dims{2, 2, 1});
  require_values(C, {2, 5, 0.5, -1}, 0);
  const Tensor v = values({1, 0.5}, {2});
  const Tensor Cv = matmul({A, v});
  REQUIRE(Cv.shape() == Dims{2, 2});
  require_values(Cv, {2, 5, 0.5, -1}, 0);
  const Tensor d = matmul({v, v});
  REQUIRE(d.shape() == Dims{});
  REQUIRE(d.item() == 1.25);
  const Tensor row = matmul({v, A});  // [2] x [2, 2, 2]: v A[b] for each b
  REQUIRE(row.shape() == Dims{2, 2});
  require_values(row, {2.5, 4, -0.5, 1}, 0);
}

// Many small matrices: the batch is spread over threads; and a broadcast operand
// whose gradient is summed over many outputs.
TEST_CASE("linalg_matmul_large_batches_match_naive_loops", "[linalg][matmul]") {
  const OpHandle matmul = opforge::op("linalg.matmul");
  const Tensor A = Tensor::randn({20000, 3, 3}, DType::Float64, 3);
  const Tensor B = Tensor::randn({20000, 3, 2}, DType::Float64, 4);
  Dims shape;
  const std::vector<double> want = naive_matmul(A, B, &shape);
  const Tensor C = matmul({A, B});
  REQUIRE(C.shape() == shape);
  require_values(C, want, 1e-12, 1e-12);

  // d(sum of C ∘ W)/dB0 for a broadcast B0 [3, 2] = Σ_b A[b]ᵀ W[b]: naive reference.
  Tensor B0 = Tensor::randn({3, 2}, DType::Float64, 5);
  B0.requires_grad_(true);
  const Tensor W = Tensor::randn({20000, 3, 2}, DType::Float64, 6);
  Tensor A3 = Tensor::randn({20000, 3, 3}, DType::Float64, 7);
  matmul({A3, B0}).backward(W);  // B0 without batch axes, A3 with: the single-gemm path
  const std::vector<double> a = A3.to_vector(), w = W.to_vector();
  std::vector<double> gb(6, 0.0);
  for (std::int64_t b = 0; b < 20000; ++b)
    for (std::int64_t p = 0; p < 3; ++p)
      for (std::int64_t j = 0; j < 2; ++j)
        for (std::int64_t i = 0; i < 3; ++i) gb[p * 2 + j] += a[(b * 3 + i) * 3 + p] * w[(b * 3 + i) * 2 + j];
  require_values(B0.grad(), gb, 1e-10, 1e-10);

  // The same with B0 batched [1, 3, 2] against A [20000, 3, 3]: the summing path.
  Tensor B1 = Tensor::randn({1, 3, 2}, DType::Float64, 5);
  B1.requires_grad_(true);
  matmul({A3, B1}).backward(W);
  require_values(B1.grad(), gb, 1e-10, 1e-10);
}

TEST_CASE("linalg_matmul_batched_gradcheck", "[linalg][matmul][grad]") {
  const MatmulCase c = GENERATE(Catch::Generators::from_range(matmul_cases()));
  INFO("A " << c.a << " B " << c.b);
  require_gradcheck("linalg.matmul", {Tensor::randn(c.a, DType::Float64, 8), Tensor::randn(c.b, DType::Float64, 9)});
}

// A transposed operand (Aᵀ B, A Bᵀ) goes to gemm with its transpose flag, with no
// copy: the same values and gradients as a contiguous operand, and no temporary of
// its size. Other strided operands (a slice with a step, a batched view) are copied.
TEST_CASE("linalg_matmul_of_transposed_views_uses_the_transpose_flag_not_a_copy", "[linalg][matmul]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(name(dtype));
  const Tensor At = Tensor::randn({300, 200}, dtype, 3), Bt = Tensor::randn({50, 300}, dtype, 4);
  const Tensor A = At.transpose(0, 1), B = Bt.transpose(0, 1);  // [200, 300], [300, 50]
  REQUIRE_FALSE(A.is_contiguous());
  const OpHandle mm = opforge::op("linalg.matmul");
  for (int mode = 0; mode < 3; ++mode) {
    const Tensor a = mode == 1 ? A.contiguous() : A, b = mode == 2 ? B.contiguous() : B;
    INFO("mode " << mode);
    Dims want_shape;
    const std::vector<double> want = naive_matmul(a.contiguous(), b.contiguous(), &want_shape);
    opforge::reset_peak_bytes();
    const std::int64_t before = opforge::live_bytes();
    const Tensor C = mm({a, b});
    const std::int64_t extra = opforge::peak_bytes() - before;
    CHECK(extra == static_cast<std::int64_t>(C.nbytes()));  // the output only: no copy of an operand
    REQUIRE(C.shape() == want_shape);
    require_values(C, want, dtype == DType::Float32 ? 1e-4 : 1e-12, dtype == DType::Float32 ? 1e-4 : 1e-12);
  }
  const Tensor step = Tensor::randn({200, 600}, dtype, 5).slice(1, 0, 600, 2);  // [200, 300], stride 2
  Dims want_shape;
  const std::vector<double> want = naive_matmul(step.contiguous(), B.contiguous(), &want_shape);
  require_values(mm({step, B}), want, dtype == DType::Float32 ? 1e-4 : 1e-12, dtype == DType::Float32 ? 1e-4 : 1e-12);
}

TEST_CASE("linalg_matmul_gradcheck_through_transposed_and_strided_views", "[linalg][matmul][grad]") {
  const Tensor At = Tensor::randn({4, 3}, DType::Float64, 6), Bt = Tensor::randn({5, 4}, DType::Float64, 7);
  require_gradcheck("linalg.matmul", {At.transpose(0, 1), Bt.transpose(0, 1)});
  require_gradcheck("linalg.matmul", {Tensor::randn({3, 8}, DType::Float64, 8).slice(1, 0, 8, 2), Bt.transpose(0, 1)});
  // Backward through views of leaves: the gradients land on the leaves, transposed back.
  Tensor P = Tensor::randn({4, 3}, DType::Float64, 9).requires_grad_();
  Tensor Q = Tensor::randn({4, 2}, DType::Float64, 10).requires_grad_();
  Tensor C = opforge::op("linalg.matmul")({P.transpose(0, 1), Q});  // Pᵀ Q: [3, 2]
  opforge::op("reduce.sum")({C}).backward();
  // d/dP Σ (Pᵀ Q) = Q 1ᵀ (each row of P gets its row of Q summed): P.grad[i][j] = Σ_c Q[i][c]
  const std::vector<double> q = Q.to_vector(), gp = P.grad().to_vector();
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 3; ++j) CHECK(gp[i * 3 + j] == Approx(q[i * 2] + q[i * 2 + 1]));
}

// A matrix times a vector (mv, matmul of a 1-D operand, a 2-D product with one
// column or one row) is one gemv, and a transposed matrix is read in place: no
// copy of it, the same values and gradients as a contiguous one.
TEST_CASE("linalg_matrix_vector_products_read_a_transposed_matrix_in_place", "[linalg][matmul][mv]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(name(dtype));
  const double tol = dtype == DType::Float32 ? 1e-4 : 1e-12;
  const Tensor At = Tensor::randn({300, 200}, dtype, 3);
  const Tensor A = At.transpose(0, 1);  // [200, 300], a view
  const Tensor x = Tensor::randn({300}, dtype, 4), v = Tensor::randn({200}, dtype, 5);
  REQUIRE_FALSE(A.is_contiguous());
  const OpHandle mm = opforge::op("linalg.matmul"), mv = opforge::op("linalg.mv");
  struct Case {
    const char* what;
    std::function<Tensor(const Tensor&)> call;  // of A, or of its contiguous copy
    Tensor lhs, rhs;                            // the same product as a naive [m, k] x [k, n]
  };
  const Tensor xc = x.reshape({300, 1}), vr = v.reshape({1, 200});
  const std::vector<Case> cases = {
      {"mv(A, x)", [&](const Tensor& a) { return mv({a, x}); }, A, xc},
      {"matmul(A, x)", [&](const Tensor& a) { return mm({a, x}); }, A, xc},
      {"matmul(v, A)", [&](const Tensor& a) { return mm({v, a}); }, vr, A},
      {"matmul(A, x[:, None])", [&](const Tensor& a) { return mm({a, xc}); }, A, xc},
      {"matmul(v[None, :], A)", [&](const Tensor& a) { return mm({vr, a}); }, vr, A},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    Dims naive_shape;
    const std::vector<double> want = naive_matmul(c.lhs.contiguous(), c.rhs.contiguous(), &naive_shape);
    for (const bool view : {true, false}) {
      INFO("A " << (view ? "a transposed view" : "contiguous"));
      const Tensor a = view ? A : A.contiguous();
      opforge::reset_peak_bytes();
      const std::int64_t before = opforge::live_bytes();
      const Tensor y = c.call(a);
      CHECK(opforge::peak_bytes() - before == static_cast<std::int64_t>(y.nbytes()));  // no copy of A
      CHECK(y.numel() == naive_shape[0] * naive_shape[1]);
      require_values(y, want, tol, tol);
    }
  }
}

TEST_CASE("linalg_matrix_vector_products_gradcheck_through_transposed_views", "[linalg][matmul][mv][grad]") {
  const Tensor At = Tensor::randn({4, 3}, DType::Float64, 6);
  const Tensor x = Tensor::randn({4}, DType::Float64, 7), v = Tensor::randn({3}, DType::Float64, 8);
  require_gradcheck("linalg.mv", {At.transpose(0, 1), x});
  require_gradcheck("linalg.mv", {At, v});
  require_gradcheck("linalg.matmul", {At.transpose(0, 1), x});
  require_gradcheck("linalg.matmul", {At, v});
  require_gradcheck("linalg.matmul", {x, At});
  require_gradcheck("linalg.matmul", {v, At.transpose(0, 1)});
  require_gradcheck("linalg.matmul", {At.transpose(0, 1), x.reshape({4, 1})});
  require_gradcheck("linalg.matmul", {x.reshape({1, 4}), At});
  // A strided vector, and a matrix that is neither contiguous nor a transpose.
  const Tensor stepped = Tensor::randn({8}, DType::Float64, 9).slice(0, 0, 8, 2);  // [4], stride 2
  require_gradcheck("linalg.mv", {Tensor::randn({3, 8}, DType::Float64, 10).slice(1, 0, 8, 2), stepped});
  require_gradcheck("linalg.matmul", {stepped, Tensor::randn({4, 6}, DType::Float64, 11).slice(1, 0, 6, 2)});
}

// With one input requiring grad, it gets the same gradient as when both do.
TEST_CASE("linalg_two_input_ops_give_the_same_gradient_when_only_one_input_requires_grad", "[linalg][grad]") {
  struct Case {
    std::string op;
    std::vector<Tensor> inputs;
  };
  const std::vector<Case> cases = {
      {"linalg.matmul", {Tensor::randn({2, 3, 4}, DType::Float64, 1), Tensor::randn({4, 5}, DType::Float64, 2)}},
      {"linalg.matmul", {Tensor::randn({3, 1, 3, 4}, DType::Float64, 1), Tensor::randn({2, 4, 5}, DType::Float64, 2)}},
      {"linalg.matmul", {Tensor::randn({4}, DType::Float64, 1), Tensor::randn({2, 4, 5}, DType::Float64, 2)}},
      {"linalg.dot", {Tensor::randn({5}, DType::Float64, 1), Tensor::randn({5}, DType::Float64, 2)}},
      {"linalg.outer", {Tensor::randn({4}, DType::Float64, 1), Tensor::randn({3}, DType::Float64, 2)}},
      {"linalg.solve", {shifted(4, 1), Tensor::randn({4, 3}, DType::Float64, 2)}},
      {"linalg.solve", {shifted(4, 1), Tensor::randn({4}, DType::Float64, 2)}},
      {"linalg.lstsq_solve", {Tensor::randn({7, 3}, DType::Float64, 1), Tensor::randn({7}, DType::Float64, 2)}},
  };
  for (const Case& c : cases) {
    const OpHandle op = opforge::op(c.op);
    for (std::size_t which : {0u, 1u}) {
      INFO(c.op << " " << c.inputs[0].shape() << ", " << c.inputs[1].shape() << ": only input " << which);
      auto run = [&](bool first, bool second) {
        std::vector<Tensor> x = {c.inputs[0].clone(), c.inputs[1].clone()};
        if (first) x[0].requires_grad_(true);
        if (second) x[1].requires_grad_(true);
        Tensor out = op(x);
        out.backward(Tensor::randn(out.shape(), DType::Float64, 99));
        return x;
      };
      const std::vector<Tensor> both = run(true, true);
      const std::vector<Tensor> one = run(which == 0, which == 1);
      REQUIRE(one[which].grad().defined());
      REQUIRE_FALSE(one[1 - which].grad().defined());
      require_values(one[which].grad(), both[which].grad().to_vector(), 1e-12, 1e-12);
    }
  }
}

// ---- dot, outer ---------------------------------------------------------------------------

TEST_CASE("linalg_dot_and_outer_match_hand_computed_values", "[linalg][dot][outer]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(name(dtype));
  const Tensor a = values({1, 2, -3}, {3}, dtype), b = values({0.5, 4, 2}, {3}, dtype);
  const Tensor d = opforge::op("linalg.dot")({a, b});
  REQUIRE(d.shape() == Dims{});
  REQUIRE(d.dtype() == dtype);
  REQUIRE(d.item() == 2.5);
  const Tensor o = opforge::op("linalg.outer")({a, values({2, -1}, {2}, dtype)});
  REQUIRE(o.shape() == Dims{3, 2});
  REQUIRE(o.dtype() == dtype);
  require_values(o, {2, -1, 4, -2, -6, 3}, 0);
  // Empty vectors: the empty sum, and an empty matrix.
  REQUIRE(opforge::op("linalg.dot")({Tensor::zeros({0}, dtype), Tensor::zeros({0}, dtype)}).item() == 0.0);
  REQUIRE(opforge::op("linalg.outer")({Tensor::zeros({0}, dtype), a}).shape() == Dims{0, 3});
}

TEST_CASE("linalg_dot_matches_naive_loop_and_its_gradients_are_the_other_vector", "[linalg][dot]") {
  const Tensor a = Tensor::randn({1000}, DType::Float64, 1), b = Tensor::randn({1000}, DType::Float64, 2);
  const std::vector<double> va = a.to_vector(), vb = b.to_vector();
  double want = 0;
  for (std::size_t i = 0; i < va.size(); ++i) want += va[i] * vb[i];
  Tensor x = a.clone(), y = b.clone();
  x.requires_grad_(true);
  y.requires_grad_(true);
  Tensor d = opforge::op("linalg.dot")({x, y});
  REQUIRE(d.item() == Approx(want).epsilon(1e-12));
  d.backward(Tensor::scalar(2.0));
  std::vector<double> ga(va.size()), gb(vb.size());
  for (std::size_t i = 0; i < va.size(); ++i) {
    ga[i] = 2 * vb[i];
    gb[i] = 2 * va[i];
  }
  require_values(x.grad(), ga, 0);
  require_values(y.grad(), gb, 0);
}

TEST_CASE("linalg_dot_and_outer_gradcheck", "[linalg][dot][outer][grad]") {
  require_gradcheck("linalg.dot", {Tensor::randn({6}, DType::Float64, 1), Tensor::randn({6}, DType::Float64, 2)});
  require_gradcheck("linalg.outer", {Tensor::randn({5}, DType::Float64, 1), Tensor::randn({3}, DType::Float64, 2)});
  require_gradcheck("linalg.outer", {Tensor::randn({1}, DType::Float64, 1), Tensor::randn({4}, DType::Float64, 2)});
}

// ---- solve, inverse, det, logdet -------------------------------------------------------------

TEST_CASE("linalg_solve_matches_hand_computed_values", "[linalg][solve]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(name(dtype));
  // A = [[2, 1], [1, 3]], det 5: A⁻¹ = [[3, −1], [−1, 2]] / 5.
  const Tensor A = values({2, 1, 1, 3}, {2, 2}, dtype);
  const Tensor x = opforge::op("linalg.solve")({A, values({3, 5}, {2}, dtype)});
  REQUIRE(x.shape() == Dims{2});
  REQUIRE(x.dtype() == dtype);
  require_values(x, {0.8, 1.4}, tol(dtype));
  const Tensor X = opforge::op("linalg.solve")({A, values({3, 1, 5, 0}, {2, 2}, dtype)});
  REQUIRE(X.shape() == Dims{2, 2});
  require_values(X, {0.8, 0.6, 1.4, -0.2}, tol(dtype));
  // A row swap is needed: [[0, 1], [1, 0]] x = b gives x = (b1, b0).
  require_values(opforge::op("linalg.solve")({values({0, 1, 1, 0}, {2, 2}, dtype), values({7, -2}, {2}, dtype)}),
                 {-2, 7}, 0);
}

TEST_CASE("linalg_solve_matches_gaussian_elimination", "[linalg][solve]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  const std::int64_t k = GENERATE(1, 3, 7);
  const bool vector = GENERATE(false, true);
  if (vector && k != 1) return;
  INFO(name(dtype) << " k " << k << (vector ? " (1-D B)" : ""));
  const std::int64_t n = 9;
  const Tensor A = shifted(n, 11, dtype);
  const Tensor B = vector ? Tensor::randn({n}, dtype, 12) : Tensor::randn({n, k}, dtype, 12);
  const Elimination want = eliminate(A.to_vector(), B.to_vector(), n, k);
  const Tensor X = opforge::op("linalg.solve")({A, B});
  REQUIRE(X.shape() == B.shape());
  require_values(X, want.x, tol(dtype), tol(dtype));
}

TEST_CASE("linalg_inverse_matches_hand_computed_values_and_elimination", "[linalg][inverse]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(name(dtype));
  const Tensor inv = opforge::op("linalg.inverse")({values({2, 1, 1, 3}, {2, 2}, dtype)});
  REQUIRE(inv.shape() == Dims{2, 2});
  REQUIRE(inv.dtype() == dtype);
  require_values(inv, {0.6, -0.2, -0.2, 0.4}, tol(dtype));
  const std::int64_t n = 8;
  const Tensor A = shifted(n, 13, dtype);
  require_values(opforge::op("linalg.inverse")({A}), eliminate(A.to_vector(), identity(n), n, n).x, tol(dtype),
                 tol(dtype));
}

TEST_CASE("linalg_det_and_logdet_match_hand_computed_values_and_elimination", "[linalg][det]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(name(dtype));
  const OpHandle det = opforge::op("linalg.det"), logdet = opforge::op("linalg.logdet");
  const Tensor d = det({values({2, 1, 1, 3}, {2, 2}, dtype)});
  REQUIRE(d.shape() == Dims{});
  REQUIRE(d.dtype() == dtype);
  REQUIRE(d.item() == Approx(5).epsilon(tol(dtype)));
  // One row swap: det [[0, 1], [1, 0]] = −1; an upper-triangular 3x3: the diagonal product.
  REQUIRE(det({values({0, 1, 1, 0}, {2, 2}, dtype)}).item() == -1.0);
  REQUIRE(det({values({2, 7, -1, 0, -3, 4, 0, 0, 0.5}, {3, 3}, dtype)}).item() == Approx(-3).epsilon(tol(dtype)));
  REQUIRE(logdet({values({2, 1, 1, 3}, {2, 2}, dtype)}).item() == Approx(std::log(5.0)).epsilon(tol(dtype)));
  // Two swaps cancel: a permutation matrix of det +1 has logdet 0.
  REQUIRE(logdet({values({0, 1, 0, 0, 0, 1, 1, 0, 0}, {3, 3}, dtype)}).item() == 0.0);
  REQUIRE(det({Tensor::zeros({0, 0}, dtype)}).item() == 1.0);  // the empty product

  const std::int64_t n = 7;
  const Tensor A = shifted(n, 14, dtype);
  const double want = eliminate(A.to_vector(), std::vector<double>(static_cast<std::size_t>(n), 0.0), n, 1).det;
  REQUIRE(det({A}).item() == Approx(want).epsilon(dtype == DType::Float32 ? 1e-5 : 1e-12));
  REQUIRE(logdet({A}).item() == Approx(std::log(want)).epsilon(dtype == DType::Float32 ? 1e-5 : 1e-12));
}

// A determinant that float64 holds is returned even when a partial product of the pivots
// would overflow or underflow on the way (NumPy's det gives 1 and -1 here too); and its
// gradient det(A)·A⁻ᵀ with it.
TEST_CASE("linalg_det_has_no_spurious_overflow_or_underflow", "[linalg][det]") {
  const OpHandle det = opforge::op("linalg.det");
  const auto diag = [](const std::vector<double>& d) {
    const auto n = static_cast<std::int64_t>(d.size());
    std::vector<double> v(d.size() * d.size(), 0.0);
    for (std::size_t i = 0; i < d.size(); ++i) v[i * d.size() + i] = d[i];
    return values(v, {n, n});
  };
  REQUIRE(det({diag({1e-200, 1e-200, 1e200, 1e200})}).item() == Approx(1.0).epsilon(1e-15));
  REQUIRE(det({diag({1e200, 1e200, 1e-200, -1e-200})}).item() == Approx(-1.0).epsilon(1e-15));
  REQUIRE(det({diag({1e200, 1e200})}).item() == std::numeric_limits<double>::infinity());  // det itself overflows
  REQUIRE(det({diag({1e-200, 1e-200})}).item() == 0.0);                                    // det itself underflows
  Tensor A = diag({1e-200, 1e-200, 1e200, 1e200});
  A.requires_grad_(true);
  det({A}).backward();
  require_values(A.grad(), {1e200, 0, 0, 0, 0, 1e200, 0, 0, 0, 0, 1e-200, 0, 0, 0, 0, 1e-200}, 1e-15);
}

// det of a singular matrix is 0, and its gradient is the cofactor matrix (the transposed
// adjugate), as in PyTorch: a validation pass with grad mode on must not fail on one.
TEST_CASE("linalg_det_of_a_singular_matrix_is_zero_and_its_gradient_the_cofactors", "[linalg][det]") {
  const OpHandle det = opforge::op("linalg.det");
  REQUIRE(det({values({1, 2, 2, 4}, {2, 2})}).item() == 0.0);
  // Row 1 = 2 · row 0: rank 2, an exact zero pivot. Cofactors C[i][j] = (−1)^(i+j) M[i][j].
  const std::vector<double> a = {1, 2, 3, 2, 4, 6, 1, 0, 1};
  const std::vector<double> cofactors = {4, 4, -4, -2, -2, 2, 0, 0, 0};
  for (const DType dtype : {DType::Float64, DType::Float32}) {
    INFO(name(dtype));
    Tensor A = values(a, {3, 3}, dtype);
    A.requires_grad_(true);
    Tensor d = det({A});
    REQUIRE(d.item() == 0.0);
    d.backward(Tensor::scalar(2.0, dtype));
    std::vector<double> twice(cofactors);
    for (double& c : twice) c *= 2;
    require_values(A.grad(), twice, tol(dtype), tol(dtype));
  }
  // Rank n − 2: every cofactor is 0.
  Tensor ones = Tensor::ones({3, 3}, DType::Float64);
  ones.requires_grad_(true);
  det({ones}).backward();
  require_values(ones.grad(), std::vector<double>(9, 0.0), 0, 1e-12);
  // A strided (transposed) singular input, and against finite differences at the singular point.
  Tensor At = values(a, {3, 3}).transpose(0, 1);
  require_gradcheck("linalg.det", {At});
  require_gradcheck("linalg.det", {values(a, {3, 3})});
  require_gradcheck("linalg.det", {Tensor::zeros({2, 2}, DType::Float64)});
}

// det · A⁻ᵀ is inf · 0 where det overflows and 0 · inf where it underflows; the
// cofactors themselves are finite.
TEST_CASE("linalg_det_gradient_is_finite_where_det_overflows_or_underflows", "[linalg][det]") {
  struct Case {
    double d;
    DType dtype;
  };
  for (const Case& c : {Case{1e200, DType::Float64}, Case{1e-200, DType::Float64}, Case{1e20, DType::Float32},
                        Case{1e-25, DType::Float32}}) {
    INFO(c.d << " " << name(c.dtype));
    Tensor A = values({c.d, 0, 0, c.d}, {2, 2}, c.dtype);
    A.requires_grad_(true);
    const Tensor d = opforge::op("linalg.det")({A});
    CHECK((d.item() == 0 || std::isinf(d.item())));
    d.backward();
    const double di = c.dtype == DType::Float32 ? double(float(c.d)) : c.d;  // the other diagonal entry
    require_values(A.grad(), {di, 0, 0, di}, tol(c.dtype), tol(c.dtype) * di);
  }
}

TEST_CASE("linalg_solvers_gradcheck", "[linalg][grad]") {
  require_gradcheck("linalg.solve", {shifted(5, 21), Tensor::randn({5, 3}, DType::Float64, 22)});
  require_gradcheck("linalg.solve", {shifted(5, 23), Tensor::randn({5}, DType::Float64, 24)});
  require_gradcheck("linalg.solve", {shifted(1, 23), Tensor::randn({1, 2}, DType::Float64, 24)});
  require_gradcheck("linalg.inverse", {shifted(5, 25)});
  require_gradcheck("linalg.det", {shifted(5, 26)});
  require_gradcheck("linalg.det", {values({0, 1, 1, 0}, {2, 2})});  // negative determinant
  require_gradcheck("linalg.logdet", {shifted(5, 27)});
  require_gradcheck("linalg.lstsq_solve", {Tensor::randn({8, 3}, DType::Float64, 28), Tensor::randn({8}, DType::Float64, 29)});
  require_gradcheck("linalg.lstsq_solve", {shifted(3, 30), Tensor::randn({3}, DType::Float64, 31)});  // m = n
}

// Gradients against their closed forms: solve's gB = A⁻ᵀ G, det's det·A⁻ᵀ, logdet's A⁻ᵀ.
TEST_CASE("linalg_solver_gradients_match_their_closed_forms", "[linalg][grad]") {
  const std::int64_t n = 4;
  const Tensor A0 = shifted(n, 40);
  const std::vector<double> a = A0.to_vector();
  const std::vector<double> inv = eliminate(a, identity(n), n, n).x;
  const std::vector<double> inv_t = transposed(inv, n, n);
  const double det = eliminate(a, std::vector<double>(n, 0.0), n, 1).det;

  Tensor A = A0.clone();
  A.requires_grad_(true);
  opforge::op("linalg.logdet")({A}).backward();
  require_values(A.grad(), inv_t, 1e-12, 1e-12);

  Tensor A2 = A0.clone();
  A2.requires_grad_(true);
  opforge::op("linalg.det")({A2}).backward(Tensor::scalar(0.5));
  std::vector<double> want(inv_t);
  for (double& v : want) v *= 0.5 * det;
  require_values(A2.grad(), want, 1e-12, 1e-12);

  Tensor B = Tensor::randn({n, 2}, DType::Float64, 41);
  B.requires_grad_(true);
  const Tensor G = Tensor::randn({n, 2}, DType::Float64, 42);
  opforge::op("linalg.solve")({A0, B}).backward(G);
  require_values(B.grad(), mm(inv_t, G.to_vector(), n, n, 2), 1e-12, 1e-12);
}

// ---- lstsq_solve ----------------------------------------------------------------------------

TEST_CASE("linalg_lstsq_solve_matches_hand_computed_values", "[linalg][lstsq]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(name(dtype));
  // An exact fit: y = A [1, 2].
  const Tensor A = values({1, 0, 0, 1, 1, 1}, {3, 2}, dtype);
  const Tensor x = opforge::op("linalg.lstsq_solve")({A, values({1, 2, 3}, {3}, dtype)});
  REQUIRE(x.shape() == Dims{2});
  REQUIRE(x.dtype() == dtype);
  require_values(x, {1, 2}, tol(dtype), tol(dtype));
  // Fitting a constant: the mean.
  const Tensor c = opforge::op("linalg.lstsq_solve")({values({1, 1, 1, 1}, {4, 1}, dtype), values({1, 2, 4, 9}, {4}, dtype)});
  require_values(c, {4}, tol(dtype));
}

TEST_CASE("linalg_lstsq_solve_matches_the_normal_equations", "[linalg][lstsq]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(name(dtype));
  const std::int64_t m = 40, n = 6;
  const Tensor A = Tensor::randn({m, n}, dtype, 50), y = Tensor::randn({m}, dtype, 51);
  const std::vector<double> a = A.to_vector(), at = transposed(a, m, n);
  const std::vector<double> ata = mm(at, a, n, m, n), aty = mm(at, y.to_vector(), n, m, 1);
  require_values(opforge::op("linalg.lstsq_solve")({A, y}), eliminate(ata, aty, n, 1).x,
                 dtype == DType::Float32 ? 1e-4 : 1e-11, dtype == DType::Float32 ? 1e-5 : 1e-12);
}

// ---- cholesky ---------------------------------------------------------------------------------

TEST_CASE("linalg_cholesky_matches_hand_computed_values", "[linalg][cholesky]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(name(dtype));
  // [[4, 2], [2, 5]] = L Lᵀ with L = [[2, 0], [1, 2]].
  const Tensor L = opforge::op("linalg.cholesky")({values({4, 2, 2, 5}, {2, 2}, dtype)});
  REQUIRE(L.shape() == Dims{2, 2});
  REQUIRE(L.dtype() == dtype);
  require_values(L, {2, 0, 1, 2}, tol(dtype));
  // Only the symmetric part is read: [[4, 1], [3, 5]] has sym = [[4, 2], [2, 5]].
  require_values(opforge::op("linalg.cholesky")({values({4, 1, 3, 5}, {2, 2}, dtype)}), {2, 0, 1, 2}, tol(dtype));
}

TEST_CASE("linalg_cholesky_factor_reproduces_the_matrix", "[linalg][cholesky]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(name(dtype));
  const std::int64_t n = 12;
  const Tensor A = spd(n, 60, dtype);
  const std::vector<double> l = opforge::op("linalg.cholesky")({A}).to_vector();
  for (std::int64_t i = 0; i < n; ++i) {
    REQUIRE(l[i * n + i] > 0);
    for (std::int64_t j = i + 1; j < n; ++j) REQUIRE(l[i * n + j] == 0.0);
  }
  require_values(values(mm(l, transposed(l, n, n), n, n, n), {n, n}), A.to_vector(), tol(dtype), 1e-4);
}

TEST_CASE("linalg_cholesky_gradcheck", "[linalg][cholesky][grad]") {
  require_gradcheck("linalg.cholesky", {spd(5, 61)});
  require_gradcheck("linalg.cholesky", {spd(1, 62)});
  // A non-symmetric input: the op is chol(½(A + Aᵀ)), differentiable in every element.
  std::vector<double> a = spd(4, 63).to_vector();
  a[1] += 0.3;
  a[8] -= 0.2;
  require_gradcheck("linalg.cholesky", {values(a, {4, 4})});
}

// The op reads sym(A), so its gradient is exactly symmetric.
TEST_CASE("linalg_cholesky_gradient_is_symmetric", "[linalg][cholesky][grad]") {
  Tensor A = spd(6, 64);
  A.requires_grad_(true);
  opforge::op("linalg.cholesky")({A}).backward(Tensor::randn({6, 6}, DType::Float64, 65));
  const std::vector<double> g = A.grad().to_vector();
  for (std::int64_t i = 0; i < 6; ++i)
    for (std::int64_t j = 0; j < 6; ++j) REQUIRE(g[i * 6 + j] == g[j * 6 + i]);
}

// ---- qr -----------------------------------------------------------------------------------------

TEST_CASE("linalg_qr_matches_hand_computed_values", "[linalg][qr]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(name(dtype));
  // A = [[3, 1], [4, 2]]: the first column has norm 5, so Q[:, 0] = (0.6, 0.8), R[0] = (5, 2.2),
  // Q[:, 1] = (−0.8, 0.6), R[1, 1] = 0.4.
  const TensorList qr = opforge::op("linalg.qr").call({values({3, 1, 4, 2}, {2, 2}, dtype)});
  REQUIRE(qr.size() == 2);
  REQUIRE(qr[0].shape() == Dims{2, 2});
  REQUIRE(qr[1].shape() == Dims{2, 2});
  REQUIRE(qr[0].dtype() == dtype);
  require_values(qr[0], {0.6, -0.8, 0.8, 0.6}, tol(dtype), tol(dtype));
  require_values(qr[1], {5, 2.2, 0, 0.4}, tol(dtype), tol(dtype));
  // A negative diagonal in Householder's R is flipped: [[−2], [0]] gives Q = [[−1], [0]], R = [[2]].
  const TensorList col = opforge::op("linalg.qr").call({values({-2, 0}, {2, 1}, dtype)});
  require_values(col[0], {-1, 0}, 0);
  require_values(col[1], {2}, 0);
}

TEST_CASE("linalg_qr_is_orthonormal_upper_triangular_and_reproduces_the_matrix", "[linalg][qr]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  const auto mn = GENERATE(std::make_pair(9, 4), std::make_pair(5, 5), std::make_pair(6, 1), std::make_pair(3, 7),
                           std::make_pair(1, 4));
  const std::int64_t m = mn.first, n = mn.second, k = std::min(m, n);
  INFO(name(dtype) << " A [" << m << ", " << n << "]");
  const Tensor A = Tensor::randn({m, n}, dtype, 70);
  const Tensor A_before = A.clone();
  const TensorList qr = opforge::op("linalg.qr").call({A});
  REQUIRE(qr[0].shape() == Dims{m, k});
  REQUIRE(qr[1].shape() == Dims{k, n});
  const std::vector<double> q = qr[0].to_vector(), r = qr[1].to_vector();
  for (std::int64_t i = 0; i < k; ++i) {
    REQUIRE(r[i * n + i] > 0);
    for (std::int64_t j = 0; j < i; ++j) REQUIRE(r[i * n + j] == 0.0);
  }
  const double t = dtype == DType::Float32 ? 1e-5 : 1e-13;
  require_values(values(mm(transposed(q, m, k), q, k, m, k), {k, k}), identity(k), 0, t);
  require_values(values(mm(q, r, m, k, n), {m, n}), A.to_vector(), 0, 10 * t);
  CHECK(A.to_vector() == A_before.to_vector());  // the input is never the work buffer
}

TEST_CASE("linalg_qr_gradcheck", "[linalg][qr][grad]") {
  require_gradcheck("linalg.qr", {Tensor::randn({6, 3}, DType::Float64, 71)});
  require_gradcheck("linalg.qr", {Tensor::randn({4, 4}, DType::Float64, 72)});
  require_gradcheck("linalg.qr", {Tensor::randn({5, 1}, DType::Float64, 73)});
  // Wide: A = [X | Y], the gradient through X = Q U and Y = Q V (as PyTorch's).
  require_gradcheck("linalg.qr", {Tensor::randn({3, 7}, DType::Float64, 74)});
  require_gradcheck("linalg.qr", {Tensor::randn({1, 4}, DType::Float64, 75)});
  require_gradcheck("linalg.qr", {Tensor::randn({4, 5}, DType::Float64, 76)});
}

// A wide A = [X | Y] has a gradient only where X (its first m columns) is of full rank.
TEST_CASE("linalg_qr_wide_refuses_a_gradient_when_its_first_columns_are_singular", "[linalg][qr][errors]") {
  Tensor A = values({1, 0, 3, 0, 0, 5}, {2, 3});  // column 1 is zero
  A.requires_grad_(true);
  const TensorList qr = opforge::op("linalg.qr").call({A});
  CHECK_THROWS_MATCHES(qr[1].backward(Tensor::ones({2, 3})), opforge::ValueError,
                       Message("in backward of 'linalg.qr': the gradient of the QR factorization needs the first m "
                               "columns of A of full rank, got R[1, 1] = 0 <= tol·max|R[j, j]| = 6.66134e-16 (tol = "
                               "6.66134e-16, attribute 'tol'): A is numerically rank-deficient"));
}

// A numerically rank-deficient A (R[1, 1] is rounding, not 0) is refused too: its
// gradient would be rounding divided by rounding (1e14 for this A in PyTorch).
TEST_CASE("linalg_qr_refuses_a_gradient_for_a_numerically_rank_deficient_matrix", "[linalg][qr][errors]") {
  Tensor A = values({1, 2, 2, 4, 3, 6}, {3, 2});  // column 1 = 2 x column 0
  A.requires_grad_(true);
  const TensorList qr = opforge::op("linalg.qr").call({A});
  const double r11 = std::abs(qr[1].to_vector()[3]);
  REQUIRE(r11 < 1e-12);  // not always exactly 0
  try {
    opforge::op("reduce.sum")({qr[1]}).backward();
    FAIL("the QR gradient of a rank-1 matrix was not refused");
  } catch (const opforge::ValueError& e) {
    CHECK_THAT(e.what(), Catch::StartsWith("in backward of 'linalg.qr': the gradient of the QR factorization needs A "
                                           "of full column rank, got R[1, 1] = "));
    CHECK_THAT(e.what(), Catch::EndsWith("(tol = 6.66134e-16, attribute 'tol'): A is numerically rank-deficient"));
  }
  CHECK_FALSE(A.grad().defined());
  // tol = 0 refuses only an exact 0 (as before): this A then gets a (meaningless) gradient.
  Tensor B = values({1, 2, 2, 4, 3, 6}, {3, 2});
  B.requires_grad_(true);
  const TensorList qr0 = opforge::op("linalg.qr").call({B}, {{"tol", 0.0}});
  if (qr0[1].to_vector()[3] != 0.0) {
    opforge::op("reduce.sum")({qr0[1]}).backward();
    CHECK(B.grad().defined());
  }
  // An ill-conditioned but full-rank A keeps its gradient.
  require_gradcheck("linalg.qr", {values({1, 1, 1, 1.01, 1, 0.99}, {3, 2})});
}

// ---- svd ----------------------------------------------------------------------------------------

TEST_CASE("linalg_svd_matches_hand_computed_values", "[linalg][svd]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(name(dtype));
  // [[0, −2], [3, 0]] = U diag(3, 2) Vᵀ with U = [[0, 1], [1, 0]] (largest entries
  // positive), Vᵀ = [[1, 0], [0, −1]].
  const TensorList usv = opforge::op("linalg.svd").call({values({0, -2, 3, 0}, {2, 2}, dtype)});
  REQUIRE(usv.size() == 3);
  REQUIRE(usv[0].dtype() == dtype);
  require_values(usv[0], {0, 1, 1, 0}, tol(dtype), tol(dtype));
  require_values(usv[1], {3, 2}, tol(dtype), tol(dtype));
  require_values(usv[2], {1, 0, 0, -1}, tol(dtype), tol(dtype));
  // A row [3, 4]: U = [[1]], S = [5], Vᵀ = [[0.6, 0.8]].
  const TensorList row = opforge::op("linalg.svd").call({values({3, 4}, {1, 2}, dtype)});
  REQUIRE(row[0].shape() == Dims{1, 1});
  REQUIRE(row[1].shape() == Dims{1});
  REQUIRE(row[2].shape() == Dims{1, 2});
  require_values(row[0], {1}, tol(dtype));
  require_values(row[1], {5}, tol(dtype));
  require_values(row[2], {0.6, 0.8}, tol(dtype));
}

TEST_CASE("linalg_svd_is_orthonormal_descending_and_reproduces_the_matrix", "[linalg][svd]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  const auto mn = GENERATE(std::make_pair(9, 4), std::make_pair(4, 9), std::make_pair(5, 5));
  const std::int64_t m = mn.first, n = mn.second, k = std::min(m, n);
  INFO(name(dtype) << " A [" << m << ", " << n << "]");
  const Tensor A = Tensor::randn({m, n}, dtype, 80);
  const TensorList usv = opforge::op("linalg.svd").call({A});
  REQUIRE(usv[0].shape() == Dims{m, k});
  REQUIRE(usv[1].shape() == Dims{k});
  REQUIRE(usv[2].shape() == Dims{k, n});
  const std::vector<double> u = usv[0].to_vector(), s = usv[1].to_vector(), vt = usv[2].to_vector();
  for (std::int64_t i = 0; i + 1 < k; ++i) REQUIRE(s[i] >= s[i + 1]);
  REQUIRE(s[k - 1] >= 0);
  for (std::int64_t c = 0; c < k; ++c) {  // sign convention: the largest |entry| of U's column is positive
    std::int64_t best = 0;
    for (std::int64_t i = 1; i < m; ++i)
      if (std::abs(u[i * k + c]) > std::abs(u[best * k + c])) best = i;
    REQUIRE(u[best * k + c] > 0);
  }
  const double t = dtype == DType::Float32 ? 1e-5 : 1e-13;
  require_values(values(mm(transposed(u, m, k), u, k, m, k), {k, k}), identity(k), 0, t);
  require_values(values(mm(vt, transposed(vt, k, n), k, n, k), {k, k}), identity(k), 0, t);
  std::vector<double> us(u);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t c = 0; c < k; ++c) us[i * k + c] *= s[c];
  require_values(values(mm(us, vt, m, k, n), {m, n}), A.to_vector(), 0, 10 * t);
}

TEST_CASE("linalg_svd_gradcheck", "[linalg][svd][grad]") {
  require_gradcheck("linalg.svd", {near_diag(5, 3, {4, 2.5, 1}, 81)});
  require_gradcheck("linalg.svd", {near_diag(3, 5, {4, 2.5, 1}, 82)});
  require_gradcheck("linalg.svd", {near_diag(4, 4, {5, 3.5, 2, 1}, 83)});
  require_gradcheck("linalg.svd", {Tensor::randn({6, 4}, DType::Float64, 84)});
}

// Only S used: gA = U diag(S̄) Vᵀ, defined even for repeated singular values. For
// A = 2·I, U Vᵀ = I whatever U is, so the gradient of sum(S) (the nuclear norm) is I.
TEST_CASE("linalg_svd_gradient_of_s_alone_is_defined_for_repeated_singular_values", "[linalg][svd][grad]") {
  Tensor A = values({2, 0, 0, 0, 2, 0, 0, 0, 2}, {3, 3});
  A.requires_grad_(true);
  const TensorList usv = opforge::op("linalg.svd").call({A});
  usv[1].backward(Tensor::ones({3}));
  require_values(A.grad(), identity(3), 0, 1e-14);
  // On a generic matrix the S-only path agrees with finite differences, through a sum of S.
  const Tensor B = near_diag(4, 3, {3, 2, 1}, 85);
  Tensor Bg = B.clone();
  Bg.requires_grad_(true);
  const Tensor w = Tensor::randn({3}, DType::Float64, 86);
  opforge::op("linalg.svd").call({Bg})[1].backward(w);
  const double h = 1e-6;
  const std::vector<double> b = B.to_vector(), wv = w.to_vector(), got = Bg.grad().to_vector();
  for (std::size_t e = 0; e < b.size(); ++e) {
    std::vector<double> plus(b), minus(b);
    plus[e] += h;
    minus[e] -= h;
    const std::vector<double> sp = opforge::op("linalg.svd").call({values(plus, {4, 3})})[1].to_vector();
    const std::vector<double> sm = opforge::op("linalg.svd").call({values(minus, {4, 3})})[1].to_vector();
    double num = 0;
    for (std::size_t i = 0; i < 3; ++i) num += wv[i] * (sp[i] - sm[i]) / (2 * h);
    INFO("element " << e);
    REQUIRE(got[e] == Approx(num).margin(1e-7));
  }
}

TEST_CASE("linalg_svd_refuses_u_and_v_gradients_for_repeated_singular_values", "[linalg][svd][errors]") {
  const OpHandle svd = opforge::op("linalg.svd");
  Tensor A = values({2, 0, 0, 0, 2, 0, 0, 0, 1}, {3, 3});
  A.requires_grad_(true);
  const TensorList usv = svd.call({A}, {{"tol", 0.001}});
  CHECK_THROWS_MATCHES(usv[0].backward(Tensor::ones({3, 3})), opforge::ValueError,
                       Message("in backward of 'linalg.svd': the gradient with respect to U and Vᵀ is undefined for "
                               "repeated singular values, got S[0] = 2 and S[1] = 2 closer than tol·S[0] = 0.002 (tol "
                               "= 0.001, attribute 'tol'); a gradient of S alone is defined"));
  // Close but not equal values: refused below the tolerance, accepted above it.
  Tensor B = values({2, 0, 0, 1.999}, {2, 2});
  B.requires_grad_(true);
  CHECK_THROWS_AS(svd.call({B}, {{"tol", 0.01}})[2].backward(Tensor::ones({2, 2})), opforge::ValueError);
  CHECK_NOTHROW(svd.call({B}, {{"tol", 1e-5}})[2].backward(Tensor::ones({2, 2})));
  // A rectangular matrix with a zero singular value: S⁻¹ is needed.
  Tensor C = values({1, 0, 0, 0, 0, 0}, {3, 2});
  C.requires_grad_(true);
  CHECK_THROWS_MATCHES(svd.call({C}, {{"tol", 0.001}})[0].backward(Tensor::ones({3, 2})), opforge::ValueError,
                       Message("in backward of 'linalg.svd': the gradient with respect to U and Vᵀ of a non-square "
                               "matrix needs nonzero singular values, got S[1] = 0 <= tol·S[0] = 0.001 (tol = 0.001, "
                               "attribute 'tol'); a gradient of S alone is defined"));
}

// ---- the harness, float32 against float64 ---------------------------------------------------------

const std::vector<std::string>& new_ops() {
  static const std::vector<std::string> ops = {"linalg.matmul", "linalg.dot",      "linalg.outer",
                                               "linalg.solve",  "linalg.inverse",  "linalg.det",
                                               "linalg.logdet", "linalg.cholesky", "linalg.qr",
                                               "linalg.svd",    "linalg.lstsq_solve"};
  return ops;
}

TEST_CASE("linalg_ops_pass_every_harness_check", "[linalg][harness]") {
  const std::string op = GENERATE(Catch::Generators::from_range(new_ops()));
  INFO(op);
  const OpHandle h = opforge::op(op);
  REQUIRE(h.schema().sample_inputs != nullptr);
  const opforge::sdk::CheckReport report = opforge::sdk::check_op(h);
  REQUIRE(report.size() == opforge::sdk::check_names().size());
  for (const opforge::sdk::CheckResult& r : report) {
    INFO(opforge::sdk::format_result(r));
    CHECK(r.passed);
    if (!opforge_tests::skipped_for_want_of_inputs(r)) CHECK_FALSE(r.skipped);
  }
  REQUIRE(opforge::sdk::all_passed(report));
}

// The harness samples in float32 (widened exactly) and float64: forward outputs agree
// to float32 rounding, through every output.
TEST_CASE("linalg_float32_forward_agrees_with_float64", "[linalg][float32]") {
  const std::string op = GENERATE(Catch::Generators::from_range(new_ops()));
  INFO(op);
  const OpHandle h = opforge::op(op);
  const TensorList in32 = opforge::sdk::harness_inputs(h, DType::Float32, 3);
  std::vector<Tensor> in64;
  for (const Tensor& t : in32) in64.push_back(t.to(DType::Float64));
  const TensorList out32 = h.call(in32), out64 = h.call(in64);
  REQUIRE(out32.size() == out64.size());
  for (std::size_t i = 0; i < out32.size(); ++i) {
    INFO("output " << i);
    REQUIRE(out32[i].dtype() == DType::Float32);
    REQUIRE(out32[i].shape() == out64[i].shape());
    require_values(out32[i], out64[i].to_vector(), 1e-4, 1e-5);
  }
}

// ---- bad input ----------------------------------------------------------------------------------

using opforge_tests::BadCall;
using opforge_tests::f32;
using opforge_tests::f64;
using opforge_tests::i64;
using opforge_tests::require_refused;

TEST_CASE("linalg_wrong_rank_or_shape_is_refused_naming_op_argument_expected_and_actual", "[linalg][errors]") {
  const std::vector<BadCall> calls = {
      {"linalg.matmul", {f64({}), f64({3})},
       "linalg.matmul: argument 'A': expected a tensor of at least 1 dimension, got float64[]"},
      {"linalg.matmul", {f64({3}), f64({})},
       "linalg.matmul: argument 'B': expected a tensor of at least 1 dimension, got float64[]"},
      {"linalg.matmul", {f64({2, 3, 4}), f64({2, 5, 6})},
       "linalg.matmul: argument 'B': expected size 4 on axis -2 (the size of the last axis of 'A', of shape [2, 3, "
       "4]), got shape [2, 5, 6]"},
      {"linalg.matmul", {f64({2, 3, 4}), f64({5})},
       "linalg.matmul: argument 'B': expected shape [4] (the size of the last axis of 'A'), got [5]"},
      {"linalg.matmul", {f64({3}), f64({4})},
       "linalg.matmul: argument 'B': expected shape [3] (the size of the last axis of 'A'), got [4]"},
      {"linalg.matmul", {f64({2, 3, 4}), f64({3, 4, 5})},
       "linalg.matmul: the batch axes of 'A' (shape [2, 3, 4]) and 'B' (shape [3, 4, 5]) do not broadcast: axis -3 "
       "has sizes 2 and 3 (sizes must be equal, or one of them 1)"},
      {"linalg.matmul", {f64({4, 1, 2, 2}), f64({3, 5, 2, 2})},
       "linalg.matmul: the batch axes of 'A' (shape [4, 1, 2, 2]) and 'B' (shape [3, 5, 2, 2]) do not broadcast: "
       "axis -4 has sizes 4 and 3 (sizes must be equal, or one of them 1)"},
      {"linalg.dot", {f64({2, 3}), f64({3})}, "linalg.dot: argument 'a': expected a 1-D tensor, got float64[2, 3]"},
      {"linalg.dot", {f64({3}), f64({4})}, "linalg.dot: argument 'b': expected shape [3] (the shape of 'a'), got [4]"},
      {"linalg.outer", {f64({3}), f64({2, 2})}, "linalg.outer: argument 'b': expected a 1-D tensor, got float64[2, 2]"},
      {"linalg.solve", {f64({3, 4}), f64({3})},
       "linalg.solve: argument 'A': expected a square matrix [n, n], got float64[3, 4]"},
      {"linalg.solve", {f64({3}), f64({3})}, "linalg.solve: argument 'A': expected a 2-D tensor, got float64[3]"},
      {"linalg.solve", {f64({3, 3}), f64({3, 2, 1})},
       "linalg.solve: argument 'B': expected a 1-D [n] or 2-D [n, k] tensor, got float64[3, 2, 1]"},
      {"linalg.solve", {f64({3, 3}), f64({4, 2})},
       "linalg.solve: argument 'B': expected 3 rows (the size of 'A', of shape [3, 3]), got shape [4, 2]"},
      {"linalg.inverse", {f64({2, 3})}, "linalg.inverse: argument 'A': expected a square matrix [n, n], got float64[2, 3]"},
      {"linalg.det", {f64({2, 2, 2})}, "linalg.det: argument 'A': expected a 2-D tensor, got float64[2, 2, 2]"},
      {"linalg.logdet", {f64({1, 3})}, "linalg.logdet: argument 'A': expected a square matrix [n, n], got float64[1, 3]"},
      {"linalg.cholesky", {f64({3, 2})},
       "linalg.cholesky: argument 'A': expected a square matrix [n, n], got float64[3, 2]"},
      {"linalg.qr", {f64({4})}, "linalg.qr: argument 'A': expected a 2-D tensor, got float64[4]"},
      {"linalg.svd", {f64({2, 2, 2})}, "linalg.svd: argument 'A': expected a 2-D tensor, got float64[2, 2, 2]"},
      {"linalg.lstsq_solve", {f64({2, 3}), f64({2})},
       "linalg.lstsq_solve: argument 'A': expected at least as many rows as columns (m >= n, for full column rank), "
       "got float64[2, 3]"},
      {"linalg.lstsq_solve", {f64({3, 2}), f64({4})},
       "linalg.lstsq_solve: argument 'y': expected shape [3] (the number of rows of 'A'), got [4]"},
      {"linalg.lstsq_solve", {f64({3, 2}), f64({3, 1})},
       "linalg.lstsq_solve: argument 'y': expected a 1-D tensor, got float64[3, 1]"},
  };
  require_refused<opforge::ShapeError>(calls);
}

TEST_CASE("linalg_singular_and_indefinite_matrices_are_refused_naming_the_op", "[linalg][errors]") {
  const Tensor singular = values({1, 2, 2, 4}, {2, 2});
  const std::string lu_zero = "(pivot 1 of its LU factorization is exactly 0)";
  const std::string no_inverse =
      ": it has no inverse; check A for a zero row or column or for rows that repeat, or use linalg.svd for a "
      "minimum-norm (pseudo-inverse) solution";
  const std::vector<BadCall> calls = {
      {"linalg.solve", {singular, f64({2})},
       "linalg.solve: argument 'A': expected a non-singular matrix, got a singular one " + lu_zero + no_inverse},
      {"linalg.inverse", {singular},
       "linalg.inverse: argument 'A': expected a non-singular matrix, got a singular one " + lu_zero + no_inverse},
      {"linalg.logdet", {singular},
       "linalg.logdet: argument 'A': expected a matrix with a positive determinant, got a singular one " + lu_zero},
      {"linalg.logdet", {values({0, 1, 1, 0}, {2, 2})},
       "linalg.logdet: argument 'A': expected a matrix with a positive determinant, got a negative determinant "
       "(log|det(A)| = 0)"},
      {"linalg.cholesky", {values({1, 2, 2, 1}, {2, 2})},
       "linalg.cholesky: argument 'A': expected a symmetric positive-definite matrix, got one that is not (its "
       "leading minor of order 2 is not positive definite)"},
      {"linalg.lstsq_solve", {values({0, 1, 0, 2, 0, 3}, {3, 2}), f64({3})},
       "linalg.lstsq_solve: argument 'A': expected full column rank, got a rank-deficient matrix (column 0 is "
       "zero, to rounding: in its QR factorization A = Q R, |R[0, 0]| = 0·max_j |R[j, j]|, at most rcond = "
       "6.66134e-16, the default max(m, n)·ε); if A is only ill-conditioned, pass a smaller 'rcond'"},
  };
  require_refused<opforge::ValueError>(calls);
  // Column 1 = 2 · column 0: |R[1, 1]| is rounding, whose exact size the message states.
  CHECK_THROWS_WITH(opforge::op("linalg.lstsq_solve")({values({1, 2, 2, 4, 3, 6}, {3, 2}), f64({3})}),
                    Catch::Matchers::StartsWith(
                        "linalg.lstsq_solve: argument 'A': expected full column rank, got a rank-deficient matrix "
                        "(column 1 is a combination of the columns before it, to rounding: in its QR "
                        "factorization A = Q R, |R[1, 1]| = ") &&
                        Catch::Matchers::EndsWith(
                            "·max_j |R[j, j]|, at most rcond = 6.66134e-16, the default max(m, n)·ε); if A is only "
                            "ill-conditioned, pass a smaller 'rcond'"));
  // qr itself takes a rank-deficient matrix; its gradient needs R invertible.
  Tensor A = values({1, 0, 0, 0, 0, 0}, {3, 2});
  A.requires_grad_(true);
  const TensorList qr = opforge::op("linalg.qr").call({A});
  CHECK_THROWS_MATCHES(qr[1].backward(Tensor::ones({2, 2})), opforge::ValueError,
                       Message("in backward of 'linalg.qr': the gradient of the QR factorization needs A of full "
                               "column rank, got R[1, 1] = 0 <= tol·max|R[j, j]| = 6.66134e-16 (tol = 6.66134e-16, "
                               "attribute 'tol'): A is numerically rank-deficient"));
}

// A tall float32 A of condition number ~1e3 falls under the default tolerance
// max(m, n)·ε = 20000 · 1.19e-7 = 2.4e-3; a smaller rcond solves it.
TEST_CASE("linalg_lstsq_solve_rcond_accepts_an_ill_conditioned_tall_matrix", "[linalg][errors]") {
  const std::int64_t m = 20000;
  std::vector<double> a = Tensor::randn({m, 3}, DType::Float64, 41).to_vector();
  std::vector<double> y(static_cast<std::size_t>(m));
  for (std::int64_t i = 0; i < m; ++i) {
    double* row = &a[static_cast<std::size_t>(3 * i)];
    row[2] *= 1e-3;
    y[static_cast<std::size_t>(i)] = row[0] + 2 * row[1] + 3 * row[2];
  }
  const Tensor A = values(a, {m, 3}, DType::Float32), Y = values(y, {m}, DType::Float32);
  const OpHandle lstsq = opforge::op("linalg.lstsq_solve");
  CHECK_THROWS_WITH(lstsq({A, Y}), Catch::Matchers::Contains("column 2 is a combination of the columns before it") &&
                                        Catch::Matchers::EndsWith("at most rcond = 0.00238419, the default max(m, n)·ε); "
                                                                  "if A is only ill-conditioned, pass a smaller "
                                                                  "'rcond' or solve in float64"));
  const Tensor x = lstsq.call({A, Y}, {{"rcond", 1e-5}})[0];
  require_values(x, {1, 2, 3}, 1e-3);
  CHECK_THROWS_WITH(lstsq.call({A, Y}, {{"rcond", 1e-2}}),
                    Catch::Matchers::EndsWith("at most rcond = 0.01); if A is only ill-conditioned, pass a smaller "
                                              "'rcond' or solve in float64"));
  for (const double bad : {1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    const std::string got = bad == 1.0 ? "1" : std::isnan(bad) ? "nan" : "inf";
    CHECK_THROWS_MATCHES(lstsq.call({A, Y}, {{"rcond", bad}}), opforge::ValueError,
                         Message("linalg.lstsq_solve: attribute 'rcond': expected a number in [0, 1) (or a negative "
                                 "one for the default, max(m, n)·ε of the dtype), got " + got));
  }
}

// Kahan's matrix: upper triangular, condition ~1e17 at n = 100, yet the smallest |R[i, i]|
// of its (unpivoted) QR is 1e-3 of the largest. The diagonal test passed it and the solve
// returned |x| ~ 1e16; the condition estimate refuses it.
TEST_CASE("linalg_lstsq_solve_refuses_a_rank_deficient_matrix_its_qr_diagonal_hides", "[linalg][errors]") {
  const std::int64_t n = 100;
  const double s = std::sin(1.2), c = std::cos(1.2);
  std::vector<double> k(static_cast<std::size_t>(n * n), 0.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = i; j < n; ++j) k[static_cast<std::size_t>(i * n + j)] = std::pow(s, i) * (i == j ? 1 : -c);
  const Tensor K = values(k, {n, n}), y = Tensor::ones({n}, DType::Float64);
  const OpHandle lstsq = opforge::op("linalg.lstsq_solve");
  CHECK_THROWS_AS(lstsq({K, y}), opforge::ValueError);
  CHECK_THROWS_WITH(lstsq({K, y}),
                       Catch::Matchers::StartsWith(
                           "linalg.lstsq_solve: argument 'A': expected full column rank, got a rank-deficient matrix "
                           "(to rounding: its reciprocal condition number, estimated from its QR factorization A = Q "
                           "R as 1/(‖R‖₁‖R⁻¹‖₁), is ") &&
                           Catch::Matchers::EndsWith(", at most rcond = 2.22045e-14, the default max(m, n)·ε); if A "
                                                     "is only ill-conditioned, pass a smaller 'rcond'"));
  // A well-conditioned square system is still solved, to the solution of solve().
  std::vector<double> b = Tensor::randn({n, n}, DType::Float64, 5).to_vector();
  for (std::int64_t i = 0; i < n; ++i) b[static_cast<std::size_t>(i * n + i)] += static_cast<double>(n);
  const Tensor B = values(b, {n, n});
  const Tensor x = lstsq({B, y});
  require_values(x, opforge::op("linalg.solve")({B, y}).to_vector(), 1e-10, 1e-12);
}

// ½(A + Aᵀ) overflowed for entries over half the dtype's largest: cholesky gave inf.
TEST_CASE("linalg_cholesky_of_entries_near_the_dtype_limit", "[linalg]") {
  const OpHandle chol = opforge::op("linalg.cholesky");
  require_values(chol({values({1.5e308, 0, 0, 1.5e308}, {2, 2})}), {std::sqrt(1.5e308), 0, 0, std::sqrt(1.5e308)},
                 1e-15);
  const double l00 = std::sqrt(3e38), l10 = 1.8e38 / l00, l11 = std::sqrt(3e38 - l10 * l10);
  require_values(chol({values({3e38, 1.8e38, 1.8e38, 3e38}, {2, 2}, DType::Float32)}), {l00, 0, l10, l11}, 1e-6);
}

// logdet of a matrix with a NaN is NaN wherever the NaN sits (a NaN pivot made the sign
// meaningless: one place gave NaN, another "a negative determinant").
TEST_CASE("linalg_logdet_of_a_nan_is_nan", "[linalg]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const auto& v : {std::vector<double>{1, 2, 2, nan}, std::vector<double>{1, 1, 1, nan},
                        std::vector<double>{nan, 1, 1, 1}}) {
    CAPTURE(v);
    CHECK(std::isnan(opforge::op("linalg.logdet")({values(v, {2, 2})}).item()));
  }
  // A true negative determinant, infinite, is still refused as one.
  CHECK_THROWS_WITH(opforge::op("linalg.logdet")({values({2, 1, std::numeric_limits<double>::infinity(), 3}, {2, 2})}),
                    Catch::Matchers::EndsWith("got a negative determinant (log|det(A)| = inf)"));
}

TEST_CASE("linalg_det_of_a_nan_or_an_infinity_is_nan_or_inf_and_backward_gives_nan_without_throwing",
          "[linalg][det]") {
  // backward threw ("expected finite values, got nan"): a NaN det took the
  // adjugate path, whose SVD refuses non-finite input. A NaN anywhere in a
  // graph then aborted the whole backward; PyTorch gives NaN gradients.
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  for (const auto& v : {std::vector<double>{nan, 0, 0, 2}, std::vector<double>{inf, 1, 1, 2},
                        std::vector<double>{nan, 0, 0, 0}, std::vector<double>{1, 2, 2, nan}}) {
    CAPTURE(v);
    Tensor A = values(v, {2, 2});
    A.requires_grad_(true);
    const Tensor d = opforge::op("linalg.det")({A});
    CHECK_FALSE(std::isfinite(d.item()));
    REQUIRE_NOTHROW(d.backward());
    bool any_nan = false;
    for (double g : A.grad().to_vector()) any_nan = any_nan || std::isnan(g);
    CHECK(any_nan);
  }
  // In a graph: the finite part's gradient still arrives.
  Tensor B = values({1, 2, 3, 4}, {2, 2});
  B.requires_grad_(true);
  const Tensor total = opforge::op("elementwise.add")(
      {opforge::op("linalg.det")({opforge::op("elementwise.mul")({B, values({nan}, {})})}), B.sum()});
  REQUIRE_NOTHROW(total.backward());
  CHECK(B.grad().shape() == Dims{2, 2});
}

TEST_CASE("linalg_nan_and_inf_are_named_where_they_make_a_factorization_fail", "[linalg][errors]") {
  // A NaN made svd say "did not converge (LAPACK gesdd info -4)" and
  // lstsq_solve "rank-deficient": the failure it caused, not its cause.
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const std::vector<BadCall> calls = {
      {"linalg.svd", {values({1, 2, 3, nan, 5, 6}, {2, 3})},
       "linalg.svd: argument 'A': expected finite values, got nan at [1, 0] of float64[2, 3]"},
      // gesdd returns NaN for an infinity without failing: checked before it runs.
      {"linalg.svd", {values({1, inf, 0, 1}, {2, 2})},
       "linalg.svd: argument 'A': expected finite values, got inf at [0, 1] of float64[2, 2]"},
      {"linalg.lstsq_solve", {values({1, 2, 3, 4, inf, 6}, {3, 2}), f64({3})},
       "linalg.lstsq_solve: argument 'A': expected finite values, got inf at [2, 0] of float64[3, 2]"},
      {"linalg.lstsq_solve", {values({1, 2, 3, 4, 5, -inf}, {3, 2}), f64({3})},
       "linalg.lstsq_solve: argument 'A': expected finite values, got -inf at [2, 1] of float64[3, 2]"},
  };
  require_refused<opforge::ValueError>(calls);
}

TEST_CASE("linalg_bad_dtypes_and_attributes_are_refused", "[linalg][errors]") {
  const std::string floating = ": expected dtype float32, float64, got int64; convert it with .to() first";
  const std::vector<BadCall> dtype_calls = {
      {"linalg.matmul", {f64({2, 2, 2}), i64({2, 2})}, "linalg.matmul: argument 'B' (input 1)" + floating},
      {"linalg.dot", {i64({3}), i64({3})}, "linalg.dot: argument 'a' (input 0)" + floating},
      {"linalg.outer", {f64({3}), i64({3})}, "linalg.outer: argument 'b' (input 1)" + floating},
      {"linalg.solve", {i64({2, 2}), f64({2})}, "linalg.solve: argument 'A' (input 0)" + floating},
      {"linalg.inverse", {i64({2, 2})}, "linalg.inverse: argument 'A' (input 0)" + floating},
      {"linalg.det", {i64({2, 2})}, "linalg.det: argument 'A' (input 0)" + floating},
      {"linalg.logdet", {i64({2, 2})}, "linalg.logdet: argument 'A' (input 0)" + floating},
      {"linalg.cholesky", {i64({2, 2})}, "linalg.cholesky: argument 'A' (input 0)" + floating},
      {"linalg.qr", {i64({2, 2})}, "linalg.qr: argument 'A' (input 0)" + floating},
      {"linalg.svd", {i64({2, 2})}, "linalg.svd: argument 'A' (input 0)" + floating},
      {"linalg.lstsq_solve", {f64({3, 2}), i64({3})}, "linalg.lstsq_solve: argument 'y' (input 1)" + floating},
      {"linalg.solve", {f64({2, 2}), f32({2})},
       "linalg.solve: argument 'B' (input 1): expected dtype float64 (the dtype of 'A'; all inputs must share one "
       "dtype), got float32; convert one of them with .to() first"},
      {"linalg.lstsq_solve", {f32({3, 2}), f64({3})},
       "linalg.lstsq_solve: argument 'y' (input 1): expected dtype float32 (the dtype of 'A'; all inputs must share "
       "one dtype), got float64; convert one of them with .to() first"},
  };
  require_refused<opforge::DTypeError>(dtype_calls);
  const OpHandle svd = opforge::op("linalg.svd");
  CHECK_THROWS_MATCHES(svd.call({f64({2, 2})}, {{"tol", true}}), opforge::ValueError,
                       Message("linalg.svd: attribute 'tol': expected float, got bool true"));
  // A tol of NaN or +inf is refused by forward: backward would refuse every U/V gradient with
  // "S[0] and S[1] closer than tol·S[0] = nan", whatever the singular values.
  for (const double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    const std::string got = std::isnan(bad) ? "nan" : "inf";
    CHECK_THROWS_MATCHES(svd.call({f64({2, 2})}, {{"tol", bad}}), opforge::ValueError,
                         Message("linalg.svd: attribute 'tol': expected a finite number (or a negative one for the "
                                 "default, the square root of the dtype's epsilon), got " + got));
  }
  CHECK_THROWS_MATCHES(svd.call({f64({2, 2})}, {{"rtol", 0.1}}), opforge::ValueError,
                       Message("linalg.svd: no attribute named 'rtol' (it has: tol)"));
  CHECK_THROWS_MATCHES(opforge::op("linalg.qr")({f64({3, 2})}), opforge::ValueError,
                       Message("linalg.qr: has 2 outputs; use call() to get all of them"));
}

}  // namespace
