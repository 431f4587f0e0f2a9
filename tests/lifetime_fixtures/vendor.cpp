// A plugin that wraps a vendor library (vendor_lib.cpp, a library of its own that
// the plugin links): tensors whose deleter or data are the vendor library's.
// Built as lt_vendor and (FIXTURE_PLUGIN_NAME) lt_vendor2, which share the library.
//   lt_vendor.blob(x)    a copy of x in the vendor's memory, freed by the vendor's deleter
//   lt_vendor.table(x)   a view (no deleter) of the vendor's static table {10, 20, 30, 40}
#include <cstring>

#include <opforge/sdk.hpp>

#ifndef FIXTURE_PLUGIN_NAME
#define FIXTURE_PLUGIN_NAME "lt_vendor"
#endif

extern "C" {
extern double lt_vendor_table[4];
void* lt_vendor_alloc(std::size_t bytes);
void lt_vendor_free(void* data, void*);
}

namespace {

using opforge::Context;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;

class Blob final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override {
    const Tensor x = in[0].contiguous();
    void* mem = lt_vendor_alloc(static_cast<std::size_t>(x.nbytes()) + 1);
    std::memcpy(mem, x.data_ptr(), static_cast<std::size_t>(x.nbytes()));
    return {Tensor::from_blob(mem, x.shape(), x.dtype(), &lt_vendor_free, nullptr)};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {g[0]}; }
};

class Table final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan) const override {
    return {Tensor::from_blob(lt_vendor_table, {4}, opforge::DType::Float64)};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {g[0]}; }
};

}  // namespace

OPFORGE_PLUGIN(FIXTURE_PLUGIN_NAME, "1.0.0") {
  registrar.add<Blob>(
      opforge::OpSchema(FIXTURE_PLUGIN_NAME ".blob").input_names({"x"}).describe("a copy in vendor memory"));
  registrar.add<Table>(
      opforge::OpSchema(FIXTURE_PLUGIN_NAME ".table").input_names({"x"}).describe("a view of a vendor table"));
}
