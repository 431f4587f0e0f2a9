// One thread setting, no oversubscription (docs/architecture.md, "Threads"):
// BLAS runs inside a oneTBB parallel region only for products small enough that
// OpenBLAS itself runs them on the calling thread (m·n·k below
// opforge::sdk::kBlasSerialWork); bigger products are issued one at a time from
// the op's thread and OpenBLAS threads them.
//
// The test watches OpenBLAS's own worker threads. They are found as the threads
// that gain CPU time while one big product runs on this thread and no oneTBB
// work is running; then a batched matmul of small matrices (spread over oneTBB)
// must leave them idle, and a batched matmul of big matrices must not (the
// control: the watch can see them work). CPU time per thread comes from
// /proc/self/task/<tid>/schedstat (nanoseconds), so the test runs on Linux only.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>
#include <sys/syscall.h>

#include <opforge/opforge.hpp>
#include <opforge/sdk/parallel.hpp>

using opforge::DType;
using opforge::Tensor;

namespace {

// CPU nanoseconds of every thread of this process but the calling one.
std::map<long, std::int64_t> other_threads_cpu_ns() {
  const long self = static_cast<long>(::syscall(SYS_gettid));
  std::map<long, std::int64_t> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    const long tid = std::stol(e.path().filename().string());
    if (tid == self) continue;
    std::ifstream in(e.path() / "schedstat");
    std::int64_t ns = 0;
    if (in >> ns) out[tid] = ns;
  }
  return out;
}

std::int64_t cpu_gained(const std::map<long, std::int64_t>& before, const std::map<long, std::int64_t>& after,
                        const std::set<long>& tids) {
  std::int64_t sum = 0;
  for (long t : tids) {
    auto a = after.find(t), b = before.find(t);
    if (a != after.end() && b != before.end()) sum += a->second - b->second;
  }
  return sum;
}

// OpenBLAS workers spin for a while after a job before they sleep (2^22 cycles
// as opforge sets it, far longer if the environment chose so); wait that out so
// spinning is not counted.
void let_pools_idle() { std::this_thread::sleep_for(std::chrono::milliseconds(600)); }

// OpenBLAS's workers: the threads that gain CPU time while big products run on
// this thread (and nothing else runs). Empty for a single-threaded BLAS.
std::set<long> find_blas_workers(const opforge::OpHandle& matmul) {
  const Tensor P = Tensor::randn({700, 700}, DType::Float64, 1), Q = Tensor::randn({700, 700}, DType::Float64, 2);
  matmul({P, Q});  // warm-up: OpenBLAS's pool starts
  let_pools_idle();
  auto t0 = other_threads_cpu_ns();
  for (int i = 0; i < 3; ++i) matmul({P, Q});
  auto t1 = other_threads_cpu_ns();
  std::set<long> workers;
  for (const auto& [tid, ns] : t1)
    if (t0.count(tid) && ns - t0[tid] > 2'000'000) workers.insert(tid);
  return workers;
}

// Sets 2 threads and finds OpenBLAS's workers; empty, with a warning and the
// thread setting back to its default, where they cannot be watched.
std::set<long> watch_blas_workers(const opforge::OpHandle& matmul) {
  if (!std::filesystem::exists("/proc/self/task")) {
    WARN("needs Linux /proc: not checked");
    return {};
  }
  opforge::set_num_threads(2);
  std::set<long> workers = find_blas_workers(matmul);
  if (workers.empty()) {
    WARN("OpenBLAS ran the big product on one thread (a single-threaded BLAS): nothing to check");
    opforge::set_num_threads(0);
  }
  return workers;
}

}  // namespace

TEST_CASE("blas threads: small products batched over oneTBB leave OpenBLAS's own threads idle", "[threads][blas]") {
  const opforge::OpHandle matmul = opforge::op("linalg.matmul");
  // OpenBLAS's workers, found with 700^3 products (far above the threshold) on this thread.
  const std::set<long> blas_workers = watch_blas_workers(matmul);
  if (blas_workers.empty()) return;

  // 256 products of 48 x 48 x 48 = 110,592 multiply-adds each: below the threshold,
  // spread over oneTBB by the batched matmul.
  static_assert(48 * 48 * 48 < opforge::sdk::kBlasSerialWork);
  const Tensor A = Tensor::randn({256, 48, 48}, DType::Float64, 3), B = Tensor::randn({256, 48, 48}, DType::Float64, 4);
  Tensor C;
  let_pools_idle();
  auto t0 = other_threads_cpu_ns();
  const auto wall0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) C = matmul({A, B});
  const double wall_ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - wall0).count();
  auto t1 = other_threads_cpu_ns();
  const std::int64_t small_ns = cpu_gained(t0, t1, blas_workers);
  INFO("OpenBLAS workers' CPU time during the small batched products: " << small_ns / 1e6 << " ms of "
       << wall_ns / 1e6 << " ms");
  CHECK(small_ns < 0.02 * wall_ns + 1e6);

  // The batched result is right: matrix 200 against its own 2-D product.
  const Tensor c200 = matmul({A.select(0, 200), B.select(0, 200)});
  CHECK(C.select(0, 200).to_vector() == c200.to_vector());

  // Control: 4 products of 400^3 (above the threshold) are issued one after
  // another from this thread, and OpenBLAS's workers share them.
  const Tensor A2 = Tensor::randn({4, 400, 400}, DType::Float64, 5);
  const Tensor B2 = Tensor::randn({4, 400, 400}, DType::Float64, 6);
  let_pools_idle();
  t0 = other_threads_cpu_ns();
  for (int i = 0; i < 3; ++i) matmul({A2, B2});
  t1 = other_threads_cpu_ns();
  CHECK(cpu_gained(t0, t1, blas_workers) > 2'000'000);
  opforge::set_num_threads(0);
}

TEST_CASE("blas threads: OpenBLAS's workers stop spinning milliseconds after a product, leaving the cores to oneTBB",
          "[threads][blas]") {
  // As Debian builds it, OpenBLAS's workers spin for a fifth of a second or
  // more after each call; opforge sets OPENBLAS_THREAD_TIMEOUT to 22 (2^22
  // cycles, ~1.5 ms) when the environment does not (docs/architecture.md).
  const char* timeout = std::getenv("OPENBLAS_THREAD_TIMEOUT");
  REQUIRE(timeout != nullptr);  // set by opforge if not by the environment
  if (std::string(timeout) != "22") {
    WARN("OPENBLAS_THREAD_TIMEOUT=" << timeout << " came from the environment: opforge left it; not checked");
    return;
  }
  const opforge::OpHandle matmul = opforge::op("linalg.matmul");
  const std::set<long> blas_workers = watch_blas_workers(matmul);
  if (blas_workers.empty()) return;
  const Tensor P = Tensor::randn({500, 500}, DType::Float64, 7), Q = Tensor::randn({500, 500}, DType::Float64, 8);
  for (int round = 0; round < 3; ++round) {
    matmul({P, Q});
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // past 2^22 cycles at any clock above 0.2 GHz
    const auto t0 = other_threads_cpu_ns();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const auto t1 = other_threads_cpu_ns();
    const std::int64_t spun = cpu_gained(t0, t1, blas_workers);
    INFO("round " << round << ": OpenBLAS workers' CPU time 20-120 ms after a product: " << spun / 1e6 << " ms");
    CHECK(spun < 5'000'000);  // spinning workers would take ~100 ms of it
  }
  opforge::set_num_threads(0);
}

TEST_CASE("blas threads: set_num_threads refuses more than kMaxThreads and keeps the setting it had",
          "[threads]") {
  opforge::set_num_threads(2);
  CHECK_THROWS_MATCHES(opforge::set_num_threads(opforge::kMaxThreads + 1), opforge::ValueError,
                       Catch::Matchers::Message(
                           "set_num_threads: argument 'n': expected at most 1024 threads (or <= 0 for every core), "
                           "got 1025 (a million threads made oneTBB reserve gigabytes; OpenBLAS stops at 64 anyway)"));
  CHECK_THROWS_AS(opforge::set_num_threads(2147483647), opforge::ValueError);
  CHECK(opforge::num_threads() == 2);
  opforge::set_num_threads(opforge::kMaxThreads);  // the limit itself is taken
  CHECK(opforge::num_threads() == opforge::kMaxThreads);
  opforge::set_num_threads(0);
  CHECK(opforge::num_threads() == opforge::hardware_threads());
}
