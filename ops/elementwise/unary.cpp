// elementwise, one input: y = f(x) element by element; g is the gradient of y,
// of x's shape, and every gradient below is elementwise too (shapes [x] -> [x]).
//
//   neg(x)      = -x                          dx = -g
//   sqrt(x)     = √x                          dx = g / (2 y)            (inf at x = 0)
//   exp(x)      = eˣ                          dx = g y
//   log(x)      = ln x                        dx = g / x
//   log1p(x)    = ln(1 + x)                   dx = g / (1 + x)          (inf at x = -1)
//   expm1(x)    = eˣ - 1                      dx = g eˣ
//   softplus(x) = ln(1 + eˣ)                  dx = g sigmoid(x)
//   abs(x)      = |x|                         dx = g sign(x)            (sign 0 at x = 0 and NaN)
//   sin(x)                                    dx = g cos x
//   cos(x)                                    dx = -g sin x
//   tanh(x)                                   dx = g (1 - y²)
//   sigmoid(x)  = 1 / (1 + e⁻ˣ)               dx = g y (1 - y)
//   relu(x)     = max(x, 0)                   dx = g where x > 0 or x is NaN, else 0
//   clamp(x; min, max) = min(max(x, min), max)
//                                             dx = g where min <= x <= max, else 0
//                                             (PyTorch's convention: a value on a bound, such
//                                             as relu's zeros clamped to [0, 1], passes its
//                                             gradient; the default bounds pass every x)
//   pow_scalar(x; exponent p) = xᵖ            dx = g p xᵖ⁻¹             (0 when p = 0)
//
// neg and abs also take int64 (wrapping on overflow, as NumPy: -INT64_MIN is
// INT64_MIN); int64 tensors never require grad, so they have no backward.
// log1p and expm1 are accurate near 0, where 1 + x and eˣ round away what lies
// below 1's last bit (log1p(1e-20) is 1e-20; log(1 + 1e-20) is 0).
// Functions whose gradient is cheaper from the output (sqrt, exp, tanh, sigmoid,
// relu) save y, the others x, and only when an input needs a gradient (expm1
// saves x, although eˣ is y + 1: y + 1 cancels where x << 0). NaN propagates
// through every op (relu(NaN) and clamp(NaN) are NaN).
#include <cmath>
#include <limits>
#include <type_traits>

#include "elementwise_ops.hpp"
#include "../vector_math.hpp"

namespace opforge_elementwise {
namespace {

// What backward reads besides the output gradient.
enum class Saves { Nothing, Input, Output };

// -x, wrapping for int64 (no undefined behaviour on INT64_MIN).
template <class T>
T negate(T v) {
  if constexpr (std::is_integral_v<T>)
    return static_cast<T>(std::uint64_t{0} - static_cast<std::uint64_t>(v));
  else
    return -v;
}

// Each op: f(x) for forward; df(g, s) for backward, where s is what `saves` says
// (df(g) when it saves nothing); `ints`: whether int64 is accepted.
struct Neg {
  static constexpr bool ints = true;
  static constexpr Saves saves = Saves::Nothing;
  template <class T> static T f(T x) { return negate(x); }
  template <class T> static T df(T g) { return -g; }
};
struct Sqrt {
  static constexpr bool ints = false;
  static constexpr Saves saves = Saves::Output;
  template <class T> static T f(T x) { return std::sqrt(x); }
  template <class T> static T df(T g, T y) { return g / (T(2) * y); }
};
struct Exp {
  static constexpr bool ints = false;
  static constexpr bool vector_math = true;  // f calls libmvec: its map runs uniform()
  static constexpr Saves saves = Saves::Output;
  template <class T> static T f(T x) { return std::exp(x); }
  template <class T> static T df(T g, T y) { return g * y; }
};
struct Log {
  static constexpr bool ints = false;
  static constexpr bool vector_math = true;  // f calls libmvec: its map runs uniform()
  static constexpr Saves saves = Saves::Input;
  template <class T> static T f(T x) { return std::log(x); }
  template <class T> static T df(T g, T x) { return g / x; }
};
struct Log1p {
  static constexpr bool ints = false;
  static constexpr bool vector_math = true;  // f calls libmvec: its map runs uniform()
  static constexpr Saves saves = Saves::Input;
  template <class T> static T f(T x) { return std::log1p(x); }
  template <class T> static T df(T g, T x) { return g / (T(1) + x); }
};
struct Expm1 {
  static constexpr bool ints = false;
  static constexpr bool vector_math = true;  // f calls libmvec: its map runs uniform()
  static constexpr bool vector_math_df = true;  // so does df
  static constexpr Saves saves = Saves::Input;
  template <class T> static T f(T x) { return std::expm1(x); }
  // eˣ from x, not y + 1 from the output: near -1, y is held to steps of 1.1e-16, so
  // for x = -30 y + 1 (PyTorch's gradient) is 9.3592e-14 against eˣ = 9.3576e-14, and
  // below x = -37.4 (float64) it is 0.
  template <class T> static T df(T g, T x) { return g * std::exp(x); }
};
struct Abs {
  static constexpr bool ints = true;
  static constexpr Saves saves = Saves::Input;
  // fabs for floats: |−0.0| is +0.0 (as in IEEE and NumPy; x < 0 ? −x : x kept the sign).
  template <class T> static T f(T x) {
    if constexpr (std::is_floating_point_v<T>) return std::fabs(x);
    else return x < T(0) ? negate(x) : x;
  }
  // g sign(x) as a product: at x = 0 an incoming inf or NaN gives NaN, as in PyTorch (a select
  // gave 0 and hid it); sign(NaN) is 0, as PyTorch's.
  template <class T> static T df(T g, T x) { return g * static_cast<T>((x > T(0)) - (x < T(0))); }
};
struct Sin {
  static constexpr bool ints = false;
  static constexpr bool vector_math = true;  // f calls libmvec: its map runs uniform()
  static constexpr bool vector_math_df = true;  // so does df
  static constexpr Saves saves = Saves::Input;
  template <class T> static T f(T x) { return std::sin(x); }
  template <class T> static T df(T g, T x) { return g * std::cos(x); }
};
struct Cos {
  static constexpr bool ints = false;
  static constexpr bool vector_math = true;  // f calls libmvec: its map runs uniform()
  static constexpr bool vector_math_df = true;  // so does df
  static constexpr Saves saves = Saves::Input;
  template <class T> static T f(T x) { return std::cos(x); }
  template <class T> static T df(T g, T x) { return -g * std::sin(x); }
};
struct Tanh {
  static constexpr bool ints = false;
  static constexpr bool vector_math = true;  // f calls libmvec: its map runs uniform()
  static constexpr Saves saves = Saves::Output;
  template <class T> static T f(T x) { return std::tanh(x); }
  template <class T> static T df(T g, T y) { return g * (T(1) - y * y); }
};
struct Sigmoid {
  static constexpr bool ints = false;
  static constexpr bool vector_math = true;  // f calls libmvec: its map runs uniform()
  static constexpr Saves saves = Saves::Output;
  // One exp of -|x|, so it never overflows: 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below.
  template <class T> static T f(T x) {
    const T e = std::exp(-std::abs(x));
    return x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
  }
  template <class T> static T df(T g, T y) { return g * y * (T(1) - y); }
};
struct Softplus {
  static constexpr bool ints = false;
  static constexpr bool vector_math = true;  // f calls libmvec: its map runs uniform()
  static constexpr bool vector_math_df = true;  // so does df
  static constexpr Saves saves = Saves::Input;
  // max(x, 0) + log1p(e^-|x|): the exp never overflows, and log1p keeps e^-|x| where it
  // is tiny, so every x gets ln(1 + eˣ) to rounding (softplus(30) is 30 + 9.4e-14 and
  // softplus(-30) 9.4e-14) with no threshold past which x itself is returned (PyTorch's
  // softplus has one, threshold=20: its softplus(30) is 30). NaN stays NaN.
  template <class T> static T f(T x) { return (x > T(0) ? x : T(0)) + std::log1p(std::exp(-std::abs(x))); }
  template <class T> static T df(T g, T x) { return g * Sigmoid::f(x); }  // sigmoid(x) from e^-|x|, as sigmoid's
};
struct Relu {
  static constexpr bool ints = false;
  static constexpr Saves saves = Saves::Output;  // y > 0 exactly where x > 0
  template <class T> static T f(T x) { return x <= T(0) ? T(0) : x; }  // relu(−0.0) = +0.0; NaN stays NaN
  // !(y <= 0), not y > 0: at a NaN the gradient passes, as in PyTorch (it was cut to 0,
  // hiding where a NaN came from).
  template <class T> static T df(T g, T y) { return !(y <= T(0)) ? g : T(0); }
};

template <class Op, class F>
decltype(auto) dispatch(DType t, const Context& ctx, const char* arg, F&& f) {
  if constexpr (Op::ints)
    return dispatch_numeric(t, ctx, arg, std::forward<F>(f));
  else
    return sdk::dispatch_floating(t, ctx, arg, std::forward<F>(f));
}

// f wrapped by uniform() when Op says it calls a vector-math function (vector_math = true;
// vector_math_df for its df).
template <class Op, class = void>
struct calls_vector_math : std::false_type {};
template <class Op>
struct calls_vector_math<Op, std::void_t<decltype(Op::vector_math)>> : std::bool_constant<Op::vector_math> {};
template <class Op, class = void>
struct df_calls_vector_math : std::false_type {};
template <class Op>
struct df_calls_vector_math<Op, std::void_t<decltype(Op::vector_math_df)>> : std::bool_constant<Op::vector_math_df> {};
template <bool kUniform, class F>
auto maybe_uniform(F f) {
  if constexpr (kUniform)
    return uniform(f);
  else
    return f;
}

template <class Op>
class Unary final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    Tensor y = dispatch<Op>(x.dtype(), ctx, "x", [&](auto tag) {
      using T = decltype(tag);
      return map1<T, T>(x, x.dtype(), maybe_uniform<calls_vector_math<Op>::value>([](T v) { return Op::f(v); }));
    });
    if (ctx.any_input_needs_grad()) {
      if constexpr (Op::saves == Saves::Input) ctx.save_for_backward(x);
      if constexpr (Op::saves == Saves::Output) ctx.save_for_backward(y);
    }
    return {y};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    return {sdk::dispatch_floating(g[0].dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      if constexpr (Op::saves == Saves::Nothing) {
        return map1<T, T>(g[0], g[0].dtype(), maybe_uniform<df_calls_vector_math<Op>::value>([](T gv) { return Op::df(gv); }));
      } else {
        const Tensor& s = ctx.saved_tensors()[0];  // x or y, of x's shape
        return broadcast_map<T, T, T>(s.shape(), s.dtype(), maybe_uniform<df_calls_vector_math<Op>::value>([](T gv, T sv) { return Op::df(gv, sv); }),
                                      g[0], s);
      }
    })};
  }
};

// Reads and checks clamp's bounds: "elementwise.clamp: attribute 'min' (2) must not exceed attribute 'max' (1)".
std::pair<double, double> clamp_bounds(const Context& ctx) {
  const double lo = ctx.attr_float(0), hi = ctx.attr_float(1);
  OPFORGE_CHECK(!std::isnan(lo), opforge::ValueError, ctx.op_name(),
                ": attribute 'min': expected a number (-inf for no lower bound), got nan");
  OPFORGE_CHECK(!std::isnan(hi), opforge::ValueError, ctx.op_name(),
                ": attribute 'max': expected a number (inf for no upper bound), got nan");
  OPFORGE_CHECK(lo <= hi, opforge::ValueError, ctx.op_name(), ": attribute 'min' (", lo,
                ") must not exceed attribute 'max' (", hi, ")");
  return {lo, hi};
}

// The bounds are compared in the tensor's dtype: the output takes the bound's
// value in that dtype, and the gradient's mask agrees with the output.
class Clamp final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    const auto [lo, hi] = clamp_bounds(ctx);
    if (ctx.any_input_needs_grad()) ctx.save_for_backward(x);
    return {sdk::dispatch_floating(x.dtype(), ctx, "x", [&](auto tag) {
      using T = decltype(tag);
      const T l = static_cast<T>(lo), h = static_cast<T>(hi);
      // A value equal to a bound becomes the bound: clamp(−0.0, min = 0) is +0.0. NaN stays NaN.
      return map1<T, T>(x, x.dtype(), [l, h](T v) { return v <= l ? l : (v >= h ? h : v); });
    })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const Tensor& x = ctx.saved_tensors()[0];
    const double lo = ctx.attr_float(0), hi = ctx.attr_float(1);
    return {sdk::dispatch_floating(g[0].dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      const T l = static_cast<T>(lo), h = static_cast<T>(hi);
      // [x] -> [x]: g where min <= x <= max (NaN: 0)
      return broadcast_map<T, T, T>(x.shape(), x.dtype(), [l, h](T gv, T xv) { return l <= xv && xv <= h ? gv : T(0); },
                                    g[0], x);
    })};
  }
};

class PowScalar final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    const double p = ctx.attr_float(0);
    if (ctx.any_input_needs_grad()) ctx.save_for_backward(x);
    return {sdk::dispatch_floating(x.dtype(), ctx, "x", [&](auto tag) {
      using T = decltype(tag);
      // Small integer exponents by multiplication, as PyTorch does: vectorised, and
      // free of the vector pow's slow path (libmvec's powf sends every lane with a
      // negative base to scalar pow: x^3 of randn float32 took 67x PyTorch's time).
      // x^3 and x^4 round at most twice (pow once), x^-1 and x^-2 at most twice.
      if (p == 2) return map1<T, T>(x, x.dtype(), [](T v) { return v * v; });  // exact
      if (p == 3) return map1<T, T>(x, x.dtype(), [](T v) { return v * v * v; });
      if (p == 4) return map1<T, T>(x, x.dtype(), [](T v) { return (v * v) * (v * v); });
      if (p == 1) return map1<T, T>(x, x.dtype(), [](T v) { return v; });
      if (p == -1) return map1<T, T>(x, x.dtype(), [](T v) { return T(1) / v; });
      if (p == -2) return map1<T, T>(x, x.dtype(), [](T v) { return T(1) / (v * v); });
      const T e = static_cast<T>(p);
      return map1<T, T>(x, x.dtype(), uniform([e](T v) { return std::pow(v, e); }));
    })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const Tensor& x = ctx.saved_tensors()[0];
    const double p = ctx.attr_float(0);
    return {sdk::dispatch_floating(g[0].dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      const T e = static_cast<T>(p), e1 = static_cast<T>(p - 1);
      // [x] -> [x]: g p x^(p-1); the constant x^0 has gradient 0 (not 0 * x^-1, NaN at x = 0)
      if (p == 0) return broadcast_map<T, T, T>(x.shape(), x.dtype(), [](T, T) { return T(0); }, g[0], x);
      if (p == 2)
        return broadcast_map<T, T, T>(x.shape(), x.dtype(), [](T gv, T xv) { return T(2) * xv * gv; }, g[0], x);
      // The small integer exponents of forward: g p x^(p-1) by multiplication too.
      if (p == 3)
        return broadcast_map<T, T, T>(x.shape(), x.dtype(), [](T gv, T xv) { return gv * T(3) * (xv * xv); }, g[0], x);
      if (p == 4)
        return broadcast_map<T, T, T>(x.shape(), x.dtype(), [](T gv, T xv) { return gv * T(4) * (xv * xv * xv); },
                                      g[0], x);
      if (p == 1) return broadcast_map<T, T, T>(x.shape(), x.dtype(), [](T gv, T) { return gv; }, g[0], x);
      if (p == -1)
        return broadcast_map<T, T, T>(x.shape(), x.dtype(), [](T gv, T xv) { return -gv / (xv * xv); }, g[0], x);
      if (p == -2)
        return broadcast_map<T, T, T>(x.shape(), x.dtype(), [](T gv, T xv) { return T(-2) * gv / (xv * xv * xv); },
                                      g[0], x);
      return broadcast_map<T, T, T>(x.shape(), x.dtype(), uniform([e, e1](T gv, T xv) { return gv * e * std::pow(xv, e1); }),
                                    g[0], x);
    })};
  }
};

// ---- sample inputs for the test harness: x [4, 5] ---------------------------------------

// Writes f(x) over randn x, in place (a sample is a plain tensor of our own).
template <class F>
Tensor transformed_randn(const Dims& shape, DType dtype, std::uint64_t seed, F f) {
  Tensor t = Tensor::randn(shape, DType::Float64, seed);
  double* p = t.data<double>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = f(p[i]);
  return t.to(dtype);
}

TensorList any_samples(DType dtype, std::uint64_t seed) { return {Tensor::randn({4, 5}, dtype, seed)}; }
// In [0.5, ~4]: log, sqrt and pow with any exponent are smooth there.
TensorList positive_samples(DType dtype, std::uint64_t seed) {
  return {transformed_randn({4, 5}, dtype, seed, [](double v) { return 0.5 + std::abs(v); })};
}
// Away from clamp's sample bounds (-0.5, 0.7), where its gradient jumps: no x within 0.1 of either.
TensorList clamp_samples(DType dtype, std::uint64_t seed) {
  return {transformed_randn({4, 5}, dtype, seed, [](double v) {
    for (double b : {-0.5, 0.7})
      if (std::abs(v - b) < 0.1) v = b + (v < b ? -0.1 : 0.1);
    return v;
  })};
}
// In [-0.5, ~3.5]: inside log1p's domain x > -1, on both sides of 0.
TensorList above_minus_one_samples(DType dtype, std::uint64_t seed) {
  return {transformed_randn({4, 5}, dtype, seed, [](double v) { return std::abs(v) - 0.5; })};
}
// 4 randn: softplus's two tails (close to 0 and to x) as well as its bend.
TensorList wide_samples(DType dtype, std::uint64_t seed) {
  return {transformed_randn({4, 5}, dtype, seed, [](double v) { return 4 * v; })};
}
// |x| >= 0.25: away from the kink of abs and relu at 0.
TensorList nonzero_samples(DType dtype, std::uint64_t seed) {
  return {transformed_randn({4, 5}, dtype, seed, [](double v) { return v < 0 ? v - 0.25 : v + 0.25; })};
}
template <class Op>
void add_unary(opforge::PluginRegistrar& registrar, const char* name, const char* doc,
               opforge::OpSchema::SampleInputs samples) {
  // Strided x as it is: map1 reads a transpose in memory order (its output laid out
  // alike) and copies other layouts itself; backward's broadcast_map reads any strides.
  registrar.add<Unary<Op>>(opforge::OpSchema(std::string("elementwise.") + name)
                               .input_names({"x"})
                               .accepts(Op::ints ? kNumeric : opforge::DTypeSet::floating())
                               .describe(doc)
                               .takes_strided_inputs()
                               .samples(samples));
}

}  // namespace

void register_unary(opforge::PluginRegistrar& registrar) {
  using opforge::AttrKind;
  using opforge::OpSchema;
  constexpr double inf = std::numeric_limits<double>::infinity();
  add_unary<Neg>(registrar, "neg", "-x, element by element (float32, float64, int64)", any_samples);
  add_unary<Sqrt>(registrar, "sqrt", "square root of x, element by element", positive_samples);
  add_unary<Exp>(registrar, "exp", "e to the power x, element by element", any_samples);
  add_unary<Log>(registrar, "log", "natural logarithm of x, element by element", positive_samples);
  add_unary<Log1p>(registrar, "log1p", "log(1 + x), element by element, accurate for x near 0 (where 1 + x rounds)",
                   above_minus_one_samples);
  add_unary<Expm1>(registrar, "expm1", "exp(x) - 1, element by element, accurate for x near 0 (where exp(x) rounds)",
                   any_samples);
  add_unary<Abs>(registrar, "abs", "|x|, element by element (float32, float64, int64)", nonzero_samples);
  add_unary<Sin>(registrar, "sin", "sine of x (radians), element by element", any_samples);
  add_unary<Cos>(registrar, "cos", "cosine of x (radians), element by element", any_samples);
  add_unary<Tanh>(registrar, "tanh", "hyperbolic tangent of x, element by element", any_samples);
  add_unary<Sigmoid>(registrar, "sigmoid", "1 / (1 + exp(-x)), element by element", any_samples);
  add_unary<Softplus>(registrar, "softplus",
                      "log(1 + exp(x)), element by element, as max(x, 0) + log1p(exp(-|x|)): never overflows, "
                      "and accurate for every x with no threshold (PyTorch's softplus, beta 1, returns x itself "
                      "for x > threshold, default 20)",
                      wide_samples);
  add_unary<Relu>(registrar, "relu", "max(x, 0), element by element", nonzero_samples);
  registrar.add<Clamp>(OpSchema("elementwise.clamp")
                           .input_names({"x"})
                           .attr("min", AttrKind::Float, -inf, "lower bound (-inf: none)")
                           .attr("max", AttrKind::Float, inf, "upper bound (inf: none); min <= max")
                           .describe("x limited to [min, max], element by element")
                           .takes_strided_inputs()
                           .samples(clamp_samples)
                           .sample_attrs({{"min", -0.5}, {"max", 0.7}}));
  registrar.add<PowScalar>(OpSchema("elementwise.pow_scalar")
                               .input_names({"x"})
                               .attr("exponent", AttrKind::Float, 2.0, "the power p (default 2)")
                               .describe("x to the power of a scalar exponent, element by element")
                               .takes_strided_inputs()
                               .samples(positive_samples)
                               .sample_attrs({{"exponent", 2.5}}));  // the general path (2 has its own)
}

}  // namespace opforge_elementwise
