// OpenBLAS's kernels (opforge/blas.hpp): which ones opforge replaces, that the
// replacement takes effect and products stay right under each kernel set, and
// that a user's OPENBLAS_CORETYPE stands (ctest runs this program again with
// OPENBLAS_CORETYPE=Prescott).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include <opforge/opforge.hpp>
#include <opforge/sdk/cpu.hpp>

using opforge::DType;
using opforge::Tensor;
using opforge::detail::better_blas_core;

namespace {

bool cpu_avx2_fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
bool cpu_avx512() { return cpu_avx2_fma() && opforge::sdk::cpu_has_avx512(); }

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// linalg.matmul (gemm) and linalg.mv (gemv) through the plugin against plain
// loops, in both dtypes; shapes big enough that OpenBLAS threads them.
void check_products() {
  for (DType dt : {DType::Float64, DType::Float32}) {
    const std::int64_t m = 301, k = 257, n = 129;
    const Tensor A = Tensor::randn({m, k}, DType::Float64, 11);
    const Tensor B = Tensor::randn({k, n}, DType::Float64, 12);
    const Tensor x = Tensor::randn({k}, DType::Float64, 13);
    const Tensor C = opforge::op("linalg.matmul")({A.to(dt), B.to(dt)}).to(DType::Float64);
    const Tensor y = opforge::op("linalg.mv")({A.to(dt), x.to(dt)}).to(DType::Float64);
    const double* a = A.data<double>();
    const double* b = B.data<double>();
    const double* px = x.data<double>();
    const double tol = dt == DType::Float64 ? 1e-12 : 1e-4;
    double worst_c = 0, worst_y = 0;
    for (std::int64_t i = 0; i < m; ++i) {
      double yi = 0;
      for (std::int64_t p = 0; p < k; ++p) yi += a[i * k + p] * px[p];
      worst_y = std::max(worst_y, std::abs(y.data<double>()[i] - yi) / std::sqrt(double(k)));
      for (std::int64_t j = 0; j < n; ++j) {
        double cij = 0;
        for (std::int64_t p = 0; p < k; ++p) cij += a[i * k + p] * b[p * n + j];
        worst_c = std::max(worst_c, std::abs(C.data<double>()[i * n + j] - cij) / std::sqrt(double(k)));
      }
    }
    INFO("dtype " << opforge::dtype_name(dt) << ", OpenBLAS kernels " << opforge::blas_core());
    CHECK(worst_c < tol);
    CHECK(worst_y < tol);
  }
}

// Sets or clears an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* v = std::getenv(name)) old_ = v;
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("blas core: only kernel sets without AVX2 are replaced, and only on a CPU with AVX2 and FMA",
          "[blas]") {
  CHECK(better_blas_core("Prescott", true, true) == "SkylakeX");
  CHECK(better_blas_core("Prescott", true, false) == "Haswell");
  CHECK(better_blas_core("prescott", true, false) == "Haswell");
  CHECK(better_blas_core("Nehalem", true, true) == "SkylakeX");
  CHECK(better_blas_core("Sandybridge", true, false) == "Haswell");
  CHECK(better_blas_core("Core2", true, false) == "Haswell");
  CHECK(better_blas_core("Barcelona", true, false) == "Haswell");
  CHECK(better_blas_core("Prescott", false, false).empty());  // a CPU without AVX2: Prescott is right
  for (const char* good : {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids", "Excavator"}) {
    CHECK(better_blas_core(good, true, true).empty());
    CHECK(better_blas_core(good, true, false).empty());
  }
  CHECK(better_blas_core("", true, true).empty());
  CHECK(better_blas_core("Unknown", true, true).empty());
}

TEST_CASE("blas core: at load, opforge kept OpenBLAS's choice or replaced old kernels, and says which", "[blas]") {
  const std::string core = opforge::blas_core();
  INFO("OpenBLAS kernels: " << core << "; note: " << opforge::blas_core_note());
  REQUIRE_FALSE(core.empty());
  if (const char* user = std::getenv("OPENBLAS_CORETYPE")) {
    CHECK(lower(core) == lower(user));  // the user's choice stands, even an old one
    CHECK(opforge::blas_core_note().empty());
  } else {
    CHECK(better_blas_core(core, cpu_avx2_fma(), cpu_avx512()).empty());
    if (!opforge::blas_core_note().empty()) CHECK_THAT(opforge::blas_core_note(), Catch::Contains(core));
  }
  check_products();
}

TEST_CASE("blas core: each kernel set selected takes effect and computes the same products", "[blas]") {
  const std::string original = opforge::blas_core();
  std::vector<std::string> cores = {"Prescott"};
  if (cpu_avx2_fma()) cores.push_back("Haswell");
  if (cpu_avx512()) cores.push_back("SkylakeX");
  for (const std::string& c : cores) {
    INFO("selecting " << c);
    REQUIRE(opforge::detail::select_blas_core(c));
    CHECK(opforge::blas_core() == c);
    check_products();
  }
  // An unknown name is refused and changes nothing.
  const std::string before = opforge::blas_core();
  CHECK_FALSE(opforge::detail::select_blas_core("NoSuchCore"));
  CHECK(opforge::blas_core() == before);
  REQUIRE(opforge::detail::select_blas_core(original));
  CHECK(opforge::blas_core() == original);
}

TEST_CASE("blas core: the load-time check replaces Prescott on a CPU with AVX2, unless the user chose it",
          "[blas]") {
  if (!cpu_avx2_fma()) {
    WARN("this CPU has no AVX2 and FMA: Prescott is OpenBLAS's right choice, nothing to replace");
    return;
  }
  const std::string original = opforge::blas_core();
  const std::string expected = cpu_avx512() ? "SkylakeX" : "Haswell";
  REQUIRE(opforge::detail::select_blas_core("Prescott"));
  {
    ScopedEnv unset("OPENBLAS_CORETYPE", nullptr);
    opforge::detail::select_better_blas_core();
    CHECK(opforge::blas_core() == expected);
    CHECK_THAT(opforge::blas_core_note(), Catch::Contains("picked its Prescott kernels") &&
                                              Catch::Contains("selected its " + expected + " kernels") &&
                                              Catch::Contains("OPENBLAS_CORETYPE"));
    check_products();
  }
  REQUIRE(opforge::detail::select_blas_core("Prescott"));
  {
    ScopedEnv user("OPENBLAS_CORETYPE", "Prescott");
    opforge::detail::select_better_blas_core();
    CHECK(opforge::blas_core() == "Prescott");
    CHECK(opforge::blas_core_note().empty());
  }
  REQUIRE(opforge::detail::select_blas_core(original));
}
