// The fused least-squares kernel itself (ops/loss/lstsq_kernel.cpp, compiled into
// this test): both of its variants, whatever CPU the test runs on. The plugin
// path (tests/test_lstsq.cpp) runs only the variant picked for this CPU.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <opforge/opforge.hpp>
#include <opforge/sdk/cpu.hpp>

#include "lstsq_kernel.hpp"

using opforge_ops::loss::lstsq_fused;
using opforge_ops::loss::LstsqKernel;

namespace {

template <class T>
struct Problem {
  std::int64_t m, n;
  std::vector<T> A, x, y;
};

template <class T>
Problem<T> make(std::int64_t m, std::int64_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> N(0.0, 1.0);
  Problem<T> p{m, n, {}, {}, {}};
  p.A.resize(static_cast<std::size_t>(m * n));
  p.x.resize(static_cast<std::size_t>(n));
  p.y.resize(static_cast<std::size_t>(m));
  for (auto& v : p.A) v = static_cast<T>(N(rng));
  for (auto& v : p.x) v = static_cast<T>(N(rng));
  for (auto& v : p.y) v = static_cast<T>(N(rng));
  return p;
}

struct Out {
  double loss;
  std::vector<double> r, g;
};

template <class T>
Out run(const Problem<T>& p, LstsqKernel k, bool with_g = true) {
  std::vector<T> r(static_cast<std::size_t>(p.m)), g(static_cast<std::size_t>(p.n), T(-7));
  const double loss =
      lstsq_fused(p.A.data(), p.x.data(), p.y.data(), p.m, p.n, r.data(), with_g ? g.data() : nullptr, k);
  return {loss, std::vector<double>(r.begin(), r.end()), std::vector<double>(g.begin(), g.end())};
}

// The two_phase kernel at a chosen vector width (bytes) and prefetch stride
// (bytes; 0: automatic).
template <class T>
Out run_at(const Problem<T>& p, int width, int prefetch_bytes = 0) {
  std::vector<T> r(static_cast<std::size_t>(p.m)), g(static_cast<std::size_t>(p.n), T(-7));
  const double loss = opforge_ops::loss::lstsq_two_phase_at(width, p.A.data(), p.x.data(), p.y.data(), p.m, p.n,
                                                            r.data(), g.data(), prefetch_bytes);
  return {loss, std::vector<double>(r.begin(), r.end()), std::vector<double>(g.begin(), g.end())};
}

// r = y - A x, g = A^T r, loss = r.r in double
template <class T>
Out reference(const Problem<T>& p) {
  Out o{0, std::vector<double>(static_cast<std::size_t>(p.m)), std::vector<double>(static_cast<std::size_t>(p.n), 0.0)};
  for (std::int64_t i = 0; i < p.m; ++i) {
    double s = 0;
    for (std::int64_t j = 0; j < p.n; ++j) s += double(p.A[i * p.n + j]) * double(p.x[j]);
    o.r[i] = double(p.y[i]) - s;
    o.loss += o.r[i] * o.r[i];
  }
  for (std::int64_t i = 0; i < p.m; ++i)
    for (std::int64_t j = 0; j < p.n; ++j) o.g[j] += double(p.A[i * p.n + j]) * o.r[i];
  return o;
}

double rel(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0, s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    d = std::max(d, std::abs(a[i] - b[i]));
    s = std::max(s, std::abs(b[i]));
  }
  return s > 0 ? d / s : d;
}

// OPFORGE_LSTSQ_KERNEL as set in the environment ("" when unset).
std::string env_kernel() {
  const char* v = std::getenv("OPFORGE_LSTSQ_KERNEL");
  return v ? v : "";
}

}  // namespace

TEMPLATE_TEST_CASE("lstsq kernel: both variants match a double reference on awkward shapes", "[lstsq][kernel]",
                   double, float) {
  const double tol = sizeof(TestType) == 8 ? 1e-12 : 3e-5;
  // n: below one vector, odd, each block-width boundary (rows of 4/8 in 40 KiB;
  // 8 rows in 256 KiB); m: a single row, remainders of every block size, many chunks.
  // 1024 and 2048: rows a multiple of 4 KiB, where two_phase falls back from
  // 16-row blocks to 8 (rows_sharing_l1_set).
  const std::int64_t ns[] = {1, 3, 17, 100, 641, 1024, 1281, 2048, 4097, 9000};
  const std::int64_t ms[] = {1, 7, 9, 203, 2005};
  for (std::int64_t n : ns)
    for (std::int64_t m : ms) {
      if (m * n > 3'000'000) continue;
      const auto p = make<TestType>(m, n, static_cast<unsigned>(m * 131 + n));
      const Out ref = reference(p);
      for (LstsqKernel k : {LstsqKernel::pipelined, LstsqKernel::two_phase}) {
        INFO("m = " << m << ", n = " << n << ", kernel " << (k == LstsqKernel::pipelined ? "pipelined" : "two_phase"));
        const Out o = run(p, k);
        CHECK(o.loss == Approx(ref.loss).epsilon(tol));
        CHECK(rel(o.r, ref.r) < tol);
        CHECK(rel(o.g, ref.g) < tol);
        const Out no_g = run(p, k, false);  // forward only: same loss and residuals
        CHECK(no_g.loss == o.loss);
        CHECK(no_g.r == o.r);
      }
    }
}

TEMPLATE_TEST_CASE("lstsq kernel: every vector width of two_phase this CPU runs matches the reference",
                   "[lstsq][kernel][isa]", double, float) {
  // lstsq_fused runs only the widest instance; AMD CPUs without AVX-512 run the
  // 32-byte one, others the 16-byte one: each is checked here where the CPU can.
  const double tol = sizeof(TestType) == 8 ? 1e-12 : 3e-5;
  const std::int64_t ns[] = {1, 3, 17, 641, 1024, 2048, 4097, 9000};
  const std::int64_t ms[] = {1, 9, 203, 2005};
  const int widest = opforge_ops::loss::widest_two_phase_width();
  for (int w : {64, 32, 16}) {
    if (w > widest) continue;
    for (std::int64_t n : ns)
      for (std::int64_t m : ms) {
        if (m * n > 3'000'000) continue;
        INFO("width " << w << " bytes, m = " << m << ", n = " << n);
        const auto p = make<TestType>(m, n, static_cast<unsigned>(m * 7 + n));
        const Out ref = reference(p);
        const Out o = run_at(p, w);
        CHECK(o.loss == Approx(ref.loss).epsilon(tol));
        CHECK(rel(o.r, ref.r) < tol);
        CHECK(rel(o.g, ref.g) < tol);
        if (w == widest) CHECK(o.g == run(p, LstsqKernel::two_phase).g);  // what the plugin runs, bit for bit
      }
    // Bit-identical for any thread count at this width too.
    const auto p = make<TestType>(6001, 700, 13);
    std::vector<Out> outs;
    for (int t : {1, 2, 3}) {
      opforge::set_num_threads(t);
      outs.push_back(run_at(p, w));
    }
    opforge::set_num_threads(0);
    INFO("width " << w << " bytes");
    CHECK(outs[0].g == outs[1].g);
    CHECK(outs[0].g == outs[2].g);
  }
}

TEMPLATE_TEST_CASE("lstsq kernel: two_phase's prefetch stride changes no bit, at every vector width",
                   "[lstsq][kernel][isa]", double, float) {
  // Prefetches only move data: every line (64 bytes), every other line (128)
  // and the automatic choice must give the same bits. Shapes: blocks that fit
  // L1 (forward update) and blocks that do not (backward update), rows that are
  // not a whole number of lines, and leftover rows.
  const std::int64_t shapes[][2] = {{203, 641}, {2005, 1281}, {64, 4097}, {9, 9000}, {37, 33}};
  const int widest = opforge_ops::loss::widest_two_phase_width();
  for (int w : {64, 32, 16}) {
    if (w > widest) continue;
    for (const auto& mn : shapes) {
      INFO("width " << w << " bytes, m = " << mn[0] << ", n = " << mn[1]);
      const auto p = make<TestType>(mn[0], mn[1], static_cast<unsigned>(mn[0] + 3 * mn[1]));
      const Out automatic = run_at(p, w, 0), every_line = run_at(p, w, 64), every_other = run_at(p, w, 128);
      CHECK(every_line.loss == automatic.loss);
      CHECK(every_other.loss == automatic.loss);
      CHECK(every_line.r == automatic.r);
      CHECK(every_other.r == automatic.r);
      CHECK(every_line.g == automatic.g);
      CHECK(every_other.g == automatic.g);
      CHECK(rel(automatic.g, reference(p).g) < (sizeof(TestType) == 8 ? 1e-12 : 3e-5));
    }
  }
}

TEST_CASE("lstsq kernel: two_phase prefetches every other line only where A is well beyond the cache",
          "[lstsq][kernel]") {
  using opforge_ops::loss::two_phase_prefetch_bytes;
  const std::int64_t MiB = 1 << 20;
  CHECK(two_phase_prefetch_bytes(40 * MiB, 32 * MiB) == 64);   // float32 d = 1000 on a 32 MiB L3
  CHECK(two_phase_prefetch_bytes(64 * MiB, 32 * MiB) == 64);   // twice the cache: still every line
  CHECK(two_phase_prefetch_bytes(64 * MiB + 1, 32 * MiB) == 128);
  CHECK(two_phase_prefetch_bytes(80'000'000, 32 * MiB) == 128);  // float64 d = 1000
  CHECK(two_phase_prefetch_bytes(80'000'000, 320 * MiB) == 64);  // a cache that holds it
  CHECK(two_phase_prefetch_bytes(0, 0) == 64);

  std::vector<double> A(4, 1.0), x(2, 1.0), y(2, 1.0), r(2), g(2);
  CHECK_THROWS_MATCHES(
      opforge_ops::loss::lstsq_two_phase_at(opforge_ops::loss::widest_two_phase_width(), A.data(), x.data(),
                                            y.data(), 2, 2, r.data(), g.data(), 96),
      std::invalid_argument,
      Catch::Matchers::Message(
          "lstsq two_phase kernel: prefetch stride must be 64 or 128 bytes (or 0: automatic), got 96"));
}

TEST_CASE("lstsq kernel: rows_sharing_l1_set counts the rows whose lines meet in one L1 set",
          "[lstsq][kernel]") {
  using opforge_ops::loss::rows_sharing_l1_set;
  // A multiple of 4 KiB: every row starts at the same place in a way.
  CHECK(rows_sharing_l1_set(8192, 16) == 16);  // float32 d = 2048, float64 d = 1024
  CHECK(rows_sharing_l1_set(4096, 16) == 16);  // float32 d = 1024
  CHECK(rows_sharing_l1_set(16384, 8) == 8);   // float64 d = 2048: 8 rows, all in one set
  CHECK(rows_sharing_l1_set(0, 16) == 16);
  // 6 KiB: rows alternate between two halves of a way.
  CHECK(rows_sharing_l1_set(6144, 16) == 8);  // float32 d = 1536
  // Rows that move by 192 bytes (float32 d = 2000) or 384 (float64 d = 2000)
  // never meet; by 32 bytes (float32 d = 2040), two neighbours overlap a line.
  CHECK(rows_sharing_l1_set(8000, 16) == 1);
  CHECK(rows_sharing_l1_set(16000, 16) == 1);
  CHECK(rows_sharing_l1_set(8160, 16) == 2);
  CHECK(rows_sharing_l1_set(8192 + 4, 16) == 16);  // 60 bytes over 16 rows: still one line's span
  CHECK(rows_sharing_l1_set(8192 + 8, 16) == 8);   // 120 bytes: a line holds 8 of them
  CHECK(rows_sharing_l1_set(8192, 1) == 1);
  CHECK(rows_sharing_l1_set(8192, 0) == 0);
  CHECK_THROWS_MATCHES(
      rows_sharing_l1_set(-8, 16), std::invalid_argument,
      Catch::Matchers::Message("rows_sharing_l1_set: row_bytes and rows must be non-negative, got -8 and 16"));
}

TEST_CASE("lstsq kernel: two_phase_block_rows picks 16 rows only where they fit and do not meet in L1",
          "[lstsq][kernel]") {
  using opforge_ops::loss::two_phase_block_rows;
  CHECK(two_phase_block_rows(64, 8000) == 16);  // float32 d = 2000
  CHECK(two_phase_block_rows(64, 6144) == 16);  // float32 d = 1536: 8 rows a set
  CHECK(two_phase_block_rows(64, 8192) == 8);   // float32 d = 2048: all 16 in one set
  CHECK(two_phase_block_rows(64, 4096) == 8);   // float32 d = 1024, float64 d = 512
  CHECK(two_phase_block_rows(32, 8000) == 8);   // AVX2: too few registers for 16
  CHECK(two_phase_block_rows(16, 8000) == 8);
  CHECK(two_phase_block_rows(64, 4000) == 8);    // 8 rows fit in L1
  CHECK(two_phase_block_rows(64, 16000) == 8);   // float64 d = 2000: 16 rows would exceed 128 KiB
  CHECK(two_phase_block_rows(64, 32000) == 8);   // float64 d = 4000: 8 rows = 256000 bytes
  CHECK(two_phase_block_rows(64, 40000) == 4);   // float64 d = 5000
  CHECK(two_phase_block_rows(64, 100000) == 2);
  CHECK(two_phase_block_rows(64, 200000) == 1);
}

TEST_CASE("sdk: a cache size reported by CPUID is cut to one core's share on AMD", "[lstsq][kernel]") {
  using opforge::sdk::core_share_of_reported_cache;
  constexpr std::int64_t MiB = std::int64_t(1) << 20;
  CHECK(core_share_of_reported_cache(508 * MiB, true) == 32 * MiB);   // a Zen 5 EPYC's package, seen from a VM
  CHECK(core_share_of_reported_cache(320 * MiB, true) == 32 * MiB);   // a Zen 4 EPYC's
  CHECK(core_share_of_reported_cache(16 * MiB, true) == 16 * MiB);    // a Zen 2 CCX: kept
  CHECK(core_share_of_reported_cache(300 * MiB, false) == 300 * MiB); // Intel's L3 is shared by the package
  CHECK(core_share_of_reported_cache(0, true) == 0);                  // nothing reported
  CHECK(core_share_of_reported_cache(-1, false) == 0);                // sysconf's "unknown"
}

TEST_CASE("sdk: last_level_cache_bytes reports the largest cache Linux describes for CPU 0", "[lstsq][kernel]") {
  // The kernel sizes its prefetching from it; glibc's sysconf may report a whole
  // package's L3 (ten times what one core can use on EPYC VMs), sysfs does not.
  const std::int64_t llc = opforge::sdk::last_level_cache_bytes();
  std::ifstream l1("/sys/devices/system/cpu/cpu0/cache/index0/size");
  std::int64_t kib = 0;
  if (!(l1 >> kib)) {
    // Some VMs have no cache entries in sysfs; the fallback must still give a
    // core's share, not the package's L3 (glibc said 508 MiB on a 2-core Zen 5
    // VM, and the kernel then never prefetched every other line).
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_is("amd")) {
      CHECK(llc > 0);
      CHECK(llc <= std::int64_t(96) << 20);  // one CCD's L3, 3D V-Cache included
    }
#endif
    CHECK(llc >= 0);
    return;
  }
  CHECK(llc > 0);
  CHECK(llc % 1024 == 0);
  CHECK(llc >= kib * 1024);                       // at least the first level
  CHECK(llc <= std::int64_t(4) << 30);            // not a whole machine's memory
  std::ifstream l3("/sys/devices/system/cpu/cpu0/cache/index3/size");
  std::int64_t l3_kib = 0;
  std::string unit;
  if (l3 >> l3_kib >> unit && unit == "K") CHECK(llc >= l3_kib * 1024);
}

TEST_CASE("lstsq kernel: a vector width the kernel lacks, or the CPU cannot run, is refused with the reason",
          "[lstsq][kernel][isa]") {
  using opforge_ops::loss::lstsq_two_phase_at;
  std::vector<double> A(4, 1.0), x(2, 1.0), y(2, 1.0), r(2), g(2);
  try {
    lstsq_two_phase_at(24, A.data(), x.data(), y.data(), 2, 2, r.data(), g.data());
    FAIL("a 24-byte width was accepted");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()) == "lstsq two_phase kernel: vector width must be 64, 32 or 16 bytes, got 24");
  }
  const int widest = opforge_ops::loss::widest_two_phase_width();
  CHECK((widest == 64 || widest == 32 || widest == 16));
  if (widest < 64) {
    try {
      lstsq_two_phase_at(64, A.data(), x.data(), y.data(), 2, 2, r.data(), g.data());
      FAIL("a 64-byte width was accepted on a CPU without AVX-512");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()) == "lstsq two_phase kernel: this CPU cannot run the 64-byte instance (it runs up to " +
                                         std::to_string(widest) + " bytes)");
    }
  }
}

TEST_CASE("lstsq kernel: each variant is bit-identical for 1, 2 and 3 threads", "[lstsq][kernel][threads]") {
  const auto p = make<double>(6001, 700, 11);
  for (LstsqKernel k : {LstsqKernel::pipelined, LstsqKernel::two_phase}) {
    std::vector<Out> outs;
    for (int t : {1, 2, 3}) {
      opforge::set_num_threads(t);
      outs.push_back(run(p, k));
    }
    opforge::set_num_threads(0);
    CHECK(outs[0].g == outs[1].g);
    CHECK(outs[0].g == outs[2].g);
    CHECK(outs[0].loss == outs[1].loss);
  }
}

TEST_CASE("lstsq kernel: automatic is one of the two variants, bit for bit", "[lstsq][kernel]") {
  const auto p = make<float>(3001, 333, 12);
  const Out a = run(p, LstsqKernel::automatic);
  const bool is_pipelined = a.g == run(p, LstsqKernel::pipelined).g;
  const bool is_two_phase = a.g == run(p, LstsqKernel::two_phase).g;
  CHECK(is_pipelined != is_two_phase);  // the two round differently on this problem
  // ctest runs this program again with each variant named in the environment.
  const std::string chosen = env_kernel();
  if (chosen == "pipelined") CHECK(is_pipelined);
  if (chosen == "two_phase") CHECK(is_two_phase);
}

TEST_CASE("lstsq kernel: the op's doc names the variant this CPU runs", "[lstsq][kernel]") {
  const std::string name = opforge_ops::loss::kernel_name(LstsqKernel::automatic);
  CHECK((name == "pipelined" || name == "two_phase"));
  if (!env_kernel().empty() && env_kernel() != "automatic") CHECK(name == env_kernel());
  CHECK(std::string(opforge_ops::loss::kernel_name(LstsqKernel::two_phase)) == "two_phase");
  CHECK(std::string(opforge_ops::loss::kernel_name(LstsqKernel::pipelined)) == "pipelined");
  CHECK_THAT(opforge::op("loss.lstsq").schema().doc, Catch::EndsWith("(kernel on this CPU: " + name + ")"));
}

TEST_CASE("lstsq kernel: an OPFORGE_LSTSQ_KERNEL that names no variant is refused, never guessed",
          "[lstsq][kernel][errors]") {
  const std::string saved = env_kernel();
  const bool was_set = std::getenv("OPFORGE_LSTSQ_KERNEL") != nullptr;
  ::setenv("OPFORGE_LSTSQ_KERNEL", "two-phase", 1);
  CHECK(std::string(opforge_ops::loss::kernel_name(LstsqKernel::automatic)) ==
        "none: OPFORGE_LSTSQ_KERNEL is invalid");
  ::setenv("OPFORGE_LSTSQ_KERNEL", "automatic", 1);
  const std::string name = opforge_ops::loss::kernel_name(LstsqKernel::automatic);
  CHECK((name == "pipelined" || name == "two_phase"));
  if (was_set) {
    ::setenv("OPFORGE_LSTSQ_KERNEL", saved.c_str(), 1);
  } else {
    ::unsetenv("OPFORGE_LSTSQ_KERNEL");
  }
}
