// What an op call takes from the heap once the program is warm: nothing, for
// calls on tiny tensors. Graph nodes, tensor impls and the storage of tensors
// of up to 80 bytes come from per-thread block caches (framework/src/
// block_cache.hpp), contexts and tensor lists keep their few elements inline.
//
// This program replaces the global operator new, so every C++ allocation of the
// process — libopforge's and the plugins' included — is counted while a test
// asks for it, on the thread that asks.
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

#include <opforge/opforge.hpp>

namespace {
thread_local bool t_counting = false;
thread_local std::int64_t t_count = 0;

void* counted(std::size_t n, std::size_t align) {
  if (t_counting) ++t_count;
  if (n == 0) n = 1;
  void* p = align > __STDCPP_DEFAULT_NEW_ALIGNMENT__ ? std::aligned_alloc(align, (n + align - 1) / align * align)
                                                      : std::malloc(n);
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t n) { return counted(n, 0); }
void* operator new[](std::size_t n) { return counted(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) { return counted(n, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return counted(n, static_cast<std::size_t>(a)); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted(n, 0);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted(n, 0);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

using opforge::Context;
using opforge::DType;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;

namespace {

// Heap allocations made by `iters` runs of f, after as many runs to warm up.
template <class F>
std::int64_t allocations(int iters, F&& f) {
  for (int i = 0; i < iters; ++i) f();
  t_count = 0;
  t_counting = true;
  for (int i = 0; i < iters; ++i) f();
  t_counting = false;
  return t_count;
}

// y = 3 x: a user's Function, written the way the README shows it.
class Triple final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override {
    Tensor out = Tensor::empty(in[0].shape(), in[0].dtype());
    out.data<double>()[0] = 3 * in[0].data<double>()[0];
    return {out};
  }
  TensorList backward(Context&, TensorSpan g) const override {
    Tensor out = Tensor::empty(g[0].shape(), g[0].dtype());
    out.data<double>()[0] = 3 * g[0].data<double>()[0];
    return {out};
  }
};

}  // namespace

TEST_CASE("allocations: the counter sees what libopforge allocates", "[alloc]") {
  // A tensor of 32 KB comes from neither the small-block caches (80 bytes and
  // less) nor a block mapped on its own (128 KiB and more): one heap block each.
  CHECK(allocations(4, [] { (void)Tensor::zeros({1 << 12}); }) == 4);
}

TEST_CASE("allocations: op calls on a one-element tensor take nothing from the heap once warm", "[alloc]") {
  const opforge::OpHandle square = opforge::op("elementwise.square");
  const opforge::OpHandle mul = opforge::op("elementwise.mul");
  const opforge::OpHandle sum = opforge::op("reduce.sum");
  const opforge::OpHandle mean = opforge::op("reduce.mean");
  const opforge::OpHandle triple = opforge::make_op(
      opforge::OpSchema("test.triple").input_names({"x"}).accepts({DType::Float64}), std::make_unique<Triple>());
  Tensor x = Tensor::full({1}, 1.5);
  Tensor y = Tensor::full({1}, -0.5);
  x.requires_grad_(true);
  y.requires_grad_(true);

  SECTION("grad mode off") {
    opforge::NoGradGuard no_grad;
    CHECK(allocations(1000, [&] { (void)square(x); }) == 0);
    CHECK(allocations(1000, [&] { (void)mul({x, y}); }) == 0);
  }
  SECTION("recorded, then backward") {
    CHECK(allocations(1000, [&] { square(x).backward(); }) == 0);
    CHECK(allocations(1000, [&] { mul({x, y}).backward(); }) == 0);
    CHECK(allocations(1000, [&] { sum(square(mul({x, y}))).backward(); }) == 0);
    CHECK(allocations(1000, [&] { mean(x).backward(); }) == 0);
    CHECK(allocations(1000, [&] { triple(x).backward(); }) == 0);
  }
  // The gradients are still right after all that recycling.
  x.zero_grad();
  y.zero_grad();
  sum(square(mul({x, y}))).backward();  // d/dx (xy)^2 = 2 x y^2
  CHECK(x.grad().item() == Approx(2 * 1.5 * 0.25));
  CHECK(y.grad().item() == Approx(2 * -0.5 * 2.25));
}

TEST_CASE("allocations: in-place updates (an optimizer's step) take nothing from the heap", "[alloc]") {
  // add_, mul_ and fill_ walk a tensor in its memory order; the sort of its axes
  // once used std::stable_sort, which asked the heap for a buffer on every call.
  Tensor w = Tensor::full({3, 4}, 1.0);
  const Tensor g = Tensor::full({3, 4}, 0.5);
  const Tensor wt = Tensor::full({4, 3}, 1.0).transpose(0, 1);  // a view, walked in its own memory order
  opforge::NoGradGuard no_grad;
  CHECK(allocations(1000, [&] { w.add_(g, -0.01); }) == 0);
  CHECK(allocations(1000, [&] { w.mul_(0.999); }) == 0);
  CHECK(allocations(1000, [&] { w.fill_(1.0); }) == 0);
  CHECK(allocations(1000, [&] { Tensor(wt).mul_(0.999); }) == 0);
  CHECK(w.to_vector() == std::vector<double>(12, 1.0));
}
