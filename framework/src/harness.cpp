// The test harness for op authors (sdk/include/opforge/sdk/harness.hpp).
//
// Every check builds its own inputs from the op's sample provider (cloned into
// fresh leaves for each run, so the sample itself is never handed to the op),
// runs in grad mode whatever the caller's, and turns any exception into a failed
// result: one check failing never stops the others.
#include "opforge/sdk/harness.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "opforge/autograd.hpp"
#include "opforge/error.hpp"
#include "opforge/sdk/grad_mode.hpp"
#include "opforge/sdk/parallel.hpp"
#include "opforge/threads.hpp"

namespace opforge::sdk {

namespace detail {
std::atomic<int> split_work{0};
}  // namespace detail

namespace {

// ---- helpers ----------------------------------------------------------------------

std::string input_label(const OpSchema& s, std::size_t i) {
  std::string label = "input " + std::to_string(i);
  if (i < s.inputs.size()) label += " '" + s.inputs[i] + "'";
  return label;
}

std::string input_list(const OpSchema& s) {
  std::string out;
  for (std::size_t i = 0; i < s.inputs.size(); ++i) out += (i ? ", " : "") + s.inputs[i];
  return out;
}

/// The shortest text that reads back as the same value in `dtype` (so that two
/// values which differ in their last bit never print alike).
std::string format_value(double v, DType dtype) {
  char buf[40];
  if (dtype == DType::Int64 || dtype == DType::Bool) {
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    const bool same = dtype == DType::Float32 ? std::strtof(buf, nullptr) == static_cast<float>(v)
                                              : std::strtod(buf, nullptr) == v;
    if (same) return buf;
  }
  std::snprintf(buf, sizeof buf, "%.17g", v);  // NaN and friends
  return buf;
}

std::string format_small(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2g", v);
  return buf;
}

/// Index of the first element whose bits differ, or -1. Same dtype and shape assumed.
std::int64_t first_bit_difference(const Tensor& a, const Tensor& b) {
  const Tensor ca = a.is_contiguous() ? a : a.detach().clone();
  const Tensor cb = b.is_contiguous() ? b : b.detach().clone();
  const std::size_t size = itemsize(a.dtype());
  const auto* pa = static_cast<const unsigned char*>(ca.data_ptr());
  const auto* pb = static_cast<const unsigned char*>(cb.data_ptr());
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    if (std::memcmp(pa + static_cast<std::size_t>(i) * size, pb + static_cast<std::size_t>(i) * size, size) != 0)
      return i;
  }
  return -1;
}

/// How two tensors differ, bit for bit: nothing, in kind (defined, dtype, shape),
/// or at a first element.
struct BitDiff {
  bool same = true;
  std::string kind;         ///< set when they differ in definedness, dtype or shape
  std::int64_t index = -1;  ///< else the first element whose bits differ
  std::string first, second;
};

BitDiff diff_bits(const Tensor& a, const Tensor& b) {
  BitDiff d;
  if (!a.defined() && !b.defined()) return d;
  d.same = false;
  if (a.defined() != b.defined() || a.dtype() != b.dtype() || a.shape() != b.shape()) {
    d.kind = a.describe() + " then " + b.describe();
    return d;
  }
  d.index = first_bit_difference(a, b);
  if (d.index < 0) {
    d.same = true;
    return d;
  }
  d.first = format_value(a.to_vector()[static_cast<std::size_t>(d.index)], a.dtype());
  d.second = format_value(b.to_vector()[static_cast<std::size_t>(d.index)], b.dtype());
  return d;
}

/// "" when `a` and `b` are bit-identical, else "output 0 element 3 differs: 1.5 vs 1.5000001".
std::string compare_bits(const std::string& what, const Tensor& a, const Tensor& b) {
  const BitDiff d = diff_bits(a, b);
  if (d.same) return {};
  if (!d.kind.empty()) return what + " differs: " + d.kind;
  return what + " element " + std::to_string(d.index) + " differs: " + d.first + " vs " + d.second;
}

/// The dtype the single-dtype checks run in: float64 when the schema takes it.
DType primary_dtype(const OpSchema& s) {
  for (DType t : {DType::Float64, DType::Float32, DType::Int64, DType::Bool})
    if (s.dtypes.contains(t)) return t;
  return DType::Float64;
}

/// New leaves with copies of the sample's data; floating ones require grad when asked.
TensorList fresh_leaves(const TensorList& sample, bool requires_grad) {
  TensorList xs;
  for (const Tensor& t : sample) {
    Tensor c = t.detach().clone();
    if (requires_grad && is_floating(c.dtype())) c.requires_grad_(true);
    xs.push_back(std::move(c));
  }
  return xs;
}

/// t's values as every other element of a buffer twice its size, from its
/// second element on (every stride doubled, storage offset 1: what a
/// transposed or sliced tensor looks like).
Tensor strided_copy(const Tensor& t) {
  Dims wide = t.shape();
  wide.push_back(2);
  Tensor v = Tensor::zeros(wide, t.dtype()).select(static_cast<std::int64_t>(t.shape().size()), 1);
  v.copy_(t);
  return v;
}

/// t's values laid out as a transpose: the axes run in reverse order in memory
/// (the first axis fastest), and each run of the first axis is followed by one
/// element of padding. For shape [3, 5] the strides are [1, 4]: not in row-major
/// order, and no single step reaches every element (doubled strides can be
/// walked with one step of 2). A tensor of rank 0 or 1 has no other order:
/// strided_copy()'s layout.
Tensor transposed_copy(const Tensor& t) {
  const std::size_t rank = t.shape().size();
  if (rank < 2) return strided_copy(t);
  Dims reversed, order;
  for (std::size_t k = rank; k-- > 0;) {
    reversed.push_back(t.shape()[k]);
    order.push_back(static_cast<std::int64_t>(k));
  }
  reversed[rank - 1] += 1;  // the padding
  Tensor v = Tensor::zeros(reversed, t.dtype())
                 .slice(static_cast<std::int64_t>(rank) - 1, 0, t.shape()[0])
                 .permute(order);
  v.copy_(t);
  return v;
}

/// True when transposed_copy() gives t a layout of its own (rank 2 or more,
/// with at least two axes longer than 1), not strided_copy()'s.
bool transposes(const Tensor& t) {
  int long_axes = 0;
  for (std::int64_t n : t.shape()) long_axes += n > 1;
  return long_axes >= 2;
}

/// New leaves with the sample's values, each laid out by `relayout`.
TensorList relaid_leaves(const TensorList& sample, bool requires_grad, Tensor (*relayout)(const Tensor&)) {
  TensorList xs;
  for (const Tensor& t : sample) {
    Tensor v = relayout(t);
    if (requires_grad && is_floating(v.dtype())) v.requires_grad_(true);
    xs.push_back(std::move(v));
  }
  return xs;
}

bool any_floating(const TensorList& xs) {
  for (const Tensor& t : xs)
    if (is_floating(t.dtype())) return true;
  return false;
}

/// Fixed random gradients for the outputs that can take one (floating, recorded).
TensorList output_weights(const TensorList& outs, std::uint64_t seed) {
  TensorList w;
  for (std::size_t k = 0; k < outs.size(); ++k) {
    if (is_floating(outs[k].dtype()) && outs[k].requires_grad())
      w.push_back(Tensor::randn(outs[k].shape(), outs[k].dtype(), seed + 7919 + k));
    else
      w.push_back(Tensor());
  }
  return w;
}

/// Backpropagates `weights` (undefined entries skipped) from `outs`; returns how many roots.
std::size_t backward_weighted(const TensorList& outs, const TensorList& weights) {
  TensorList roots, grads;
  for (std::size_t k = 0; k < outs.size() && k < weights.size(); ++k) {
    if (!weights[k].defined()) continue;
    roots.push_back(outs[k]);
    // A backward that writes into its gradient must not change the next run's
    // weights (gradcheck reports it): contiguous weights, which runs share, go
    // as copies; strided and broadcast ones, made for one run, as they are.
    grads.push_back(weights[k].is_contiguous() ? weights[k].clone() : weights[k]);
  }
  if (!roots.empty()) backward(roots, grads);
  return roots.size();
}

/// One forward + backward on fresh leaves: the outputs (detached) and each input's gradient.
struct Run {
  TensorList outputs;
  TensorList grads;
};

/// Copies of the outputs of a call on `xs`, and the gradients `xs` hold. Copies:
/// an op that hands out one buffer on every call would otherwise change a
/// reference run's outputs under the check's feet (and pass any comparison).
Run collect(const TensorList& outs, const TensorList& xs) {
  Run r;
  for (const Tensor& o : outs) r.outputs.push_back(o.defined() ? o.detach().clone() : Tensor());
  for (const Tensor& x : xs) r.grads.push_back(x.grad());
  return r;
}

/// New leaves that share the sample's memory (what concurrent callers of one
/// model do with its parameters); floating ones require grad.
TensorList shared_leaves(const TensorList& sample) {
  TensorList xs;
  for (const Tensor& t : sample) {
    Tensor v = t.detach();
    if (is_floating(v.dtype())) v.requires_grad_(true);
    xs.push_back(std::move(v));
  }
  return xs;
}

enum class Layout { contiguous, strided, transposed, shared };

/// `weights` empty: made from the first run's outputs and kept for the next runs.
Run run_forward_backward(const OpHandle& op, const TensorList& sample, TensorList& weights, std::uint64_t seed,
                         Layout layout = Layout::contiguous) {
  GradModeScope grad_on(true);
  TensorList xs = layout == Layout::strided      ? relaid_leaves(sample, true, strided_copy)
                  : layout == Layout::transposed ? relaid_leaves(sample, true, transposed_copy)
                  : layout == Layout::shared     ? shared_leaves(sample)
                                                 : fresh_leaves(sample, true);
  TensorList outs = op.call(xs);
  if (weights.empty()) weights = output_weights(outs, seed);
  backward_weighted(outs, weights);
  return collect(outs, xs);
}

/// The first difference `diff` (what, a, b) -> "" or text finds between two
/// runs: in their outputs (when `outputs`), then in their input gradients.
template <class Diff>
std::string first_run_difference(const OpSchema& s, const Run& a, const Run& b, bool outputs, Diff diff) {
  if (outputs) {
    if (a.outputs.size() != b.outputs.size())
      return "the first run returned " + std::to_string(a.outputs.size()) + " outputs, the second " +
             std::to_string(b.outputs.size());
    for (std::size_t k = 0; k < a.outputs.size(); ++k) {
      std::string d = diff("output " + std::to_string(k), a.outputs[k], b.outputs[k]);
      if (!d.empty()) return d;
    }
  }
  for (std::size_t i = 0; i < a.grads.size() && i < b.grads.size(); ++i) {
    std::string d = diff("the gradient of " + input_label(s, i), a.grads[i], b.grads[i]);
    if (!d.empty()) return d;
  }
  return {};
}

/// "" when both runs are bit-identical, else the first difference.
std::string compare_runs(const OpSchema& s, const Run& a, const Run& b) {
  return first_run_difference(s, a, b, true, compare_bits);
}

void pass(CheckResult& r, std::string detail) {
  r.passed = true;
  r.skipped = false;
  r.detail = std::move(detail);
}
void fail(CheckResult& r, std::string detail) {
  r.passed = false;
  r.skipped = false;
  r.detail = std::move(detail);
}
void skip(CheckResult& r, std::string detail) {
  r.passed = true;
  r.skipped = true;
  r.detail = std::move(detail);
}

// ---- the checks --------------------------------------------------------------------

/// How a check that needs two equal runs first says it did not get them.
constexpr const char* kRunsDiffer = "two runs on the same inputs, one thread, already differ";

void check_gradcheck(const OpHandle& op, const CheckOptions& opt, CheckResult& r) {
  const OpSchema& s = op.schema();
  if (!s.dtypes.contains(DType::Float64) && !s.dtypes.contains(DType::Float32)) {
    skip(r, "the schema accepts no floating dtype (it takes " + s.dtypes.to_string() + "): nothing to differentiate");
    return;
  }
  // float64; an op that takes float32 only is checked in float32, more loosely (gradcheck's note says so).
  const DType dtype = s.dtypes.contains(DType::Float64) ? DType::Float64 : DType::Float32;
  std::string note;
  const TensorList xs = harness_inputs(op, dtype, opt.seed, &note);
  if (!any_floating(xs)) {
    skip(r, "no input is floating: there is nothing to differentiate");
    return;
  }
  GradModeScope grad_on(true);
  const GradcheckResult g = gradcheck(op, xs, opt.gradcheck);
  std::string extra;
  if (!g.note.empty()) extra += "; " + g.note;
  if (!note.empty()) extra += "; " + note;
  if (g.ok && g.elements_checked == 0)
    skip(r, (opt.gradcheck.skip_inputs.empty() ? "the sample inputs have no floating element to perturb (all empty)"
                                               : "no floating element to perturb outside the inputs left out") +
                extra);
  else if (g.ok)
    pass(r, std::to_string(g.elements_checked) + " elements, max |diff| " + format_small(g.max_abs_error) + extra);
  else
    fail(r, g.message + extra);
}

void check_backward_contract(const OpHandle& op, const CheckOptions& opt, CheckResult& r) {
  const OpSchema& s = op.schema();
  std::string ran;
  std::size_t gradients = 0, inputs = 0;
  for (DType dtype : {DType::Float64, DType::Float32}) {
    if (!s.dtypes.contains(dtype)) continue;
    const std::string tag = dtype_name(dtype);
    const TensorList sample = harness_inputs(op, dtype, opt.seed);
    GradModeScope grad_on(true);
    TensorList xs = fresh_leaves(sample, true);
    if (!any_floating(xs)) continue;
    TensorList outs;
    try {
      outs = op.call(xs);
    } catch (const std::exception& e) {
      fail(r, tag + ": forward threw: " + e.what());
      return;
    }
    const TensorList weights = output_weights(outs, opt.seed);
    try {
      if (backward_weighted(outs, weights) == 0) continue;  // no differentiable output
    } catch (const std::exception& e) {
      fail(r, tag + ": " + e.what());
      return;
    }
    // The engine checked each gradient it accumulated; confirm what reached the leaves.
    gradients = 0;
    inputs = xs.size();
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const Tensor g = xs[i].grad();
      if (!g.defined()) continue;
      if (g.shape() != xs[i].shape() || g.dtype() != xs[i].dtype()) {
        fail(r, tag + ": the gradient accumulated into " + input_label(s, i) + " is " + g.describe() +
                    ", expected " + xs[i].describe());
        return;
      }
      ++gradients;
    }
    ran += (ran.empty() ? "" : ", ") + tag;
  }
  if (ran.empty()) {
    skip(r, "no call had both a floating input and a differentiable output (the schema takes " +
                s.dtypes.to_string() + "): there is no backward to run");
    return;
  }
  std::string detail = ran + ": backward on the recorded graph passed the engine's checks; " +
                       std::to_string(gradients) + " of " + std::to_string(inputs) +
                       " inputs got a gradient of their shape and dtype";
  if (!s.dtypes.contains(DType::Float32)) detail += " (the schema does not accept float32)";
  pass(r, detail);
}

/// "" when every element of `b` is within rounding of `a`'s, else the first
/// element that is not (a kernel that reads its operands in another order may
/// round differently; one that ignores their strides is wrong by far more).
std::string close_diff(const std::string& what, const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined() || (a.defined() && (a.dtype() != b.dtype() || a.shape() != b.shape())))
    return what + " differs: " + a.describe() + " then " + b.describe();
  if (!a.defined()) return {};
  const std::vector<double> va = a.to_vector(), vb = b.to_vector();
  double scale = 1;
  for (double v : va) scale = std::max(scale, std::abs(v));
  const double tol = (a.dtype() == DType::Float32 ? 1e-5 : a.dtype() == DType::Float64 ? 1e-12 : 0.0) * scale;
  for (std::size_t j = 0; j < va.size(); ++j) {
    if (std::abs(va[j] - vb[j]) <= tol || (std::isnan(va[j]) && std::isnan(vb[j]))) continue;
    return what + " element " + std::to_string(j) + " differs: " + format_value(va[j], a.dtype()) + " vs " +
           format_value(vb[j], b.dtype());
  }
  return {};
}
/// "" when every input gradient of `got` (and every output, when `outputs`) is
/// within rounding of `want`'s, else the first that is not.
std::string compare_close(const OpSchema& s, const Run& want, const Run& got, bool outputs = false) {
  return first_run_difference(s, want, got, outputs, close_diff);
}

void check_strided_grads(const OpHandle& op, const CheckOptions& opt, CheckResult& r) {
  const OpSchema& s = op.schema();
  const DType dtype = primary_dtype(s);
  const TensorList sample = harness_inputs(op, dtype, opt.seed);
  if (!any_floating(sample)) return skip(r, "no input is floating: there is no backward to run");
  TensorList weights;
  const Run reference = run_forward_backward(op, sample, weights, opt.seed);
  // The same values as every other element of a buffer twice the size, from
  // its second element on (each stride doubled, the storage offset 1), as a
  // sliced tensor reaches a backward; then laid out as a transpose (axes
  // reversed in memory, padded), which no single step walks.
  TensorList strided, transposed;
  std::size_t relaid = 0, relaid_transposed = 0;
  for (const Tensor& w : weights) {
    if (!w.defined()) {
      strided.push_back(w);
      transposed.push_back(w);
      continue;
    }
    strided.push_back(strided_copy(w));
    ++relaid;
    if (transposes(w)) {
      transposed.push_back(transposed_copy(w));
      ++relaid_transposed;
    } else {
      transposed.push_back(w);
    }
  }
  if (relaid == 0) return skip(r, "no output is differentiable: there is no backward to run");
  const std::string tag = std::string(dtype_name(dtype)) + ": ";
  std::string d = compare_close(s, reference, run_forward_backward(op, sample, strided, opt.seed));
  if (!d.empty())
    return fail(r, tag + "given output gradients with doubled strides and an offset (same values), " + d +
                       " (contiguous vs strided): does backward read grads[k] as a flat array? Read it through its "
                       "strides, or call .contiguous() first");
  if (relaid_transposed > 0) {
    d = compare_close(s, reference, run_forward_backward(op, sample, transposed, opt.seed));
    if (!d.empty())
      return fail(r, tag + "given output gradients laid out as transposes (axes reversed in memory, rows padded; same "
                           "values), " + d + " (contiguous vs transposed): does backward walk grads[k] with one step, "
                           "or assume its last stride is 1 or its strides in row-major order? Index each axis by its "
                           "own stride, or call .contiguous() first");
  }
  // One value broadcast to the output's shape (every stride 0), as the gradient
  // of a sum or a mean arrives, against the same value written out.
  TensorList full, broadcast;
  for (const Tensor& w : weights) {
    full.push_back(w.defined() ? Tensor::full(w.shape(), 0.75, w.dtype()) : Tensor());
    broadcast.push_back(w.defined() ? Tensor::full({}, 0.75, w.dtype()).expand(w.shape()) : Tensor());
  }
  TensorList full_weights = full;
  const Run dense = run_forward_backward(op, sample, full_weights, opt.seed);
  d = compare_close(s, dense, run_forward_backward(op, sample, broadcast, opt.seed));
  if (!d.empty())
    return fail(r, tag + "given output gradients of one value broadcast (stride 0), " + d +
                       " (contiguous vs broadcast): does backward read grads[k] as a flat array? Read it through its "
                       "strides, or call .contiguous() first");
  pass(r, tag + "backward gave the same input gradients for output gradients that are contiguous, strided (" +
              std::to_string(relaid) + " of " + std::to_string(weights.size()) + " outputs), transposed (" +
              std::to_string(relaid_transposed) + " of " + std::to_string(weights.size()) + ") and broadcast");
}

/// Two forward + backward runs on the op's sample in its primary dtype, with the
/// same output gradients: the first on contiguous inputs, the second on inputs
/// laid out as `second`.
struct TwoRuns {
  DType dtype;
  Run first, second;
};
TwoRuns two_runs(const OpHandle& op, const CheckOptions& opt, Layout second) {
  TwoRuns t;
  t.dtype = primary_dtype(op.schema());
  const TensorList sample = harness_inputs(op, t.dtype, opt.seed);
  TensorList weights;
  t.first = run_forward_backward(op, sample, weights, opt.seed);
  t.second = run_forward_backward(op, sample, weights, opt.seed, second);
  return t;
}

void check_strided_inputs(const OpHandle& op, const CheckOptions& opt, CheckResult& r) {
  const OpSchema& s = op.schema();
  const DType dtype = primary_dtype(s);
  const TensorList sample = harness_inputs(op, dtype, opt.seed);
  TensorList weights;
  const Run reference = run_forward_backward(op, sample, weights, opt.seed);
  const std::string tag = std::string(dtype_name(dtype)) + ": ";
  const std::string core_copies =
      "the core hands this op contiguous copies of strided inputs (its schema does not take strided inputs), so the "
      "difference comes from the op's own state or layout assumptions";
  std::string d =
      compare_close(s, reference, run_forward_backward(op, sample, weights, opt.seed, Layout::strided), true);
  if (!d.empty()) {
    return fail(r, tag + "given inputs with doubled strides and an offset (same values), " + d +
                       " (contiguous vs strided): " +
                       (s.strided_inputs
                            ? "the schema says the op takes strided inputs (takes_strided_inputs()), so they reach "
                              "forward as they are: does it (or backward, on a saved input) read an input as a flat "
                              "array? Read inputs through their strides, or call .contiguous() first"
                            : core_copies));
  }
  // Then laid out as transposes, where some input has two axes to swap: a
  // kernel that walks an input with one step (its last stride) reads doubled
  // strides right and these wrong.
  std::size_t relaid = 0;
  for (const Tensor& t : sample) relaid += transposes(t);
  if (relaid > 0) {
    d = compare_close(s, reference, run_forward_backward(op, sample, weights, opt.seed, Layout::transposed), true);
    if (!d.empty()) {
      return fail(r, tag + "given inputs laid out as transposes (axes reversed in memory, rows padded; same values), " +
                         d + " (contiguous vs transposed): " +
                         (s.strided_inputs
                              ? "the schema says the op takes strided inputs (takes_strided_inputs()), so they reach "
                                "forward as they are: does it (or backward, on a saved input) walk an input with one "
                                "step, or assume its last stride is 1 or its strides in row-major order? Index each "
                                "axis by its own stride, or call .contiguous() first"
                              : core_copies));
    }
  }
  pass(r, tag + "inputs with doubled strides and an offset, and laid out as transposes (" + std::to_string(relaid) +
              " of " + std::to_string(sample.size()) +
              " inputs), gave the outputs and input gradients of contiguous ones (" +
              (s.strided_inputs ? "passed to the op as they are: the schema takes strided inputs"
                                : "the core passed contiguous copies: the schema does not take strided inputs") +
              ")");
}

void check_inputs_unchanged(const OpHandle& op, const CheckOptions& opt, CheckResult& r) {
  const OpSchema& s = op.schema();
  const TensorList sample = harness_inputs(op, primary_dtype(s), opt.seed);
  // "" when every input still has the sample's bits, else the first change.
  auto changed = [&](const TensorList& xs, const char* stage) -> std::string {
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const BitDiff d = diff_bits(sample[i], xs[i]);
      if (d.same) continue;
      if (!d.kind.empty()) return input_label(s, i) + " changed during " + stage + ": " + d.kind;
      return input_label(s, i) + " element " + std::to_string(d.index) + " changed during " + stage + ": " +
             d.first + " -> " + d.second;
    }
    return {};
  };

  // 1. forward without recording
  {
    TensorList xs = fresh_leaves(sample, false);
    op.call(xs);
    const std::string d = changed(xs, "forward (no graph recorded)");
    if (!d.empty()) return fail(r, d);
  }
  std::string stages = "forward (no graph recorded)";
  // 2. forward recording the graph, then 3. backward
  TensorList xs = fresh_leaves(sample, true);
  if (any_floating(xs)) {
    GradModeScope grad_on(true);
    TensorList outs = op.call(xs);
    std::string d = changed(xs, "forward (recording the graph)");
    if (!d.empty()) return fail(r, d);
    stages += ", forward (recording the graph)";
    if (backward_weighted(outs, output_weights(outs, opt.seed)) > 0) {
      d = changed(xs, "backward");
      if (!d.empty()) return fail(r, d);
      stages += " and backward";
    }
  }
  pass(r, std::to_string(xs.size()) + " input(s) bit-identical after " + stages);
}

void check_no_grad_records_nothing(const OpHandle& op, const CheckOptions& opt, CheckResult& r) {
  const OpSchema& s = op.schema();
  const TensorList sample = harness_inputs(op, primary_dtype(s), opt.seed);
  TensorList xs = fresh_leaves(sample, true);
  TensorList outs;
  {
    NoGradGuard no_grad;
    outs = op.call(xs);
    if (grad_enabled()) return fail(r, "grad mode was on again after the call: the op turned it on and left it on");
  }
  for (std::size_t k = 0; k < outs.size(); ++k) {
    const std::string out = "output " + std::to_string(k);
    if (outs[k].grad_fn() != nullptr)
      return fail(r, out + " has a grad_fn under NoGradGuard: the call recorded a graph");
    if (outs[k].requires_grad()) {
      bool is_input = false;
      for (const Tensor& x : xs) is_input = is_input || outs[k].is_same(x);
      return fail(r, out + " requires grad under NoGradGuard" +
                         (is_input ? std::string(" (it is an input that requires grad, returned as it is)") : ""));
    }
  }
  pass(r, std::to_string(outs.size()) + " output(s), none with a grad_fn or requiring grad");
}

void check_deterministic(const OpHandle& op, const CheckOptions& opt, CheckResult& r) {
  const OpSchema& s = op.schema();
  const TwoRuns runs = two_runs(op, opt, Layout::contiguous);
  const std::string d = compare_runs(s, runs.first, runs.second);
  if (!d.empty()) return fail(r, d);
  pass(r, std::string("two ") + dtype_name(runs.dtype) +
              " forward+backward runs: outputs and gradients bit-identical");
}

void check_interleaved_calls(const OpHandle& op, const CheckOptions& opt, CheckResult& r) {
  const OpSchema& s = op.schema();
  const DType dtype = primary_dtype(s);
  const TensorList a = harness_inputs(op, dtype, opt.seed);
  const TensorList b = harness_inputs(op, dtype, opt.seed + 1);
  bool same = a.size() == b.size();
  for (std::size_t i = 0; same && i < a.size(); ++i) same = diff_bits(a[i], b[i]).same;
  if (same)
    return skip(r, "the sample provider gave the same inputs for seeds " + std::to_string(opt.seed) + " and " +
                       std::to_string(opt.seed + 1) +
                       ", so there are no two different calls to interleave; let OpSchema::samples use its seed");
  TensorList wa, wb;
  const Run alone_a = run_forward_backward(op, a, wa, opt.seed);
  const Run alone_b = run_forward_backward(op, b, wb, opt.seed + 1);
  {
    const std::string d = compare_runs(s, alone_a, run_forward_backward(op, a, wa, opt.seed));
    if (!d.empty())
      return skip(r, std::string(kRunsDiffer) + " (" + d +
                         "), so interleaved runs cannot be compared bit for bit; see deterministic");
  }
  // Both forwards, then both backwards: what a program does with two losses, or
  // a graph that calls the op twice.
  GradModeScope grad_on(true);
  TensorList xa = fresh_leaves(a, true), xb = fresh_leaves(b, true);
  const TensorList outs_a = op.call(xa);
  const TensorList outs_b = op.call(xb);
  for (std::size_t i = 0; i < outs_a.size(); ++i)
    for (std::size_t j = 0; j < outs_b.size(); ++j) {
      if (!outs_a[i].defined() || !outs_b[j].defined() || outs_a[i].nbytes() == 0) continue;
      if (outs_a[i].storage() != outs_b[j].storage()) continue;
      return fail(r, "output " + std::to_string(i) + " of the call on sample A and output " + std::to_string(j) +
                         " of the call on sample B share one buffer: a caller that keeps A's result sees it "
                         "change when the op runs again. Return a new tensor from every call (Tensor::empty), "
                         "not one kept in a static or in the Function object");
    }
  backward_weighted(outs_a, wa);
  backward_weighted(outs_b, wb);
  const std::string advice =
      ": does the op keep per-call state in its Function object or in a static? One Function serves every call; "
      "keep what backward needs on ctx (save_for_backward, save_value, save_int)";
  for (const bool first : {true, false}) {
    const std::string d =
        first ? compare_runs(s, alone_a, collect(outs_a, xa)) : compare_runs(s, alone_b, collect(outs_b, xb));
    if (d.empty()) continue;
    const std::string me = first ? "A" : "B", other = first ? "B" : "A";
    return fail(r, "forward on sample A (seed " + std::to_string(opt.seed) + "), forward on sample B (seed " +
                       std::to_string(opt.seed + 1) + "), then backward of A and of B: for " + me + ", " + d + " (" +
                       me + " alone vs " + me + " interleaved with " + other + ")" + advice);
  }
  pass(r, std::string(dtype_name(dtype)) +
              ": two calls on different inputs, both forwards before either backward: outputs and gradients "
              "bit-identical to each call alone");
}

void check_thread_safe(const OpHandle& op, const CheckOptions& opt, CheckResult& r) {
  const OpSchema& s = op.schema();
  const DType dtype = primary_dtype(s);
  const TensorList sample = harness_inputs(op, dtype, opt.seed);
  TensorList weights;
  const Run reference = run_forward_backward(op, sample, weights, opt.seed);
  {
    const Run again = run_forward_backward(op, sample, weights, opt.seed);
    const std::string d = compare_runs(s, reference, again);
    if (!d.empty())
      return skip(r, std::string(kRunsDiffer) + " (" + d +
                         "), so runs on several threads cannot be compared bit for bit; see deterministic");
  }
  const int threads = opt.threads < 1 ? 1 : opt.threads;
  const int calls = opt.calls_per_thread < 1 ? 1 : opt.calls_per_thread;

  // The threads share one copy of the inputs, as concurrent callers of a model
  // share its parameters (each call makes leaves of its own that view it); each
  // thread has its own copy of the output weights.
  TensorList shared;
  for (const Tensor& x : sample) shared.push_back(x.clone());
  std::vector<TensorList> thread_weights(static_cast<std::size_t>(threads));
  for (TensorList& tw : thread_weights)
    for (const Tensor& w : weights) tw.push_back(w.defined() ? w.clone() : Tensor());
  std::mutex mu;
  std::string first_failure;
  int failed_threads = 0;
  std::atomic<int> arrived{0};
  auto body = [&](std::size_t t) {
    arrived.fetch_add(1);
    while (arrived.load() < threads) std::this_thread::yield();  // all start together
    std::string failure;
    int c = 0;
    try {
      for (; c < calls && failure.empty(); ++c) {
        const Run run = run_forward_backward(op, shared, thread_weights[t], opt.seed, Layout::shared);
        failure = compare_runs(s, reference, run);
        if (!failure.empty()) {
          // compare_runs says "first run" / "second": here, the single-thread run and this call.
          failure = "thread " + std::to_string(t) + ", call " + std::to_string(c) + ": " + failure +
                    " (single-thread result vs this call)";
        }
      }
    } catch (const std::exception& e) {
      failure = "thread " + std::to_string(t) + ", call " + std::to_string(c) + " threw: " + e.what();
    } catch (...) {
      failure = "thread " + std::to_string(t) + ", call " + std::to_string(c) +
                " threw an exception not derived from std::exception";
    }
    if (!failure.empty()) {
      std::lock_guard<std::mutex> lock(mu);
      ++failed_threads;
      if (first_failure.empty()) first_failure = failure;
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(thread_weights.size());
  try {
    for (std::size_t t = 0; t < thread_weights.size(); ++t) pool.emplace_back(body, t);
  } catch (...) {
    arrived.store(threads);  // release the threads that did start, so they can be joined
    for (auto& th : pool) th.join();
    throw;
  }
  for (auto& th : pool) th.join();

  if (!first_failure.empty())
    return fail(r, first_failure + " [" + std::to_string(failed_threads) + " of " + std::to_string(threads) +
                       " threads saw a difference]: calls that overlap in time changed each other's results. Does "
                       "the op keep state in a static or in its Function object (one serves every call), or write "
                       "into an input, even for a moment (the threads share one copy of the inputs)?");
  pass(r, std::to_string(threads) + " threads x " + std::to_string(calls) + " " + dtype_name(dtype) +
              " forward+backward calls on one shared copy of the inputs: outputs and gradients bit-identical to "
              "the single-thread run");
}

/// `t` in `dtype` when it is floating (as it is otherwise); undefined stays undefined.
Tensor floating_as(const Tensor& t, DType dtype) {
  return t.defined() && is_floating(t.dtype()) ? t.to(dtype) : t;
}

/// "" when `got` (a float32 or int64 run) agrees with `want` (float64, on the same
/// values) to `rel` of the largest |want| (at least 1), else the first element
/// that does not. `got` keeps float64's kind: floating where it is floating.
std::string agree_diff(const std::string& what, const Tensor& want, const Tensor& got, DType dtype, double rel) {
  if (want.defined() != got.defined() || (want.defined() && want.shape() != got.shape()))
    return what + " is " + (got.defined() ? got.describe() : std::string("undefined")) + " in " + dtype_name(dtype) +
           " where float64 gives " + (want.defined() ? want.describe() : std::string("undefined"));
  if (!want.defined()) return {};
  if (dtype == DType::Float32 && is_floating(want.dtype()) && got.dtype() != DType::Float32)
    return what + " is " + got.describe() + " from float32 inputs: expected float32 (the inputs' dtype)";
  const std::vector<double> a = want.to_vector(), b = got.to_vector();
  double scale = 1;
  for (double v : a)
    if (std::isfinite(v)) scale = std::max(scale, std::abs(v));
  for (std::size_t j = 0; j < a.size(); ++j) {
    if (std::abs(a[j] - b[j]) <= rel * scale || (std::isnan(a[j]) && std::isnan(b[j])) || a[j] == b[j]) continue;
    return what + " element " + std::to_string(j) + " is " + format_value(b[j], got.dtype()) + " in " +
           dtype_name(dtype) + ", " + format_value(a[j], want.dtype()) + " in float64 on the same values";
  }
  return {};
}

void check_dtypes_agree(const OpHandle& op, const CheckOptions& opt, CheckResult& r) {
  const OpSchema& s = op.schema();
  const bool f32 = s.dtypes.contains(DType::Float32), i64 = s.dtypes.contains(DType::Int64);
  if (!s.dtypes.contains(DType::Float64) || (!f32 && !i64))
    return skip(r, "the schema takes " + s.dtypes.to_string() +
                       ": float64 and float32 or int64 are needed to compare one with the other");
  const TensorList sample = harness_inputs(op, DType::Float64, opt.seed);
  // The inputs whose dtype follows the call's: the floating ones, and int64 ones
  // when every input shares one dtype (a comparison's samples are integers).
  auto follows = [&](const Tensor& t) {
    return t.defined() && (is_floating(t.dtype()) || (s.same_dtype && t.dtype() == DType::Int64));
  };
  bool any = false;
  for (const Tensor& t : sample) any = any || follows(t);
  if (!any) return skip(r, "no input takes the call's dtype: there is nothing to compare across dtypes");
  std::string done;
  if (f32) {
    // The float64 reference runs on the values float32 holds, with the same output weights.
    TensorList narrow, exact;
    for (const Tensor& t : sample) {
      narrow.push_back(follows(t) ? t.to(DType::Float32) : t);
      exact.push_back(follows(t) ? narrow.back().to(DType::Float64) : t);
    }
    TensorList w64;
    const Run want = run_forward_backward(op, exact, w64, opt.seed);
    {
      NoGradGuard no_grad;  // the outputs' dtypes first: a backward would blame the gradient the check makes
      const TensorList outs = op.call(narrow);
      for (std::size_t k = 0; k < outs.size() && k < want.outputs.size(); ++k) {
        if (!outs[k].defined() || !want.outputs[k].defined() || !is_floating(want.outputs[k].dtype())) continue;
        if (outs[k].dtype() != DType::Float32)
          return fail(r, "output " + std::to_string(k) + " is " + outs[k].describe() +
                             " from float32 inputs: expected float32 (the inputs' dtype; float64 inputs give " +
                             want.outputs[k].describe() + "): make the output in the inputs' dtype");
      }
    }
    TensorList w32;
    for (const Tensor& w : w64) w32.push_back(floating_as(w, DType::Float32));
    const Run got = run_forward_backward(op, narrow, w32, opt.seed);
    const std::string d = first_run_difference(s, want, got, true, [](const std::string& what, const Tensor& a, const Tensor& b) {
      return agree_diff(what, a, b, DType::Float32, 1e-3);
    });
    if (!d.empty())
      return fail(r, "float32 against float64 (the same sample values, to 1e-3 of the largest): " + d +
                         ": is a float32 kernel or its backward (a dtype branch, a float32-only path) wrong, or "
                         "does the op lose float32's precision (accumulate in double)?");
    done = "float32 outputs and gradients within 1e-3 of float64's";
  }
  if (i64) {
    // Small integers (a floating sample times 4, rounded), as int64 and as float64.
    TensorList ints, whole;
    for (const Tensor& t : sample) {
      if (!follows(t)) {
        ints.push_back(t);
        whole.push_back(t);
        continue;
      }
      std::vector<double> v = t.to_vector();
      if (is_floating(t.dtype()))
        for (double& e : v) e = std::nearbyint(e * 4);
      whole.push_back(Tensor::from_values(v, t.shape(), DType::Float64));
      ints.push_back(Tensor::from_values(v, t.shape(), DType::Int64));
    }
    NoGradGuard no_grad;
    const TensorList want = op.call(whole);
    TensorList got;
    bool refused = false;
    try {
      got = op.call(ints);
    } catch (const DTypeError& e) {
      // With mixed dtypes the schema's int64 may be meant for another input (an index).
      if (s.same_dtype)
        return fail(r, std::string("the schema takes int64, but the call on int64 inputs threw: ") + e.what() +
                           ": handle int64 in forward, or leave it out of OpSchema::accepts");
      refused = true;
    } catch (const std::exception& e) {
      return fail(r, std::string("the call on int64 inputs threw: ") + e.what());
    }
    if (refused) {
      if (done.empty())
        return skip(r, "the op refused int64 for the inputs the sample has floating (its schema has mixed dtypes: "
                       "int64 is for another input), and takes no float32");
      pass(r, done + "; int64 not compared: the op refused it for the inputs the sample has floating (mixed dtypes)");
      return;
    }
    if (got.size() != want.size())
      return fail(r, "int64 inputs gave " + std::to_string(got.size()) + " outputs, float64 ones " +
                         std::to_string(want.size()));
    for (std::size_t k = 0; k < want.size(); ++k) {
      const std::string d = agree_diff("output " + std::to_string(k), want[k], got[k], DType::Int64, 0.0);
      if (!d.empty())
        return fail(r, "int64 against float64 (the same small integers): " + d +
                           ": does the int64 kernel compute what the float64 one does? (If the op's int64 results "
                           "differ from float64's by design, skip this check: CheckOptions::skip, "
                           "`opforge check --skip dtypes_agree`)");
    }
    done += std::string(done.empty() ? "" : "; ") + "int64 outputs equal to float64's on the same small integers";
  }
  pass(r, done);
}

void check_subset_grads(const OpHandle& op, const CheckOptions& opt, CheckResult& r) {
  const OpSchema& s = op.schema();
  const DType dtype = primary_dtype(s);
  const TensorList sample = harness_inputs(op, dtype, opt.seed);
  std::vector<std::size_t> floating;
  for (std::size_t i = 0; i < sample.size(); ++i)
    if (is_floating(sample[i].dtype())) floating.push_back(i);
  TensorList weights;
  const Run all = run_forward_backward(op, sample, weights, opt.seed);
  if (floating.size() < 2)  // holds by itself: there is no other input to leave out
    return pass(r, std::to_string(floating.size()) +
                       " floating input(s): every call that asks for a gradient asks for all of them");
  std::size_t checked = 0;
  for (std::size_t i : floating) {
    GradModeScope grad_on(true);
    TensorList xs = fresh_leaves(sample, false);
    xs[i].requires_grad_(true);
    const TensorList outs = op.call(xs);
    TensorList w;
    for (std::size_t k = 0; k < outs.size(); ++k)
      w.push_back(k < weights.size() && outs[k].requires_grad() ? weights[k] : Tensor());
    backward_weighted(outs, w);
    const std::string d = close_diff("the gradient of " + input_label(s, i), all.grads[i], xs[i].grad());
    if (!d.empty())
      return fail(r, std::string(dtype_name(dtype)) + ": with only " + input_label(s, i) + " requiring grad, " + d +
                         " (all inputs requiring grad vs this one alone): does backward compute this gradient from "
                         "something it skips when ctx.needs_input_grad() is false for another input?");
    ++checked;
  }
  pass(r, std::string(dtype_name(dtype)) + ": each of " + std::to_string(checked) +
              " floating inputs requiring grad alone got the gradient it gets when all do");
}

/// While alive, sdk::parallel_for cuts every range (detail::split_work).
struct SplitWorkScope {
  SplitWorkScope() { detail::split_work.fetch_add(1); }
  ~SplitWorkScope() { detail::split_work.fetch_sub(1); }
  SplitWorkScope(const SplitWorkScope&) = delete;
  SplitWorkScope& operator=(const SplitWorkScope&) = delete;
};

/// While alive, opforge runs `n` threads (set_num_threads), then the count it had.
struct ThreadCountScope {
  explicit ThreadCountScope(int n) : saved(num_threads()) { set_num_threads(n); }
  ~ThreadCountScope() { set_num_threads(saved); }
  ThreadCountScope(const ThreadCountScope&) = delete;
  ThreadCountScope& operator=(const ThreadCountScope&) = delete;
  int saved;
};

void check_split_work(const OpHandle& op, const CheckOptions& opt, CheckResult& r) {
  const OpSchema& s = op.schema();
  const DType dtype = primary_dtype(s);
  const std::string tag = dtype_name(dtype);
  const TensorList sample = harness_inputs(op, dtype, opt.seed);
  TensorList weights;
  const Run reference = run_forward_backward(op, sample, weights, opt.seed);
  {
    const std::string d = compare_runs(s, reference, run_forward_backward(op, sample, weights, opt.seed));
    if (!d.empty())
      return skip(r, std::string(kRunsDiffer) + " (" + d +
                         "), so split runs cannot be compared bit for bit; see deterministic");
  }
  // With 1 and 3 threads (an op that cuts its work by num_threads() itself),
  // then with every range cut.
  for (const int threads : {1, 3}) {
    Run other;
    {
      ThreadCountScope count(threads);
      other = run_forward_backward(op, sample, weights, opt.seed);
    }
    const std::string d = compare_runs(s, reference, other);
    if (!d.empty())
      return fail(r, tag + ": with opforge::set_num_threads(" +
                         std::to_string(threads) + ") instead of " + std::to_string(num_threads()) + ", " + d +
                         " (before vs after): the results depend on the thread count. Cut the work by the shape "
                         "alone, never by num_threads() (sdk::parallel_for over fixed chunks, "
                         "sdk::deterministic_sum)");
  }
  Run split;
  {
    SplitWorkScope scope;
    split = run_forward_backward(op, sample, weights, opt.seed);
  }
  const std::string d = compare_runs(s, reference, split);
  if (!d.empty()) {
    const bool close = compare_close(s, reference, split, true).empty();
    return fail(r, tag + ": with every sdk::parallel_for range cut into "
                   "pieces of unequal sizes, run last to first (as threads may), " + d + " (whole vs cut): " +
                   (close ? "the results depend on where the work is cut, by rounding: with more threads or "
                            "another machine they change. Fix the order of additions by the shape alone "
                            "(sdk::deterministic_sum, or partial sums over fixed chunks added in order)"
                          : "the body of a parallel_for assumes its range starts at the beginning, or that the "
                            "pieces run in order: index with the range's own [begin, end), and keep per-piece "
                            "results apart") +
                   "; with the samples small, a range runs in one piece unless split, so this shows only here");
  }
  pass(r, tag + ": with 1 and 3 threads, and with every parallel_for range cut into unequal pieces run last to "
              "first, outputs and gradients bit-identical");
}

using CheckFn = void (*)(const OpHandle&, const CheckOptions&, CheckResult&);

CheckResult run_check(const OpHandle& op, const CheckOptions& opt, const std::string& name, CheckFn fn) {
  CheckResult r;
  r.op = op.name();
  r.check = name;
  try {
    fn(op, opt, r);
  } catch (const std::exception& e) {
    fail(r, std::string("exception: ") + e.what());
  } catch (...) {
    fail(r, "exception of a type not derived from std::exception");
  }
  return r;
}

}  // namespace

// ---- public API ----------------------------------------------------------------------

TensorList harness_inputs(const OpHandle& op, DType dtype, std::uint64_t seed, std::string* note) {
  OPFORGE_CHECK(op.valid(), ValueError, "sdk::harness_inputs: the op handle is empty");
  const OpSchema& s = op.schema();
  if (note) note->clear();
  TensorList xs;
  if (!s.sample_inputs) {
    if (note)
      *note = "the schema has no sample inputs (OpSchema::samples), so every input was randn of shape [3, 4]";
    for (std::size_t i = 0; i < s.inputs.size(); ++i) {
      Tensor t = Tensor::randn(Dims{3, 4}, is_floating(dtype) ? dtype : DType::Float64, seed + i);
      xs.push_back(is_floating(dtype) ? t : t.to(dtype));
    }
    return xs;
  }
  xs = s.sample_inputs(dtype, seed);  // a throw comes back as an opforge::Error naming the op
  const bool count_ok = s.variadic ? xs.size() >= s.inputs.size() && xs.size() <= kMaxOpInputs : xs.size() == s.inputs.size();
  OPFORGE_CHECK(count_ok, ValueError, s.name, ": sample_inputs(", dtype_name(dtype), ") returned ", xs.size(),
                " tensor(s), expected ", s.variadic ? "at least " : "", s.inputs.size(), " (one per input: ",
                input_list(s), s.variadic ? ", ..." : "", ")");
  for (std::size_t i = 0; i < xs.size(); ++i) {
    OPFORGE_CHECK(xs[i].defined(), ValueError, s.name, ": sample_inputs(", dtype_name(dtype), ") returned an undefined tensor for ",
                  input_label(s, i));
    OPFORGE_CHECK(!s.same_dtype || !is_floating(xs[i].dtype()) || xs[i].dtype() == dtype, DTypeError, s.name,
                  ": sample_inputs(", dtype_name(dtype), ") returned ", input_label(s, i), " as ", xs[i].describe(),
                  "; expected dtype ", dtype_name(dtype));
  }
  return xs;
}

CheckReport check_op(const OpHandle& op, const CheckOptions& options) {
  OPFORGE_CHECK(op.valid(), ValueError, "sdk::check_op: the op handle is empty");
  for (const std::string& name : options.skip) {
    const auto& all = check_names();
    if (std::find(all.begin(), all.end(), name) != all.end()) continue;
    std::string known;
    for (const std::string& c : all) known += (known.empty() ? "" : ", ") + c;
    throw ValueError("sdk::check_op: CheckOptions::skip names no check: '" + name + "' (the checks: " + known + ")");
  }
  static const CheckFn fns[] = {check_gradcheck,         check_backward_contract, check_strided_grads,
                                check_strided_inputs,    check_subset_grads,      check_dtypes_agree,
                                check_inputs_unchanged,  check_no_grad_records_nothing, check_deterministic,
                                check_split_work,        check_interleaved_calls, check_thread_safe};
  const auto& names = check_names();
  static_assert(sizeof fns / sizeof fns[0] == 12, "one function per name in check_names()");
  // The schema's sample attributes travel with every call the checks make,
  // under those the handle binds itself (which win, one by one).
  const auto& sample_attrs = op.schema().sample_attributes;
  CheckReport report;
  OpHandle bound = op;
  if (!sample_attrs.empty()) {
    try {
      bound = OpHandle(boost::intrusive_ptr<OpEntry>(op.entry())).bind(sample_attrs);
      const std::vector<Attr> own = op.bound_attrs();
      std::vector<std::pair<std::string, Attr>> named;
      for (std::size_t i = 0; i < own.size() && i < op.schema().attrs.size(); ++i)
        if (own[i].is_set()) named.emplace_back(op.schema().attrs[i].name, own[i]);
      if (!named.empty()) bound = bound.bind(named);
    } catch (const std::exception& e) {
      // Every check would call the op with them: each fails, saying why.
      for (const std::string& name : names) {
        CheckResult r;
        r.op = op.name();
        r.check = name;
        fail(r, std::string("the schema's sample attributes (OpSchema::sample_attrs) cannot be bound: ") + e.what());
        report.push_back(std::move(r));
      }
      return report;
    }
  }
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (std::find(options.skip.begin(), options.skip.end(), names[i]) != options.skip.end()) {
      CheckResult r;
      r.op = op.name();
      r.check = names[i];
      skip(r, "skipped on request (CheckOptions::skip, opforge check --skip)");
      report.push_back(std::move(r));
      if (options.on_result) options.on_result(report.back());
      continue;
    }
    if (options.on_check) options.on_check(op.name(), names[i]);
    report.push_back(run_check(bound, options, names[i], fns[i]));
    CheckResult& last = report.back();
    // A later check's own two runs differed where deterministic's two agreed
    // (nondeterminism that shows now and then): deterministic fails, saying so.
    if (last.skipped && last.detail.find(kRunsDiffer) != std::string::npos) {
      for (CheckResult& d : report)
        if (d.check == "deterministic" && d.passed && !d.skipped)
          fail(d, "its two runs agreed, but the two runs " + last.check + " made first did not: " + last.detail);
    }
    if (options.on_result) options.on_result(last);
  }
  return report;
}

bool all_passed(const CheckReport& report) {
  for (const CheckResult& r : report)
    if (!r.passed) return false;
  return true;
}

std::string format_result(const CheckResult& r) {
  if (r.skipped) return "SKIP " + r.op + " " + r.check + (r.detail.empty() ? "" : ": " + r.detail);
  if (r.passed) return "PASS " + r.op + " " + r.check + (r.detail.empty() ? "" : " (" + r.detail + ")");
  return "FAIL " + r.op + " " + r.check + (r.detail.empty() ? "" : ": " + r.detail);
}

}  // namespace opforge::sdk
