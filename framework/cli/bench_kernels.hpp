// Reference kernels the benchmarks measure against.
#pragma once

#include <cstdint>
#include <vector>

namespace opforge_cli {

/// Sum of n elements in parallel: the time to read the memory once (the
/// `bandwidth` row of `opforge bench lstsq`).
double read_once_sum(const double* p, std::int64_t n);
double read_once_sum(const float* p, std::int64_t n);

/// Evicts what earlier work left in the caches by reading, on every thread, a
/// buffer of its own several times the last-level cache (`opforge bench lstsq
/// --caches cold`). What the caches hold after flush() is that buffer, not the
/// caller's data.
class CacheFlusher {
 public:
  CacheFlusher();  // allocates and touches the buffer
  void flush() const;
  std::int64_t bytes() const { return static_cast<std::int64_t>(buffer_.size() * sizeof(double)); }
  /// Bytes of the largest data cache this machine reports (the last level: L3
  /// on most x86 CPUs), or 0 when it reports none; the buffer is sized from it.
  std::int64_t cache_bytes() const { return cache_bytes_; }

 private:
  std::int64_t cache_bytes_;
  std::vector<double> buffer_;
};

}  // namespace opforge_cli
