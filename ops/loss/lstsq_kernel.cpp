// Fused least-squares kernel. See lstsq_kernel.hpp for what it computes.
//
// Layout of the work:
//   - rows are split into at most kMaxChunks chunks (a function of m only, never of
//     the thread count), each handled by one task with its own partial A^T r;
//   - inside a chunk, rows go R = 4 or 8 at a time: the R dot products share each
//     load of x; the R rows, still in L1/L2, update the partial gradient in the
//     same loop that streams the next R rows from memory, so x and the partial
//     are touched once per R rows of A and memory never idles;
//   - the hot loops are compiled for AVX-512, AVX2+FMA and baseline x86-64, and
//     the best one for the running CPU is picked at load time (target_clones).
#include "lstsq_kernel.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include <opforge/sdk/parallel.hpp>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define OPFORGE_KERNEL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define OPFORGE_KERNEL_CLONES
#endif
#define OPFORGE_INLINE __attribute__((always_inline)) inline

namespace opforge_ops::loss {
namespace {

constexpr std::int64_t kMaxChunks = 64;
constexpr std::int64_t kMinChunkBytes = 512 * 1024;
constexpr std::int64_t kRowsPerStep = 8;  // chunks hold a multiple of this many rows (of R too)

// The kernels below are written once for R = 4 or 8 rows a step: every row k
// gets its own named pointer and accumulator (X(k) expands to lines for k < R
// only), which GCC turns into one vector register per row; an array of
// accumulators would not vectorise as well.
#define OPFORGE_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

// Dot products of R rows with x: s[k] = A[k] . x
template <int R, class T>
OPFORGE_INLINE void dot_rows(const T* __restrict a, std::int64_t n, const T* __restrict x, T* s) {
#define OPFORGE_DECL(k)                                           \
  const T* __restrict a##k = a + (k < R ? k : 0) * n;             \
  T s##k = 0;
  OPFORGE_ROWS(OPFORGE_DECL)
#undef OPFORGE_DECL
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5, s6, s7)
  for (std::int64_t j = 0; j < n; ++j) {
    const T xj = x[j];
#define OPFORGE_DOT(k) \
  if constexpr (k < R) s##k += a##k[j] * xj;
    OPFORGE_ROWS(OPFORGE_DOT)
#undef OPFORGE_DOT
  }
#define OPFORGE_OUT(k) \
  if constexpr (k < R) s[k] = s##k;
  OPFORGE_ROWS(OPFORGE_OUT)
#undef OPFORGE_OUT
}

// g += A_p^T r_p for the previous R rows (p, in cache) while forming the dot
// products of the next R rows (c, streamed from memory) with x. One loop does
// both so that memory is kept busy the whole time: a separate update loop would
// run from cache with the memory bus idle. R rows per step means x and g are
// loaded (and g stored) once per R rows of A.
template <int R, class T>
OPFORGE_INLINE void update_dot_rows(const T* __restrict p, const T* rp, const T* __restrict c, std::int64_t n,
                                    const T* __restrict x, T* __restrict g, T* s) {
#define OPFORGE_DECL(k)                                           \
  const T* __restrict p##k = p + (k < R ? k : 0) * n;             \
  const T* __restrict c##k = c + (k < R ? k : 0) * n;             \
  const T r##k = k < R ? rp[k] : T(0);                            \
  T s##k = 0;
  OPFORGE_ROWS(OPFORGE_DECL)
#undef OPFORGE_DECL
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5, s6, s7)
  for (std::int64_t j = 0; j < n; ++j) {
    const T xj = x[j];
    if constexpr (R == 8) {
      g[j] += ((r0 * p0[j] + r1 * p1[j]) + (r2 * p2[j] + r3 * p3[j])) +
              ((r4 * p4[j] + r5 * p5[j]) + (r6 * p6[j] + r7 * p7[j]));
    } else {
      static_assert(R == 4, "4 or 8 rows a step");
      g[j] += (r0 * p0[j] + r1 * p1[j]) + (r2 * p2[j] + r3 * p3[j]);
    }
#define OPFORGE_DOT(k) \
  if constexpr (k < R) s##k += c##k[j] * xj;
    OPFORGE_ROWS(OPFORGE_DOT)
#undef OPFORGE_DOT
  }
#define OPFORGE_OUT(k) \
  if constexpr (k < R) s[k] = s##k;
  OPFORGE_ROWS(OPFORGE_OUT)
#undef OPFORGE_OUT
}
#undef OPFORGE_ROWS

// g += A[0..k)^T r[0..k) for the last k rows of a chunk.
template <class T>
OPFORGE_INLINE void update_rows(const T* __restrict a, std::int64_t k, std::int64_t n, const T* r, T* __restrict g) {
  for (std::int64_t i = 0; i < k; ++i) {
    const T ri = r[i];
    const T* __restrict ai = a + i * n;
#pragma omp simd
    for (std::int64_t j = 0; j < n; ++j) g[j] += ri * ai[j];
  }
}

template <class T>
OPFORGE_INLINE T dot1(const T* __restrict a, std::int64_t n, const T* __restrict x) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (std::int64_t j = 0; j < n; ++j) s += a[j] * x[j];
  return s;
}

// Rows [lo, hi) of A; g (may be null) is this chunk's partial A^T r, zeroed here.
// Rows go in blocks of R; with g, block b's update is fused with block b+1's
// dot products (software pipelining).
template <int R, class T>
OPFORGE_INLINE double chunk_rows(const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi,
                                 std::int64_t n, T* r, T* g) {
  if (g) std::memset(g, 0, sizeof(T) * static_cast<std::size_t>(n));
  const std::int64_t blocks = (hi - lo) / R;
  T s[R];
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t i = lo + b * R;
    if (g && b > 0) update_dot_rows<R>(A + (i - R) * n, r + i - R, A + i * n, n, x, g, s);
    else dot_rows<R>(A + i * n, n, x, s);
    for (int k = 0; k < R; ++k) r[i + k] = y[i + k] - s[k];
  }
  if (g && blocks > 0) update_rows(A + (lo + (blocks - 1) * R) * n, R, n, r + lo + (blocks - 1) * R, g);
  for (std::int64_t i = lo + blocks * R; i < hi; ++i) {
    r[i] = y[i] - dot1(A + i * n, n, x);
    if (g) update_rows(A + i * n, 1, n, r + i, g);
  }
  double loss = 0;
  for (std::int64_t i = lo; i < hi; ++i) loss += double(r[i]) * double(r[i]);
  return loss;
}

// Rows a step: the previous block's rows are read a second time (for the update)
// one block after they were streamed in. When 2 R rows fit in L1 with room to
// spare, that second read hits L1 with R = 4; longer rows come from L2 either
// way, and R = 8 then halves the traffic of x and g. (Measured on Zen 4/5: four
// rows are ~20% faster from cache for float32 d = 1000, eight win from d = 2000.)
// A function of n and the element size only: same rounding on every machine and
// thread count.
constexpr std::int64_t kL1Budget = 40 * 1024;
template <class T>
OPFORGE_INLINE double chunk(const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi, std::int64_t n,
                            T* r, T* g) {
  if (2 * 4 * n * static_cast<std::int64_t>(sizeof(T)) <= kL1Budget) return chunk_rows<4>(A, x, y, lo, hi, n, r, g);
  return chunk_rows<8>(A, x, y, lo, hi, n, r, g);
}

OPFORGE_KERNEL_CLONES double chunk_f64(const double* A, const double* x, const double* y, std::int64_t lo,
                                       std::int64_t hi, std::int64_t n, double* r, double* g) {
  return chunk(A, x, y, lo, hi, n, r, g);
}
OPFORGE_KERNEL_CLONES double chunk_f32(const float* A, const float* x, const float* y, std::int64_t lo,
                                       std::int64_t hi, std::int64_t n, float* r, float* g) {
  return chunk(A, x, y, lo, hi, n, r, g);
}
inline double run_chunk(const double* A, const double* x, const double* y, std::int64_t lo, std::int64_t hi,
                        std::int64_t n, double* r, double* g) {
  return chunk_f64(A, x, y, lo, hi, n, r, g);
}
inline double run_chunk(const float* A, const float* x, const float* y, std::int64_t lo, std::int64_t hi,
                        std::int64_t n, float* r, float* g) {
  return chunk_f32(A, x, y, lo, hi, n, r, g);
}

// Sums the partials column-wise in chunk order: g[j] = sum_c partial[c][j].
template <class T>
OPFORGE_INLINE void reduce_columns(const T* partials, std::int64_t chunks, std::int64_t stride, std::int64_t lo,
                                   std::int64_t hi, T* g) {
  for (std::int64_t j = lo; j < hi; ++j) g[j] = partials[j];
  for (std::int64_t c = 1; c < chunks; ++c) {
    const T* p = partials + c * stride;
#pragma omp simd
    for (std::int64_t j = lo; j < hi; ++j) g[j] += p[j];
  }
}

OPFORGE_KERNEL_CLONES void reduce_f64(const double* p, std::int64_t chunks, std::int64_t stride, std::int64_t lo,
                                      std::int64_t hi, double* g) {
  reduce_columns(p, chunks, stride, lo, hi, g);
}
OPFORGE_KERNEL_CLONES void reduce_f32(const float* p, std::int64_t chunks, std::int64_t stride, std::int64_t lo,
                                      std::int64_t hi, float* g) {
  reduce_columns(p, chunks, stride, lo, hi, g);
}
inline void reduce_partials(const double* p, std::int64_t chunks, std::int64_t stride, std::int64_t lo,
                            std::int64_t hi, double* g) {
  reduce_f64(p, chunks, stride, lo, hi, g);
}
inline void reduce_partials(const float* p, std::int64_t chunks, std::int64_t stride, std::int64_t lo,
                            std::int64_t hi, float* g) {
  reduce_f32(p, chunks, stride, lo, hi, g);
}

template <class T>
double fused(const T* A, const T* x, const T* y, std::int64_t m, std::int64_t n, T* r, T* g) {
  if (m == 0) {
    if (g) std::fill(g, g + n, T(0));
    return 0.0;
  }
  // Chunking depends on the problem's size only (never on the thread count): same
  // partial sums, same order, whatever the threads. A chunk holds at least
  // kMinChunkBytes of A, so small problems are not split into tasks that cost
  // more to schedule and reduce than to compute.
  const std::int64_t bytes = m * n * static_cast<std::int64_t>(sizeof(T));
  const std::int64_t chunks = std::clamp<std::int64_t>(
      std::min((m + 31) / 32, bytes / kMinChunkBytes), 1, kMaxChunks);
  std::int64_t rows = (m + chunks - 1) / chunks;
  rows = (rows + kRowsPerStep - 1) / kRowsPerStep * kRowsPerStep;
  const std::int64_t used = (m + rows - 1) / rows;
  const std::int64_t stride = (n + 15) / 16 * 16;  // 64-byte aligned partial rows

  struct AlignedFree {
    void operator()(T* p) const { ::operator delete(p, std::align_val_t(64)); }
  };
  std::unique_ptr<T, AlignedFree> partials;
  if (g && used > 1) {
    partials.reset(static_cast<T*>(
        ::operator new(sizeof(T) * static_cast<std::size_t>(used * stride), std::align_val_t(64))));
  }
  std::vector<double> losses(static_cast<std::size_t>(used));
  opforge::sdk::parallel_for(0, used, 1, [&](std::int64_t c0, std::int64_t c1) {
    for (std::int64_t c = c0; c < c1; ++c) {
      const std::int64_t lo = c * rows, hi = std::min(m, lo + rows);
      T* pg = !g ? nullptr : (used == 1 ? g : partials.get() + c * stride);
      losses[static_cast<std::size_t>(c)] = run_chunk(A, x, y, lo, hi, n, r, pg);
    }
  });
  if (g && used > 1) {
    opforge::sdk::parallel_for(0, n, 4096, [&](std::int64_t lo, std::int64_t hi) {
      reduce_partials(partials.get(), used, stride, lo, hi, g);
    });
  }
  double loss = 0;
  for (double l : losses) loss += l;
  return loss;
}

}  // namespace

double lstsq_fused(const double* A, const double* x, const double* y, std::int64_t m, std::int64_t n, double* r,
                   double* g) {
  return fused(A, x, y, m, n, r, g);
}
double lstsq_fused(const float* A, const float* x, const float* y, std::int64_t m, std::int64_t n, float* r,
                   float* g) {
  return fused(A, x, y, m, n, r, g);
}

}  // namespace opforge_ops::loss
