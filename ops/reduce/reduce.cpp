// reduce: sum of all elements, to a 0-d tensor.
//
//   sum(x) = Σ_i x[i]            x of any shape -> shape []
//   d sum / d x[i] = 1,  so  dx = g · ones(shape(x))   (g: the 0-d gradient of the output)
//
// Deterministic: the input is cut into fixed chunks of kChunk elements (the same
// cut whatever the thread count); the chunks' partial sums are computed in
// parallel, in double for float32 too, and added in chunk order. The same input
// gives the same bits with 1 thread or 64.
#include <algorithm>

#include <boost/container/small_vector.hpp>
#include <opforge/sdk.hpp>

namespace {

using opforge::Context;
using opforge::Dims;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
namespace sdk = opforge::sdk;

// Elements per partial sum. Fixed, never derived from the thread count: it sets
// the order of the additions, hence the rounding.
constexpr std::int64_t kChunk = 4096;
// Chunks per parallel task: about sdk::kElementwiseGrain elements, so a tensor
// below that size is summed inline on the calling thread.
constexpr std::int64_t kChunkGrain = sdk::kElementwiseGrain / kChunk;

// Sum of p[0, n) in double. Eight accumulators in a fixed pattern let the
// compiler keep them in vector registers without reordering anything the
// source does not already order, so the result stays deterministic.
template <class T>
double chunk_sum(const T* p, std::int64_t n) {
  double acc[8] = {};
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(p[i + l]);
  double s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += static_cast<double>(p[i]);
  return s;
}

template <class T>
Tensor sum_all(const Tensor& x) {
  const T* p = x.data<T>();
  const std::int64_t n = x.numel();
  const std::int64_t chunks = (n + kChunk - 1) / kChunk;
  // One slot per chunk (inline up to 256 K elements: no heap for most tensors).
  boost::container::small_vector<double, 64> partial(static_cast<std::size_t>(chunks), 0.0);
  sdk::parallel_for(0, chunks, kChunkGrain, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t c = lo; c < hi; ++c) {
      const std::int64_t b = c * kChunk;
      partial[static_cast<std::size_t>(c)] = chunk_sum(p + b, std::min(n, b + kChunk) - b);
    }
  });
  double total = 0;  // in chunk order: independent of which thread ran which chunk
  for (double v : partial) total += v;
  return Tensor::scalar(total, x.dtype());
}

// A tensor of `shape` with every element equal to v.
template <class T>
Tensor filled(const Dims& shape, T v) {
  Tensor out = Tensor::empty(shape, opforge::dtype_v<T>);
  T* po = out.data<T>();
  sdk::parallel_for(0, out.numel(), sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
    std::fill(po + lo, po + hi, v);
  });
  return out;
}

class Sum final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    sdk::expect_contiguous(ctx, x, "x");
    // Backward needs only the input's shape: save it as values, not the tensor,
    // so the input's memory is not kept alive by the graph.
    if (ctx.any_input_needs_grad()) {
      ctx.save_value(static_cast<double>(x.dim()));
      for (std::int64_t s : x.shape()) ctx.save_value(static_cast<double>(s));
    }
    return {sdk::dispatch_floating(x.dtype(), ctx, "x", [&](auto tag) {
      using T = decltype(tag);
      return sum_all<T>(x);
    })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    Dims shape;
    shape.resize(static_cast<std::size_t>(ctx.saved_value(0)));
    for (std::size_t i = 0; i < shape.size(); ++i) shape[i] = static_cast<std::int64_t>(ctx.saved_value(i + 1));
    return {sdk::dispatch_floating(g[0].dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      return filled<T>(shape, static_cast<T>(g[0].item()));  // [] -> shape(x), every element g
    })};
  }
};

}  // namespace

// Sample inputs for the test harness (`opforge check`): x [4, 5].
static TensorList sum_samples(opforge::DType dtype, std::uint64_t seed) { return {Tensor::randn({4, 5}, dtype, seed)}; }

OPFORGE_PLUGIN("reduce", "0.1.0") {
  using opforge::OpSchema;
  registrar.add<Sum>(OpSchema("reduce.sum")
                         .input_names({"x"})
                         .describe("sum of all elements, as a 0-d tensor")
                         .samples(sum_samples));
}
