// What the CPU runs, for kernels compiled more than once (GCC target
// attributes) that pick their copy at run time.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>

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

/// Bytes of the largest data cache CPU 0 uses (the last level: L3 on most x86
/// CPUs), or 0 when the system says nothing. Read from Linux's sysfs, which
/// describes the cache a core's data can sit in ("32768K"); glibc's
/// sysconf(_SC_LEVEL3_CACHE_SIZE), computed from CPUID, may give the whole
/// package's L3 instead (320-384 MiB on 2-core VMs of EPYC CPUs whose cores each
/// see 32 MiB), so it is only the fallback. Reads files: call it once, not per
/// kernel call. (Written with <cstdio>: every plugin includes this header
/// through opforge/sdk.hpp, and <fstream> would cost each of them ~2% more
/// compile time.)
inline std::int64_t last_level_cache_bytes() {
  std::int64_t best = 0;
  for (int index = 0; index < 8; ++index) {
    char path[64];
    std::snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
    std::FILE* in = std::fopen(path, "r");
    if (!in) continue;
    long long v = 0;
    char unit[8] = "";
    const int got = std::fscanf(in, "%lld %7s", &v, unit);
    std::fclose(in);
    if (got < 1) continue;
    if (std::strcmp(unit, "K") == 0) v <<= 10;
    else if (std::strcmp(unit, "M") == 0) v <<= 20;
    best = std::max<std::int64_t>(best, v);
  }
#ifdef _SC_LEVEL3_CACHE_SIZE
  if (best == 0) {
    best = std::max<std::int64_t>(::sysconf(_SC_LEVEL3_CACHE_SIZE), ::sysconf(_SC_LEVEL2_CACHE_SIZE));
    best = std::max<std::int64_t>(best, 0);
  }
#endif
  return best;
}

}  // namespace opforge::sdk
