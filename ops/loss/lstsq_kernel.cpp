// Fused least-squares kernel. See lstsq_kernel.hpp for what it computes.
//
// Layout of the work:
//   - rows are split into at most kMaxChunks chunks (a function of m only, never of
//     the thread count), each handled by one task with its own partial A^T r;
//   - inside a chunk, rows go in blocks of R = 8 (fewer for rows so long that 8
//     would not fit L2): the block's dot products with x come first, streaming
//     the rows from memory (the R dot products share each load of x; at least
//     eight independent accumulators, so the additions never wait on each
//     other), then the block's update of the partial gradient reads the same
//     rows again from L1/L2;
//   - while the update runs from cache, it asks for the next block's rows
//     (prefetch into L2), so memory keeps streaming while the core works on
//     cached data: each byte of A crosses the memory bus once, and the bus
//     does not idle between blocks;
//   - the loops are written with GCC vector types (64, 32 or 16 bytes) and
//     compiled for AVX-512, AVX2+FMA and baseline x86-64; the variant for the
//     running CPU is picked once.
//
// Tried and measured on the project's 2-core Zen machines, not kept: software
// pipelining of one block's update with the next block's dot products in one
// loop (the previous block then comes from L2 and the L2->L1 path, shared with
// the streamed rows, becomes the bottleneck: 1.3-1.4x the read at d=2000 against
// 1.0-1.1x now); prefetching inside the dot loop (slower); alternating the sweep
// direction to reuse what the last pass left in L3 (no gain).
#include "lstsq_kernel.hpp"

#include <algorithm>
#include <cstdint>
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

// GCC notes that 64-byte vector arguments would change the ABI of functions
// compiled without AVX-512; every such function here is always_inline.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace opforge_ops::loss {
namespace {

constexpr std::int64_t kMaxChunks = 64;
constexpr std::int64_t kMinChunkBytes = 512 * 1024;
constexpr std::int64_t kRowsPerStep = 8;  // chunks hold a multiple of this many rows

// Vectors of B bytes of T (GCC vector extension: on a CPU narrower than B, GCC
// splits each operation into several native ones).
template <class T, int B>
struct VecOf;
template <>
struct VecOf<double, 64> { typedef double type __attribute__((vector_size(64))); };
template <>
struct VecOf<float, 64> { typedef float type __attribute__((vector_size(64))); };
template <>
struct VecOf<double, 32> { typedef double type __attribute__((vector_size(32))); };
template <>
struct VecOf<float, 32> { typedef float type __attribute__((vector_size(32))); };
template <>
struct VecOf<double, 16> { typedef double type __attribute__((vector_size(16))); };
template <>
struct VecOf<float, 16> { typedef float type __attribute__((vector_size(16))); };
template <class T, int B>
using Vec = typename VecOf<T, B>::type;

template <int B, class T>
OPFORGE_INLINE Vec<T, B> vload(const T* p) {
  Vec<T, B> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <int B, class T>
OPFORGE_INLINE void vstore(T* p, Vec<T, B> v) {
  std::memcpy(p, &v, sizeof v);
}
template <int B, class T>
OPFORGE_INLINE T hsum(Vec<T, B> v) {
  T s = 0;
  for (unsigned i = 0; i < sizeof v / sizeof(T); ++i) s += v[i];
  return s;
}

constexpr int kChains = 8;  // independent accumulators in the dot loop

// One block of R rows at a (row length n, R consecutive rows):
//   r_k = y_k - a_k . x                     (dot phase, rows streamed from memory)
//   g  += sum_k r_k a_k  when g is non-null (update phase, rows from L1/L2),
// the update phase prefetching the next R rows into L2.
template <int R, int B, class T>
OPFORGE_INLINE void block(const T* __restrict a, std::int64_t n, const T* __restrict x, const T* y, T* r,
                          T* __restrict g) {
  constexpr std::int64_t W = B / sizeof(T);             // lanes of a vector
  constexpr int U = R >= kChains ? 1 : kChains / R;     // vectors of a row per step
  Vec<T, B> acc[R][U];
#pragma GCC unroll 8
  for (int k = 0; k < R; ++k)
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) acc[k][u] = Vec<T, B>{};
  std::int64_t j = 0;
  for (; j + U * W <= n; j += U * W) {
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) {
      const Vec<T, B> xv = vload<B>(x + j + u * W);
#pragma GCC unroll 8
      for (int k = 0; k < R; ++k) acc[k][u] += vload<B>(a + k * n + j + u * W) * xv;
    }
  }
  for (; j + W <= n; j += W) {
    const Vec<T, B> xv = vload<B>(x + j);
#pragma GCC unroll 8
    for (int k = 0; k < R; ++k) acc[k][0] += vload<B>(a + k * n + j) * xv;
  }
  T rk[R];
#pragma GCC unroll 8
  for (int k = 0; k < R; ++k) {
    Vec<T, B> v = acc[k][0];
#pragma GCC unroll 8
    for (int u = 1; u < U; ++u) v += acc[k][u];
    T s = hsum<B, T>(v);
    for (std::int64_t t = j; t < n; ++t) s += a[k * n + t] * x[t];
    rk[k] = r[k] = y[k] - s;
  }
  if (!g) return;
  const T* next = a + R * n;  // the next block (past the chunk's end: a harmless prefetch)
  j = 0;
  for (; j + W <= n; j += W) {
#pragma GCC unroll 8
    for (int k = 0; k < R; ++k) __builtin_prefetch(next + k * n + j, 0, 2);
    Vec<T, B> u0 = rk[0] * vload<B>(a + j);
    if constexpr (R >= 2) u0 += rk[1] * vload<B>(a + n + j);
    if constexpr (R >= 4) {
      Vec<T, B> u1 = rk[2] * vload<B>(a + 2 * n + j) + rk[3] * vload<B>(a + 3 * n + j);
      if constexpr (R == 8) {
        Vec<T, B> u2 = rk[4] * vload<B>(a + 4 * n + j) + rk[5] * vload<B>(a + 5 * n + j);
        Vec<T, B> u3 = rk[6] * vload<B>(a + 6 * n + j) + rk[7] * vload<B>(a + 7 * n + j);
        u0 = (u0 + u1) + (u2 + u3);
      } else {
        u0 += u1;
      }
    }
    vstore<B>(g + j, vload<B>(g + j) + u0);
  }
  for (; j < n; ++j) {
    T u = 0;
    for (int k = 0; k < R; ++k) u += rk[k] * a[k * n + j];
    g[j] += u;
  }
}

// Rows [lo, hi) of A; g (may be null) is this chunk's partial A^T r, zeroed here.
template <int R, int B, class T>
OPFORGE_INLINE double chunk_rows(const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi,
                                 std::int64_t n, T* r, T* g) {
  if (g) std::memset(g, 0, sizeof(T) * static_cast<std::size_t>(n));
  std::int64_t i = lo;
  for (; i + R <= hi; i += R) block<R, B>(A + i * n, n, x, y + i, r + i, g);
  for (; i < hi; ++i) block<1, B>(A + i * n, n, x, y + i, r + i, g);
  double loss = 0;
  for (std::int64_t k = lo; k < hi; ++k) loss += double(r[k]) * double(r[k]);
  return loss;
}

// Rows a block: 8, unless 8 rows would not fit in L2 with room to spare (rows
// over 32 KiB), so that the update phase always reads from cache. A function
// of n and the element size only: same rounding for every thread count.
constexpr std::int64_t kBlockBudget = 256 * 1024;
template <int B, class T>
OPFORGE_INLINE double chunk(const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi, std::int64_t n,
                            T* r, T* g) {
  const std::int64_t row = n * static_cast<std::int64_t>(sizeof(T));
  if (8 * row <= kBlockBudget) return chunk_rows<8, B>(A, x, y, lo, hi, n, r, g);
  if (4 * row <= kBlockBudget) return chunk_rows<4, B>(A, x, y, lo, hi, n, r, g);
  if (2 * row <= kBlockBudget) return chunk_rows<2, B>(A, x, y, lo, hi, n, r, g);
  return chunk_rows<1, B>(A, x, y, lo, hi, n, r, g);
}

// One instance per instruction set, with the vector width it has; picked once.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define OPFORGE_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#define OPFORGE_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#else
#define OPFORGE_TARGET_V4
#define OPFORGE_TARGET_V3
#endif
template <class T>
OPFORGE_TARGET_V4 double chunk_v4(const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi,
                                  std::int64_t n, T* r, T* g) {
  return chunk<64>(A, x, y, lo, hi, n, r, g);
}
template <class T>
OPFORGE_TARGET_V3 double chunk_v3(const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi,
                                  std::int64_t n, T* r, T* g) {
  return chunk<32>(A, x, y, lo, hi, n, r, g);
}
template <class T>
double chunk_base(const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi, std::int64_t n, T* r,
                  T* g) {
  return chunk<16>(A, x, y, lo, hi, n, r, g);
}

enum class Isa { v4, v3, base };
Isa detect_isa() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return Isa::v4;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
    return Isa::v3;
#endif
  return Isa::base;
}

template <class T>
double run_chunk(const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi, std::int64_t n, T* r, T* g) {
  static const Isa isa = detect_isa();
  switch (isa) {
    case Isa::v4: return chunk_v4(A, x, y, lo, hi, n, r, g);
    case Isa::v3: return chunk_v3(A, x, y, lo, hi, n, r, g);
    default: return chunk_base(A, x, y, lo, hi, n, r, g);
  }
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
