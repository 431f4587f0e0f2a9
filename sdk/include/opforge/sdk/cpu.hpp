// What the CPU runs, for kernels compiled more than once (GCC target
// attributes) that pick their copy at run time.
#pragma once

#include <unistd.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

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

/// The share of a last-level cache that CPUID (or glibc's sysconf, which reads
/// it) reports, as one core of this CPU can use it. On AMD CPUs without the
/// topology leaf that CPUID figure can be the whole package's L3 (508 MiB on a
/// 2-core VM of a Zen 5 EPYC, 320 MiB on one of a Zen 4), where a core caches in
/// its own CCD's L3 only: 32 MiB on Zen 3 to Zen 5 (16 MiB a CCX on Zen 2, 96
/// MiB with 3D V-Cache). So on AMD the figure is capped at 32 MiB; other vendors'
/// L3 is shared by the whole package and is kept as reported.
inline std::int64_t core_share_of_reported_cache(std::int64_t reported_bytes, bool amd) noexcept {
  constexpr std::int64_t kAmdCcdL3 = std::int64_t(32) << 20;
  if (reported_bytes <= 0) return 0;
  return amd ? std::min(reported_bytes, kAmdCcdL3) : reported_bytes;
}

/// Bytes of the largest data cache CPU 0 uses (the last level: L3 on most x86
/// CPUs), or 0 when the system says nothing. Read from Linux's sysfs, which
/// describes the cache a core's data can sit in ("32768K"). Where sysfs has no
/// cache entries (some VMs), AMD's CPUID topology leaf 0x8000001D (the L3 of the
/// core's CCX), else glibc's sysconf(_SC_LEVEL3_CACHE_SIZE) through
/// core_share_of_reported_cache(). Reads files: call it once, not per kernel
/// call. (Written with <cstdio>: every plugin includes this header through
/// opforge/sdk.hpp, and <fstream> would cost each of them ~2% more compile
/// time.)
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
  if (best > 0) return best;
  bool amd = false;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  amd = __builtin_cpu_is("amd");
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (amd && __get_cpuid(0x80000000u, &a, &b, &c, &d) && a >= 0x8000001Du) {
    for (unsigned sub = 0; sub < 8; ++sub) {
      __cpuid_count(0x8000001Du, sub, a, b, c, d);
      const unsigned type = a & 31u;  // 0: no more caches; 2: instruction cache
      if (type == 0) break;
      if (type == 2) continue;
      const std::int64_t line = (b & 0xfffu) + 1, parts = ((b >> 12) & 0x3ffu) + 1,
                         ways = ((b >> 22) & 0x3ffu) + 1, sets = std::int64_t(c) + 1;
      best = std::max(best, line * parts * ways * sets);
    }
    if (best > 0) return best;
  }
#endif
#ifdef _SC_LEVEL3_CACHE_SIZE
  best = std::max<std::int64_t>(::sysconf(_SC_LEVEL3_CACHE_SIZE), ::sysconf(_SC_LEVEL2_CACHE_SIZE));
#endif
  return core_share_of_reported_cache(best, amd);
}

}  // namespace opforge::sdk
