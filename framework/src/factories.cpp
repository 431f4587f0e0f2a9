// Tensor factories after PyTorch's: ranges (arange, linspace), eye, rand and the
// *_like family. The first factories (empty, zeros, full, randn, ...) are in
// tensor.cpp; these follow their rules: every result is a new contiguous tensor
// that does not require grad, and every refusal names the function, the
// argument, what was expected and what came.
#include "opforge/tensor.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "random_bits.hpp"
#include "tensor_impl.hpp"

namespace opforge {

namespace {

constexpr DTypeSet kRangeDTypes{DType::Float32, DType::Float64, DType::Int64};

// Throws DTypeError unless `dtype` is one of `allowed`, naming them
// ("expected float32, float64 or int64, got bool"); a value that is no DType is
// refused in the words Tensor::empty uses ("got the value 7 (not a DType)").
void check_dtype_arg(DType dtype, DTypeSet allowed, const char* who, const char* arg = "argument 'dtype'",
                     const char* expected_prefix = "") {
  const bool valid = static_cast<int>(dtype) < kNumDTypes;
  if (valid && allowed.contains(dtype)) return;
  int count = 0;
  for (int i = 0; i < kNumDTypes; ++i) count += allowed.contains(static_cast<DType>(i));
  std::string expected;
  for (int i = 0, k = 0; i < kNumDTypes; ++i) {
    if (!allowed.contains(static_cast<DType>(i))) continue;
    expected += k == 0 ? "" : k == count - 1 ? " or " : ", ";
    expected += dtype_name(static_cast<DType>(i));
    ++k;
  }
  const std::string got = valid ? std::string(dtype_name(dtype))
                                : detail::concat("the value ", static_cast<int>(dtype), " (not a DType)");
  throw DTypeError(detail::concat(who, ": ", arg, ": expected ", expected_prefix, expected, ", got ", got));
}

// The most elements of `dtype` one tensor may have: their bytes must stay below
// 2^63, as checked_numel (tensor.cpp) requires of every shape. Checked here
// first so that the message names this function's own arguments, not a shape.
std::int64_t max_elements(DType dtype) {
  return std::numeric_limits<std::int64_t>::max() / static_cast<std::int64_t>(itemsize(dtype));
}

[[noreturn]] void throw_too_many(const char* who, const char* args, DType dtype, const std::string& got) {
  throw ValueError(detail::concat(who, ": ", args, ": expected at most ", max_elements(dtype), " elements (",
                                  dtype_name(dtype), " data of less than 2^63 bytes), got ", got));
}

// How a number is shown in a message: int64 as it is, double exactly.
std::int64_t shown(std::int64_t v) { return v; }
detail::Exact shown(double v) { return detail::Exact{v}; }

void check_finite(double v, const char* who, const char* arg) {
  OPFORGE_CHECK(std::isfinite(v), ValueError, who, ": argument '", arg, "': expected a finite number, got ",
                detail::Exact{v});
}

bool int64_can_hold(double v) { return v >= -0x1p63 && v < 0x1p63; }

// arange's step: nonzero, and of the sign that leads from start to end (any
// sign when they are equal: the result is empty).
template <class T>
void check_arange_step(T start, T end, T step) {
  constexpr const char* who = "Tensor::arange";
  OPFORGE_CHECK(step != 0, ValueError, who, ": argument 'step': expected a nonzero step, got ", shown(step));
  OPFORGE_CHECK(!(step > 0 && end < start), ValueError, who,
                ": argument 'step': expected a negative step to go from start ", shown(start), " down to end ",
                shown(end), ", got ", shown(step));
  OPFORGE_CHECK(!(step < 0 && end > start), ValueError, who,
                ": argument 'step': expected a positive step to go from start ", shown(start), " up to end ",
                shown(end), ", got ", shown(step));
}

std::string arange_count_text(double count, double start, double end, double step) {
  return detail::concat(shown(count), " (ceil((end - start) / step) for start ", shown(start), ", end ", shown(end),
                        ", step ", shown(step), ")");
}

// linspace in T (float or double), as PyTorch's CPU kernel computes it: the
// first half counts up from start, the second down from end, so both ends are
// exact. When end - start overflows T (ends of opposite signs near T's
// largest), the same is done on halved ends and doubled back (PyTorch gives NaN
// there).
template <class T>
void linspace_fill(T* out, T start, T end, std::int64_t steps) {
  if (steps == 0) return;
  if (steps == 1) {
    out[0] = start;
    return;
  }
  const T div = static_cast<T>(steps - 1);
  const std::int64_t half = steps / 2;
  const T step = (end - start) / div;
  if (std::isfinite(step)) {
    for (std::int64_t i = 0; i < half; ++i) out[i] = start + step * static_cast<T>(i);
    for (std::int64_t i = half; i < steps; ++i) out[i] = end - step * static_cast<T>(steps - 1 - i);
    return;
  }
  const T s = start / 2, e = end / 2, h = (e - s) / div;
  for (std::int64_t i = 0; i < half; ++i) out[i] = 2 * (s + h * static_cast<T>(i));
  for (std::int64_t i = half; i < steps; ++i) out[i] = 2 * (e - h * static_cast<T>(steps - 1 - i));
  out[0] = start;
  out[steps - 1] = end;
}

// double to int64, saturating: a guard, since linspace's int64 values lie
// between its ends, but converting a double past int64's range is undefined.
std::int64_t saturate_int64(double v) {
  if (v >= 0x1p63) return std::numeric_limits<std::int64_t>::max();
  if (v < -0x1p63) return std::numeric_limits<std::int64_t>::min();
  return static_cast<std::int64_t>(v);
}

const TensorImpl& like_source(const Tensor& t, const char* who) {
  if (!t.defined())
    throw ValueError(detail::concat(who, ": argument 't': expected a tensor, got an undefined one (",
                                    kUndefinedTensorOrigins, ")"));
  return *t.unsafe_impl();
}

// rand's key is salted apart from randn's: rand(s) and randn(s) are different streams.
constexpr std::uint64_t kRandSalt = 0x72616E642D756E69ull;  // "rand-uni"

}  // namespace

// ---- arange ---------------------------------------------------------------------

Tensor Tensor::arange_exact(std::int64_t start, std::int64_t end, std::int64_t step, DType dtype) {
  constexpr const char* who = "Tensor::arange";
  check_dtype_arg(dtype, kRangeDTypes, who);
  check_arange_step(start, end, step);
  // The count in unsigned arithmetic: end - start may pass int64 (up to 2^64 - 1).
  const bool up = step > 0;
  const std::uint64_t span = up ? static_cast<std::uint64_t>(end) - static_cast<std::uint64_t>(start)
                                : static_cast<std::uint64_t>(start) - static_cast<std::uint64_t>(end);
  const std::uint64_t ustep = up ? static_cast<std::uint64_t>(step) : 0 - static_cast<std::uint64_t>(step);
  const std::uint64_t count = span / ustep + (span % ustep != 0);
  if (count > static_cast<std::uint64_t>(max_elements(dtype)))
    throw_too_many(who, "arguments 'start', 'end', 'step'", dtype,
                   detail::concat(count, " (ceil((end - start) / step) for start ", start, ", end ", end, ", step ",
                                  step, ")"));
  const auto n = static_cast<std::int64_t>(count);
  TensorImplPtr t = make_contiguous_impl(Dims{n}, dtype, who);
  // start + i * step lies between start and end, so it fits in int64; computed
  // modulo 2^64, where i * step alone may not fit.
  auto fill = [&](auto* out) {
    using T = std::remove_pointer_t<decltype(out)>;
    const auto ustart = static_cast<std::uint64_t>(start), ustep_signed = static_cast<std::uint64_t>(step);
    for (std::int64_t i = 0; i < n; ++i)
      out[i] = static_cast<T>(static_cast<std::int64_t>(ustart + static_cast<std::uint64_t>(i) * ustep_signed));
  };
  switch (dtype) {
    case DType::Float32: fill(static_cast<float*>(t->data())); break;
    case DType::Float64: fill(static_cast<double*>(t->data())); break;
    default: fill(static_cast<std::int64_t*>(t->data())); break;
  }
  return Tensor(std::move(t));
}

Tensor Tensor::arange_double(double start, double end, double step, DType dtype) {
  constexpr const char* who = "Tensor::arange";
  check_dtype_arg(dtype, kRangeDTypes, who);
  check_finite(start, who, "start");
  check_finite(end, who, "end");
  check_finite(step, who, "step");
  if (dtype == DType::Int64) {
    const double args[3] = {start, end, step};
    const char* names[3] = {"start", "end", "step"};
    for (int k = 0; k < 3; ++k)
      OPFORGE_CHECK(args[k] == std::trunc(args[k]) && int64_can_hold(args[k]), ValueError, who, ": argument '",
                    names[k], "': expected a whole number in [-2^63, 2^63) for an int64 result, got ",
                    detail::Exact{args[k]});
    return arange_exact(static_cast<std::int64_t>(start), static_cast<std::int64_t>(end),
                        static_cast<std::int64_t>(step), dtype);
  }
  check_arange_step(start, end, step);
  const double count = std::ceil((end - start) / step);  // as PyTorch; inf when end - start overflows
  if (!(count < 0x1p63 && static_cast<std::int64_t>(count) <= max_elements(dtype)))
    throw_too_many(who, "arguments 'start', 'end', 'step'", dtype, arange_count_text(count, start, end, step));
  const auto n = static_cast<std::int64_t>(count);
  TensorImplPtr t = make_contiguous_impl(Dims{n}, dtype, who);
  auto fill = [&](auto* out) {
    using T = std::remove_pointer_t<decltype(out)>;
    for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(start + step * static_cast<double>(i));
  };
  if (dtype == DType::Float32) fill(static_cast<float*>(t->data()));
  else fill(static_cast<double*>(t->data()));
  return Tensor(std::move(t));
}

// ---- linspace -------------------------------------------------------------------

Tensor Tensor::linspace(double start, double end, std::int64_t steps, DType dtype) {
  constexpr const char* who = "Tensor::linspace";
  check_dtype_arg(dtype, kRangeDTypes, who);
  OPFORGE_CHECK(steps >= 0, ValueError, who, ": argument 'steps': expected a count >= 0, got ", steps);
  if (steps > max_elements(dtype)) throw_too_many(who, "argument 'steps'", dtype, detail::concat(steps));
  check_finite(start, who, "start");
  check_finite(end, who, "end");
  const double ends[2] = {start, end};
  const char* names[2] = {"start", "end"};
  for (int k = 0; k < 2; ++k) {
    if (dtype == DType::Int64)
      OPFORGE_CHECK(int64_can_hold(ends[k]), ValueError, who, ": argument '", names[k],
                    "': expected a number in [-2^63, 2^63) for an int64 result (a fraction is truncated), got ",
                    detail::Exact{ends[k]});
    if (dtype == DType::Float32)
      OPFORGE_CHECK(std::abs(ends[k]) <= FLT_MAX, ValueError, who, ": argument '", names[k],
                    "': expected a number within float32's range (magnitude at most ", detail::Exact{FLT_MAX},
                    "), got ", detail::Exact{ends[k]});
  }
  TensorImplPtr t = make_contiguous_impl(Dims{steps}, dtype, who);
  if (dtype == DType::Float64) {
    linspace_fill(static_cast<double*>(t->data()), start, end, steps);
  } else if (dtype == DType::Float32) {
    linspace_fill(static_cast<float*>(t->data()), static_cast<float>(start), static_cast<float>(end), steps);
  } else if (steps > 0) {
    // As PyTorch: the ends truncated to int64 (both exact in double, having
    // come from doubles), the step and each value in double, the value
    // truncated toward zero.
    std::int64_t* out = static_cast<std::int64_t*>(t->data());
    const auto s = static_cast<double>(static_cast<std::int64_t>(start));
    const auto e = static_cast<double>(static_cast<std::int64_t>(end));
    out[0] = static_cast<std::int64_t>(s);  // steps == 1: [start]
    if (steps > 1) {
      const double step = (e - s) / static_cast<double>(steps - 1);
      const std::int64_t half = steps / 2;
      for (std::int64_t i = 0; i < steps; ++i)
        out[i] = saturate_int64(i < half ? s + step * static_cast<double>(i)
                                         : e - step * static_cast<double>(steps - 1 - i));
    }
  }
  return Tensor(std::move(t));
}

// ---- eye ------------------------------------------------------------------------

namespace {
Tensor make_eye(std::int64_t n, std::int64_t m, DType dtype, bool square) {
  constexpr const char* who = "Tensor::eye";
  check_dtype_arg(dtype, DTypeSet::all(), who);
  OPFORGE_CHECK(n >= 0, ValueError, who, ": argument 'n': expected a size >= 0, got ", n);
  OPFORGE_CHECK(m >= 0, ValueError, who, ": argument 'm': expected a size >= 0, got ", m);
  std::int64_t nm = 0;
  if (__builtin_mul_overflow(n, m, &nm) || nm > max_elements(dtype))
    throw_too_many(who, square ? "argument 'n'" : "arguments 'n', 'm'", dtype,
                   detail::concat(n, " x ", m));
  TensorImplPtr t = make_contiguous_impl(Dims{n, m}, dtype, who);
  std::memset(t->data(), 0, static_cast<std::size_t>(nm) * itemsize(dtype));
  auto ones = [&](auto* out, auto one) {
    for (std::int64_t i = 0; i < std::min(n, m); ++i) out[i * m + i] = one;
  };
  switch (dtype) {
    case DType::Float32: ones(static_cast<float*>(t->data()), 1.0f); break;
    case DType::Float64: ones(static_cast<double*>(t->data()), 1.0); break;
    case DType::Int64: ones(static_cast<std::int64_t*>(t->data()), std::int64_t{1}); break;
    case DType::Bool: ones(static_cast<bool*>(t->data()), true); break;
  }
  return Tensor(std::move(t));
}
}  // namespace

Tensor Tensor::eye(std::int64_t n, DType dtype) { return make_eye(n, n, dtype, true); }
Tensor Tensor::eye(std::int64_t n, std::int64_t m, DType dtype) { return make_eye(n, m, dtype, false); }

// ---- rand -----------------------------------------------------------------------

Tensor Tensor::rand(const Dims& shape, DType dtype, std::uint64_t seed) {
  check_dtype_arg(dtype, DTypeSet::floating(), "Tensor::rand");
  TensorImplPtr t = make_contiguous_impl(shape, dtype, "Tensor::rand");
  const std::uint64_t key = splitmix64(seed ^ kRandSalt);
  const std::int64_t n = t->numel;
  // Element i: the top 53 bits of splitmix64(key + i) for float64, the top 24
  // for float32, over 2^53 or 2^24: exact, and below 1. (The float64 value
  // converted to float32 would round up to 1 when its top 25 bits are all set.)
  if (dtype == DType::Float64) {
    double* out = static_cast<double*>(t->data());
    for (std::int64_t i = 0; i < n; ++i)
      out[i] = static_cast<double>(splitmix64(key + static_cast<std::uint64_t>(i)) >> 11) * 0x1p-53;
  } else {
    float* out = static_cast<float*>(t->data());
    for (std::int64_t i = 0; i < n; ++i)
      out[i] = static_cast<float>(splitmix64(key + static_cast<std::uint64_t>(i)) >> 40) * 0x1p-24f;
  }
  return Tensor(std::move(t));
}

// ---- *_like ---------------------------------------------------------------------

Tensor Tensor::empty_like(const Tensor& t) {
  const TensorImpl& src = like_source(t, "Tensor::empty_like");
  return Tensor(make_contiguous_impl(src.shape, src.dtype));
}

Tensor Tensor::zeros_like(const Tensor& t) {
  const TensorImpl& src = like_source(t, "Tensor::zeros_like");
  return zeros(src.shape, src.dtype);
}

Tensor Tensor::ones_like(const Tensor& t) {
  const TensorImpl& src = like_source(t, "Tensor::ones_like");
  return ones(src.shape, src.dtype);
}

Tensor Tensor::full_like(const Tensor& t, double value) {
  const TensorImpl& src = like_source(t, "Tensor::full_like");
  check_storable(src.dtype, value, "Tensor::full_like");
  return full(src.shape, value, src.dtype);
}

Tensor Tensor::randn_like(const Tensor& t, std::uint64_t seed) {
  const TensorImpl& src = like_source(t, "Tensor::randn_like");
  check_dtype_arg(src.dtype, DTypeSet::floating(), "Tensor::randn_like", "argument 't'", "dtype ");
  return randn(src.shape, src.dtype, seed);
}

Tensor Tensor::rand_like(const Tensor& t, std::uint64_t seed) {
  const TensorImpl& src = like_source(t, "Tensor::rand_like");
  check_dtype_arg(src.dtype, DTypeSet::floating(), "Tensor::rand_like", "argument 't'", "dtype ");
  return rand(src.shape, src.dtype, seed);
}

}  // namespace opforge
