// shape: the shape family, differentiable data movement. Each op's formula and
// gradient is in the source that defines it:
//
//   views.cpp  reshape, transpose, permute, slice, expand, squeeze, unsqueeze
//              (forward returns a zero-copy view of the input)
//   join.cpp   concat, stack (variadic: x, x[1], x[2], ...)
//   index.cpp  index_select, gather (x of any dtype, int64 index; the index gets
//              no gradient)
//
// Every op moves elements without arithmetic, so each accepts float32, float64,
// int64 and bool (gradients for the floating dtypes), takes strided inputs as they
// are (no copy by the core), and returns contiguous gradients from backward.
// common.cpp has the shared kernels: a parallel strided copy, a strided gather and
// a deterministic scatter-add.
#include "common.hpp"

OPFORGE_PLUGIN("shape", "0.1.0") {
  opforge_shape::register_view_ops(registrar);
  opforge_shape::register_join_ops(registrar);
  opforge_shape::register_index_ops(registrar);
}
