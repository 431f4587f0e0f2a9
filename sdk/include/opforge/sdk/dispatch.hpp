// dtype dispatch: run a generic lambda with a value of the element type.
//
//   return sdk::dispatch_floating(x.dtype(), ctx, "x", [&](auto tag) {
//     using T = decltype(tag);
//     ...
//   });
//
// dispatch_floating: float32, float64 (what a differentiable kernel takes);
// dispatch_numeric: those and int64 (arithmetic, comparisons, counts);
// dispatch_all: every dtype, bool as `bool` (copies, selections, max/min).
// Each instantiates the lambda once per dtype it takes.
#pragma once

#include <cstdint>

#include "opforge/dtype.hpp"
#include "opforge/error.hpp"
#include "opforge/function.hpp"

namespace opforge::sdk {

/// Calls f(float{}) or f(double{}); other dtypes raise a DTypeError naming the op and argument.
template <class F>
decltype(auto) dispatch_floating(DType t, const Context& ctx, const char* arg, F&& f) {
  switch (t) {
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
    default: break;
  }
  throw DTypeError(::opforge::detail::concat(ctx.op_name(), ": argument '", arg, "': expected dtype float32 or float64, got ",
                                  dtype_name(t)));
}

/// Calls f(float{}), f(double{}) or f(std::int64_t{}); bool raises a DTypeError
/// naming the op and argument.
template <class F>
decltype(auto) dispatch_numeric(DType t, const Context& ctx, const char* arg, F&& f) {
  switch (t) {
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
    case DType::Int64: return f(std::int64_t{});
    default: break;
  }
  throw DTypeError(::opforge::detail::concat(ctx.op_name(), ": argument '", arg,
                                             "': expected dtype float32, float64 or int64, got ", dtype_name(t)));
}

/// Calls f(float{}), f(double{}), f(std::int64_t{}) or f(bool{}): every dtype.
template <class F>
decltype(auto) dispatch_all(DType t, F&& f) {
  switch (t) {
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
    case DType::Int64: return f(std::int64_t{});
    case DType::Bool: break;
  }
  return f(bool{});
}

}  // namespace opforge::sdk
