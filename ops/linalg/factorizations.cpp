// linalg factorizations: Cholesky, QR and SVD, through LAPACK (OpenBLAS) called
// via xtensor-blas' cxxlapack bindings (potrf, geqrf + orgqr, gesdd; see
// linalg_common.hpp for why this layer and for the row-major/column-major trick).
//
//   cholesky(A) = L, lower with a positive diagonal, L Lᵀ = sym(A) = ½(A + Aᵀ)
//                 A [n, n] symmetric positive-definite -> L [n, n]. The op reads the
//                 symmetric part of A, so its gradient is symmetric and is the true
//                 derivative for every element of A.
//     Backward (I. Murray, "Differentiation of the Cholesky decomposition",
//     arXiv:1602.07527, 2016; the form PyTorch's cholesky_backward uses), with
//     Φ(X) = the lower triangle of X with its diagonal halved:
//                 P  = Lᵀ Ḡ                                [n, n] x [n, n] -> [n, n]
//                 S  = L⁻ᵀ Φ(P) L⁻¹      (gradient with respect to sym(A))
//                 gA = ½(S + Sᵀ) = ½ L⁻ᵀ (Φ(P) + Φ(P)ᵀ) L⁻¹   (two triangular solves)
//
//   qr(A) = (Q, R), reduced: A [m, n], k = min(m, n) -> Q [m, k] with QᵀQ = I, R [k, n]
//                 upper (trapezoidal for m < n) with R[i, i] >= 0 (signs fixed so the
//                 factorization is unique for full rank).
//     Backward for m >= n (e.g. Walter & Lehmann 2018; Liao et al. 2019; PyTorch's
//     linalg_qr_backward), with copyutl(M) the symmetric matrix with M's upper triangle:
//                 M  = Ḡ_R Rᵀ − Qᵀ Ḡ_Q                      [n, n]
//                 gA = (Ḡ_Q + Q copyutl(M)) R⁻ᵀ             [m, n] (a triangular solve)
//     It needs R invertible (full column rank): refused in backward when a diagonal
//     entry |R[i, i]| is at most tol·max_j |R[j, j]| (attribute 'tol'; negative, the
//     default: max(m, n)·ε, NumPy's matrix_rank tolerance), where A is numerically
//     rank-deficient and R⁻ᵀ would turn rounding into gradients of 1e14 and more.
//     For m < n, A = [X | Y] with X [m, m] and R = [U | V]: X = Q U is a square QR and
//     Y = Q V, so (as PyTorch) gY = Q Ḡ_V and gX is the square case's formula with
//     Ḡ_Q + Y Ḡ_Vᵀ = Ḡ_Q + Q V Ḡ_Vᵀ in place of Ḡ_Q; it needs U invertible.
//
//   svd(A) = (U, S, Vᵀ), reduced: A [m, n], k = min(m, n) -> U [m, k], S [k]
//                 (descending, >= 0), Vᵀ [k, n], A = U diag(S) Vᵀ. Each singular pair's
//                 sign is fixed so that the largest |entry| of U's column is positive.
//     Backward (J. Townsend, "Differentiating the Singular Value Decomposition", 2016),
//     with F[i, j] = 1 / (s_j² − s_i²) for i != j, 0 on the diagonal:
//                 J  = F ∘ (Uᵀ Ū − Ūᵀ U)                    [k, k]
//                 K  = F ∘ (Vᵀ V̄ − V̄ᵀ V)                    [k, k]
//                 gA = U (J S + S K + diag(S̄)) Vᵀ           [m, n]
//                    + (I − U Uᵀ) Ū S⁻¹ Vᵀ                  (only when m > k)
//                    + U S⁻¹ V̄ᵀ (I − V Vᵀ)                  (only when n > k)
//     When only S receives a gradient (Ū and V̄ are zero), gA = U diag(S̄) Vᵀ, defined
//     for any A. The gradient of U and V is undefined for repeated singular values
//     (F blows up: the singular vectors of a repeated value are any rotation of each
//     other): when Ū or V̄ is nonzero, backward raises an error if two singular values
//     are closer than tol·S[0] (attribute 'tol'; negative, the default: √ε of the
//     dtype), or, for m != n, if the smallest one is (S⁻¹).
#include "linalg_common.hpp"

namespace {

using namespace opforge_ops::linalg;  // NOLINT: this plugin's own helpers

// ½(a + b) that does not overflow where a + b would (entries over half the dtype's
// largest: cholesky of diag(1.5e308) gave inf); exact for a == b, the symmetric case.
template <class T>
T half_sum(T a, T b) {
  return a == b ? a : T(0.5) * a + T(0.5) * b;
}

class Cholesky final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& A = in[0];
    expect_square(ctx, A, "A");
    const std::int64_t n = A.size(0);
    return {sdk::dispatch_floating(A.dtype(), ctx, "A", [&](auto tag) {
      using T = decltype(tag);
      Tensor L = Tensor::empty(Dims{n, n}, A.dtype());
      const T* a = A.data<T>();
      T* l = L.data<T>();
      for_rows(n, n, [&](std::int64_t i) {  // sym(A) = ½(A + Aᵀ): [n, n]
        for (std::int64_t j = 0; j < n; ++j) l[i * n + j] = half_sum(a[i * n + j], a[j * n + i]);
      });
      if (n > 0) {
        // potrf('U') on the symmetric buffer: S = Uᵀ U column-major, i.e. L = Uᵀ row-major.
        const blas_int info = cxxlapack::potrf<blas_int>('U', bi(n), l, ld(n));
        if (info != 0) throw_if_not_finite<T>(ctx, A, "A");
        OPFORGE_CHECK(info == 0, ValueError, ctx.op_name(),
                      ": argument 'A': expected a symmetric positive-definite matrix, got one that is not (its "
                      "leading minor of order ", info, " is not positive definite)");
      }
      for_rows(n, n, [&](std::int64_t i) {  // the strictly upper part still holds sym(A): clear it
        std::fill(l + i * n + i + 1, l + (i + 1) * n, T(0));
      });
      if (ctx.any_input_needs_grad()) ctx.save_for_backward({L});
      return L;
    })};
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const Tensor& L = ctx.saved_tensors()[0];  // [n, n] lower
    const Tensor G = contiguous(grads[0]);    // Ḡ [n, n]
    const std::int64_t n = L.size(0);
    Tensor gA = Tensor::empty(Dims{n, n}, G.dtype());
    sdk::dispatch_floating(G.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      const T* l = L.data<T>();
      Scratch<T> P(n * n), W(n * n);  // P: gemm with beta 0; W: every element written
      // P = Lᵀ Ḡ: [n, n] x [n, n] -> [n, n]
      gemm<T>(true, false, n, n, n, T(1), l, n, G.data<T>(), n, T(0), P.data(), n);
      // W = Φ(P) + Φ(P)ᵀ: P's lower triangle mirrored, diagonal kept once: [n, n]
      for_rows(n, n, [&](std::int64_t i) {
        for (std::int64_t j = 0; j < n; ++j) W[i * n + j] = i >= j ? P[i * n + j] : P[j * n + i];
      });
      // W = ½ L⁻ᵀ W: [n, n]⁻ᵀ x [n, n] -> [n, n]
      trsm<T>(true, false, true, n, n, T(0.5), l, n, W.data(), n);
      // W = W L⁻¹: [n, n] x [n, n]⁻¹ -> [n, n]  (= ½(S + Sᵀ), symmetric up to rounding)
      trsm<T>(false, false, false, n, n, T(1), l, n, W.data(), n);
      T* g = gA.data<T>();
      for_rows(n, n, [&](std::int64_t i) {  // gA = ½(W + Wᵀ): exactly symmetric [n, n]
        for (std::int64_t j = 0; j < n; ++j) g[i * n + j] = half_sum(W[i * n + j], W[j * n + i]);
      });
    });
    return {gA};
  }
};

class Qr final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& A = in[0];
    sdk::expect_rank(ctx, A, "A", 2);
    const std::int64_t m = A.size(0), n = A.size(1), k = std::min(m, n);
    expect_blas_sizes(ctx, A, "A");
    const double tol_attr = ctx.attr_float(0);
    OPFORGE_CHECK(tol_attr < 0 || std::isfinite(tol_attr), ValueError, ctx.op_name(),
                  ": attribute 'tol': expected a finite number (or a negative one for the default, max(m, n) times "
                  "the dtype's epsilon), got ", tol_attr);
    TensorList out = sdk::dispatch_floating(A.dtype(), ctx, "A", [&](auto tag) {
      using T = decltype(tag);
      Tensor work = A.transpose(0, 1).clone();  // A column-major (a copy: contiguous() may alias A); becomes Q
      Tensor R = Tensor::zeros(Dims{k, n}, A.dtype());
      T* r = R.data<T>();
      qr_column_major<T>(work.data<T>(), m, n, r);  // A = Q R
      Tensor Q = Tensor::empty(Dims{m, k}, A.dtype());
      T* q = Q.data<T>();
      transpose_into<T>(work.data<T>(), k, m, q);  // Q's k columns, column-major: [k, m] -> [m, k]
      // Unique signs: R[j, j] >= 0 (negate row j of R and column j of Q together).
      for (std::int64_t j = 0; j < k; ++j) {
        if (!(r[j * n + j] < T(0))) continue;
        for (std::int64_t c = j; c < n; ++c) r[j * n + c] = -r[j * n + c];
        for (std::int64_t i = 0; i < m; ++i) q[i * k + j] = -q[i * k + j];
      }
      return TensorList{Q, R};
    });
    if (ctx.any_input_needs_grad()) {
      ctx.save_for_backward({out[0], out[1]});
      const double eps = A.dtype() == opforge::DType::Float32 ? std::numeric_limits<float>::epsilon()
                                                               : std::numeric_limits<double>::epsilon();
      ctx.save_value(tol_attr < 0 ? static_cast<double>(std::max(m, n)) * eps : tol_attr);
    }
    return out;
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const TensorList& s = ctx.saved_tensors();  // Q [m, k], R [k, n], k = min(m, n)
    const Tensor& Q = s[0];
    const Tensor& R = s[1];
    const Tensor gQ = contiguous(grads[0]);  // Ḡ_Q [m, k]
    const Tensor gR = contiguous(grads[1]);  // Ḡ_R [k, n]
    const std::int64_t m = Q.size(0), k = Q.size(1), n = R.size(1);
    Tensor gA = Tensor::empty(Dims{m, n}, gQ.dtype());
    sdk::dispatch_floating(gQ.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      const T* q = Q.data<T>();
      const T* r = R.data<T>();  // U = R[:, :k] (leading dimension n), V = R[:, k:] (wide A)
      const T* gr = gR.data<T>();
      T* g = gA.data<T>();
      const double tol = ctx.saved_value(0);
      double largest = 0;  // max |R[j, j]|: R's diagonal is >= 0 (or NaN)
      for (std::int64_t j = 0; j < k; ++j) largest = std::max(largest, static_cast<double>(r[j * n + j]));
      const double limit = tol * largest;
      for (std::int64_t i = 0; i < k; ++i) {
        const double d = r[i * n + i];
        OPFORGE_CHECK(!(d <= limit), ValueError, ctx.op_name(), ": the gradient of the QR factorization needs ",
                      m >= n ? "A of full column rank" : "the first m columns of A of full rank", ", got R[", i, ", ",
                      i, "] = ", d, " <= tol·max|R[j, j]| = ", limit, " (tol = ", tol,
                      ", attribute 'tol'): A is numerically rank-deficient");
      }
      // Ḡ_Q' = Ḡ_Q, or for a wide A = [X | Y] (X = Q U, Y = Q V) Ḡ_Q + Y Ḡ_Vᵀ = Ḡ_Q + Q (V Ḡ_Vᵀ).
      Scratch<T> gq(gQ.data<T>(), m * k);  // [m, k]
      if (n > k) {
        Scratch<T> W(k * k);
        // W = V Ḡ_Vᵀ: [k, n − k] x [n − k, k] -> [k, k]
        gemm<T>(false, true, k, k, n - k, T(1), r + k, n, gr + k, n, T(0), W.data(), k);
        // Ḡ_Q' += Q W: [m, k] x [k, k] -> [m, k]
        gemm<T>(false, false, m, k, k, T(1), q, k, W.data(), k, T(1), gq.data(), k);
        // g[:, k:] = Q Ḡ_V: [m, k] x [k, n − k] -> [m, n − k]
        gemm<T>(false, false, m, n - k, k, T(1), q, k, gr + k, n, T(0), g + k, n);
      }
      // The square or tall part, on X = Q U: M = Ḡ_U Uᵀ − Qᵀ Ḡ_Q'.
      Scratch<T> M(k * k);  // written whole by the first gemm (beta 0)
      // M = Ḡ_U Uᵀ: [k, k] x [k, k] -> [k, k]
      gemm<T>(false, true, k, k, k, T(1), gr, n, r, n, T(0), M.data(), k);
      // M −= Qᵀ Ḡ_Q': [k, m] x [m, k] -> [k, k]
      gemm<T>(true, false, k, k, m, T(-1), q, k, gq.data(), k, T(1), M.data(), k);
      // M = copyutl(M): the upper triangle mirrored into the lower: [k, k]
      for_rows(k, k, [&](std::int64_t i) {
        for (std::int64_t j = 0; j < i; ++j) M[i * k + j] = M[j * k + i];
      });
      // g[:, :k] = Ḡ_Q' + Q M: [m, k] x [k, k] -> [m, k]
      for (std::int64_t i = 0; i < m; ++i) std::copy(gq.data() + i * k, gq.data() + (i + 1) * k, g + i * n);
      gemm<T>(false, false, m, k, k, T(1), q, k, M.data(), k, T(1), g, n);
      // g[:, :k] = g[:, :k] U⁻ᵀ: [m, k] x [k, k]⁻ᵀ -> [m, k]
      trsm<T>(false, true, true, m, k, T(1), r, n, g, n);
    });
    return {gA};
  }
};

class Svd final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& A = in[0];
    sdk::expect_rank(ctx, A, "A", 2);
    expect_blas_sizes(ctx, A, "A");
    const std::int64_t m = A.size(0), n = A.size(1), k = std::min(m, n);
    const double tol_attr = ctx.attr_float(0);
    // Checked here, not first in backward, where NaN or +inf would refuse every gradient
    // as if two singular values were equal.
    OPFORGE_CHECK(tol_attr < 0 || std::isfinite(tol_attr), ValueError, ctx.op_name(),
                  ": attribute 'tol': expected a finite number (or a negative one for the default, the square root "
                  "of the dtype's epsilon), got ", tol_attr);
    TensorList out = sdk::dispatch_floating(A.dtype(), ctx, "A", [&](auto tag) {
      using T = decltype(tag);
      Tensor U = Tensor::empty(Dims{m, k}, A.dtype());
      Tensor S = Tensor::empty(Dims{k}, A.dtype());
      Tensor Vt = Tensor::empty(Dims{k, n}, A.dtype());
      if (k == 0) return TensorList{U, S, Vt};
      Tensor work_a = A.clone();  // gesdd destroys its input
      // gesdd refuses NaN (info -4) but returns NaN for an infinity: name either first,
      // in one pass over A, small beside the SVD's O(m n k). (The copy has A's shape and dtype.)
      throw_if_not_finite<T>(ctx, work_a, "A");
      T* u = U.data<T>();
      T* vt = Vt.data<T>();
      // The buffer is Aᵀ [n, m] column-major: Aᵀ = U' S V'ᵀ, so A = V' S U'ᵀ. U' [n, k]
      // column-major is Vᵀ [k, n] row-major, V'ᵀ [k, m] column-major is U [m, k] row-major.
      std::vector<blas_int> iwork(static_cast<std::size_t>(8 * k));
      T query = 0;
      cxxlapack::gesdd<blas_int>('S', bi(n), bi(m), work_a.data<T>(), ld(n), S.data<T>(), vt, ld(n), u, ld(k),
                                 &query, -1, iwork.data());
      // A tensor, not a std::vector: no zero fill, and a block of that size is
      // reused from call to call instead of coming back as fresh pages.
      const auto lwork = static_cast<std::int64_t>(std::max<T>(query, T(1)));
      Tensor work = Tensor::empty(Dims{lwork}, A.dtype());
      const blas_int info =
          cxxlapack::gesdd<blas_int>('S', bi(n), bi(m), work_a.data<T>(), ld(n), S.data<T>(), vt, ld(n), u, ld(k),
                                     work.data<T>(), bi(lwork), iwork.data());
      OPFORGE_CHECK(info == 0, ValueError, ctx.op_name(), ": argument 'A': the SVD did not converge (LAPACK gesdd info ",
                    info, ") on ", A.describe());
      // Signs: the largest |entry| of each column of U positive (the first one on a tie).
      for (std::int64_t c = 0; c < k; ++c) {
        std::int64_t best = 0;
        for (std::int64_t i = 1; i < m; ++i)
          if (std::abs(u[i * k + c]) > std::abs(u[best * k + c])) best = i;
        if (!(u[best * k + c] < T(0))) continue;
        for (std::int64_t i = 0; i < m; ++i) u[i * k + c] = -u[i * k + c];
        for (std::int64_t j = 0; j < n; ++j) vt[c * n + j] = -vt[c * n + j];
      }
      return TensorList{U, S, Vt};
    });
    if (ctx.any_input_needs_grad()) {
      ctx.save_for_backward({out[0], out[1], out[2]});
      const double eps = A.dtype() == opforge::DType::Float32 ? std::numeric_limits<float>::epsilon()
                                                               : std::numeric_limits<double>::epsilon();
      ctx.save_value(tol_attr < 0 ? std::sqrt(eps) : tol_attr);
    }
    return out;
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const TensorList& s = ctx.saved_tensors();  // U [m, k], S [k], Vᵀ [k, n]
    const Tensor& U = s[0];
    const Tensor& S = s[1];
    const Tensor& Vt = s[2];
    const Tensor gU = contiguous(grads[0]);   // Ū [m, k]
    const Tensor gS = contiguous(grads[1]);   // S̄ [k]
    const Tensor gVt = contiguous(grads[2]);  // V̄ᵀ [k, n] (the gradient of Vᵀ)
    const std::int64_t m = U.size(0), k = U.size(1), n = Vt.size(1);
    Tensor gA = Tensor::empty(Dims{m, n}, gU.dtype());
    sdk::dispatch_floating(gU.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      const T* u = U.data<T>();
      const T* sv = S.data<T>();
      const T* vt = Vt.data<T>();
      const T* gs = gS.data<T>();
      T* g = gA.data<T>();
      if (all_zero<T>(gU) && all_zero<T>(gVt)) {
        // S alone: gA = U diag(S̄) Vᵀ
        Scratch<T> us(m * k);  // every element written
        for_rows(m, k, [&](std::int64_t i) {  // U diag(S̄): [m, k]
          for (std::int64_t c = 0; c < k; ++c) us[i * k + c] = u[i * k + c] * gs[c];
        });
        gemm<T>(false, false, m, n, k, T(1), us.data(), k, vt, n, T(0), g, n);  // [m, k] x [k, n] -> [m, n]
        return;
      }
      check_gaps(ctx, sv, k, m != n);
      const T* gu = gU.data<T>();
      const T* gvt = gVt.data<T>();
      Scratch<T> utgu(k * k), vtgv(k * k), core(k * k);  // gemms with beta 0; core written whole
      // Uᵀ Ū: [k, m] x [m, k] -> [k, k]
      gemm<T>(true, false, k, k, m, T(1), u, k, gu, k, T(0), utgu.data(), k);
      // Vᵀ V̄ = Vᵀ (V̄ᵀ)ᵀ: [k, n] x [n, k] -> [k, k]
      gemm<T>(false, true, k, k, n, T(1), vt, n, gvt, n, T(0), vtgv.data(), k);
      // core = J S + S K + diag(S̄): [k, k], J = F ∘ (UᵀŪ − ŪᵀU), K = F ∘ (VᵀV̄ − V̄ᵀV)
      for_rows(k, k, [&](std::int64_t i) {
        for (std::int64_t j = 0; j < k; ++j) {
          const T f = i == j ? T(0) : T(1) / (sv[j] * sv[j] - sv[i] * sv[i]);  // F[i, j]
          const T jij = f * (utgu[i * k + j] - utgu[j * k + i]);                 // J[i, j]
          const T kij = f * (vtgv[i * k + j] - vtgv[j * k + i]);                 // K[i, j]
          core[i * k + j] = jij * sv[j] + sv[i] * kij;                           // (J S + S K)[i, j]
        }
        core[i * k + i] = gs[i];  // + diag(S̄) (J and K vanish on the diagonal)
      });
      Scratch<T> x(k * n);  // gemm with beta 0
      // X = core Vᵀ: [k, k] x [k, n] -> [k, n]
      gemm<T>(false, false, k, n, k, T(1), core.data(), k, vt, n, T(0), x.data(), n);
      if (n > k) {
        Scratch<T> p(gvt, k * n);  // V̄ᵀ [k, n]
        // P = V̄ᵀ − (VᵀV̄)ᵀ Vᵀ = V̄ᵀ (I − V Vᵀ): [k, n] − [k, k] x [k, n] -> [k, n]
        gemm<T>(true, false, k, n, k, T(-1), vtgv.data(), k, vt, n, T(1), p.data(), n);
        for_rows(k, n, [&](std::int64_t i) {  // X += S⁻¹ P: [k, n]
          const T inv = T(1) / sv[i];
          for (std::int64_t j = 0; j < n; ++j) x[i * n + j] += p[i * n + j] * inv;
        });
      }
      // gA = U X: [m, k] x [k, n] -> [m, n]
      gemm<T>(false, false, m, n, k, T(1), u, k, x.data(), n, T(0), g, n);
      if (m > k) {
        Scratch<T> q(gu, m * k);  // Ū [m, k]
        // Q = Ū − U (UᵀŪ) = (I − U Uᵀ) Ū: [m, k] − [m, k] x [k, k] -> [m, k]
        gemm<T>(false, false, m, k, k, T(-1), u, k, utgu.data(), k, T(1), q.data(), k);
        for_rows(m, k, [&](std::int64_t i) {  // Q S⁻¹: [m, k]
          for (std::int64_t c = 0; c < k; ++c) q[i * k + c] /= sv[c];
        });
        // gA += Q Vᵀ: [m, k] x [k, n] -> [m, n]
        gemm<T>(false, false, m, n, k, T(1), q.data(), k, vt, n, T(1), g, n);
      }
    });
    return {gA};
  }

 private:
  // F needs distinct singular values; S⁻¹ (m != n) a nonzero smallest one.
  template <class T>
  static void check_gaps(const Context& ctx, const T* sv, std::int64_t k, bool rectangular) {
    const double tol = ctx.saved_value(0);
    const double limit = tol * static_cast<double>(sv[0]);
    for (std::int64_t i = 0; i + 1 < k; ++i)
      OPFORGE_CHECK(static_cast<double>(sv[i]) - static_cast<double>(sv[i + 1]) > limit, ValueError, ctx.op_name(),
                    ": the gradient with respect to U and Vᵀ is undefined for repeated singular values, got S[", i,
                    "] = ", sv[i], " and S[", i + 1, "] = ", sv[i + 1], " closer than tol·S[0] = ", limit,
                    " (tol = ", tol, ", attribute 'tol'); a gradient of S alone is defined");
    if (rectangular && k > 0)
      OPFORGE_CHECK(static_cast<double>(sv[k - 1]) > limit, ValueError, ctx.op_name(),
                    ": the gradient with respect to U and Vᵀ of a non-square matrix needs nonzero singular values, "
                    "got S[", k - 1, "] = ", sv[k - 1], " <= tol·S[0] = ", limit, " (tol = ", tol,
                    ", attribute 'tol'); a gradient of S alone is defined");
  }
};

// ---- sample inputs for the harness ------------------------------------------------------

// cholesky: A = X Xᵀ + 4·I [4, 4], symmetric positive-definite, well conditioned.
TensorList cholesky_samples(opforge::DType dtype, std::uint64_t seed) {
  const std::int64_t n = 4;
  const std::vector<double> x = Tensor::randn({n, n}, opforge::DType::Float64, seed).to_vector();
  std::vector<double> a(static_cast<std::size_t>(n * n), 0.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double acc = i == j ? static_cast<double>(n) : 0.0;
      for (std::int64_t p = 0; p < n; ++p) acc += x[i * n + p] * x[j * n + p];
      a[i * n + j] = acc;
    }
  return {Tensor::from_values(a, {n, n}, dtype)};
}
// qr: A [5, 3].
TensorList qr_samples(opforge::DType dtype, std::uint64_t seed) { return {Tensor::randn({5, 3}, dtype, seed)}; }
// svd: A [5, 3] = diag(4, 2.5, 1) + 0.1·randn: singular values near 4, 2.5 and 1,
// well apart, so the U and V gradients are well conditioned.
TensorList svd_samples(opforge::DType dtype, std::uint64_t seed) {
  std::vector<double> a = Tensor::randn({5, 3}, opforge::DType::Float64, seed).to_vector();
  for (double& v : a) v *= 0.1;
  const double d[3] = {4.0, 2.5, 1.0};
  for (int i = 0; i < 3; ++i) a[static_cast<std::size_t>(i * 3 + i)] += d[i];
  return {Tensor::from_values(a, {5, 3}, dtype)};
}

}  // namespace

namespace opforge_ops::linalg {

void register_factorizations(opforge::PluginRegistrar& registrar) {
  using opforge::AttrKind;
  using opforge::OpSchema;
  registrar.add<Cholesky>(OpSchema("linalg.cholesky")
                              .input_names({"A"})
                              .describe("L lower with L Lᵀ = ½(A + Aᵀ): A [n, n] symmetric positive-definite")
                              .samples(cholesky_samples));
  registrar.add<Qr>(OpSchema("linalg.qr")
                        .input_names({"A"})
                        .outputs(2)
                        .attr("tol", AttrKind::Float, opforge::Attr(-1.0),
                              "the gradient is refused when a diagonal entry |R[i, i]| is at most tol·max|R[j, j]| "
                              "(A numerically rank-deficient); negative: max(m, n) times the dtype's epsilon")
                        .describe("reduced QR, A = Q R: A [m, n], k = min(m, n) -> Q [m, k], R [k, n] (upper, diagonal >= 0)")
                        .samples(qr_samples));
  registrar.add<Svd>(OpSchema("linalg.svd")
                         .input_names({"A"})
                         .outputs(3)
                         .attr("tol", AttrKind::Float, opforge::Attr(-1.0),
                               "U/V gradients are refused when two singular values are closer than tol·S[0], "
                               "or (A not square) when S's smallest is at most tol·S[0]; negative: the square root "
                               "of the dtype's epsilon")
                         .describe("reduced SVD, A = U diag(S) Vᵀ: A [m, n] -> U [m, k], S [k], Vᵀ [k, n], k = min(m, n)")
                         .samples(svd_samples));
}

}  // namespace opforge_ops::linalg
