// Every registered op (the standard plugins, loaded as a user program loads them),
// called with inputs and attributes around and outside what it accepts: tensors
// of other ranks, sizes, dtypes and layouts, empty and 0-d tensors, undefined
// tensors, wrong input counts, and attribute values that are negative, zero,
// huge or of the wrong kind; one at a time and two at a time. Each call must
// either succeed, with well-formed outputs and a backward that succeeds too, or
// throw an opforge::Error whose message names the op. Any other exception (std::out_of_range, std::bad_alloc,
// a library's own error) or a crash fails the test: that is a bad input reaching
// code that did not check it.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <exception>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <typeinfo>
#include <vector>

#include <opforge/opforge.hpp>

namespace {

using opforge::Attr;
using opforge::AttrKind;
using opforge::Dims;
using opforge::DType;
using opforge::OpHandle;
using opforge::Tensor;
using opforge::TensorList;

constexpr std::int64_t kMaxOutputElements = 1 << 20;  // bigger successful outputs get no backward

std::string dims_str(const Dims& d) {
  std::ostringstream o;
  o << "[";
  for (std::size_t i = 0; i < d.size(); ++i) o << (i ? ", " : "") << d[i];
  o << "]";
  return o.str();
}

std::string describe_call(const std::vector<Tensor>& inputs, const std::vector<Attr>& attrs) {
  std::ostringstream o;
  o << "inputs (";
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    o << (i ? ", " : "");
    if (!inputs[i].defined()) {
      o << "undefined";
      continue;
    }
    o << opforge::dtype_name(inputs[i].dtype()) << dims_str(inputs[i].shape());
    if (!inputs[i].is_contiguous()) o << " strided";
  }
  o << ") attrs (";
  for (std::size_t i = 0; i < attrs.size(); ++i) o << (i ? ", " : "") << attrs[i].to_string();
  o << ")";
  return o.str();
}

// What one call did: "" when it behaved (succeeded with sound outputs and
// backward, or refused with an opforge::Error naming the op), else what was wrong.
std::string judge_call(const OpHandle& op, const std::vector<Tensor>& inputs, const std::vector<Attr>& attrs,
                       int* refused) {
  const std::string& name = op.name();
  auto refusal = [&](const opforge::Error& e) -> std::string {
    ++*refused;
    const std::string what = e.what();
    return what.find(name) == std::string::npos ? "refused with a message that does not name the op: " + what : "";
  };
  // First without recording (grad off on these inputs: the op's plain path).
  try {
    const TensorList outs = op.call(inputs, opforge::AttrSpan(attrs.data(), attrs.size()));
    for (std::size_t k = 0; k < outs.size(); ++k) {
      if (!outs[k].defined()) return "without grad: output " + std::to_string(k) + " is undefined";
      if (outs[k].requires_grad()) return "without grad: output " + std::to_string(k) + " requires grad";
    }
  } catch (const opforge::Error& e) {
    return refusal(e);  // refused without recording: the recorded call is refused alike
  } catch (const std::exception& e) {
    return std::string("without grad: threw ") + typeid(e).name() + " (not an opforge::Error): " + e.what();
  } catch (...) {
    return "without grad: threw something that is not a std::exception";
  }
  // Fresh leaves that require grad where they can, so that the call records
  // a node and its backward runs.
  std::vector<Tensor> leaves;
  for (const Tensor& t : inputs) {
    if (t.defined() && opforge::is_floating(t.dtype())) {
      Tensor c = t.detach();
      c.requires_grad_(true);
      leaves.push_back(c);
    } else {
      leaves.push_back(t);
    }
  }
  try {
    const TensorList outs = op.call(leaves, opforge::AttrSpan(attrs.data(), attrs.size()));
    if (static_cast<int>(outs.size()) != op.schema().num_outputs)
      return "returned " + std::to_string(outs.size()) + " outputs, schema says " +
             std::to_string(op.schema().num_outputs);
    std::vector<Tensor> diff, grads;
    for (std::size_t k = 0; k < outs.size(); ++k) {
      const Tensor& o = outs[k];
      if (!o.defined()) return "output " + std::to_string(k) + " is undefined";
      for (std::int64_t s : o.shape())
        if (s < 0) return "output " + std::to_string(k) + " has shape " + dims_str(o.shape());
      if (o.numel() > kMaxOutputElements) return "";  // well formed; too big to backpropagate here
      if (o.requires_grad()) {
        diff.push_back(o);
        grads.push_back(Tensor::ones(o.shape(), o.dtype()));
      }
    }
    if (!diff.empty()) opforge::backward(diff, grads);
    for (std::size_t i = 0; i < leaves.size(); ++i) {
      const Tensor& l = leaves[i];
      if (!l.defined() || !l.requires_grad() || !l.grad().defined()) continue;
      if (l.grad().shape() != l.shape())
        return "gradient of input " + std::to_string(i) + " has shape " + dims_str(l.grad().shape()) +
               ", the input " + dims_str(l.shape());
    }
    return "";
  } catch (const opforge::Error& e) {
    // Accepted without recording, refused when recorded (or in backward): a
    // refusal still, if it names the op.
    return refusal(e);
  } catch (const std::exception& e) {
    return std::string("threw ") + typeid(e).name() + " (not an opforge::Error): " + e.what();
  } catch (...) {
    return "threw something that is not a std::exception";
  }
}

// The op's own sample inputs (the harness's), or randn [3, 4] per input.
std::vector<Tensor> sample_inputs(const OpHandle& op, DType dtype) {
  const auto& s = op.schema();
  std::vector<Tensor> in;
  if (s.sample_inputs) {
    for (const Tensor& t : s.sample_inputs(dtype, 7)) in.push_back(t);
  } else {
    for (std::size_t i = 0; i < s.inputs.size(); ++i) in.push_back(Tensor::randn({3, 4}, dtype, 11 + i));
  }
  return in;
}

std::vector<Attr> sample_attrs(const OpHandle& op) {
  const auto& s = op.schema();
  std::vector<Attr> attrs(s.attrs.size());
  for (std::size_t a = 0; a < s.attrs.size(); ++a) {
    attrs[a] = s.attrs[a].default_value;
    for (const auto& [n, v] : s.sample_attributes)
      if (n == s.attrs[a].name) attrs[a] = v;
  }
  return attrs;
}

// Tensors around `t`: other ranks, sizes, dtypes and layouts.
std::vector<Tensor> variants(const Tensor& t) {
  std::vector<Tensor> v;
  const Dims shape = t.shape();
  const DType dt = opforge::is_floating(t.dtype()) ? t.dtype() : DType::Float64;  // of the tensors made here
  const DType other = dt == DType::Float64 ? DType::Float32 : DType::Float64;
  v.push_back(Tensor());                                    // undefined
  v.push_back(Tensor::scalar(0.5, dt));                     // 0-d
  v.push_back(Tensor::zeros({0}, dt));                      // empty vector
  v.push_back(Tensor::randn({5}, dt, 3));                   // a vector of another length
  v.push_back(Tensor::randn({2, 3, 4, 5}, dt, 4));          // rank 4
  v.push_back(t.to(other));                                 // the other floating dtype
  v.push_back(t.to(DType::Int64));
  v.push_back(t.to(DType::Bool));
  if (!shape.empty()) {
    Dims bigger = shape, empty = shape;
    for (auto& s : bigger) s += 1;
    empty[0] = 0;
    v.push_back(Tensor::randn(bigger, dt, 5));              // every size one more
    v.push_back(Tensor::zeros(empty, dt));                  // same rank, no elements
    Dims lead{2};
    for (std::int64_t s : shape) lead.push_back(s);
    v.push_back(Tensor::randn(lead, dt, 6));                // one more leading axis
    v.push_back(t.reshape({t.numel()}));                    // flattened
    v.push_back(Tensor::full(shape, std::numeric_limits<double>::quiet_NaN(), dt));
    v.push_back(Tensor::full(shape, std::numeric_limits<double>::infinity(), dt));
    v.push_back(Tensor::zeros(shape, dt));
  }
  if (t.dtype() == DType::Int64 && !shape.empty()) {       // indices out of range either way
    for (double value : {-1.0, -1000.0, 1000.0, 1e15}) v.push_back(Tensor::full(shape, value, DType::Int64));
  }
  if (shape.size() >= 2) v.push_back(t.transpose(0, 1));   // strided view, sizes swapped
  if (shape.size() >= 1 && shape[0] >= 2) v.push_back(t.slice(0, 0, shape[0], 2));  // strided view, every 2nd
  return v;
}

std::vector<Attr> attr_variants(AttrKind kind) {
  constexpr std::int64_t big = std::int64_t{1} << 40;
  constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min();
  constexpr std::int64_t hi = std::numeric_limits<std::int64_t>::max();
  switch (kind) {
    case AttrKind::Int:
      return {Attr(-1000000L), Attr(-3L), Attr(-1L), Attr(0L), Attr(1L), Attr(2L), Attr(7L), Attr(big), Attr(lo),
              Attr(hi), Attr(0.5), Attr(true), Attr(Dims{1})};
    case AttrKind::Float:
      return {Attr(-1.0), Attr(0.0), Attr(1e300), Attr(std::numeric_limits<double>::quiet_NaN()),
              Attr(std::numeric_limits<double>::infinity()), Attr(2L), Attr(Dims{1})};
    case AttrKind::Bool: return {Attr(true), Attr(false), Attr(3L), Attr(Dims{})};
    case AttrKind::Ints:
      return {Attr(Dims{}), Attr(Dims{0}), Attr(Dims{-1}), Attr(Dims{-7}), Attr(Dims{7}), Attr(Dims{0, 0}),
              Attr(Dims{1, 0}), Attr(Dims{-1, -1, -1, -1, -1}), Attr(Dims{big}), Attr(Dims{big, big}),
              Attr(Dims{lo}), Attr(Dims{hi}), Attr(Dims{3, 4}), Attr(Dims{4, 3}), Attr(Dims{12}), Attr(Dims{0, 12}),
              Attr(1L)};
  }
  return {};
}

struct Tally {
  int calls = 0, refused = 0;
  std::vector<std::string> failures;
};

void probe(const OpHandle& op, const std::vector<Tensor>& in, const std::vector<Attr>& attrs, Tally& tally) {
  ++tally.calls;
  const std::string bad = judge_call(op, in, attrs, &tally.refused);
  if (!bad.empty() && tally.failures.size() < 20)
    tally.failures.push_back(op.name() + " on " + describe_call(in, attrs) + ": " + bad);
}

}  // namespace

TEST_CASE("bad inputs: every op succeeds soundly or refuses with an opforge::Error naming it", "[ops][bad_inputs]") {
  const auto ops = opforge::registered_ops();
  REQUIRE(ops.size() >= 40);  // the standard plugins are loaded
  Tally tally;
  for (const OpHandle& op : ops)
    for (DType dtype : {DType::Float64, DType::Float32}) {
    if (!op.schema().dtypes.contains(dtype)) continue;
    INFO("op " << op.name() << ", samples in " << opforge::dtype_name(dtype));
    const std::vector<Tensor> base = sample_inputs(op, dtype);
    const std::vector<Attr> attrs = sample_attrs(op);
    // The sample call itself is sound.
    const int refused_before = tally.refused;
    probe(op, base, attrs, tally);
    CHECK(tally.refused == refused_before);  // the op's own samples are accepted
    // One input at a time replaced by each variant of it.
    for (std::size_t i = 0; i < base.size(); ++i)
      for (const Tensor& v : variants(base[i])) {
        std::vector<Tensor> in = base;
        in[i] = v;
        probe(op, in, attrs, tally);
      }
    // Two inputs replaced at once, each by any variant of its own.
    for (std::size_t i = 0; i < base.size(); ++i)
      for (std::size_t j = i + 1; j < base.size(); ++j) {
        const std::vector<Tensor> vi = variants(base[i]), vj = variants(base[j]);
        for (const Tensor& a : vi)
          for (const Tensor& b : vj) {
            std::vector<Tensor> in = base;
            in[i] = a;
            in[j] = b;
            probe(op, in, attrs, tally);
          }
      }
    // Every input replaced alike (shapes that agree with each other but not with the op).
    for (const Tensor& v : variants(base.empty() ? Tensor::randn({3, 4}, dtype) : base[0])) {
      if (!v.defined()) continue;
      probe(op, std::vector<Tensor>(base.size(), v), attrs, tally);
    }
    // Input counts off by one.
    if (!base.empty()) probe(op, std::vector<Tensor>(base.begin(), base.end() - 1), attrs, tally);
    {
      std::vector<Tensor> more = base;
      more.push_back(base.empty() ? Tensor::randn({3, 4}, dtype) : base.back());
      probe(op, more, attrs, tally);
    }
    // One attribute at a time replaced by each variant of its kind (and of other kinds).
    for (std::size_t a = 0; a < attrs.size(); ++a)
      for (const Attr& v : attr_variants(op.schema().attrs[a].kind)) {
        std::vector<Attr> at = attrs;
        at[a] = v;
        probe(op, base, at, tally);
      }
    // Two attributes replaced at once (an axis and a flag, a start and a stop...).
    for (std::size_t a = 0; a < attrs.size(); ++a)
      for (std::size_t b = a + 1; b < attrs.size(); ++b)
        for (const Attr& va : attr_variants(op.schema().attrs[a].kind))
          for (const Attr& vb : attr_variants(op.schema().attrs[b].kind)) {
            std::vector<Attr> at = attrs;
            at[a] = va;
            at[b] = vb;
            probe(op, base, at, tally);
          }
    // One attribute too many.
    {
      std::vector<Attr> at = attrs;
      at.push_back(Attr(1L));
      probe(op, base, at, tally);
    }
    }
  // Which ops were probed (the SDK install test runs this program with the
  // example plugins on OPFORGE_PLUGIN_PATH and looks for their ops here).
  std::cout << "probed " << ops.size() << " ops:";
  for (const OpHandle& op : ops) std::cout << " " << op.name();
  std::cout << "\n" << tally.calls << " calls, " << tally.refused << " refused" << std::endl;
  INFO(tally.calls << " calls, " << tally.refused << " refused");
  std::string all;
  for (const auto& f : tally.failures) all += "\n  " + f;
  INFO("calls that neither succeeded soundly nor refused properly (first 20):" << all);
  CHECK(tally.failures.empty());
  // The probes reach the ops' own checks, not only the core's: most are refused,
  // and some of the refusals come from past the core's count and dtype checks.
  CHECK(tally.refused > tally.calls / 3);
  CHECK(tally.refused < tally.calls);
}
