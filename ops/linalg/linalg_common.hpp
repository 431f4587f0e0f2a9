// Shared by the sources of the linalg plugin (linalg.cpp, solvers.cpp,
// factorizations.cpp): argument checks, typed BLAS/LAPACK calls on raw row-major
// buffers, and small kernels (transpose, scaled copies).
//
// Which BLAS/LAPACK layer:
//   - dot calls xt::blas::dot over sdk views (xtensor-blas' top layer).
//   - Every product (mv, matmul, batched), triangular solves and every LAPACK routine call the layer
//     underneath it, also shipped with xtensor-blas: cxxblas::gemm/gemv/trsm (which
//     call OpenBLAS' cblas_*) and cxxlapack::getrf/getrs/getri/potrf/geqrf/orgqr/
//     ormqr/gesdd (OpenBLAS' LAPACK), and trcon directly. xt::lapack's wrappers are awkward here: they
//     need column-major xtensor containers, take leading dimensions from strides
//     (which xtensor sets to 0 on size-1 axes), lack getrs and gels, and return
//     freshly allocated outputs; the pointer-level calls take our buffers and
//     explicit leading dimensions.
//
// Layout trick used throughout: LAPACK is column-major, tensors are row-major, and
// a row-major [r, c] buffer read column-major is the [c, r] transpose. So LU of the
// buffer of A factors Aᵀ (solved with trans = 'T' for A itself), potrf('U') of a
// symmetric buffer leaves L of S = L Lᵀ in row-major order, and gesdd of Aᵀ hands
// back U and Vᵀ already in row-major order. QR is the exception: the LQ of Aᵀ
// (gelqf) would need no copy, but ran 2-3x slower than geqrf on a column-major
// copy, so qr and lstsq_solve transpose first.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <opforge/sdk.hpp>
#include <xtensor-blas/xblas.hpp>
#include <xtensor-blas/xlapack.hpp>

namespace opforge_ops::linalg {

using opforge::Context;
using opforge::Dims;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
namespace sdk = opforge::sdk;
using blas_int = xt::blas_index_t;

// Registration of the ops defined in the other sources (called from linalg.cpp's
// OPFORGE_PLUGIN body).
void register_solvers(opforge::PluginRegistrar& registrar);
void register_factorizations(opforge::PluginRegistrar& registrar);

// ---- argument checks ----------------------------------------------------------------

// BLAS and LAPACK take sizes and leading dimensions as xt::blas_index_t (int):
// refuse what would not fit rather than let it wrap.
inline void expect_blas_sizes(const Context& ctx, const Tensor& t, const char* arg) {
  constexpr auto kMax = std::numeric_limits<blas_int>::max();
  for (std::int64_t s : t.shape())
    OPFORGE_CHECK(s <= kMax, ValueError, ctx.op_name(), ": argument '", arg, "': expected every dimension <= ",
                  kMax, " (the BLAS index limit), got shape ", t.shape());
}

// A 2-D [n, n] matrix.
inline void expect_square(const Context& ctx, const Tensor& t, const char* arg) {
  sdk::expect_rank(ctx, t, arg, 2);
  OPFORGE_CHECK(t.size(0) == t.size(1), ShapeError, ctx.op_name(), ": argument '", arg,
                "': expected a square matrix [n, n], got ", t.describe());
  expect_blas_sizes(ctx, t, arg);
}

// Gradients arriving from the engine are normally contiguous; the kernels need them to be.
inline Tensor contiguous(const Tensor& t) { return t.is_contiguous() ? t : t.clone(); }

/// Scratch space of `n` values of T (float or double), not zero-filled, from
/// opforge's tensor storage: a block of a size used on every call is reused
/// from call to call, where a std::vector is zero-filled and, from 128 KiB on,
/// gets fresh pages from the C library on most calls (svd's forward spent a
/// fifth of its time faulting them in).
template <class T>
class Scratch {
 public:
  explicit Scratch(std::int64_t n) : t_(Tensor::empty(opforge::Dims{n}, opforge::dtype_of<T>::value)), p_(t_.data<T>()) {}
  /// A copy of [first, first + n).
  Scratch(const T* first, std::int64_t n) : Scratch(n) { std::copy(first, first + n, p_); }
  T* data() noexcept { return p_; }
  T& operator[](std::int64_t i) noexcept { return p_[i]; }

 private:
  Tensor t_;
  T* p_;
};

inline blas_int bi(std::int64_t v) { return static_cast<blas_int>(v); }
// A leading dimension: LAPACK and BLAS want at least 1, even for an empty matrix.
inline blas_int ld(std::int64_t v) { return static_cast<blas_int>(std::max<std::int64_t>(1, v)); }

// ---- BLAS (row-major, through cxxblas -> cblas) ---------------------------------------------
// Each wrapper takes exactly typed arguments, so that overload resolution picks
// cxxblas' BLAS-backed overload, never its generic reference loop.

inline cxxblas::Transpose tr(bool t) { return t ? cxxblas::Trans : cxxblas::NoTrans; }

/// C = alpha op(A) op(B) + beta C; C is [m, n], op(A) [m, k], op(B) [k, n].
template <class T>
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* A,
          std::int64_t lda, const T* B, std::int64_t ldb, T beta, T* C, std::int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty sum: C = beta C (BLAS refuses leading dimensions of 0)
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
  // A product with one column or one row of output is a gemv: OpenBLAS's gemm
  // does not notice, and ran 3-7x slower than its gemv for [n, n] x [n, 1] at
  // n = 1000-4000 (matmul(A, x) of a 1-D x, or x A). beta = 0 zeroes C first:
  // C may be uninitialised, and BLAS may scale it rather than overwrite it.
  if (n == 1 || m == 1) {
    const std::int64_t len = n == 1 ? m : n, inc_c = n == 1 ? ldc : 1;
    if (beta == T(0))
      for (std::int64_t i = 0; i < len; ++i) C[i * inc_c] = T(0);
    if (n == 1) {
      // C[:, 0] = op(A) [m, k] x the column op(B)[:, 0]: B stored [k, 1] (ldb apart) or [1, k].
      cxxblas::gemv<blas_int>(cxxblas::RowMajor, tr(trans_a), bi(trans_a ? k : m), bi(trans_a ? m : k), alpha, A,
                              ld(lda), B, bi(trans_b ? 1 : ldb), beta, C, bi(ldc));
    } else {
      // C[0, :] = op(A)[0, :] op(B), as C[0, :]ᵀ = op(B)ᵀ op(A)[0, :]ᵀ: B stored [k, n] or [n, k], the row
      // op(A)[0, :] stored [1, k] or [k, 1] (lda apart).
      cxxblas::gemv<blas_int>(cxxblas::RowMajor, tr(!trans_b), bi(trans_b ? n : k), bi(trans_b ? k : n), alpha, B,
                              ld(ldb), A, bi(trans_a ? lda : 1), beta, C, 1);
    }
    return;
  }
  cxxblas::gemm<blas_int>(cxxblas::RowMajor, tr(trans_a), tr(trans_b), bi(m), bi(n), bi(k), alpha, A, ld(lda), B,
                          ld(ldb), beta, C, ld(ldc));
}

/// y = alpha op(A) x + beta y; A stored [rows, cols].
template <class T>
void gemv(bool trans, std::int64_t rows, std::int64_t cols, T alpha, const T* A, const T* x, T beta, T* y) {
  const std::int64_t out = trans ? cols : rows, in = trans ? rows : cols;
  if (out == 0) return;
  if (in == 0) {
    for (std::int64_t i = 0; i < out; ++i) y[i] = beta == T(0) ? T(0) : beta * y[i];
    return;
  }
  cxxblas::gemv<blas_int>(cxxblas::RowMajor, tr(trans), bi(rows), bi(cols), alpha, A, ld(cols), x, 1, beta, y, 1);
}

/// Triangular solve in place: B = alpha op(T)⁻¹ B (left) or alpha B op(T)⁻¹ (right);
/// B is [m, n], T is [m, m] (left) or [n, n] (right), row-major.
template <class T>
void trsm(bool left, bool upper, bool trans, std::int64_t m, std::int64_t n, T alpha, const T* Tri,
          std::int64_t ldt, T* B, std::int64_t ldb) {
  if (m == 0 || n == 0) return;
  cxxblas::trsm<blas_int>(cxxblas::RowMajor, left ? cxxblas::Left : cxxblas::Right,
                          upper ? cxxblas::Upper : cxxblas::Lower, tr(trans), cxxblas::NonUnit, bi(m), bi(n), alpha,
                          Tri, ld(ldt), B, ld(ldb));
}

// ---- small kernels ----------------------------------------------------------------------

/// dst [cols, rows] = srcᵀ, src [rows, cols] (both row-major), in cache-sized tiles.
template <class T>
void transpose_into(const T* src, std::int64_t rows, std::int64_t cols, T* dst) {
  constexpr std::int64_t kTile = 32;
  const std::int64_t row_tiles = (rows + kTile - 1) / kTile;
  const std::int64_t grain = std::max<std::int64_t>(1, sdk::kElementwiseGrain / (kTile * std::max<std::int64_t>(cols, 1)));
  sdk::parallel_for(0, row_tiles, grain, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t t = lo; t < hi; ++t) {
      const std::int64_t r0 = t * kTile, r1 = std::min(rows, r0 + kTile);
      for (std::int64_t c0 = 0; c0 < cols; c0 += kTile) {
        const std::int64_t c1 = std::min(cols, c0 + kTile);
        for (std::int64_t r = r0; r < r1; ++r)
          for (std::int64_t c = c0; c < c1; ++c) dst[c * rows + r] = src[r * cols + c];
      }
    }
  });
}

/// Calls row(i) for every i < rows, rows of `cols` elements, in parallel for big
/// matrices (about sdk::kElementwiseGrain elements a task).
template <class F>
void for_rows(std::int64_t rows, std::int64_t cols, F&& row) {
  const std::int64_t grain = std::max<std::int64_t>(1, sdk::kElementwiseGrain / std::max<std::int64_t>(cols, 1));
  sdk::parallel_for(0, rows, grain, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) row(i);
  });
}

/// dst[i] = alpha * src[i], i < n.
template <class T>
void scaled_copy(const T* src, T alpha, std::int64_t n, T* dst) {
  sdk::parallel_for(0, n, sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) dst[i] = alpha * src[i];
  });
}

/// True when every element is 0 (an output the engine fed no gradient).
template <class T>
bool all_zero(const Tensor& t) {
  const T* p = t.data<T>();
  const std::int64_t n = t.numel();
  for (std::int64_t i = 0; i < n; ++i)
    if (p[i] != T(0)) return false;
  return true;
}

// ---- LU (getrf of the buffer of A, i.e. of Aᵀ in LAPACK's column-major view) ----------

/// Pivots of an LU factorization kept for backward as int64 (LAPACK's 1-based indices).
inline Tensor pivots_tensor(const std::vector<blas_int>& piv) {
  Tensor t = Tensor::empty(Dims{static_cast<std::int64_t>(piv.size())}, opforge::DType::Int64);
  std::int64_t* p = t.data<std::int64_t>();
  for (std::size_t i = 0; i < piv.size(); ++i) p[i] = piv[i];
  return t;
}
inline std::vector<blas_int> pivots_vector(const Tensor& t) {
  const std::int64_t* p = t.data<std::int64_t>();
  return std::vector<blas_int>(p, p + t.numel());
}

/// Factors lu (a copy of A [n, n], overwritten) in place; returns LAPACK's info
/// (> 0: U[info-1, info-1] is exactly 0, the matrix is singular).
template <class T>
blas_int lu_factor(Tensor& lu, std::vector<blas_int>& piv) {
  const std::int64_t n = lu.size(0);
  piv.assign(static_cast<std::size_t>(n), 0);
  if (n == 0) return 0;
  return cxxlapack::getrf<blas_int>(bi(n), bi(n), lu.data<T>(), ld(n), piv.data());
}

/// Solves in place with the factors of lu_factor: trans_a = true solves A X = B,
/// false solves Aᵀ X = B (the buffer holds the factors of Aᵀ). B is column-major
/// [n, nrhs] (a vector when nrhs = 1).
template <class T>
void lu_solve(const Tensor& lu, const std::vector<blas_int>& piv, bool for_a, T* B, std::int64_t nrhs) {
  const std::int64_t n = lu.size(0);
  if (n == 0 || nrhs == 0) return;
  cxxlapack::getrs<blas_int>(for_a ? 'T' : 'N', bi(n), bi(nrhs), lu.data<T>(), ld(n), piv.data(), B, ld(n));
}

/// Overwrites the factors in lu with the inverse. The buffer then holds A⁻¹ in
/// row-major order ((Aᵀ)⁻¹ column-major is the same memory).
template <class T>
void lu_inverse(Tensor& lu, const std::vector<blas_int>& piv) {
  const std::int64_t n = lu.size(0);
  if (n == 0) return;
  T query = 0;
  cxxlapack::getri<blas_int>(bi(n), lu.data<T>(), ld(n), piv.data(), &query, -1);
  const std::int64_t lwork = static_cast<std::int64_t>(std::max<T>(query, T(n)));
  Scratch<T> work(lwork);
  cxxlapack::getri<blas_int>(bi(n), lu.data<T>(), ld(n), piv.data(), work.data(), bi(lwork));
}

// ---- QR in LAPACK's own layout -----------------------------------------------------------

/// geqrf of a column-major A [m, n] in `buf` (leading dimension m): R on and above
/// the diagonal of the top min(m, n) rows, the reflectors of Q below; tau gets
/// min(m, n) entries. LAPACK's own layout: faster than the LQ of the row-major
/// buffer (gelqf), above all on two threads (qr of 2048 x 512: 159 -> 51 ms;
/// lstsq_solve of 4000 x 500: 67 -> 52 ms on one thread, 77-102 -> 31 ms on two,
/// PyTorch's lstsq 40), at the price of a transposing copy.
template <class T>
void qr_factor_column_major(T* buf, std::int64_t m, std::int64_t n, std::vector<T>& tau) {
  const std::int64_t k = std::min(m, n);
  tau.assign(static_cast<std::size_t>(k), T(0));
  if (k == 0) return;
  T query = 0;
  cxxlapack::geqrf<blas_int>(bi(m), bi(n), buf, ld(m), tau.data(), &query, -1);
  const std::int64_t lwork = static_cast<std::int64_t>(std::max<T>(query, T(n)));
  Scratch<T> work(lwork);
  cxxlapack::geqrf<blas_int>(bi(m), bi(n), buf, ld(m), tau.data(), work.data(), bi(lwork));
}

/// After qr_factor_column_major (m >= n): y [m] := Qᵀ y, whose first n entries are
/// the reduced Qᵀ y (the reflectors applied without forming Q; what gels does).
template <class T>
void qr_apply_qt(T* buf, std::int64_t m, std::int64_t n, const std::vector<T>& tau, T* y) {
  if (n == 0 || m == 0) return;
  T query = 0;
  cxxlapack::ormqr<blas_int>('L', 'T', bi(m), 1, bi(n), buf, ld(m), tau.data(), y, ld(m), &query, -1);
  const std::int64_t lwork = static_cast<std::int64_t>(std::max<T>(query, T(1)));
  Scratch<T> work(lwork);
  cxxlapack::ormqr<blas_int>('L', 'T', bi(m), 1, bi(n), buf, ld(m), tau.data(), y, ld(m), work.data(), bi(lwork));
}

/// QR of a column-major A [m, n] in `buf`, leading dimension m, k = min(m, n):
/// geqrf then orgqr. Afterwards R [k, n] (upper trapezoidal) is in `r` (row-major,
/// its lower part untouched) and the first k columns of `buf` hold Q [m, k],
/// column-major.
template <class T>
void qr_column_major(T* buf, std::int64_t m, std::int64_t n, T* r) {
  const std::int64_t k = std::min(m, n);
  std::vector<T> tau;
  qr_factor_column_major<T>(buf, m, n, tau);
  if (k == 0) return;
  for (std::int64_t i = 0; i < k; ++i)
    for (std::int64_t j = i; j < n; ++j) r[i * n + j] = buf[i + j * m];
  T query = 0;
  cxxlapack::orgqr<blas_int>(bi(m), bi(k), bi(k), buf, ld(m), tau.data(), &query, -1);
  const std::int64_t lwork = static_cast<std::int64_t>(std::max<T>(query, T(k)));
  Scratch<T> work(lwork);
  cxxlapack::orgqr<blas_int>(bi(m), bi(k), bi(k), buf, ld(m), tau.data(), work.data(), bi(lwork));
}

/// LAPACK's estimate of the reciprocal condition number 1/(‖R‖₁‖R⁻¹‖₁) of an upper
/// triangular R [n, n] (row-major, leading dimension n: to LAPACK the lower triangular
/// Rᵀ, whose ∞-norm condition is R's 1-norm one). 1 for n = 0. (cxxlapack's trcon
/// wrapper has the wrong arguments: the routine is called directly.)
template <class T>
double triangular_rcond(const T* r, std::int64_t n) {
  if (n == 0) return 1;
  blas_int nn = bi(n), lda = ld(n), info = 0;
  T rc = 0;
  Scratch<T> work(3 * n);
  std::vector<blas_int> iwork(static_cast<std::size_t>(n));
  if constexpr (std::is_same_v<T, double>)
    cxxlapack::LAPACK_IMPL(dtrcon)("I", "L", "N", &nn, r, &lda, &rc, work.data(), iwork.data(), &info);
  else
    cxxlapack::LAPACK_IMPL(strcon)("I", "L", "N", &nn, r, &lda, &rc, work.data(), iwork.data(), &info);
  return info == 0 ? static_cast<double>(rc) : 0.0;
}

/// The error for an exactly singular matrix (getrf's info > 0).
[[noreturn]] inline void throw_singular(const Context& ctx, const char* arg, blas_int info, const char* why) {
  throw opforge::ValueError(opforge::detail::concat(
      ctx.op_name(), ": argument '", arg, "': expected a non-singular matrix, got a singular one (pivot ", info - 1,
      " of its LU factorization is exactly 0)", why));
}

/// Throws, naming the first entry of `t` that is NaN or infinite, when it has
/// one. Called where a factorization failed, so that a NaN or an infinity in the
/// input is reported as what it is, not as the failure it caused (LAPACK's
/// gesdd refuses NaN with info -4; a QR of it looks rank-deficient), and before
/// gesdd, which returns NaN for an infinity without failing.
template <class T>
inline void throw_if_not_finite(const Context& ctx, const Tensor& t, const char* arg) {
  const Tensor c = contiguous(t);
  const T* p = c.data<T>();
  const opforge::Dims& shape = c.shape();
  for (std::int64_t i = 0; i < c.numel(); ++i) {
    if (std::isfinite(p[i])) continue;
    std::string at;
    for (std::size_t k = shape.size(), rest = static_cast<std::size_t>(i); k-- > 0;) {
      const auto n = static_cast<std::size_t>(shape[k]);
      at = std::to_string(rest % n) + (at.empty() ? "" : ", ") + at;
      rest /= n;
    }
    const char* value = std::isnan(p[i]) ? "nan" : (p[i] > 0 ? "inf" : "-inf");
    throw opforge::ValueError(opforge::detail::concat(ctx.op_name(), ": argument '", arg,
                                                      "': expected finite values, got ", value, " at [", at, "] of ",
                                                      t.describe()));
  }
}

}  // namespace opforge_ops::linalg
