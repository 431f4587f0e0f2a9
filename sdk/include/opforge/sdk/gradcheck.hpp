// gradcheck: compares an op's analytic gradients (its backward, run by the engine)
// with central finite differences, in float64 (float32 for an op that takes only that).
//
// Each output k gets a fixed random weight tensor w_k; the checked scalar is
// s = sum_k <w_k, out_k>. Its gradient with respect to every element of every
// floating input is computed both ways and compared element by element:
// |analytic - numeric| <= atol + rtol * |numeric|.
// float32 inputs are promoted to float64 first, and the result says so. An op
// whose schema takes float32 but not float64 is checked in float32, with the
// looser eps_float32, atol_float32 and rtol_float32 (the note says so): a loose
// check beats none (a backward off by a factor fails it).
// backward gets copies of the weights: one that writes into its incoming
// gradient fails with a message saying so (the finite differences keep using
// the weights as they were).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "opforge/export.hpp"
#include "opforge/op.hpp"

namespace opforge::sdk {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-5;
  double rtol = 1e-3;
  std::uint64_t seed = 1;  ///< seed of the output weights
  // For an op that takes float32 and not float64 (checked in float32).
  double eps_float32 = 1e-2;
  double atol_float32 = 1e-2;
  double rtol_float32 = 1e-2;
  /// Inputs not to check, by name (as the schema names them): not perturbed, and
  /// not requiring grad in the analytic run (backward sees needs_input_grad()
  /// false for them), as an input with requires_grad=False in PyTorch's
  /// gradcheck. For an input whose gradient is a deliberate surrogate (a
  /// straight-through estimator) or left out on purpose. A name the op's schema
  /// does not have is a ValueError.
  std::vector<std::string> skip_inputs;
};

struct GradcheckResult {
  bool ok = false;
  std::string message;        ///< on failure: op, input, worst element, both values
  std::string note;           ///< e.g. "inputs 0, 1 promoted from float32 to float64"
  double max_abs_error = 0;   ///< largest |analytic - numeric| seen
  std::int64_t elements_checked = 0;
};

/// Runs the op as it is: an exception it throws (a refused input, a bug) comes out
/// of gradcheck as thrown (check_op reports it as the check's failure instead).
OPFORGE_API GradcheckResult gradcheck(const OpHandle& op, TensorSpan inputs, const GradcheckOptions& options = {});

}  // namespace opforge::sdk
