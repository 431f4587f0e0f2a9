// Argument checks for op authors, with the messages users expect:
//   "linalg.mv: argument 'x': expected a 1-D tensor, got float64[3, 4]"
#pragma once

#include <cstdint>

#include "opforge/error.hpp"
#include "opforge/function.hpp"
#include "opforge/tensor.hpp"

namespace opforge::sdk {

inline void expect_rank(const Context& ctx, const Tensor& t, const char* arg, std::int64_t rank) {
  OPFORGE_CHECK(t.dim() == rank, ShapeError, ctx.op_name(), ": argument '", arg, "': expected a ", rank,
                "-D tensor, got ", t.describe());
}

inline void expect_shape(const Context& ctx, const Tensor& t, const char* arg, const Dims& shape,
                         const char* because = nullptr) {
  OPFORGE_CHECK(t.shape() == shape, ShapeError, ctx.op_name(), ": argument '", arg, "': expected shape ", shape,
                because ? " (" : "", because ? because : "", because ? ")" : "", ", got ", t.shape());
}

inline void expect_contiguous(const Context& ctx, const Tensor& t, const char* arg) {
  OPFORGE_CHECK(t.is_contiguous(), ValueError, ctx.op_name(), ": argument '", arg,
                "': expected a contiguous tensor, got a strided view of shape ", t.shape());
}

}  // namespace opforge::sdk
