// Assertions shared by the op-family tests: an op passes gradcheck on every
// floating element of its inputs, and passes every check of the harness.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
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

enum class Skipped { allowed, refused };

/// Every check of sdk::check_op passes; with Skipped::refused none may be skipped.
inline void require_all_checks_pass(const opforge::OpHandle& op, Skipped skipped = Skipped::allowed) {
  const opforge::sdk::CheckReport report = opforge::sdk::check_op(op);
  REQUIRE(report.size() == opforge::sdk::check_names().size());
  for (const auto& r : report) {
    INFO(opforge::sdk::format_result(r));
    CHECK(r.passed);
    if (skipped == Skipped::refused) CHECK_FALSE(r.skipped);
  }
  REQUIRE(opforge::sdk::all_passed(report));
}

}  // namespace opforge_tests
