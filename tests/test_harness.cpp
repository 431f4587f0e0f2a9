// The op test harness (opforge::sdk::check_op and `opforge check`):
//   - every op of the standard plugins passes every check, on its own sample inputs;
//   - each op of tests/harness_fixtures' "shady" plugin fails exactly the check it
//     breaks, with a detail that says where and by how much;
//   - an exception inside a check fails that check only, a broken sample provider
//     is reported, an op without one falls back to randn [3, 4] and says so;
//   - `opforge check` exits 1 on the shady plugin and 0 on the standard loss.so.
//
// Every test case works alone (ctest runs each in its own process) and with all
// the others in one process (the shady plugin is loaded once, on first use).
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <array>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <opforge/opforge.hpp>
#include <opforge/sdk/harness.hpp>

#include "temp_dir.hpp"
#include "op_checks.hpp"

#ifndef OPFORGE_SHADY_PLUGIN
#error "OPFORGE_SHADY_PLUGIN (the path of tests/harness_fixtures' shady.so) must be defined"
#endif
#ifndef OPFORGE_LOSS_PLUGIN
#error "OPFORGE_LOSS_PLUGIN (the path of the standard loss.so) must be defined"
#endif
#ifndef OPFORGE_CLI
#error "OPFORGE_CLI (the path of the opforge program) must be defined"
#endif

namespace {

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using opforge::Dims;
using opforge::DType;
using opforge::OpHandle;
using opforge::OpSchema;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
namespace sdk = opforge::sdk;

// ---- helpers ----------------------------------------------------------------------

const opforge::PluginInfo* find_plugin(const std::vector<opforge::PluginInfo>& plugins, const std::string& name) {
  const auto it = std::find_if(plugins.begin(), plugins.end(), [&](const auto& p) { return p.name == name; });
  return it == plugins.end() ? nullptr : &*it;
}

// The shady plugin's ops, loading it on first use.
std::vector<std::string> shady_ops() {
  const auto plugins = opforge::loaded_plugins();
  if (const auto* p = find_plugin(plugins, "shady")) return p->ops;
  return opforge::load_plugin(OPFORGE_SHADY_PLUGIN).ops;
}

const sdk::CheckResult& result_of(const sdk::CheckReport& report, const std::string& check) {
  const auto it = std::find_if(report.begin(), report.end(), [&](const auto& r) { return r.check == check; });
  if (it == report.end()) throw std::logic_error("the report has no check named '" + check + "'");
  return *it;
}

std::set<std::string> failed_checks(const sdk::CheckReport& report) {
  std::set<std::string> out;
  for (const auto& r : report)
    if (!r.passed) out.insert(r.check);
  return out;
}

std::string report_text(const sdk::CheckReport& report) {
  std::string s;
  for (const auto& r : report) s += sdk::format_result(r) + "\n";
  return s;
}

// The report has one result per check, in check_names() order, all for `op`.
void require_complete(const sdk::CheckReport& report, const std::string& op) {
  const auto& names = sdk::check_names();
  REQUIRE(report.size() == names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    CHECK(report[i].check == names[i]);
    CHECK(report[i].op == op);
  }
}

// Runs a shell command; its exit status (-1 if it did not exit) and its output.
struct RunResult {
  int status = -1;
  std::string output;
  std::vector<std::string> lines() const {
    std::vector<std::string> v;
    std::istringstream in(output);
    for (std::string line; std::getline(in, line);) v.push_back(line);
    return v;
  }
};
RunResult run_command(const std::string& command, bool with_stderr = true) {
  RunResult r;
  FILE* pipe = ::popen((command + (with_stderr ? " 2>&1" : " 2>/dev/null")).c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int wstatus = ::pclose(pipe);
  if (wstatus != -1 && WIFEXITED(wstatus)) r.status = WEXITSTATUS(wstatus);
  return r;
}
std::string opforge_check(const std::string& args) { return "'" OPFORGE_CLI "' check " + args; }

// ---- ops made in this file (make_op) --------------------------------------------------

// y = 3 x: a correct op.
class Scale final : public opforge::Function {
 public:
  TensorList forward(opforge::Context&, TensorSpan in) const override {
    Tensor y = in[0].clone();
    std::vector<double> v = y.to_vector();
    for (double& e : v) e *= 3;
    return {Tensor::from_values(v, y.shape(), y.dtype())};
  }
  TensorList backward(opforge::Context&, TensorSpan g) const override {
    std::vector<double> v = g[0].to_vector();
    for (double& e : v) e *= 3;
    return {Tensor::from_values(v, g[0].shape(), g[0].dtype())};
  }
};

// y = 3 x with a backward `factor` times too large (Scale with a bug).
template <int kFactor>
class ScaleWrongGrad final : public opforge::Function {
 public:
  TensorList forward(opforge::Context&, TensorSpan in) const override {
    std::vector<double> v = in[0].to_vector();
    for (double& e : v) e *= 3;
    return {Tensor::from_values(v, in[0].shape(), in[0].dtype())};
  }
  TensorList backward(opforge::Context&, TensorSpan g) const override {
    std::vector<double> v = g[0].to_vector();
    for (double& e : v) e *= 3 * kFactor;
    return {Tensor::from_values(v, g[0].shape(), g[0].dtype())};
  }
};

// y = x, whose backward scales its incoming gradient in place and returns it
// (the gradient 5 g where g is right).
class MutatesItsGrad final : public opforge::Function {
 public:
  TensorList forward(opforge::Context&, TensorSpan in) const override { return {in[0].clone()}; }
  TensorList backward(opforge::Context&, TensorSpan g) const override {
    Tensor t = g[0];
    t.mul_(5.0);
    return {t};
  }
};

// y = a + b, whose backward throws.
class BackwardThrows final : public opforge::Function {
 public:
  TensorList forward(opforge::Context&, TensorSpan in) const override {
    std::vector<double> a = in[0].to_vector();
    const std::vector<double> b = in[1].to_vector();
    for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i];
    return {Tensor::from_values(a, in[0].shape(), in[0].dtype())};
  }
  TensorList backward(opforge::Context&, TensorSpan) const override {
    throw std::runtime_error("backward exploded");
  }
};

// Forward throws.
class ForwardThrows final : public opforge::Function {
 public:
  TensorList forward(opforge::Context&, TensorSpan) const override { throw std::runtime_error("forward exploded"); }
  TensorList backward(opforge::Context&, TensorSpan g) const override { return {g[0]}; }
};

// A sample provider that returns one tensor for a two-input op.
TensorList one_tensor_samples(DType dtype, std::uint64_t seed) { return {Tensor::randn({2, 2}, dtype, seed)}; }
// A sample provider that throws.
TensorList throwing_samples(DType, std::uint64_t) { throw std::runtime_error("no samples today"); }
// x [6] in the dtype asked for.
TensorList vector_samples(DType dtype, std::uint64_t seed) { return {Tensor::randn({6}, dtype, seed)}; }

}  // namespace

// ---- the standard plugins -------------------------------------------------------------

TEST_CASE("harness: every op of the standard plugins passes every check") {
  const auto plugins = opforge::loaded_plugins();
  std::size_t checked = 0;
  std::size_t expected = 0;
  for (const std::string plugin : {"elementwise", "reduce", "linalg", "loss", "shape"}) {
    const opforge::PluginInfo* info = find_plugin(plugins, plugin);
    INFO("plugin " << plugin);
    if (plugin == "shape" && info == nullptr) continue;  // the shape family is newer than this test
    REQUIRE(info != nullptr);
    expected += info->ops.size();
    REQUIRE_FALSE(info->ops.empty());
    for (const std::string& name : info->ops) {
      const OpHandle op = opforge::op(name);
      INFO("op " << name);
      CHECK(op.schema().sample_inputs != nullptr);  // every standard op provides its inputs
      const sdk::CheckReport report = sdk::check_op(op);
      require_complete(report, name);
      // Comparisons have no floating output: nothing to differentiate, so their
      // gradcheck and backward_contract are skipped (and only those).
      const bool differentiable = !op.schema().dtypes.contains(opforge::DType::Int64) ||
                                  !result_of(report, "gradcheck").skipped;
      for (const auto& r : report) {
        INFO(sdk::format_result(r));
        CHECK(r.passed);
        const bool may_skip = !differentiable && (r.check == "gradcheck" || r.check == "backward_contract" ||
                                                  r.check == "strided_grads");
        if (!may_skip && !opforge_tests::skipped_for_want_of_inputs(r)) CHECK_FALSE(r.skipped);
        CHECK_FALSE(r.detail.empty());
      }
      CHECK(sdk::all_passed(report));
      CHECK_THAT(result_of(report, "gradcheck").detail, !Contains("randn"));
      if (differentiable)
        CHECK_THAT(result_of(report, "backward_contract").detail, StartsWith("float64, float32: "));
      CHECK_THAT(result_of(report, "thread_safe").detail, StartsWith("4 threads x 50"));
      ++checked;
    }
  }
  CHECK(checked == expected);
  CHECK(checked >= 8);  // at least add, sub, mul, square, sum, mv, matmul, lstsq
}

TEST_CASE("harness: the standard ops' sample inputs have their documented shapes, in the dtype asked for") {
  const std::map<std::string, std::vector<Dims>> shapes = {
      {"elementwise.add", {{4, 5}, {5}}}, {"elementwise.sub", {{4, 5}, {5}}},
      {"elementwise.mul", {{4, 5}, {5}}}, {"elementwise.square", {{4, 5}}},
      {"reduce.sum", {{4, 5}}},              {"linalg.mv", {{5, 3}, {3}}},
      {"linalg.matmul", {{4, 3}, {3, 5}}},   {"loss.lstsq", {{9, 4}, {4}, {9}}},
  };
  for (const auto& [name, want] : shapes) {
    INFO("op " << name);
    const OpHandle op = opforge::op(name);
    for (DType dtype : {DType::Float64, DType::Float32}) {
      std::string note = "unset";
      const TensorList xs = sdk::harness_inputs(op, dtype, 7, &note);
      CHECK(note.empty());
      REQUIRE(xs.size() == want.size());
      for (std::size_t i = 0; i < xs.size(); ++i) {
        CHECK(xs[i].shape() == want[i]);
        CHECK(xs[i].dtype() == dtype);
      }
      // Same seed: same values. Another seed: other values.
      const TensorList again = sdk::harness_inputs(op, dtype, 7);
      const TensorList other = sdk::harness_inputs(op, dtype, 8);
      CHECK(again[0].to_vector() == xs[0].to_vector());
      CHECK(other[0].to_vector() != xs[0].to_vector());
    }
  }
}

// ---- the shady plugin: one broken check per op -------------------------------------------

TEST_CASE("harness: each shady op fails exactly the check it breaks, with a useful detail") {
  struct Expected {
    std::string check;
    std::vector<std::string> detail_has;
  };
  const std::map<std::string, Expected> expected = {
      {"shady.wrong_grad",
       {"gradcheck",
        {"gradcheck failed for 'shady.wrong_grad': input 0 'x' of shape [3, 4], element ", ": analytic ", ", numeric ",
         "(|diff| ", "the schema has no sample inputs (OpSchema::samples), so every input was randn of shape [3, 4]"}}},
      {"shady.float64_grad",
       {"backward_contract",
        {"float32: in backward of 'shady.float64_grad': the gradient for input 0 'x' has dtype float64, expected "
         "float32 (the input's dtype)"}}},
      {"shady.clobbers_input",
       {"inputs_unchanged", {"input 1 'work' element 0 changed during forward (no graph recorded): ", " -> "}}},
      {"shady.noisy", {"deterministic", {"output 0 element 0 differs: ", " vs "}}},
      {"shady.shared_buffer",
       {"thread_safe", {"thread ", ", call ", " differs: ", " vs ", "(single-thread result vs this call)",
                        "threads saw a difference]"}}},
      {"shady.flat_grad",
       {"strided_grads",
        {"float64: given output gradients with doubled strides and an offset (same values), the gradient of input 0 'x' "
         "element ",
         " (contiguous vs strided): does backward read grads[k] as a flat array?"}}},
      {"shady.nan_grad",
       {"gradcheck",
        {"gradcheck failed for 'shady.nan_grad': input 0 'x' of shape [3, 5], element 0: analytic nan, numeric ",
         "(the backward returned a non-finite gradient)"}}},
      {"shady.flat_input",
       {"strided_inputs",
        {"float64: given inputs with doubled strides and an offset (same values), output 0 element ",
         " (contiguous vs strided): the schema says the op takes strided inputs (takes_strided_inputs())",
         "read an input as a flat array?"}}},
      {"shady.step_input",
       {"strided_inputs",
        {"float64: given inputs laid out as transposes (axes reversed in memory, rows padded; same values), output 0 "
         "element ",
         " (contiguous vs transposed): the schema says the op takes strided inputs (takes_strided_inputs())",
         "walk an input with one step"}}},
      {"shady.step_grad",
       {"strided_grads",
        {"float64: given output gradients laid out as transposes (axes reversed in memory, rows padded; same values), "
         "the gradient of input 0 'x' element ",
         " (contiguous vs transposed): does backward walk grads[k] with one step"}}},
      {"shady.kept_input",
       {"interleaved_calls",
        {"forward on sample A (seed ", "), then backward of A and of B: for A, the gradient of input 0 'x' element 0 "
         "differs: ", " (A alone vs A interleaved with B): does the op keep per-call state in its Function object",
         "keep what backward needs on ctx"}}},
      {"shady.float32_grad",
       {"dtypes_agree",
        {"float32 against float64 (the same sample values, to 1e-3 of the largest): the gradient of input 0 'x' "
         "element 0 is ",
         " in float32, ", " in float64 on the same values: is a float32 kernel or its backward"}}},
      {"shady.int64_off",
       {"dtypes_agree",
        {"int64 against float64 (the same small integers): output 0 element ", " in int64, ",
         "does the int64 kernel compute what the float64 one does?", "--skip dtypes_agree"}}},
      {"shady.partial_grad",
       {"subset_grads",
        {"float64: with only input 1 'b' requiring grad, the gradient of input 1 'b' element 0 differs: ",
         "(all inputs requiring grad vs this one alone)", "ctx.needs_input_grad() is false for another input"}}},
      {"shady.chunk_offset",
       {"split_work",
        {"float64: with every sdk::parallel_for range cut into pieces of unequal sizes, run last to first",
         "output 0 element ", "(whole vs cut): the body of a parallel_for assumes its range starts at the beginning"}}},
      {"shady.thread_count_sum",
       {"split_work", {"float64: with opforge::set_num_threads(", " (before vs after): the results depend on the thread "
                       "count. Cut the work by the shape alone, never by num_threads()"}}},
      {"shady.borrows_input",
       {"thread_safe",
        {"thread ", " differs: ", "(single-thread result vs this call)", "threads saw a difference]",
         "write into an input, even for a moment (the threads share one copy of the inputs)"}}},
      {"shady.reused_output",
       {"interleaved_calls",
        {"output 0 of the call on sample A and output 0 of the call on sample B share one buffer",
         "Return a new tensor from every call"}}},
  };
  // float64_grad's float32 backward also throws in dtypes_agree's float32 run.
  const std::map<std::string, std::set<std::string>> also_fails = {{"shady.float64_grad", {"dtypes_agree"}}};
  std::vector<std::string> ops = shady_ops();
  std::sort(ops.begin(), ops.end());
  std::vector<std::string> want_ops;
  for (const auto& kv : expected) want_ops.push_back(kv.first);
  REQUIRE(ops == want_ops);

  for (const auto& [name, want] : expected) {
    const sdk::CheckReport report = sdk::check_op(opforge::op(name));
    INFO(report_text(report));
    require_complete(report, name);
    std::set<std::string> fails = {want.check};
    if (also_fails.count(name)) fails.insert(also_fails.at(name).begin(), also_fails.at(name).end());
    CHECK(failed_checks(report) == fails);
    CHECK_FALSE(sdk::all_passed(report));
    const sdk::CheckResult& r = result_of(report, want.check);
    CHECK_FALSE(r.skipped);
    for (const std::string& part : want.detail_has) CHECK_THAT(r.detail, Contains(part));
    // Everything else passed, or (only for the nondeterministic op) was skipped with a reason.
    for (const auto& other : report) {
      if (fails.count(other.check)) continue;
      const bool may_skip = name == "shady.noisy" && (other.check == "thread_safe" ||
                                                      other.check == "interleaved_calls" || other.check == "split_work");
      CHECK(other.skipped == may_skip);
    }
  }
}

// 2 x, plus a counter while g_flaky_on: noise that shows only now and then.
std::atomic<bool> g_flaky_on{false};
std::atomic<int> g_flaky_calls{0};
class Flaky final : public opforge::Function {
 public:
  TensorList forward(opforge::Context&, TensorSpan in) const override {
    std::vector<double> v = in[0].to_vector();
    const double noise = g_flaky_on ? 1e-9 * g_flaky_calls.fetch_add(1) : 0.0;
    for (double& e : v) e = 2 * e + noise;
    return {Tensor::from_values(v, in[0].shape(), in[0].dtype())};
  }
  TensorList backward(opforge::Context&, TensorSpan g) const override { return {g[0] * 2.0}; }
};

TEST_CASE("harness: nondeterminism that a later check sees fails deterministic, even when its own runs agreed") {
  const OpHandle op = opforge::make_op(OpSchema("test.flaky").input_names({"x"}), std::make_unique<Flaky>());
  sdk::CheckOptions options;
  std::vector<std::string> streamed;
  options.on_check = [](const std::string&, const std::string& check) { g_flaky_on = check == "split_work"; };
  options.on_result = [&](const sdk::CheckResult& r) { streamed.push_back(sdk::format_result(r)); };
  const sdk::CheckReport report = sdk::check_op(op, options);
  g_flaky_on = false;
  INFO(report_text(report));
  require_complete(report, "test.flaky");
  CHECK_THAT(result_of(report, "split_work").detail,
             StartsWith("two runs on the same inputs, one thread, already differ (output 0 element 0 differs: "));
  const sdk::CheckResult& d = result_of(report, "deterministic");
  CHECK_FALSE(d.passed);
  CHECK_THAT(d.detail, StartsWith("its two runs agreed, but the two runs split_work made first did not: two runs"));
  CHECK_FALSE(sdk::all_passed(report));
  // on_result saw each result as its check finished: deterministic as it was then.
  REQUIRE(streamed.size() == sdk::check_names().size());
  CHECK_THAT(streamed[8], StartsWith("PASS test.flaky deterministic"));
}

TEST_CASE("harness: the failures quote values at full precision, and the skip says why") {
  shady_ops();
  const sdk::CheckReport noisy = sdk::check_op(opforge::op("shady.noisy"));
  // "output 0 element 0 differs: A vs B": A and B are different texts, each the
  // shortest that reads back as its own double.
  const std::string d = result_of(noisy, "deterministic").detail;
  const auto colon = d.find(": ");
  const auto vs = d.find(" vs ");
  REQUIRE(colon != std::string::npos);
  REQUIRE(vs != std::string::npos);
  const std::string a = d.substr(colon + 2, vs - colon - 2), b = d.substr(vs + 4);
  INFO(d);
  CHECK(a != b);
  CHECK(std::stod(a) != std::stod(b));
  CHECK(std::abs(std::stod(a) - std::stod(b)) < 1e-9);  // the noise is tiny, but it is there

  const sdk::CheckResult& skipped = result_of(noisy, "thread_safe");
  CHECK(skipped.passed);
  CHECK(skipped.skipped);
  CHECK_THAT(skipped.detail, StartsWith("two runs on the same inputs, one thread, already differ (output 0 element 0 differs: "));
  CHECK_THAT(skipped.detail, Contains("see deterministic"));
  CHECK_THAT(sdk::format_result(skipped), StartsWith("SKIP shady.noisy thread_safe: two runs on the same inputs, one thread"));
}

// ---- exceptions, sample providers, dtypes ------------------------------------------------

TEST_CASE("harness: an exception inside a check fails that check only, the others still run") {
  SECTION("backward throws") {
    const OpHandle op = opforge::make_op(
        OpSchema("test.backward_throws").input_names({"a", "b"}), std::make_unique<BackwardThrows>());
    const sdk::CheckReport report = sdk::check_op(op);
    INFO(report_text(report));
    require_complete(report, "test.backward_throws");
    const std::set<std::string> with_backward = {"gradcheck",         "backward_contract", "strided_grads",
                                                 "strided_inputs",    "subset_grads",      "dtypes_agree",
                                                 "inputs_unchanged",  "deterministic",     "split_work",
                                                 "interleaved_calls", "thread_safe"};
    CHECK(failed_checks(report) == with_backward);
    for (const std::string& check : with_backward)
      CHECK_THAT(result_of(report, check).detail, Contains("backward exploded"));
    CHECK_THAT(result_of(report, "backward_contract").detail,
               StartsWith("float64: in backward of 'test.backward_throws': "));
    CHECK(result_of(report, "no_grad_records_nothing").passed);  // forward alone is fine
  }
  SECTION("forward throws") {
    const OpHandle op =
        opforge::make_op(OpSchema("test.forward_throws").input_names({"x"}), std::make_unique<ForwardThrows>());
    sdk::CheckReport report;
    REQUIRE_NOTHROW(report = sdk::check_op(op));
    INFO(report_text(report));
    require_complete(report, "test.forward_throws");
    for (const auto& r : report) {
      CHECK_FALSE(r.passed);
      CHECK_THAT(r.detail, Contains("test.forward_throws: std::runtime_error: forward exploded"));
    }
  }
}

TEST_CASE("harness: a sample provider that breaks its contract fails every check, naming it") {
  SECTION("wrong number of tensors") {
    const OpHandle op = opforge::make_op(OpSchema("test.short_samples").input_names({"a", "b"}).samples(one_tensor_samples),
                                         std::make_unique<BackwardThrows>());
    const sdk::CheckReport report = sdk::check_op(op);
    require_complete(report, "test.short_samples");
    for (const auto& r : report) {
      INFO(sdk::format_result(r));
      CHECK_FALSE(r.passed);
      CHECK_THAT(r.detail, Contains("test.short_samples: sample_inputs(float") &&
                               Contains(") returned 1 tensor(s), expected 2 (one per input: a, b)"));
    }
    CHECK_THROWS_WITH(sdk::harness_inputs(op, DType::Float64, 0),
                      "test.short_samples: sample_inputs(float64) returned 1 tensor(s), expected 2 (one per input: a, b)");
  }
  SECTION("the provider throws") {
    const OpHandle op = opforge::make_op(OpSchema("test.throwing_samples").input_names({"x"}).samples(throwing_samples),
                                         std::make_unique<Scale>());
    const sdk::CheckReport report = sdk::check_op(op);
    for (const auto& r : report) {
      INFO(sdk::format_result(r));
      CHECK_FALSE(r.passed);
      CHECK_THAT(r.detail, Contains("test.throwing_samples: its sample_inputs(float") && Contains("no samples today"));
    }
  }
}

TEST_CASE("harness: without sample inputs, every input is randn [3, 4], and gradcheck says so") {
  const OpHandle op = opforge::make_op(OpSchema("test.scale").input_names({"x"}), std::make_unique<Scale>());
  std::string note;
  const TensorList xs = sdk::harness_inputs(op, DType::Float32, 3, &note);
  REQUIRE(xs.size() == 1);
  CHECK(xs[0].shape() == Dims{3, 4});
  CHECK(xs[0].dtype() == DType::Float32);
  CHECK(note == "the schema has no sample inputs (OpSchema::samples), so every input was randn of shape [3, 4]");

  const sdk::CheckReport report = sdk::check_op(op);
  INFO(report_text(report));
  CHECK(sdk::all_passed(report));
  CHECK(result_of(report, "gradcheck").detail ==
        "12 elements, max |diff| " + result_of(report, "gradcheck").detail.substr(24, std::string::npos));
  CHECK_THAT(result_of(report, "gradcheck").detail, StartsWith("12 elements, max |diff| ") &&
                                                        Contains("; the schema has no sample inputs"));
}

namespace {
// log(x): NaN for the negative half of randn inputs.
class LogOfAnything final : public opforge::Function {
 public:
  TensorList forward(opforge::Context& ctx, TensorSpan in) const override {
    ctx.save_for_backward(in[0]);
    std::vector<double> v = in[0].to_vector();
    for (double& e : v) e = std::log(e);
    return {Tensor::from_values(v, in[0].shape(), in[0].dtype())};
  }
  TensorList backward(opforge::Context& ctx, TensorSpan g) const override {
    std::vector<double> v = g[0].to_vector();
    const std::vector<double> x = ctx.saved_tensors()[0].to_vector();
    for (std::size_t i = 0; i < v.size(); ++i) v[i] /= x[i];
    return {Tensor::from_values(v, g[0].shape(), g[0].dtype())};
  }
};
}  // namespace

TEST_CASE("harness: gradcheck fails, naming the element, when the forward is not finite at the sample") {
  // Without samples every input is randn: log gives NaN, every difference
  // quotient is NaN, and NaN passes any `diff > tol` test. It must fail instead.
  const OpHandle op = opforge::make_op(OpSchema("test.log").input_names({"x"}), std::make_unique<LogOfAnything>());
  const sdk::CheckReport report = sdk::check_op(op);
  const sdk::CheckResult& g = result_of(report, "gradcheck");
  INFO(g.detail);
  CHECK_FALSE(g.passed);
  CHECK_THAT(g.detail, StartsWith("gradcheck failed for 'test.log': output 0 of shape [3, 4], element ") &&
                           Contains(", is nan at the sample inputs, so no derivative can be checked; give the op "
                                    "sample inputs inside its domain (OpSchema::samples)"));
  const sdk::GradcheckResult direct = sdk::gradcheck(op, {Tensor::from_values({1.0, -1.0})});
  CHECK_FALSE(direct.ok);
  CHECK(std::isnan(direct.max_abs_error));
  // Inside the domain the same op passes.
  CHECK(sdk::gradcheck(op, {Tensor::from_values({0.5, 2.0, 3.0})}).ok);
}

TEST_CASE("harness: gradcheck fails when only the numeric side is not finite") {
  // log at 1e-7: x - eps is below 0, so the difference quotient is NaN.
  const OpHandle op = opforge::make_op(OpSchema("test.log").input_names({"x"}), std::make_unique<LogOfAnything>());
  const sdk::GradcheckResult r = sdk::gradcheck(op, {Tensor::from_values({2.0, 1e-7})});
  INFO(r.message);
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.message, Contains("element 1: analytic ") &&
                            Contains("(the forward is not finite at x +/- eps; is the input at the edge of the op's "
                                     "domain?)"));
}

namespace {
// x^2, written into x itself before it is returned (a copy): each call squares
// the input again, so it drifts from call to call.
class SquaresInPlace final : public opforge::Function {
 public:
  TensorList forward(opforge::Context&, TensorSpan in) const override {
    double* p = static_cast<double*>(in[0].data_ptr());
    for (std::int64_t i = 0; i < in[0].numel(); ++i) p[i] *= p[i];  // bug: writes into its input
    return {in[0].clone()};
  }
  TensorList backward(opforge::Context&, TensorSpan g) const override { return {g[0].clone()}; }
};
}  // namespace

TEST_CASE("harness: gradcheck says the forward changed its input, rather than blame the op's domain") {
  const OpHandle op = opforge::make_op(OpSchema("test.squares_in_place").input_names({"x"}).accepts(
                                           opforge::DTypeSet{opforge::DType::Float64}),
                                       std::make_unique<SquaresInPlace>());
  const sdk::GradcheckResult r = sdk::gradcheck(op, {Tensor::from_values({1.5, 0.5})});
  INFO(r.message);
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.message, StartsWith("gradcheck failed for 'test.squares_in_place': input 0 'x' of shape [2]") &&
                            Contains("; the forward changed input 0 'x' (element 0: 1.5 -> 2.25) during the call, "
                                     "and finite differences assume the inputs stay as they are: an op must not "
                                     "write into its inputs (return a new tensor)"));
  CHECK_THAT(r.message, !Contains("edge of the op's domain"));
}

TEST_CASE("harness: a misspelled sample attribute is refused when the schema is registered") {
  auto schema = [] { return OpSchema("test.k").input_names({"x"}).attr("k", opforge::AttrKind::Float, 2.0); };
  CHECK_THROWS_WITH(opforge::make_op(schema().sample_attrs({{"kk", 3.0}}), std::make_unique<Scale>()),
                    "make_op: invalid schema: op 'test.k': sample attribute 'kk' is not one of its attributes (it "
                    "declares: k); check its spelling in sample_attrs()");
  CHECK_THROWS_WITH(opforge::make_op(schema().sample_attrs({{"k", true}}), std::make_unique<Scale>()),
                    "make_op: invalid schema: op 'test.k': sample attribute 'k' is bool but the attribute is "
                    "declared float");
  const OpHandle ok = opforge::make_op(schema().sample_attrs({{"k", 3}}), std::make_unique<Scale>());
  CHECK(sdk::all_passed(sdk::check_op(ok)));
}

namespace {
// y = k x + shift (k required), whose backward uses |k|: right for the sample
// k = 3, wrong for a negative k. Which k the harness used shows in gradcheck.
class ScaleShiftAbsGrad final : public opforge::Function {
 public:
  TensorList forward(opforge::Context& ctx, TensorSpan in) const override {
    const double k = ctx.attr_float(0), shift = ctx.attr_float(1);
    std::vector<double> v = in[0].to_vector();
    for (double& e : v) e = k * e + shift;
    return {Tensor::from_values(v, in[0].shape(), in[0].dtype())};
  }
  TensorList backward(opforge::Context& ctx, TensorSpan g) const override {
    std::vector<double> v = g[0].to_vector();
    for (double& e : v) e *= std::abs(ctx.attr_float(0));  // bug for k < 0
    return {Tensor::from_values(v, g[0].shape(), g[0].dtype())};
  }
};
}  // namespace

TEST_CASE("harness: check_op on a bound handle keeps the schema's other sample attributes, under the bound ones") {
  const OpHandle op = opforge::make_op(OpSchema("test.scale_shift")
                                           .input_names({"x"})
                                           .attr("k", opforge::AttrKind::Float)
                                           .attr("shift", opforge::AttrKind::Float, 0.0)
                                           .samples(vector_samples)
                                           .sample_attrs({{"k", 3.0}}),
                                       std::make_unique<ScaleShiftAbsGrad>());
  CHECK(sdk::all_passed(sdk::check_op(op)));
  // Before, a handle that bound any attribute lost every sample one: 'k' is
  // required, so every check failed saying so.
  const sdk::CheckReport shifted = sdk::check_op(op.bind({{"shift", 0.5}}));
  INFO(report_text(shifted));
  CHECK(sdk::all_passed(shifted));
  // A bound attribute wins over the sample one of the same name: at k = -2
  // the backward's bug shows.
  const sdk::CheckReport negative = sdk::check_op(op.bind({{"k", -2.0}}));
  const sdk::CheckResult& g = result_of(negative, "gradcheck");
  CHECK_FALSE(g.passed);
  CHECK_THAT(g.detail, StartsWith("gradcheck failed for 'test.scale_shift': input 0 'x'"));
}

TEST_CASE("harness: empty sample inputs skip gradcheck instead of passing it") {
  const OpHandle op = opforge::make_op(
      OpSchema("test.scale_empty").input_names({"x"}).samples([](DType dtype, std::uint64_t) {
        return TensorList{Tensor::zeros({0, 3}, dtype)};
      }),
      std::make_unique<Scale>());
  const sdk::CheckReport report = sdk::check_op(op);
  const sdk::CheckResult& g = result_of(report, "gradcheck");
  CHECK(g.skipped);
  CHECK_THAT(g.detail, StartsWith("the sample inputs have no floating element to perturb"));
}

TEST_CASE("harness: a float32-only op is gradchecked in float32, more loosely, and the other checks run in float32") {
  const OpHandle op = opforge::make_op(
      OpSchema("test.scale32").input_names({"x"}).accepts(opforge::DTypeSet{DType::Float32}).samples(vector_samples),
      std::make_unique<Scale>());
  const sdk::CheckReport report = sdk::check_op(op);
  INFO(report_text(report));
  CHECK(sdk::all_passed(report));
  const sdk::CheckResult& g = result_of(report, "gradcheck");
  CHECK_FALSE(g.skipped);
  CHECK_THAT(g.detail, StartsWith("6 elements") &&
                           Contains("checked in float32, the only floating dtype the op takes (eps 0.01, atol 0.01, "
                                    "rtol 0.01): looser than a float64 check"));
  // Before, a float32-only op's wrong backward went unchecked: "OK".
  const OpHandle wrong = opforge::make_op(
      OpSchema("test.scale32_wrong").input_names({"x"}).accepts(opforge::DTypeSet{DType::Float32}).samples(vector_samples),
      std::make_unique<ScaleWrongGrad<5>>());
  const sdk::CheckReport wrong_report = sdk::check_op(wrong);
  const sdk::CheckResult& gw = result_of(wrong_report, "gradcheck");
  CHECK_FALSE(gw.passed);
  CHECK_THAT(gw.detail, StartsWith("gradcheck failed for 'test.scale32_wrong': input 0 'x' of shape [6], element "));
  CHECK_FALSE(result_of(report, "backward_contract").skipped);
  CHECK_THAT(result_of(report, "backward_contract").detail, StartsWith("float32: "));
  CHECK_THAT(result_of(report, "deterministic").detail, Contains("float32"));
}

TEST_CASE("harness: a backward that writes into its incoming gradient fails gradcheck saying so") {
  // It used to pass: the finite differences weighed the outputs with the very
  // tensor backward had scaled, so both sides agreed on 5 g.
  const OpHandle op = opforge::make_op(OpSchema("test.mutates_grad").input_names({"x"}).samples(vector_samples),
                                       std::make_unique<MutatesItsGrad>());
  const sdk::CheckReport report = sdk::check_op(op);
  INFO(report_text(report));
  const sdk::CheckResult& g = result_of(report, "gradcheck");
  CHECK_FALSE(g.passed);
  CHECK_THAT(g.detail, StartsWith("gradcheck failed for 'test.mutates_grad': backward wrote into the incoming "
                                  "gradient of output 0 (element 0: ") &&
                           Contains("the gradients backward receives are read-only"));
  // Runs that share their weights see weights backward could not change.
  CHECK(result_of(report, "deterministic").passed);
  CHECK(result_of(report, "interleaved_calls").passed);
}

TEST_CASE("harness: check_op runs in grad mode whatever the caller's, and restores it") {
  opforge::NoGradGuard no_grad;
  const sdk::CheckReport report = sdk::check_op(opforge::op("elementwise.mul"));
  INFO(report_text(report));
  CHECK(sdk::all_passed(report));
  CHECK_FALSE(opforge::grad_enabled());
}

TEST_CASE("harness: sdk::gradcheck records its graph whatever the caller's grad mode, and restores it") {
  // Under a NoGradGuard it once recorded nothing, read every analytic gradient
  // as 0 and failed a correct op ("backward returned no gradient").
  const Tensor x = Tensor::from_values({1.0, -2.0, 0.5});
  opforge::NoGradGuard no_grad;
  const sdk::GradcheckResult r = sdk::gradcheck(opforge::op("elementwise.square"), {x});
  INFO(r.message);
  CHECK(r.ok);
  CHECK(r.elements_checked == 3);
  CHECK(r.max_abs_error < 1e-6);
  CHECK_FALSE(opforge::grad_enabled());
}

TEST_CASE("harness: options set the thread count and calls, an empty handle is refused") {
  sdk::CheckOptions options;
  options.threads = 2;
  options.calls_per_thread = 3;
  const sdk::CheckReport report = sdk::check_op(opforge::op("linalg.mv"), options);
  CHECK_THAT(result_of(report, "thread_safe").detail, StartsWith("2 threads x 3 float64 forward+backward calls"));
  CHECK_THROWS_AS(sdk::check_op(OpHandle()), opforge::ValueError);
}

TEST_CASE("harness: format_result writes PASS, FAIL and SKIP lines") {
  sdk::CheckResult r;
  r.op = "loss.lstsq";
  r.check = "gradcheck";
  r.passed = true;
  r.detail = "49 elements, max |diff| 3.1e-10";
  CHECK(sdk::format_result(r) == "PASS loss.lstsq gradcheck (49 elements, max |diff| 3.1e-10)");
  r.passed = false;
  r.detail = "output 0 element 3 differs: 1.0000001 vs 1.0000002";
  CHECK(sdk::format_result(r) == "FAIL loss.lstsq gradcheck: output 0 element 3 differs: 1.0000001 vs 1.0000002");
  r.passed = true;
  r.skipped = true;
  r.detail = "why";
  CHECK(sdk::format_result(r) == "SKIP loss.lstsq gradcheck: why");
  CHECK(sdk::all_passed({r}));
}

// ---- the opforge program ------------------------------------------------------------------

TEST_CASE("harness: `opforge check` on the shady plugin fails (exit 1), one line per op and check") {
  const RunResult r = run_command(opforge_check("'" OPFORGE_SHADY_PLUGIN "'"));
  INFO(r.output);
  CHECK(r.status == 1);
  const auto lines = r.lines();
  const std::size_t checks = sdk::check_names().size();
  constexpr std::size_t kShadyOps = 18;
  REQUIRE(lines.size() == kShadyOps * checks + 1);
  const std::string output = "\n" + r.output;  // every line, the first included, follows a newline
  CHECK_THAT(output, Contains("\nFAIL shady.wrong_grad gradcheck: gradcheck failed for 'shady.wrong_grad': input 0"));
  CHECK_THAT(output, Contains("\nPASS shady.wrong_grad backward_contract (float64, float32: "));
  CHECK_THAT(output, Contains("\nFAIL shady.float64_grad backward_contract: float32: in backward of"));
  CHECK_THAT(output, Contains("\nFAIL shady.clobbers_input inputs_unchanged: input 1 'work' element 0 changed"));
  CHECK_THAT(output, Contains("\nFAIL shady.noisy deterministic: output 0 element 0 differs: "));
  CHECK_THAT(output, Contains("\nSKIP shady.noisy thread_safe: two runs on the same inputs, one thread, already differ"));
  CHECK_THAT(output, Contains("\nFAIL shady.shared_buffer thread_safe: thread "));
  CHECK_THAT(output, Contains("\nFAIL shady.flat_grad strided_grads: float64: given output gradients with doubled"));
  CHECK_THAT(output, Contains("\nFAIL shady.nan_grad gradcheck: gradcheck failed for 'shady.nan_grad': input 0"));
  CHECK_THAT(output, Contains("\nFAIL shady.flat_input strided_inputs: float64: given inputs with doubled strides"));
  CHECK_THAT(output, Contains("\nFAIL shady.step_input strided_inputs: float64: given inputs laid out as transposes"));
  CHECK_THAT(output, Contains("\nFAIL shady.step_grad strided_grads: float64: given output gradients laid out as"));
  CHECK_THAT(output, Contains("\nFAIL shady.kept_input interleaved_calls: forward on sample A (seed "));
  CHECK_THAT(output, Contains("\nSKIP shady.noisy interleaved_calls: two runs on the same inputs, one thread, already differ"));
  CHECK_THAT(output, Contains("\nFAIL shady.partial_grad subset_grads: float64: with only input 1 'b'"));
  CHECK_THAT(output, Contains("\nFAIL shady.chunk_offset split_work: float64: with every sdk::parallel_for range"));
  CHECK_THAT(output, Contains("\nFAIL shady.reused_output interleaved_calls: output 0 of the call on sample A"));
  // Eighteen ops, each failing one check (float64_grad two); shady.noisy's
  // split_work, interleaved_calls and thread_safe are skipped.
  CHECK_THAT(lines.back(), StartsWith("FAILED: plugin 'shady' (") &&
                               Contains("): 18 ops, " + std::to_string(kShadyOps * checks - 19 - 3) +
                                        " passed, 19 failed, 3 skipped; failing ops: "));
}

TEST_CASE("harness: `opforge check` on the standard loss.so passes (exit 0)") {
  const RunResult r = run_command(opforge_check("'" OPFORGE_LOSS_PLUGIN "'"));
  INFO(r.output);
  CHECK(r.status == 0);
  const auto lines = r.lines();
  // loss has five ops (bce_with_logits, cross_entropy, huber, lstsq, mse), every check each, then the summary.
  const std::size_t checks = sdk::check_names().size();
  REQUIRE(lines.size() == 5 * checks + 1);
  for (std::size_t i = 0; i + 1 < lines.size(); ++i) CHECK_THAT(lines[i], StartsWith("PASS loss."));
  CHECK_THAT(r.output, Contains("PASS loss.lstsq gradcheck (49 elements, max |diff| "));
  for (const std::string& check : sdk::check_names()) CHECK_THAT(r.output, Contains("PASS loss.lstsq " + check));
  CHECK_THAT(lines.back(), StartsWith("OK: plugin 'loss' (") && Contains("): 5 ops, " + std::to_string(5 * checks) + " passed, 0 failed, 0 skipped"));
}

TEST_CASE("harness: `opforge check --json` writes one JSON object per op and check") {
  const RunResult r = run_command(opforge_check("'" OPFORGE_SHADY_PLUGIN "' --json"), /*with_stderr=*/false);
  INFO(r.output);
  CHECK(r.status == 1);
  const auto lines = r.lines();
  REQUIRE(lines.size() == 18 * sdk::check_names().size());  // the summary goes to stderr
  for (const std::string& line : lines) {
    CHECK_THAT(line, StartsWith("{\"op\": \"shady.") && Contains("\", \"check\": \"") &&
                         Contains(", \"detail\": \""));
    CHECK(line.back() == '}');
  }
  CHECK_THAT(r.output, Contains("{\"op\": \"shady.noisy\", \"check\": \"deterministic\", \"passed\": false, "
                                "\"skipped\": false, \"detail\": \"output 0 element 0 differs: "));
  CHECK_THAT(r.output, Contains("{\"op\": \"shady.wrong_grad\", \"check\": \"backward_contract\", \"passed\": true, "
                                "\"skipped\": false, \"detail\": \"float64, float32: "));
}

TEST_CASE("harness: `opforge check --skip` reports the named checks as skipped, and refuses unknown names") {
  const RunResult r = run_command(opforge_check("'" OPFORGE_LOSS_PLUGIN "' --op lstsq --skip thread_safe,split_work"));
  INFO(r.output);
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Contains("SKIP loss.lstsq thread_safe: skipped on request (CheckOptions::skip, opforge check --skip)"));
  CHECK_THAT(r.output, Contains("SKIP loss.lstsq split_work: skipped on request"));
  CHECK_THAT(r.output, Contains("PASS loss.lstsq gradcheck"));
  CHECK_THAT(r.output, Contains(std::to_string(sdk::check_names().size() - 2) + " passed, 0 failed, 2 skipped"));
  const RunResult bad = run_command(opforge_check("'" OPFORGE_LOSS_PLUGIN "' --skip thread_safety"));
  CHECK(bad.status == 2);
  CHECK_THAT(bad.output, StartsWith("opforge check: option '--skip': 'thread_safety' is no check (the checks: gradcheck, "));
  // An empty item skipped nothing, silently: refused too.
  for (const char* list : {"''", "gradcheck,", ",gradcheck", "gradcheck,,split_work"}) {
    INFO(list);
    const RunResult empty = run_command(opforge_check("'" OPFORGE_LOSS_PLUGIN "' --skip " + std::string(list)));
    CHECK(empty.status == 2);
    CHECK_THAT(empty.output, StartsWith("opforge check: option '--skip': '' is no check (the checks: gradcheck, "));
  }
  sdk::CheckOptions options;
  options.skip = {"gradchek"};
  CHECK_THROWS_WITH(sdk::check_op(opforge::op("loss.lstsq"), options),
                    StartsWith("sdk::check_op: CheckOptions::skip names no check: 'gradchek' (the checks: gradcheck"));
}

namespace {
// y = s x, whose backward gives x its gradient and s none, on purpose (a scale
// the author treats as a constant): gradcheck fails it unless told to leave s out.
// kXFactor != 1: x's gradient wrong too.
template <int kXFactor = 1>
class ScaleBy final : public opforge::Function {
 public:
  TensorList forward(opforge::Context& ctx, TensorSpan in) const override {
    ctx.save_for_backward(in[1]);
    std::vector<double> v = in[0].to_vector();
    const double s = in[1].item();
    for (double& e : v) e *= s;
    return {Tensor::from_values(v, in[0].shape(), in[0].dtype())};
  }
  TensorList backward(opforge::Context& ctx, TensorSpan g) const override {
    std::vector<double> v = g[0].to_vector();
    const double s = ctx.saved_tensors()[0].item();
    for (double& e : v) e *= s * kXFactor;
    return {Tensor::from_values(v, g[0].shape(), g[0].dtype()), Tensor()};
  }
};
}  // namespace

TEST_CASE("harness: GradcheckOptions::skip_inputs leaves an input out, says so, and refuses a name the op lacks") {
  const OpHandle op = opforge::make_op(OpSchema("test.scale_by").input_names({"x", "s"}).samples(
                                           [](DType dtype, std::uint64_t seed) {
                                             return TensorList{Tensor::randn({4}, dtype, seed),
                                                               Tensor::full({}, 1.5, dtype)};
                                           }),
                                       std::make_unique<ScaleBy<>>());
  const TensorList xs = {Tensor::randn({4}, DType::Float64, 3), Tensor::full({}, 1.5)};
  const sdk::GradcheckResult all = sdk::gradcheck(op, xs);
  CHECK_FALSE(all.ok);
  CHECK_THAT(all.message, Contains("input 1 's' of shape [], element 0: analytic 0, numeric ") &&
                              Catch::Matchers::EndsWith("; backward returned no gradient for this input"));
  sdk::GradcheckOptions options;
  options.skip_inputs = {"s"};
  const sdk::GradcheckResult without_s = sdk::gradcheck(op, xs, options);
  INFO(without_s.message);
  CHECK(without_s.ok);
  CHECK(without_s.elements_checked == 4);  // x's four elements, not s
  CHECK(without_s.note == "input 1 's' not checked (GradcheckOptions::skip_inputs)");
  // x's check still bites: a wrong gradient for x fails with s left out.
  const OpHandle wrong = opforge::make_op(OpSchema("test.scale_by_wrong").input_names({"x", "s"}),
                                          std::make_unique<ScaleBy<2>>());
  sdk::GradcheckOptions skip_x;
  skip_x.skip_inputs = {"s"};
  CHECK_FALSE(sdk::gradcheck(wrong, {Tensor::randn({3}, DType::Float64, 4), Tensor::full({}, 1.0)}, skip_x).ok);
  options.skip_inputs = {"scale"};
  CHECK_THROWS_MATCHES(sdk::gradcheck(op, xs, options), opforge::ValueError,
                       Catch::Matchers::Message("gradcheck: GradcheckOptions::skip_inputs: 'test.scale_by' has no input named 'scale' "
                               "(its inputs: x, s)"));
  // Through check_op: gradcheck passes, with the note; the other checks run as ever.
  sdk::CheckOptions check;
  check.gradcheck.skip_inputs = {"s"};
  const sdk::CheckReport report = sdk::check_op(op, check);
  INFO(report_text(report));
  CHECK(sdk::all_passed(report));
  CHECK_THAT(result_of(report, "gradcheck").detail,
             StartsWith("4 elements, max |diff| ") && Contains("input 1 's' not checked (GradcheckOptions::skip_inputs)"));
}

TEST_CASE("harness: `opforge check --gradcheck-skip` leaves inputs out of gradcheck, and refuses names no op has") {
  const RunResult r = run_command(opforge_check("'" OPFORGE_LOSS_PLUGIN "' --op lstsq --gradcheck-skip A"));
  INFO(r.output);
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Contains("PASS loss.lstsq gradcheck (13 elements, max |diff| ") &&
                           Contains("input 0 'A' not checked (GradcheckOptions::skip_inputs))"));
  const RunResult bad = run_command(opforge_check("'" OPFORGE_LOSS_PLUGIN "' --op lstsq --gradcheck-skip B"));
  CHECK(bad.status == 2);
  CHECK_THAT(bad.output, StartsWith("opforge check: option '--gradcheck-skip': no op checked has an input named 'B' "
                                    "(their inputs: 'A', 'x', 'y')"));
  const RunResult empty = run_command(opforge_check("'" OPFORGE_LOSS_PLUGIN "' --gradcheck-skip A,"));
  CHECK(empty.status == 2);
  CHECK_THAT(empty.output, StartsWith("opforge check: option '--gradcheck-skip': expected input names separated by "
                                      "commas, got 'A,' (an empty item)"));
}

TEST_CASE("harness: when an op crashes the process, `opforge check` says which op and which check") {
  const RunResult r = run_command(opforge_check("'" OPFORGE_CRASHY_PLUGIN "'"));
  INFO(r.output);
  CHECK((r.status == -1 || r.status == 128 + SIGSEGV));  // killed by the signal (a shell reports 128 + it)
  CHECK_THAT(r.output, Contains("opforge check: the op crashy.segv crashed the process during the check 'gradcheck'"));
  CHECK_THAT(r.output, Contains("To look into it, run `opforge check " OPFORGE_CRASHY_PLUGIN
                                " --op crashy.segv` under a debugger or a sanitizer; `--skip gradcheck` lets the "
                                "other checks run"));
}

TEST_CASE("harness: `opforge check --help` names every check the harness runs, and exits 0") {
  const RunResult r = run_command(opforge_check("--help"));
  INFO(r.output);
  CHECK(r.status == 0);
  // "strided_grads" was missing from a hand-written list.
  for (const std::string& name : sdk::check_names()) CHECK_THAT(r.output, Contains(name));
  CHECK_THAT(r.output, Contains("Exit status: 0 all passed, 1 a check failed (or the plugin registers no op), 2 the plugin\ndid not load"));
}

TEST_CASE("harness: `opforge check --op` checks one op, bad arguments and load errors exit 2") {
  SECTION("--op with a qualified or a short name") {
    for (const std::string name : {"shady.noisy", "noisy"}) {
      const RunResult r = run_command(opforge_check("'" OPFORGE_SHADY_PLUGIN "' --op " + name));
      INFO(r.output);
      CHECK(r.status == 1);
      const auto lines = r.lines();
      REQUIRE(lines.size() == sdk::check_names().size() + 1);
      for (std::size_t i = 0; i < sdk::check_names().size(); ++i) CHECK_THAT(lines[i], Contains(" shady.noisy " + sdk::check_names()[i]));
    }
    const RunResult ok = run_command(opforge_check("'" OPFORGE_SHADY_PLUGIN "' --op shady.wrong_grad --json"));
    CHECK(ok.status == 1);
  }
  SECTION("--op naming no op of the plugin") {
    const RunResult r = run_command(opforge_check("'" OPFORGE_LOSS_PLUGIN "' --op mv"));
    CHECK(r.status == 2);
    CHECK_THAT(r.output, Contains("opforge check: plugin 'loss' (") &&
                             Contains(") has no op named 'mv'; its ops: ") && Contains("loss.lstsq"));
  }
  SECTION("a file that is not there") {
    const RunResult r = run_command(opforge_check("/nonexistent/dir/myops.so"));
    CHECK(r.status == 2);
    CHECK_THAT(r.output, StartsWith("opforge check: cannot load plugin '/nonexistent/dir/myops.so': file not found"));
  }
  SECTION("no plugin given") {
    const RunResult r = run_command(opforge_check(""));
    CHECK(r.status == 2);
    CHECK_THAT(r.output, StartsWith("opforge check: expected a plugin file"));
  }
}

TEST_CASE("harness: `opforge check` on a plugin that does not load exits 2 with the loader's whole message") {
  const std::string fixtures = std::filesystem::canonical(OPFORGE_TEST_FIXTURES).string();
  struct Case {
    std::string file;
    std::string message;  // after "opforge check: cannot load plugin 'FILE': "
  };
  const std::vector<Case> cases = {
      {fixtures + "/not_a_library.so", "not a shared library ("},
      {fixtures, "it is a directory, not a plugin file; pass the plugin's .so file"},
      {fixtures + "/no_descriptor.so", "it does not export opforge_plugin_descriptor (not an opforge plugin); declare"},
      {fixtures + "/register_throws.so", "its registration failed: boom: table missing; none of its ops were "
                                         "registered; fix the plugin's registration code"},
  };
  for (const Case& c : cases) {
    const RunResult r = run_command(opforge_check("'" + c.file + "'"));
    INFO(r.output);
    CHECK(r.status == 2);
    CHECK_THAT(r.output, StartsWith("opforge check: cannot load plugin '" + c.file + "': " + c.message));
  }
}

TEST_CASE("harness: `opforge check FILE` checks FILE when a plugin of its name is loaded from elsewhere") {
  // An installed copy of the plugin on OPFORGE_PLUGIN_PATH, and the build to check.
  const std::string build = std::filesystem::canonical(OPFORGE_TEST_FIXTURES "/healthy_rename.so").string();
  opforge_tests::TempDir dir("opforge_check_test");
  const std::string installed = dir.file("healthy_rename.so");
  std::filesystem::copy_file(build, installed);
  const RunResult r = run_command("OPFORGE_PLUGIN_PATH='" + dir.path().string() + "' " + opforge_check("'" + build + "'"));
  INFO(r.output);
  CHECK(r.status == 0);
  CHECK_THAT(r.output, StartsWith("opforge check: plugin 'healthy_rename' was also loaded from " + installed +
                                  "; checking " + build + " in its place\n"));
  CHECK_THAT(r.output, Contains("OK: plugin 'healthy_rename' (" + build + "): 1 op, "));
}

TEST_CASE("harness: `opforge check` refuses a plugin named like a standard one (exit 2), saying to rename it") {
  // A plugin called "reduce" could never load beside the standard reduce plugin;
  // checking it in that one's place would pass a plugin no program can load.
  const std::string file = std::filesystem::canonical(OPFORGE_TEST_FIXTURES "/standard_name.so").string();
  const RunResult r = run_command(opforge_check("'" + file + "'"));
  INFO(r.output);
  CHECK(r.status == 2);
  CHECK_THAT(r.output, StartsWith("opforge check: plugin 'reduce' (" + file + ") has the name of the standard plugin "));
  CHECK_THAT(r.output, Contains("/reduce.so, so no program can load it (a second plugin of one name is refused); "
                                "rename it: OPFORGE_PLUGIN(\"another_name\", ...), with ops named "
                                "\"another_name.op\"\n"));
  CHECK_THAT(r.output, !Contains("OK:"));
  // A copy of a standard plugin (every one of its ops) is checked in its place.
  opforge_tests::TempDir dir("opforge_check_standard_copy");
  const std::string copy = dir.file("loss.so");
  std::filesystem::copy_file(OPFORGE_LOSS_PLUGIN, copy);
  const RunResult c = run_command(opforge_check("'" + copy + "' --op mse"));
  INFO(c.output);
  CHECK(c.status == 0);
  CHECK_THAT(c.output, StartsWith("opforge check: plugin 'loss' was also loaded from "));
  CHECK_THAT(c.output, Contains("OK: plugin 'loss' (" + std::filesystem::canonical(copy).string() + "): 1 op, "));
}

TEST_CASE("harness: `opforge check` notes an op not named <plugin>.<op> (a likely typo) and still checks it") {
  const std::string file = std::filesystem::canonical(OPFORGE_TEST_FIXTURES "/healthy_family.so").string();
  const RunResult r = run_command(opforge_check("'" + file + "'"));
  INFO(r.output);
  CHECK(r.status == 0);
  CHECK_THAT(r.output, StartsWith("opforge check: note: op 'healthy_famliy.twice' of plugin 'healthy_family' is not "
                                  "named 'healthy_family.<op>', as ops are by convention (a typo in its name or in "
                                  "the plugin's?)\n"));
  CHECK_THAT(r.output, Contains("OK: plugin 'healthy_family' (" + file + "): 1 op, "));
  // A plugin whose ops follow the convention gets no note.
  const RunResult fine = run_command(opforge_check("'" + std::filesystem::canonical(OPFORGE_TEST_FIXTURES
                                                                                    "/healthy_rename.so").string() +
                                                   "'"));
  CHECK_THAT(fine.output, !Contains("note:"));
}

TEST_CASE("harness: `opforge check` on a plugin that registers no op fails (exit 1): nothing checked is no pass") {
  const std::string file = std::filesystem::canonical(OPFORGE_TEST_FIXTURES "/no_ops.so").string();
  for (const bool json : {false, true}) {
    const RunResult r = run_command(opforge_check("'" + file + "'" + (json ? " --json" : "")));
    INFO(r.output);
    CHECK(r.status == 1);
    CHECK(r.output == "FAILED: plugin 'no_ops' (" + file +
                          "): 0 ops: it registers none, so nothing was checked; add its ops in its OPFORGE_PLUGIN "
                          "body (registrar.add<F>(opforge::OpSchema(\"family.name\")...))\n");
  }
}
