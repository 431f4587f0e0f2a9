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
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

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

/// The instruction sets a vectorised kernel is compiled for, narrowest first:
/// baseline x86-64 (SSE2, 16-byte vectors), AVX2 with FMA, BMI1 and BMI2 (the
/// vector part of x86-64-v3, 32-byte) and AVX-512 F, DQ, BW and VL (64-byte).
enum class VectorIsa { baseline, avx2, avx512 };

/// The widest VectorIsa this CPU and OS run; VectorIsa::baseline on other
/// architectures and compilers, and with Clang (which gets one baseline copy of
/// each kernel: OPFORGE_VECTOR_COPIES below).
inline VectorIsa cpu_vector_isa() noexcept {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)  // where the copies exist (below)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  if (avx2 && cpu_has_avx512()) return VectorIsa::avx512;
  return avx2 ? VectorIsa::avx2 : VectorIsa::baseline;
#else
  return VectorIsa::baseline;
#endif
}

/// True when `env` (OPFORGE_VECTOR_ISA's value, or null) is a cap opforge
/// knows: unset, empty, "baseline" or "avx2".
inline bool valid_vector_isa_cap(const char* env) noexcept {
  const std::string_view cap = env ? env : "";
  return cap.empty() || cap == "baseline" || cap == "avx2";
}

/// Reads a cap on VectorIsa from OPFORGE_VECTOR_ISA: unset or empty, none (the
/// CPU's widest); "baseline" or "avx2", at most that. Anything else is no cap:
/// the core library says so once on stderr when it loads (as it does for a bad
/// OPFORGE_NUM_THREADS), rather than every op throwing at its first call, which
/// stopped a long job minutes in.
inline VectorIsa capped_vector_isa(VectorIsa cpu, const char* env) noexcept {
  const std::string_view cap = env ? env : "";
  if (cap == "baseline") return VectorIsa::baseline;
  if (cap == "avx2") return cpu == VectorIsa::avx512 ? VectorIsa::avx2 : cpu;
  return cpu;
}

/// The copy of a vectorised kernel to run (run_vectorized below): the CPU's
/// widest, capped by OPFORGE_VECTOR_ISA (which the tests use to run every copy on
/// one machine). Found once per plugin.
inline VectorIsa vector_isa() noexcept {
  static const VectorIsa isa = capped_vector_isa(cpu_vector_isa(), std::getenv("OPFORGE_VECTOR_ISA"));
  return isa;
}

// GCC target attributes of the copies (nothing elsewhere: one copy).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define OPFORGE_TARGET_AVX2 __attribute__((target("avx2,fma,bmi,bmi2")))
#define OPFORGE_TARGET_AVX512 __attribute__((target("avx2,fma,bmi,bmi2,avx512f,avx512dq,avx512bw,avx512vl")))
#define OPFORGE_VECTOR_COPIES 1
#else
#define OPFORGE_TARGET_AVX2
#define OPFORGE_TARGET_AVX512
#define OPFORGE_VECTOR_COPIES 0
#endif
/// Marks a kernel's body for run_vectorized: `struct K { template <class...A>
/// OPFORGE_KERNEL_BODY static auto run(A...) {...} };` (always inlined into
/// each copy, so that its loops are compiled for that copy's instruction set).
#define OPFORGE_KERNEL_BODY __attribute__((always_inline)) inline

namespace vector_copy {
template <class K, class... A>
OPFORGE_TARGET_AVX512 decltype(auto) run_avx512(A&&... a) {
  return K::run(std::forward<A>(a)...);
}
template <class K, class... A>
OPFORGE_TARGET_AVX2 decltype(auto) run_avx2(A&&... a) {
  return K::run(std::forward<A>(a)...);
}
template <class K, class... A>
decltype(auto) run_baseline(A&&... a) {
  return K::run(std::forward<A>(a)...);
}
}  // namespace vector_copy

/// K::run(a...) compiled for `isa` (one of the three copies; the caller checks
/// that the CPU runs it). Lambdas passed in are inlined into the copy too.
/// Floating-point results are the same in every copy only where the loops fix
/// their order of operations and the plugin is built with -ffp-contract=off
/// (AVX2 and AVX-512 have FMA instructions); libmvec's exp, log, ... differ in
/// the last bits between widths.
template <class K, class... A>
decltype(auto) run_for_isa(VectorIsa isa, A&&... a) {
#if OPFORGE_VECTOR_COPIES
  switch (isa) {
    case VectorIsa::avx512: return vector_copy::run_avx512<K>(std::forward<A>(a)...);
    case VectorIsa::avx2: return vector_copy::run_avx2<K>(std::forward<A>(a)...);
    case VectorIsa::baseline: break;
  }
#else
  (void)isa;
#endif
  return vector_copy::run_baseline<K>(std::forward<A>(a)...);
}

/// K::run(a...) in the copy vector_isa() picks.
template <class K, class... A>
decltype(auto) run_vectorized(A&&... a) {
  return run_for_isa<K>(vector_isa(), std::forward<A>(a)...);
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
