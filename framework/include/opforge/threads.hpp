// One thread setting for the whole process: oneTBB and OpenBLAS together.
#pragma once

#include "opforge/export.hpp"

namespace opforge {

/// The most threads set_num_threads, OPFORGE_NUM_THREADS and --threads take: far
/// above any machine's cores (more only costs memory: oneTBB keeps state for each
/// thread it may run; OpenBLAS itself stops at its build's limit, 64 on Debian).
constexpr int kMaxThreads = 1024;

/// Sets how many threads opforge's kernels (oneTBB) and BLAS (OpenBLAS) use.
/// n <= 0 means all cores; above kMaxThreads, ValueError. OPFORGE_NUM_THREADS
/// sets the starting value (a value that is not a whole number from 1 to
/// kMaxThreads is reported on stderr, and all cores are used).
OPFORGE_API void set_num_threads(int n);
OPFORGE_API int num_threads();
/// Number of hardware threads of this machine.
OPFORGE_API int hardware_threads();

}  // namespace opforge
