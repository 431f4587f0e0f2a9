// The shape plugin (reshape, transpose, permute, slice, concat, stack, expand,
// squeeze, unsqueeze, index_select, gather), through the loaded-plugin path only:
// every op is resolved by name with opforge::op(), as a user program does.
//
// For every op: values against hand-worked cases and against naive multi-index
// loops written here (independent of the plugin's kernels), views sharing the
// input's storage where the op promises one, gradients against finite differences
// (sdk::gradcheck, float64, with the attributes bound by a small wrapper op since
// gradcheck calls an op without attributes), the harness (sdk::check_op), float32
// agreeing with float64, int64 and bool data, and the exact message of each bad call.
#include <catch2/catch.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <opforge/opforge.hpp>
#include <opforge/sdk/gradcheck.hpp>
#include <opforge/sdk/harness.hpp>

#include "op_checks.hpp"

namespace {

using Catch::Matchers::Message;
using opforge::Attr;
using opforge::AttrSpan;
using opforge::Dims;
using opforge::DType;
using opforge::OpHandle;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
namespace sdk = opforge::sdk;

// ---- helpers ------------------------------------------------------------------------

Tensor values(const std::vector<double>& v, const Dims& shape, DType dtype = DType::Float64) {
  return Tensor::from_values(v, shape, dtype);
}
Tensor indices(const std::vector<double>& v, const Dims& shape) { return Tensor::from_values(v, shape, DType::Int64); }
Tensor indices(const std::vector<double>& v) { return indices(v, Dims{static_cast<std::int64_t>(v.size())}); }

Tensor call(const std::string& name, const std::vector<Tensor>& inputs, const std::vector<Attr>& attrs = {}) {
  return opforge::op(name)(TensorSpan(inputs), AttrSpan(attrs.data(), attrs.size()));
}

std::vector<std::int64_t> unravel(std::int64_t flat, const Dims& shape) {
  std::vector<std::int64_t> m(shape.size());
  for (std::size_t k = shape.size(); k-- > 0;) {
    m[k] = flat % shape[k];
    flat /= shape[k];
  }
  return m;
}
std::int64_t ravel(const std::vector<std::int64_t>& m, const Dims& shape) {
  std::int64_t flat = 0;
  for (std::size_t k = 0; k < shape.size(); ++k) flat = flat * shape[k] + m[k];
  return flat;
}

// ---- naive references (multi-index loops over row-major values) -------------------------

struct Ref {
  std::vector<double> v;
  Dims shape;
};

Ref ref_of(const Tensor& t) { return {t.to_vector(), t.shape()}; }

Ref ref_permute(const Ref& x, const std::vector<std::int64_t>& order) {
  Ref out;
  for (std::int64_t a : order) out.shape.push_back(x.shape[static_cast<std::size_t>(a)]);
  out.v.resize(x.v.size());
  for (std::int64_t f = 0; f < static_cast<std::int64_t>(out.v.size()); ++f) {
    const auto m = unravel(f, out.shape);
    std::vector<std::int64_t> xm(m.size());
    for (std::size_t i = 0; i < m.size(); ++i) xm[static_cast<std::size_t>(order[i])] = m[i];
    out.v[static_cast<std::size_t>(f)] = x.v[static_cast<std::size_t>(ravel(xm, x.shape))];
  }
  return out;
}

// Python's range for x[start:stop:step] on an axis of size n (step >= 1).
std::vector<std::int64_t> python_range(std::int64_t n, std::int64_t start, std::int64_t stop, std::int64_t step) {
  auto bound = [n](std::int64_t v) {
    if (v < 0) v += n;
    return v < 0 ? 0 : (v > n ? n : v);
  };
  std::vector<std::int64_t> r;
  for (std::int64_t i = bound(start); i < bound(stop); i += step) r.push_back(i);
  return r;
}

// out[m] = x[m with m[axis] := pick(m)], over `out_shape`; pick gives an index in [0, n).
Ref ref_pick(const Ref& x, const Dims& out_shape, std::size_t axis,
             const std::function<std::int64_t(const std::vector<std::int64_t>&)>& pick) {
  Ref out{std::vector<double>(static_cast<std::size_t>(out_shape.product())), out_shape};
  for (std::int64_t f = 0; f < out_shape.product(); ++f) {
    auto m = unravel(f, out_shape);
    const std::int64_t v = pick(m);
    m[axis] = v;
    for (std::size_t k = 0; k < m.size(); ++k)
      if (x.shape[k] == 1) m[k] = 0;  // broadcast axis of x
    out.v[static_cast<std::size_t>(f)] = x.v[static_cast<std::size_t>(ravel(m, x.shape))];
  }
  return out;
}

Ref ref_slice(const Ref& x, std::size_t axis, std::int64_t start, std::int64_t stop, std::int64_t step) {
  const auto r = python_range(x.shape[axis], start, stop, step);
  Dims shape = x.shape;
  shape[axis] = static_cast<std::int64_t>(r.size());
  return ref_pick(x, shape, axis, [&](const std::vector<std::int64_t>& m) { return r[static_cast<std::size_t>(m[axis])]; });
}

Ref ref_concat(const std::vector<Ref>& xs, std::size_t axis) {
  Dims shape = xs[0].shape;
  shape[axis] = 0;
  for (const Ref& x : xs) shape[axis] += x.shape[axis];
  Ref out{std::vector<double>(static_cast<std::size_t>(shape.product())), shape};
  for (std::int64_t f = 0; f < shape.product(); ++f) {
    auto m = unravel(f, shape);
    std::size_t i = 0;
    while (m[axis] >= xs[i].shape[axis]) m[axis] -= xs[i++].shape[axis];
    out.v[static_cast<std::size_t>(f)] = xs[i].v[static_cast<std::size_t>(ravel(m, xs[i].shape))];
  }
  return out;
}

Ref ref_stack(const std::vector<Ref>& xs, std::size_t axis) {
  Dims shape;
  for (std::size_t k = 0; k <= xs[0].shape.size(); ++k) {
    if (k == axis) shape.push_back(static_cast<std::int64_t>(xs.size()));
    if (k < xs[0].shape.size()) shape.push_back(xs[0].shape[k]);
  }
  Ref out{std::vector<double>(static_cast<std::size_t>(shape.product())), shape};
  for (std::int64_t f = 0; f < shape.product(); ++f) {
    auto m = unravel(f, shape);
    const auto i = static_cast<std::size_t>(m[axis]);
    m.erase(m.begin() + static_cast<std::ptrdiff_t>(axis));
    out.v[static_cast<std::size_t>(f)] = xs[i].v[static_cast<std::size_t>(ravel(m, xs[i].shape))];
  }
  return out;
}

Ref ref_expand(const Ref& x, const Dims& shape) {
  Ref out{std::vector<double>(static_cast<std::size_t>(shape.product())), shape};
  const std::size_t lead = shape.size() - x.shape.size();
  for (std::int64_t f = 0; f < shape.product(); ++f) {
    const auto m = unravel(f, shape);
    std::vector<std::int64_t> xm(x.shape.size());
    for (std::size_t k = 0; k < xm.size(); ++k) xm[k] = x.shape[k] == 1 ? 0 : m[k + lead];
    out.v[static_cast<std::size_t>(f)] = x.v[static_cast<std::size_t>(ravel(xm, x.shape))];
  }
  return out;
}

std::int64_t wrap(std::int64_t v, std::int64_t n) { return v < 0 ? v + n : v; }

Ref ref_index_select(const Ref& x, const std::vector<std::int64_t>& idx, std::size_t axis) {
  Dims shape = x.shape;
  shape[axis] = static_cast<std::int64_t>(idx.size());
  return ref_pick(x, shape, axis, [&](const std::vector<std::int64_t>& m) {
    return wrap(idx[static_cast<std::size_t>(m[axis])], x.shape[axis]);
  });
}

// NumPy take_along_axis with broadcasting on every axis but `axis`.
Ref ref_gather(const Ref& x, const Ref& idx, std::size_t axis) {
  Dims shape = idx.shape;
  for (std::size_t k = 0; k < shape.size(); ++k)
    if (k != axis && idx.shape[k] == 1) shape[k] = x.shape[k];
  return ref_pick(x, shape, axis, [&](std::vector<std::int64_t> m) {
    for (std::size_t k = 0; k < m.size(); ++k)
      if (idx.shape[k] == 1) m[k] = 0;
    return wrap(static_cast<std::int64_t>(idx.v[static_cast<std::size_t>(ravel(m, idx.shape))]), x.shape[axis]);
  });
}

void require_equal(const Tensor& got, const Ref& want) {
  REQUIRE(got.shape() == want.shape);
  const std::vector<double> g = got.to_vector();
  std::size_t i = 0;
  while (i < g.size() && g[i] == want.v[i]) ++i;
  if (i == g.size()) return;
  INFO("element " << i << " of " << g.size());
  REQUIRE(g[i] == want.v[i]);
}

// ---- an op with its attributes bound, so that sdk::gradcheck can run it -----------------

// gradcheck calls an op without attributes. Bound runs the real op with fixed
// attributes: forward records the real op on detached leaves (grad mode on for
// that call), backward asks the engine for the gradients of those leaves through
// the real op's backward. No arithmetic of its own: a wrong gradient of the shape
// op is a wrong gradient of Bound.
class Bound final : public opforge::Function {
 public:
  Bound(OpHandle op, std::vector<Attr> attrs) : op_(std::move(op)), attrs_(std::move(attrs)) {}
  TensorList forward(opforge::Context& ctx, TensorSpan in) const override {
    const AttrSpan attrs(attrs_.data(), attrs_.size());
    // Two returns of fresh values, no named one: GCC 12 at -O3 warns falsely
    // (-Wstringop-overflow) about moving a named TensorList out of a function
    // that has another return.
    if (!ctx.any_input_needs_grad()) return op_.call(in, attrs);
    return forward_recorded(ctx, in, attrs);
  }
  TensorList forward_recorded(opforge::Context& ctx, TensorSpan in, AttrSpan attrs) const {
    struct GradOn {
      bool prev = opforge::grad_enabled();
      GradOn() { opforge::set_grad_enabled(true); }
      ~GradOn() { opforge::set_grad_enabled(prev); }
    } on;
    TensorList leaves;
    for (std::size_t i = 0; i < in.size(); ++i) {
      Tensor leaf = in[i].detach();
      if (ctx.needs_input_grad(i)) leaf.requires_grad_(true);
      leaves.push_back(leaf);
    }
    TensorList out = op_.call(leaves, attrs);
    ctx.save_for_backward(out[0]);
    ctx.save_for_backward(leaves);
    return out;
  }
  TensorList backward(opforge::Context& ctx, TensorSpan g) const override {
    const TensorList& saved = ctx.saved_tensors();  // inner output, then the leaves
    TensorList wrt;
    std::vector<std::size_t> which;
    for (std::size_t i = 0; i < ctx.num_inputs(); ++i) {
      if (!ctx.needs_input_grad(i)) continue;
      wrt.push_back(saved[i + 1]);
      which.push_back(i);
    }
    const TensorList gs = opforge::grad(TensorSpan(saved[0]), wrt, TensorSpan(g[0]), false, true);
    TensorList result(ctx.num_inputs());
    for (std::size_t k = 0; k < which.size(); ++k) result[which[k]] = gs[k];
    return result;
  }

 private:
  OpHandle op_;
  std::vector<Attr> attrs_;
};

OpHandle bind(const std::string& name, std::vector<Attr> attrs) {
  const OpHandle real = opforge::op(name);
  opforge::OpSchema s("bound." + name.substr(name.find('.') + 1));
  s.inputs = real.schema().inputs;
  s.dtypes = real.schema().dtypes;
  s.same_dtype = real.schema().same_dtype;
  s.variadic = real.schema().variadic;
  s.strided_inputs = true;
  return opforge::make_op(std::move(s), std::make_unique<Bound>(real, std::move(attrs)));
}

// ---- the cases every op runs through -------------------------------------------------------

struct Case {
  std::string label;
  std::string op;
  std::vector<Attr> attrs;
  std::function<std::vector<Tensor>(DType)> inputs;  // floating inputs in the dtype asked for
  std::function<Ref(const std::vector<Tensor>&)> reference;
};

std::vector<Case> cases() {
  using V = std::vector<Tensor>;
  auto randn = [](Dims shape, std::uint64_t seed) {
    return [shape, seed](DType dt) { return V{Tensor::randn(shape, dt, seed)}; };
  };
  std::vector<Case> c;
  c.push_back({"reshape [2, 3, 4] -> [4, -1]", "shape.reshape", {Attr(Dims{4, -1})}, randn({2, 3, 4}, 1),
               [](const V& in) { return Ref{in[0].to_vector(), Dims{4, 6}}; }});
  c.push_back({"reshape of a transposed view (a copy)", "shape.reshape", {Attr(Dims{-1})},
               [](DType dt) { return V{Tensor::randn({4, 6}, dt, 2).transpose(0, 1)}; },
               [](const V& in) { return Ref{in[0].to_vector(), Dims{24}}; }});
  c.push_back({"transpose axes 0 and 2", "shape.transpose", {Attr(0), Attr(2)}, randn({2, 3, 4}, 3),
               [](const V& in) { return ref_permute(ref_of(in[0]), {2, 1, 0}); }});
  c.push_back({"transpose, default axes -2 and -1", "shape.transpose", {}, randn({2, 3, 4}, 4),
               [](const V& in) { return ref_permute(ref_of(in[0]), {0, 2, 1}); }});
  c.push_back({"permute [1, 2, 0]", "shape.permute", {Attr(Dims{1, 2, 0})}, randn({2, 3, 4}, 5),
               [](const V& in) { return ref_permute(ref_of(in[0]), {1, 2, 0}); }});
  c.push_back({"permute, default [] reverses", "shape.permute", {}, randn({2, 3, 4}, 6),
               [](const V& in) { return ref_permute(ref_of(in[0]), {2, 1, 0}); }});
  c.push_back({"slice axis 1 [1:-1:2]", "shape.slice", {Attr(1), Attr(1), Attr(-1), Attr(2)}, randn({3, 7}, 7),
               [](const V& in) { return ref_slice(ref_of(in[0]), 1, 1, -1, 2); }});
  c.push_back({"slice axis 0 [-10:10] (clamped)", "shape.slice", {Attr(0), Attr(-10), Attr(10)}, randn({3, 4}, 8),
               [](const V& in) { return ref_slice(ref_of(in[0]), 0, -10, 10, 1); }});
  c.push_back({"slice axis -1 [-3:] step 3", "shape.slice", {Attr(-1), Attr(-3), Attr(), Attr(3)},
               randn({2, 2, 5}, 9), [](const V& in) { return ref_slice(ref_of(in[0]), 2, -3, 100, 3); }});
  c.push_back({"slice axis 1 [3:1] (empty)", "shape.slice", {Attr(1), Attr(3), Attr(1)}, randn({3, 4}, 10),
               [](const V& in) { return ref_slice(ref_of(in[0]), 1, 3, 1, 1); }});
  c.push_back({"concat of three along axis 1", "shape.concat", {Attr(1)},
               [](DType dt) {
                 return V{Tensor::randn({2, 3}, dt, 11), Tensor::randn({2, 1}, dt, 12), Tensor::randn({2, 4}, dt, 13)};
               },
               [](const V& in) { return ref_concat({ref_of(in[0]), ref_of(in[1]), ref_of(in[2])}, 1); }});
  c.push_back({"concat of two along axis -3", "shape.concat", {Attr(-3)},
               [](DType dt) { return V{Tensor::randn({1, 2, 3}, dt, 14), Tensor::randn({3, 2, 3}, dt, 15)}; },
               [](const V& in) { return ref_concat({ref_of(in[0]), ref_of(in[1])}, 0); }});
  c.push_back({"stack of three along axis 1", "shape.stack", {Attr(1)},
               [](DType dt) {
                 return V{Tensor::randn({2, 3}, dt, 16), Tensor::randn({2, 3}, dt, 17), Tensor::randn({2, 3}, dt, 18)};
               },
               [](const V& in) { return ref_stack({ref_of(in[0]), ref_of(in[1]), ref_of(in[2])}, 1); }});
  c.push_back({"stack of two along axis -1", "shape.stack", {Attr(-1)},
               [](DType dt) { return V{Tensor::randn({3}, dt, 19), Tensor::randn({3}, dt, 20)}; },
               [](const V& in) { return ref_stack({ref_of(in[0]), ref_of(in[1])}, 1); }});
  c.push_back({"expand [3, 1] -> [2, 3, 4]", "shape.expand", {Attr(Dims{2, 3, 4})}, randn({3, 1}, 21),
               [](const V& in) { return ref_expand(ref_of(in[0]), {2, 3, 4}); }});
  c.push_back({"expand [3, 1] -> [-1, 4]", "shape.expand", {Attr(Dims{-1, 4})}, randn({3, 1}, 22),
               [](const V& in) { return ref_expand(ref_of(in[0]), {3, 4}); }});
  c.push_back({"squeeze all of [1, 3, 1, 2]", "shape.squeeze", {}, randn({1, 3, 1, 2}, 23),
               [](const V& in) { return Ref{in[0].to_vector(), Dims{3, 2}}; }});
  c.push_back({"squeeze axis -2 of [1, 3, 1, 2]", "shape.squeeze", {Attr(Dims{-2})}, randn({1, 3, 1, 2}, 24),
               [](const V& in) { return Ref{in[0].to_vector(), Dims{1, 3, 2}}; }});
  c.push_back({"unsqueeze axis 1 of [3, 4]", "shape.unsqueeze", {Attr(1)}, randn({3, 4}, 25),
               [](const V& in) { return Ref{in[0].to_vector(), Dims{3, 1, 4}}; }});
  c.push_back({"unsqueeze axis -1 of [3, 4]", "shape.unsqueeze", {Attr(-1)}, randn({3, 4}, 26),
               [](const V& in) { return Ref{in[0].to_vector(), Dims{3, 4, 1}}; }});
  c.push_back({"index_select axis 1 with repeats and a negative index", "shape.index_select", {Attr(1)},
               [](DType dt) { return V{Tensor::randn({3, 5}, dt, 27), indices({4, 0, 4, -2})}; },
               [](const V& in) { return ref_index_select(ref_of(in[0]), {4, 0, 4, -2}, 1); }});
  c.push_back({"index_select axis 0 of [4, 2, 3]", "shape.index_select", {Attr(0)},
               [](DType dt) { return V{Tensor::randn({4, 2, 3}, dt, 28), indices({1, 1, 3})}; },
               [](const V& in) { return ref_index_select(ref_of(in[0]), {1, 1, 3}, 0); }});
  c.push_back({"gather axis 1", "shape.gather", {Attr(1)},
               [](DType dt) {
                 return V{Tensor::randn({3, 4}, dt, 29),
                          indices({0, 3, 3, -1, 1, 2, 2, 2, 0, 1, -4, 3, 1, 1, 0}, {3, 5})};
               },
               [](const V& in) { return ref_gather(ref_of(in[0]), ref_of(in[1]), 1); }});
  c.push_back({"gather axis 0, x broadcast on axis 1", "shape.gather", {Attr(0)},
               [](DType dt) { return V{Tensor::randn({4, 1}, dt, 30), indices({0, 3, 3, 2, 2, -4}, {2, 3})}; },
               [](const V& in) { return ref_gather(ref_of(in[0]), ref_of(in[1]), 0); }});
  c.push_back({"gather axis -1, index broadcast on axis 0", "shape.gather", {Attr(-1)},
               [](DType dt) { return V{Tensor::randn({3, 4}, dt, 31), indices({2, 2}, {1, 2})}; },
               [](const V& in) { return ref_gather(ref_of(in[0]), ref_of(in[1]), 1); }});
  c.push_back({"gather axis 1 of a rank-3 x", "shape.gather", {Attr(1)},
               [](DType dt) {
                 return V{Tensor::randn({2, 3, 2}, dt, 32), indices({0, 2, 1, 1, 2, 2, 0, 0}, {2, 2, 2})};
               },
               [](const V& in) { return ref_gather(ref_of(in[0]), ref_of(in[1]), 1); }});
  return c;
}

const std::vector<std::string>& all_op_names() {
  static const std::vector<std::string> names = {
      "shape.reshape", "shape.transpose", "shape.permute", "shape.slice",        "shape.concat", "shape.stack",
      "shape.expand",  "shape.squeeze",   "shape.unsqueeze", "shape.index_select", "shape.gather"};
  return names;
}

}  // namespace

// ---- values -------------------------------------------------------------------------------

TEST_CASE("shape ops match naive multi-index loops", "[ops][shape]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  for (const Case& c : cases()) {
    INFO(c.label << " (" << opforge::dtype_name(dtype) << ")");
    const std::vector<Tensor> in = c.inputs(dtype);
    const Tensor out = call(c.op, in, c.attrs);
    REQUIRE(out.dtype() == dtype);
    require_equal(out, c.reference(in));
  }
}

TEST_CASE("shape ops: float32 forward agrees with float64", "[ops][shape]") {
  for (const Case& c : cases()) {
    INFO(c.label);
    const std::vector<Tensor> in32 = c.inputs(DType::Float32);
    std::vector<Tensor> in64;
    for (const Tensor& t : in32) in64.push_back(t.dtype() == DType::Float32 ? t.to(DType::Float64) : t);
    const Tensor out32 = call(c.op, in32, c.attrs), out64 = call(c.op, in64, c.attrs);
    REQUIRE(out32.shape() == out64.shape());
    REQUIRE(out32.to_vector() == out64.to_vector());  // data movement: exact
  }
}

TEST_CASE("hand-worked cases of each shape op", "[ops][shape]") {
  const Tensor x = values({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(call("shape.reshape", {x}, {Attr(Dims{3, 2})}).to_vector() == std::vector<double>{1, 2, 3, 4, 5, 6});
  CHECK(call("shape.reshape", {x}, {Attr(Dims{3, 2})}).shape() == Dims{3, 2});
  CHECK(call("shape.reshape", {x}).shape() == Dims{6});
  CHECK(call("shape.transpose", {x}).to_vector() == std::vector<double>{1, 4, 2, 5, 3, 6});
  CHECK(call("shape.permute", {x}, {Attr(Dims{1, 0})}).to_vector() == std::vector<double>{1, 4, 2, 5, 3, 6});
  CHECK(call("shape.slice", {x}, {Attr(1), Attr(0), Attr(3), Attr(2)}).to_vector() == std::vector<double>{1, 3, 4, 6});
  CHECK(call("shape.slice", {x}, {Attr(1), Attr(-2)}).to_vector() == std::vector<double>{2, 3, 5, 6});
  CHECK(call("shape.slice", {x}, {Attr(0), Attr(5), Attr(9)}).shape() == Dims{0, 3});
  const Tensor y = values({7, 8, 9}, {1, 3});
  CHECK(call("shape.concat", {x, y}).to_vector() == std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(call("shape.concat", {x, x}, {Attr(1)}).to_vector() ==
        std::vector<double>{1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6});
  CHECK(call("shape.concat", {x}).to_vector() == x.to_vector());
  const Tensor a = values({1, 2}, {2}), b = values({3, 4}, {2});
  CHECK(call("shape.stack", {a, b}).to_vector() == std::vector<double>{1, 2, 3, 4});
  CHECK(call("shape.stack", {a, b}, {Attr(1)}).to_vector() == std::vector<double>{1, 3, 2, 4});
  CHECK(call("shape.stack", {Tensor::scalar(5), Tensor::scalar(6)}).to_vector() == std::vector<double>{5, 6});
  CHECK(call("shape.expand", {values({1, 2}, {2, 1})}, {Attr(Dims{2, 3})}).to_vector() ==
        std::vector<double>{1, 1, 1, 2, 2, 2});
  CHECK(call("shape.expand", {Tensor::scalar(2.5)}).shape() == Dims{});
  CHECK(call("shape.squeeze", {values({1, 2}, {1, 2, 1})}).shape() == Dims{2});
  CHECK(call("shape.squeeze", {Tensor::scalar(3)}).shape() == Dims{});
  CHECK(call("shape.unsqueeze", {a}).shape() == Dims{1, 2});
  CHECK(call("shape.unsqueeze", {Tensor::scalar(3)}).shape() == Dims{1});
  CHECK(call("shape.index_select", {x, indices({2, 0, -1})}, {Attr(1)}).to_vector() ==
        std::vector<double>{3, 1, 3, 6, 4, 6});
  CHECK(call("shape.index_select", {x, indices({})}, {Attr(0)}).shape() == Dims{0, 3});
  // take_along_axis(x, [[2, 0], [1, 1]], axis=1) = [[3, 1], [5, 5]]
  CHECK(call("shape.gather", {x, indices({2, 0, 1, 1}, {2, 2})}, {Attr(1)}).to_vector() ==
        std::vector<double>{3, 1, 5, 5});
}

// int64 and bool are moved as they are; their outputs never take part in a graph.
TEST_CASE("shape ops move int64 and bool data", "[ops][shape]") {
  const DType dtype = GENERATE(DType::Int64, DType::Bool);
  INFO(opforge::dtype_name(dtype));
  const Tensor x = values({1, 0, 1, 1, 0, 0}, {2, 3}, dtype);
  const Tensor t = call("shape.transpose", {x});
  CHECK(t.dtype() == dtype);
  CHECK(t.to_vector() == std::vector<double>{1, 1, 0, 0, 1, 0});
  CHECK_FALSE(t.requires_grad());
  CHECK(call("shape.concat", {x, x}, {Attr(1)}).to_vector() ==
        std::vector<double>{1, 0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0});
  CHECK(call("shape.stack", {x, x}, {Attr(2)}).shape() == Dims{2, 3, 2});
  CHECK(call("shape.slice", {x}, {Attr(1), Attr(1)}).to_vector() == std::vector<double>{0, 1, 0, 0});
  CHECK(call("shape.index_select", {x, indices({2, 2})}, {Attr(1)}).to_vector() == std::vector<double>{1, 1, 0, 0});
  CHECK(call("shape.gather", {x, indices({1, 0, 1}, {1, 3})}).to_vector() == std::vector<double>{1, 0, 0});
  CHECK(call("shape.expand", {call("shape.unsqueeze", {x})}, {Attr(Dims{2, 2, 3})}).to_vector() ==
        std::vector<double>{1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0});
  const Tensor big = Tensor::randn({200, 300}, DType::Float64, 3).to(dtype);
  require_equal(call("shape.transpose", {big}).contiguous(), ref_permute(ref_of(big), {1, 0}));
}

// ---- views -----------------------------------------------------------------------------------

TEST_CASE("view ops return views of their input's storage", "[ops][shape][views]") {
  const Tensor x = Tensor::randn({2, 3, 4}, DType::Float64, 40);
  const Tensor xt = Tensor::randn({4, 3, 2}, DType::Float64, 41).permute({2, 1, 0});  // strided [2, 3, 4]
  for (const Tensor& in : {x, xt}) {
    INFO((in.is_contiguous() ? "contiguous input" : "strided input"));
    const std::vector<std::pair<std::string, std::vector<Attr>>> views = {
        {"shape.transpose", {}},
        {"shape.permute", {Attr(Dims{2, 0, 1})}},
        {"shape.slice", {Attr(2), Attr(1), Attr(4), Attr(2)}},
        {"shape.expand", {Attr(Dims{5, 2, 3, 4})}},
        {"shape.squeeze", {}},
        {"shape.unsqueeze", {Attr(3)}},
        {"shape.reshape", {Attr(Dims{2, 3, 2, 2})}},
    };
    for (const auto& [name, attrs] : views) {
      INFO(name);
      const Tensor out = call(name, {in}, attrs);
      CHECK(out.storage() == in.storage());
      CHECK_FALSE(out.is_same(in));
    }
  }
  // A reshape the strides do not allow copies; the values are still right.
  const Tensor flat = call("shape.reshape", {xt}, {Attr(Dims{-1})});
  CHECK(flat.storage() != xt.storage());
  CHECK(flat.to_vector() == xt.to_vector());
  // Writes through a view reach the input (same storage, same version counter).
  Tensor base = Tensor::zeros({2, 3});
  Tensor v = call("shape.transpose", {base});
  v.fill_(1.0);
  CHECK(base.to_vector() == std::vector<double>(6, 1.0));
}

TEST_CASE("shape ops take strided inputs as they are", "[ops][shape][views]") {
  // Transposed and sliced views into every op, against the same op on contiguous copies.
  const Tensor m = Tensor::randn({6, 5}, DType::Float64, 42).transpose(0, 1);  // [5, 6], strided
  const Tensor s = Tensor::randn({5, 12}, DType::Float64, 43).slice(1, 1, 12, 2);  // [5, 6], strided
  const Tensor mc = m.clone(), sc = s.clone();
  REQUIRE_FALSE(m.is_contiguous());
  REQUIRE_FALSE(s.is_contiguous());
  CHECK(call("shape.concat", {m, s}, {Attr(1)}).to_vector() == call("shape.concat", {mc, sc}, {Attr(1)}).to_vector());
  CHECK(call("shape.stack", {m, s}, {Attr(2)}).to_vector() == call("shape.stack", {mc, sc}, {Attr(2)}).to_vector());
  const Tensor idx = indices({5, 0, 2, 2, -1});
  CHECK(call("shape.index_select", {m, idx}, {Attr(1)}).to_vector() ==
        call("shape.index_select", {mc, idx}, {Attr(1)}).to_vector());
  const Tensor gi = indices({0, 1, 2, 3, 4, -5, 4, 3, 2, 1, 0, 0}, {6, 2}).transpose(0, 1);  // [2, 6], strided
  CHECK(call("shape.gather", {s, gi}).to_vector() == call("shape.gather", {sc, gi.clone()}).to_vector());
  CHECK(call("shape.slice", {m}, {Attr(1), Attr(1), Attr(5)}).to_vector() ==
        call("shape.slice", {mc}, {Attr(1), Attr(1), Attr(5)}).to_vector());
}

// ---- gradients -------------------------------------------------------------------------------

TEST_CASE("shape ops pass gradcheck in float64", "[ops][shape][grad]") {
  for (const Case& c : cases()) {
    INFO(c.label);
    const std::vector<Tensor> in = c.inputs(DType::Float64);
    const sdk::GradcheckResult res = sdk::gradcheck(bind(c.op, c.attrs), in);
    INFO(res.message);
    REQUIRE(res.ok);
    std::int64_t floating = 0;
    for (const Tensor& t : in) floating += opforge::is_floating(t.dtype()) ? t.numel() : 0;
    REQUIRE(res.elements_checked == floating);  // every element of every floating input
  }
}

TEST_CASE("the bound wrapper does not hide a wrong gradient", "[ops][shape][grad]") {
  // gradcheck through Bound must still fail when the bound op's backward is wrong:
  // bind an op whose backward doubles the gradient.
  class Doubling final : public opforge::Function {
   public:
    TensorList forward(opforge::Context&, TensorSpan in) const override { return {in[0].clone()}; }
    TensorList backward(opforge::Context&, TensorSpan g) const override {
      Tensor d = g[0].clone();
      d.mul_(2.0);
      return {d};
    }
  };
  opforge::OpSchema s("test.doubling");
  s.inputs = {"x"};
  const OpHandle wrong = opforge::make_op(s, std::make_unique<Doubling>());
  opforge::OpSchema b("bound.doubling");
  b.inputs = {"x"};
  const OpHandle bound = opforge::make_op(b, std::make_unique<Bound>(wrong, std::vector<Attr>{}));
  const sdk::GradcheckResult res = sdk::gradcheck(bound, {Tensor::randn({4}, DType::Float64, 44)});
  INFO(res.message);
  CHECK_FALSE(res.ok);
}

TEST_CASE("shape ops: float32 gradients match float64 gradients", "[ops][shape][grad]") {
  for (const Case& c : cases()) {
    INFO(c.label);
    const std::vector<Tensor> in32 = c.inputs(DType::Float32);
    std::vector<Tensor> x32, x64;
    for (const Tensor& t : in32) {
      Tensor a = t.clone(), b = opforge::is_floating(t.dtype()) ? t.to(DType::Float64).clone() : t.clone();
      if (opforge::is_floating(t.dtype())) {
        a.requires_grad_(true);
        b.requires_grad_(true);
      }
      x32.push_back(a);
      x64.push_back(b);
    }
    Tensor out32 = call(c.op, x32, c.attrs), out64 = call(c.op, x64, c.attrs);
    const Tensor w = Tensor::randn(out64.shape(), DType::Float32, 45);
    out32.backward(w);
    out64.backward(w.to(DType::Float64));
    for (std::size_t i = 0; i < x32.size(); ++i) {
      INFO("input " << i);
      if (!opforge::is_floating(x32[i].dtype())) continue;
      REQUIRE(x32[i].grad().dtype() == DType::Float32);
      const std::vector<double> g32 = x32[i].grad().to_vector(), g64 = x64[i].grad().to_vector();
      REQUIRE(g32.size() == g64.size());
      for (std::size_t k = 0; k < g32.size(); ++k) REQUIRE(g32[k] == Approx(g64[k]).epsilon(1e-5).margin(1e-5));
    }
  }
}

TEST_CASE("hand-worked gradients", "[ops][shape][grad]") {
  SECTION("slice: the gradient lands in the slice, zeros elsewhere") {
    Tensor x = Tensor::zeros({2, 4});
    x.requires_grad_(true);
    call("shape.slice", {x}, {Attr(1), Attr(1), Attr(4), Attr(2)}).backward(values({10, 20, 30, 40}, {2, 2}));
    CHECK(x.grad().to_vector() == std::vector<double>{0, 10, 0, 20, 0, 30, 0, 40});
  }
  SECTION("index_select: repeated indices add up; the index gets nothing") {
    Tensor x = Tensor::zeros({3});
    x.requires_grad_(true);
    const Tensor idx = indices({0, 2, 0, -3});
    call("shape.index_select", {x, idx}).backward(values({1, 2, 3, 4}, {4}));
    CHECK(x.grad().to_vector() == std::vector<double>{8, 0, 2});
    CHECK_FALSE(idx.grad().defined());
  }
  SECTION("gather: repeated indices add up, and a broadcast x sums over the broadcast axis") {
    Tensor x = Tensor::zeros({3, 1});
    x.requires_grad_(true);
    // out [2, 2] = x[idx[i, j], 0]
    call("shape.gather", {x, indices({2, 2, 0, 2}, {2, 2})}).backward(values({1, 2, 3, 4}, {2, 2}));
    CHECK(x.grad().to_vector() == std::vector<double>{3, 0, 7});
  }
  SECTION("expand: the gradient is summed over the broadcast axes") {
    Tensor x = Tensor::zeros({2, 1});
    x.requires_grad_(true);
    call("shape.expand", {x}, {Attr(Dims{3, 2, 2})}).backward(Tensor::ones({3, 2, 2}));
    CHECK(x.grad().to_vector() == std::vector<double>{6, 6});
  }
  SECTION("concat and stack: each input gets its own part, only the one requiring grad") {
    Tensor a = Tensor::zeros({1, 2}), b = Tensor::zeros({2, 2});
    b.requires_grad_(true);
    call("shape.concat", {a, b, b}).backward(values({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {5, 2}));
    CHECK_FALSE(a.grad().defined());
    CHECK(b.grad().to_vector() == std::vector<double>{3 + 7, 4 + 8, 5 + 9, 6 + 10});
    Tensor c = Tensor::zeros({2});
    c.requires_grad_(true);
    call("shape.stack", {a.reshape({2}), c}, {Attr(1)}).backward(values({1, 2, 3, 4}, {2, 2}));
    CHECK(c.grad().to_vector() == std::vector<double>{2, 4});
  }
  SECTION("a strided root gradient reaches the input correctly") {
    Tensor x = Tensor::zeros({2, 3});
    x.requires_grad_(true);
    const Tensor g = values({1, 2, 3, 4, 5, 6}, {2, 3}).transpose(0, 1);  // [3, 2], strided
    call("shape.transpose", {x}).backward(g);
    CHECK(x.grad().to_vector() == std::vector<double>{1, 2, 3, 4, 5, 6});
    Tensor z = Tensor::zeros({3, 2});
    z.requires_grad_(true);
    call("shape.index_select", {z, indices({1, 0})}, {Attr(1)}).backward(g);
    CHECK(z.grad().to_vector() == std::vector<double>{4, 1, 5, 2, 6, 3});
  }
  SECTION("a view feeds other ops; their backward gets a contiguous gradient") {
    // sum(square(transpose(x))) has gradient 2 x.
    Tensor x = values({1, -2, 3, 0.5, 5, -6}, {2, 3});
    x.requires_grad_(true);
    const Tensor y = call("shape.transpose", {x});
    opforge::op("reduce.sum")({opforge::op("elementwise.square")({y})}).backward();
    CHECK(x.grad().to_vector() == std::vector<double>{2, -4, 6, 1, 10, -12});
    // square(slice(transpose(x))): the slice's gradient flows through the transpose.
    Tensor w = values({1, 2, 3, 4, 5, 6}, {2, 3});
    w.requires_grad_(true);
    const Tensor s = call("shape.slice", {call("shape.transpose", {w})}, {Attr(0), Attr(1)});  // rows 1, 2 of w^T
    opforge::op("elementwise.square")({s}).backward(Tensor::ones({2, 2}));
    CHECK(w.grad().to_vector() == std::vector<double>{0, 4, 6, 0, 10, 12});
  }
}

// ---- large tensors: the parallel paths ------------------------------------------------------------

TEST_CASE("shape ops on large tensors match naive loops", "[ops][shape]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const Tensor a = Tensor::randn({300, 401}, dtype, 50), b = Tensor::randn({300, 99}, dtype, 51);
  require_equal(call("shape.concat", {a, b}, {Attr(1)}), ref_concat({ref_of(a), ref_of(b)}, 1));
  require_equal(call("shape.concat", {a.transpose(0, 1), a.transpose(0, 1)}),
                ref_concat({ref_permute(ref_of(a), {1, 0}), ref_permute(ref_of(a), {1, 0})}, 0));
  require_equal(call("shape.stack", {a, a, a}, {Attr(2)}), ref_stack({ref_of(a), ref_of(a), ref_of(a)}, 2));
  require_equal(call("shape.reshape", {a.transpose(0, 1)}, {Attr(Dims{-1})}),
                Ref{ref_permute(ref_of(a), {1, 0}).v, Dims{300 * 401}});
  // Transposing copies (tiled): a reversed rank-3 permute and a batched transpose, made contiguous.
  const Tensor t3 = Tensor::randn({20, 33, 70}, dtype, 57);
  require_equal(call("shape.reshape", {call("shape.permute", {t3})}, {Attr(Dims{-1})}),
                Ref{ref_permute(ref_of(t3), {2, 1, 0}).v, Dims{20 * 33 * 70}});
  require_equal(call("shape.reshape", {call("shape.transpose", {t3})}, {Attr(Dims{20, -1})}),
                Ref{ref_permute(ref_of(t3), {0, 2, 1}).v, Dims{20, 33 * 70}});
  std::vector<double> bv(20 * 33 * 70);
  for (std::size_t k = 0; k < bv.size(); ++k) bv[k] = (k * 7) % 3 == 0 ? 1 : 0;
  const Tensor bits = values(bv, {20, 33, 70}, DType::Bool);
  require_equal(call("shape.reshape", {call("shape.permute", {bits}, {Attr(Dims{1, 2, 0})})}, {Attr(Dims{-1})}),
                Ref{ref_permute(ref_of(bits), {1, 2, 0}).v, Dims{20 * 33 * 70}});
  std::vector<double> iv(1000);
  std::vector<std::int64_t> ii(iv.size());
  for (std::size_t k = 0; k < iv.size(); ++k) ii[k] = static_cast<std::int64_t>((k * 7919) % 401) - 200;
  for (std::size_t k = 0; k < iv.size(); ++k) iv[k] = static_cast<double>(ii[k]);
  require_equal(call("shape.index_select", {a, indices(iv)}, {Attr(1)}), ref_index_select(ref_of(a), ii, 1));
  std::vector<double> gv(300 * 401);
  for (std::size_t k = 0; k < gv.size(); ++k) gv[k] = static_cast<double>((k * 31) % 300);
  const Tensor gidx = indices(gv, {300, 401});
  require_equal(call("shape.gather", {a, gidx}), ref_gather(ref_of(a), ref_of(gidx), 0));
  // One long contiguous row (a 1-D slice copied by backward) split into chunks.
  Tensor v = Tensor::zeros({200000}, dtype);
  v.requires_grad_(true);
  const Tensor g = Tensor::randn({100000}, dtype, 52);
  call("shape.slice", {v}, {Attr(0), Attr(1), Attr(), Attr(2)}).backward(g);
  std::vector<double> want(200000, 0.0);
  const std::vector<double> gvals = g.to_vector();
  for (std::size_t k = 0; k < gvals.size(); ++k) want[1 + 2 * k] = gvals[k];
  require_equal(v.grad(), Ref{want, Dims{200000}});
}

// The scatter-add adds each element's contributions in index order, whatever the
// thread count: gradients are bit-identical with 1, 2 and 4 threads.
TEST_CASE("index_select and gather gradients are bitwise identical for any thread count", "[ops][shape][grad]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  std::vector<double> iv(5000);
  for (std::size_t k = 0; k < iv.size(); ++k) iv[k] = static_cast<double>((k * 13) % 7);
  const Tensor idx = indices(iv);
  std::vector<double> gv(7 * 300);
  for (std::size_t k = 0; k < gv.size(); ++k) gv[k] = static_cast<double>((k * 5) % 7);
  const Tensor gidx = indices(gv, {7, 300});
  const int saved = opforge::num_threads();
  std::vector<std::vector<double>> select_grads, gather_grads;
  for (int threads : {1, 2, 4}) {
    opforge::set_num_threads(threads);
    Tensor x = Tensor::randn({7, 300}, dtype, 53);
    x.requires_grad_(true);
    call("shape.index_select", {x, idx}).backward(Tensor::randn({5000, 300}, dtype, 54));
    select_grads.push_back(x.grad().to_vector());
    Tensor y = Tensor::randn({7, 300}, dtype, 55);
    y.requires_grad_(true);
    call("shape.gather", {call("shape.expand", {y}, {Attr(Dims{40, 7, 300})}), call("shape.expand", {gidx}, {Attr(Dims{40, 7, 300})})},
         {Attr(1)})
        .backward(Tensor::randn({40, 7, 300}, dtype, 56));
    gather_grads.push_back(y.grad().to_vector());
  }
  opforge::set_num_threads(saved);
  CHECK(select_grads[0] == select_grads[1]);
  CHECK(select_grads[0] == select_grads[2]);
  CHECK(gather_grads[0] == gather_grads[1]);
  CHECK(gather_grads[0] == gather_grads[2]);
}

// ---- the harness --------------------------------------------------------------------------------

TEST_CASE("every shape op passes sdk::check_op", "[ops][shape][harness]") {
  for (const std::string& name : all_op_names()) {
    INFO(name);
    const OpHandle op = opforge::op(name);
    REQUIRE(op.plugin_name() == "shape");
    REQUIRE(op.schema().sample_inputs != nullptr);
    const sdk::CheckReport report = sdk::check_op(op);
    REQUIRE(report.size() == sdk::check_names().size());
    for (const sdk::CheckResult& r : report) {
      INFO(sdk::format_result(r));
      CHECK(r.passed);
      if (!opforge_tests::skipped_for_want_of_inputs(r)) CHECK_FALSE(r.skipped);
    }
    CHECK(sdk::all_passed(report));
    CHECK_THAT(report[1].detail, Catch::Matchers::StartsWith("float64, float32: "));
  }
}

// ---- bad input: the exact messages ------------------------------------------------------------------

TEST_CASE("bad calls to shape ops name the op, the argument, what was expected and what came",
          "[ops][shape][errors]") {
  const Tensor x = Tensor::zeros({3, 4});
  const Tensor x31 = Tensor::zeros({3, 1});
  // Sizes whose sum overflows int64 (expanded views of one element, or of none).
  const std::int64_t huge = std::int64_t{1} << 62;
  const Tensor e = Tensor::zeros({1}).expand({huge});
  CHECK_THROWS_MATCHES(call("shape.concat", {e, e}), opforge::ShapeError,
                       Message("shape.concat: the output's size along axis 0 (the sum of the inputs' sizes there) "
                               "overflows int64 at argument 'x[1]' (input 1) of shape [4611686018427387904]"));
  const Tensor e0 = Tensor::zeros({1, 1}).expand({huge, 0});
  CHECK_THROWS_MATCHES(call("shape.concat", {e0, e0, e0, e0}), opforge::ShapeError,
                       Message("shape.concat: the output's size along axis 0 (the sum of the inputs' sizes there) "
                               "overflows int64 at argument 'x[1]' (input 1) of shape [4611686018427387904, 0]"));
  CHECK_THROWS_MATCHES(call("shape.reshape", {x}, {Attr(Dims{5, -1})}), opforge::ShapeError,
                       Message("shape.reshape: attribute 'shape': cannot reshape float64[3, 4] (12 elements) into "
                               "[5, -1] (the other sizes multiply to 5, which does not divide 12)"));
  // A -1 beside a size 0 says why: it would fit any size (no elements), or none.
  CHECK_THROWS_MATCHES(call("shape.reshape", {Tensor::zeros({0, 3})}, {Attr(Dims{0, -1})}), opforge::ShapeError,
                       Message("shape.reshape: attribute 'shape': cannot reshape float64[0, 3] (0 elements) into "
                               "[0, -1] (the other sizes multiply to 0, so every size fits the -1: give the size "
                               "itself)"));
  CHECK_THROWS_MATCHES(call("shape.reshape", {x}, {Attr(Dims{-1, 0})}), opforge::ShapeError,
                       Message("shape.reshape: attribute 'shape': cannot reshape float64[3, 4] (12 elements) into "
                               "[-1, 0] (the other sizes multiply to 0, so no size for the -1 gives 12 elements)"));
  CHECK_THROWS_MATCHES(call("shape.reshape", {x}, {Attr(Dims{5, 2})}), opforge::ShapeError,
                       Message("shape.reshape: attribute 'shape': cannot reshape float64[3, 4] (12 elements) into "
                               "[5, 2] (10 elements)"));
  CHECK_THROWS_MATCHES(call("shape.reshape", {x31}, {Attr(Dims{})}), opforge::ShapeError,
                       Message("shape.reshape: attribute 'shape': cannot reshape float64[3, 1] (3 elements) into "
                               "[] (1 element)"));
  CHECK_THROWS_MATCHES(Tensor::zeros({1}).reshape({2}), opforge::ShapeError,
                       Message("Tensor::reshape: cannot reshape [1] (1 element) into [2] (2 elements)"));
  CHECK_THROWS_MATCHES(call("shape.reshape", {x}, {Attr(Dims{-1, -1})}), opforge::ShapeError,
                       Message("shape.reshape: attribute 'shape': only one entry may be -1, got [-1, -1]"));
  CHECK_THROWS_MATCHES(call("shape.reshape", {x}, {Attr(Dims{-2, -6})}), opforge::ShapeError,
                       Message("shape.reshape: attribute 'shape': sizes must be >= 0 or -1, got [-2, -6]"));
  CHECK_THROWS_MATCHES(call("shape.transpose", {x}, {Attr(0), Attr(2)}), opforge::IndexError,
                       Message("shape.transpose: attribute 'axis1': expected an axis in [-2, 2) for a tensor of "
                               "shape [3, 4], got 2"));
  CHECK_THROWS_MATCHES(call("shape.transpose", {Tensor::zeros({3})}), opforge::IndexError,
                       Message("shape.transpose: attribute 'axis0': expected an axis in [-1, 1) for a tensor of "
                               "shape [3], got -2"));
  CHECK_THROWS_MATCHES(call("shape.permute", {x}, {Attr(Dims{0})}), opforge::ShapeError,
                       Message("shape.permute: attribute 'order': expected 2 axes (one per axis of shape [3, 4]), "
                               "got [0]"));
  CHECK_THROWS_MATCHES(call("shape.permute", {x}, {Attr(Dims{1, -1})}), opforge::ShapeError,
                       Message("shape.permute: attribute 'order': axis 1 appears twice in [1, -1]"));
  CHECK_THROWS_MATCHES(call("shape.slice", {x}, {Attr(1), Attr(0), Attr(4), Attr(0)}), opforge::ValueError,
                       Message("shape.slice: attribute 'step': expected >= 1, got 0"));
  CHECK_THROWS_MATCHES(call("shape.slice", {x}, {Attr(-3)}), opforge::IndexError,
                       Message("shape.slice: attribute 'axis': expected an axis in [-2, 2) for a tensor of shape "
                               "[3, 4], got -3"));
  CHECK_THROWS_MATCHES(call("shape.slice", {x}, {Attr(0.5)}), opforge::ValueError,
                       Message("shape.slice: attribute 'axis': expected int, got float 0.5"));
  CHECK_THROWS_MATCHES(call("shape.expand", {x31}, {Attr(Dims{4})}), opforge::ShapeError,
                       Message("shape.expand: attribute 'shape': expected at least 2 axes to expand float64[3, 1], "
                               "got [4]"));
  CHECK_THROWS_MATCHES(call("shape.expand", {x31}, {Attr(Dims{4, 5})}), opforge::ShapeError,
                       Message("shape.expand: attribute 'shape': cannot expand float64[3, 1] to [4, 5]: axis 0 has "
                               "size 3 (only size-1 axes can be expanded)"));
  CHECK_THROWS_MATCHES(call("shape.expand", {x31}, {Attr(Dims{-1, 3, 1})}), opforge::ShapeError,
                       Message("shape.expand: attribute 'shape': new leading axes must have sizes >= 0, got "
                               "[-1, 3, 1]"));
  CHECK_THROWS_MATCHES(call("shape.squeeze", {x31}, {Attr(Dims{0})}), opforge::ShapeError,
                       Message("shape.squeeze: attribute 'axes': axis 0 of float64[3, 1] has size 3 (only size-1 "
                               "axes can be squeezed)"));
  CHECK_THROWS_MATCHES(call("shape.squeeze", {x31}, {Attr(Dims{1, -1})}), opforge::ShapeError,
                       Message("shape.squeeze: attribute 'axes': axis 1 appears twice in [1, -1]"));
  CHECK_THROWS_MATCHES(call("shape.unsqueeze", {x}, {Attr(3)}), opforge::IndexError,
                       Message("shape.unsqueeze: attribute 'axis': expected an axis in [-3, 3) for a tensor of "
                               "shape [3, 4], got 3"));
  // concat and stack: each input's rank, shape and dtype; 0-d tensors.
  CHECK_THROWS_MATCHES(call("shape.concat", {x, Tensor::zeros({4})}), opforge::ShapeError,
                       Message("shape.concat: argument 'x[1]' (input 1): expected a 2-D tensor (the rank of 'x'), "
                               "got float64[4]"));
  CHECK_THROWS_MATCHES(call("shape.concat", {x, x, Tensor::zeros({3, 5})}), opforge::ShapeError,
                       Message("shape.concat: argument 'x[2]' (input 2): expected shape [*, 4] (the shape of 'x' "
                               "on every axis but axis 0), got [3, 5]"));
  CHECK_THROWS_MATCHES(call("shape.concat", {x, Tensor::zeros({3, 4}, DType::Float32)}), opforge::DTypeError,
                       Message("shape.concat: argument 'x[1]' (input 1): expected dtype float64 (the dtype of 'x'; "
                               "all inputs must share one dtype), got float32; convert one of them with .to() first"));
  CHECK_THROWS_MATCHES(call("shape.concat", {Tensor::scalar(1), Tensor::scalar(2)}), opforge::ShapeError,
                       Message("shape.concat: argument 'x' (input 0): expected a tensor of at least 1 dimension "
                               "(0-d tensors cannot be concatenated), got float64[]"));
  CHECK_THROWS_MATCHES(call("shape.concat", {x, x}, {Attr(2)}), opforge::IndexError,
                       Message("shape.concat: attribute 'axis': expected an axis in [-2, 2) for a tensor of shape "
                               "[3, 4], got 2"));
  CHECK_THROWS_MATCHES(call("shape.stack", {x, x, x.transpose(0, 1)}), opforge::ShapeError,
                       Message("shape.stack: argument 'x[2]' (input 2): expected shape [3, 4] (the shape of 'x'), "
                               "got [4, 3]"));
  CHECK_THROWS_MATCHES(call("shape.stack", {x, x}, {Attr(-4)}), opforge::IndexError,
                       Message("shape.stack: attribute 'axis': expected an axis in [-3, 3) for a tensor of shape "
                               "[3, 4], got -4"));
  CHECK_THROWS_MATCHES(call("shape.stack", {}), opforge::ValueError,
                       Message("shape.stack: expected at least 1 input (x, ...; at most 64), got 0"));
  CHECK_THROWS_MATCHES(call("shape.stack", TensorList(65, x)), opforge::ValueError,
                       Message("shape.stack: takes at most 64 inputs (x, ...), got 65; combine them in groups of at "
                               "most 64, then combine the groups"));
  // index_select and gather: the index's dtype, rank and values; broadcasting.
  CHECK_THROWS_MATCHES(call("shape.index_select", {x, Tensor::zeros({2})}), opforge::DTypeError,
                       Message("shape.index_select: argument 'index' (input 1): expected dtype int64, got float64"));
  CHECK_THROWS_MATCHES(call("shape.index_select", {x, indices({0, 1, 1, 0}, {2, 2})}), opforge::ShapeError,
                       Message("shape.index_select: argument 'index': expected a 1-D tensor, got int64[2, 2]"));
  CHECK_THROWS_MATCHES(call("shape.index_select", {x, indices({0, 4, 1})}, {Attr(1)}), opforge::IndexError,
                       Message("shape.index_select: argument 'index': index 4 at position [1] is out of range for "
                               "axis 1 of size 4 (expected an index in [-4, 4))"));
  CHECK_THROWS_MATCHES(call("shape.index_select", {x, indices({-4, 0})}), opforge::IndexError,
                       Message("shape.index_select: argument 'index': index -4 at position [0] is out of range for "
                               "axis 0 of size 3 (expected an index in [-3, 3))"));
  CHECK_THROWS_MATCHES(call("shape.gather", {x, indices({0, 1, 2})}), opforge::ShapeError,
                       Message("shape.gather: argument 'index': expected a 2-D tensor (the rank of 'x'), got int64[3]"));
  CHECK_THROWS_MATCHES(call("shape.gather", {x, indices({0, 1, 2, 0, 1, 2}, {2, 3})}), opforge::ShapeError,
                       Message("shape.gather: argument 'x' of shape [3, 4] and argument 'index' of shape [2, 3] do "
                               "not broadcast: axis 1 has sizes 4 and 3 (on every axis but axis 0, sizes must be "
                               "equal or one of them 1)"));
  CHECK_THROWS_MATCHES(call("shape.gather", {x, indices({0, 1, 2, 3, 1, 2, 3, 0}, {2, 4})}), opforge::IndexError,
                       Message("shape.gather: argument 'index': index 3 at position [0, 3] is out of range for axis "
                               "0 of size 3 (expected an index in [-3, 3))"));
  // An axis of size 0: no index is valid (not "expected an index in [0, 0)").
  CHECK_THROWS_MATCHES(call("shape.index_select", {Tensor::zeros({2, 0}), indices({0})}, {Attr(1)}),
                       opforge::IndexError,
                       Message("shape.index_select: argument 'index': index 0 at position [0] is out of range for "
                               "axis 1 of size 0 (axis 1 is empty, so no index is valid: give an empty 'index')"));
  CHECK_THROWS_MATCHES(call("shape.gather", {x, indices({0, 1, 2, 0}, {1, 4})}, {Attr(1), Attr(1)}),
                       opforge::ValueError, Message("shape.gather: expected at most 1 attributes, got 2"));
}
