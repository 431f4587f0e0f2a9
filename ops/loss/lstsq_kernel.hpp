// The fused least-squares pass, shared by loss.lstsq's forward.
#pragma once

#include <cstdint>

namespace opforge_ops::loss {

/// One pass over A (m x n, row-major):
///   r = y - A x           (written to r, length m)
///   g = A^T r             (written to g, length n; skipped when g is null)
/// and returns ||r||^2. Each row block of A is read from memory once: its
/// residuals are formed, then its contribution to A^T r is added while the rows
/// are still in cache. Row blocks run in parallel; per-block partial sums of
/// A^T r are reduced in a fixed order, so the result is bit-identical from run
/// to run and independent of the thread count.
double lstsq_fused(const double* A, const double* x, const double* y, std::int64_t m, std::int64_t n, double* r,
                   double* g);
double lstsq_fused(const float* A, const float* x, const float* y, std::int64_t m, std::int64_t n, float* r,
                   float* g);

}  // namespace opforge_ops::loss
