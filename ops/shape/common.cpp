// The shape family's shared helpers and data-movement kernels (see common.hpp).
//
// Work split: a tensor is walked as rows (all axes but the last, after merging
// axes that are contiguous in both operands) of `inner` elements; rows are cut
// into chunks of at most kChunk elements, and (row, chunk) pairs are the units
// handed to sdk::parallel_for. Small tensors run inline; a contiguous copy is one
// long row cut into chunks, so it still spreads over threads.
#include "common.hpp"

#include <algorithm>
#include <cstring>

namespace opforge_shape {

namespace {

constexpr std::int64_t kChunk = sdk::kElementwiseGrain;

// Units per parallel task: about kElementwiseGrain elements.
std::int64_t task_grain(std::int64_t elements_per_unit) {
  return std::max<std::int64_t>(1, sdk::kElementwiseGrain / std::max<std::int64_t>(1, elements_per_unit));
}

// Walks the rows of a layout (`rank` outer axes of sizes `shape`) keeping, for
// each of N operands, the offset of the row's first element.
template <int N>
struct RowWalker {
  int rank = 0;
  const std::int64_t* shape = nullptr;
  const std::int64_t* strides[N] = {};
  std::int64_t idx[opforge::kMaxDims] = {};
  std::int64_t off[N] = {};

  void seek(std::int64_t row) {
    for (int s = 0; s < N; ++s) off[s] = 0;
    for (int k = rank; k-- > 0;) {
      idx[k] = row % shape[k];
      row /= shape[k];
      for (int s = 0; s < N; ++s) off[s] += idx[k] * strides[s][k];
    }
  }
  void next() {
    for (int k = rank; k-- > 0;) {
      ++idx[k];
      for (int s = 0; s < N; ++s) off[s] += strides[s][k];
      if (idx[k] < shape[k]) return;
      for (int s = 0; s < N; ++s) off[s] -= idx[k] * strides[s][k];
      idx[k] = 0;
    }
  }
};

// Calls body(walker, j0, j1) for every (row, chunk) of a layout with `rows` rows of
// `inner` elements, in parallel; the walker holds the row's offsets.
template <int N, class Body>
void for_each_chunk(int rank, const std::int64_t* shape, const std::int64_t* const* strides, std::int64_t rows,
                    std::int64_t inner, Body body) {
  if (rows == 0 || inner == 0) return;
  const std::int64_t nchunk = (inner + kChunk - 1) / kChunk;
  const std::int64_t units = rows * nchunk;
  sdk::parallel_for(0, units, task_grain(std::min(inner, kChunk)), [&](std::int64_t lo, std::int64_t hi) {
    RowWalker<N> w;
    w.rank = rank;
    w.shape = shape;
    for (int s = 0; s < N; ++s) w.strides[s] = strides[s];
    if (nchunk == 1) {
      w.seek(lo);
      for (std::int64_t row = lo; row < hi; ++row, w.next()) body(w, std::int64_t{0}, inner);
      return;
    }
    for (std::int64_t u = lo; u < hi; ++u) {
      w.seek(u / nchunk);
      const std::int64_t j0 = (u % nchunk) * kChunk;
      body(w, j0, std::min(inner, j0 + kChunk));
    }
  });
}

// Unsigned integer of the element size: copies move bits, whatever the dtype.
template <class F>
void dispatch_bits(DType dtype, F&& f) {
  switch (opforge::itemsize(dtype)) {
    case 1: f(std::uint8_t{}); break;
    case 4: f(std::uint32_t{}); break;
    default: f(std::uint64_t{}); break;
  }
}

// A layout with size-1 axes dropped and axes merged where both operands step
// through them as one (a contiguous copy becomes one row); at least one axis.
using Layout2 = opforge::MergedAxes;

Layout2 collapse(const Dims& shape, const Dims& sa, const Dims& sb) {
  Layout2 L = opforge::merge_axes(shape, sa, sb);
  if (L.rank == 0) {  // one element
    L.rank = 1;
    L.size[0] = 1;
    L.a[0] = L.b[0] = 1;
  }
  return L;
}

// A transposing copy: dst is contiguous along the last axis, src along another
// axis q. Walking either one along its rows would read or write the other with a
// large stride, one cache line per element; square tiles over (q, last) reuse
// every line they touch. Returns false (nothing done) when the layout is not so.
template <class U>
bool copy_tiled(U* dst, const U* src, const Layout2& L) {
  constexpr std::int64_t kTile = 32;
  const int last = static_cast<int>(L.rank) - 1;
  if (last < 1 || L.a[last] != 1 || L.b[last] == 1) return false;
  int q = -1;
  for (int k = 0; k < last; ++k)
    if (L.b[k] == 1) q = k;
  if (q < 0) return false;
  // The other axes, walked as rows of tiles.
  std::int64_t on[opforge::kMaxDims], oa[opforge::kMaxDims], ob[opforge::kMaxDims];
  int orank = 0;
  std::int64_t orows = 1;
  for (int k = 0; k < last; ++k) {
    if (k == q) continue;
    on[orank] = L.size[k];
    oa[orank] = L.a[k];
    ob[orank] = L.b[k];
    orows *= L.size[k];
    ++orank;
  }
  const std::int64_t R = L.size[q], C = L.size[last], dq = L.a[q], sl = L.b[last];
  const std::int64_t tiles_r = (R + kTile - 1) / kTile, tiles_c = (C + kTile - 1) / kTile;
  const std::int64_t per_row = tiles_r * tiles_c;
  sdk::parallel_for(0, orows * per_row, task_grain(kTile * kTile), [&](std::int64_t lo, std::int64_t hi) {
    RowWalker<2> w;
    w.rank = orank;
    w.shape = on;
    w.strides[0] = oa;
    w.strides[1] = ob;
    for (std::int64_t u = lo; u < hi; ++u) {
      w.seek(u / per_row);
      const std::int64_t t = u % per_row;
      const std::int64_t i0 = (t / tiles_c) * kTile, j0 = (t % tiles_c) * kTile;
      const std::int64_t i1 = std::min(R, i0 + kTile), j1 = std::min(C, j0 + kTile);
      U* d = dst + w.off[0];
      const U* s = src + w.off[1];
      // Through a buffer: each source row's stretch is read whole, then each target
      // row's stretch is written whole. Reading a source column straight into a target
      // row touched 32 lines a power-of-two stride apart (a 2048 x 2048 transpose), all
      // in one L1 set, and missed on nearly every element: float32 5.4 -> 2.x ms.
      U buf[kTile][kTile];
      const std::int64_t ni = i1 - i0, nj = j1 - j0, src_step = sl, dst_step = dq;
      for (std::int64_t j = 0; j < nj; ++j) {
        const U* sr = s + i0 + (j0 + j) * src_step;
        for (std::int64_t i = 0; i < ni; ++i) buf[j][i] = sr[i];
      }
      for (std::int64_t i = 0; i < ni; ++i) {
        U* dr = d + (i0 + i) * dst_step + j0;
        for (std::int64_t j = 0; j < nj; ++j) dr[j] = buf[j][i];
      }
    }
  });
  return true;
}

template <class U>
void copy_kernel(U* dst, const U* src, const Layout2& L) {
  if (copy_tiled(dst, src, L)) return;
  const int outer = static_cast<int>(L.rank) - 1;
  const std::int64_t inner = L.size[outer], da = L.a[outer], sb = L.b[outer];
  std::int64_t rows = 1;
  for (int k = 0; k < outer; ++k) rows *= L.size[k];
  const std::int64_t* strides[2] = {L.a, L.b};
  for_each_chunk<2>(outer, L.size, strides, rows, inner, [&](const RowWalker<2>& w, std::int64_t j0, std::int64_t j1) {
    U* d = dst + w.off[0];
    const U* s = src + w.off[1];
    if (da == 1 && sb == 1) {
      std::memcpy(d + j0, s + j0, static_cast<std::size_t>(j1 - j0) * sizeof(U));  // distinct tensors
    } else {
      for (std::int64_t j = j0; j < j1; ++j) d[j * da] = s[j * sb];
    }
  });
}

}  // namespace

void copy_into(const Tensor& dst, const Tensor& src) {
  OPFORGE_CHECK(dst.shape() == src.shape() && dst.dtype() == src.dtype(), opforge::ShapeError,
                "shape: internal copy from ", src.describe(), " into ", dst.describe());
  if (dst.numel() == 0) return;
  const Layout2 L = collapse(dst.shape(), dst.strides(), src.strides());
  dispatch_bits(dst.dtype(), [&](auto tag) {
    using U = decltype(tag);
    copy_kernel<U>(static_cast<U*>(dst.data_ptr()), static_cast<const U*>(src.data_ptr()), L);
  });
  dst.bump_version();
}

Tensor dense(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor out = Tensor::empty(t.shape(), t.dtype());
  copy_into(out, t);
  return out;
}

// Rows up to this size are prefetched before a gather along them reads them.
constexpr std::int64_t kPrefetchRowBytes = 64 << 10;

Tensor gather_strided(const Tensor& x, const Tensor& index, std::int64_t axis, const Dims& out_shape) {
  Tensor out = Tensor::empty(out_shape, x.dtype());
  if (out.numel() == 0) return out;
  const int r = static_cast<int>(out_shape.size());
  const int outer = r - 1;
  const std::int64_t inner = out_shape[static_cast<std::size_t>(outer)];
  const std::int64_t rows = out.numel() / inner;
  const std::int64_t n = x.shape()[static_cast<std::size_t>(axis)];
  const std::int64_t xa = x.strides()[static_cast<std::size_t>(axis)];
  // Row offsets: out is contiguous; x's axis contributes through the index only.
  Dims out_strides = opforge::contiguous_strides(out_shape);
  Dims x_strides = x.strides();
  x_strides[static_cast<std::size_t>(axis)] = 0;
  const Dims& i_strides = index.strides();
  const std::int64_t* strides[3] = {out_strides.data(), x_strides.data(), i_strides.data()};
  const std::int64_t x_last = x_strides[static_cast<std::size_t>(outer)];  // 0 when axis is the last axis
  const std::int64_t i_last = i_strides[static_cast<std::size_t>(outer)];
  const auto* ip = static_cast<const std::int64_t*>(index.data_ptr());
  dispatch_bits(x.dtype(), [&](auto tag) {
    using U = decltype(tag);
    U* po = static_cast<U*>(out.data_ptr());
    const U* px = static_cast<const U*>(x.data_ptr());
    for_each_chunk<3>(outer, out_shape.data(), strides, rows, inner,
                      [&](const RowWalker<3>& w, std::int64_t j0, std::int64_t j1) {
                        U* o = po + w.off[0];
                        const U* xr = px + w.off[1];
                        const std::int64_t* ir = ip + w.off[2];
                        if (i_last == 0) {
                          // One index for the whole row (index_select, or gather with an
                          // index broadcast along the last axis): a row copy, not an index
                          // read per element (index_select along axis 0 of float32 took
                          // 5.5x NumPy's time).
                          const std::int64_t v = ir[0] + (ir[0] < 0 ? n : 0);
                          const U* src = xr + v * xa;
                          if (x_last == 1) {
                            std::memcpy(o + j0, src + j0, static_cast<std::size_t>(j1 - j0) * sizeof(U));
                          } else {
                            for (std::int64_t j = j0; j < j1; ++j) o[j] = src[j * x_last];
                          }
                          return;
                        }
                        // Locals, not the captured references: the stores through `o`
                        // could alias them, and the loop would reload each one per element.
                        const std::int64_t il = i_last, xl = x_last, step = xa, size = n;
                        if (il == 1 && xl == 0) {  // along the last axis, the index dense along it
                          // The row is read in random order: ask for it in memory order
                          // first, so that its lines arrive together (not one miss at a time),
                          // where the gather reads much of it: at least one element for every
                          // two of its lines. (10 elements of a 1000-element float64 row fetched
                          // all 125 lines: 2x NumPy's time.)
                          const std::int64_t row_bytes = size * step * static_cast<std::int64_t>(sizeof(U));
                          if (step == 1 && j0 == 0 && row_bytes <= kPrefetchRowBytes && 2 * 64 * inner >= row_bytes)
                            for (std::int64_t b = 0; b < row_bytes; b += 64)
                              __builtin_prefetch(reinterpret_cast<const char*>(xr) + b);
                          for (std::int64_t j = j0; j < j1; ++j) {
                            const std::int64_t v = ir[j];
                            o[j] = xr[(v + (v < 0 ? size : 0)) * step];
                          }
                          return;
                        }
                        for (std::int64_t j = j0; j < j1; ++j) {
                          const std::int64_t v = ir[j * il];
                          o[j] = xr[j * xl + (v + (v < 0 ? size : 0)) * step];
                        }
                      });
  });
  return out;
}

Tensor scatter_add(const Context& ctx, const Tensor& g_in, const std::int64_t* index, std::int64_t so, std::int64_t sj, std::int64_t si,
                   const Dims& x_shape, std::int64_t axis) {
  const Tensor g = dense(g_in);
  Tensor gx = Tensor::zeros(x_shape, g.dtype());
  std::int64_t outer = 1, inner = 1;
  for (std::int64_t k = 0; k < axis; ++k) outer *= x_shape[static_cast<std::size_t>(k)];
  for (std::size_t k = static_cast<std::size_t>(axis) + 1; k < x_shape.size(); ++k) inner *= x_shape[k];
  const std::int64_t n = x_shape[static_cast<std::size_t>(axis)];
  const std::int64_t k_len = g.shape()[static_cast<std::size_t>(axis)];
  if (g.numel() == 0 || gx.numel() == 0) return gx;
  // Inner chunks of about kElementwiseGrain / k additions each (at least 64
  // elements), so even a single outer row spreads over threads. Each target
  // element is still summed in j order by one unit: the chunking never changes
  // the result.
  const std::int64_t chunk =
      std::min(inner, std::max<std::int64_t>(64, std::min(kChunk, (sdk::kElementwiseGrain + k_len - 1) / k_len)));
  const std::int64_t nchunk = (inner + chunk - 1) / chunk;
  sdk::dispatch_floating(g.dtype(), ctx, "grad", [&](auto tag) {
    using T = decltype(tag);
    T* pgx = gx.data<T>();
    const T* pg = g.data<T>();
    // Unit (o, chunk): every target element it writes has this o and an inner
    // position in the chunk, so units never share a target.
    sdk::parallel_for(0, outer * nchunk, task_grain(k_len * chunk),
                      [&](std::int64_t lo, std::int64_t hi) {
                        for (std::int64_t u = lo; u < hi; ++u) {
                          const std::int64_t o = u / nchunk;
                          const std::int64_t i0 = (u % nchunk) * chunk, i1 = std::min(inner, i0 + chunk);
                          T* dst = pgx + o * n * inner;
                          for (std::int64_t j = 0; j < k_len; ++j) {
                            const std::int64_t* ir = index + o * so + j * sj;
                            const T* src = pg + (o * k_len + j) * inner;
                            if (si == 0) {  // one index for the row (index_select): a row add, vectorised
                              const std::int64_t v = ir[0] + (ir[0] < 0 ? n : 0);
                              T* row = dst + v * inner;
                              for (std::int64_t i = i0; i < i1; ++i) row[i] += src[i];
                              continue;
                            }
                            for (std::int64_t i = i0; i < i1; ++i) {
                              std::int64_t v = ir[i * si];
                              v += v < 0 ? n : 0;
                              dst[v * inner + i] += src[i];
                            }
                          }
                        }
                      });
  });
  return gx;
}

void check_indices(const Context& ctx, const Tensor& index, std::int64_t axis, std::int64_t n) {
  sdk::check_indices(ctx, index, "index", n, "axis " + std::to_string(axis));
}

void expect_int64(const Context& ctx, const Tensor& t, const char* arg, std::size_t pos) {
  OPFORGE_CHECK(t.dtype() == DType::Int64, opforge::DTypeError, ctx.op_name(), ": argument '", arg, "' (input ", pos,
                "): expected dtype int64, got ", opforge::dtype_name(t.dtype()));
}

}  // namespace opforge_shape
