// Parallel loops over oneTBB, honouring opforge::set_num_threads.
//
// Small ranges run inline on the calling thread, so a kernel on a tiny tensor pays
// no threading overhead.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include "opforge/export.hpp"
#include "opforge/sdk/grad_mode.hpp"

namespace opforge::sdk {

namespace detail {
/// Non-zero while the harness's split_work check runs (SplitWorkScope): every
/// parallel_for then cuts its range, however small, into pieces of unequal
/// sizes and runs them last to first on the calling thread, so that a body
/// whose results depend on where the range is cut (or in which order the pieces
/// run) shows it on a small sample.
OPFORGE_API extern std::atomic<int> split_work;

template <class Body>
void run_split(std::int64_t begin, std::int64_t end, Body& body) {
  constexpr int kMaxPieces = 16;
  std::int64_t cut[kMaxPieces + 1];
  const std::int64_t unit = std::max<std::int64_t>(1, (end - begin) / 24);
  int k = 0;
  cut[k++] = begin;
  for (std::int64_t at = begin; at < end && k < kMaxPieces;) {
    at = std::min(end, at + unit * (1 + (k - 1) % 3));  // 1, 2, 3, 1, 2, 3 ... units
    cut[k++] = at;
  }
  cut[k - 1] = end;
  for (int p = k - 1; p-- > 0;) body(cut[p], cut[p + 1]);
}
}  // namespace detail

/// Calls body(b, e) on disjoint chunks [b, e) that cover [begin, end), in
/// parallel when the range holds more than one grain. Every chunk runs in the
/// caller's grad mode (per thread): inside an op's forward or backward, ops and
/// views called from a worker record nothing, as on the op's own thread.
/// A body must give the same results however the range is cut and in whatever
/// order the chunks run (the harness's split_work check cuts it).
template <class Body>
void parallel_for(std::int64_t begin, std::int64_t end, std::int64_t grain, Body&& body) {
  if (end <= begin) return;
  if (grain < 1) grain = 1;
  if (detail::split_work.load(std::memory_order_relaxed) != 0) {
    detail::run_split(begin, end, body);
    return;
  }
  if (end - begin <= grain) {
    body(begin, end);
    return;
  }
  const bool grad_mode = grad_enabled();
  oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<std::int64_t>(begin, end, grain),
                            [&](const oneapi::tbb::blocked_range<std::int64_t>& r) {
                              GradModeScope mode(grad_mode);
                              body(r.begin(), r.end());
                            });
}

/// OpenBLAS runs a matrix product of at most this many multiply-adds (m·n·k) on
/// the calling thread alone (its SMP threshold, 65536 x GEMM_MULTITHREAD_THRESHOLD
/// = 4). A kernel may call BLAS gemm from inside parallel_for only for products
/// below it; bigger products must be called from the op's own thread, one at a
/// time, and OpenBLAS threads each with the one thread setting. Otherwise the
/// two pools multiply: N oneTBB threads each starting N OpenBLAS threads.
/// tests/test_blas_threads.cpp checks the linked OpenBLAS keeps to it.
inline constexpr std::int64_t kBlasSerialWork = std::int64_t{1} << 18;

/// Grain for element-wise loops: about 32 K elements a task.
inline constexpr std::int64_t kElementwiseGrain = 32768;

/// Terms per partial sum of deterministic_sum: fixed, never derived from the
/// thread count, because it sets the order of the additions (the rounding).
inline constexpr std::int64_t kDeterministicChunk = 4096;

/// Σ_{i < n} term(i) in double, with the same bits for any thread count and
/// from run to run: chunks of kDeterministicChunk terms are summed in parallel,
/// each with eight interleaved accumulators (vector registers, no add-latency
/// chain), and the chunk sums are added in chunk order. `term(i)` is called
/// once per i, possibly from several threads at once.
template <class Term>
double deterministic_sum(std::int64_t n, Term&& term) {
  constexpr std::int64_t C = kDeterministicChunk;
  auto chunk_sum = [&](std::int64_t b, std::int64_t e) {
    double acc[8] = {};
    std::int64_t i = b;
    for (; i + 8 <= e; i += 8)
      for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(term(i + l));
    double s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < e; ++i) s += static_cast<double>(term(i));
    return s;
  };
  if (n <= 0) return 0.0;
  if (n <= C) return chunk_sum(0, n);
  const std::int64_t chunks = (n + C - 1) / C;
  std::vector<double> partial(static_cast<std::size_t>(chunks));
  parallel_for(0, chunks, std::max<std::int64_t>(1, kElementwiseGrain / C), [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t c = lo; c < hi; ++c)
      partial[static_cast<std::size_t>(c)] = chunk_sum(c * C, std::min(n, (c + 1) * C));
  });
  double total = 0;
  for (double v : partial) total += v;
  return total;
}

}  // namespace opforge::sdk
