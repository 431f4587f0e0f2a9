#include "bench_kernels.hpp"

#include <vector>

#include <opforge/sdk/parallel.hpp>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define OPFORGE_KERNEL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define OPFORGE_KERNEL_CLONES
#endif

namespace opforge_cli {
namespace {

template <class T>
__attribute__((always_inline)) inline double sum_block(const T* p, std::int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (std::int64_t i = 0; i < n; ++i) s += p[i];
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

}  // namespace opforge_cli
