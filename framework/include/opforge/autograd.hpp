// Backpropagation over the dynamic graph.
#pragma once

#include "opforge/export.hpp"
#include "opforge/tensor_list.hpp"

namespace opforge {

/// Backpropagates from several outputs at once: grads[i] is the gradient of the
/// outputs[i] (undefined means ones for a one-element output). Gradients
/// accumulate into the .grad of every leaf reached that requires grad.
OPFORGE_API void backward(TensorSpan outputs, TensorSpan grads = {}, bool retain_graph = false);

}  // namespace opforge
