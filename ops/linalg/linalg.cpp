// linalg: products through BLAS (OpenBLAS, called via xtensor-blas), and the
// plugin's registration. The solvers (solve, inverse, det, logdet, lstsq_solve)
// are in solvers.cpp, the factorizations (cholesky, qr, svd) in
// factorizations.cpp; linalg_common.hpp says which BLAS/LAPACK layer each uses.
//
//   mv(A, x)     = A x       A [m, n], x [n] -> [m]
//                  dA = g xᵀ       [m] x [n] -> [m, n]
//                  dx = Aᵀ g       [n, m] x [m] -> [n]
//   matmul(A, B) = A B       A [m, k], B [k, n] -> [m, n]
//                  dA = G Bᵀ       [m, n] x [n, k] -> [m, k]
//                  dB = Aᵀ G       [k, m] x [m, n] -> [k, n]
//     Batched, as NumPy's matmul: A [..., m, k], B [..., k, n] -> [..., m, n], the
//     batch axes (all but the last two) broadcast. A 1-D A [k] is a row [1, k] and
//     a 1-D B [k] a column [k, 1], the added axis removed from the result (1-D x
//     1-D gives a 0-d result). Per output matrix the gradients are the 2-D ones;
//     an operand whose batch axes were broadcast gets them summed over the
//     broadcast axes (in a fixed order: deterministic).
//   dot(a, b)    = Σ_i a[i] b[i]     a [n], b [n] -> 0-d
//                  da = g b,  db = g a     (g: the 0-d output gradient)
//   outer(a, b)  = a bᵀ      a [m], b [n] -> [m, n]
//                  da = G b        [m, n] x [n] -> [m]
//                  db = Gᵀ a       [n, m] x [m] -> [n]
//
// A gradient is computed only for an input that needs one, and forward saves only
// what those gradients read (x or B for dA, A for dx or dB).
#include <algorithm>
#include <limits>

#include "linalg_common.hpp"

namespace {

using namespace opforge_ops::linalg;  // NOLINT: this plugin's own helpers

template <class T>
void fill_zero(Tensor& t) {
  std::fill(t.data<T>(), t.data<T>() + t.numel(), T(0));
}

// C = op(A) op(B), each operand stored row-major and transposed by BLAS on the fly.
template <class T>
void gemm_into(const Tensor& A, bool transpose_a, const Tensor& B, bool transpose_b, Tensor& C) {
  if (C.numel() == 0) return;
  if (A.numel() == 0 || B.numel() == 0) {  // inner dimension 0: every entry is an empty sum
    fill_zero<T>(C);
    return;
  }
  // gemm() below: a one-column or one-row C goes to gemv.
  const std::int64_t k = transpose_a ? A.size(0) : A.size(1);
  gemm<T>(transpose_a, transpose_b, C.size(0), C.size(1), k, T(1), A.data<T>(), A.size(1), B.data<T>(), B.size(1),
          T(0), C.data<T>(), C.size(1));
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

// A matrix as BLAS reads it: contiguous, or the contiguous matrix it is the
// transpose of (trans = true: A.transpose(0, 1) as Aᵀ x is written), or else a
// contiguous copy.
struct GemmOperand {
  Tensor t;
  bool trans = false;
};
GemmOperand gemm_operand(const Tensor& x) {
  if (x.is_contiguous()) return {x, false};
  Tensor xt = x.transpose(0, 1);
  if (xt.is_contiguous()) return {std::move(xt), true};
  return {x.clone(), false};
}

// y = A v, or Aᵀ v with `transpose`: A a matrix in any layout (gemm_operand: a
// transposed one read in place), v a contiguous vector.
template <class T>
Tensor matvec(const Tensor& A, bool transpose, const Tensor& v) {
  const GemmOperand a = gemm_operand(A);
  Tensor y = Tensor::empty(Dims{A.size(transpose ? 1 : 0)}, A.dtype());
  gemv<T>(a.trans != transpose, a.t.size(0), a.t.size(1), T(1), a.t.data<T>(), v.data<T>(), T(0), y.data<T>());
  return y;
}

// A x for a matrix A (any layout) and a vector x: linalg.mv, and linalg.matmul of
// a matrix and a vector. dA = g xᵀ reads x; dx = Aᵀ g reads A (as given: backward
// finds its layout again). Slot 0: x, slot 1: A, each undefined when not needed.
TensorList mv_forward(Context& ctx, const Tensor& A, const Tensor& x) {
  const Tensor xc = contiguous(x);
  if (ctx.any_input_needs_grad())
    ctx.save_for_backward({ctx.needs_input_grad(0) ? xc : Tensor(), ctx.needs_input_grad(1) ? A : Tensor()});
  return {sdk::dispatch_floating(A.dtype(), ctx, "A", [&](auto tag) {
    using T = decltype(tag);
    return matvec<T>(A, false, xc);  // [m, n] x [n] -> [m]
  })};
}
TensorList mv_backward(Context& ctx, TensorSpan grads) {
  const TensorList& s = ctx.saved_tensors();  // x (if A needs grad), A (if x needs grad)
  const Tensor g = contiguous(grads[0]);
  Tensor gA, gx;
  sdk::dispatch_floating(g.dtype(), ctx, "grad", [&](auto tag) {
    using T = decltype(tag);
    if (ctx.needs_input_grad(0)) gA = outer<T>(g, s[0]);        // g xᵀ: [m] x [n] -> [m, n]
    if (ctx.needs_input_grad(1)) gx = matvec<T>(s[1], true, g);  // Aᵀ g: [n, m] x [m] -> [n]
  });
  return {gA, gx};
}

// The schema takes strided inputs: a transposed A goes to gemv with its transpose
// flag, with no copy (a copy of a [4000, 4000] float64 Aᵀ took 5x the product).
class Mv final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& A = in[0];
    const Tensor& x = in[1];
    sdk::expect_rank(ctx, A, "A", 2);
    sdk::expect_rank(ctx, x, "x", 1);
    sdk::expect_shape(ctx, x, "x", Dims{A.size(1)}, "the number of columns of 'A'");
    expect_blas_sizes(ctx, A, "A");
    return mv_forward(ctx, A, x);
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override { return mv_backward(ctx, grads); }
};

// ---- batched matmul -------------------------------------------------------------------

// Products below sdk::kBlasSerialWork (m·n·k multiply-adds) run on one OpenBLAS
// thread anyway: batches of them are spread over oneTBB, about kBatchTaskWork
// multiply-adds a task. Larger ones run one after another from the op's thread
// and OpenBLAS threads each, so the two pools never run at once.
constexpr std::int64_t kBlasThreadedWork = sdk::kBlasSerialWork;
constexpr std::int64_t kBatchTaskWork = std::int64_t{1} << 18;

// Which A and B matrix each output matrix of a batched product reads.
struct BatchPlan {
  Dims batch;                              // the broadcast batch shape
  std::int64_t count = 1;                  // output matrices
  std::int64_t count_a = 1, count_b = 1;   // matrices stored in A, in B
  std::vector<std::int64_t> ia, ib;        // per output matrix: its A matrix, its B matrix
};

Dims batch_axes(const Dims& shape) {
  return shape.size() > 2 ? Dims(shape.data(), shape.size() - 2) : Dims{};
}

BatchPlan plan_batches(const Context& ctx, const Dims& sa, const Dims& sb) {
  BatchPlan p;
  const Dims ba = batch_axes(sa), bb = batch_axes(sb);
  const std::size_t r = std::max(ba.size(), bb.size());
  p.batch.resize(r);
  for (std::size_t i = 0; i < r; ++i) {
    const std::int64_t da = i + ba.size() >= r ? ba[i + ba.size() - r] : 1;
    const std::int64_t db = i + bb.size() >= r ? bb[i + bb.size() - r] : 1;
    OPFORGE_CHECK(da == db || da == 1 || db == 1, ShapeError, ctx.op_name(), ": the batch axes of 'A' (shape ", sa,
                  ") and 'B' (shape ", sb, ") do not broadcast: axis ", static_cast<std::int64_t>(i) -
                  static_cast<std::int64_t>(r) - 2, " has sizes ", da, " and ", db,
                  " (sizes must be equal, or one of them 1)");
    p.batch[i] = da == 1 ? db : da;
  }
  p.count = p.batch.product();
  p.count_a = ba.product();
  p.count_b = bb.product();
  p.ia.resize(static_cast<std::size_t>(p.count));
  p.ib.resize(static_cast<std::size_t>(p.count));
  for (std::int64_t o = 0; o < p.count; ++o) {
    // Unravel o over the batch shape; an axis of size 1 (or missing) in an operand adds nothing.
    std::int64_t rem = o, oa = 0, ob = 0, stride_a = 1, stride_b = 1;
    for (std::size_t i = r; i-- > 0;) {
      const std::int64_t idx = rem % p.batch[i];
      rem /= p.batch[i];
      const std::int64_t da = i + ba.size() >= r ? ba[i + ba.size() - r] : 1;
      const std::int64_t db = i + bb.size() >= r ? bb[i + bb.size() - r] : 1;
      if (da != 1) oa += idx * stride_a;
      if (db != 1) ob += idx * stride_b;
      stride_a *= da;
      stride_b *= db;
    }
    p.ia[static_cast<std::size_t>(o)] = oa;
    p.ib[static_cast<std::size_t>(o)] = ob;
  }
  return p;
}

// C[o] = op(X[ix[o]]) op(Y[iy[o]]) for every output matrix o; ix/iy null: o itself.
// Each X matrix is x_mat elements apart with leading dimension ldx (same for Y);
// C[o] is [m, n], m·n elements apart.
template <class T>
void batched_gemm(std::int64_t count, const std::int64_t* ix, bool tx, const T* X, std::int64_t x_mat,
                  std::int64_t ldx, const std::int64_t* iy, bool ty, const T* Y, std::int64_t y_mat,
                  std::int64_t ldy, std::int64_t m, std::int64_t n, std::int64_t k, T* C) {
  // Multiply-adds per matrix, in double: m·n·k may not fit 64 bits.
  const double work = std::max(1.0, static_cast<double>(m) * static_cast<double>(n) *
                                        static_cast<double>(std::max<std::int64_t>(k, 1)));
  const std::int64_t grain =
      work >= static_cast<double>(kBlasThreadedWork)
          ? std::max<std::int64_t>(count, 1)
          : std::max<std::int64_t>(1, static_cast<std::int64_t>(static_cast<double>(kBatchTaskWork) / work));
  sdk::parallel_for(0, count, grain, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t o = lo; o < hi; ++o) {
      const std::int64_t xo = ix ? ix[o] : o, yo = iy ? iy[o] : o;
      gemm<T>(tx, ty, m, n, k, T(1), X + xo * x_mat, ldx, Y + yo * y_mat, ldy, T(0), C + o * m * n, n);
    }
  });
}

// out[g] = Σ_{o : idx[o] = g} full[o]: sums the per-output-matrix gradients of a
// broadcast operand, matrices of `mat` elements, in the order of o (deterministic).
template <class T>
void reduce_batches(const T* full, std::int64_t count, const std::vector<std::int64_t>& idx, std::int64_t groups,
                    std::int64_t mat, T* out) {
  std::fill(out, out + groups * mat, T(0));
  const std::int64_t grain = std::max<std::int64_t>(1, sdk::kElementwiseGrain / std::max<std::int64_t>(count, 1));
  sdk::parallel_for(0, mat, grain, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t o = 0; o < count; ++o) {
      const T* src = full + o * mat;
      T* dst = out + idx[static_cast<std::size_t>(o)] * mat;
      for (std::int64_t e = lo; e < hi; ++e) dst[e] += src[e];
    }
  });
}

// Matrix sizes of a matmul call: A [.., m, k] (m = 1 for a 1-D A), B [.., k, n] (n = 1 for a 1-D B).
struct MatSizes {
  std::int64_t m, k, n;
};
MatSizes mat_sizes(const Dims& sa, const Dims& sb) {
  const std::size_t ra = sa.size(), rb = sb.size();
  return {ra >= 2 ? sa[ra - 2] : 1, sa[ra - 1], rb >= 2 ? sb[rb - 1] : 1};
}

// B is one matrix and A's matrices are stacked rows: the whole product is one gemm
// [count·m, k] x [k, n] -> [count·m, n] (when count·m fits a BLAS index).
bool single_gemm(const BatchPlan& p, const MatSizes& z) {
  return p.count_b == 1 && p.count_a == p.count && p.count * z.m <= std::numeric_limits<blas_int>::max();
}

class Matmul final : public opforge::Function {
 public:
  // The schema takes strided inputs: a 2-D operand that is the transpose of a
  // contiguous matrix (x.transpose(0, 1), as Aᵀ B is written) goes to gemm as that
  // matrix with its transpose flag, with no copy; other strided operands are copied.
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& A = in[0];
    const Tensor& B = in[1];
    if (A.dim() == 2 && B.dim() == 2) return forward_2d(ctx, A, B);
    if (A.dim() == 2 && B.dim() == 1) return forward_mv(ctx, A, B);
    if (A.dim() == 1 && B.dim() == 2) return forward_vm(ctx, A, B);
    return forward_batched(ctx, contiguous(A), contiguous(B));
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    switch (ctx.saved_int(0)) {
      case kMode2d: return backward_2d(ctx, grads);
      case kModeMv: return mv_backward(ctx, grads);
      case kModeVm: return backward_vm(ctx, grads);
      default: return backward_batched(ctx, grads);
    }
  }

 private:
  // Which path forward took (saved int 0).
  static constexpr std::int64_t kMode2d = 0, kModeBatched = 1, kModeMv = 2, kModeVm = 3;

  // ---- a matrix and a vector: one gemv, a transposed matrix read in place ----
  // In each, slot 0 holds B (if A needs grad), slot 1 A (if B needs grad), as in the other paths.
  static TensorList forward_mv(Context& ctx, const Tensor& A, const Tensor& B) {  // [m, k] x [k] -> [m]
    sdk::expect_shape(ctx, B, "B", Dims{A.size(1)}, "the size of the last axis of 'A'");
    expect_blas_sizes(ctx, A, "A");
    expect_blas_sizes(ctx, B, "B");
    if (ctx.any_input_needs_grad()) ctx.save_int(kModeMv);
    return mv_forward(ctx, A, B);
  }
  static TensorList forward_vm(Context& ctx, const Tensor& A, const Tensor& B) {  // [k] x [k, n] -> [n]
    OPFORGE_CHECK(B.size(0) == A.size(0), ShapeError, ctx.op_name(), ": argument 'B': expected size ", A.size(0),
                  " on axis -2 (the size of the last axis of 'A', of shape ", A.shape(), "), got shape ", B.shape());
    expect_blas_sizes(ctx, A, "A");
    expect_blas_sizes(ctx, B, "B");
    const Tensor a = contiguous(A);
    if (ctx.any_input_needs_grad()) {
      ctx.save_for_backward({ctx.needs_input_grad(0) ? B : Tensor(), ctx.needs_input_grad(1) ? a : Tensor()});
      ctx.save_int(kModeVm);
    }
    return {sdk::dispatch_floating(A.dtype(), ctx, "A", [&](auto tag) {
      using T = decltype(tag);
      return matvec<T>(B, true, a);  // Bᵀ a
    })};
  }
  static TensorList backward_vm(Context& ctx, TensorSpan grads) {
    const TensorList& s = ctx.saved_tensors();
    const Tensor g = contiguous(grads[0]);  // [n]
    Tensor gA, gB;
    sdk::dispatch_floating(g.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      if (ctx.needs_input_grad(0)) gA = matvec<T>(s[0], false, g);  // B g: [k, n] x [n] -> [k]
      if (ctx.needs_input_grad(1)) gB = outer<T>(s[1], g);  // a gᵀ: [k] x [n] -> [k, n]
    });
    return {gA, gB};
  }

  // ---- 2-D x 2-D: one gemm ----
  static TensorList forward_2d(Context& ctx, const Tensor& A, const Tensor& B) {
    sdk::expect_rank(ctx, A, "A", 2);
    sdk::expect_rank(ctx, B, "B", 2);
    sdk::expect_shape(ctx, B, "B", Dims{A.size(1), B.size(1)}, "its rows must match the columns of 'A'");
    expect_blas_sizes(ctx, A, "A");
    expect_blas_sizes(ctx, B, "B");
    // dA = G Bᵀ reads B; dB = Aᵀ G reads A. Slot 0: B, slot 1: A, each undefined when not needed.
    if (ctx.any_input_needs_grad()) {
      ctx.save_for_backward({ctx.needs_input_grad(0) ? B : Tensor(), ctx.needs_input_grad(1) ? A : Tensor()});
      ctx.save_int(kMode2d);
    }
    return {sdk::dispatch_floating(A.dtype(), ctx, "A", [&](auto tag) {
      using T = decltype(tag);
      Tensor C = Tensor::empty(Dims{A.size(0), B.size(1)}, A.dtype());
      const GemmOperand a = gemm_operand(A), b = gemm_operand(B);
      gemm_into<T>(a.t, a.trans, b.t, b.trans, C);  // [m, k] x [k, n] -> [m, n]
      return C;
    })};
  }
  static TensorList backward_2d(Context& ctx, TensorSpan grads) {
    const TensorList& s = ctx.saved_tensors();  // B (if A needs grad), A (if B needs grad)
    const Tensor G = contiguous(grads[0]);     // [m, n]
    Tensor gA, gB;
    sdk::dispatch_floating(G.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      if (ctx.needs_input_grad(0)) {
        const GemmOperand b = gemm_operand(s[0]);
        gA = Tensor::empty(Dims{G.size(0), s[0].size(0)}, G.dtype());
        gemm_into<T>(G, false, b.t, !b.trans, gA);  // G Bᵀ: [m, n] x [n, k] -> [m, k]
      }
      if (ctx.needs_input_grad(1)) {
        const GemmOperand a = gemm_operand(s[1]);
        gB = Tensor::empty(Dims{s[1].size(1), G.size(1)}, G.dtype());
        gemm_into<T>(a.t, !a.trans, G, false, gB);  // Aᵀ G: [k, m] x [m, n] -> [k, n]
      }
    });
    return {gA, gB};
  }

  // ---- batched / 1-D operands ----
  static TensorList forward_batched(Context& ctx, const Tensor& A, const Tensor& B) {
    OPFORGE_CHECK(A.dim() >= 1, ShapeError, ctx.op_name(),
                  ": argument 'A': expected a tensor of at least 1 dimension, got ", A.describe());
    OPFORGE_CHECK(B.dim() >= 1, ShapeError, ctx.op_name(),
                  ": argument 'B': expected a tensor of at least 1 dimension, got ", B.describe());
    sdk::expect_contiguous(ctx, A, "A");
    sdk::expect_contiguous(ctx, B, "B");
    expect_blas_sizes(ctx, A, "A");
    expect_blas_sizes(ctx, B, "B");
    const Dims& sa = A.shape();
    const Dims& sb = B.shape();
    const MatSizes z = mat_sizes(sa, sb);
    const std::int64_t kb = B.dim() >= 2 ? B.size(-2) : B.size(0);
    if (B.dim() == 1)
      sdk::expect_shape(ctx, B, "B", Dims{z.k}, "the size of the last axis of 'A'");
    else
      OPFORGE_CHECK(kb == z.k, ShapeError, ctx.op_name(), ": argument 'B': expected size ", z.k,
                    " on axis -2 (the size of the last axis of 'A', of shape ", sa, "), got shape ", sb);
    const BatchPlan p = plan_batches(ctx, sa, sb);

    Dims out_shape = p.batch;
    if (A.dim() >= 2) out_shape.push_back(z.m);
    if (B.dim() >= 2) out_shape.push_back(z.n);

    // dA = G Bᵀ reads B; dB = Aᵀ G reads A. Slot 0: B, slot 1: A, each undefined when not needed;
    // int 0 is the mode (1); backward reads A's and B's shapes with ctx.input_shape.
    if (ctx.any_input_needs_grad()) {
      ctx.save_for_backward({ctx.needs_input_grad(0) ? B : Tensor(), ctx.needs_input_grad(1) ? A : Tensor()});
      ctx.save_int(kModeBatched);
    }
    return {sdk::dispatch_floating(A.dtype(), ctx, "A", [&](auto tag) {
      using T = decltype(tag);
      Tensor C = Tensor::empty(out_shape, A.dtype());
      if (C.numel() == 0) return C;
      const T* pa = A.data<T>();
      const T* pb = B.data<T>();
      T* pc = C.data<T>();
      if (single_gemm(p, z)) {
        // A as [count·m, k] x B [k, n] -> [count·m, n]
        gemm<T>(false, false, p.count * z.m, z.n, z.k, T(1), pa, z.k, pb, z.n, T(0), pc, z.n);
      } else {
        // C[o] = A[ia[o]] B[ib[o]]: [m, k] x [k, n] -> [m, n], per output matrix o.
        batched_gemm<T>(p.count, p.ia.data(), false, pa, z.m * z.k, z.k, p.ib.data(), false, pb, z.k * z.n, z.n,
                        z.m, z.n, z.k, pc);
      }
      return C;
    })};
  }

  static TensorList backward_batched(Context& ctx, TensorSpan grads) {
    const TensorList& s = ctx.saved_tensors();  // B (if A needs grad), A (if B needs grad)
    const Dims& sa = ctx.input_shape(0);
    const Dims& sb = ctx.input_shape(1);
    const MatSizes z = mat_sizes(sa, sb);
    const BatchPlan p = plan_batches(ctx, sa, sb);
    const Tensor G = contiguous(grads[0]);  // [batch..., m, n] (without m for a 1-D A, n for a 1-D B)
    Tensor gA, gB;
    sdk::dispatch_floating(G.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      const T* pg = G.data<T>();
      const bool fold = single_gemm(p, z);  // forward's single-gemm case
      if (ctx.needs_input_grad(0)) {
        const T* pb = s[0].data<T>();
        gA = Tensor::empty(sa, G.dtype());
        T* pga = gA.data<T>();
        if (fold) {
          // G Bᵀ: [count·m, n] x [n, k] -> [count·m, k]
          gemm<T>(false, true, p.count * z.m, z.k, z.n, T(1), pg, z.n, pb, z.n, T(0), pga, z.k);
        } else if (p.count_a == p.count) {
          // gA[o] = G[o] B[ib[o]]ᵀ: [m, n] x [n, k] -> [m, k], straight into A's matrix o
          batched_gemm<T>(p.count, nullptr, false, pg, z.m * z.n, z.n, p.ib.data(), true, pb, z.k * z.n, z.n, z.m,
                          z.k, z.n, pga);
        } else {
          // A was broadcast: per output matrix G[o] B[ib[o]]ᵀ: [m, n] x [n, k] -> [m, k] into
          // [count, m, k], then summed over the outputs that read each A matrix -> [count_a, m, k]
          Scratch<T> full(p.count * z.m * z.k);
          batched_gemm<T>(p.count, nullptr, false, pg, z.m * z.n, z.n, p.ib.data(), true, pb, z.k * z.n, z.n, z.m,
                          z.k, z.n, full.data());
          reduce_batches<T>(full.data(), p.count, p.ia, p.count_a, z.m * z.k, pga);
        }
      }
      if (ctx.needs_input_grad(1)) {
        const T* pa = s[1].data<T>();
        gB = Tensor::empty(sb, G.dtype());
        T* pgb = gB.data<T>();
        if (fold) {
          // Σ_o A[o]ᵀ G[o] = A_flatᵀ G_flat: [k, count·m] x [count·m, n] -> [k, n]
          gemm<T>(true, false, z.k, z.n, p.count * z.m, T(1), pa, z.k, pg, z.n, T(0), pgb, z.n);
        } else if (p.count_b == p.count) {
          // gB[o] = A[ia[o]]ᵀ G[o]: [k, m] x [m, n] -> [k, n], straight into B's matrix o
          batched_gemm<T>(p.count, p.ia.data(), true, pa, z.m * z.k, z.k, nullptr, false, pg, z.m * z.n, z.n, z.k,
                          z.n, z.m, pgb);
        } else {
          // B was broadcast: A[ia[o]]ᵀ G[o]: [k, m] x [m, n] -> [k, n] into [count, k, n], then
          // summed over the outputs that read each B matrix -> [count_b, k, n]
          Scratch<T> full(p.count * z.k * z.n);
          batched_gemm<T>(p.count, p.ia.data(), true, pa, z.m * z.k, z.k, nullptr, false, pg, z.m * z.n, z.n, z.k,
                          z.n, z.m, full.data());
          reduce_batches<T>(full.data(), p.count, p.ib, p.count_b, z.k * z.n, pgb);
        }
      }
    });
    return {gA, gB};
  }
};

// ---- dot and outer ------------------------------------------------------------------------

class Dot final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& a = in[0];
    const Tensor& b = in[1];
    sdk::expect_rank(ctx, a, "a", 1);
    sdk::expect_rank(ctx, b, "b", 1);
    sdk::expect_shape(ctx, b, "b", Dims{a.size(0)}, "the shape of 'a'");
    expect_blas_sizes(ctx, a, "a");
    // da = g b reads b; db = g a reads a. Slot 0: b, slot 1: a, each undefined when not needed.
    if (ctx.any_input_needs_grad())
      ctx.save_for_backward({ctx.needs_input_grad(0) ? b : Tensor(), ctx.needs_input_grad(1) ? a : Tensor()});
    return {sdk::dispatch_floating(a.dtype(), ctx, "a", [&](auto tag) {
      using T = decltype(tag);
      T r = 0;
      if (a.numel() > 0) xt::blas::dot(sdk::flat_view<T>(a), sdk::flat_view<T>(b), r);  // [n] · [n] -> []
      return Tensor::scalar(static_cast<double>(r), a.dtype());
    })};
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const TensorList& s = ctx.saved_tensors();  // b (if a needs grad), a (if b needs grad)
    Tensor ga, gb;
    sdk::dispatch_floating(grads[0].dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      const T g = static_cast<T>(grads[0].item());  // []
      for (std::size_t i = 0; i < 2; ++i) {
        if (!ctx.needs_input_grad(i)) continue;
        const Tensor& other = s[i];  // b for da, a for db: [n]
        Tensor out = Tensor::empty(other.shape(), other.dtype());
        scaled_copy<T>(other.data<T>(), g, other.numel(), out.data<T>());  // g · other: [] x [n] -> [n]
        (i == 0 ? ga : gb) = out;
      }
    });
    return {ga, gb};
  }
};

class Outer final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& a = in[0];
    const Tensor& b = in[1];
    sdk::expect_rank(ctx, a, "a", 1);
    sdk::expect_rank(ctx, b, "b", 1);
    expect_blas_sizes(ctx, a, "a");
    expect_blas_sizes(ctx, b, "b");
    // da = G b reads b; db = Gᵀ a reads a. Slot 0: b, slot 1: a, each undefined when not needed.
    if (ctx.any_input_needs_grad())
      ctx.save_for_backward({ctx.needs_input_grad(0) ? b : Tensor(), ctx.needs_input_grad(1) ? a : Tensor()});
    return {sdk::dispatch_floating(a.dtype(), ctx, "a", [&](auto tag) {
      using T = decltype(tag);
      return outer<T>(a, b);  // a bᵀ: [m] x [n] -> [m, n]
    })};
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const TensorList& s = ctx.saved_tensors();  // b (if a needs grad), a (if b needs grad)
    const Tensor G = contiguous(grads[0]);     // [m, n]
    Tensor ga, gb;
    sdk::dispatch_floating(G.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      if (ctx.needs_input_grad(0)) ga = matvec<T>(G, false, s[0]);  // G b: [m, n] x [n] -> [m]
      if (ctx.needs_input_grad(1)) gb = matvec<T>(G, true, s[1]);   // Gᵀ a: [n, m] x [m] -> [n]
    });
    return {ga, gb};
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
// dot: a [5], b [5].
static TensorList dot_samples(opforge::DType dtype, std::uint64_t seed) {
  return {Tensor::randn({5}, dtype, seed), Tensor::randn({5}, dtype, seed + 1)};
}
// outer: a [4], b [3].
static TensorList outer_samples(opforge::DType dtype, std::uint64_t seed) {
  return {Tensor::randn({4}, dtype, seed), Tensor::randn({3}, dtype, seed + 1)};
}

OPFORGE_PLUGIN("linalg", "0.1.0") {
  using opforge::OpSchema;
  registrar.add<Mv>(OpSchema("linalg.mv")
                        .takes_strided_inputs()
                        .input_names({"A", "x"})
                        .describe("A x: matrix [m, n] times vector [n]")
                        .samples(mv_samples));
  registrar.add<Matmul>(OpSchema("linalg.matmul")
                            .takes_strided_inputs()
                            .input_names({"A", "B"})
                            .describe("A B as NumPy's matmul: [..., m, k] x [..., k, n] -> [..., m, n], batch axes "
                                      "broadcast, 1-D operands a row / a column")
                            .samples(matmul_samples));
  registrar.add<Dot>(OpSchema("linalg.dot")
                         .input_names({"a", "b"})
                         .describe("a · b: inner product of two vectors [n] -> 0-d")
                         .samples(dot_samples));
  registrar.add<Outer>(OpSchema("linalg.outer")
                           .input_names({"a", "b"})
                           .describe("a bᵀ: outer product of vectors [m] and [n] -> [m, n]")
                           .samples(outer_samples));
  opforge_ops::linalg::register_solvers(registrar);
  opforge_ops::linalg::register_factorizations(registrar);
}
