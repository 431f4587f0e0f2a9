// linalg: matrix-vector and matrix-matrix products through BLAS (OpenBLAS, called
// via xtensor-blas over zero-copy views of the tensors' memory).
//
//   mv(A, x)     = A x       A [m, n], x [n] -> [m]
//                  dA = g xᵀ       [m] x [n] -> [m, n]
//                  dx = Aᵀ g       [n, m] x [m] -> [n]
//   matmul(A, B) = A B       A [m, k], B [k, n] -> [m, n]
//                  dA = G Bᵀ       [m, n] x [n, k] -> [m, k]
//                  dB = Aᵀ G       [k, m] x [m, n] -> [k, n]
//
// A gradient is computed only for an input that needs one, and forward saves only
// what those gradients read (x or B for dA, A for dx or dB).
#include <algorithm>
#include <limits>

#include <opforge/sdk.hpp>
#include <xtensor-blas/xblas.hpp>

namespace {

using opforge::Context;
using opforge::Dims;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
namespace sdk = opforge::sdk;

// BLAS takes sizes and leading dimensions as xt::blas_index_t (int): refuse
// what would not fit rather than let it wrap.
void expect_blas_sizes(const Context& ctx, const Tensor& t, const char* arg) {
  constexpr auto kMax = std::numeric_limits<xt::blas_index_t>::max();
  for (std::int64_t s : t.shape())
    OPFORGE_CHECK(s <= kMax, ValueError, ctx.op_name(), ": argument '", arg, "': expected every dimension <= ",
                  kMax, " (the BLAS index limit), got shape ", t.shape());
}

// Gradients arriving from the engine are normally contiguous; the BLAS views need them to be.
Tensor contiguous(const Tensor& t) { return t.is_contiguous() ? t : t.clone(); }

template <class T>
void fill_zero(Tensor& t) {
  std::fill(t.data<T>(), t.data<T>() + t.numel(), T(0));
}

// y = op(A) x, where A is stored [rows, cols] and op transposes it or not.
template <class T>
void gemv_into(const Tensor& A, bool transpose, const Tensor& x, Tensor& y) {
  if (A.numel() == 0) {  // BLAS refuses a leading dimension of 0; an empty sum is 0
    fill_zero<T>(y);
    return;
  }
  auto a = sdk::matrix_view<T>(A);
  auto xv = sdk::flat_view<T>(x);
  auto yv = sdk::flat_view<T>(y);
  xt::blas::gemv(a, xv, yv, transpose);
}

// C = op(A) op(B), each operand stored row-major and transposed by BLAS on the fly.
template <class T>
void gemm_into(const Tensor& A, bool transpose_a, const Tensor& B, bool transpose_b, Tensor& C) {
  if (C.numel() == 0) return;
  if (A.numel() == 0 || B.numel() == 0) {  // inner dimension 0: every entry is an empty sum
    fill_zero<T>(C);
    return;
  }
  auto a = sdk::matrix_view<T>(A);
  auto b = sdk::matrix_view<T>(B);
  auto c = sdk::matrix_view<T>(C);
  xt::blas::gemm(a, b, c, transpose_a, transpose_b);
}

// out[i, j] = g[i] * x[j]. A rank-1 product is memory-bound: one pass writing the
// result beats BLAS ger, which adds into a matrix that would first need zeroing.
template <class T>
Tensor outer(const Tensor& g, const Tensor& x) {
  const std::int64_t m = g.numel(), n = x.numel();
  Tensor out = Tensor::empty(Dims{m, n}, g.dtype());
  const T* pg = g.data<T>();
  const T* px = x.data<T>();
  T* po = out.data<T>();
  const std::int64_t rows_per_task = std::max<std::int64_t>(1, sdk::kElementwiseGrain / std::max<std::int64_t>(n, 1));
  sdk::parallel_for(0, m, rows_per_task, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) {
      const T gi = pg[i];
      T* row = po + i * n;
      for (std::int64_t j = 0; j < n; ++j) row[j] = gi * px[j];
    }
  });
  return out;
}

class Mv final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& A = in[0];
    const Tensor& x = in[1];
    sdk::expect_rank(ctx, A, "A", 2);
    sdk::expect_rank(ctx, x, "x", 1);
    sdk::expect_shape(ctx, x, "x", Dims{A.size(1)}, "the number of columns of 'A'");
    sdk::expect_contiguous(ctx, A, "A");
    sdk::expect_contiguous(ctx, x, "x");
    expect_blas_sizes(ctx, A, "A");
    // dA = g xᵀ reads x; dx = Aᵀ g reads A. Slot 0: x, slot 1: A, each undefined when not needed.
    if (ctx.any_input_needs_grad())
      ctx.save_for_backward({ctx.needs_input_grad(0) ? x : Tensor(), ctx.needs_input_grad(1) ? A : Tensor()});
    return {sdk::dispatch_floating(A.dtype(), ctx, "A", [&](auto tag) {
      using T = decltype(tag);
      Tensor y = Tensor::empty(Dims{A.size(0)}, A.dtype());
      gemv_into<T>(A, false, x, y);  // [m, n] x [n] -> [m]
      return y;
    })};
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const TensorList& s = ctx.saved_tensors();  // x (if A needs grad), A (if x needs grad)
    const Tensor g = contiguous(grads[0]);
    Tensor gA, gx;
    sdk::dispatch_floating(g.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      if (ctx.needs_input_grad(0)) gA = outer<T>(g, s[0]);  // g xᵀ: [m] x [n] -> [m, n]
      if (ctx.needs_input_grad(1)) {
        const Tensor& A = s[1];
        gx = Tensor::empty(Dims{A.size(1)}, g.dtype());
        gemv_into<T>(A, true, g, gx);  // Aᵀ g: [n, m] x [m] -> [n]
      }
    });
    return {gA, gx};
  }
};

class Matmul final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& A = in[0];
    const Tensor& B = in[1];
    sdk::expect_rank(ctx, A, "A", 2);
    sdk::expect_rank(ctx, B, "B", 2);
    sdk::expect_shape(ctx, B, "B", Dims{A.size(1), B.size(1)}, "its rows must match the columns of 'A'");
    sdk::expect_contiguous(ctx, A, "A");
    sdk::expect_contiguous(ctx, B, "B");
    expect_blas_sizes(ctx, A, "A");
    expect_blas_sizes(ctx, B, "B");
    // dA = G Bᵀ reads B; dB = Aᵀ G reads A. Slot 0: B, slot 1: A, each undefined when not needed.
    if (ctx.any_input_needs_grad())
      ctx.save_for_backward({ctx.needs_input_grad(0) ? B : Tensor(), ctx.needs_input_grad(1) ? A : Tensor()});
    return {sdk::dispatch_floating(A.dtype(), ctx, "A", [&](auto tag) {
      using T = decltype(tag);
      Tensor C = Tensor::empty(Dims{A.size(0), B.size(1)}, A.dtype());
      gemm_into<T>(A, false, B, false, C);  // [m, k] x [k, n] -> [m, n]
      return C;
    })};
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const TensorList& s = ctx.saved_tensors();  // B (if A needs grad), A (if B needs grad)
    const Tensor G = contiguous(grads[0]);     // [m, n]
    Tensor gA, gB;
    sdk::dispatch_floating(G.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      if (ctx.needs_input_grad(0)) {
        const Tensor& B = s[0];
        gA = Tensor::empty(Dims{G.size(0), B.size(0)}, G.dtype());
        gemm_into<T>(G, false, B, true, gA);  // G Bᵀ: [m, n] x [n, k] -> [m, k]
      }
      if (ctx.needs_input_grad(1)) {
        const Tensor& A = s[1];
        gB = Tensor::empty(Dims{A.size(1), G.size(1)}, G.dtype());
        gemm_into<T>(A, true, G, false, gB);  // Aᵀ G: [k, m] x [m, n] -> [k, n]
      }
    });
    return {gA, gB};
  }
};

}  // namespace

// Sample inputs for the test harness (`opforge check`). mv: A [5, 3], x [3].
static TensorList mv_samples(opforge::DType dtype, std::uint64_t seed) {
  return {Tensor::randn({5, 3}, dtype, seed), Tensor::randn({3}, dtype, seed + 1)};
}
// matmul: A [4, 3], B [3, 5].
static TensorList matmul_samples(opforge::DType dtype, std::uint64_t seed) {
  return {Tensor::randn({4, 3}, dtype, seed), Tensor::randn({3, 5}, dtype, seed + 1)};
}

OPFORGE_PLUGIN("linalg", "0.1.0") {
  using opforge::OpSchema;
  registrar.add<Mv>(OpSchema("linalg.mv")
                        .input_names({"A", "x"})
                        .describe("A x: matrix [m, n] times vector [n]")
                        .samples(mv_samples));
  registrar.add<Matmul>(OpSchema("linalg.matmul")
                            .input_names({"A", "B"})
                            .describe("A B: matrix [m, k] times matrix [k, n]")
                            .samples(matmul_samples));
}
