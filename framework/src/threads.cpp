// One thread setting for oneTBB and OpenBLAS.
//
// OpenBLAS (pthread build) runs its own pool; oneTBB runs another. Both are
// sized by the one setting here. The standard kernels call BLAS from inside a
// oneTBB parallel region only for products below sdk::kBlasSerialWork, which
// OpenBLAS runs on the calling thread; bigger ones are called from the op's
// thread, one at a time. So the two pools never multiply
// (tests/test_blas_threads.cpp watches OpenBLAS's workers to show it).
#include "opforge/threads.hpp"

#include "opforge/error.hpp"
#include "opforge/sdk/cpu.hpp"

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <oneapi/tbb/global_control.h>

#include "opforge/blas.hpp"

extern "C" void openblas_set_num_threads(int num_threads);
extern "C" void openblas_read_env(void);
extern "C" int blas_thread_shutdown_(void);

namespace opforge {
namespace {

std::mutex g_mu;
std::unique_ptr<oneapi::tbb::global_control> g_control;
int g_threads = 0;

int default_threads() {
  if (const char* env = std::getenv("OPFORGE_NUM_THREADS")) {
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && errno == 0 && v > 0 && v <= kMaxThreads && !std::isspace(static_cast<unsigned char>(*env)))
      return static_cast<int>(v);
    // Read when the library loads: no caller to throw to, so say it once on
    // stderr and go on with every core, rather than ignore it silently.
    std::fprintf(stderr,
                 "opforge: OPFORGE_NUM_THREADS='%s' is not a whole number from 1 to %ld; using all %d cores "
                 "(unset it, or set it to a thread count)\n",
                 env, static_cast<long>(kMaxThreads), hardware_threads());
  }
  return hardware_threads();
}

void apply(int n) {
  g_control = std::make_unique<oneapi::tbb::global_control>(oneapi::tbb::global_control::max_allowed_parallelism,
                                                            static_cast<std::size_t>(n));
  openblas_set_num_threads(n);
  g_threads = n;
}

// After each call OpenBLAS's workers spin, waiting for the next, for
// 2^OPENBLAS_THREAD_TIMEOUT cycles before they sleep. As built by Debian that
// is long enough (~0.2 s or more) for a worker to hold a core while oneTBB's
// threads run the next ops: on the 2-core VM, elementwise.sqrt of 10^6 doubles
// took 0.58 ms right after an svd, 0.29 ms otherwise. 2^22 cycles (~1.5 ms)
// keeps the workers awake between the BLAS calls of one op and lets them sleep
// between ops (svd 256 / 512: the same 11-12 / 66-69 ms). A value the user
// set in the environment stands. OpenBLAS reads the variable when it is
// loaded and starts its workers then, so the core re-reads it and stops the
// workers once; OpenBLAS starts them again, with the new timeout, on its next
// threaded call.
void shorten_blas_spin() {
  if (std::getenv("OPENBLAS_THREAD_TIMEOUT")) return;
  ::setenv("OPENBLAS_THREAD_TIMEOUT", "22", 0);
  openblas_read_env();
  blas_thread_shutdown_();
}

}  // namespace

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

void set_num_threads(int n) {
  OPFORGE_CHECK(n <= kMaxThreads, ValueError, "set_num_threads: argument 'n': expected at most ", kMaxThreads,
                " threads (or <= 0 for every core), got ", n,
                " (a million threads made oneTBB reserve gigabytes; OpenBLAS stops at 64 anyway)");
  std::lock_guard<std::mutex> lock(g_mu);
  apply(n <= 0 ? hardware_threads() : n);
}

int num_threads() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_threads == 0) {
    shorten_blas_spin();
    detail::select_better_blas_core();
    apply(default_threads());
  }
  return g_threads;
}

namespace {
// Applies OPFORGE_NUM_THREADS as soon as the core library is loaded, so that
// every path (ops from plugins, make_op, BLAS called by the program) sees it.
const int g_initial_threads = num_threads();

// OPFORGE_VECTOR_ISA is read by each plugin (sdk::vector_isa()), which takes a
// value it does not know as no cap; say so once, here.
const bool g_vector_isa_checked = [] {
  const char* env = std::getenv("OPFORGE_VECTOR_ISA");
  if (!sdk::valid_vector_isa_cap(env))
    std::fprintf(stderr,
                 "opforge: OPFORGE_VECTOR_ISA='%s' is not baseline or avx2; kernels use the widest vector code "
                 "this CPU runs (unset it, or set it to baseline or avx2)\n",
                 env);
  return true;
}();
}  // namespace

}  // namespace opforge
