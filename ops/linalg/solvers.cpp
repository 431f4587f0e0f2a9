// linalg solvers: linear systems, inverse, determinants, least squares, through
// LAPACK (OpenBLAS) called via xtensor-blas' cxxlapack bindings (see
// linalg_common.hpp for why this layer, and for the row-major/column-major trick).
//
//   solve(A, B) = X = A⁻¹ B     A [n, n], B [n] or [n, k] -> X of B's shape
//                 (LU with partial pivoting, getrf + getrs)
//                 gB = A⁻ᵀ G          [n, n] x [n, k] -> [n, k]   (getrs on the same LU)
//                 gA = −gB Xᵀ         [n, k] x [k, n] -> [n, n]
//   inverse(A)  = A⁻¹           A [n, n] -> [n, n]  (getrf + getri)
//                 gA = −A⁻ᵀ G A⁻ᵀ      [n, n] x [n, n] x [n, n] -> [n, n]
//   det(A)      = Π_i U[i, i] · (−1)^(row swaps)   A [n, n] -> 0-d  (getrf)
//                 gA = g · det(A) · A⁻ᵀ            [] x [] x [n, n] -> [n, n]
//                 and for a singular A (a zero pivot), or a det that overflows or
//                 underflows the dtype, the transposed adjugate, through
//                 the SVD A = U diag(S) Vᵀ: gA = g · det(U) det(Vᵀ) · U diag(p) Vᵀ with
//                 p_i = Π_{j≠i} S_j (nonzero only where the rank is n − 1)
//   logdet(A)   = log det(A) = Σ_i log|U[i, i]|, for det(A) > 0    A [n, n] -> 0-d
//                 gA = g · A⁻ᵀ                     [] x [n, n] -> [n, n]
//   lstsq_solve(A, y) = x* = argmin_x ||y − A x||²   A [m, n] (m >= n, full column rank), y [m] -> [n]
//                 through the QR of A (geqrf on a column-major copy, ormqr, a triangular solve:
//                 what gels does):
//                 x* = R⁻¹ Qᵀ y. Backward through the normal equations AᵀA x* = Aᵀ y, with
//                 AᵀA = RᵀR:
//                 z  = (AᵀA)⁻¹ g = R⁻¹ R⁻ᵀ g      [n]
//                 gy = A z                        [m, n] x [n] -> [m]
//                 gA = r zᵀ − gy x*ᵀ,  r = y − A x*     [m] x [n] − [m] x [n] -> [m, n]
//
// Singular matrices: solve, inverse and logdet refuse an exactly singular A (a zero
// pivot in its LU factorization) with an error naming the op, as NumPy does. det
// returns 0 for it, and its gradient is the transposed adjugate (as PyTorch's):
// det(A)·A⁻ᵀ needs A⁻¹, so backward takes the SVD instead. logdet also refuses a
// negative determinant.
// lstsq_solve refuses a rank-deficient A: some |R[i, i]| <= rcond·max_j |R[j, j]|, or
// an estimated reciprocal condition number 1/(‖R‖₁‖R⁻¹‖₁) <= rcond (trcon), rcond
// an attribute, by default max(m, n)·ε of the dtype (NumPy's default for lstsq, whose
// float32 inputs are solved in float64: a tall float32 A whose condition number is
// near 1/(max(m, n)·ε) is refused here, where a smaller rcond accepts it).
#include "linalg_common.hpp"

namespace {

using namespace opforge_ops::linalg;  // NOLINT: this plugin's own helpers

// What to do about a singular A in solve and inverse.
constexpr const char* kSingularHint =
    ": it has no inverse; check A for a zero row or column or for rows that repeat, or use linalg.svd for a "
    "minimum-norm (pseudo-inverse) solution";

// (−1)^(row swaps) · Π_i sign(U[i, i]) of an LU factorization: the sign of the determinant.
template <class T>
T lu_sign(const Tensor& lu, const std::vector<blas_int>& piv) {
  const std::int64_t n = lu.size(0);
  const T* f = lu.data<T>();
  bool negative = false;
  for (std::int64_t i = 0; i < n; ++i) {
    if (piv[static_cast<std::size_t>(i)] != i + 1) negative = !negative;
    if (f[i * n + i] < 0) negative = !negative;
  }
  return negative ? T(-1) : T(1);
}

// gA = c · adj(A)ᵀ for a square A, singular or not, through its SVD A = U diag(S) Vᵀ:
// adj(A)ᵀ = det(U) det(Vᵀ) · U diag(p) Vᵀ with p_i = Π_{j≠i} S_j (products without
// division, so a zero singular value is no trouble). U and Vᵀ are orthogonal: their
// determinants are ±1, the signs of their LU factorizations.
template <class T>
void adjugate_t_into(const Context& ctx, const Tensor& A, T c, T* gA) {
  const std::int64_t n = A.size(0);
  Tensor work_a = A.clone();  // gesdd destroys its input
  Tensor U = Tensor::empty(Dims{n, n}, A.dtype());
  Tensor Vt = Tensor::empty(Dims{n, n}, A.dtype());
  Scratch<T> S(n);
  std::vector<blas_int> iwork(static_cast<std::size_t>(8 * n));
  // Row-major A is Aᵀ column-major: Aᵀ = U' S V'ᵀ gives U = V'ᵀ read row-major and
  // Vᵀ = U' read row-major (as in linalg.svd).
  T query = 0;
  cxxlapack::gesdd<blas_int>('S', bi(n), bi(n), work_a.data<T>(), ld(n), S.data(), Vt.data<T>(), ld(n),
                             U.data<T>(), ld(n), &query, -1, iwork.data());
  const auto lwork = static_cast<std::int64_t>(std::max<T>(query, T(1)));
  Scratch<T> work(lwork);
  const blas_int info = cxxlapack::gesdd<blas_int>('S', bi(n), bi(n), work_a.data<T>(), ld(n), S.data(),
                                                   Vt.data<T>(), ld(n), U.data<T>(), ld(n), work.data(), bi(lwork),
                                                   iwork.data());
  if (info != 0) throw_if_not_finite<T>(ctx, A, "A");
  OPFORGE_CHECK(info == 0, ValueError, ctx.op_name(), ": argument 'A': the SVD that the gradient of a singular ",
                "matrix's determinant needs did not converge (LAPACK gesdd info ", info, ") on ", A.describe());
  T sign = c;
  for (const Tensor* q : {&U, &Vt}) {
    Tensor lu = q->clone();
    std::vector<blas_int> piv;
    lu_factor<T>(lu, piv);  // orthogonal: no zero pivot
    sign *= lu_sign<T>(lu, piv);
  }
  // p_i = (S_0 ... S_{i-1}) (S_{i+1} ... S_{n-1}): prefix products, then suffix ones.
  Scratch<T> p(n);
  T run = 1;
  for (std::int64_t i = 0; i < n; ++i) {
    p.data()[i] = run;
    run *= S.data()[i];
  }
  run = 1;
  for (std::int64_t i = n; i-- > 0;) {
    p.data()[i] *= run * sign;
    run *= S.data()[i];
  }
  T* u = U.data<T>();
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j) u[i * n + j] *= p.data()[j];  // U diag(p): [n, n] x [n] -> [n, n]
  gemm<T>(false, false, n, n, n, T(1), u, n, Vt.data<T>(), n, T(0), gA, n);  // [n, n] x [n, n] -> [n, n]
}

// out = A⁻¹ rhs (for_a) or A⁻ᵀ rhs (!for_a), rhs and out [n] or [n, k] row-major,
// with the LU factors of lu_factor. getrs wants the right-hand sides column-major:
// a vector (or k = 1) is that already; [n, k] goes through a transposed copy.
template <class T>
void lu_solve_into(const Tensor& lu, const std::vector<blas_int>& piv, bool for_a, const Tensor& rhs, Tensor& out) {
  const std::int64_t n = rhs.size(0), k = rhs.dim() == 2 ? rhs.size(1) : 1;
  if (k == 1) {
    std::copy(rhs.data<T>(), rhs.data<T>() + n, out.data<T>());
    lu_solve<T>(lu, piv, for_a, out.data<T>(), 1);
    return;
  }
  Scratch<T> cm(n * k);
  transpose_into<T>(rhs.data<T>(), n, k, cm.data());  // [n, k] -> column-major [n, k]
  lu_solve<T>(lu, piv, for_a, cm.data(), k);
  transpose_into<T>(cm.data(), k, n, out.data<T>());  // column-major [n, k] -> [n, k]
}

class Solve final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& A = in[0];
    const Tensor& B = in[1];
    expect_square(ctx, A, "A");
    OPFORGE_CHECK(B.dim() == 1 || B.dim() == 2, ShapeError, ctx.op_name(),
                  ": argument 'B': expected a 1-D [n] or 2-D [n, k] tensor, got ", B.describe());
    OPFORGE_CHECK(B.size(0) == A.size(0), ShapeError, ctx.op_name(), ": argument 'B': expected ", A.size(0),
                  " rows (the size of 'A', of shape ", A.shape(), "), got shape ", B.shape());
    expect_blas_sizes(ctx, B, "B");
    return {sdk::dispatch_floating(A.dtype(), ctx, "A", [&](auto tag) {
      using T = decltype(tag);
      Tensor lu = A.clone();  // getrf overwrites it with the factors
      std::vector<blas_int> piv;
      const blas_int info = lu_factor<T>(lu, piv);
      if (info > 0) throw_singular(ctx, "A", info, kSingularHint);
      Tensor X = Tensor::empty(B.shape(), B.dtype());
      lu_solve_into<T>(lu, piv, true, B, X);  // A⁻¹ B: [n, n] x [n, k] -> [n, k]
      // Both gradients need the LU (gB = A⁻ᵀ G); gA also reads X.
      if (ctx.any_input_needs_grad())
        ctx.save_for_backward({lu, pivots_tensor(piv), ctx.needs_input_grad(0) ? X : Tensor()});
      return X;
    })};
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const TensorList& s = ctx.saved_tensors();  // LU factors [n, n], pivots [n], X (if A needs grad)
    const Tensor G = contiguous(grads[0]);     // [n] or [n, k]
    const std::vector<blas_int> piv = pivots_vector(s[1]);
    Tensor gA, gB;
    sdk::dispatch_floating(G.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      const std::int64_t n = G.size(0), k = G.dim() == 2 ? G.size(1) : 1;
      gB = Tensor::empty(G.shape(), G.dtype());
      lu_solve_into<T>(s[0], piv, false, G, gB);  // gB = A⁻ᵀ G: [n, n] x [n, k] -> [n, k]
      if (ctx.needs_input_grad(0)) {
        gA = Tensor::empty(Dims{n, n}, G.dtype());
        // gA = −gB Xᵀ: [n, k] x [k, n] -> [n, n]
        gemm<T>(false, true, n, n, k, T(-1), gB.data<T>(), k, s[2].data<T>(), k, T(0), gA.data<T>(), n);
      }
    });
    return {gA, ctx.needs_input_grad(1) ? gB : Tensor()};
  }
};

class Inverse final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& A = in[0];
    expect_square(ctx, A, "A");
    return {sdk::dispatch_floating(A.dtype(), ctx, "A", [&](auto tag) {
      using T = decltype(tag);
      Tensor inv = A.clone();
      std::vector<blas_int> piv;
      const blas_int info = lu_factor<T>(inv, piv);
      if (info > 0) throw_singular(ctx, "A", info, kSingularHint);
      lu_inverse<T>(inv, piv);  // the buffer now holds A⁻¹ [n, n]
      if (ctx.any_input_needs_grad()) ctx.save_for_backward({inv});
      return inv;
    })};
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const Tensor& Y = ctx.saved_tensors()[0];  // A⁻¹ [n, n]
    const Tensor G = contiguous(grads[0]);     // [n, n]
    const std::int64_t n = G.size(0);
    Tensor gA = Tensor::empty(Dims{n, n}, G.dtype());
    sdk::dispatch_floating(G.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      Scratch<T> t(n * n);
      // t = G A⁻ᵀ: [n, n] x [n, n] -> [n, n]
      gemm<T>(false, true, n, n, n, T(1), G.data<T>(), n, Y.data<T>(), n, T(0), t.data(), n);
      // gA = −A⁻ᵀ t = −A⁻ᵀ G A⁻ᵀ: [n, n] x [n, n] -> [n, n]
      gemm<T>(true, false, n, n, n, T(-1), Y.data<T>(), n, t.data(), n, T(0), gA.data<T>(), n);
    });
    return {gA};
  }
};

// det and logdet share the LU, and a backward of the form gA = c · A⁻ᵀ.
template <bool kLog>
class Determinant final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& A = in[0];
    expect_square(ctx, A, "A");
    return {sdk::dispatch_floating(A.dtype(), ctx, "A", [&](auto tag) {
      using T = decltype(tag);
      Tensor lu = A.clone();
      // A NaN or an infinity in A: the gradient is NaN (as PyTorch's), through A⁻¹; the
      // adjugate's SVD refuses non-finite input, so backward threw instead.
      const T* a = lu.data<T>();
      bool finite = true;
      for (std::int64_t i = 0, count = lu.numel(); i < count; ++i) finite = finite && std::isfinite(a[i]);
      std::vector<blas_int> piv;
      const blas_int info = lu_factor<T>(lu, piv);
      if (info > 0 && !finite) {  // a zero pivot beside a NaN or an infinity: NaN, not 0 or an error
        const double nan = std::numeric_limits<double>::quiet_NaN();
        if (ctx.any_input_needs_grad()) {
          ctx.save_for_backward({Tensor::full(A.shape(), nan, A.dtype())});  // A⁻¹ and c both NaN
          ctx.save_value(nan);
          ctx.save_int(0);
        }
        return Tensor::scalar(nan, A.dtype());
      }
      if (info > 0) {
        if (kLog)
          throw opforge::ValueError(opforge::detail::concat(
              ctx.op_name(), ": argument 'A': expected a matrix with a positive determinant, got a singular one (pivot ",
              info - 1, " of its LU factorization is exactly 0)"));
        if (ctx.any_input_needs_grad()) {
          ctx.save_for_backward({A});  // backward takes the adjugate through A's SVD
          ctx.save_value(0.0);
          ctx.save_int(1);
        }
        return Tensor::scalar(0.0, A.dtype());
      }
      // det = (−1)^(row swaps) Π_i U[i, i], accumulated in double as a fraction in [1/2, 1) and a
      // power of 2, so that no partial product overflows or underflows when det itself does not
      // (diag(1e200, 1e200, 1e-200, 1e-200) has det 1); logdet = Σ_i log|U[i, i]|.
      // Pivot i (1-based) other than i + 1 is one row swap.
      const std::int64_t n = A.size(0);
      const T* f = lu.data<T>();
      double fraction = 1, log_abs = 0;
      long exponent = 0;
      bool negative = false;
      for (std::int64_t i = 0; i < n; ++i) {
        const double u = f[i * n + i];
        if (piv[static_cast<std::size_t>(i)] != i + 1) negative = !negative;
        if (u < 0) negative = !negative;
        int eu = 0, e = 0;
        fraction = std::frexp(fraction * std::frexp(std::abs(u), &eu), &e);  // the same rounding as product · |u|
        exponent += eu + e;
        log_abs += std::log(std::abs(u));
      }
      const double product =
          std::ldexp(fraction, static_cast<int>(std::clamp<long>(exponent, std::numeric_limits<int>::min() / 2,
                                                                  std::numeric_limits<int>::max() / 2)));
      // A NaN pivot (a NaN in A) leaves the sign meaningless: logdet is NaN, as in PyTorch,
      // wherever the NaN sits (the sign of the pivots around it decided between NaN and a
      // "negative determinant" error).
      if (kLog && !std::isnan(log_abs))
        OPFORGE_CHECK(!negative, ValueError, ctx.op_name(),
                      ": argument 'A': expected a matrix with a positive determinant, got a negative determinant "
                      "(log|det(A)| = ", log_abs, ")");
      Tensor out = Tensor::scalar(kLog ? log_abs : (negative ? -product : product), A.dtype());
      if (!kLog && ctx.any_input_needs_grad() && finite && !(out.item() != 0 && std::isfinite(out.item()))) {
        // det overflowed or underflowed in the dtype: det · A⁻ᵀ would be inf · 0 or 0 · inf
        // (diag(1e200, 1e200) gave [inf, nan; nan, inf] for diag(1e200, 1e200)); the
        // adjugate's products leave out one singular value each, and stay finite.
        ctx.save_for_backward({A});
        ctx.save_value(0.0);
        ctx.save_int(1);
      } else if (ctx.any_input_needs_grad()) {
        // gA = c · A⁻ᵀ with c = g · det (det) or g (logdet): keep A⁻¹ and det.
        lu_inverse<T>(lu, piv);  // the buffer now holds A⁻¹ [n, n]
        ctx.save_for_backward({lu});
        ctx.save_value(kLog ? 1.0 : out.item());
        ctx.save_int(0);
      }
      return out;
    })};
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const Tensor& inv = ctx.saved_tensors()[0];  // A⁻¹ [n, n], or A when it is singular
    const std::int64_t n = inv.size(0);
    Tensor gA = Tensor::empty(Dims{n, n}, inv.dtype());
    sdk::dispatch_floating(inv.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      if (ctx.saved_int(0) == 1) {  // det of a singular A, or one out of the dtype's range: g · adj(A)ᵀ
        adjugate_t_into<T>(ctx, inv, static_cast<T>(grads[0].item()), gA.data<T>());
        return;
      }
      const T c = static_cast<T>(grads[0].item() * ctx.saved_value(0));  // g · det, or g: []
      transpose_into<T>(inv.data<T>(), n, n, gA.data<T>());              // A⁻ᵀ: [n, n]
      scaled_copy<T>(gA.data<T>(), c, n * n, gA.data<T>());             // c · A⁻ᵀ: [] x [n, n] -> [n, n]
    });
    return {gA};
  }

};

class LstsqSolve final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& A = in[0];
    const Tensor& y = in[1];
    sdk::expect_rank(ctx, A, "A", 2);
    sdk::expect_rank(ctx, y, "y", 1);
    const std::int64_t m = A.size(0), n = A.size(1);
    OPFORGE_CHECK(m >= n, ShapeError, ctx.op_name(),
                  ": argument 'A': expected at least as many rows as columns (m >= n, for full column rank), got ",
                  A.describe());
    sdk::expect_shape(ctx, y, "y", Dims{m}, "the number of rows of 'A'");
    expect_blas_sizes(ctx, A, "A");
    const double rcond_attr = ctx.attr_float(0);
    OPFORGE_CHECK(rcond_attr < 0 || (std::isfinite(rcond_attr) && rcond_attr < 1), ValueError, ctx.op_name(),
                  ": attribute 'rcond': expected a number in [0, 1) (or a negative one for the default, "
                  "max(m, n)·ε of the dtype), got ", rcond_attr);
    return {sdk::dispatch_floating(A.dtype(), ctx, "A", [&](auto tag) {
      using T = decltype(tag);
      // A column-major (a copy: contiguous() may alias A); geqrf leaves R on top and
      // the reflectors of Q below it.
      Tensor work = A.transpose(0, 1).clone();
      std::vector<T> tau;
      qr_factor_column_major<T>(work.data<T>(), m, n, tau);  // A = Q R
      Tensor Rt = Tensor::zeros(Dims{n, n}, A.dtype());     // R alone [n, n], row-major
      T* pr = Rt.data<T>();
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = i; j < n; ++j) pr[i * n + j] = work.data<T>()[i + j * m];
      const T* R = pr;  // [n, n] upper, leading dimension n
      double rmax = 0;
      for (std::int64_t i = 0; i < n; ++i) rmax = std::max(rmax, std::abs(static_cast<double>(R[i * n + i])));
      const bool by_default = rcond_attr < 0;
      const double rcond =
          by_default ? static_cast<double>(std::max(m, n)) * std::numeric_limits<T>::epsilon() : rcond_attr;
      for (std::int64_t i = 0; i < n; ++i) {
        const double rii = std::abs(static_cast<double>(R[i * n + i]));
        if (rii > rcond * rmax) continue;
        throw_if_not_finite<T>(ctx, A, "A");  // NaN fails the test above too
        throw opforge::ValueError(opforge::detail::concat(
            ctx.op_name(), ": argument 'A': expected full column rank, got a rank-deficient matrix (column ", i,
            i == 0 ? " is zero" : " is a combination of the columns before it", ", to rounding: in its QR "
            "factorization A = Q R, |R[", i, ", ", i, "]| = ", rmax > 0 ? rii / rmax : 0.0,
            "·max_j |R[j, j]|, at most rcond = ", rcond,
            by_default ? ", the default max(m, n)·ε" : "", "); if A is only ill-conditioned, pass a smaller "
            "'rcond'", std::is_same_v<T, float> ? " or solve in float64" : ""));
      }
      // An unpivoted R's diagonal does not reveal every rank deficiency (Kahan's matrix:
      // condition ~1e17, smallest |R[i, i]| 1e-3 of the largest): its condition number
      // does. LAPACK's estimate, O(n²) after the O(m n²) factorization.
      const double rc = triangular_rcond<T>(R, n);
      if (!(rc > rcond)) {
        throw_if_not_finite<T>(ctx, A, "A");
        throw opforge::ValueError(opforge::detail::concat(
            ctx.op_name(), ": argument 'A': expected full column rank, got a rank-deficient matrix (to rounding: "
            "its reciprocal condition number, estimated from its QR factorization A = Q R as 1/(‖R‖₁‖R⁻¹‖₁), is ",
            rc, ", at most rcond = ", rcond, by_default ? ", the default max(m, n)·ε" : "",
            "); if A is only ill-conditioned, pass a smaller 'rcond'",
            std::is_same_v<T, float> ? " or solve in float64" : ""));
      }
      Scratch<T> qty(y.data<T>(), m);
      qr_apply_qt<T>(work.data<T>(), m, n, tau, qty.data());  // Qᵀ y: [n, m] x [m] -> [n] (first n entries)
      trsm<T>(true, true, false, n, 1, T(1), R, n, qty.data(), 1);  // x = R⁻¹ Qᵀ y: [n, n]⁻¹ x [n] -> [n]
      Tensor x = Tensor::empty(Dims{n}, A.dtype());
      std::copy(qty.data(), qty.data() + n, x.data<T>());
      if (ctx.any_input_needs_grad()) {
        // Slot 0: A, 1: R, 2: x (if A needs grad), 3: y (if A needs grad).
        const bool a_grad = ctx.needs_input_grad(0);
        ctx.save_for_backward({A, Rt, a_grad ? x : Tensor(), a_grad ? y : Tensor()});
      }
      return x;
    })};
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const TensorList& s = ctx.saved_tensors();  // A [m, n], R [n, n], x [n], y [m]
    const Tensor g = contiguous(grads[0]);     // [n]
    const Tensor& A = s[0];
    const std::int64_t m = A.size(0), n = A.size(1);
    Tensor gA, gy = Tensor::empty(Dims{m}, g.dtype());
    sdk::dispatch_floating(g.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      const T* pA = A.data<T>();
      const T* R = s[1].data<T>();
      Scratch<T> z(g.data<T>(), n);                                  // g [n]
      trsm<T>(true, true, true, n, 1, T(1), R, n, z.data(), 1);      // R⁻ᵀ g: [n, n]⁻ᵀ x [n] -> [n]
      trsm<T>(true, true, false, n, 1, T(1), R, n, z.data(), 1);     // z = R⁻¹ R⁻ᵀ g = (AᵀA)⁻¹ g: [n]
      gemv<T>(false, m, n, T(1), pA, z.data(), T(0), gy.data<T>());  // gy = A z: [m, n] x [n] -> [m]
      if (!ctx.needs_input_grad(0)) return;
      const T* x = s[2].data<T>();
      Scratch<T> r(s[3].data<T>(), m);                             // y [m]
      gemv<T>(false, m, n, T(-1), pA, x, T(1), r.data());           // r = y − A x: [m] − [m, n] x [n] -> [m]
      gA = Tensor::empty(Dims{m, n}, g.dtype());
      T* pg = gA.data<T>();
      const T* pgy = gy.data<T>();
      const std::int64_t grain = std::max<std::int64_t>(1, sdk::kElementwiseGrain / std::max<std::int64_t>(n, 1));
      sdk::parallel_for(0, m, grain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          const T ri = r[i], gi = pgy[i];
          T* row = pg + i * n;
          // gA = r zᵀ − gy xᵀ: [m] x [n] − [m] x [n] -> [m, n]
          for (std::int64_t j = 0; j < n; ++j) row[j] = ri * z[j] - gi * x[j];
        }
      });
    });
    return {gA, ctx.needs_input_grad(1) ? gy : Tensor()};
  }
};

// ---- sample inputs for the harness ------------------------------------------------------

// randn [n, n] + n·I: eigenvalues within about √n of n, so well away from singular
// and (for these sizes) with a positive determinant.
Tensor shifted_randn(std::int64_t n, opforge::DType dtype, std::uint64_t seed) {
  std::vector<double> v = Tensor::randn({n, n}, opforge::DType::Float64, seed).to_vector();
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i * n + i)] += static_cast<double>(n);
  return Tensor::from_values(v, {n, n}, dtype);
}

// solve: A [4, 4] = randn + 4·I, B [4, 2].
TensorList solve_samples(opforge::DType dtype, std::uint64_t seed) {
  return {shifted_randn(4, dtype, seed), Tensor::randn({4, 2}, dtype, seed + 1)};
}
// inverse, det, logdet: A [4, 4] = randn + 4·I.
TensorList square_samples(opforge::DType dtype, std::uint64_t seed) { return {shifted_randn(4, dtype, seed)}; }
// lstsq_solve: A [6, 3], y [6].
TensorList lstsq_samples(opforge::DType dtype, std::uint64_t seed) {
  return {Tensor::randn({6, 3}, dtype, seed), Tensor::randn({6}, dtype, seed + 1)};
}

}  // namespace

namespace opforge_ops::linalg {

void register_solvers(opforge::PluginRegistrar& registrar) {
  using opforge::AttrKind;
  using opforge::OpSchema;
  registrar.add<Solve>(OpSchema("linalg.solve")
                           .input_names({"A", "B"})
                           .describe("X = A⁻¹ B: A [n, n], B [n] or [n, k] (LU with partial pivoting)")
                           .samples(solve_samples));
  registrar.add<Inverse>(OpSchema("linalg.inverse")
                             .input_names({"A"})
                             .describe("A⁻¹ of a square non-singular matrix [n, n]")
                             .samples(square_samples));
  registrar.add<Determinant<false>>(OpSchema("linalg.det")
                                        .input_names({"A"})
                                        .describe("det(A) of a square matrix [n, n] -> 0-d")
                                        .samples(square_samples));
  registrar.add<Determinant<true>>(OpSchema("linalg.logdet")
                                       .input_names({"A"})
                                       .describe("log det(A) of a square matrix [n, n] with det(A) > 0 -> 0-d")
                                       .samples(square_samples));
  registrar.add<LstsqSolve>(OpSchema("linalg.lstsq_solve")
                                .input_names({"A", "y"})
                                .attr("rcond", AttrKind::Float, opforge::Attr(-1.0),
                                      "A is refused as rank-deficient where some |R[i, i]| <= rcond·max_j |R[j, j]| "
                                      "in its QR; negative: max(m, n)·ε of the dtype")
                                .describe("argmin_x ||y − A x||²: A [m, n] of full column rank (m >= n), y [m] -> [n]")
                                .samples(lstsq_samples));
}

}  // namespace opforge_ops::linalg
