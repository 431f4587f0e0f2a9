// Fused least-squares kernel. See lstsq_kernel.hpp for what it computes.
//
// Layout of the work, common to both variants:
//   - rows are split into at most kMaxChunks chunks (a function of m only, never of
//     the thread count), each handled by one task with its own partial A^T r,
//     and the partials are summed in chunk order: bit-identical results for any
//     thread count;
//   - inside a chunk, rows go in blocks of R rows (the R dot products share each
//     load of x, and the partial gradient is loaded and stored once per block).
//
// Variant "pipelined" (R = 4 or 8): block b's update of the partial gradient is
// fused into the loop that forms block b+1's dot products, so memory streams
// block b+1 while the core re-reads block b from cache, in one loop. Written
// with `#pragma omp simd` over named accumulators, compiled for AVX-512,
// AVX2+FMA and baseline x86-64 (target_clones).
//
// Variant "two_phase" (R = 8, fewer for rows over 32 KiB): block b's dot
// products first (rows streamed from memory, at least eight independent
// accumulators), then block b's update from L1/L2 (from the last columns back
// when the block exceeds L1); the update prefetches block b+1 into L2 so memory
// keeps streaming: one prefetch every 128 bytes of a row where A is more than
// twice the last-level cache, every 64 bytes (each line) where it is not
// (two_phase_prefetch_bytes() in lstsq_kernel.hpp). A Zen 4 core fetches a
// line's 128-byte neighbour with it, so every other line brings the same data
// with half the prefetches waiting on the core's miss buffers: with A from
// memory, 2 threads, in one process against every line, float32 d = 2000
// 1.24-1.26x -> 1.15-1.18x the read and float64 1.35-1.36x -> 1.21-1.23x while
// memory is fast, 1.04 -> 1.02 (and d = 4000 1.03-1.04 -> 1.01-1.02) while it is
// slow; one thread, d = 2000 and 4000, 1.29-1.36x -> 1.16-1.23x. With A mostly
// in L3 (d = 500) every other line was up to 15% slower. (The 32- and 16-byte
// instances used to prefetch each line two or four times; now once. Not
// measured on a CPU that runs them.) Written with GCC vector types, one
// instance per instruction set at its own width (64/32/16 bytes).
//
// Which is faster depends on the core (medians against a four-accumulator read
// of A, round-robin in one process):
//   - AMD Zen (2-core VM, 2 threads, d = 2000 and 4000, fast-memory regime):
//     pipelined 1.30-1.52x the read, two_phase 1.08-1.31x. Zen's L2->L1 path is the limit: in "pipelined" block b
//     comes back from L2 while block b+1 streams in through the same path;
//   - Intel Xeon (1-16 threads, d = 2000/4000): pipelined 0.96-1.39x, two_phase
//     1.11-1.57x (its prefetches compete with the hardware prefetcher for line fill
//     buffers).
// So `automatic` is two_phase on AMD, pipelined elsewhere.
//
// Tried on Zen and dropped: alternating the sweep direction to reuse what the last
// pass left in L3 (no gain; again as chunks last-to-first on every other call:
// 0-3%, this L3 keeps little of a stream); prefetching inside the dot loop (slower); a
// pipelined loop with blocks small enough for L1 (slower: 1.3x); 16-row blocks
// (1.7x at d = 2000: too many streams for the prefetchers; with today's
// prefetching they pay a little at rows of 4-8 KiB: see chunk()); an update that keeps
// a 512-byte panel of g in registers and walks the rows one after another (1.6x
// faster from L2, but 1.12x against 1.07x the read from memory); prefetching
// only part of the next block (1.22-1.34x, less is worse); dot products one row
// at a time (1.2-2x at d = 1000); blocks made of row t of 8 lanes of
// consecutive rows, so that each lane streams on from block to block (same
// time with the prefetch, 1.31x without it: the hardware prefetcher does not
// carry a stream across the update phase); finer chunks (256 or 1024 a pass:
// 2-10% slower here, and slower on a 16-core Xeon at 4-16 threads too; coarser
// ones, 16 or 32 a pass, within 1% at float64 d = 1000 and float32 d = 2000); forming
// the first 1/4 to all of the next block's dot products inside the update
// instead of prefetching it (5-30% slower at every size); 4- or 2-row blocks
// where 8 rows make 64 KB, so that the update reads from L1 (4 rows 1-2%
// slower, 2 rows 3-8%, and 20% at float64 d = 1000 while memory is fast, with
// either prefetch hint); prefetcht0 or prefetchnta instead of prefetcht1
// (3-5% faster while memory is slow, 2-4% slower while it is fast; prefetcht2
// runs as prefetcht1 does); dot products row after row with L1-sized blocks
// and no software prefetch, one sequential stream for the hardware prefetcher
// (1.2-2.5x);
// prefetching the next block in memory order from one pointer (same at d =
// 1000, 10-20% slower at float64 d = 2000); prefetch addresses indexed off the
// current rows to end the update loop's register spills, or the update as one
// chain of FMAs into g (both within 1%); prefetching the next block two blocks
// ahead (1-2% slower); moving the first 8, 16 or 32 lines of each next row's
// prefetches into the end of the dot phase, so that memory never waits for the
// update to start (same at 8 lines, 2-14% slower at 16-32, most while memory
// is fast: a prefetch issued during the dot phase delays its own loads);
// prefetching only the first 1/4, 1/2 or 3/4 of the next block's columns and
// leaving the rest to the hardware prefetcher (5-10% slower while memory is
// fast, 0-5% while it is slow); interleaving the next block's dot products
// and this block's update in column steps of 256 B to 4 KiB a row, no software
// prefetch, so that the hardware prefetcher streams on through short updates
// (1.15-1.20x while memory is slow, 1.4-2.3x while it is fast: the pipelined
// variant's trouble, coarser); the register-panel update again, with the current
// prefetch order (1-4% slower from memory); two blocks' dot phases, then their
// two updates, so that the phases switch half as often (3-5% slower);
// prefetching every second or fourth line of the next block, the gaps left to
// the hardware (1.13-1.21x against 1.10x, one thread, caches flushed: measured
// before the 16-row blocks; measured again in the tenth session, every second
// line paid and was adopted, every fourth did not); 5- or 6-row blocks (1-3%
// slower). Streaming by software prefetch alone (the dot loop removed) runs at
// 1.20-1.26x the read on one core, the dot phase alone at 1.00-1.10x (tenth
// session, 16-row blocks: 1.24-1.28x; row after row, one stream, 1.04-1.07x,
// but no update added to a one-row stream came under 1.27x: after each whole
// block, or interleaved with the next block's one-row stream in 1-16 steps a
// row (2.1-2.9x, the stream's loads stalling even with software prefetches 1-16
// KiB ahead). The 16-row dot phase done as two passes of 8 rows or four of 4
// (1.25x, 1.44x against 1.18x), or in panels of 4 or 8 lines a row (1.21-1.35x),
// and prefetches of the next block spread over the dot phase as well as the
// update: no better).
// What one Zen 4 core does with A already in cache caps all of this: the whole
// pass runs at ~50 GB/s a core from L2 or L3 (dot phase ~100, bound by the
// 32-byte L2->L1 path; update ~130 even from L1, bound by its own work), within
// 0-25% of what memory supplies a core in its fastest spells
// (docs/benchmarks.md, "What one core does with A already in cache").
// Touching A twice is not the cost: a
// plain sum over 8 rows at once, or one that reads each 16 or 64 KiB block
// twice, runs at the read's speed (0.95-1.04x) in both memory regimes; what
// costs is the update phase's work (+3% of the read while memory is slow,
// +15-35% while it is fast). A
// software prefetch costs more than the hardware's: a streaming dot loop that
// also prefetches the next block runs at 72 GB/s where the plain loop runs at
// 86-96 GB/s (2 threads), so prefetches are issued only where nothing else
// keeps memory busy.
#include "lstsq_kernel.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include <opforge/sdk/cpu.hpp>
#include <opforge/sdk/parallel.hpp>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define OPFORGE_KERNEL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define OPFORGE_KERNEL_CLONES
#endif
#define OPFORGE_INLINE __attribute__((always_inline)) inline

// GCC warns that returning a 64-byte vector (vload) would change the ABI of
// functions compiled without AVX-512; every such function here is
// always_inline. Vectors are passed by const reference: GCC's note about
// passing them by value is one this pragma does not silence.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace opforge_ops::loss {
namespace {

constexpr std::int64_t kMaxChunks = 64;
constexpr std::int64_t kMinChunkBytes = 512 * 1024;
constexpr std::int64_t kRowsPerStep = 8;  // chunks hold a multiple of this many rows

// ---- kernel "pipelined" ------------------------------------------------------------

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
OPFORGE_INLINE double pipelined_rows(const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi,
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
constexpr std::int64_t kPipelinedL1Budget = 40 * 1024;
template <class T>
OPFORGE_INLINE double pipelined_chunk(const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi,
                                      std::int64_t n, T* r, T* g) {
  if (2 * 4 * n * static_cast<std::int64_t>(sizeof(T)) <= kPipelinedL1Budget)
    return pipelined_rows<4>(A, x, y, lo, hi, n, r, g);
  return pipelined_rows<8>(A, x, y, lo, hi, n, r, g);
}

OPFORGE_KERNEL_CLONES double pipelined_f64(const double* A, const double* x, const double* y, std::int64_t lo,
                                       std::int64_t hi, std::int64_t n, double* r, double* g) {
  return pipelined_chunk(A, x, y, lo, hi, n, r, g);
}
OPFORGE_KERNEL_CLONES double pipelined_f32(const float* A, const float* x, const float* y, std::int64_t lo,
                                       std::int64_t hi, std::int64_t n, float* r, float* g) {
  return pipelined_chunk(A, x, y, lo, hi, n, r, g);
}
inline double run_pipelined(const double* A, const double* x, const double* y, std::int64_t lo, std::int64_t hi,
                        std::int64_t n, double* r, double* g) {
  return pipelined_f64(A, x, y, lo, hi, n, r, g);
}
inline double run_pipelined(const float* A, const float* x, const float* y, std::int64_t lo, std::int64_t hi,
                        std::int64_t n, float* r, float* g) {
  return pipelined_f32(A, x, y, lo, hi, n, r, g);
}

// ---- kernel "two_phase" ------------------------------------------------------------

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
OPFORGE_INLINE void vstore(T* p, const Vec<T, B>& v) {
  std::memcpy(p, &v, sizeof v);
}
// Sum of a vector's lanes by halving (64 -> 32 -> 16 bytes, then 4 or 2 lanes):
// a short dependency chain. The update phase waits for the R row sums of the
// dot phase; summing the 16 lanes one after another kept it waiting ~16 add
// latencies a block (measured: 3-5% of the whole pass at float32 d = 2000, 7%
// of the dot phase alone while memory is fast).
template <int B, class T>
OPFORGE_INLINE T hsum(const Vec<T, B>& v) {
  if constexpr (B > 16) {
    Vec<T, B / 2> lo, hi;
    std::memcpy(&lo, &v, B / 2);
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + B / 2, B / 2);
    return hsum<B / 2, T>(lo + hi);
  } else {
    T s = 0;
    for (unsigned i = 0; i < sizeof v / sizeof(T); ++i) s += v[i];
    return s;
  }
}

constexpr int kChains = 8;  // independent accumulators in the dot loop
constexpr std::int64_t kL1Block = 32 * 1024;  // a block this size stays in L1 between its two phases

// sum_k r_k a_k[c, c+W) over the R rows at a, as a balanced tree of sums
// (pairs, then pairs of pairs): a short dependency chain.
template <int R, int B, class T>
OPFORGE_INLINE Vec<T, B> weighted_rows(const T* __restrict a, std::int64_t n, const T* rk, std::int64_t c) {
  if constexpr (R == 1) {
    return rk[0] * vload<B>(a + c);
  } else {
    static_assert(R % 2 == 0, "1, 2, 4, 8 or 16 rows a block");
    return weighted_rows<R / 2, B, T>(a, n, rk, c) + weighted_rows<R / 2, B, T>(a + (R / 2) * n, n, rk + R / 2, c);
  }
}

// g[c, c+W) += sum_k r_k a_k[c, c+W) for the R rows at a, prefetching column
// pc of the R rows at next into L2 (no prefetch when next is null).
template <int R, int B, class T>
OPFORGE_INLINE void update_columns(const T* __restrict a, std::int64_t n, const T* rk, const T* next,
                                   T* __restrict g, std::int64_t c, std::int64_t pc) {
  if (next) {
#pragma GCC unroll 16
    for (int k = 0; k < R; ++k) __builtin_prefetch(next + k * n + pc, 0, 2);
  }
  vstore<B>(g + c, vload<B>(g + c) + weighted_rows<R, B, T>(a, n, rk, c));
}

// One block of R rows at a (row length n, R consecutive rows):
//   r_k = y_k - a_k . x                     (dot phase, rows streamed from memory)
//   g  += sum_k r_k a_k  when g is non-null (update phase, rows from L1/L2),
// the update phase prefetching the next R rows into L2.
//
// The update prefetches one address every `pstride` elements of each next row
// (a power of two: 64 or 128 bytes' worth, from two_phase_prefetch_bytes()).
template <int R, int B, class T>
OPFORGE_INLINE void block(const T* __restrict a, std::int64_t n, const T* __restrict x, const T* y, T* r,
                          T* __restrict g, std::int64_t pstride) {
  constexpr std::int64_t W = B / sizeof(T);             // lanes of a vector
  constexpr int U = R >= kChains ? 1 : kChains / R;     // vectors of a row per step
  Vec<T, B> acc[R][U];
#pragma GCC unroll 16
  for (int k = 0; k < R; ++k)
#pragma GCC unroll 16
    for (int u = 0; u < U; ++u) acc[k][u] = Vec<T, B>{};
  std::int64_t j = 0;
  for (; j + U * W <= n; j += U * W) {
#pragma GCC unroll 16
    for (int u = 0; u < U; ++u) {
      const Vec<T, B> xv = vload<B>(x + j + u * W);
#pragma GCC unroll 16
      for (int k = 0; k < R; ++k) acc[k][u] += vload<B>(a + k * n + j + u * W) * xv;
    }
  }
  for (; j + W <= n; j += W) {
    const Vec<T, B> xv = vload<B>(x + j);
#pragma GCC unroll 16
    for (int k = 0; k < R; ++k) acc[k][0] += vload<B>(a + k * n + j) * xv;
  }
  T rk[R];
#pragma GCC unroll 16
  for (int k = 0; k < R; ++k) {
    Vec<T, B> v = acc[k][0];
#pragma GCC unroll 16
    for (int u = 1; u < U; ++u) v += acc[k][u];
    T s = hsum<B, T>(v);
    for (std::int64_t t = j; t < n; ++t) s += a[k * n + t] * x[t];
    rk[k] = r[k] = y[k] - s;
  }
  if (!g) return;
  const T* next = a + R * n;  // the next block (past the chunk's end: a harmless prefetch)
  const std::int64_t nv = n / W * W;
  for (j = nv; j < n; ++j) {
    T u = 0;
    for (int k = 0; k < R; ++k) u += rk[k] * a[k * n + j];
    g[j] += u;
  }
  // The dot phase leaves the block's last columns in L1. When the block is
  // larger than L1, the update runs from the last columns back, so that it
  // starts on what L1 still holds. Measured on Zen 5, 2 threads, medians of
  // rounds against the read: float64 d = 1000 1.57x -> 1.45x (fast-memory
  // regime), float32 d = 2000 1.20x -> 1.17x (fast) and 1.10x -> 1.07x (slow),
  // other sizes unchanged. Either order does the same arithmetic on each
  // column: same bits.
  //
  // The next block is prefetched from its first columns on in either case: its
  // dot phase reads them first, and the prefetches issued first have the most
  // time to arrive (a backward update once prefetched the same columns it
  // updated, so the first columns came last. Measured on Zen 5, round-robin in
  // one process, 2 threads, two batches of 30-40 rounds: float64 d = 1000
  // 1-2% faster in both memory regimes, float32 d = 2000/4000 and float64
  // d = 2000 within 1%).
  const std::int64_t pmask = pstride - 1;
  if (R * n * static_cast<std::int64_t>(sizeof(T)) > kL1Block) {
    for (j = nv - W; j >= 0; j -= W) {
      const std::int64_t pc = nv - W - j;
      update_columns<R, B>(a, n, rk, (pc & pmask) == 0 ? next : nullptr, g, j, pc);
    }
  } else {
    for (j = 0; j < nv; j += W) update_columns<R, B>(a, n, rk, (j & pmask) == 0 ? next : nullptr, g, j, j);
  }
}

// Rows [lo, hi) of A; g (may be null) is this chunk's partial A^T r, zeroed here.
template <int R, int B, class T>
OPFORGE_INLINE double chunk_rows(const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi,
                                 std::int64_t n, T* r, T* g, std::int64_t pstride) {
  if (g) std::memset(g, 0, sizeof(T) * static_cast<std::size_t>(n));
  std::int64_t i = lo;
  for (; i + R <= hi; i += R) block<R, B>(A + i * n, n, x, y + i, r + i, g, pstride);
  if constexpr (R > kRowsPerStep) {  // chunks hold a multiple of 8 rows, not always of R
    for (; i + kRowsPerStep <= hi; i += kRowsPerStep)
      block<kRowsPerStep, B>(A + i * n, n, x, y + i, r + i, g, pstride);
  }
  for (; i < hi; ++i) block<1, B>(A + i * n, n, x, y + i, r + i, g, pstride);
  double loss = 0;
  for (std::int64_t k = lo; k < hi; ++k) loss += double(r[k]) * double(r[k]);
  return loss;
}

// Rows a block (two_phase_block_rows(), decided once a call): 8, or 16 where
// that pays (below); fewer where the block would not fit in L2 with room to
// spare (over 256 KiB), so that the update phase always reads from cache. A
// function of n, the element size and the instance only: same rounding for
// every thread count.
//
// 16 rows halve the loads of x and the loads and stores of g per row of A.
// They pay where 8 rows no longer fit in L1 with x (so the update reads mostly
// from L2 either way) and 16 rows stay at 128 KiB or less: rows of 4-8 KiB
// (float32 d = 1000 to 2048, float64 d = 512 to 1024), and only with AVX-512,
// whose 32 vector registers hold the 16 dot-product accumulators (AVX2 has 16).
// Measured on the 2-core Zen 4 VM, round-robin in one process against the
// 8-row kernel, 2 threads, medians (float32 d = 4000, where both run 8 rows,
// gives the noise: 0.985-1.012): float64 d = 1000 0.965-1.000 over four runs
// while memory was slow and 0.965-0.980 over three while it was faster,
// float32 d = 1000 0.96-1.0, float32 d = 2000 0.967-1.01; one thread, float32
// d = 2000 0.955. Where 8 rows fit in L1 (float32 d = 500, float64 d = 250) 16
// rows were 5-9% slower.
//
// Nor where 16 rows put more than kL1Ways of their lines at one column in the
// same L1 set (rows_sharing_l1_set(), lstsq_kernel.hpp): rows a multiple of
// 4 KiB long (float32 d = 1024 or 2048, float64 d = 512 or 1024) put all 16
// there. Zen 4 VM, one thread, round-robin against the read: float32 d = 2048
// 1.45-1.49x the read with 16 rows, 1.18x with 8 (d = 2000 with 16: 1.17x);
// float64 d = 1024 1.61x with 16, 1.27-1.28x with 8 (d = 1000: 1.06-1.08x,
// A partly in L3). Rows 6 KiB long (float32 d = 1536) put 8 in a set and keep
// 16 rows: 1.20x, with 8 rows 1.33x.
constexpr int kL1Ways = 8;
constexpr std::int64_t kBlockBudget = 256 * 1024;
constexpr std::int64_t kWideBlockMax = 128 * 1024;  // the most a 16-row block holds
// `rows`: two_phase_block_rows() for this instance's width.
template <int B, class T>
OPFORGE_INLINE double chunk(const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi, std::int64_t n,
                            T* r, T* g, int prefetch_bytes, int rows) {
  const std::int64_t pstride = prefetch_bytes / static_cast<std::int64_t>(sizeof(T));  // elements between prefetches
  if constexpr (B == 64) {
    if (rows == 16) return chunk_rows<16, B>(A, x, y, lo, hi, n, r, g, pstride);
  }
  if (rows >= 8) return chunk_rows<8, B>(A, x, y, lo, hi, n, r, g, pstride);
  if (rows == 4) return chunk_rows<4, B>(A, x, y, lo, hi, n, r, g, pstride);
  if (rows == 2) return chunk_rows<2, B>(A, x, y, lo, hi, n, r, g, pstride);
  return chunk_rows<1, B>(A, x, y, lo, hi, n, r, g, pstride);
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
                                  std::int64_t n, T* r, T* g, int prefetch_bytes, int rows) {
  return chunk<64>(A, x, y, lo, hi, n, r, g, prefetch_bytes, rows);
}
template <class T>
OPFORGE_TARGET_V3 double chunk_v3(const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi,
                                  std::int64_t n, T* r, T* g, int prefetch_bytes, int rows) {
  return chunk<32>(A, x, y, lo, hi, n, r, g, prefetch_bytes, rows);
}
template <class T>
double chunk_base(const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi, std::int64_t n, T* r,
                  T* g, int prefetch_bytes, int rows) {
  return chunk<16>(A, x, y, lo, hi, n, r, g, prefetch_bytes, rows);
}

enum class Isa { v4, v3, base };
// Vector width in bytes of each instance of two_phase.
constexpr int width_of(Isa isa) { return isa == Isa::v4 ? 64 : isa == Isa::v3 ? 32 : 16; }
Isa detect_isa() {
  switch (opforge::sdk::cpu_vector_isa()) {  // the kernel's tests run every instance themselves
    case opforge::sdk::VectorIsa::avx512: return Isa::v4;
    case opforge::sdk::VectorIsa::avx2: return Isa::v3;
    case opforge::sdk::VectorIsa::baseline: break;
  }
  return Isa::base;
}

// The widest instance this CPU runs, found once.
Isa best_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

template <class T>
double run_two_phase(Isa isa, const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi, std::int64_t n,
                     T* r, T* g, int prefetch_bytes, int rows) {
  switch (isa) {
    case Isa::v4: return chunk_v4(A, x, y, lo, hi, n, r, g, prefetch_bytes, rows);
    case Isa::v3: return chunk_v3(A, x, y, lo, hi, n, r, g, prefetch_bytes, rows);
    default: return chunk_base(A, x, y, lo, hi, n, r, g, prefetch_bytes, rows);
  }
}

// ---- which kernel -----------------------------------------------------------------

LstsqKernel cpu_kernel() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  __builtin_cpu_init();
  if (__builtin_cpu_is("amd")) return LstsqKernel::two_phase;
#endif
  return LstsqKernel::pipelined;
}

// What `automatic` stands for: OPFORGE_LSTSQ_KERNEL when it names a variant (to
// compare the two on a CPU without rebuilding), else the CPU's choice. Throws
// std::invalid_argument for any other value.
LstsqKernel automatic_kernel() {
  const char* env = std::getenv("OPFORGE_LSTSQ_KERNEL");
  const std::string v = env ? env : "";
  if (v.empty() || v == "automatic") return cpu_kernel();
  if (v == "pipelined") return LstsqKernel::pipelined;
  if (v == "two_phase") return LstsqKernel::two_phase;
  throw std::invalid_argument("environment variable OPFORGE_LSTSQ_KERNEL: expected pipelined, two_phase or "
                              "automatic (or unset), got '" + v + "'");
}

template <class T>
double run_chunk(LstsqKernel kernel, Isa isa, const T* A, const T* x, const T* y, std::int64_t lo, std::int64_t hi,
                 std::int64_t n, T* r, T* g, int prefetch_bytes, int rows) {
  return kernel == LstsqKernel::two_phase ? run_two_phase(isa, A, x, y, lo, hi, n, r, g, prefetch_bytes, rows)
                                          : run_pipelined(A, x, y, lo, hi, n, r, g);
}

// The last-level cache's size in bytes (32 MiB where the system does not say),
// read once.
std::int64_t l3_bytes() {
  static const std::int64_t bytes = [] {
    const std::int64_t v = opforge::sdk::last_level_cache_bytes();
    return v > 0 ? v : std::int64_t(32) << 20;
  }();
  return bytes;
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
double fused(const T* A, const T* x, const T* y, std::int64_t m, std::int64_t n, T* r, T* g, LstsqKernel kernel,
             Isa isa, int prefetch_bytes = 0) {
  static const LstsqKernel automatic = automatic_kernel();
  if (kernel == LstsqKernel::automatic) kernel = automatic;
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
  if (prefetch_bytes == 0) prefetch_bytes = two_phase_prefetch_bytes(bytes, l3_bytes());
  const int block_rows = kernel == LstsqKernel::two_phase
                             ? two_phase_block_rows(width_of(isa), n * static_cast<std::int64_t>(sizeof(T)))
                             : 0;

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
      losses[static_cast<std::size_t>(c)] =
          run_chunk(kernel, isa, A, x, y, lo, hi, n, r, pg, prefetch_bytes, block_rows);
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

const char* kernel_name(LstsqKernel kernel) {
  if (kernel == LstsqKernel::automatic) {
    try {
      kernel = automatic_kernel();
    } catch (const std::invalid_argument&) {
      return "none: OPFORGE_LSTSQ_KERNEL is invalid";
    }
  }
  return kernel == LstsqKernel::two_phase ? "two_phase" : "pipelined";
}

double lstsq_fused(const double* A, const double* x, const double* y, std::int64_t m, std::int64_t n, double* r,
                   double* g, LstsqKernel kernel) {
  return fused(A, x, y, m, n, r, g, kernel, best_isa());
}
double lstsq_fused(const float* A, const float* x, const float* y, std::int64_t m, std::int64_t n, float* r,
                   float* g, LstsqKernel kernel) {
  return fused(A, x, y, m, n, r, g, kernel, best_isa());
}

namespace {

Isa isa_of_width(int vector_bytes) {
  for (Isa isa : {Isa::v4, Isa::v3, Isa::base}) {
    if (width_of(isa) != vector_bytes) continue;
    if (vector_bytes > widest_two_phase_width())
      throw std::invalid_argument("lstsq two_phase kernel: this CPU cannot run the " + std::to_string(vector_bytes) +
                                  "-byte instance (it runs up to " + std::to_string(widest_two_phase_width()) +
                                  " bytes)");
    return isa;
  }
  throw std::invalid_argument("lstsq two_phase kernel: vector width must be 64, 32 or 16 bytes, got " +
                              std::to_string(vector_bytes));
}

int checked_prefetch_bytes(int prefetch_bytes) {
  if (prefetch_bytes == 0 || prefetch_bytes == 64 || prefetch_bytes == 128) return prefetch_bytes;
  throw std::invalid_argument("lstsq two_phase kernel: prefetch stride must be 64 or 128 bytes (or 0: automatic), got " +
                              std::to_string(prefetch_bytes));
}
}  // namespace

int widest_two_phase_width() { return width_of(best_isa()); }

int rows_sharing_l1_set(std::int64_t row_bytes, int rows) {
  if (row_bytes < 0 || rows < 0)
    throw std::invalid_argument("rows_sharing_l1_set: row_bytes and rows must be non-negative, got " +
                                std::to_string(row_bytes) + " and " + std::to_string(rows));
  constexpr std::int64_t kWay = 4096, kLine = 64;  // an L1 way: 64 sets of 64-byte lines
  const std::int64_t step = row_bytes % kWay;  // how far each row's start moves within a way
  // Rows whose offsets lie less than a line after row k's share its set at
  // some alignment of the column; the most found is the answer. No storage:
  // two_phase_block_rows() asks this on calls where 16 rows are possible.
  int most = 0;
  for (int k = 0; k < rows; ++k) {
    int here = 0;
    for (int l = 0; l < rows; ++l) here += (step * (l - k) % kWay + kWay) % kWay < kLine;
    most = std::max(most, here);
  }
  return most;
}

int two_phase_block_rows(int vector_bytes, std::int64_t row_bytes) {
  // The reasons and the figures are above chunk().
  if (vector_bytes == 64 && 8 * row_bytes >= kL1Block && 16 * row_bytes <= kWideBlockMax &&
      rows_sharing_l1_set(row_bytes, 16) <= kL1Ways)
    return 16;
  if (8 * row_bytes <= kBlockBudget) return 8;
  if (4 * row_bytes <= kBlockBudget) return 4;
  if (2 * row_bytes <= kBlockBudget) return 2;
  return 1;
}

int two_phase_prefetch_bytes(std::int64_t a_bytes, std::int64_t cache_bytes) {
  return a_bytes > 2 * cache_bytes ? 128 : 64;
}

double lstsq_two_phase_at(int vector_bytes, const double* A, const double* x, const double* y, std::int64_t m,
                          std::int64_t n, double* r, double* g, int prefetch_bytes) {
  return fused(A, x, y, m, n, r, g, LstsqKernel::two_phase, isa_of_width(vector_bytes),
               checked_prefetch_bytes(prefetch_bytes));
}
double lstsq_two_phase_at(int vector_bytes, const float* A, const float* x, const float* y, std::int64_t m,
                          std::int64_t n, float* r, float* g, int prefetch_bytes) {
  return fused(A, x, y, m, n, r, g, LstsqKernel::two_phase, isa_of_width(vector_bytes),
               checked_prefetch_bytes(prefetch_bytes));
}

}  // namespace opforge_ops::loss
