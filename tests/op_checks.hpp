// Assertions shared by the op-family tests: an op passes gradcheck on every
// floating element of its inputs, passes every check of the harness, and
// refuses bad calls with the exact message expected.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include <opforge/opforge.hpp>
#include <opforge/sdk/gradcheck.hpp>
#include <opforge/sdk/harness.hpp>

namespace opforge_tests {

/// gradcheck passes, and it checked every element of every floating input.
inline void require_gradcheck(const opforge::OpHandle& op, const std::vector<opforge::Tensor>& inputs) {
  const opforge::sdk::GradcheckResult res = opforge::sdk::gradcheck(op, inputs);
  INFO(res.message);
  REQUIRE(res.ok);
  std::int64_t total = 0;
  for (const opforge::Tensor& t : inputs) total += opforge::is_floating(t.dtype()) ? t.numel() : 0;
  REQUIRE(res.elements_checked == total);
}

/// A skip that says only that the op gives the check nothing to compare: float64
/// without float32 or int64 (dtypes_agree).
inline bool skipped_for_want_of_inputs(const opforge::sdk::CheckResult& r) {
  return r.skipped && r.check == "dtypes_agree" &&
         r.detail.find("are needed to compare one with the other") != std::string::npos;
}

enum class Skipped { allowed, refused };

/// Every check of sdk::check_op passes; with Skipped::refused none may be skipped.
inline void require_all_checks_pass(const opforge::OpHandle& op, Skipped skipped = Skipped::allowed) {
  const opforge::sdk::CheckReport report = opforge::sdk::check_op(op);
  REQUIRE(report.size() == opforge::sdk::check_names().size());
  for (const auto& r : report) {
    INFO(opforge::sdk::format_result(r));
    CHECK(r.passed);
    if (skipped == Skipped::refused && !skipped_for_want_of_inputs(r)) CHECK_FALSE(r.skipped);
  }
  REQUIRE(opforge::sdk::all_passed(report));
}

/// A call that must be refused: the op, its inputs, and the exact message.
struct BadCall {
  std::string op;
  std::vector<opforge::Tensor> inputs;
  std::string message;
};

/// Every call throws an E whose message is exactly the one expected.
template <class E>
void require_refused(const std::vector<BadCall>& calls) {
  for (const BadCall& c : calls) {
    INFO(c.op);
    CHECK_THROWS_MATCHES(opforge::op(c.op).call(c.inputs), E, Catch::Matchers::Message(c.message));
  }
}

/// Inputs for tables of bad calls: ones in float64 or float32, zeros in int64.
inline opforge::Tensor f64(const opforge::Dims& shape) { return opforge::Tensor::ones(shape, opforge::DType::Float64); }
inline opforge::Tensor f32(const opforge::Dims& shape) { return opforge::Tensor::ones(shape, opforge::DType::Float32); }
inline opforge::Tensor i64(const opforge::Dims& shape) { return opforge::Tensor::zeros(shape, opforge::DType::Int64); }

}  // namespace opforge_tests
