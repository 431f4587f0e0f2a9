#include "bench_kernels.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#pragma GCC diagnostic ignored "-Wpsabi"

#include <opforge/sdk/cpu.hpp>
#include <opforge/sdk/parallel.hpp>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define OPFORGE_KERNEL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define OPFORGE_KERNEL_CLONES
#endif

namespace opforge_cli {
namespace {

// A sum with one accumulator runs at one addition per add latency (a 4-cycle
// chain), which caps it near 40 GB/s a core: below what memory gives. Four
// independent 64-byte accumulators take latency out of the way, so the time is
// that of moving the bytes.
template <class T>
struct Vec64;
template <>
struct Vec64<double> { typedef double type __attribute__((vector_size(64))); };
template <>
struct Vec64<float> { typedef float type __attribute__((vector_size(64))); };

template <class T>
__attribute__((always_inline)) inline double sum_block(const T* p, std::int64_t n) {
  using V = typename Vec64<T>::type;
  constexpr std::int64_t W = sizeof(V) / sizeof(T);
  V s0{}, s1{}, s2{}, s3{};
  std::int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    V a, b, c, d;
    std::memcpy(&a, p + i, sizeof a);
    std::memcpy(&b, p + i + W, sizeof b);
    std::memcpy(&c, p + i + 2 * W, sizeof c);
    std::memcpy(&d, p + i + 3 * W, sizeof d);
    s0 += a;
    s1 += b;
    s2 += c;
    s3 += d;
  }
  const V v = (s0 + s1) + (s2 + s3);
  double s = 0;
  for (std::int64_t k = 0; k < W; ++k) s += v[k];
  for (; i < n; ++i) s += p[i];
  return s;
}
OPFORGE_KERNEL_CLONES double sum_f64(const double* p, std::int64_t n) { return sum_block(p, n); }
OPFORGE_KERNEL_CLONES double sum_f32(const float* p, std::int64_t n) { return sum_block(p, n); }

template <class T, class F>
double parallel_sum(const T* p, std::int64_t n, F block_sum) {
  constexpr std::int64_t kChunk = 1 << 16;  // elements per task
  const std::int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> parts(static_cast<std::size_t>(chunks));
  opforge::sdk::parallel_for(0, chunks, 1, [&](std::int64_t c0, std::int64_t c1) {
    for (std::int64_t c = c0; c < c1; ++c) {
      const std::int64_t lo = c * kChunk, hi = lo + kChunk < n ? lo + kChunk : n;
      parts[static_cast<std::size_t>(c)] = block_sum(p + lo, hi - lo);
    }
  });
  double s = 0;
  for (double v : parts) s += v;
  return s;
}

}  // namespace

double read_once_sum(const double* p, std::int64_t n) { return parallel_sum(p, n, sum_f64); }
double read_once_sum(const float* p, std::int64_t n) { return parallel_sum(p, n, sum_f32); }

// Four times the last-level cache, at least 64 MiB: a victim L3 (AMD Zen) or one
// whose replacement protects lines that hit keeps part of the caller's data
// through one pass over a buffer of its own size.
CacheFlusher::CacheFlusher()
    : cache_bytes_(opforge::sdk::last_level_cache_bytes()),
      buffer_(static_cast<std::size_t>(std::max<std::int64_t>(64 << 20, 4 * cache_bytes_) /
                                       static_cast<std::int64_t>(sizeof(double))),
              1.0) {}

void CacheFlusher::flush() const {
  volatile double sink = read_once_sum(buffer_.data(), static_cast<std::int64_t>(buffer_.size()));
  (void)sink;
}

}  // namespace opforge_cli
