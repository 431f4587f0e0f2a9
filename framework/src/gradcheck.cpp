#include "opforge/sdk/gradcheck.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

#include "opforge/sdk/grad_mode.hpp"
#include "opforge/autograd.hpp"
#include "opforge/error.hpp"

namespace opforge::sdk {
namespace {

// Σ_k <w_k, out_k>; an empty w_k (an integer output: indices) is skipped.
double weighted_sum(const TensorList& outs, const std::vector<std::vector<double>>& weights) {
  double s = 0;
  for (std::size_t k = 0; k < outs.size(); ++k) {
    if (weights[k].empty()) continue;
    const std::vector<double> o = outs[k].to_vector();
    for (std::size_t j = 0; j < o.size() && j < weights[k].size(); ++j) s += o[j] * weights[k][j];
  }
  return s;
}

// Element j of a floating tensor (float32 or float64), read and written as double.
double get(const Tensor& t, std::int64_t j) {
  return t.dtype() == DType::Float32 ? static_cast<double>(t.data<float>()[j]) : t.data<double>()[j];
}
void set(Tensor& t, std::int64_t j, double v) {
  if (t.dtype() == DType::Float32)
    t.data<float>()[j] = static_cast<float>(v);
  else
    t.data<double>()[j] = v;
}

/// A value for a message: "nan" whatever its sign bit (a stream writes "-nan" for some).
std::string show(double v) {
  if (std::isnan(v)) return "nan";
  std::ostringstream os;
  os.precision(10);
  os << v;
  return os.str();
}

std::string input_name(const OpHandle& op, std::size_t i) {
  const auto& names = op.schema().inputs;
  return "input " + std::to_string(i) + (i < names.size() ? " '" + names[i] + "'" : std::string());
}

}  // namespace

GradcheckResult gradcheck(const OpHandle& op, TensorSpan inputs, const GradcheckOptions& opt) {
  GradcheckResult res;
  // float64, unless the op takes float32 and not float64.
  const DTypeSet& accepted = op.schema().dtypes;
  const DType work =
      !accepted.contains(DType::Float64) && accepted.contains(DType::Float32) ? DType::Float32 : DType::Float64;
  const double eps = work == DType::Float64 ? opt.eps : opt.eps_float32;
  const double atol = work == DType::Float64 ? opt.atol : opt.atol_float32;
  const double rtol = work == DType::Float64 ? opt.rtol : opt.rtol_float32;
  // The inputs left out (GradcheckOptions::skip_inputs), by position.
  const std::vector<std::string>& names = op.schema().inputs;
  std::vector<bool> skipped(inputs.size(), false);
  std::string skipped_text;
  for (const std::string& name : opt.skip_inputs) {
    const auto at = std::find(names.begin(), names.end(), name);
    if (at == names.end()) {
      std::string all;
      for (const std::string& n : names) all += (all.empty() ? "" : ", ") + n;
      throw ValueError("gradcheck: GradcheckOptions::skip_inputs: '" + op.name() + "' has no input named '" + name +
                       "' (its inputs: " + (all.empty() ? "none" : all) + ")");
    }
    const auto i = static_cast<std::size_t>(at - names.begin());
    if (i < skipped.size() && !skipped[i]) {
      skipped[i] = true;
      skipped_text += (skipped_text.empty() ? "" : ", ") + input_name(op, i);
    }
  }
  // Leaves of that dtype: fresh copies, so the caller's tensors are never touched.
  TensorList xs;
  std::string converted;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& in = inputs[i];
    if (in.dtype() == DType::Float32 && work == DType::Float64)
      converted += (converted.empty() ? "" : ", ") + std::to_string(i);
    Tensor x = is_floating(in.dtype()) ? in.detach().to(work).clone() : in.detach().clone();
    if (is_floating(x.dtype()) && !skipped[i]) x.requires_grad_(true);
    xs.push_back(std::move(x));
  }
  if (work == DType::Float32) {
    std::ostringstream os;
    os << "checked in float32, the only floating dtype the op takes (eps " << eps << ", atol " << atol << ", rtol "
       << rtol << "): looser than a float64 check";
    res.note = os.str();
  }
  if (!converted.empty())
    res.note += (res.note.empty() ? "" : "; ") + std::string("inputs ") + converted + " promoted from float32 to " +
                "float64 for the check";
  if (!skipped_text.empty())
    res.note += (res.note.empty() ? "" : "; ") + skipped_text + " not checked (GradcheckOptions::skip_inputs)";

  // The inputs' values before any call: finite differences perturb one element
  // at a time and assume the op leaves the rest as they were.
  std::vector<std::vector<double>> before;
  for (const Tensor& x : xs) before.push_back(is_floating(x.dtype()) ? x.to_vector() : std::vector<double>());
  // Analytic: backward with random output weights, recorded whatever the
  // caller's grad mode (under a NoGradGuard nothing would be, and every
  // gradient would read as 0).
  TensorList outs;
  {
    GradModeScope grad_on(true);
    outs = op.call(xs);
  }
  // An op that writes into an input changes it on every call, and the
  // difference quotients below then measure that drift, not the derivative:
  // a failure says so rather than blame the op's domain.
  std::string changed;
  for (std::size_t i = 0; i < xs.size() && changed.empty(); ++i) {
    if (!is_floating(xs[i].dtype())) continue;
    const std::vector<double> after = xs[i].to_vector();
    for (std::size_t j = 0; j < after.size(); ++j) {
      if (std::memcmp(&after[j], &before[i][j], sizeof(double)) == 0) continue;
      changed = input_name(op, i) + " (element " + std::to_string(j) + ": " + show(before[i][j]) + " -> " +
                show(after[j]) + ")";
      break;
    }
  }
  TensorList weights;
  std::vector<std::vector<double>> wvals;  // the weights' values, for the finite differences
  for (std::size_t k = 0; k < outs.size(); ++k) {
    if (!is_floating(outs[k].dtype())) {
      weights.push_back(Tensor());  // indices, masks: no gradient flows through them
      wvals.emplace_back();
      continue;
    }
    OPFORGE_CHECK(outs[k].dtype() == work, DTypeError, "gradcheck: ", op.name(), ": output ", k, " is ",
                  dtype_name(outs[k].dtype()), " for ", dtype_name(work), " inputs; expected ", dtype_name(work));
    weights.push_back(Tensor::randn(outs[k].shape(), work, opt.seed + k));
    wvals.push_back(weights.back().to_vector());
  }
  // backward gets copies: one that writes into its incoming gradient must not
  // change what the finite differences weigh the outputs with.
  TensorList diff_outs, diff_weights;
  std::vector<std::size_t> diff_index;
  for (std::size_t k = 0; k < outs.size(); ++k) {
    if (!weights[k].defined() || !outs[k].requires_grad()) continue;
    diff_outs.push_back(outs[k]);
    diff_weights.push_back(weights[k].detach().clone());
    diff_index.push_back(k);
  }
  if (!diff_outs.empty()) backward(diff_outs, diff_weights);
  for (std::size_t d = 0; d < diff_weights.size(); ++d) {
    const std::vector<double> after = diff_weights[d].to_vector();
    const std::vector<double>& want = wvals[diff_index[d]];
    for (std::size_t j = 0; j < after.size(); ++j) {
      if (std::memcmp(&after[j], &want[j], sizeof(double)) == 0) continue;
      res.message = "gradcheck failed for '" + op.name() + "': backward wrote into the incoming gradient of output " +
                    std::to_string(diff_index[d]) + " (element " + std::to_string(j) + ": " + show(want[j]) +
                    " -> " + show(after[j]) +
                    "); the gradients backward receives are read-only (the engine may pass them on to other nodes): "
                    "compute into a new tensor (g * 5.0, not g.mul_(5.0))";
      return res;
    }
  }

  // A non-finite output at the sample makes every difference quotient NaN, and
  // NaN compares false with any tolerance: say so instead of passing.
  for (std::size_t k = 0; k < outs.size(); ++k) {
    if (!weights[k].defined()) continue;
    const std::vector<double> o = outs[k].to_vector();
    for (std::size_t j = 0; j < o.size(); ++j) {
      if (std::isfinite(o[j])) continue;
      std::ostringstream os;
      os.precision(10);
      os << "gradcheck failed for '" << op.name() << "': output " << k << " of shape " << outs[k].shape()
         << ", element " << j << ", is " << show(o[j])
         << " at the sample inputs, so no derivative can be checked; give the op sample inputs inside its domain "
            "(OpSchema::samples)";
      res.message = os.str();
      res.max_abs_error = std::numeric_limits<double>::quiet_NaN();
      return res;
    }
  }

  // Numeric: central differences of the same weighted sum, element by element.
  NoGradGuard no_grad;
  double worst_excess = 0;
  bool non_finite = false;  // a NaN or infinite derivative: reported before any mere excess
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (!is_floating(xs[i].dtype()) || skipped[i]) continue;
    Tensor& x = xs[i];
    const Tensor g = x.grad();
    for (std::int64_t j = 0; j < x.numel(); ++j) {
      const double orig = get(x, j);
      set(x, j, orig + eps);
      const double up = get(x, j);  // as stored (float32 rounds the step)
      const double fp = weighted_sum(op.call(xs), wvals);
      set(x, j, orig - eps);
      const double down = get(x, j);
      const double fm = weighted_sum(op.call(xs), wvals);
      set(x, j, orig);
      const double numeric = (fp - fm) / (up - down);
      const double analytic = g.defined() ? get(g, j) : 0.0;
      const double err = std::abs(analytic - numeric);
      const double tol = atol + rtol * std::abs(numeric);
      if (!(res.max_abs_error >= err)) res.max_abs_error = err;  // NaN stays NaN
      ++res.elements_checked;
      if (!std::isfinite(analytic) || !std::isfinite(numeric)) {
        if (non_finite) continue;  // the first one is reported
        non_finite = true;
        std::ostringstream os;
        os.precision(10);
        os << "gradcheck failed for '" << op.name() << "': " << input_name(op, i) << " of shape "
           << xs[i].shape() << ", element " << j << ": analytic " << show(analytic) << ", numeric " << show(numeric)
           << " ("
           << (!std::isfinite(analytic) ? "the backward returned a non-finite gradient"
               : changed.empty()        ? "the forward is not finite at x +/- eps; is the input at the edge of "
                                          "the op's domain?"
                                        : "the forward is not finite at x +/- eps")
           << ")";
        res.message = os.str();
        continue;
      }
      if (non_finite) continue;
      if (err > tol && err - tol > worst_excess) {
        worst_excess = err - tol;
        std::ostringstream os;
        os.precision(10);
        os << "gradcheck failed for '" << op.name() << "': " << input_name(op, i) << " of shape "
           << xs[i].shape() << ", element " << j << ": analytic " << analytic << ", numeric " << numeric
           << " (|diff| " << err << " > atol " << atol << " + rtol " << rtol << " * |numeric|)";
        if (!g.defined()) os << "; backward returned no gradient for this input";
        res.message = os.str();
      }
    }
  }
  res.ok = !non_finite && worst_excess == 0;
  if (!res.ok && !changed.empty())
    res.message += "; the forward changed " + changed +
                   " during the call, and finite differences assume the inputs stay as they are: an op must not "
                   "write into its inputs (return a new tensor)";
  if (res.ok) {
    res.message = "gradcheck passed for '" + op.name() + "': " + std::to_string(res.elements_checked) +
                  " elements, max |diff| " + std::to_string(res.max_abs_error);
  }
  return res;
}

}  // namespace opforge::sdk
