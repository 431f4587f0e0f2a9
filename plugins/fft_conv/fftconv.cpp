// fftconv: full 1-D linear convolution through FFTW, with a backward that is
// itself two FFT correlations: an example of an opforge plugin that wraps a C
// library, as PyTorch's "extending with SciPy" tutorial wraps scipy.fft.
//
// fftconv.conv1d(signal, kernel) -> y        signal [n], kernel [k], y [n + k - 1]
//   y[m]       = sum_i signal[i] kernel[m - i]               (full convolution)
//   dL/dsignal[i] = sum_j g[i + j] kernel[j],   i < n       (correlation of g with kernel)
//   dL/dkernel[j] = sum_i g[i + j] signal[i],   j < k       (correlation of g with signal)
// (g [n + k - 1]: the incoming gradient.)
//
// With F the real DFT of size N >= n + k - 1 (zero-padded, so nothing wraps
// around) and * the complex conjugate:
//   y       = F^-1( F(signal) . F(kernel)  )[0, n + k - 1)
//   dsignal = F^-1( F(g)      . F(kernel)* )[0, n)
//   dkernel = F^-1( F(g)      . F(signal)* )[0, k)
// Forward keeps the two spectra backward needs, so backward costs one forward
// and one or two inverse transforms. float64 runs on fftw3, float32 on fftw3f.
//
// Threads: FFTW's planner (plan creation and destruction) is not thread-safe,
// its execution of an existing plan on new arrays is. Plans are made once per
// size and precision, with FFTW_ESTIMATE, under this plugin's mutex, and cached
// for the plugin's lifetime; every call then runs fftw_execute_dft_r2c/_c2r on
// its own arrays from fftw_malloc (so they have the alignment the plan assumed),
// which gives the same bits on every call and thread. (The mutex covers this
// plugin only: another library in the same process that plans with FFTW at the
// same moment needs fftw_make_planner_thread_safe() from fftw3_threads.)
#include <fftw3.h>

#include <opforge/sdk.hpp>

#include <climits>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>

namespace {

using opforge::Context;
using opforge::Dims;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
namespace sdk = opforge::sdk;

// FFTW's API per precision.
template <class T>
struct Fftw;

template <>
struct Fftw<double> {
  using Plan = fftw_plan;
  using Complex = fftw_complex;
  static void* alloc(std::size_t bytes) { return fftw_malloc(bytes); }
  static void release(void* p) { fftw_free(p); }
  static Plan plan_r2c(int n, double* in, Complex* out) { return fftw_plan_dft_r2c_1d(n, in, out, FFTW_ESTIMATE); }
  static Plan plan_c2r(int n, Complex* in, double* out) { return fftw_plan_dft_c2r_1d(n, in, out, FFTW_ESTIMATE); }
  static void r2c(Plan p, double* in, Complex* out) { fftw_execute_dft_r2c(p, in, out); }
  static void c2r(Plan p, Complex* in, double* out) { fftw_execute_dft_c2r(p, in, out); }
  static void destroy(Plan p) { fftw_destroy_plan(p); }
};

template <>
struct Fftw<float> {
  using Plan = fftwf_plan;
  using Complex = fftwf_complex;
  static void* alloc(std::size_t bytes) { return fftwf_malloc(bytes); }
  static void release(void* p) { fftwf_free(p); }
  static Plan plan_r2c(int n, float* in, Complex* out) { return fftwf_plan_dft_r2c_1d(n, in, out, FFTW_ESTIMATE); }
  static Plan plan_c2r(int n, Complex* in, float* out) { return fftwf_plan_dft_c2r_1d(n, in, out, FFTW_ESTIMATE); }
  static void r2c(Plan p, float* in, Complex* out) { fftwf_execute_dft_r2c(p, in, out); }
  static void c2r(Plan p, Complex* in, float* out) { fftwf_execute_dft_c2r(p, in, out); }
  static void destroy(Plan p) { fftwf_destroy_plan(p); }
};

// An array from fftw_malloc (SIMD-aligned), freed with fftw_free.
template <class T, class U>
struct Buffer {
  struct Free {
    void operator()(U* p) const { Fftw<T>::release(p); }
  };
  std::unique_ptr<U, Free> mem;
  explicit Buffer(std::int64_t count) : mem(static_cast<U*>(Fftw<T>::alloc(sizeof(U) * std::size_t(count)))) {
    if (!mem) throw std::bad_alloc();
  }
  U* get() const { return mem.get(); }
};

// The one lock around FFTW's planner for this plugin.
std::mutex& planner_mutex() {
  static std::mutex mu;
  return mu;
}

// The forward (r2c) and inverse (c2r) plans of one size, made once.
template <class T>
class Plans {
 public:
  struct Pair {
    typename Fftw<T>::Plan r2c = nullptr, c2r = nullptr;
  };

  static Pair get(int n) {
    std::mutex& mu = planner_mutex();  // made first, so it outlives the cache
    static Plans cache;                // destroyed when the plugin is unloaded (or at exit)
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.plans_.find(n);
    if (it != cache.plans_.end()) return it->second;
    // FFTW_ESTIMATE neither reads nor writes these arrays; only their
    // alignment matters, and fftw_malloc gives every array the same.
    Buffer<T, T> real(n);
    Buffer<T, typename Fftw<T>::Complex> spec(n / 2 + 1);
    Pair p;
    p.r2c = Fftw<T>::plan_r2c(n, real.get(), spec.get());
    p.c2r = Fftw<T>::plan_c2r(n, spec.get(), real.get());
    if (!p.r2c || !p.c2r) {
      if (p.r2c) Fftw<T>::destroy(p.r2c);
      if (p.c2r) Fftw<T>::destroy(p.c2r);
      throw opforge::Error("fftconv: FFTW could not plan a transform of size " + std::to_string(n));
    }
    cache.plans_.emplace(n, p);
    return p;
  }

  ~Plans() {
    std::lock_guard<std::mutex> lock(planner_mutex());
    for (auto& [n, p] : plans_) {
      Fftw<T>::destroy(p.r2c);
      Fftw<T>::destroy(p.c2r);
    }
  }

 private:
  std::map<int, Pair> plans_;
};

// The smallest N >= n whose only prime factors are 2, 3, 5 and 7: FFTW is fast
// on those sizes (a prime size would be much slower).
std::int64_t fft_size(std::int64_t n) {
  for (std::int64_t m = n;; ++m) {
    std::int64_t r = m;
    for (std::int64_t p : {2, 3, 5, 7})
      while (r % p == 0) r /= p;
    if (r == 1) return m;
  }
}

// out[0, H) = F(x zero-padded to N), H = N / 2 + 1.
template <class T>
void transform(const T* x, std::int64_t len, std::int64_t N, const typename Plans<T>::Pair& plans, T* scratch,
               typename Fftw<T>::Complex* out) {
  std::memcpy(scratch, x, sizeof(T) * std::size_t(len));
  std::memset(static_cast<void*>(scratch + len), 0, sizeof(T) * std::size_t(N - len));
  Fftw<T>::r2c(plans.r2c, scratch, out);
}

// out[0, len) = F^-1(a . b) / N, or F^-1(a . conj(b)) / N.
template <class T>
void inverse_of_product(const typename Fftw<T>::Complex* a, const typename Fftw<T>::Complex* b, bool conjugate_b,
                        std::int64_t N, const typename Plans<T>::Pair& plans, typename Fftw<T>::Complex* prod,
                        T* scratch, T* out, std::int64_t len) {
  const std::int64_t H = N / 2 + 1;
  const T s = conjugate_b ? T(-1) : T(1);
  for (std::int64_t f = 0; f < H; ++f) {
    const T ar = a[f][0], ai = a[f][1], br = b[f][0], bi = s * b[f][1];
    prod[f][0] = ar * br - ai * bi;
    prod[f][1] = ar * bi + ai * br;
  }
  Fftw<T>::c2r(plans.c2r, prod, scratch);  // unnormalised: N times the inverse
  const T inv = T(1) / T(N);
  for (std::int64_t i = 0; i < len; ++i) out[i] = scratch[i] * inv;
}

// A spectrum [H] saved as a tensor [H, 2] (re, im) for backward.
template <class T>
Tensor spectrum_tensor(const typename Fftw<T>::Complex* spec, std::int64_t H, opforge::DType dtype) {
  Tensor t = Tensor::empty(Dims{H, 2}, dtype);
  std::memcpy(t.data<T>(), spec, sizeof(T) * 2 * std::size_t(H));
  return t;
}

class Conv1d final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& signal = in[0];
    const Tensor& kernel = in[1];
    sdk::expect_rank(ctx, signal, "signal", 1);
    sdk::expect_rank(ctx, kernel, "kernel", 1);
    const std::int64_t n = signal.numel(), k = kernel.numel();
    OPFORGE_CHECK(n > 0 && k > 0, ValueError, ctx.op_name(), ": expected a non-empty signal and kernel, got ",
                  signal.describe(), " and ", kernel.describe());
    const std::int64_t L = n + k - 1;
    OPFORGE_CHECK(L <= INT_MAX / 2, ValueError, ctx.op_name(), ": output of ", L,
                  " elements is too long for one FFTW transform");
    const std::int64_t N = fft_size(L), H = N / 2 + 1;

    return sdk::dispatch_floating(signal.dtype(), ctx, "signal", [&](auto tag) -> TensorList {
      using T = decltype(tag);
      using C = typename Fftw<T>::Complex;
      const auto plans = Plans<T>::get(static_cast<int>(N));
      Buffer<T, T> scratch(N);
      Buffer<T, C> S(H), K(H), Y(H);
      transform<T>(signal.data<T>(), n, N, plans, scratch.get(), S.get());
      transform<T>(kernel.data<T>(), k, N, plans, scratch.get(), K.get());
      Tensor y = Tensor::empty(Dims{L}, signal.dtype());
      inverse_of_product<T>(S.get(), K.get(), false, N, plans, Y.get(), scratch.get(), y.data<T>(), L);
      if (ctx.any_input_needs_grad()) {
        // dsignal needs F(kernel), dkernel needs F(signal): keep only those.
        ctx.save_for_backward({ctx.needs_input_grad(0) ? spectrum_tensor<T>(K.get(), H, signal.dtype()) : Tensor(),
                               ctx.needs_input_grad(1) ? spectrum_tensor<T>(S.get(), H, signal.dtype()) : Tensor()});
        ctx.save_int(n);
        ctx.save_int(k);
        ctx.save_int(N);
      }
      return {y};
    });
  }

  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const TensorList& saved = ctx.saved_tensors();  // F(kernel) or undefined, F(signal) or undefined
    const std::int64_t n = ctx.saved_int(0), k = ctx.saved_int(1), N = ctx.saved_int(2);
    const Tensor g = grads[0].contiguous();
    return sdk::dispatch_floating(g.dtype(), ctx, "grad", [&](auto tag) -> TensorList {
      using T = decltype(tag);
      using C = typename Fftw<T>::Complex;
      const std::int64_t H = N / 2 + 1;
      const auto plans = Plans<T>::get(static_cast<int>(N));
      Buffer<T, T> scratch(N);
      Buffer<T, C> G(H), P(H);
      transform<T>(g.data<T>(), n + k - 1, N, plans, scratch.get(), G.get());
      Tensor dsignal, dkernel;
      if (ctx.needs_input_grad(0)) {
        dsignal = Tensor::empty(Dims{n}, g.dtype());
        const C* K = reinterpret_cast<const C*>(saved[0].data<T>());
        inverse_of_product<T>(G.get(), K, true, N, plans, P.get(), scratch.get(), dsignal.data<T>(), n);
      }
      if (ctx.needs_input_grad(1)) {
        dkernel = Tensor::empty(Dims{k}, g.dtype());
        const C* S = reinterpret_cast<const C*>(saved[1].data<T>());
        inverse_of_product<T>(G.get(), S, true, N, plans, P.get(), scratch.get(), dkernel.data<T>(), k);
      }
      return {dsignal, dkernel};
    });
  }
};

}  // namespace

// Sample inputs for the harness (`opforge check`, sdk::check_op): signal [7], kernel [4].
static TensorList conv1d_samples(opforge::DType dtype, std::uint64_t seed) {
  return {Tensor::randn({7}, dtype, seed), Tensor::randn({4}, dtype, seed + 1)};
}

OPFORGE_PLUGIN("fftconv", "1.0.0") {
  registrar.add<Conv1d>(opforge::OpSchema("fftconv.conv1d")
                            .input_names({"signal", "kernel"})
                            .describe("full linear convolution [n] * [k] -> [n + k - 1], through FFTW")
                            .samples(conv1d_samples));
}
