// `opforge bench lstsq`: the gradient of ||y - A x||^2 with respect to x,
// A in R^{10d x d}, timed four ways in one process:
//   fused     - the loss.lstsq plugin's forward + backward
//   graph     - the same loss composed of linalg.mv, elementwise.sub,
//               elementwise.square, reduce.sum, differentiated by the engine
//   explicit  - the closed form -2 A^T (y - A x) with xtensor-blas (two gemv)
//   bandwidth - not a gradient: a parallel sum over A, the time to read A once
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cmath>
#include <functional>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include <boost/program_options.hpp>
#include <opforge/opforge.hpp>
#include <opforge/sdk/views.hpp>
#include <xtensor-blas/xblas.hpp>
#include <xtensor/xtensor.hpp>

#include "bench_kernels.hpp"
#include "bench_options.hpp"
#include "commands.hpp"
#include "json.hpp"

namespace po = boost::program_options;
using opforge::DType;
using opforge::Tensor;

namespace opforge_cli {

namespace {

// Times several methods round-robin: each round runs every method, so a drift in
// the machine's speed (these machines are shared) touches all methods alike and
// the ratios between them hold. In a round each method runs twice back to back
// and only the second run is timed: the time is that of a call following a call
// of the same method, as in a loop that calls it again and again (an optimiser;
// the peers' timing loops), whatever the other methods left in the caches.
// Two untimed warm-up rounds first. With a flusher (--caches cold) the untimed
// call before each timed one is a pass over the flusher's buffer instead: the
// timed call finds none of its data in any cache.
std::vector<Timing> time_round_robin(int repeat, const std::vector<std::function<void()>>& methods,
                                     const CacheFlusher* flusher) {
  for (int w = 0; w < 2; ++w)
    for (const auto& f : methods) f();
  std::vector<std::vector<double>> ms(methods.size());
  for (int i = 0; i < repeat; ++i) {
    for (std::size_t k = 0; k < methods.size(); ++k) {
      if (flusher) flusher->flush();
      else methods[k]();
      auto t0 = std::chrono::steady_clock::now();
      methods[k]();
      auto t1 = std::chrono::steady_clock::now();
      ms[k].push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
  }
  std::vector<Timing> out;
  for (auto& v : ms) out.push_back(summarize(std::move(v)));
  return out;
}

// max |a - b| / max |b|
double rel_err(const Tensor& a, const Tensor& ref) {
  const auto va = a.to_vector(), vb = ref.to_vector();
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < va.size(); ++i) {
    diff = std::max(diff, std::abs(va[i] - vb[i]));
    scale = std::max(scale, std::abs(vb[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

template <class T>
Tensor explicit_grad(const Tensor& A, const Tensor& x, const Tensor& y) {
  auto Av = opforge::sdk::matrix_view<T>(A);
  auto xv = opforge::sdk::flat_view<T>(x);
  auto yv = opforge::sdk::flat_view<T>(y);
  xt::xtensor<T, 1> r = yv;                       // r = y
  xt::blas::gemv(Av, xv, r, false, T(-1), T(1));  // r = y - A x
  Tensor g = Tensor::empty({A.size(1)}, A.dtype());
  auto gv = opforge::sdk::flat_view<T>(g);
  xt::blas::gemv(Av, r, gv, true, T(-2), T(0));   // g = -2 A^T r
  return g;
}

struct Row {
  long d;
  DType dtype;
  int threads;
  std::string method;
  Timing t;
  double rel_err;  // < 0: not a gradient (bandwidth)
  double bytes;    // bytes of A
};

// The largest d for which A's size in bytes, 10 d * d * 8 (float64), fits in an
// int64: above it 10 * d or the byte count overflows.
constexpr long kMaxD = 339546978;
static_assert(kMaxD * kMaxD <= INT64_MAX / 80 && (kMaxD + 1) * (kMaxD + 1) > INT64_MAX / 80);

long peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss * 1024L;
}

}  // namespace

int run_bench_lstsq(const std::vector<std::string>& args) {
  po::options_description desc(
      "opforge bench lstsq: time d/dx ||y - A x||^2, A in R^{10d x d}\n"
      "methods: fused (loss.lstsq plugin), graph (mv/sub/square/sum plugins + engine),\n"
      "explicit (-2 A^T (y - A x) with xtensor-blas), bandwidth (one parallel read of A)\n\noptions");
  std::string sizes_s, dtype_s, repeat_s, threads_s, methods_s, caches_s;
  desc.add_options()("help,h", "this help")(
      "sizes", po::value(&sizes_s)->default_value("300,1000,2000"), "comma-separated values of d")(
      "dtype", po::value(&dtype_s)->default_value("both"), "float64, float32 or both")(
      "repeat", po::value(&repeat_s)->default_value("20"), "timed runs per method (after 2 warm-up runs)")(
      "threads", po::value(&threads_s), "comma-separated thread counts (default: OPFORGE_NUM_THREADS if set, else all cores)")(
      "methods", po::value(&methods_s)->default_value("fused,graph,explicit,bandwidth"),
      "comma-separated methods to time (ratios need explicit and bandwidth)")(
      "caches", po::value(&caches_s)->default_value("warm"),
      "warm: each timed call follows a call of the same method (a loop calling it); cold: each timed call "
      "follows a read of a buffer 4x the last-level cache, so that A comes from memory")(
      "json", "one JSON object per line instead of a table");
  po::variables_map vm;
  if (!parse_bench_options(desc, args, vm)) return 0;
  const bool json = vm.count("json") > 0;
  const int repeat = static_cast<int>(parse_int_option("repeat", repeat_s, 1, INT_MAX));
  const std::vector<long> sizes =
      parse_int_list("sizes", sizes_s, kMaxD, "A's size in bytes, 10 d * d * 8, must fit in 64 bits");
  const std::vector<DType> dtypes = parse_dtypes(dtype_s);
  // Indices into all_methods, wanted, and the per-method lambdas and timings below.
  enum Method : std::size_t { kExplicit, kFused, kGraph, kBandwidth };
  const std::vector<std::string> all_methods = {"explicit", "fused", "graph", "bandwidth"};
  std::vector<bool> wanted(all_methods.size(), false);
  const std::string methods_expected = "a comma-separated list of fused, graph, explicit, bandwidth";
  for (const std::string& item : split_list("methods", methods_s, methods_expected)) {
    const auto it = std::find(all_methods.begin(), all_methods.end(), item);
    if (it == all_methods.end())
      throw UsageError("--methods: expected " + methods_expected + "; got '" + item + "' in '" + methods_s + "'");
    wanted[static_cast<std::size_t>(it - all_methods.begin())] = true;
  }
  if (caches_s != "warm" && caches_s != "cold")
    throw UsageError("--caches: expected warm or cold, got '" + caches_s + "'");
  const std::vector<long> threads = vm.count("threads") ? parse_int_list("threads", threads_s, kMaxThreads, "OPFORGE_NUM_THREADS's limit too")
                                                        : std::vector<long>{default_threads()};
  // Every option is valid from here on: now the work (and the output) begins.
  print_blas_kernels("bench lstsq");
  std::unique_ptr<CacheFlusher> flusher;
  if (caches_s == "cold") {
    flusher = std::make_unique<CacheFlusher>();
    std::cerr << "bench lstsq: caches cold: a " << flusher->bytes() / (1 << 20) << " MiB buffer is read before each "
              << "timed call (last-level cache: " << flusher->cache_bytes() / (1 << 20) << " MiB)" << std::endl;
  }

  // Only the ops of the methods asked for: `--methods graph` runs without the loss plugin.
  const bool graph_ops = wanted[kGraph];
  const opforge::OpHandle lstsq = wanted[kFused] ? opforge::op("loss.lstsq") : opforge::OpHandle();
  const opforge::OpHandle mv = graph_ops ? opforge::op("linalg.mv") : opforge::OpHandle();
  const opforge::OpHandle sub = graph_ops ? opforge::op("elementwise.sub") : opforge::OpHandle();
  const opforge::OpHandle square = graph_ops ? opforge::op("elementwise.square") : opforge::OpHandle();
  const opforge::OpHandle sum = graph_ops ? opforge::op("reduce.sum") : opforge::OpHandle();

  if (!json) {
    std::cout << std::left << std::setw(6) << "d" << std::setw(9) << "dtype" << std::setw(8) << "threads"
              << std::setw(11) << "method" << std::right << std::setw(11) << "median ms" << std::setw(11) << "min ms"
              << std::setw(11) << "x explicit" << std::setw(8) << "x read" << std::setw(9) << "GB/s" << std::setw(11)
              << "rel_err" << "\n";
  }
  // explicit_ms / bandwidth_ms are 0 when that method was not timed: no ratio.
  auto emit = [&](const Row& r, double explicit_ms, double bandwidth_ms) {
    const double gbs = r.bytes / (r.t.median_ms * 1e-3) / 1e9;
    if (json) {
      Json o = Json::object();
      o.set("d", r.d).set("dtype", opforge::dtype_name(r.dtype)).set("method", r.method);
      o.set("median_ms", r.t.median_ms).set("min_ms", r.t.min_ms);
      if (r.rel_err >= 0) o.set("rel_err", r.rel_err);
      o.set("threads", r.threads);
      if (explicit_ms > 0) o.set("ratio_explicit", r.t.median_ms / explicit_ms);
      if (bandwidth_ms > 0) o.set("ratio_bandwidth", r.t.median_ms / bandwidth_ms);
      o.set("a_gbps", gbs).set("repeat", repeat).set("caches", caches_s);
      std::cout << o.dump() << std::endl;
    } else {
      auto ratio = [](double num, double den, int width) {
        std::ostringstream t;
        if (den > 0) t << std::fixed << std::setprecision(2) << num / den;
        else t << "-";
        std::ostringstream o;
        o << std::right << std::setw(width) << t.str();
        return o.str();
      };
      std::ostringstream err;
      if (r.rel_err >= 0) err << std::scientific << std::setprecision(2) << r.rel_err;
      else err << "-";
      std::cout << std::left << std::setw(6) << r.d << std::setw(9) << opforge::dtype_name(r.dtype) << std::setw(8)
                << r.threads << std::setw(11) << r.method << std::right << std::fixed << std::setprecision(3)
                << std::setw(11) << r.t.median_ms << std::setw(11) << r.t.min_ms
                << ratio(r.t.median_ms, explicit_ms, 11) << ratio(r.t.median_ms, bandwidth_ms, 8)
                << std::setprecision(1) << std::setw(9) << gbs << std::setw(11) << err.str() << std::defaultfloat
                << std::endl;
    }
  };

  for (long nt : threads) {
    opforge::set_num_threads(static_cast<int>(nt));
    for (long d : sizes) {
      for (DType dt : dtypes) {
        const long m = 10 * d;
        std::cerr << "bench lstsq: d=" << d << " " << opforge::dtype_name(dt) << " threads=" << nt << " (A is "
                  << std::fixed << std::setprecision(1) << double(m) * d * opforge::itemsize(dt) / 1e6
                  << " MB)..." << std::defaultfloat << std::endl;
        const Tensor A = Tensor::randn({m, d}, dt, 1);
        const Tensor y = Tensor::randn({m}, dt, 2);
        Tensor x = Tensor::randn({d}, dt, 3);
        x.requires_grad_(true);
        const double bytes = double(m) * d * opforge::itemsize(dt);

        Tensor g_explicit, g_fused, g_graph;
        volatile double sink = 0;
        const std::vector<std::function<void()>> all = {  // in Method order
            [&] { g_explicit = dt == DType::Float64 ? explicit_grad<double>(A, x, y) : explicit_grad<float>(A, x, y); },
            [&] {
              x.zero_grad();
              lstsq({A, x, y}).backward();
              g_fused = x.grad();
            },
            [&] {
              x.zero_grad();
              sum({square({sub({y, mv({A, x})})})}).backward();
              g_graph = x.grad();
            },
            [&] {
              sink = dt == DType::Float64 ? read_once_sum(A.data<double>(), A.numel())
                                          : read_once_sum(A.data<float>(), A.numel());
            }};
        std::vector<std::function<void()>> timed;
        for (std::size_t k = 0; k < all.size(); ++k)
          if (wanted[k]) timed.push_back(all[k]);
        const std::vector<Timing> measured = time_round_robin(repeat, timed, flusher.get());
        (void)sink;
        std::vector<Timing> t(all.size());
        for (std::size_t k = 0, i = 0; k < all.size(); ++k)
          if (wanted[k]) t[k] = measured[i++];
        // The reference gradient: explicit's when it ran, else computed once here.
        if (!g_explicit.defined()) all[kExplicit]();
        const double ex = wanted[kExplicit] ? t[kExplicit].median_ms : 0.0;
        const double bw = wanted[kBandwidth] ? t[kBandwidth].median_ms : 0.0;
        if (wanted[kFused]) emit({d, dt, int(nt), "fused", t[kFused], rel_err(g_fused, g_explicit), bytes}, ex, bw);
        if (wanted[kGraph]) emit({d, dt, int(nt), "graph", t[kGraph], rel_err(g_graph, g_explicit), bytes}, ex, bw);
        if (wanted[kExplicit]) emit({d, dt, int(nt), "explicit", t[kExplicit], 0.0, bytes}, ex, bw);
        if (wanted[kBandwidth]) emit({d, dt, int(nt), "bandwidth", t[kBandwidth], -1.0, bytes}, ex, bw);
      }
    }
  }
  std::cerr << "bench lstsq: peak resident memory " << std::fixed << std::setprecision(1)
            << peak_rss_bytes() / 1e6 << " MB" << std::endl;
  return 0;
}

}  // namespace opforge_cli
