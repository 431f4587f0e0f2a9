// What the CPU runs, for kernels compiled more than once (GCC target
// attributes) that pick their copy at run time.
#pragma once

namespace opforge::sdk {

/// Whether this CPU and OS run AVX-512 F, DQ, BW and VL (the vector part of
/// x86-64-v4; GCC's __builtin_cpu_supports also checks that the OS saves the
/// registers). False on other architectures and compilers.
inline bool cpu_has_avx512() noexcept {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

}  // namespace opforge::sdk
