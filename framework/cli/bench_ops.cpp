// `opforge bench ops`: ordinary operations through their plugins, called as a
// user calls them (a handle resolved once, grad mode off), so that they can be
// set beside NumPy and PyTorch (`scripts/peers_ops.py` alternates this command
// with both and prints the ratios):
//   svd  - linalg.svd of an n x n matrix of standard normal values (reduced
//          U, S, V^T; LAPACK gesdd, the routine NumPy calls)
//   sqrt - elementwise.sqrt of n values in [0.5, 4.5)
//   exp  - elementwise.exp of the same n values
// Each row gives the median and minimum of --repeat timed calls (after two
// untimed ones) and the result's error: for svd max |U diag(S) V^T - A| / max |A|,
// for sqrt and exp the largest relative difference from std::sqrt and std::exp.
#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cmath>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <boost/program_options.hpp>
#include <opforge/opforge.hpp>

#include "bench_options.hpp"
#include "commands.hpp"
#include "json.hpp"

namespace po = boost::program_options;
using opforge::DType;
using opforge::Tensor;

namespace opforge_cli {
namespace {

Timing time_calls(int repeat, const std::function<void()>& f) {
  f();
  f();
  std::vector<double> ms;
  for (int i = 0; i < repeat; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return summarize(std::move(ms));
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double e : v) m = std::max(m, std::abs(e));
  return m;
}

// max |U diag(S) V^T - A| / max |A|
double svd_error(const Tensor& A, const opforge::TensorList& usv) {
  static const opforge::OpHandle mul = opforge::op("elementwise.mul");
  static const opforge::OpHandle matmul = opforge::op("linalg.matmul");
  const Tensor us = mul({usv[0], usv[1]});  // S [k] broadcast along U's rows: U diag(S)
  const std::vector<double> r = matmul({us, usv[2]}).to_vector();
  const std::vector<double> a = A.to_vector();
  double diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::abs(r[i] - a[i]));
  return diff / max_abs(a);
}

template <class T>
void fill_positive(Tensor& x) {
  T* p = x.data<T>();
  for (std::int64_t i = 0; i < x.numel(); ++i) p[i] = T(0.5 + double(i % 4000) / 1000.0);
}

// max |y - f(x)| / |f(x)|, with f taken in the tensor's dtype
template <class T, class F>
double max_rel_error(const Tensor& x, const Tensor& y, F f) {
  const T* px = x.data<T>();
  const T* py = y.data<T>();
  double worst = 0;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double want = double(f(px[i]));
    worst = std::max(worst, std::abs(double(py[i]) - want) / want);
  }
  return worst;
}

// The largest sizes whose tensors' byte counts (8-byte values) fit in an int64:
// n * n for svd, n for sqrt and exp.
constexpr long kMaxSvdN = 1073741823;
static_assert(kMaxSvdN * kMaxSvdN <= INT64_MAX / 8 && (kMaxSvdN + 1) * (kMaxSvdN + 1) > INT64_MAX / 8);
constexpr long kMaxElementwiseN = INT64_MAX / 8;

}  // namespace

int run_bench_ops(const std::vector<std::string>& args) {
  po::options_description desc(
      "opforge bench ops: ordinary operations through their plugins (grad mode off)\n"
      "  svd  - linalg.svd of an n x n matrix (reduced; LAPACK gesdd)\n"
      "  sqrt - elementwise.sqrt of n values\n"
      "  exp  - elementwise.exp of n values\n\noptions");
  std::string svd_s, elementwise_s, dtype_s, repeat_s, threads_s;
  desc.add_options()("help,h", "this help")(
      "svd-sizes", po::value(&svd_s)->default_value("256,512,1024"), "comma-separated n of the n x n svd inputs")(
      "elementwise-sizes", po::value(&elementwise_s)->default_value("1000000,10000000"),
      "comma-separated element counts for sqrt and exp")(
      "dtype", po::value(&dtype_s)->default_value("float64"), "float64, float32 or both")(
      "repeat", po::value(&repeat_s)->default_value("11"), "timed calls per row (after 2 untimed ones)")(
      "threads", po::value(&threads_s), "comma-separated thread counts (default: OPFORGE_NUM_THREADS if set, else all cores)")(
      "json", "one JSON object per line instead of a table");
  po::variables_map vm;
  if (!parse_bench_options(desc, args, vm)) return 0;
  const bool json = vm.count("json") > 0;
  const int repeat = static_cast<int>(parse_int_option("repeat", repeat_s, 1, INT_MAX));
  const std::vector<long> svd_sizes =
      parse_int_list("svd-sizes", svd_s, kMaxSvdN, "the n x n matrix's size in bytes must fit in 64 bits");
  const std::vector<long> elementwise_sizes = parse_int_list("elementwise-sizes", elementwise_s, kMaxElementwiseN,
                                                             "the tensor's size in bytes must fit in 64 bits");
  const std::vector<DType> dtypes = parse_dtypes(dtype_s);
  const std::vector<long> threads = vm.count("threads") ? parse_int_list("threads", threads_s, kMaxThreads, "OPFORGE_NUM_THREADS's limit too")
                                                        : std::vector<long>{default_threads()};
  // Every option is valid from here on: now the work (and the output) begins.
  print_blas_kernels("bench ops");
  const opforge::OpHandle svd = opforge::op("linalg.svd");
  const opforge::OpHandle sqrt = opforge::op("elementwise.sqrt");
  const opforge::OpHandle exp = opforge::op("elementwise.exp");
  opforge::NoGradGuard no_grad;

  if (!json) {
    std::cout << std::left << std::setw(6) << "op" << std::setw(10) << "n" << std::setw(9) << "dtype" << std::setw(8)
              << "threads" << std::right << std::setw(11) << "median ms" << std::setw(11) << "min ms" << std::setw(9)
              << "GB/s" << std::setw(11) << "rel_err" << "\n";
  }
  auto emit = [&](const char* op, long n, DType dt, long nt, const Timing& t, double bytes, double err) {
    if (json) {
      Json o = Json::object();
      o.set("op", op).set("n", n).set("dtype", opforge::dtype_name(dt));
      o.set("threads", nt).set("median_ms", t.median_ms).set("min_ms", t.min_ms);
      o.set("rel_err", err).set("repeat", repeat);
      std::cout << o.dump() << std::endl;
      return;
    }
    std::ostringstream gbs;
    if (bytes > 0) gbs << std::fixed << std::setprecision(1) << bytes / (t.median_ms * 1e6);
    else gbs << "-";
    std::ostringstream e;
    e << std::scientific << std::setprecision(2) << err;
    std::cout << std::left << std::setw(6) << op << std::setw(10) << n << std::setw(9) << opforge::dtype_name(dt)
              << std::setw(8) << nt << std::right << std::defaultfloat << std::setprecision(4) << std::setw(11)
              << t.median_ms << std::setw(11) << t.min_ms << std::setw(9) << gbs.str() << std::setw(11) << e.str()
              << std::endl;
  };

  for (long nt : threads) {
    opforge::set_num_threads(static_cast<int>(nt));
    for (DType dt : dtypes) {
      for (long n : svd_sizes) {
        const Tensor A = Tensor::randn({n, n}, dt, 42);
        opforge::TensorList usv;
        const Timing t = time_calls(repeat, [&] { usv = svd.call({A}); });
        emit("svd", n, dt, nt, t, 0, svd_error(A, usv));
      }
      for (long n : elementwise_sizes) {
        Tensor x = Tensor::empty({n}, dt);
        if (dt == DType::Float64) fill_positive<double>(x);
        else fill_positive<float>(x);
        const double bytes = 2.0 * static_cast<double>(x.nbytes());  // read x, write y
        Tensor y;
        Timing t = time_calls(repeat, [&] { y = sqrt(x); });
        auto root = [](auto v) { return std::sqrt(v); };
        emit("sqrt", n, dt, nt, t, bytes,
             dt == DType::Float64 ? max_rel_error<double>(x, y, root) : max_rel_error<float>(x, y, root));
        t = time_calls(repeat, [&] { y = exp(x); });
        auto e = [](auto v) { return std::exp(v); };
        emit("exp", n, dt, nt, t, bytes,
             dt == DType::Float64 ? max_rel_error<double>(x, y, e) : max_rel_error<float>(x, y, e));
      }
    }
  }
  return 0;
}

}  // namespace opforge_cli
