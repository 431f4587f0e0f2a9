// Parallel loops over oneTBB, honouring opforge::set_num_threads.
//
// Small ranges run inline on the calling thread, so a kernel on a tiny tensor pays
// no threading overhead.
#pragma once

#include <cstdint>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

namespace opforge::sdk {

/// Calls body(b, e) on disjoint chunks [b, e) that cover [begin, end), in
/// parallel when the range holds more than one grain.
template <class Body>
void parallel_for(std::int64_t begin, std::int64_t end, std::int64_t grain, Body&& body) {
  if (end <= begin) return;
  if (grain < 1) grain = 1;
  if (end - begin <= grain) {
    body(begin, end);
    return;
  }
  oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<std::int64_t>(begin, end, grain),
                            [&](const oneapi::tbb::blocked_range<std::int64_t>& r) { body(r.begin(), r.end()); });
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

}  // namespace opforge::sdk
