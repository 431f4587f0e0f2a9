// "crashy": crashy.segv(x) = 2 x on its first call, then a segmentation fault
// (what a race on a static or a wild index does to a real op): `opforge check`
// must say which op and which check were running when the process died.
#include <atomic>
#include <csignal>

#include <opforge/sdk.hpp>

namespace {

std::atomic<int> g_calls{0};

class Segv final : public opforge::Function {
 public:
  opforge::TensorList forward(opforge::Context&, opforge::TensorSpan in) const override {
    if (g_calls.fetch_add(1) > 0) std::raise(SIGSEGV);  // the second call dies
    return {in[0] * 2.0};
  }
  opforge::TensorList backward(opforge::Context&, opforge::TensorSpan g) const override { return {g[0] * 2.0}; }
};

}  // namespace

OPFORGE_PLUGIN("crashy", "1.0.0") {
  registrar.add<Segv>(opforge::OpSchema("crashy.segv").input_names({"x"}).describe("2 x once, then SIGSEGV"));
}
