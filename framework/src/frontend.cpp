// The math front end: Tensor methods and operators that run standard plugin ops.
//
// Each op's handle is resolved on first use and cached in a function-local
// static (thread-safe initialisation), so a call costs what calling through a
// handle costs: no name lookup, no lock. The cached handles keep the standard
// plugins loaded for the life of the process.
#include <cmath>

#include "cached_op.hpp"
#include "opforge/op.hpp"
#include "opforge/tensor.hpp"

namespace opforge {
namespace {

// `f(tensor, scalar)` with the scalar as a 0-d tensor of the tensor's dtype where
// that is floating. With an int64 or bool tensor, NumPy's rule for a Python
// scalar: a double makes both float64 (whatever its value: x * 1e18 once stayed
// int64 and wrapped), an integer is an int64 scalar (exact, past 2^53 too).
template <class F>
Tensor with_scalar(const Tensor& t, double v, F f) {
  if (t.defined() && is_floating(t.dtype())) return f(t, Tensor::scalar(v, t.dtype()));
  if (t.defined()) return f(t.to(DType::Float64), Tensor::scalar(v));
  return f(t, Tensor::scalar(v));
}
template <class F>
Tensor with_scalar(const Tensor& t, std::int64_t v, F f) {
  if (t.defined() && is_floating(t.dtype())) return f(t, Tensor::scalar(static_cast<double>(v), t.dtype()));
  Tensor s = Tensor::empty({}, DType::Int64);
  *s.data<std::int64_t>() = v;
  if (t.defined() && t.dtype() == DType::Bool) return f(t.to(DType::Int64), s);  // bool + 1 is int64, as in NumPy
  return f(t, s);
}

bool is_integral(const Tensor& t) { return t.defined() && !is_floating(t.dtype()); }

}  // namespace

Tensor Tensor::mv(const Tensor& x) const { return OPFORGE_CACHED_OP("linalg.mv")({*this, x}); }
Tensor Tensor::matmul(const Tensor& b) const { return OPFORGE_CACHED_OP("linalg.matmul")({*this, b}); }
Tensor Tensor::dot(const Tensor& b) const { return OPFORGE_CACHED_OP("linalg.dot")({*this, b}); }
Tensor Tensor::square() const { return OPFORGE_CACHED_OP("elementwise.square")({*this}); }
Tensor Tensor::sqrt() const { return OPFORGE_CACHED_OP("elementwise.sqrt")({*this}); }
Tensor Tensor::exp() const { return OPFORGE_CACHED_OP("elementwise.exp")({*this}); }
Tensor Tensor::log() const { return OPFORGE_CACHED_OP("elementwise.log")({*this}); }
Tensor Tensor::abs() const { return OPFORGE_CACHED_OP("elementwise.abs")({*this}); }
Tensor Tensor::tanh() const { return OPFORGE_CACHED_OP("elementwise.tanh")({*this}); }
Tensor Tensor::sigmoid() const { return OPFORGE_CACHED_OP("elementwise.sigmoid")({*this}); }
Tensor Tensor::relu() const { return OPFORGE_CACHED_OP("elementwise.relu")({*this}); }
Tensor Tensor::pow(double exponent) const {
  return OPFORGE_CACHED_OP("elementwise.pow_scalar").call({*this}, {{"exponent", Attr(exponent)}})[0];
}
Tensor Tensor::sum() const { return OPFORGE_CACHED_OP("reduce.sum")({*this}); }
Tensor Tensor::sum(const Dims& axes, bool keepdims) const {
  return OPFORGE_CACHED_OP("reduce.sum").call({*this}, {{"axes", Attr(axes)}, {"keepdims", Attr(keepdims)}})[0];
}
Tensor Tensor::mean() const { return OPFORGE_CACHED_OP("reduce.mean")({*this}); }
Tensor Tensor::mean(const Dims& axes, bool keepdims) const {
  return OPFORGE_CACHED_OP("reduce.mean").call({*this}, {{"axes", Attr(axes)}, {"keepdims", Attr(keepdims)}})[0];
}

Tensor operator+(const Tensor& a, const Tensor& b) { return OPFORGE_CACHED_OP("elementwise.add")({a, b}); }
Tensor operator-(const Tensor& a, const Tensor& b) { return OPFORGE_CACHED_OP("elementwise.sub")({a, b}); }
Tensor operator*(const Tensor& a, const Tensor& b) { return OPFORGE_CACHED_OP("elementwise.mul")({a, b}); }
// True division, as NumPy and PyTorch: two int64 (or bool) operands are divided
// as float64 (elementwise.div takes float32 and float64 only; x / 2.0 on an
// int64 x was refused).
Tensor operator/(const Tensor& a, const Tensor& b) {
  if (is_integral(a) && is_integral(b))
    return OPFORGE_CACHED_OP("elementwise.div")({a.to(DType::Float64), b.to(DType::Float64)});
  return OPFORGE_CACHED_OP("elementwise.div")({a, b});
}
Tensor operator-(const Tensor& a) { return OPFORGE_CACHED_OP("elementwise.neg")({a}); }
Tensor operator+(const Tensor& a, double b) { return with_scalar(a, b, [](const Tensor& t, const Tensor& s) { return t + s; }); }
Tensor operator-(const Tensor& a, double b) { return with_scalar(a, b, [](const Tensor& t, const Tensor& s) { return t - s; }); }
Tensor operator*(const Tensor& a, double b) { return with_scalar(a, b, [](const Tensor& t, const Tensor& s) { return t * s; }); }
Tensor operator/(const Tensor& a, double b) { return with_scalar(a, b, [](const Tensor& t, const Tensor& s) { return t / s; }); }
Tensor operator+(double a, const Tensor& b) { return with_scalar(b, a, [](const Tensor& t, const Tensor& s) { return s + t; }); }
Tensor operator-(double a, const Tensor& b) { return with_scalar(b, a, [](const Tensor& t, const Tensor& s) { return s - t; }); }
Tensor operator*(double a, const Tensor& b) { return with_scalar(b, a, [](const Tensor& t, const Tensor& s) { return s * t; }); }
Tensor operator/(double a, const Tensor& b) { return with_scalar(b, a, [](const Tensor& t, const Tensor& s) { return s / t; }); }
Tensor operator+(const Tensor& a, std::int64_t b) { return with_scalar(a, b, [](const Tensor& t, const Tensor& s) { return t + s; }); }
Tensor operator-(const Tensor& a, std::int64_t b) { return with_scalar(a, b, [](const Tensor& t, const Tensor& s) { return t - s; }); }
Tensor operator*(const Tensor& a, std::int64_t b) { return with_scalar(a, b, [](const Tensor& t, const Tensor& s) { return t * s; }); }
Tensor operator/(const Tensor& a, std::int64_t b) { return with_scalar(a, b, [](const Tensor& t, const Tensor& s) { return t / s; }); }
Tensor operator+(std::int64_t a, const Tensor& b) { return with_scalar(b, a, [](const Tensor& t, const Tensor& s) { return s + t; }); }
Tensor operator-(std::int64_t a, const Tensor& b) { return with_scalar(b, a, [](const Tensor& t, const Tensor& s) { return s - t; }); }
Tensor operator*(std::int64_t a, const Tensor& b) { return with_scalar(b, a, [](const Tensor& t, const Tensor& s) { return s * t; }); }
Tensor operator/(std::int64_t a, const Tensor& b) { return with_scalar(b, a, [](const Tensor& t, const Tensor& s) { return s / t; }); }

}  // namespace opforge
