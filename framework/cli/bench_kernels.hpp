// Reference kernels the benchmarks measure against.
#pragma once

#include <cstdint>

namespace opforge_cli {

/// Sum of n elements in parallel: the time to read the memory once (the
/// `bandwidth` row of `opforge bench lstsq`).
double read_once_sum(const double* p, std::int64_t n);
double read_once_sum(const float* p, std::int64_t n);

}  // namespace opforge_cli
