// Zero-copy interop: Tensor::from_blob (adopted and borrowed memory), DLPack
// export and import (opforge::to_dlpack / from_dlpack, framework/src/dlpack.cpp),
// and the SDK's xtensor adaptors over tensor memory. Each test checks that no
// data is copied (the same data pointer) and that every owner's deleter runs
// exactly once, at the right moment, and never on a refused import.
#include <catch2/catch.hpp>

#include <dlpack/dlpack.h>

#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include <opforge/opforge.hpp>
#include <opforge/sdk/views.hpp>

using opforge::Dims;
using opforge::DType;
using opforge::Tensor;
using Catch::Matchers::Message;
using V = std::vector<double>;

namespace {

// Counts deleter calls and remembers the pointer they were given.
struct Counter {
  int calls = 0;
  void* last = nullptr;
};
void count_deleter(void* data, void* ctx) {
  auto* c = static_cast<Counter*>(ctx);
  ++c->calls;
  c->last = data;
}

// A DLPack producer made by hand: its own buffer, shape and strides, and a
// deleter that counts its calls (the memory itself lives in the struct).
struct Producer {
  double data[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  std::int64_t shape[9] = {3, 4};
  std::int64_t strides[9] = {4, 1};
  int deleted = 0;
  DLManagedTensor managed{};

  Producer() {
    DLTensor& d = managed.dl_tensor;
    d.data = data;
    d.device = {kDLCPU, 0};
    d.ndim = 2;
    d.dtype = {kDLFloat, 64, 1};
    d.shape = shape;
    d.strides = strides;
    d.byte_offset = 0;
    managed.manager_ctx = this;
    managed.deleter = [](DLManagedTensor* self) { ++static_cast<Producer*>(self->manager_ctx)->deleted; };
  }
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;
};

Tensor iota(const Dims& shape, DType dt = DType::Float64) {
  V v(static_cast<std::size_t>(shape.product()));
  std::iota(v.begin(), v.end(), 0.0);
  return Tensor::from_values(v, shape, dt);
}

}  // namespace

// ---- from_blob ---------------------------------------------------------------------------

TEST_CASE("interop: from_blob adopts memory without a copy and calls the deleter once, after the last view",
          "[interop]") {
  Counter counter;
  auto* buf = new double[6]{1, 2, 3, 4, 5, 6};
  const std::int64_t live = opforge::live_bytes();
  {
    Tensor t = Tensor::from_blob(buf, {2, 3}, DType::Float64,
                                 [](void* p, void* ctx) {
                                   count_deleter(p, ctx);
                                   delete[] static_cast<double*>(p);
                                 },
                                 &counter);
    CHECK(t.data_ptr() == buf);
    CHECK(t.shape() == Dims{2, 3});
    CHECK(t.strides() == Dims{3, 1});
    CHECK(t.is_contiguous());
    CHECK(opforge::live_bytes() == live);  // adopted memory is not opforge's allocation
    // Writes through either side are seen by the other: one buffer.
    buf[4] = 50;
    CHECK(t.to_vector() == V{1, 2, 3, 4, 50, 6});
    t.select(0, 0).fill_(0.0);
    CHECK(buf[0] == 0.0);
    CHECK(buf[2] == 0.0);

    Tensor tr = t.transpose(0, 1);
    Tensor last = tr.slice(0, 1, 3).select(1, 1);  // a view of a view of a view
    CHECK(last.to_vector() == V{50, 6});
    CHECK(static_cast<double*>(last.data_ptr()) == buf + 4);
    const Tensor copy = t.clone();  // a copy does not hold the buffer
    t = Tensor();
    CHECK(counter.calls == 0);
    tr = Tensor();
    CHECK(counter.calls == 0);
    CHECK(last.to_vector() == V{50, 6});  // still valid memory
    last = Tensor();
    CHECK(counter.calls == 1);
    CHECK(counter.last == buf);
    CHECK(copy.to_vector() == V{0, 0, 0, 4, 50, 6});
  }
  CHECK(counter.calls == 1);
  CHECK(opforge::live_bytes() == live);
}

TEST_CASE("interop: a graph that saved an adopted tensor keeps the memory until the graph is gone", "[interop]") {
  Counter counter;
  static double buf[3] = {1, 2, 3};
  Tensor x = Tensor::from_blob(buf, {3}, DType::Float64, count_deleter, &counter);
  x.requires_grad_();
  Tensor y = opforge::op("elementwise.square")({x});  // saves x for backward
  x = Tensor();
  CHECK(counter.calls == 0);  // the node's Context holds x
  y = Tensor();
  CHECK(counter.calls == 1);
  CHECK(counter.last == buf);
}

TEST_CASE("interop: from_blob with strides, and with a null deleter (borrowed memory)", "[interop]") {
  double buf[6] = {0, 1, 2, 3, 4, 5};
  {
    // Column-major 2 x 3: element [i, j] at i + 2 j.
    Tensor t = Tensor::from_blob(buf, {2, 3}, {1, 2}, DType::Float64);
    CHECK(t.data_ptr() == buf);
    CHECK(t.strides() == Dims{1, 2});
    CHECK_FALSE(t.is_contiguous());
    CHECK(t.to_vector() == V{0, 2, 4, 1, 3, 5});
    t.fill_(9.0);
  }
  // The tensor is gone; the buffer is still ours, written through, not freed.
  for (double v : buf) CHECK(v == 9.0);
  std::int64_t ints[4] = {5, 6, 7, 8};
  Tensor ti = Tensor::from_blob(ints, {2, 2}, DType::Int64);
  CHECK(ti.data_ptr() == ints);
  CHECK(ti.transpose(0, 1).to_vector() == V{5, 7, 6, 8});
  ti = Tensor();
  CHECK(ints[3] == 8);
}

TEST_CASE("interop: from_blob errors do not adopt the memory (no deleter call)", "[interop]") {
  Counter counter;
  double buf[4] = {};
  REQUIRE_THROWS_MATCHES(Tensor::from_blob(buf, {2, 2}, {1}, DType::Float64, count_deleter, &counter),
                         opforge::ShapeError,
                         Message("Tensor::from_blob: argument 'strides': expected 2 strides for shape [2, 2], got "
                                 "[1]"));
  REQUIRE_THROWS_MATCHES(Tensor::from_blob(nullptr, {2, 3}, DType::Float64, count_deleter, &counter),
                         opforge::ValueError,
                         Message("Tensor::from_blob: argument 'data': expected a pointer, got null for 6 elements"));
  REQUIRE_THROWS_MATCHES(Tensor::from_blob(buf, {2}, {-1}, DType::Float64, count_deleter, &counter),
                         opforge::ShapeError,
                         Message("Tensor::from_blob: shape [2] and strides [-1] must be >= 0"));
  const std::int64_t big = std::int64_t{1} << 40;
  REQUIRE_THROWS_MATCHES(Tensor::from_blob(buf, {big, big}, {0, 0}, DType::Float64, count_deleter, &counter),
                         opforge::ShapeError,
                         Message("Tensor::from_blob: argument 'shape': [1099511627776, 1099511627776] has more "
                                 "elements than int64 can count (the product of its sizes overflows)"));
  REQUIRE_THROWS_MATCHES(Tensor::from_blob(buf, {4}, {std::int64_t{1} << 61}, DType::Float64, count_deleter, &counter),
                         opforge::ShapeError,
                         Message("Tensor::from_blob: shape [4] with strides [2305843009213693952] reaches more than "
                                 "2^63 bytes past 'data'"));
  // Bool bytes other than 0 and 1 (a mask of 2 and 255 once summed to 258).
  unsigned char mask[4] = {0, 1, 2, 255};
  REQUIRE_THROWS_MATCHES(Tensor::from_blob(mask, {4}, DType::Bool, count_deleter, &counter), opforge::DTypeError,
                         Message("Tensor::from_blob: argument 'data': bool elements must hold 0 or 1 in each byte; "
                                 "the byte 2 past 'data' is 2 (make it a 0/1 mask first, or adopt the bytes as "
                                 "another dtype)"));
  CHECK(counter.calls == 0);
  // Only the bytes the view reaches are read: a strided view over the 0/1 ones is taken.
  CHECK(Tensor::from_blob(mask, {2}, {1}, DType::Bool).to(DType::Float64).sum().item() == 1.0);
}

// Backward adds into a gradient only where it is opforge's own memory: a hook's
// result or a .grad over the caller's buffer (from_blob) is never written to.
TEST_CASE("interop: backward never accumulates into memory the caller adopted into a tensor", "[interop]") {
  static double ext[3] = {1, 1, 1};
  Tensor w = Tensor::from_values({1, 2, 3}).requires_grad_();
  w.register_hook([](const Tensor&) { return Tensor::from_blob(ext, {3}, DType::Float64); });
  for (int pass = 0; pass < 3; ++pass) (w * w).sum().backward();
  CHECK(w.grad().to_vector() == std::vector<double>{3, 3, 3});
  CHECK(ext[0] == 1.0);
  // set_grad over a caller's buffer, then backward: the buffer stays as it was.
  double buf[3] = {10, 20, 30};
  Tensor v = Tensor::from_values({1, 2, 3}).requires_grad_();
  v.set_grad(Tensor::from_blob(buf, {3}, DType::Float64));
  (v * v).sum().backward();
  CHECK(v.grad().to_vector() == std::vector<double>{12, 24, 36});
  CHECK(buf[0] == 10.0);
}

// ---- DLPack export ------------------------------------------------------------------------

TEST_CASE("interop: to_dlpack shares the data pointer and describes shape, strides and dtype", "[interop]") {
  const Tensor t = iota({2, 3});
  DLManagedTensor* dl = opforge::to_dlpack(t);
  REQUIRE(dl != nullptr);
  const DLTensor& d = dl->dl_tensor;
  CHECK(d.data == t.data_ptr());
  CHECK(d.byte_offset == 0);
  CHECK(d.device.device_type == kDLCPU);
  CHECK(d.device.device_id == 0);
  CHECK(d.ndim == 2);
  CHECK(d.shape[0] == 2);
  CHECK(d.shape[1] == 3);
  REQUIRE(d.strides != nullptr);
  CHECK(d.strides[0] == 3);
  CHECK(d.strides[1] == 1);
  CHECK(d.dtype.code == kDLFloat);
  CHECK(d.dtype.bits == 64);
  CHECK(d.dtype.lanes == 1);
  CHECK(static_cast<const double*>(d.data)[5] == 5.0);
  dl->deleter(dl);

  // A strided view: its own strides, data at its first element.
  const Tensor v = t.transpose(0, 1).slice(0, 1, 3);  // [2, 2]: t[:, 1:3] transposed
  dl = opforge::to_dlpack(v);
  CHECK(dl->dl_tensor.data == v.data_ptr());
  CHECK(static_cast<const double*>(dl->dl_tensor.data) == t.data<double>() + 1);
  CHECK(dl->dl_tensor.shape[0] == 2);
  CHECK(dl->dl_tensor.shape[1] == 2);
  CHECK(dl->dl_tensor.strides[0] == 1);
  CHECK(dl->dl_tensor.strides[1] == 3);
  dl->deleter(dl);

  // Other dtypes (bool goes out as uint8), and a 0-d tensor.
  struct Case {
    DType dt;
    std::uint8_t code, bits;
  };
  for (const Case& c : {Case{DType::Float32, kDLFloat, 32}, Case{DType::Int64, kDLInt, 64},
                        Case{DType::Bool, kDLUInt, 8}}) {
    CAPTURE(opforge::dtype_name(c.dt));
    const Tensor x = Tensor::ones({4}, c.dt);
    DLManagedTensor* m = opforge::to_dlpack(x);
    CHECK(m->dl_tensor.data == x.data_ptr());
    CHECK(m->dl_tensor.dtype.code == c.code);
    CHECK(m->dl_tensor.dtype.bits == c.bits);
    CHECK(m->dl_tensor.dtype.lanes == 1);
    m->deleter(m);
  }
  const Tensor s = Tensor::scalar(2.5);
  DLManagedTensor* m = opforge::to_dlpack(s);
  CHECK(m->dl_tensor.ndim == 0);
  CHECK(*static_cast<const double*>(m->dl_tensor.data) == 2.5);
  m->deleter(m);
}

TEST_CASE("interop: to_dlpack keeps the storage alive after the tensor is dropped, its deleter frees it once",
          "[interop]") {
  const std::int64_t base = opforge::live_bytes();
  DLManagedTensor* dl = nullptr;
  {
    Tensor t = Tensor::full({1000}, 3.5);
    dl = opforge::to_dlpack(t);
    CHECK(opforge::live_bytes() - base == 8000);
  }
  // The only owner left is the exported tensor.
  CHECK(opforge::live_bytes() - base == 8000);
  const double* p = static_cast<const double*>(dl->dl_tensor.data);
  CHECK(p[0] == 3.5);
  CHECK(p[999] == 3.5);
  dl->deleter(dl);
  CHECK(opforge::live_bytes() == base);  // freed, and only once

  // Exporting a tensor that requires grad exports its data (not the graph).
  Tensor w = Tensor::from_values({1, 2}).requires_grad_();
  dl = opforge::to_dlpack(w);
  CHECK(dl->dl_tensor.data == w.data_ptr());
  CHECK(w.requires_grad());
  dl->deleter(dl);
  w = Tensor();
  CHECK(opforge::live_bytes() == base);
}

// ---- DLPack import ------------------------------------------------------------------------

TEST_CASE("interop: from_dlpack shares the producer's memory and calls its deleter once, when the last view dies",
          "[interop]") {
  Producer p;
  SECTION("with strides") {
    Tensor t = opforge::from_dlpack(&p.managed);
    CHECK(t.data_ptr() == p.data);
    CHECK(t.shape() == Dims{3, 4});
    CHECK(t.strides() == Dims{4, 1});
    CHECK(t.dtype() == DType::Float64);
    CHECK(t.to_vector() == V{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
    p.data[0] = -1;
    CHECK(t.to_vector()[0] == -1.0);
    Tensor col = t.select(1, 2);
    t = Tensor();
    CHECK(p.deleted == 0);
    CHECK(col.to_vector() == V{2, 6, 10});
    col = Tensor();
    CHECK(p.deleted == 1);
  }
  SECTION("without strides (compact row-major)") {
    p.managed.dl_tensor.strides = nullptr;
    p.shape[0] = 2;
    p.shape[1] = 6;
    Tensor t = opforge::from_dlpack(&p.managed);
    CHECK(t.data_ptr() == p.data);
    CHECK(t.shape() == Dims{2, 6});
    CHECK(t.strides() == Dims{6, 1});
    CHECK(t.select(0, 1).to_vector() == V{6, 7, 8, 9, 10, 11});
    t = Tensor();
    CHECK(p.deleted == 1);
  }
  SECTION("non-contiguous strides and a byte_offset") {
    // The 2 x 3 block starting at element 1, read column-major-ish: [i, j] at 1 + i + 4 j.
    p.shape[0] = 2;
    p.shape[1] = 3;
    p.strides[0] = 1;
    p.strides[1] = 4;
    p.managed.dl_tensor.byte_offset = sizeof(double);
    Tensor t = opforge::from_dlpack(&p.managed);
    CHECK(t.data_ptr() == p.data + 1);
    CHECK_FALSE(t.is_contiguous());
    CHECK(t.to_vector() == V{1, 5, 9, 2, 6, 10});
    const Tensor c = t.clone();  // the copy does not keep the producer
    t = Tensor();
    CHECK(p.deleted == 1);
    CHECK(c.to_vector() == V{1, 5, 9, 2, 6, 10});
  }
  SECTION("0-d, with no shape or strides arrays") {
    p.managed.dl_tensor.ndim = 0;
    p.managed.dl_tensor.shape = nullptr;
    p.managed.dl_tensor.strides = nullptr;
    Tensor t = opforge::from_dlpack(&p.managed);
    CHECK(t.dim() == 0);
    CHECK(t.data_ptr() == p.data);
    CHECK(t.item() == 0.0);
    t = Tensor();
    CHECK(p.deleted == 1);
  }
  SECTION("int64 and uint8 (as bool)") {
    std::int64_t ints[3] = {4, -5, 6};
    p.managed.dl_tensor.data = ints;
    p.managed.dl_tensor.ndim = 1;
    p.shape[0] = 3;
    p.strides[0] = 1;
    p.managed.dl_tensor.dtype = {kDLInt, 64, 1};
    Tensor t = opforge::from_dlpack(&p.managed);
    CHECK(t.dtype() == DType::Int64);
    CHECK(t.data_ptr() == ints);
    CHECK(t.to_vector() == V{4, -5, 6});
    t = Tensor();
    CHECK(p.deleted == 1);
    std::uint8_t bytes[3] = {1, 0, 1};
    p.managed.dl_tensor.data = bytes;
    p.managed.dl_tensor.dtype = {kDLUInt, 8, 1};
    Tensor b = opforge::from_dlpack(&p.managed);
    CHECK(b.dtype() == DType::Bool);
    CHECK(b.data_ptr() == bytes);
    CHECK(b.to_vector() == V{1, 0, 1});
    b = Tensor();
    CHECK(p.deleted == 2);
    p.managed.dl_tensor.dtype = {6, 8, 1};  // DLPack 0.8's bool
    Tensor c = opforge::from_dlpack(&p.managed);
    CHECK(c.dtype() == DType::Bool);
    CHECK(c.to_vector() == V{1, 0, 1});
    c = Tensor();
    CHECK(p.deleted == 3);
  }
  SECTION("uint8 or bool data other than 0 and 1 is refused, and not taken over") {
    // opforge's bool kernels rely on 0/1 bytes (where() selects by bit masks):
    // uint8 data [0, 1, 2, 255] once came in as a bool tensor and broke them.
    std::uint8_t bytes[6] = {1, 0, 1, 0, 2, 255};
    p.managed.dl_tensor.data = bytes;
    p.managed.dl_tensor.ndim = 2;
    p.shape[0] = 2;
    p.shape[1] = 2;
    p.strides[0] = 4;  // rows [1, 0] and [2, 255]: the bad values are in the second row
    p.strides[1] = 1;
    p.managed.dl_tensor.dtype = {kDLUInt, 8, 1};
    REQUIRE_THROWS_MATCHES(opforge::from_dlpack(&p.managed), opforge::DTypeError,
                           Message("from_dlpack: argument 'dl': uint8 data is imported as bool, whose elements must "
                                   "be 0 or 1; the byte 4 past the start is 2 (opforge has no uint8 dtype: export it "
                                   "as int64, or as a 0/1 mask)"));
    p.managed.dl_tensor.dtype = {6, 8, 1};
    REQUIRE_THROWS_MATCHES(opforge::from_dlpack(&p.managed), opforge::DTypeError,
                           Message("from_dlpack: argument 'dl': bool data must hold 0 or 1 in each byte; the byte 4 "
                                   "past the start is 2"));
    CHECK(p.deleted == 0);  // refused: the caller still owns it
    p.strides[0] = 2;       // rows [1, 0] and [1, 0]: accepted, through the strides
    Tensor t = opforge::from_dlpack(&p.managed);
    CHECK(t.to_vector() == V{1, 0, 1, 0});
  }
}

TEST_CASE("interop: to_dlpack then from_dlpack round-trips the same memory and frees it once", "[interop]") {
  const std::int64_t base = opforge::live_bytes();
  {
    Tensor t = iota({4, 5});
    void* data = t.data_ptr();
    Tensor back = opforge::from_dlpack(opforge::to_dlpack(t));
    CHECK(back.data_ptr() == data);
    CHECK(back.shape() == Dims{4, 5});
    CHECK(back.strides() == Dims{5, 1});
    CHECK(back.to_vector() == t.to_vector());
    t.select(0, 0).fill_(-2.0);  // one buffer: seen through both
    CHECK(back.to_vector()[4] == -2.0);
    t = Tensor();
    CHECK(opforge::live_bytes() - base == 20 * 8);  // `back` keeps the original alive
    Tensor view = back.transpose(0, 1);
    back = Tensor();
    CHECK(opforge::live_bytes() - base == 20 * 8);
    CHECK(view.to_vector()[1] == 5.0);
  }
  CHECK(opforge::live_bytes() == base);  // released exactly once
  // A round trip of a strided view keeps its layout.
  const Tensor a = iota({3, 4});
  const Tensor v = a.slice(1, 1, 4, 2);
  const Tensor w = opforge::from_dlpack(opforge::to_dlpack(v));
  CHECK(w.data_ptr() == v.data_ptr());
  CHECK(w.strides() == Dims{4, 2});
  CHECK(w.to_vector() == V{1, 3, 5, 7, 9, 11});
  // The round trip is a view of the same storage, version counter included: an
  // in-place write through it is seen by a graph that saved the original.
  Tensor x = Tensor::from_values({1, 2, 3});
  Tensor wl = Tensor::from_values({1, 1, 1}).requires_grad_();
  const Tensor loss = (wl * x).sum();  // mul saves x for wl's gradient
  Tensor x2 = opforge::from_dlpack(opforge::to_dlpack(x));
  x2.mul_(5.0);
  CHECK(x.version() == x2.version());
  CHECK_THROWS_WITH(loss.backward(), Catch::Matchers::Contains("modified in place"));
  // bool leaves as uint8 and comes back as bool.
  const Tensor m = Tensor::from_values({1, 0, 1}, DType::Bool);
  const Tensor mb = opforge::from_dlpack(opforge::to_dlpack(m));
  CHECK(mb.dtype() == DType::Bool);
  CHECK(mb.data_ptr() == m.data_ptr());
  CHECK(mb.to_vector() == V{1, 0, 1});
}

TEST_CASE("interop: from_dlpack refusals give their messages and leave the deleter to the caller", "[interop]") {
  Producer p;
  SECTION("null") {
    REQUIRE_THROWS_MATCHES(opforge::from_dlpack(nullptr), opforge::ValueError,
                           Message("from_dlpack: argument 'dl' is null"));
  }
  SECTION("GPU memory") {
    p.managed.dl_tensor.device = {kDLCUDA, 0};
    REQUIRE_THROWS_MATCHES(opforge::from_dlpack(&p.managed), opforge::ValueError,
                           Message("from_dlpack: argument 'dl': expected CPU memory (device type 1), got device "
                                   "type 2"));
  }
  SECTION("unsupported dtype") {
    p.managed.dl_tensor.dtype = {kDLFloat, 16, 1};
    REQUIRE_THROWS_MATCHES(opforge::from_dlpack(&p.managed), opforge::DTypeError,
                           Message("from_dlpack: argument 'dl': expected float32, float64, int64, bool or uint8 data, got "
                                   "type code 2 with 16 bits"));
    p.managed.dl_tensor.dtype = {kDLInt, 32, 1};
    REQUIRE_THROWS_MATCHES(opforge::from_dlpack(&p.managed), opforge::DTypeError,
                           Message("from_dlpack: argument 'dl': expected float32, float64, int64, bool or uint8 data, got "
                                   "type code 0 with 32 bits"));
    p.managed.dl_tensor.dtype = {kDLFloat, 64, 4};
    REQUIRE_THROWS_MATCHES(opforge::from_dlpack(&p.managed), opforge::DTypeError,
                           Message("from_dlpack: argument 'dl': expected one lane, got 4"));
  }
  SECTION("too many dimensions") {
    p.managed.dl_tensor.ndim = 9;
    for (int i = 0; i < 9; ++i) p.shape[i] = 1;
    p.managed.dl_tensor.strides = nullptr;
    REQUIRE_THROWS_MATCHES(opforge::from_dlpack(&p.managed), opforge::ShapeError,
                           Message("from_dlpack: argument 'dl': expected 0 to 8 dimensions, got 9"));
    p.managed.dl_tensor.ndim = -1;
    REQUIRE_THROWS_MATCHES(opforge::from_dlpack(&p.managed), opforge::ShapeError,
                           Message("from_dlpack: argument 'dl': expected 0 to 8 dimensions, got -1"));
  }
  SECTION("a null shape, null data, a shape too large to count, misaligned data") {
    // Each was read before it was checked: a crash, or a loop over 2^124 elements.
    p.managed.dl_tensor.shape = nullptr;
    REQUIRE_THROWS_MATCHES(opforge::from_dlpack(&p.managed), opforge::ShapeError,
                           Message("from_dlpack: argument 'dl': its shape is null for 2 dimensions"));
    p.managed.dl_tensor.shape = p.shape;
    for (const DLDataType t : {DLDataType{kDLUInt, 8, 1}, DLDataType{kDLFloat, 64, 1}}) {
      p.managed.dl_tensor.dtype = t;
      p.managed.dl_tensor.data = nullptr;
      REQUIRE_THROWS_MATCHES(opforge::from_dlpack(&p.managed), opforge::ValueError,
                             Message("from_dlpack: argument 'dl': its data is null for 12 elements"));
      p.managed.dl_tensor.data = p.data;
      p.shape[0] = p.shape[1] = std::int64_t{1} << 62;
      p.strides[0] = p.strides[1] = 0;
      REQUIRE_THROWS_MATCHES(opforge::from_dlpack(&p.managed), opforge::ShapeError,
                             Message("from_dlpack: argument 'dl': shape [4611686018427387904, 4611686018427387904] "
                                     "has more elements than int64 can count (the product of its sizes overflows)"));
      p.shape[0] = 3;
      p.shape[1] = 4;
      p.strides[0] = 4;
      p.strides[1] = 1;
    }
    p.managed.dl_tensor.dtype = {kDLFloat, 64, 1};
    p.managed.dl_tensor.byte_offset = 3;
    REQUIRE_THROWS_MATCHES(opforge::from_dlpack(&p.managed), opforge::ValueError,
                           Message("from_dlpack: argument 'dl': its data (byte_offset 3) is not aligned to the 8 bytes "
                                   "of a float64 element; give it an aligned copy"));
  }
  SECTION("negative strides (which DLPack allows) and negative sizes") {
    p.managed.dl_tensor.ndim = 1;
    p.shape[0] = 2;
    p.strides[0] = -1;
    REQUIRE_THROWS_MATCHES(opforge::from_dlpack(&p.managed), opforge::ShapeError,
                           Message("from_dlpack: argument 'dl': strides [-1] for shape [2] go backwards, and "
                                   "opforge's strides are >= 0: give it a copy with positive strides (NumPy: "
                                   "np.ascontiguousarray)"));
    p.shape[0] = -2;
    p.strides[0] = 1;
    REQUIRE_THROWS_MATCHES(opforge::from_dlpack(&p.managed), opforge::ShapeError,
                           Message("from_dlpack: argument 'dl': expected sizes >= 0, got shape [-2]"));
  }
  CHECK(p.deleted == 0);  // nothing was taken over
  p.managed.deleter(&p.managed);
  CHECK(p.deleted == 1);
}

TEST_CASE("interop: from_dlpack takes a broadcast byte at once, and any stride on an axis of one element",
          "[interop]") {
  Producer p;
  std::uint8_t one = 1;
  p.managed.dl_tensor.data = &one;
  p.managed.dl_tensor.dtype = {kDLUInt, 8, 1};
  p.managed.dl_tensor.ndim = 1;
  p.shape[0] = std::int64_t{1} << 33;  // 8 Gi elements, all the same byte: checked once
  p.strides[0] = 0;
  {
    const Tensor t = opforge::from_dlpack(&p.managed);
    CHECK(t.numel() == std::int64_t{1} << 33);
    CHECK(t.dtype() == DType::Bool);
  }
  CHECK(p.deleted == 1);
  // NumPy and PyTorch may give an axis of length 1 any stride, a negative one too.
  p.managed.dl_tensor.data = p.data;
  p.managed.dl_tensor.dtype = {kDLFloat, 64, 1};
  p.managed.dl_tensor.ndim = 2;
  p.shape[0] = 1;
  p.shape[1] = 3;
  p.strides[0] = -7;
  p.strides[1] = 2;
  {
    const Tensor t = opforge::from_dlpack(&p.managed);
    CHECK(t.shape() == Dims{1, 3});
    CHECK(t.to_vector() == V{0, 2, 4});
  }
  CHECK(p.deleted == 2);
}

// ---- xtensor adaptors ---------------------------------------------------------------------

TEST_CASE("interop: sdk::view adapts a tensor's memory for xtensor without a copy", "[interop]") {
  Tensor t = iota({2, 3});
  auto xv = opforge::sdk::view<double>(t);
  REQUIRE(xv.dimension() == 2);
  CHECK(xv.shape()[0] == 2);
  CHECK(xv.shape()[1] == 3);
  CHECK(&xv(0, 0) == t.data<double>());
  CHECK(xv(1, 2) == 5.0);
  xv(1, 2) = 42.0;  // written through the adaptor ...
  xv(0, 1) = -1.0;
  CHECK(t.to_vector() == V{0, -1, 2, 3, 4, 42});  // ... read through the tensor
  t.fill_(7.0);  // and the other way round
  CHECK(xv(1, 0) == 7.0);
  auto flat = opforge::sdk::flat_view<double>(t);
  CHECK(&flat(5) == t.data<double>() + 5);
  auto mat = opforge::sdk::matrix_view<double>(t);
  mat(0, 2) = 3.0;
  CHECK(t.to_vector()[2] == 3.0);
  // Strided views and the wrong element type are refused.
  REQUIRE_THROWS_MATCHES(opforge::sdk::view<double>(t.transpose(0, 1)), opforge::ValueError,
                         Message("sdk::view: expected a contiguous tensor, got a strided view of shape [3, 2]; call "
                                 ".clone() first"));
  REQUIRE_THROWS_MATCHES(opforge::sdk::view<float>(t), opforge::DTypeError,
                         Message("data<T>(): expected dtype float32, got float64"));
}
