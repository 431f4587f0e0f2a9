// Backpropagation over the dynamic graph.
#pragma once

#include "opforge/export.hpp"
#include "opforge/tensor_list.hpp"

namespace opforge {

/// Backpropagates from several outputs at once: grads[i] is the gradient of the
/// outputs[i] (undefined means ones for a one-element output). Gradients
/// accumulate into the .grad of every leaf reached that requires grad.
OPFORGE_API void backward(TensorSpan outputs, TensorSpan grads = {}, bool retain_graph = false);

/// The gradients of the outputs with respect to `inputs`, returned rather than
/// accumulated: no tensor's .grad is touched. grad_outputs as for backward().
/// An input the outputs do not depend on is an error, unless allow_unused (then
/// its gradient is an undefined Tensor).
OPFORGE_API TensorList grad(TensorSpan outputs, TensorSpan inputs, TensorSpan grad_outputs = {},
                            bool retain_graph = false, bool allow_unused = false);

}  // namespace opforge
