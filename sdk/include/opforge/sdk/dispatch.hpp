// dtype dispatch: run a generic lambda with a value of the element type.
//
//   return sdk::dispatch_floating(x.dtype(), ctx, "x", [&](auto tag) {
//     using T = decltype(tag);
//     ...
//   });
#pragma once

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

}  // namespace opforge::sdk
