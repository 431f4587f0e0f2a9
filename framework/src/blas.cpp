// OpenBLAS's choice of kernels (opforge/blas.hpp says why opforge may change it).
#include "opforge/blas.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <optional>
#include <string>

#include "opforge/sdk/cpu.hpp"

// OpenBLAS's C API, and two functions of its DYNAMIC_ARCH builds (declared
// weak: a build for one CPU lacks them, and then nothing is changed).
extern "C" char* openblas_get_corename(void);
extern "C" int blas_thread_shutdown_(void);
extern "C" void gotoblas_dynamic_init(void) __attribute__((weak));
extern "C" void gotoblas_dynamic_quit(void) __attribute__((weak));

namespace opforge {
namespace {

// Set by select_better_blas_core, which runs during the static initialisation
// of another file (threads.cpp): a function-local static is constructed on use.
std::string& note() {
  static std::string text;
  return text;
}

bool same_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// OpenBLAS's x86-64 kernel sets that use neither AVX2 nor AVX-512: a CPU with
// AVX2 that gets one of these was not recognised. (Excavator, Haswell, Zen,
// SkylakeX, Cooperlake and SapphireRapids use AVX2 or more.)
constexpr std::array<std::string_view, 20> kPreAvx2Cores = {
    "Katmai",  "Coppermine", "Northwood",  "Prescott",    "Banias",    "Atom",     "Core2",
    "Penryn",  "Dunnington", "Nehalem",    "Athlon",      "Opteron",   "Opteron_SSE3",
    "Barcelona", "Nano",     "Sandybridge", "Bobcat",     "Bulldozer", "Piledriver", "Steamroller"};

struct CpuFeatures {
  bool avx2_fma = false;
  bool avx512 = false;
};

CpuFeatures cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  f.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = f.avx2_fma && sdk::cpu_has_avx512();
#endif
  return f;
}

// Restores an environment variable's value (or its absence) on scope exit.
class EnvRestore {
 public:
  explicit EnvRestore(const char* name) : name_(name) {
    if (const char* v = std::getenv(name)) old_ = v;
  }
  ~EnvRestore() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  EnvRestore(const EnvRestore&) = delete;
  EnvRestore& operator=(const EnvRestore&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// Re-runs OpenBLAS's choice of kernels with OPENBLAS_CORETYPE=core for that
// choice alone.
void reselect(const std::string& core) {
  EnvRestore restore("OPENBLAS_CORETYPE");  // OpenBLAS reads it in gotoblas_dynamic_init only
  ::setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
}

}  // namespace

std::string blas_core() {
  const char* name = openblas_get_corename();
  return name ? name : "";
}

std::string blas_core_note() { return note(); }

namespace detail {

std::string better_blas_core(std::string_view picked, bool avx2_fma, bool avx512) {
  if (!avx2_fma) return "";
  const bool old = std::any_of(kPreAvx2Cores.begin(), kPreAvx2Cores.end(),
                               [&](std::string_view c) { return same_name(c, picked); });
  if (!old) return "";
  return avx512 ? "SkylakeX" : "Haswell";
}

bool select_blas_core(const std::string& core) {
  if (!gotoblas_dynamic_init || !gotoblas_dynamic_quit) return false;
  const std::string before = blas_core();
  blas_thread_shutdown_();  // idle workers stop; OpenBLAS starts them again on its next threaded call
  reselect(core);
  if (same_name(blas_core(), core)) return true;
  // An unknown name makes OpenBLAS detect the CPU again; put back what ran before.
  if (!same_name(blas_core(), before)) reselect(before);
  return false;
}

void select_better_blas_core() {
  note().clear();
  if (std::getenv("OPENBLAS_CORETYPE")) return;  // the user's choice stands
  const CpuFeatures f = cpu_features();
  const std::string picked = blas_core();
  const std::string better = better_blas_core(picked, f.avx2_fma, f.avx512);
  if (better.empty() || !select_blas_core(better)) return;
  note() = "OpenBLAS took this CPU for one without AVX2 (it picked its " + picked +
           " kernels); opforge selected its " + better + " kernels, for the CPU's " +
           (f.avx512 ? "AVX-512" : "AVX2 and FMA") + " (set OPENBLAS_CORETYPE to choose others)";
}

}  // namespace detail
}  // namespace opforge
