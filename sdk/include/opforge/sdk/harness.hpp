// The test harness for op authors: the checks every op should pass, run on one op
// and reported one line per check. `opforge check PLUGIN.so` runs them from the
// command line; a Catch2 test in a plugin's own repository calls check_op():
//
//   for (const auto& r : opforge::sdk::check_op(opforge::op("myops.scale"))) {
//     INFO(opforge::sdk::format_result(r));
//     CHECK(r.passed);
//   }
//
// The checks (check_names(), in the order they run):
//   gradcheck               backward agrees with finite differences (sdk::gradcheck, float64)
//   backward_contract       a backward on the recorded graph runs and passes the
//                           engine's checks (count, shape, dtype), float64 and float32
//   strided_grads           backward gives the same input gradients when the output
//                           gradients arrive strided or broadcast (stride 0) as when
//                           they arrive contiguous
//   strided_inputs          forward and backward give the same outputs and input
//                           gradients when the inputs are strided views (same values)
//   subset_grads            with only one input requiring grad, it gets the gradient
//                           it gets when every input does (each floating input in turn)
//   dtypes_agree            float32 outputs and gradients within 1e-3 of float64's on
//                           the same values; int64 outputs equal to float64's on the
//                           same small integers (for each dtype the schema takes)
//   inputs_unchanged        forward (and backward) leave the inputs bit-identical
//   no_grad_records_nothing under NoGradGuard the outputs have no grad_fn and do not require grad
//   deterministic           two forward+backward runs give bit-identical outputs and gradients
//   split_work              the same bits when every sdk::parallel_for range is cut into
//                           unequal pieces run last to first (small samples otherwise
//                           run in one piece, hiding a body that assumes it starts at 0)
//   interleaved_calls       two calls on different inputs, both forwards before either
//                           backward, give each call's own results, bit for bit, in
//                           outputs that share no buffer
//   thread_safe             the op called from several threads at once, on one shared
//                           copy of the inputs, gives the single-thread results, bit for bit
//
// Inputs come from the schema's sample provider (OpSchema::samples); an op without
// one gets randn of shape [3, 4] for every input, and gradcheck's detail says so.
// An exception inside a check fails that check with the exception's message; the
// other checks still run.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "opforge/export.hpp"
#include "opforge/op.hpp"
#include "opforge/sdk/gradcheck.hpp"

namespace opforge::sdk {

/// The checks check_op runs, in order.
inline const std::vector<std::string>& check_names() {
  static const std::vector<std::string> names = {
      "gradcheck",        "backward_contract", "strided_grads",           "strided_inputs",
      "subset_grads",     "dtypes_agree",      "inputs_unchanged",        "no_grad_records_nothing",
      "deterministic",    "split_work",        "interleaved_calls",       "thread_safe"};
  return names;
}

/// The outcome of one check on one op.
struct CheckResult {
  std::string op;        ///< qualified op name: "loss.lstsq"
  std::string check;     ///< one of check_names()
  bool passed = false;   ///< true also when skipped: a skipped check found nothing wrong
  bool skipped = false;  ///< the check does not apply to this op (detail says why)
  std::string detail;    ///< what was checked, or what went wrong: element, values, message
};

using CheckReport = std::vector<CheckResult>;

struct CheckOptions {
  std::uint64_t seed = 0;        ///< passed to the schema's sample provider (and to randn without one)
  GradcheckOptions gradcheck{};  ///< tolerances of the gradcheck check
  int threads = 4;               ///< thread_safe: threads calling the op at once
  int calls_per_thread = 50;     ///< thread_safe: forward+backward calls per thread
  /// Checks not to run, by name (each reported as skipped, "on request"); a name
  /// that is no check makes check_op throw ValueError listing the checks.
  std::vector<std::string> skip;
  /// Called just before each check runs (op name, check name): a program can say
  /// which check was running if the op crashes the process.
  std::function<void(const std::string& op, const std::string& check)> on_check;
  /// Called with each result as soon as its check has run (a program can print
  /// it before the next check, which may crash). A later check can still turn
  /// `deterministic` from passed to failed in the report check_op returns.
  std::function<void(const CheckResult& result)> on_result;
};

/// Runs every check on `op`; one result per check, in check_names() order.
/// Never throws for a misbehaving op: every failure is a result.
OPFORGE_API CheckReport check_op(const OpHandle& op, const CheckOptions& options = {});

/// True when no check of the report failed (skipped checks do not fail).
OPFORGE_API bool all_passed(const CheckReport& report);

/// One line for people: "PASS loss.lstsq gradcheck (49 elements, max |diff| 3.1e-10)",
/// "FAIL shady.noisy deterministic: output 0 element 3 differs: 1.0000001 vs 1.0000002",
/// "SKIP ops.x thread_safe: ...".
OPFORGE_API std::string format_result(const CheckResult& result);

/// The inputs the harness runs `op` on: the schema's sample provider, checked
/// (one defined tensor per input), or randn [3, 4] per input when the schema has
/// none. `note` (if given) is set to "" or to a sentence saying the fallback was used.
/// Throws opforge::Error naming the op when the provider throws or returns a bad list.
OPFORGE_API TensorList harness_inputs(const OpHandle& op, DType dtype, std::uint64_t seed,
                                      std::string* note = nullptr);

}  // namespace opforge::sdk
