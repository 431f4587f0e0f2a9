// Core views (framework/src/views.cpp): transpose, permute, slice, select,
// reshape, view, expand, contiguous. Each view shares its base's storage (no
// copy), with the layout checked against hand-worked shapes, strides and values;
// copies happen only where documented (reshape that the strides forbid,
// contiguous of a strided tensor, clone, to). Views are refused on tensors that
// take part in autograd; writes through a view reach the base and bump the
// shared version counter.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include <opforge/opforge.hpp>

using opforge::AutogradError;
using opforge::Dims;
using opforge::DType;
using opforge::IndexError;
using opforge::ShapeError;
using opforge::Tensor;
using opforge::ValueError;
using Catch::Matchers::Message;
using V = std::vector<double>;

namespace {

// 0, 1, ..., n-1 in `shape` (row-major).
Tensor iota(const Dims& shape, DType dt = DType::Float64) {
  V v(static_cast<std::size_t>(shape.product()));
  std::iota(v.begin(), v.end(), 0.0);
  return Tensor::from_values(v, shape, dt);
}

// Byte address of element `elements` past t's first element (t's dtype).
const char* at(const Tensor& t, std::int64_t elements) {
  return static_cast<const char*>(t.data_ptr()) + elements * static_cast<std::int64_t>(opforge::itemsize(t.dtype()));
}

// Same storage, and the view starts `offset` elements into the base's data.
void check_shares(const Tensor& view, const Tensor& base, std::int64_t offset = 0) {
  CHECK(view.storage() == base.storage());
  CHECK(static_cast<const char*>(view.data_ptr()) == at(base, offset));
  CHECK_FALSE(view.is_same(base));
}

}  // namespace

// ---- transpose and permute --------------------------------------------------------

TEST_CASE("views: transpose swaps shape and strides over the same memory", "[views]") {
  const Tensor a = iota({3, 4});  // [[0,1,2,3],[4,5,6,7],[8,9,10,11]]
  const std::int64_t live = opforge::live_bytes();
  const Tensor t = a.transpose(0, 1);
  CHECK(opforge::live_bytes() == live);  // no data allocated
  check_shares(t, a);
  CHECK(t.shape() == Dims{4, 3});
  CHECK(t.strides() == Dims{1, 4});
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.to_vector() == V{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  // Negative axes; transposing back gives the original layout (contiguous again).
  const Tensor back = t.transpose(-1, -2);
  CHECK(back.shape() == Dims{3, 4});
  CHECK(back.strides() == Dims{4, 1});
  CHECK(back.is_contiguous());
  CHECK(back.to_vector() == a.to_vector());
  // Same axis twice: an identical view.
  CHECK(a.transpose(1, 1).strides() == Dims{4, 1});
  REQUIRE_THROWS_MATCHES(a.transpose(0, 2), IndexError,
                         Message("Tensor::transpose: argument 'axis1': expected an axis in [-2, 2) for a tensor of "
                                 "shape [3, 4], got 2"));
}

TEST_CASE("views: permute reorders every axis (result axis i is input axis order[i])", "[views]") {
  const Tensor a = iota({2, 3, 4});  // strides [12, 4, 1]
  const Tensor p = a.permute({2, 0, 1});
  check_shares(p, a);
  CHECK(p.shape() == Dims{4, 2, 3});
  CHECK(p.strides() == Dims{1, 12, 4});
  CHECK_FALSE(p.is_contiguous());
  // p[i, j, k] = a[j, k, i] = 12 j + 4 k + i
  CHECK(p.to_vector() == V{0, 4, 8, 12, 16, 20,    //
                           1, 5, 9, 13, 17, 21,    //
                           2, 6, 10, 14, 18, 22,   //
                           3, 7, 11, 15, 19, 23});
  // Negative axes count from the end.
  CHECK(a.permute({-1, 0, -2}).strides() == Dims{1, 12, 4});
  // The identity permutation is the same layout.
  CHECK(a.permute({0, 1, 2}).strides() == Dims{12, 4, 1});
  CHECK(a.permute({0, 1, 2}).is_contiguous());
}

TEST_CASE("views: permute refuses a wrong number of axes, a repeated axis, an axis out of range", "[views]") {
  const Tensor a = iota({2, 3, 4});
  REQUIRE_THROWS_MATCHES(a.permute({0, 1}), ShapeError,
                         Message("Tensor::permute: argument 'order': expected 3 axes (one per axis of [2, 3, 4]), "
                                 "got [0, 1]"));
  REQUIRE_THROWS_MATCHES(a.permute({0, 1, 2, 0}), ShapeError,
                         Message("Tensor::permute: argument 'order': expected 3 axes (one per axis of [2, 3, 4]), "
                                 "got [0, 1, 2, 0]"));
  REQUIRE_THROWS_MATCHES(a.permute({0, 0, 1}), ShapeError,
                         Message("Tensor::permute: argument 'order': axis 0 appears twice in [0, 0, 1]"));
  // -3 is axis 0 too.
  REQUIRE_THROWS_MATCHES(a.permute({2, 1, -1}), ShapeError,
                         Message("Tensor::permute: argument 'order': axis 2 appears twice in [2, 1, -1]"));
  REQUIRE_THROWS_MATCHES(a.permute({0, 1, 3}), IndexError,
                         Message("Tensor::permute: argument 'order': expected an axis in [-3, 3) for a tensor of "
                                 "shape [2, 3, 4], got 3"));
}

// ---- slice and select ------------------------------------------------------------------

TEST_CASE("views: slice with positive, negative and clamped bounds", "[views]") {
  const Tensor a = iota({10});
  SECTION("plain") {
    const Tensor s = a.slice(0, 2, 7);
    check_shares(s, a, 2);
    CHECK(s.shape() == Dims{5});
    CHECK(s.strides() == Dims{1});
    CHECK(s.is_contiguous());
    CHECK(s.to_vector() == V{2, 3, 4, 5, 6});
  }
  SECTION("negative start and stop count from the end") {
    const Tensor s = a.slice(0, -3, 10);
    check_shares(s, a, 7);
    CHECK(s.to_vector() == V{7, 8, 9});
    CHECK(a.slice(-1, -4, -1).to_vector() == V{6, 7, 8});  // negative axis too
  }
  SECTION("bounds are clamped as in Python") {
    const Tensor lo = a.slice(0, -100, 3);
    check_shares(lo, a, 0);
    CHECK(lo.to_vector() == V{0, 1, 2});
    const Tensor hi = a.slice(0, 8, 100);
    check_shares(hi, a, 8);
    CHECK(hi.to_vector() == V{8, 9});
    CHECK(a.slice(0, -100, 100).to_vector() == a.to_vector());
  }
  SECTION("step 2 and step 3") {
    const Tensor s2 = a.slice(0, 1, 8, 2);
    check_shares(s2, a, 1);
    CHECK(s2.shape() == Dims{4});
    CHECK(s2.strides() == Dims{2});
    CHECK_FALSE(s2.is_contiguous());
    CHECK(s2.to_vector() == V{1, 3, 5, 7});
    const Tensor s3 = a.slice(0, 0, 10, 3);
    CHECK(s3.shape() == Dims{4});
    CHECK(s3.strides() == Dims{3});
    CHECK(s3.to_vector() == V{0, 3, 6, 9});
    // A slice of a slice composes strides and offsets: elements 1, 5 of 0..9.
    const Tensor s22 = s2.slice(0, 0, 4, 2);
    check_shares(s22, a, 1);
    CHECK(s22.strides() == Dims{4});
    CHECK(s22.to_vector() == V{1, 5});
  }
  SECTION("empty results") {
    const Tensor e = a.slice(0, 5, 2);  // stop before start
    CHECK(e.shape() == Dims{0});
    CHECK(e.numel() == 0);
    CHECK(e.to_vector().empty());
    CHECK(e.storage() == a.storage());
    CHECK(a.slice(0, 10, 20).shape() == Dims{0});
    CHECK(a.slice(0, -1, -5).shape() == Dims{0});
  }
  SECTION("step must be >= 1") {
    REQUIRE_THROWS_MATCHES(a.slice(0, 0, 5, 0), ValueError,
                           Message("Tensor::slice: argument 'step': expected >= 1, got 0"));
    REQUIRE_THROWS_MATCHES(a.slice(0, 5, 0, -1), ValueError,
                           Message("Tensor::slice: argument 'step': expected >= 1, got -1"));
    REQUIRE_THROWS_MATCHES(a.slice(1, 0, 5), IndexError,
                           Message("Tensor::slice: argument 'axis': expected an axis in [-1, 1) for a tensor of "
                                   "shape [10], got 1"));
  }
}

TEST_CASE("views: slice along the inner axis of a matrix is a strided view", "[views]") {
  const Tensor a = iota({3, 4});
  const Tensor s = a.slice(1, 1, 3);  // columns 1 and 2
  check_shares(s, a, 1);
  CHECK(s.shape() == Dims{3, 2});
  CHECK(s.strides() == Dims{4, 1});
  CHECK_FALSE(s.is_contiguous());
  CHECK(s.to_vector() == V{1, 2, 5, 6, 9, 10});
  // Rows 0 and 2 (step 2): strides [8, 1].
  const Tensor r = a.slice(0, 0, 3, 2);
  CHECK(r.strides() == Dims{8, 1});
  CHECK(r.to_vector() == V{0, 1, 2, 3, 8, 9, 10, 11});
}

TEST_CASE("views: select removes the axis, negative indices count from the end", "[views]") {
  const Tensor a = iota({3, 4});
  const Tensor row = a.select(0, 1);
  check_shares(row, a, 4);
  CHECK(row.shape() == Dims{4});
  CHECK(row.strides() == Dims{1});
  CHECK(row.to_vector() == V{4, 5, 6, 7});
  const Tensor col = a.select(1, -1);
  check_shares(col, a, 3);
  CHECK(col.shape() == Dims{3});
  CHECK(col.strides() == Dims{4});
  CHECK_FALSE(col.is_contiguous());
  CHECK(col.to_vector() == V{3, 7, 11});
  // Down to a 0-d tensor.
  const Tensor one = col.select(0, -2);
  check_shares(one, a, 7);
  CHECK(one.dim() == 0);
  CHECK(one.item() == 7.0);

  REQUIRE_THROWS_MATCHES(a.select(0, 3), IndexError,
                         Message("Tensor::select: argument 'index': expected an index in [-3, 3) along axis 0 of "
                                 "[3, 4], got 3"));
  REQUIRE_THROWS_MATCHES(a.select(-1, -5), IndexError,
                         Message("Tensor::select: argument 'index': expected an index in [-4, 4) along axis 1 of "
                                 "[3, 4], got -5"));
  REQUIRE_THROWS_MATCHES(a.select(2, 0), IndexError,
                         Message("Tensor::select: argument 'axis': expected an axis in [-2, 2) for a tensor of "
                                 "shape [3, 4], got 2"));
}

// ---- reshape and view -----------------------------------------------------------------

TEST_CASE("views: reshape of a contiguous tensor is a view, with -1 inferred", "[views]") {
  const Tensor a = iota({3, 4});
  const Tensor r = a.reshape({2, 6});
  check_shares(r, a);
  CHECK(r.shape() == Dims{2, 6});
  CHECK(r.strides() == Dims{6, 1});
  CHECK(r.to_vector() == a.to_vector());
  CHECK(a.reshape({-1}).shape() == Dims{12});
  CHECK(a.reshape({-1}).storage() == a.storage());
  CHECK(a.reshape({4, -1}).shape() == Dims{4, 3});
  CHECK(a.reshape({2, -1, 3}).shape() == Dims{2, 2, 3});
  CHECK(a.reshape({2, -1, 3}).strides() == Dims{6, 3, 1});
  CHECK(a.reshape({1, 12, 1}).strides() == Dims{12, 1, 1});
  // A slice of rows is still contiguous in memory: reshaping it is a view too.
  const Tensor rows = a.slice(0, 1, 3);
  const Tensor flat = rows.reshape({8});
  check_shares(flat, a, 4);
  CHECK(flat.to_vector() == V{4, 5, 6, 7, 8, 9, 10, 11});
}

TEST_CASE("views: reshape copies when the strides forbid a view (a transposed matrix)", "[views]") {
  const Tensor a = iota({3, 4});
  const Tensor t = a.transpose(0, 1);  // [4, 3], strides [1, 4]
  const std::int64_t live = opforge::live_bytes();
  const Tensor flat = t.reshape({12});
  CHECK(opforge::live_bytes() == live + 12 * 8);  // one copy of the data
  CHECK(flat.storage() != a.storage());
  CHECK(flat.data_ptr() != a.data_ptr());
  CHECK(flat.is_contiguous());
  CHECK(flat.strides() == Dims{1});
  CHECK(flat.to_vector() == V{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  CHECK(t.reshape({2, 6}).to_vector() == V{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  // Splitting the (strided) first axis keeps each contiguous run whole: a view.
  // r[i, j, k] = t[2 i + j, k] = a[k, 2 i + j] = 4 k + 2 i + j
  const Tensor r = t.reshape({2, 2, 3});
  check_shares(r, a);
  CHECK(r.strides() == Dims{2, 1, 4});
  CHECK(r.to_vector() == V{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
}

TEST_CASE("views: reshape and view refuse shapes of another size, with their messages", "[views]") {
  const Tensor a = iota({3, 4});
  REQUIRE_THROWS_MATCHES(a.reshape({5, 3}), ShapeError,
                         Message("Tensor::reshape: cannot reshape [3, 4] (12 elements) into [5, 3] (15 elements)"));
  REQUIRE_THROWS_MATCHES(a.reshape({5, -1}), ShapeError,
                         Message("Tensor::reshape: cannot reshape [3, 4] (12 elements) into [5, -1]"));
  REQUIRE_THROWS_MATCHES(a.reshape({-1, -1}), ShapeError,
                         Message("Tensor::reshape: argument 'shape': only one entry may be -1, got [-1, -1]"));
  REQUIRE_THROWS_MATCHES(a.reshape({-2, -6}), ShapeError,
                         Message("Tensor::reshape: argument 'shape': sizes must be >= 0 or -1, got [-2, -6]"));
  REQUIRE_THROWS_MATCHES(a.view({7}), ShapeError,
                         Message("Tensor::view: cannot reshape [3, 4] (12 elements) into [7] (7 elements)"));
}

TEST_CASE("views: view never copies: refused when the strides need a copy", "[views]") {
  const Tensor a = iota({3, 4});
  const Tensor v = a.view({6, 2});
  check_shares(v, a);
  CHECK(v.strides() == Dims{2, 1});
  CHECK(a.view({-1}).strides() == Dims{1});
  const Tensor t = a.transpose(0, 1);
  REQUIRE_THROWS_MATCHES(t.view({12}), ShapeError,
                         Message("Tensor::view: a tensor of shape [4, 3] and strides [1, 4] cannot be viewed as [12] "
                                 "without a copy; use reshape() (which copies when it must) or contiguous() first"));
  REQUIRE_THROWS_MATCHES(a.slice(1, 1, 3).view({6}), ShapeError,
                         Message("Tensor::view: a tensor of shape [3, 2] and strides [4, 1] cannot be viewed as [6] "
                                 "without a copy; use reshape() (which copies when it must) or contiguous() first"));
  // Every other column: one uniform stride of 2, so a view without a copy.
  const Tensor even = a.slice(1, 0, 4, 2).view({6});
  check_shares(even, a);
  CHECK(even.strides() == Dims{2});
  CHECK(even.to_vector() == V{0, 2, 4, 6, 8, 10});
  // Where reshape could be a view, view agrees with it.
  CHECK(t.view({2, 2, 3}).strides() == Dims{2, 1, 4});
}

// ---- expand -------------------------------------------------------------------------------

TEST_CASE("views: expand gives size-1 and new leading axes stride 0", "[views]") {
  const Tensor c = Tensor::from_values({1, 2, 3}, {3, 1});
  const Tensor e = c.expand({3, 4});
  check_shares(e, c);
  CHECK(e.shape() == Dims{3, 4});
  CHECK(e.strides() == Dims{1, 0});
  CHECK_FALSE(e.is_contiguous());
  CHECK(e.to_vector() == V{1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3});
  const Tensor r = Tensor::from_values({5, 6});
  const Tensor e2 = r.expand({2, 3, 2});
  check_shares(e2, r);
  CHECK(e2.strides() == Dims{0, 0, 1});
  CHECK(e2.to_vector() == V{5, 6, 5, 6, 5, 6, 5, 6, 5, 6, 5, 6});
  // Expanding to the same shape keeps the strides.
  CHECK(c.expand({3, 1}).strides() == Dims{1, 1});
  CHECK(c.expand({0, 3, 1}).numel() == 0);
}

TEST_CASE("views: expand refuses a non-1 axis of another size and too few axes", "[views]") {
  const Tensor c = Tensor::from_values({1, 2, 3}, {3, 1});
  REQUIRE_THROWS_MATCHES(c.expand({2, 4}), ShapeError,
                         Message("Tensor::expand: cannot expand [3, 1] to [2, 4]: axis 0 has size 3 (only size-1 "
                                 "axes can be expanded)"));
  REQUIRE_THROWS_MATCHES(c.expand({4}), ShapeError,
                         Message("Tensor::expand: argument 'shape': expected at least 2 axes to expand [3, 1], got "
                                 "[4]"));
  REQUIRE_THROWS_MATCHES(c.expand({-1, 3, 1}), ShapeError,
                         Message("Tensor::expand: argument 'shape': new leading axes must have sizes >= 0, got [-1, "
                                 "3, 1]"));
}

TEST_CASE("views: expand keeps an existing axis for -1 and refuses other negative sizes", "[views]") {
  // Once only the new leading axes were checked for negative sizes: on an
  // existing size-1 axis `have == 1` accepted any target, and expand({3, -2})
  // returned a tensor of shape [3, -2] (numel -6).
  const Tensor c = Tensor::from_values({1, 2, 3}, {3, 1});
  REQUIRE_THROWS_MATCHES(c.expand({3, -2}), ShapeError,
                         Message("Tensor::expand: argument 'shape': sizes must be >= 0 or -1, got [3, -2]"));
  CHECK(c.expand({3, -1}).shape() == Dims{3, 1});
  CHECK(c.expand({2, -1, 4}).shape() == Dims{2, 3, 4});
}

TEST_CASE("views: the core views take what the shape ops take, with or without grad", "[views]") {
  // expand's -1 and permute's [] were accepted by op("shape.expand") and
  // op("shape.permute"), which the views run when the tensor requires grad, but
  // refused by the plain views: the same call depended on requires_grad.
  for (const bool grad : {false, true}) {
    INFO("requires grad: " << grad);
    Tensor x = iota({2, 1, 3});
    x.requires_grad_(grad);
    const Tensor e = x.expand({2, 4, -1});
    CHECK(e.shape() == Dims{2, 4, 3});
    const Tensor p = x.permute({});
    CHECK(p.shape() == Dims{3, 1, 2});
    CHECK(p.detach().to_vector() == x.detach().transpose(0, 2).to_vector());
    CHECK_THROWS_WITH(x.expand({2, -2, 3}), Catch::Matchers::Contains("sizes must be >= 0 or -1, got [2, -2, 3]"));
  }
}

TEST_CASE("views: expand, reshape and slice count elements without overflow", "[views]") {
  // A view may repeat its data (expand's stride 0) but must count its
  // elements: [2^40, 2^40] once came back as a tensor of numel 0 (the product
  // wrapped), and reshaping an empty tensor to [2^32, 2^32] was accepted.
  const std::int64_t big = std::int64_t{1} << 40;
  const Tensor one = Tensor::scalar(2.0);
  REQUIRE_THROWS_MATCHES(one.expand({big, big}), ShapeError,
                         Message("Tensor::expand: argument 'shape': [1099511627776, 1099511627776] has more elements "
                                 "than int64 can count (the product of its sizes overflows)"));
  const Tensor e = one.expand({big, 4});  // 2^42 elements over one double: fine
  CHECK(e.numel() == (std::int64_t{1} << 42));
  CHECK(e.strides() == Dims{0, 0});
  const std::int64_t half = std::int64_t{1} << 32;
  const Tensor empty = Tensor::zeros({0});
  REQUIRE_THROWS_MATCHES(empty.reshape({half, half}), ShapeError,
                         Message("Tensor::reshape: cannot reshape [0] (0 elements) into [4294967296, 4294967296] "
                                 "(the product of its sizes overflows int64)"));
  CHECK(empty.reshape({half, 0}).shape() == Dims{half, 0});  // a 0 makes it empty: allowed
  // A step past the axis's length takes one element (its size was computed
  // as (stop - start + step - 1) / step, which overflowed for huge steps).
  const Tensor v = Tensor::from_values({1, 2, 3, 4, 5}, {5});
  const Tensor first = v.slice(0, 1, 5, std::numeric_limits<std::int64_t>::max());
  CHECK(first.shape() == Dims{1});
  CHECK(first.to_vector() == std::vector<double>{2});
  CHECK(v.slice(0, 3, 2, std::numeric_limits<std::int64_t>::max()).shape() == Dims{0});
  CHECK(v.slice(0, 0, 5, 2).to_vector() == std::vector<double>{1, 3, 5});
  // Through the shape plugin (the recorded path): the op's name leads.
  Tensor x = Tensor::scalar(2.0);
  x.requires_grad_();
  REQUIRE_THROWS_MATCHES(x.expand({big, big}), ShapeError,
                         Message("shape.expand: attribute 'shape': [1099511627776, 1099511627776] has more elements "
                                 "than int64 can count (the product of its sizes overflows)"));
}

// ---- contiguous, clone, to, to_vector on strided views -----------------------------------

TEST_CASE("views: contiguous returns the tensor itself when contiguous, a copy otherwise", "[views]") {
  const Tensor a = iota({3, 4});
  CHECK(a.contiguous().is_same(a));
  const Tensor rows = a.slice(0, 1, 2);  // contiguous slice: itself too
  CHECK(rows.contiguous().is_same(rows));
  const Tensor t = a.transpose(0, 1);
  const Tensor c = t.contiguous();
  CHECK_FALSE(c.is_same(t));
  CHECK(c.storage() != a.storage());
  CHECK(c.is_contiguous());
  CHECK(c.shape() == Dims{4, 3});
  CHECK(c.strides() == Dims{3, 1});
  CHECK(c.to_vector() == V{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  const Tensor e = Tensor::from_values({7, 8}, {2, 1}).expand({2, 3});
  const Tensor ec = e.contiguous();
  CHECK(ec.strides() == Dims{3, 1});
  CHECK(ec.to_vector() == V{7, 7, 7, 8, 8, 8});
}

TEST_CASE("views: clone, to and to_vector read strided views in row-major order", "[views]") {
  Tensor a = iota({3, 4});
  const Tensor s = a.slice(1, 0, 4, 2).transpose(0, 1);  // [2, 3]: columns 0 and 2, transposed
  CHECK(s.shape() == Dims{2, 3});
  CHECK(s.strides() == Dims{2, 4});
  CHECK(s.to_vector() == V{0, 4, 8, 2, 6, 10});
  const Tensor c = s.clone();
  CHECK(c.is_contiguous());
  CHECK(c.storage() != a.storage());
  CHECK(c.strides() == Dims{3, 1});
  CHECK(c.to_vector() == V{0, 4, 8, 2, 6, 10});
  const Tensor f = s.to(DType::Float32);
  CHECK(f.dtype() == DType::Float32);
  CHECK(f.is_contiguous());
  CHECK(f.data<float>()[3] == 2.0f);
  CHECK(f.to_vector() == V{0, 4, 8, 2, 6, 10});
  CHECK(s.to(DType::Float64).is_same(s));  // same dtype: the tensor itself
  // Changing the base is seen by the view, not by the copies.
  a.fill_(-1.0);
  CHECK(s.to_vector() == V(6, -1.0));
  CHECK(c.to_vector() == V{0, 4, 8, 2, 6, 10});
  CHECK(f.to_vector() == V{0, 4, 8, 2, 6, 10});
}

// The core's copy merges axes (whole rows by memcpy) and copies a strided innermost
// axis in 32 x 32 tiles: sizes that are not multiples of the tile, every layout.
TEST_CASE("views: clone and to copy every layout element for element", "[views]") {
  const std::int64_t A = 6, B = 70, C = 45;
  const Tensor base = iota({A, B, C});
  auto at = [&](std::int64_t i, std::int64_t j, std::int64_t k) { return double(i * B * C + j * C + k); };
  auto check3 = [](const Tensor& got, const Dims& shape, auto expected) {
    REQUIRE(got.shape() == shape);
    REQUIRE(got.is_contiguous());
    const V v = got.to_vector();
    std::size_t n = 0, bad = 0;
    for (std::int64_t i = 0; i < shape[0]; ++i)
      for (std::int64_t j = 0; j < shape[1]; ++j)
        for (std::int64_t k = 0; k < shape[2]; ++k) bad += v[n++] != expected(i, j, k);
    CHECK(bad == 0);
  };
  // The innermost axis strided, with an outer axis: the tile path.
  check3(base.permute({2, 0, 1}).clone(), Dims{C, A, B}, [&](auto i, auto j, auto k) { return at(j, k, i); });
  check3(base.transpose(1, 2).clone(), Dims{A, C, B}, [&](auto i, auto j, auto k) { return at(i, k, j); });
  // Rows of the source: whole rows copied, a step between them.
  check3(base.slice(1, 3, B, 4).clone(), Dims{A, 17, C}, [&](auto i, auto j, auto k) { return at(i, 3 + 4 * j, k); });
  // A step on the innermost axis, and axes of size 1 among the others.
  check3(base.slice(2, 1, C, 3).slice(0, 2, 3).clone(), Dims{1, B, 15},
         [&](auto, auto j, auto k) { return at(2, j, 1 + 3 * k); });
  // Converting dtypes on the way, through the tile path and the row path.
  const Tensor f = base.permute({1, 2, 0}).to(DType::Float32);
  CHECK(f.dtype() == DType::Float32);
  check3(f, Dims{B, C, A}, [&](auto i, auto j, auto k) { return at(k, i, j); });
  const Tensor ints = iota({A, B, C}, DType::Int64).transpose(0, 2).to(DType::Float64);
  check3(ints, Dims{C, B, A}, [&](auto i, auto j, auto k) { return at(k, j, i); });
  // An expanded axis (stride 0), innermost and outermost.
  check3(iota({1, B, 1}).expand({A, B, C}).clone(), Dims{A, B, C}, [](auto, auto j, auto) { return double(j); });
  check3(iota({1, 1, C}).expand({A, B, C}).clone(), Dims{A, B, C}, [](auto, auto, auto k) { return double(k); });
  // A 2-D transpose larger than a tile in both directions, and a single element.
  check3(iota({1, 100, 33}).transpose(1, 2).clone(), Dims{1, 33, 100},
         [](auto, auto j, auto k) { return double(k * 33 + j); });
  CHECK(base.slice(0, 5, 6).slice(1, 69, 70).slice(2, 44, 45).clone().to_vector() == V{at(5, 69, 44)});
}

// ---- views and autograd -----------------------------------------------------------------------

TEST_CASE("views: on a tensor that requires grad they are recorded and gradients flow back", "[views]") {
  Tensor w = iota({2, 3}).requires_grad_();
  // Each view, recorded through the shape plugin, is still a view of w's memory,
  // and the gradient of sum(view * c) reaches w where the view reads it.
  const auto grad_of = [&](const Tensor& v) {
    w.zero_grad();
    REQUIRE(v.grad_fn() != nullptr);
    v.backward(Tensor::ones(v.shape()));
    return w.grad().to_vector();
  };
  CHECK(grad_of(w.transpose(0, 1)) == V{1, 1, 1, 1, 1, 1});
  CHECK(grad_of(w.permute({1, 0})) == V{1, 1, 1, 1, 1, 1});
  CHECK(grad_of(w.slice(1, 1, 3)) == V{0, 1, 1, 0, 1, 1});
  CHECK(grad_of(w.select(0, 1)) == V{0, 0, 0, 1, 1, 1});
  CHECK(grad_of(w.reshape({6})) == V{1, 1, 1, 1, 1, 1});
  CHECK(grad_of(w.view({3, 2})) == V{1, 1, 1, 1, 1, 1});
  CHECK(grad_of(w.expand({4, 2, 3})) == V{4, 4, 4, 4, 4, 4});
  CHECK(grad_of(w.transpose(0, 1).contiguous()) == V{1, 1, 1, 1, 1, 1});
  check_shares(w.transpose(0, 1), w);
  // Also on a non-leaf (an op's output): d(sum(w^2 transposed))/dw = 2 w.
  const Tensor h = opforge::op("elementwise.square")({w});
  CHECK(grad_of(h.transpose(0, 1)) == V{0, 2, 4, 6, 8, 10});
  // view() still refuses what would need a copy, recorded or not.
  CHECK_THROWS_AS(w.transpose(0, 1).view({6}), opforge::ShapeError);

  SECTION("allowed under NoGradGuard") {
    opforge::NoGradGuard g;
    const Tensor t = w.transpose(0, 1);
    check_shares(t, w);
    CHECK(t.to_vector() == V{0, 3, 1, 4, 2, 5});
    CHECK(h.reshape({6}).to_vector() == V{0, 1, 4, 9, 16, 25});
    // The view is plain data: no autograd state of its own.
    CHECK_FALSE(t.requires_grad());
    CHECK(t.grad_fn() == nullptr);
  }
  SECTION("allowed after detach()") {
    const Tensor d = w.detach();
    const Tensor t = d.transpose(0, 1);
    check_shares(t, w);
    CHECK(t.to_vector() == V{0, 3, 1, 4, 2, 5});
    CHECK_FALSE(t.requires_grad());
    CHECK(h.detach().select(1, 2).to_vector() == V{4, 25});
  }
}

// ---- writes through views ----------------------------------------------------------------------

TEST_CASE("views: fill_ on a slice is visible in the base and bumps the shared version", "[views]") {
  Tensor a = iota({3, 4});
  const std::uint32_t v0 = a.version();
  Tensor s = a.slice(1, 1, 3);
  CHECK(s.version() == v0);
  s.fill_(-1.0);
  CHECK(a.to_vector() == V{0, -1, -1, 3, 4, -1, -1, 7, 8, -1, -1, 11});
  CHECK(a.version() == v0 + 1);
  CHECK(s.version() == v0 + 1);
  // Another view of the same storage sees the same counter.
  const Tensor t = a.transpose(0, 1);
  CHECK(t.version() == v0 + 1);
  // Writes through other in-place ops and other views.
  t.select(0, 0).copy_(Tensor::from_values({10, 20, 30}));  // column 0 of a
  CHECK(a.to_vector() == V{10, -1, -1, 3, 20, -1, -1, 7, 30, -1, -1, 11});
  a.select(0, 1).add_(Tensor::from_values({1, 1, 1, 1}), 2.0);  // row 1 += 2
  CHECK(a.to_vector() == V{10, -1, -1, 3, 22, 1, 1, 9, 30, -1, -1, 11});
  a.slice(0, 0, 3, 2).mul_(10.0);  // rows 0 and 2
  CHECK(a.to_vector() == V{100, -10, -10, 30, 22, 1, 1, 9, 300, -10, -10, 110});
  CHECK(a.version() == v0 + 4);
  CHECK(s.version() == v0 + 4);
  // A copy has a counter of its own.
  const Tensor c = a.clone();
  s.fill_(0.0);
  CHECK(c.version() == 0);
  CHECK(a.version() == v0 + 5);
}

// ---- int64 and bool ---------------------------------------------------------------------------

TEST_CASE("views: int64 tensors in views, to(dtype) and fill_", "[views]") {
  Tensor i = iota({2, 3}, DType::Int64);
  const Tensor t = i.transpose(0, 1);
  check_shares(t, i);
  CHECK(t.dtype() == DType::Int64);
  CHECK(t.to_vector() == V{0, 3, 1, 4, 2, 5});
  Tensor s = i.reshape({-1}).slice(0, 0, 6, 2);
  CHECK(s.to_vector() == V{0, 2, 4});
  CHECK(i.select(1, -1).to_vector() == V{2, 5});
  CHECK(i.select(0, 1).expand({2, 3}).to_vector() == V{3, 4, 5, 3, 4, 5});
  const Tensor f = t.to(DType::Float64);
  CHECK(f.dtype() == DType::Float64);
  CHECK(f.data<double>()[1] == 3.0);
  const Tensor b = t.to(DType::Bool);
  CHECK(b.dtype() == DType::Bool);
  CHECK(b.to_vector() == V{0, 1, 1, 1, 1, 1});
  s.fill_(-7);
  CHECK(i.data<std::int64_t>()[0] == -7);
  CHECK(i.to_vector() == V{-7, 1, -7, 3, -7, 5});
  CHECK(t.contiguous().data<std::int64_t>()[1] == 3);
}

TEST_CASE("views: bool tensors in views, to(dtype) and fill_", "[views]") {
  Tensor m = Tensor::from_values({1, 0, 1, 1, 0, 0}, {2, 3}, DType::Bool);
  const Tensor t = m.transpose(0, 1);
  check_shares(t, m);
  CHECK(t.dtype() == DType::Bool);
  CHECK(t.to_vector() == V{1, 1, 0, 0, 1, 0});
  CHECK(m.select(1, 0).to_vector() == V{1, 1});
  CHECK(m.slice(1, 1, 3).to_vector() == V{0, 1, 0, 0});
  const Tensor i = t.to(DType::Int64);
  CHECK(i.dtype() == DType::Int64);
  CHECK(i.data<std::int64_t>()[0] == 1);
  CHECK(i.to_vector() == V{1, 1, 0, 0, 1, 0});
  CHECK(t.to(DType::Float32).to_vector() == V{1, 1, 0, 0, 1, 0});
  m.select(0, 1).fill_(1.0);
  CHECK(m.data<bool>()[4]);
  CHECK(t.to_vector() == V{1, 1, 0, 1, 1, 1});
  CHECK(m.reshape({3, 2}).to_vector() == V{1, 0, 1, 1, 1, 1});
}

// ---- writes from an overlapping view of the same storage ----------------------------------------

TEST_CASE("views: copy_ from an overlapping view of the same storage copies the old values",
          "[views]") {
  // Core bug: copy_ reads src while writing dst element by element; when src is
  // a view of dst's own memory (here its transpose), later reads see values
  // already overwritten. Expected [[1, 3], [2, 4]]; the core gives [[1, 3], [3, 4]].
  Tensor a = Tensor::from_values({1, 2, 3, 4}, {2, 2});
  a.copy_(a.transpose(0, 1));
  CHECK(a.to_vector() == V{1, 3, 2, 4});
}

TEST_CASE("views: add_ of an overlapping contiguous view adds the old values", "[views]") {
  // Core bug: add_ uses other.contiguous(), which is `other` itself when it is
  // contiguous, so a shifted view of the same storage is read after being
  // written: a[1:4] += a[0:3] gives a running sum [1, 3, 6, 10], not [1, 3, 5, 7].
  Tensor a = Tensor::from_values({1, 2, 3, 4});
  a.slice(0, 1, 4).add_(a.slice(0, 0, 3));
  CHECK(a.to_vector() == V{1, 3, 5, 7});
}

TEST_CASE("views: copy_ and add_ between two from_blob tensors over one buffer read the old values", "[views]") {
  // Two tensors adopted over one buffer have storages of their own; the overlap
  // check compared storages only, so b = buf[1:5] read a = buf[0:4] after
  // writing into it: b.copy_(a) smeared buf[0] over all of b.
  double buf[5] = {1, 2, 3, 4, 5};
  Tensor a = Tensor::from_blob(buf, {4}, DType::Float64);
  Tensor b = Tensor::from_blob(buf + 1, {4}, DType::Float64);
  b.copy_(a);
  CHECK(std::vector<double>(buf, buf + 5) == V{1, 1, 2, 3, 4});
  b.add_(a);  // a is now [1, 1, 2, 3], b [1, 2, 3, 4]
  CHECK(std::vector<double>(buf, buf + 5) == V{1, 2, 3, 5, 7});
  // Apart (adjacent, not crossing): written directly, same result as ever.
  Tensor c = Tensor::from_blob(buf, {2}, DType::Float64);
  Tensor d = Tensor::from_blob(buf + 2, {3}, DType::Float64);
  c.copy_(d.slice(0, 0, 2));
  CHECK(std::vector<double>(buf, buf + 5) == V{3, 5, 3, 5, 7});
}

TEST_CASE("views: in-place writes into a tensor whose elements share memory are refused", "[views]") {
  // expand() repeats one element: base.expand({3}).add_(ones) once added three
  // times into base, mul_ multiplied it twice over, copy_ kept the last value.
  Tensor base = Tensor::from_values({1});
  const Tensor e = base.expand({3});
  const std::string tail =
      ") has elements that share memory: axis 0 has size 3 and stride 0 (it repeats one element, as a view made "
      "by expand() or a from_blob tensor with a zero stride does); an in-place write would land on one location several times. Write to a tensor of its own "
      "(clone() or contiguous()) instead";
  CHECK_THROWS_WITH(Tensor(e).add_(Tensor::ones({3})), "Tensor::add_: the tensor (" + e.describe() + tail);
  CHECK_THROWS_WITH(Tensor(e).mul_(2), "Tensor::mul_: the tensor (" + e.describe() + tail);
  CHECK_THROWS_WITH(Tensor(e).copy_(Tensor::from_values({1, 2, 3})), "Tensor::copy_: the tensor (" + e.describe() + tail);
  CHECK_THROWS_WITH(Tensor(e).fill_(5), "Tensor::fill_: the tensor (" + e.describe() + tail);
  CHECK(base.item() == 1.0);  // nothing was written
  // Size-1 axes may have any stride: nothing repeats.
  Tensor one = Tensor::from_values({1}).expand({1});
  one.fill_(4);
  CHECK(one.item() == 4.0);

  // Strides of the caller's choosing (from_blob): elements [0, 1] and [1, 0] of
  // a 2 x 2 view with strides {1, 1} are one location.
  std::vector<double> mem{1, 2, 3, 4};
  Tensor window = Tensor::from_blob(mem.data(), {2, 2}, {1, 1}, DType::Float64);
  CHECK_THROWS_WITH(window.fill_(0), Catch::Matchers::Contains("its strides [1, 1] reach one memory location from two "
                                                               "elements"));
  CHECK(mem == std::vector<double>{1, 2, 3, 4});
  // Interleaved but distinct (offsets 0, 3, 2, 5, 4, 7): allowed.
  std::vector<double> mem2(8, 0.0);
  Tensor woven = Tensor::from_blob(mem2.data(), {3, 2}, {2, 3}, DType::Float64);
  woven.fill_(1);
  CHECK(mem2 == std::vector<double>{1, 0, 1, 1, 1, 1, 0, 1});
  // Transposed and sliced views write as before.
  Tensor m = Tensor::zeros({2, 3});
  m.transpose(0, 1).slice(0, 0, 3, 2).fill_(7);
  CHECK(m.to_vector() == std::vector<double>{7, 0, 7, 7, 0, 7});
}

TEST_CASE("views: a recorded contiguous() keeps -0.0", "[views]") {
  // The recorded copy is x + (a 0-d zero); with +0.0, -0.0 + 0.0 gave +0.0, so
  // 1 / x.transpose(0, 1).contiguous() turned -inf into +inf.
  Tensor x = Tensor::from_values({-0.0, 1, -0.0, 3}, {2, 2}).requires_grad_();
  const Tensor c = x.transpose(0, 1).contiguous();
  REQUIRE(c.grad_fn() != nullptr);  // the recorded path
  const std::vector<double> v = c.to_vector();
  CHECK(std::signbit(v[0]));
  CHECK(std::signbit(v[1]));
  CHECK((1.0 / c).to_vector() == std::vector<double>{-INFINITY, -INFINITY, 1, 1.0 / 3});
  c.backward(Tensor::from_values({1, 2, 3, 4}, {2, 2}));
  CHECK(x.grad().to_vector() == std::vector<double>{1, 3, 2, 4});  // the identity, transposed back
}

// fill_, mul_ and add_ walk a view in its memory order (a transposed view row by
// row of its memory): every element of the view written once, nothing else, and
// add_ reading its source through the source's own strides, whatever they are.
TEST_CASE("views: fill_, mul_ and add_ on permuted and sliced views match an element-by-element reference",
          "[views]") {
  const Dims base_shape{6, 5, 8};
  const std::int64_t total = 6 * 5 * 8;
  // The destination views: contiguous, transposed, permuted, sliced with steps, a permuted slice.
  struct View {
    const char* what;
    Tensor (*make)(const Tensor&);
  };
  const std::vector<View> views = {
      {"whole", [](const Tensor& b) { return b; }},
      {"permute(2, 0, 1)", [](const Tensor& b) { return b.permute({2, 0, 1}); }},
      {"transpose(0, 2)", [](const Tensor& b) { return b.transpose(0, 2); }},
      {"slice steps", [](const Tensor& b) { return b.slice(0, 1, 6, 2).slice(2, 0, 8, 3); }},
      {"permuted slice", [](const Tensor& b) { return b.slice(1, 1, 4).permute({1, 2, 0}); }},
      {"select then transpose", [](const Tensor& b) { return b.select(1, 2).transpose(0, 1); }},
  };
  // Row-major positions in the base of the view's elements, in the view's row-major order.
  auto positions = [&](const Tensor& view_of_iota) {
    std::vector<std::int64_t> pos;
    for (double v : view_of_iota.to_vector()) pos.push_back(static_cast<std::int64_t>(v));
    return pos;
  };
  std::vector<double> iota(static_cast<std::size_t>(total));
  std::iota(iota.begin(), iota.end(), 0.0);
  const Tensor index_base = Tensor::from_values(iota, base_shape);
  for (const DType dtype : {DType::Float64, DType::Float32}) {
    for (const View& v : views) {
      INFO(v.what << " " << opforge::dtype_name(dtype));
      const std::vector<std::int64_t> pos = positions(v.make(index_base));
      const Tensor start = Tensor::randn(base_shape, dtype, 3);
      const std::vector<double> before = start.to_vector();
      {  // fill_
        Tensor base = start.clone();
        v.make(base).fill_(2.5);
        std::vector<double> want = before;
        for (std::int64_t p : pos) want[static_cast<std::size_t>(p)] = 2.5;
        CHECK(base.to_vector() == want);
      }
      {  // mul_
        Tensor base = start.clone();
        v.make(base).mul_(-3.0);
        std::vector<double> want = before;
        for (std::int64_t p : pos) want[static_cast<std::size_t>(p)] = static_cast<double>(
                                       dtype == DType::Float32 ? static_cast<float>(want[p]) * -3.0f : want[p] * -3.0);
        CHECK(base.to_vector() == want);
      }
      // add_ from sources of every layout: contiguous, transposed back, expanded.
      const Tensor view_shape_probe = v.make(index_base);
      const Dims shape = view_shape_probe.shape();
      const std::int64_t r = view_shape_probe.dim();
      std::vector<Tensor> sources = {Tensor::randn(shape, dtype, 4)};
      if (r >= 2) {
        Dims flipped = shape;
        std::swap(flipped[0], flipped[static_cast<std::size_t>(r - 1)]);
        sources.push_back(Tensor::randn(flipped, dtype, 5).transpose(0, r - 1));
        Dims one = shape;
        one[0] = 1;
        sources.push_back(Tensor::randn(one, dtype, 6).expand(shape));
      }
      for (std::size_t k = 0; k < sources.size(); ++k) {
        INFO("source " << k);
        Tensor base = start.clone();
        v.make(base).add_(sources[k], 0.5);
        const std::vector<double> src = sources[k].to_vector();  // in the view's row-major order
        std::vector<double> want = before;
        for (std::size_t i = 0; i < pos.size(); ++i) {
          double& w = want[static_cast<std::size_t>(pos[i])];
          w = dtype == DType::Float32 ? static_cast<double>(static_cast<float>(w) + 0.5f * static_cast<float>(src[i]))
                                      : w + 0.5 * src[i];
        }
        CHECK(base.to_vector() == want);
      }
    }
  }
}

TEST_CASE("views: add_ tells a shape mismatch from a dtype mismatch", "[views]") {
  // Both were a ShapeError 'expected float64[3], got float32[3]'.
  Tensor a = Tensor::from_values({1, 2, 3});
  CHECK_THROWS_MATCHES(a.add_(Tensor::from_values({1, 2, 3}, DType::Float32)), opforge::DTypeError,
                       Catch::Matchers::Message("Tensor::add_: argument 'other': expected dtype float64 (this "
                                                "tensor's), got float32; convert it first with other.to()"));
  CHECK_THROWS_MATCHES(a.add_(Tensor::from_values({1, 2})), opforge::ShapeError,
                       Catch::Matchers::Message("Tensor::add_: argument 'other': expected shape [3] (this tensor's), "
                                                "got float64[2]"));
  CHECK(a.to_vector() == std::vector<double>{1, 2, 3});
}

TEST_CASE("views: add_ and mul_ on int64 take whole numbers, wrap on overflow, and refuse fractions and bool",
          "[views]") {
  // They were refused on int64 ('expected dtype float32 or float64'), which
  // PyTorch and NumPy allow; a fraction would truncate, so it is refused.
  Tensor a = Tensor::from_values({1, -2, 3, 4}, DType::Int64).reshape({2, 2});
  const Tensor b = Tensor::from_values({10, 20, 30, 40}, DType::Int64).reshape({2, 2});
  a.transpose(0, 1).add_(b, 3.0);  // a^T += 3 b: a[i][j] += 3 b[j][i]
  CHECK(a.to_vector() == std::vector<double>{31, 88, 63, 124});
  a.mul_(-2.0);
  CHECK(a.to_vector() == std::vector<double>{-62, -176, -126, -248});
  // Wraps as two's complement (no undefined behaviour): int64 max + 1 is min.
  Tensor big = Tensor::full({1}, 0.0, DType::Int64);
  big.fill_(4611686018427387904.0);  // 2^62
  big.mul_(2.0);                     // 2^63 wraps to -2^63
  CHECK(static_cast<const std::int64_t*>(big.data_ptr())[0] == std::numeric_limits<std::int64_t>::min());
  const std::uint32_t version = a.version();
  CHECK_THROWS_MATCHES(a.mul_(0.5), opforge::ValueError,
                       Catch::Matchers::Message("Tensor::mul_: argument 'factor': expected a whole number in int64's "
                                                "range for an int64 tensor, got 0.5; convert the tensor to a floating "
                                                "dtype first with .to()"));
  CHECK_THROWS_MATCHES(a.add_(b, 1e19), opforge::ValueError,
                       Catch::Matchers::Message("Tensor::add_: argument 'alpha': expected a whole number in int64's "
                                                "range for an int64 tensor, got 1e+19; convert the tensor to a "
                                                "floating dtype first with .to()"));
  CHECK(a.version() == version);  // refused before writing
  CHECK(a.to_vector() == std::vector<double>{-62, -176, -126, -248});
  Tensor flags = Tensor::from_values({1, 0}, DType::Bool);
  CHECK_THROWS_MATCHES(flags.mul_(1.0), opforge::DTypeError,
                       Catch::Matchers::Message("Tensor::mul_: expected dtype float32, float64 or int64, got bool; "
                                                "convert the tensor first with .to()"));
  // Floating tensors keep the sign of zero: -0.0 * 2 is -0.0.
  Tensor z = Tensor::from_values({-0.0, 1.5});
  z.mul_(2.0);
  CHECK(std::signbit(z.to_vector()[0]));
}
