// `opforge bench overhead`: what the framework adds to an op call, on a tensor
// of one element (so the kernel itself costs next to nothing):
//   nograd_call    - an op called through a cached handle, grad mode off
//   fwd_bwd        - the same op recorded in the graph, plus its backward
//   custom_fwd_bwd - a Function subclass defined in this program (as a user
//                    would write one), recorded, plus its backward
#include <algorithm>
#include <chrono>
#include <climits>
#include <iomanip>
#include <iostream>

#include <boost/program_options.hpp>
#include <opforge/opforge.hpp>

#include "bench_options.hpp"
#include "commands.hpp"
#include "json.hpp"

namespace po = boost::program_options;
using opforge::Context;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;

namespace opforge_cli {
namespace {

// y = 3 x, dy/dx = 3: a user's Function, the way the README shows it.
class Triple final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override {
    Tensor out = Tensor::empty(in[0].shape(), in[0].dtype());
    const double* x = in[0].data<double>();
    double* y = out.data<double>();
    for (std::int64_t i = 0; i < out.numel(); ++i) y[i] = 3 * x[i];
    return {out};
  }
  TensorList backward(Context&, TensorSpan g) const override {
    Tensor out = Tensor::empty(g[0].shape(), g[0].dtype());
    const double* gi = g[0].data<double>();
    double* go = out.data<double>();
    for (std::int64_t i = 0; i < out.numel(); ++i) go[i] = 3 * gi[i];
    return {out};
  }
};

// Median and min, in microseconds per iteration, over `rounds` rounds of `iters` calls.
template <class F>
std::pair<double, double> per_call_us(int rounds, int iters, F&& f) {
  for (int i = 0; i < iters; ++i) f();  // warm-up
  std::vector<double> us;
  for (int r = 0; r < rounds; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) f();
    auto t1 = std::chrono::steady_clock::now();
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / iters);
  }
  const Timing t = summarize(us);  // the mean of the middle two for an even --rounds, as the other benches
  return {t.median_ms, t.min_ms};
}

}  // namespace

int run_bench_overhead(const std::vector<std::string>& args) {
  po::options_description desc("opforge bench overhead: framework cost of one op call on a 1-element tensor");
  std::string rounds_s, iters_s;
  desc.add_options()("help,h", "this help")("rounds", po::value(&rounds_s)->default_value("21"), "timed rounds")(
      "iters", po::value(&iters_s)->default_value("20000"), "calls per round")("json", "one JSON object per line");
  po::variables_map vm;
  if (!parse_bench_options(desc, args, vm)) return 0;
  const bool json = vm.count("json") > 0;
  const int rounds = static_cast<int>(parse_int_option("rounds", rounds_s, 1, INT_MAX));
  const int iters = static_cast<int>(parse_int_option("iters", iters_s, 1, INT_MAX));

  const opforge::OpHandle square = opforge::op("elementwise.square");
  const opforge::OpHandle triple =
      opforge::make_op(opforge::OpSchema("user.triple").input_names({"x"}).accepts({opforge::DType::Float64}),
                       std::make_unique<Triple>());
  const Tensor c = Tensor::full({1}, 1.5);
  Tensor x = Tensor::full({1}, 1.5);
  x.requires_grad_(true);

  struct Case {
    const char* name;
    std::pair<double, double> us;
  };
  std::vector<Case> cases;
  {
    opforge::NoGradGuard no_grad;
    cases.push_back({"nograd_call", per_call_us(rounds, iters, [&] { (void)square(c); })});
  }
  cases.push_back({"fwd_bwd", per_call_us(rounds, iters, [&] { square(x).backward(); })});
  cases.push_back({"custom_fwd_bwd", per_call_us(rounds, iters, [&] { triple(x).backward(); })});

  for (const Case& k : cases) {
    if (json) {
      Json o = Json::object();
      o.set("case", k.name).set("median_us", k.us.first).set("min_us", k.us.second).set("iters", iters);
      std::cout << o.dump() << std::endl;
    } else {
      std::cout << std::left << std::setw(16) << k.name << std::right << std::fixed << std::setprecision(3)
                << std::setw(9) << k.us.first << " us median" << std::setw(9) << k.us.second << " us min"
                << std::endl;
    }
  }
  return 0;
}

}  // namespace opforge_cli
