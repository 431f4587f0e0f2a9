#include "opforge/dlpack.hpp"

#include <dlpack/dlpack.h>

#include <cstdint>
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
void check_bool_bytes(const std::uint8_t* data, const Dims& shape, const Dims& strides, std::uint8_t code) {
  std::int64_t flat = 0;
  for_each_offset(shape, strides, [&](std::int64_t off) {
    OPFORGE_CHECK(data[off] <= 1, DTypeError, "from_dlpack: argument 'dl': ", code == kDLBoolCode ? "bool" : "uint8",
                  " data is imported as bool, whose elements must be 0 or 1; element ", flat, " is ", int(data[off]),
                  " (opforge has no uint8 dtype: export it as int64, or as a 0/1 mask)");
    ++flat;
  });
}

void call_dl_deleter(void* /*data*/, void* context) {
  auto* dl = static_cast<DLManagedTensor*>(context);
  if (dl->deleter) dl->deleter(dl);
}

}  // namespace

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
  holder->managed.deleter = [](DLManagedTensor* self) { delete static_cast<ExportHolder*>(self->manager_ctx); };
  return &holder.release()->managed;
}

Tensor from_dlpack(DLManagedTensor* dl) {
  OPFORGE_CHECK(dl != nullptr, ValueError, "from_dlpack: argument 'dl' is null");
  const DLTensor& d = dl->dl_tensor;
  OPFORGE_CHECK(d.device.device_type == kDLCPU, ValueError,
                "from_dlpack: argument 'dl': expected CPU memory (device type ", int(kDLCPU), "), got device type ",
                int(d.device.device_type));
  OPFORGE_CHECK(d.ndim >= 0 && d.ndim <= kMaxDims, ShapeError, "from_dlpack: argument 'dl': expected at most ",
                kMaxDims, " dimensions, got ", d.ndim);
  const DType dtype = from_dl(d.dtype);
  Dims shape(d.shape, static_cast<std::size_t>(d.ndim));
  Dims strides = d.strides ? Dims(d.strides, static_cast<std::size_t>(d.ndim)) : contiguous_strides(shape);
  for (std::size_t k = 0; k < shape.size(); ++k) {
    OPFORGE_CHECK(shape[k] >= 0, ShapeError, "from_dlpack: argument 'dl': expected sizes >= 0, got shape ", shape);
    OPFORGE_CHECK(strides[k] >= 0, ShapeError, "from_dlpack: argument 'dl': strides ", strides,
                  " for shape ", shape, " go backwards, and opforge's strides are >= 0: give it a copy with positive "
                  "strides (NumPy: np.ascontiguousarray)");
  }
  void* data = static_cast<char*>(d.data) + d.byte_offset;
  if (dtype == DType::Bool) check_bool_bytes(static_cast<const std::uint8_t*>(data), shape, strides, d.dtype.code);
  // From here on the tensor owns dl: its storage calls dl->deleter exactly once.
  // The producer's deleter may be plugin code: the storage keeps that plugin loaded.
  return adopt_memory(data, shape, strides, dtype, &call_dl_deleter, dl, reinterpret_cast<const void*>(dl->deleter));
}

}  // namespace opforge
