// Fused least-squares kernel. See lstsq_kernel.hpp for what it computes.
//
// Layout of the work:
//   - rows are split into at most kMaxChunks chunks (a function of m only, never of
//     the thread count), each handled by one task with its own partial A^T r;
//   - inside a chunk, rows go four at a time: the four dot products share each
//     load of x, then the four rows (still in L1/L2) update the partial gradient,
//     so x and the partial are touched once per four rows of A;
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
constexpr std::int64_t kRowsPerStep = 4;

// Four rows: r[0..3] = y[0..3] - A[0..3] x;  g += A[0..3]^T r[0..3].  Returns sum r^2.
template <class T>
OPFORGE_INLINE double rows4(const T* __restrict a0, std::int64_t n, const T* __restrict x, const T* __restrict y,
                            T* __restrict r, T* __restrict g) {
  const T* __restrict a1 = a0 + n;
  const T* __restrict a2 = a1 + n;
  const T* __restrict a3 = a2 + n;
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (std::int64_t j = 0; j < n; ++j) {
    const T xj = x[j];
    s0 += a0[j] * xj;
    s1 += a1[j] * xj;
    s2 += a2[j] * xj;
    s3 += a3[j] * xj;
  }
  const T r0 = y[0] - s0, r1 = y[1] - s1, r2 = y[2] - s2, r3 = y[3] - s3;
  r[0] = r0;
  r[1] = r1;
  r[2] = r2;
  r[3] = r3;
  if (g) {
#pragma omp simd
    for (std::int64_t j = 0; j < n; ++j) g[j] += r0 * a0[j] + r1 * a1[j] + r2 * a2[j] + r3 * a3[j];
  }
  return double(r0) * r0 + double(r1) * r1 + double(r2) * r2 + double(r3) * r3;
}

template <class T>
OPFORGE_INLINE double row1(const T* __restrict a0, std::int64_t n, const T* __restrict x, const T* __restrict y,
                           T* __restrict r, T* __restrict g) {
  T s0 = 0;
#pragma omp simd reduction(+ : s0)
  for (std::int64_t j = 0; j < n; ++j) s0 += a0[j] * x[j];
  const T r0 = y[0] - s0;
  r[0] = r0;
  if (g) {
#pragma omp simd
    for (std::int64_t j = 0; j < n; ++j) g[j] += r0 * a0[j];
  }
  return double(r0) * r0;
}

// Rows [lo, hi) of A; g (may be null) is this chunk's partial A^T r, zeroed here.
template <class T>
OPFORGE_INLINE double chunk(const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi, std::int64_t n,
                            T* r, T* g) {
  if (g) std::memset(g, 0, sizeof(T) * static_cast<std::size_t>(n));
  double loss = 0;
  std::int64_t i = lo;
  for (; i + kRowsPerStep <= hi; i += kRowsPerStep) loss += rows4(A + i * n, n, x, y + i, r + i, g);
  for (; i < hi; ++i) loss += row1(A + i * n, n, x, y + i, r + i, g);
  return loss;
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
  // Chunking depends on m only: same partial sums, same order, whatever the threads.
  const std::int64_t chunks = std::clamp<std::int64_t>((m + 31) / 32, 1, kMaxChunks);
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
