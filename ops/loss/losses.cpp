// loss: mean squared error, Huber, binary cross-entropy on logits and cross-entropy.
//
// Each loss has one Int attribute "reduction" (opforge attributes have no string
// kind), always the first attribute:
//   0 = mean (default)   the mean of the per-element (per-row) losses, a 0-d tensor
//   1 = sum              their sum, a 0-d tensor
//   2 = none             the losses themselves, of the shape of 'pred' (of [N])
// One op per loss with a reduction attribute, as PyTorch's reduction='mean'|'sum'|
// 'none', rather than three ops per loss: the default is the common case, and code
// that switches reduction changes an argument, not the op it resolves.
//
// Below l_i is the loss of element (row) i, and g_i what its gradient is scaled by:
// g / count for mean (count: elements of 'pred', or the N rows), g for sum, g[i]
// for none (g: the incoming gradient).
//
//   mse(pred, target)              l_i = (pred_i - target_i)^2
//                                  dpred_i = 2 (pred_i - target_i) g_i,   dtarget = -dpred
//   huber(pred, target; delta = 1) d = pred - target
//                                  l_i = d_i^2 / 2                 where |d_i| <= delta
//                                      = delta (|d_i| - delta / 2) elsewhere
//                                  dpred_i = clamp(d_i, -delta, delta) g_i,   dtarget = -dpred
//   bce_with_logits(logits z, target t)
//                                  l_i = max(z_i, 0) - z_i t_i + log1p(exp(-|z_i|))
//                                      (= -t_i log σ(z_i) - (1 - t_i) log(1 - σ(z_i)), σ = sigmoid)
//                                  dz_i = (σ(z_i) - t_i) g_i,   dt_i = -z_i g_i
//                                  exp(-|z|) <= 1 never overflows and log1p keeps it where it is
//                                  tiny: finite for every finite z (|z| = 800 too), as PyTorch's
//                                  binary_cross_entropy_with_logits. t is not checked to lie in [0, 1]
//                                  (PyTorch does not either), and may require grad.
//   cross_entropy(logits [N, C], target [N] int64 class indices; ignore_index = -100,
//                 label_smoothing = ε in [0, 1], as PyTorch's)
//                                  q_n = (1 - ε) onehot(target_n) + ε / C   (the smoothed target)
//                                  l_n = logsumexp(logits_n) - Σ_c q_nc logits_nc   (= -Σ_c q_nc log_softmax_nc)
//                                  dlogits_n = (softmax(logits_n) - q_n) g_n;  target: none
//                                  A row whose target is ignore_index has l_n = 0 and no gradient,
//                                  and mean divides by the rows not ignored (0 of them: NaN).
//
// pred and target (bce_with_logits: logits and target) have one shape (no broadcasting)
// and one dtype. The sums of mean and sum are accumulated in double by
// sdk::deterministic_sum (fixed chunks added in chunk order), so the result is the same
// bits with any thread count; logsumexp subtracts the row's max first, so no exp overflows.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include <opforge/sdk.hpp>

#include "../vector_math.hpp"
#include "loss_ops.hpp"

namespace {

using opforge::Context;
using opforge::Dims;
using opforge::DType;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
namespace sdk = opforge::sdk;

// Σ term(i), same bits for any thread count.
using sdk::deterministic_sum;

enum class Reduction : std::int64_t { Mean = 0, Sum = 1, None = 2 };

Reduction read_reduction(const Context& ctx) {
  const std::int64_t r = ctx.attr_int(0);
  OPFORGE_CHECK(r >= 0 && r <= 2, ValueError, ctx.op_name(),
                ": attribute 'reduction': expected 0 (mean), 1 (sum) or 2 (none), got ", r);
  return static_cast<Reduction>(r);
}

// The loss tensor from the per-term losses: term(i) for i < n, as double.
template <class T, class Term>
Tensor reduce_losses(Reduction red, const Dims& none_shape, std::int64_t n, std::int64_t count, Term term) {
  if (red == Reduction::None) {
    Tensor out = Tensor::empty(none_shape, opforge::dtype_v<T>);
    T* po = out.data<T>();
    sdk::parallel_for(0, n, sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) po[i] = static_cast<T>(term(i));
    });
    return out;
  }
  const double s = deterministic_sum(n, term);
  // The mean of no terms is 0 / 0: NaN.
  return Tensor::scalar(red == Reduction::Mean ? s / static_cast<double>(count) : s, opforge::dtype_v<T>);
}

// cross_entropy's attribute 'label_smoothing' (ε), checked.
double label_smoothing(const Context& ctx) {
  const double eps = ctx.attr_float(2);
  OPFORGE_CHECK(eps >= 0 && eps <= 1, ValueError, ctx.op_name(),
                ": attribute 'label_smoothing': expected a number in [0, 1], got ", eps);
  return eps;
}

// What every term's gradient is scaled by for mean (g / count) and sum (g): g is 0-d.
template <class T>
T reduced_scale(Reduction red, const Tensor& g, std::int64_t count) {
  return static_cast<T>(red == Reduction::Mean ? g.item() / static_cast<double>(count) : g.item());
}

// Calls f(scale) where scale(i) is what term i's gradient is scaled by: g / count
// (mean), g (sum), g[i] (none). Two loop bodies, so each compiles to plain vector code.
template <class T, class F>
void with_scale(Reduction red, const Tensor& g, std::int64_t count, F&& f) {
  if (red == Reduction::None) {
    const T* pg = g.data<T>();
    f([pg](std::int64_t i) { return pg[i]; });
    return;
  }
  const T k = reduced_scale<T>(red, g, count);
  f([k](std::int64_t) { return k; });
}

// ---- mse, huber ---------------------------------------------------------------------------------

struct Mse {
  static constexpr const char* kDoc = "squared error (pred - target)^2; reduction 0 mean, 1 sum, 2 none";
  double loss(double d) const { return d * d; }
  template <class T>
  T slope(T d) const {  // d loss / d pred
    return T(2) * d;
  }
};

struct Huber {
  static constexpr const char* kDoc =
      "Huber loss: (pred - target)^2 / 2 within delta, linear beyond; reduction 0 mean, 1 sum, 2 none";
  double delta = 1;
  // With q = min(|d|, delta): q (|d| - q / 2) is d² / 2 within delta and
  // delta (|d| - delta / 2) beyond, with no branch (the ternary compiled to a
  // jump that random data mispredicted: 1e7 float32 residuals took 31 ms, 3.6 ms
  // when all fell on one side, 1.4 ms for mse). Same bits as the two formulas
  // (|d| - |d| / 2 and the halving are exact) but for subnormal residuals. NaN
  // stays NaN (std::min keeps its first argument when it is NaN).
  double loss(double d) const {
    const double a = std::abs(d);
    const double q = std::min(a, delta);
    return q * (a - 0.5 * q);
  }
  template <class T>
  T slope(T d) const {
    const T k = static_cast<T>(delta);
    return std::min(std::max(d, -k), k);
  }
};

template <class Kind>
Kind read_kind(const Context& ctx) {
  Kind kind;
  if constexpr (std::is_same_v<Kind, Huber>) {
    kind.delta = ctx.attr_float(1);
    OPFORGE_CHECK(std::isfinite(kind.delta) && kind.delta > 0, ValueError, ctx.op_name(),
                  ": attribute 'delta': expected a positive finite number, got ", kind.delta);
  }
  return kind;
}

template <class Kind>
class Pointwise final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& pred = in[0];
    const Tensor& target = in[1];
    sdk::expect_shape(ctx, target, "target", pred.shape(), "the shape of 'pred'");
    const Reduction red = read_reduction(ctx);
    const Kind kind = read_kind<Kind>(ctx);
    Tensor out = sdk::dispatch_floating(pred.dtype(), ctx, "pred", [&](auto tag) {
      using T = decltype(tag);
      const T* pp = pred.data<T>();
      const T* pt = target.data<T>();
      return reduce_losses<T>(red, pred.shape(), pred.numel(), pred.numel(), [&](std::int64_t i) {
        return kind.loss(static_cast<double>(pp[i]) - static_cast<double>(pt[i]));
      });
    });
    // Backward recomputes pred - target from the inputs: no tensor is made for it.
    if (ctx.any_input_needs_grad()) ctx.save_for_backward({pred, target});
    return {out};
  }

  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const TensorList& s = ctx.saved_tensors();  // pred, target
    const Reduction red = read_reduction(ctx);
    const Kind kind = read_kind<Kind>(ctx);
    const Tensor g = grads[0].contiguous();
    return sdk::dispatch_floating(g.dtype(), ctx, "grad", [&](auto tag) -> TensorList {
      using T = decltype(tag);
      const Tensor& pred = s[0];
      const std::int64_t n = pred.numel();
      const T* pp = pred.data<T>();
      const T* pt = s[1].data<T>();
      Tensor dpred = ctx.needs_input_grad(0) ? Tensor::empty(pred.shape(), pred.dtype()) : Tensor();
      Tensor dtarget = ctx.needs_input_grad(1) ? Tensor::empty(pred.shape(), pred.dtype()) : Tensor();
      T* dp = dpred.defined() ? dpred.data<T>() : nullptr;
      T* dt = dtarget.defined() ? dtarget.data<T>() : nullptr;
      with_scale<T>(red, g, n, [&](auto k) {
        sdk::parallel_for(0, n, sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
          if (dp && dt) {
            for (std::int64_t i = lo; i < hi; ++i) {
              const T v = kind.slope(pp[i] - pt[i]) * k(i);
              dp[i] = v;
              dt[i] = -v;
            }
          } else if (dp) {
            for (std::int64_t i = lo; i < hi; ++i) dp[i] = kind.slope(pp[i] - pt[i]) * k(i);
          } else {
            for (std::int64_t i = lo; i < hi; ++i) dt[i] = -(kind.slope(pp[i] - pt[i]) * k(i));
          }
        });
      });
      return {dpred, dtarget};
    });
  }
};

// ---- bce_with_logits ----------------------------------------------------------------------------

// Elements per block of UniformMap: a multiple of every vector width (16 floats on AVX-512),
// so its one loop has no scalar epilogue in any copy.
constexpr std::int64_t kUniformBlock = 16;

// out[i] = f(in_0[i], in_1[i], ...) for i in [lo, hi), through sdk::run_vectorized: whole
// blocks of kUniformBlock in place, the last one through buffers padded with copies of its
// first element, all through one fixed-length vector loop. f calls libmvec (exp, log1p:
// vector_math.hpp), whose vector lanes may round unlike its scalar call, so a loop with a
// scalar epilogue would give an element bits that depend on where a parallel_for range was
// cut, that is on the thread count (the harness's split_work check); the elementwise
// plugin's uniform() maps do the same (ops/elementwise/elementwise_ops.hpp).
struct UniformMap {
  template <class Out, class F, class... In>
  OPFORGE_KERNEL_BODY static void run(Out* out, std::int64_t lo, std::int64_t hi, const F& f, const In*... in) {
    constexpr std::int64_t B = kUniformBlock;
    auto block = [&f](Out* o, const In*... x) {
#pragma omp simd
      for (std::int64_t k = 0; k < B; ++k) o[k] = f(x[k]...);
    };
    std::int64_t j = lo;
    for (; j + B <= hi; j += B) block(out + j, (in + j)...);
    if (j == hi) return;
    const std::int64_t n = hi - j;
    auto padded = [j, n](const auto* p) {
      std::array<std::remove_const_t<std::remove_pointer_t<decltype(p)>>, B> buf;
      for (std::int64_t k = 0; k < B; ++k) buf[static_cast<std::size_t>(k)] = p[j + (k < n ? k : 0)];
      return buf;
    };
    const std::tuple<std::array<In, B>...> bufs{padded(in)...};
    Out o[B];
    std::apply([&](const auto&... b) { block(o, b.data()...); }, bufs);
    std::copy(o, o + n, out + j);
  }
};

// max(z, 0) - z t + log1p(exp(-|z|)); NaN in z or t gives NaN.
template <class T>
T bce_term(T z, T t) {
  return (z > T(0) ? z : T(0)) - z * t + std::log1p(std::exp(-std::abs(z)));
}

// σ(z) from exp(-|z|), which never overflows: 1 / (1 + e) for z >= 0, e / (1 + e) below
// (as elementwise.sigmoid).
template <class T>
T sigmoid(T z) {
  const T e = std::exp(-std::abs(z));
  return z >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

class BceWithLogits final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& logits = in[0];
    const Tensor& target = in[1];
    sdk::expect_shape(ctx, target, "target", logits.shape(), "the shape of 'logits'");
    const Reduction red = read_reduction(ctx);
    const std::int64_t n = logits.numel();
    Tensor out = sdk::dispatch_floating(logits.dtype(), ctx, "logits", [&](auto tag) {
      using T = decltype(tag);
      const T* pz = logits.data<T>();
      const T* pt = target.data<T>();
      if (red != Reduction::None)  // each term in double, summed in double
        return reduce_losses<T>(red, logits.shape(), n, n, [&](std::int64_t i) {
          return bce_term(static_cast<double>(pz[i]), static_cast<double>(pt[i]));
        });
      Tensor l = Tensor::empty(logits.shape(), logits.dtype());
      T* pl = l.data<T>();
      const auto f = [](T z, T t) { return static_cast<T>(bce_term(static_cast<double>(z), static_cast<double>(t))); };
      sdk::parallel_for(0, n, sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
        sdk::run_vectorized<UniformMap>(pl, lo, hi, f, pz, pt);
      });
      return l;
    });
    if (ctx.any_input_needs_grad()) ctx.save_for_backward({logits, target});
    return {out};
  }

  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const TensorList& s = ctx.saved_tensors();  // logits, target
    const Reduction red = read_reduction(ctx);
    const Tensor g = grads[0].contiguous();
    return sdk::dispatch_floating(g.dtype(), ctx, "grad", [&](auto tag) -> TensorList {
      using T = decltype(tag);
      const Tensor& logits = s[0];
      const std::int64_t n = logits.numel();
      const T* pz = logits.data<T>();
      const T* pt = s[1].data<T>();
      Tensor dlogits, dtarget;
      if (ctx.needs_input_grad(0)) {  // (σ(z) - t) times the scale
        dlogits = Tensor::empty(logits.shape(), logits.dtype());
        T* pd = dlogits.data<T>();
        if (red == Reduction::None) {
          const T* pg = g.data<T>();
          const auto f = [](T z, T t, T gv) { return (sigmoid(z) - t) * gv; };
          sdk::parallel_for(0, n, sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
            sdk::run_vectorized<UniformMap>(pd, lo, hi, f, pz, pt, pg);
          });
        } else {
          const T k = reduced_scale<T>(red, g, n);
          const auto f = [k](T z, T t) { return (sigmoid(z) - t) * k; };
          sdk::parallel_for(0, n, sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
            sdk::run_vectorized<UniformMap>(pd, lo, hi, f, pz, pt);
          });
        }
      }
      if (ctx.needs_input_grad(1)) {  // -z times the scale
        dtarget = Tensor::empty(logits.shape(), logits.dtype());
        T* pd = dtarget.data<T>();
        with_scale<T>(red, g, n, [&](auto k) {
          sdk::parallel_for(0, n, sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
            for (std::int64_t i = lo; i < hi; ++i) pd[i] = -(pz[i] * k(i));
          });
        });
      }
      return {dlogits, dtarget};
    });
  }
};

// ---- cross_entropy ------------------------------------------------------------------------------

// One row of cross_entropy's logits, through sdk::run_vectorized (AVX-512 and
// AVX2 copies, with libmvec's exp at their width: the baseline copy's 4-wide SSE
// exp took half of cross_entropy's time, which ran at twice that of log_softmax +
// gather + mean). m: the row's max, 0 when every logit is -inf, NaN when one is
// +inf (the row's loss and gradient are then NaN, as PyTorch's log_softmax gives
// inf - inf: with m = 0 the loss was inf and the gradient row part NaN, part
// finite numbers that are not its limit); s = Σ exp(x - m) in double.
struct RowShiftSumExp {
  template <class T>
  OPFORGE_KERNEL_BODY static void run(const T* row, std::int64_t C, T& m_out, double& s_out) {
    T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
    for (std::int64_t c = 0; c < C; ++c) m = row[c] > m ? row[c] : m;
    if (m == std::numeric_limits<T>::infinity()) m = std::numeric_limits<T>::quiet_NaN();
    else if (!std::isfinite(m)) m = T(0);
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (std::int64_t c = 0; c < C; ++c) s += static_cast<double>(std::exp(row[c] - m));
    m_out = m;
    s_out = s;
  }
};

// d[c] = k (exp((x_c - m) - ls) - spread): the softmax times k, less the smoothing.
struct RowSoftmaxGrad {
  template <class T>
  OPFORGE_KERNEL_BODY static void run(T* __restrict d, const T* __restrict row, std::int64_t C, T k, T m, T ls,
                                      T spread) {
#pragma omp simd
    for (std::int64_t c = 0; c < C; ++c) d[c] = k * (std::exp((row[c] - m) - ls) - spread);
  }
};

class CrossEntropy final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& logits = in[0];
    const Tensor& target = in[1];
    // The schema takes mixed dtypes: which input has which is checked here.
    OPFORGE_CHECK(opforge::is_floating(logits.dtype()), DTypeError, ctx.op_name(),
                  ": argument 'logits': expected dtype float32 or float64, got ", opforge::dtype_name(logits.dtype()));
    sdk::expect_dtype(ctx, target, "target", DType::Int64, "class indices");
    sdk::expect_rank(ctx, logits, "logits", 2);
    const std::int64_t N = logits.size(0), C = logits.size(1);
    sdk::expect_shape(ctx, target, "target", Dims{N}, "one class index per row of 'logits'");
    const std::int64_t* pt = target.data<std::int64_t>();
    const std::int64_t ignore = ctx.attr_int(1);
    const double eps = label_smoothing(ctx);
    std::int64_t kept = 0;
    for (std::int64_t n = 0; n < N; ++n) {
      if (pt[n] == ignore) continue;
      ++kept;
      OPFORGE_CHECK(pt[n] >= 0 && pt[n] < C, IndexError, ctx.op_name(), ": argument 'target': class index ", pt[n],
                    " at position ", n, " is out of range for C = ", C, " classes (expected 0 <= index < ", C,
                    ", or ignore_index = ", ignore, ")");
    }
    const Reduction red = read_reduction(ctx);

    // Per row n, the shift m_n (the row's max, 0 when it is infinite) and log Σ_c exp(x_nc - m_n),
    // in double: row n of `shift_log` is (m_n, log Σ). The loss is log Σ - (x_n[target] - m_n), and
    // backward's softmax is exp((x - m_n) - log Σ): never m_n + log Σ, which loses log Σ to rounding
    // once |m_n| is large (logits of 1e30 in float64, 1e7 in float32).
    Tensor shift_log = Tensor::empty(Dims{N, 2}, DType::Float64);
    // With label smoothing, Σ_c (x_nc - m_n) per row (forward only).
    std::vector<double> row_sums(eps > 0 ? static_cast<std::size_t>(N) : 0);
    Tensor out = sdk::dispatch_floating(logits.dtype(), ctx, "logits", [&](auto tag) {
      using T = decltype(tag);
      const T* px = logits.data<T>();
      double* pl = shift_log.data<double>();
      sdk::parallel_for(0, N, std::max<std::int64_t>(1, sdk::kElementwiseGrain / std::max<std::int64_t>(C, 1)),
                        [&](std::int64_t lo, std::int64_t hi) {
                          for (std::int64_t n = lo; n < hi; ++n) {
                            const T* row = px + n * C;
                            T m;
                            double s;
                            sdk::run_vectorized<RowShiftSumExp>(row, C, m, s);
                            pl[2 * n] = static_cast<double>(m);
                            pl[2 * n + 1] = std::log(s);
                            if (row_sums.empty()) continue;
                            double sx = 0;
#pragma omp simd reduction(+ : sx)
                            for (std::int64_t c = 0; c < C; ++c) sx += static_cast<double>(row[c] - m);
                            row_sums[static_cast<std::size_t>(n)] = sx;
                          }
                        });
      return reduce_losses<T>(red, Dims{N}, N, kept, [&](std::int64_t n) {
        if (pt[n] == ignore) return 0.0;
        const double target_term = static_cast<double>(px[n * C + pt[n]]) - pl[2 * n];  // x_t - m
        if (row_sums.empty()) return pl[2 * n + 1] - target_term;
        return pl[2 * n + 1] - (1 - eps) * target_term - eps / static_cast<double>(C) * row_sums[std::size_t(n)];
      });
    });
    if (ctx.any_input_needs_grad()) {
      ctx.save_for_backward({logits, target, shift_log});
      ctx.save_int(kept);
    }
    return {out};
  }

  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const TensorList& s = ctx.saved_tensors();  // logits, target, (shift, log Σ exp) per row
    const Reduction red = read_reduction(ctx);
    const std::int64_t ignore = ctx.attr_int(1);
    const double eps = label_smoothing(ctx);
    const Tensor g = grads[0].contiguous();
    const Tensor& logits = s[0];
    const std::int64_t N = logits.size(0), C = logits.size(1);
    Tensor dlogits = sdk::dispatch_floating(g.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      const T* px = logits.data<T>();
      const std::int64_t* pt = s[1].data<std::int64_t>();
      const double* pl = s[2].data<double>();
      Tensor d = Tensor::empty(logits.shape(), logits.dtype());
      T* pd = d.data<T>();
      const T spread = static_cast<T>(C > 0 ? eps / static_cast<double>(C) : 0.0), hit = static_cast<T>(1 - eps);
      with_scale<T>(red, g, ctx.saved_int(0), [&](auto k) {
        sdk::parallel_for(0, N, std::max<std::int64_t>(1, sdk::kElementwiseGrain / std::max<std::int64_t>(C, 1)),
                          [&](std::int64_t lo, std::int64_t hi) {
                            for (std::int64_t n = lo; n < hi; ++n) {
                              T* drow = pd + n * C;
                              if (pt[n] == ignore) {
                                std::fill(drow, drow + C, T(0));
                                continue;
                              }
                              const T kn = k(n);
                              const T m = static_cast<T>(pl[2 * n]), ls = static_cast<T>(pl[2 * n + 1]);
                              const T* row = px + n * C;
                              sdk::run_vectorized<RowSoftmaxGrad>(drow, row, C, kn, m, ls, spread);
                              drow[pt[n]] -= spread == T(0) ? kn : kn * hit;  // - onehot g_n, or - q_n g_n
                            }
                          });
      });
      return d;
    });
    return {dlogits, Tensor()};  // target: class indices, no gradient
  }
};

// ---- samples for the test harness ---------------------------------------------------------------

// pred, target [4, 5], standard normal.
TensorList pair_samples(DType dtype, std::uint64_t seed) {
  return {Tensor::randn({4, 5}, dtype, seed), Tensor::randn({4, 5}, dtype, seed + 1)};
}

// pred = 2 randn, target = randn [4, 5]: differences on both sides of delta = 1.
TensorList huber_samples(DType dtype, std::uint64_t seed) {
  std::vector<double> p = Tensor::randn({4, 5}, DType::Float64, seed).to_vector();
  for (double& v : p) v *= 2;
  return {Tensor::from_values(p, Dims{4, 5}, dtype), Tensor::randn({4, 5}, dtype, seed + 1)};
}

// logits [4, 5] standard normal, target [4, 5] sigmoid(randn): probabilities, none 0 or 1.
TensorList bce_samples(DType dtype, std::uint64_t seed) {
  std::vector<double> t = Tensor::randn({4, 5}, DType::Float64, seed + 1).to_vector();
  for (double& v : t) v = 1 / (1 + std::exp(-v));
  return {Tensor::randn({4, 5}, dtype, seed), Tensor::from_values(t, Dims{4, 5}, dtype)};
}

// logits [5, 4] standard normal, target [5] int64 classes, row 2 ignored (-100, the
// default ignore_index).
TensorList cross_entropy_samples(DType dtype, std::uint64_t seed) {
  std::vector<double> t(5);
  for (std::size_t n = 0; n < t.size(); ++n) t[n] = n == 2 ? -100.0 : static_cast<double>((seed + 3 * n) % 4);
  return {Tensor::randn({5, 4}, dtype, seed), Tensor::from_values(t, Dims{5}, DType::Int64)};
}

}  // namespace

namespace opforge_ops::loss {

void register_losses(opforge::PluginRegistrar& registrar) {
  using opforge::AttrKind;
  using opforge::OpSchema;
  const char* reduction_doc = "0 = mean (default), 1 = sum, 2 = none (the per-element losses)";
  registrar.add<Pointwise<Mse>>(OpSchema("loss.mse")
                                    .input_names({"pred", "target"})
                                    .attr("reduction", AttrKind::Int, 0, reduction_doc)
                                    .describe(Mse::kDoc)
                                    .samples(pair_samples));
  registrar.add<Pointwise<Huber>>(OpSchema("loss.huber")
                                      .input_names({"pred", "target"})
                                      .attr("reduction", AttrKind::Int, 0, reduction_doc)
                                      .attr("delta", AttrKind::Float, 1.0, "where the loss turns linear: finite, > 0")
                                      .describe(Huber::kDoc)
                                      .samples(huber_samples));
  registrar.add<BceWithLogits>(
      OpSchema("loss.bce_with_logits")
          .input_names({"logits", "target"})
          .attr("reduction", AttrKind::Int, 0, reduction_doc)
          .describe("binary cross-entropy of sigmoid(logits) against target, as max(z, 0) - z t + "
                    "log1p(exp(-|z|)): finite for every finite logit; reduction 0 mean, 1 sum, 2 none")
          .samples(bce_samples));
  registrar.add<CrossEntropy>(
      OpSchema("loss.cross_entropy")
          .input_names({"logits", "target"})
          // Every dtype reaches forward, which says which one each input takes: the core's
          // check would offer every dtype of the set for either input.
          .accepts(opforge::DTypeSet::all())
          .mixed_dtypes()
          .attr("reduction", AttrKind::Int, 0,
                "0 = mean over the rows not ignored (default), 1 = sum, 2 = none (one loss per row)")
          .attr("ignore_index", AttrKind::Int, -100,
                "a target value whose rows add no loss and get no gradient (padding), as PyTorch's")
          .attr("label_smoothing", AttrKind::Float, 0.0,
                "ε in [0, 1]: the target is (1 - ε) onehot + ε / C, as PyTorch's")
          .describe("cross-entropy of logits [N, C] (float) against class indices [N] (int64), via log-softmax")
          .samples(cross_entropy_samples));
}

}  // namespace opforge_ops::loss
