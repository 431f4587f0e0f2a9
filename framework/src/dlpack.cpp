#include "opforge/dlpack.hpp"

#include <dlpack/dlpack.h>

#include <cstdint>
#include <limits>
#include <memory>

#include "strided.hpp"
#include "tensor_impl.hpp"

namespace opforge {
namespace {

// What an exported DLManagedTensor points into; freed by its deleter.
struct ExportHolder {
  DLManagedTensor managed{};
  Tensor keep;  // keeps the storage alive
  std::int64_t shape[kMaxDims] = {};
  std::int64_t strides[kMaxDims] = {};
};

DLDataType to_dl(DType t) {
  switch (t) {
    case DType::Float32: return {kDLFloat, 32, 1};
    case DType::Float64: return {kDLFloat, 64, 1};
    case DType::Int64: return {kDLInt, 64, 1};
    case DType::Bool: return {kDLUInt, 8, 1};
  }
  return {kDLFloat, 64, 1};
}

// DLPack 0.8's code for bool (this header is 0.6); 8 bits an element.
constexpr std::uint8_t kDLBoolCode = 6;

DType from_dl(const DLDataType& t) {
  OPFORGE_CHECK(t.lanes == 1, DTypeError, "from_dlpack: argument 'dl': expected one lane, got ", int(t.lanes));
  if (t.code == kDLFloat && t.bits == 32) return DType::Float32;
  if (t.code == kDLFloat && t.bits == 64) return DType::Float64;
  if (t.code == kDLInt && t.bits == 64) return DType::Int64;
  if ((t.code == kDLUInt || t.code == kDLBoolCode) && t.bits == 8) return DType::Bool;
  throw DTypeError("from_dlpack: argument 'dl': expected float32, float64, int64, bool or uint8 data, got type code " +
                   std::to_string(int(t.code)) + " with " + std::to_string(int(t.bits)) + " bits");
}

// opforge's bool is a byte holding 0 or 1, and its kernels rely on it (where()
// selects with bit masks). uint8 data, or bool data from a producer that does
// not keep to it, is checked element by element before it is taken over.
// Axes of stride 0 repeat the same bytes: each distinct byte is read once (a
// broadcast of one byte to 2^33 elements is one read, not 2^33).
void check_bool_bytes(const std::uint8_t* data, Dims shape, const Dims& strides, std::uint8_t code) {
  for (std::size_t k = 0; k < shape.size(); ++k)
    if (strides[k] == 0 && shape[k] > 1) shape[k] = 1;
  for_each_offset(shape, strides, [&](std::int64_t off) {
    if (data[off] <= 1) return;
    if (code == kDLBoolCode)
      throw DTypeError(detail::concat("from_dlpack: argument 'dl': bool data must hold 0 or 1 in each byte; the byte ",
                                      off, " past the start is ", int(data[off])));
    throw DTypeError(detail::concat("from_dlpack: argument 'dl': uint8 data is imported as bool, whose elements must "
                                    "be 0 or 1; the byte ", off, " past the start is ", int(data[off]),
                                    " (opforge has no uint8 dtype: export it as int64, or as a 0/1 mask)"));
  });
}

void call_dl_deleter(void* /*data*/, void* context) {
  auto* dl = static_cast<DLManagedTensor*>(context);
  if (dl->deleter) dl->deleter(dl);
}

}  // namespace

static void release_export(DLManagedTensor* self) { delete static_cast<ExportHolder*>(self->manager_ctx); }

DLManagedTensor* to_dlpack(const Tensor& t) {
  OPFORGE_CHECK(t.defined(), ValueError, "to_dlpack: argument 't' is undefined");
  auto holder = std::make_unique<ExportHolder>();
  holder->keep = t.detach();
  const TensorImpl& impl = *t.unsafe_impl();
  for (std::size_t i = 0; i < impl.shape.size(); ++i) {
    holder->shape[i] = impl.shape[i];
    holder->strides[i] = impl.strides[i];
  }
  DLTensor& d = holder->managed.dl_tensor;
  d.data = impl.data();
  d.device = {kDLCPU, 0};
  d.ndim = static_cast<int>(impl.shape.size());
  d.dtype = to_dl(impl.dtype);
  d.shape = holder->shape;
  d.strides = holder->strides;
  d.byte_offset = 0;
  holder->managed.manager_ctx = holder.get();
  holder->managed.deleter = &release_export;
  return &holder.release()->managed;
}

Tensor from_dlpack(DLManagedTensor* dl) {
  OPFORGE_CHECK(dl != nullptr, ValueError, "from_dlpack: argument 'dl' is null");
  // One of this library's own exports coming back: a view of the exported tensor's
  // storage, so that it shares its version counter (an in-place write through it is
  // seen by a graph that saved the original, as for any other view).
  if (dl->deleter == &release_export) {
    Tensor view(alias_impl(*static_cast<ExportHolder*>(dl->manager_ctx)->keep.unsafe_impl()));
    dl->deleter(dl);
    return view;
  }
  const DLTensor& d = dl->dl_tensor;
  OPFORGE_CHECK(d.device.device_type == kDLCPU, ValueError,
                "from_dlpack: argument 'dl': expected CPU memory (device type ", int(kDLCPU), "), got device type ",
                int(d.device.device_type));
  OPFORGE_CHECK(d.ndim >= 0 && d.ndim <= kMaxDims, ShapeError, "from_dlpack: argument 'dl': expected 0 to ",
                kMaxDims, " dimensions, got ", d.ndim);
  OPFORGE_CHECK(d.ndim == 0 || d.shape != nullptr, ShapeError, "from_dlpack: argument 'dl': its shape is null for ",
                d.ndim, " dimensions");
  const DType dtype = from_dl(d.dtype);
  Dims shape(d.shape, static_cast<std::size_t>(d.ndim));
  for (std::size_t k = 0; k < shape.size(); ++k)
    OPFORGE_CHECK(shape[k] >= 0, ShapeError, "from_dlpack: argument 'dl': expected sizes >= 0, got shape ", shape);
  std::int64_t numel = 0;
  OPFORGE_CHECK(checked_product(shape, numel), ShapeError, "from_dlpack: argument 'dl': shape ", shape,
                " has more elements than int64 can count (the product of its sizes overflows)");
  Dims strides = d.strides ? Dims(d.strides, static_cast<std::size_t>(d.ndim)) : contiguous_strides(shape);
  for (std::size_t k = 0; k < shape.size(); ++k) {
    if (shape[k] <= 1) strides[k] = 0;  // the stride of an axis of 0 or 1 elements moves to no element
    OPFORGE_CHECK(strides[k] >= 0, ShapeError, "from_dlpack: argument 'dl': strides ", strides,
                  " for shape ", shape, " go backwards, and opforge's strides are >= 0: give it a copy with positive "
                  "strides (NumPy: np.ascontiguousarray)");
  }
  std::int64_t span = 0;
  OPFORGE_CHECK(element_span(shape, strides, span) && span <= std::numeric_limits<std::int64_t>::max() / 8,
                ShapeError, "from_dlpack: argument 'dl': shape ", shape, " with strides ", strides,
                " reaches more than 2^63 bytes past its data");
  OPFORGE_CHECK(d.data != nullptr || numel == 0, ValueError, "from_dlpack: argument 'dl': its data is null for ",
                numel, " elements");
  void* data = static_cast<char*>(d.data) + d.byte_offset;
  const std::size_t size = itemsize(dtype);
  OPFORGE_CHECK(numel == 0 || reinterpret_cast<std::uintptr_t>(data) % size == 0, ValueError,
                "from_dlpack: argument 'dl': its data (byte_offset ", d.byte_offset, ") is not aligned to the ", size,
                " bytes of a ", dtype_name(dtype), " element; give it an aligned copy");
  if (dtype == DType::Bool && numel > 0)
    check_bool_bytes(static_cast<const std::uint8_t*>(data), shape, strides, d.dtype.code);
  // From here on the tensor owns dl: its storage calls dl->deleter exactly once.
  // The producer's deleter may be plugin code: the storage keeps that plugin loaded.
  return adopt_memory(data, shape, strides, dtype, &call_dl_deleter, dl, reinterpret_cast<const void*>(dl->deleter),
                      /*check_bools=*/false);
}

}  // namespace opforge
