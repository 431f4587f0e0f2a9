// Zero-copy exchange with other frameworks through DLPack (v0.6, CPU tensors).
#pragma once

#include "opforge/export.hpp"
#include "opforge/tensor.hpp"

struct DLManagedTensor;

namespace opforge {

/// Exports a tensor without copying: the result views the tensor's memory and
/// keeps it alive until its deleter is called, which the consumer must do exactly
/// once. bool is exported as uint8.
OPFORGE_API DLManagedTensor* to_dlpack(const Tensor& t);

/// Imports a DLPack tensor without copying: the result (and its views) use the
/// producer's memory, and dl->deleter(dl) runs exactly once, when the last of
/// them is gone. Supported: CPU memory; float32, float64, int64, and bool (DLPack
/// 0.8's bool, or uint8) with one lane; up to 8 dimensions. bool and uint8 data
/// must hold only 0 and 1 (checked: opforge has no uint8 dtype, and its bool
/// kernels rely on it; each distinct byte once, so a broadcast costs one read).
/// Strides must be >= 0 (an axis of 0 or 1 elements may have any stride), and
/// data aligned to its element size. Refused with a message: a null shape or
/// data for a non-empty tensor, a shape whose element count or byte extent
/// overflows. On error nothing is taken over: the caller still owns `dl` and
/// must call its deleter. One of to_dlpack's own exports coming back is a view of
/// the exported tensor (its deleter runs at once): it shares that tensor's
/// version counter, so an in-place write through it is caught by a graph that
/// saved the original.
OPFORGE_API Tensor from_dlpack(DLManagedTensor* dl);

}  // namespace opforge
