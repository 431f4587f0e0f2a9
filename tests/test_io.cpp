// save_npy / load_npy / save_npz / load_npz: NumPy's formats. Files written by
// NumPy 1.24 (tests/data/npy, made by make_fixtures.py there) are read back with
// their values; what opforge writes is byte-identical to what np.save writes for
// the same array; round trips keep every bit; damaged, foreign and unsupported
// files are refused with messages that say what is wrong and what to do.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include <opforge/opforge.hpp>

#include "temp_dir.hpp"

#ifndef OPFORGE_TEST_DATA
#error "OPFORGE_TEST_DATA (the path of tests/data) must be defined"
#endif

using Catch::Matchers::Contains;
using Catch::Matchers::EndsWith;
using Catch::Matchers::Message;
using Catch::Matchers::StartsWith;
using opforge::DType;
using opforge::Tensor;

namespace {

const std::string kData = OPFORGE_TEST_DATA "/npy/";

std::string bytes_of(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}
// The same bits (NaN payloads, -0.0), compared as bytes.
bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous() &&
         std::memcmp(a.data_ptr(), b.data_ptr(), static_cast<std::size_t>(a.nbytes())) == 0;
}

}  // namespace

TEST_CASE("io: .npy files written by NumPy load with their dtype, shape and values", "[io]") {
  const Tensor a = opforge::load_npy(kData + "f64_2x3.npy");  // arange(6).reshape(2, 3) * 0.5 - 1
  CHECK(a.dtype() == DType::Float64);
  CHECK(a.shape() == opforge::Dims{2, 3});
  CHECK(a.to_vector() == std::vector<double>{-1, -0.5, 0, 0.5, 1, 1.5});
  CHECK_FALSE(a.requires_grad());
  // Fortran order: values in row-major order, a contiguous tensor.
  const Tensor f = opforge::load_npy(kData + "f32_fortran_2x3.npy");  // arange(6).reshape(2, 3) + 0.25
  CHECK(f.dtype() == DType::Float32);
  CHECK(f.shape() == opforge::Dims{2, 3});
  CHECK(f.is_contiguous());
  CHECK(f.to_vector() == std::vector<double>{0.25, 1.25, 2.25, 3.25, 4.25, 5.25});
  const Tensor s = opforge::load_npy(kData + "i64_scalar.npy");
  CHECK(s.dtype() == DType::Int64);
  CHECK(s.shape().empty());
  CHECK(s.item() == -7);
  const Tensor b = opforge::load_npy(kData + "bool_4.npy");
  CHECK(b.dtype() == DType::Bool);
  CHECK(b.to_vector() == std::vector<double>{1, 0, 0, 1});
  const Tensor e = opforge::load_npy(kData + "f32_empty_0x3.npy");
  CHECK(e.shape() == opforge::Dims{0, 3});
  CHECK(e.dtype() == DType::Float32);
}

TEST_CASE("io: save_npy writes the bytes np.save writes, and round trips keep every bit", "[io]") {
  opforge_tests::TempDir dir("opforge_io");
  const std::string path = dir.path() / "a.npy";
  // The same array NumPy saved (its data row-major), from a transposed view here.
  const Tensor a = Tensor::from_values({-1, 0.5, -0.5, 1, 0, 1.5}, {3, 2}).transpose(0, 1);
  opforge::save_npy(path, a);
  CHECK(bytes_of(path) == bytes_of(kData + "f64_2x3.npy"));
  for (const Tensor& t :
       {Tensor::randn({4, 5, 3}, DType::Float32, 1), Tensor::from_values({-0.0, std::nan(""), 1e-310, -1e308}),
        Tensor::from_values({-9e15, 0, 42}, DType::Int64), Tensor::from_values({1, 0, 1}, DType::Bool),
        Tensor::zeros({2, 0, 7}), Tensor::full({}, 3.5, DType::Float32), Tensor::randn({1000}, DType::Float64, 2)}) {
    INFO(t.describe());
    opforge::save_npy(path, t);
    const Tensor back = opforge::load_npy(path);
    CHECK(same_bits(back, t));
  }
  // A tensor that requires grad is saved as its value; the file holds no graph.
  Tensor w = Tensor::randn({3}, DType::Float64, 3).requires_grad_();
  opforge::save_npy(path, w);
  CHECK(same_bits(opforge::load_npy(path), w.detach()));
  CHECK_THROWS_MATCHES(opforge::save_npy(path, Tensor()), opforge::ValueError,
                       Message("save_npy: argument 't' is undefined (a default-constructed Tensor)"));
}

TEST_CASE("io: .npz archives written by np.savez load by name, and save_npz's load in turn", "[io]") {
  const opforge::NamedTensors model = opforge::load_npz(kData + "model.npz");
  REQUIRE(model.size() == 3);
  CHECK(model[0].first == "W");
  CHECK(model[0].second.shape() == opforge::Dims{3, 2});
  CHECK(model[0].second.to_vector() == std::vector<double>{0, 0.125, 0.25, 0.375, 0.5, 0.625});
  CHECK(model[1].first == "b");
  CHECK(model[1].second.dtype() == DType::Float32);
  CHECK(model[1].second.to_vector() == std::vector<double>{0.5, -0.5});
  CHECK(model[2].first == "step");
  CHECK(model[2].second.dtype() == DType::Int64);
  CHECK(model[2].second.item() == 12);

  opforge_tests::TempDir dir("opforge_io");
  const std::string path = dir.path() / "params.npz";
  const opforge::NamedTensors params = {{"layer1.weight", Tensor::randn({16, 8}, DType::Float32, 4)},
                                        {"layer1.bias", Tensor::zeros({16}, DType::Float32)},
                                        {"scale", Tensor::full({}, 0.25)},
                                        {"mask", Tensor::from_values({1, 0}, DType::Bool)},
                                        {"empty", Tensor::zeros({0})}};
  opforge::save_npz(path, params);
  const opforge::NamedTensors back = opforge::load_npz(path);
  REQUIRE(back.size() == params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    INFO(params[i].first);
    CHECK(back[i].first == params[i].first);
    CHECK(same_bits(back[i].second, params[i].second));
  }
  // An empty archive is an archive.
  opforge::save_npz(path, {});
  CHECK(opforge::load_npz(path).empty());
}

TEST_CASE("io: bad names, foreign dtypes, compressed and damaged files are refused, saying what to do", "[io]") {
  opforge_tests::TempDir dir("opforge_io");
  const std::string path = dir.path() / "x.npz";
  const Tensor t = Tensor::ones({2});
  CHECK_THROWS_MATCHES(opforge::save_npz(path, {{"a", t}, {"a", t}}), opforge::ValueError,
                       Message("save_npz: argument 'tensors': the name 'a' is given twice (entries 0 and 1); each "
                               "tensor needs its own name"));
  CHECK_THROWS_MATCHES(opforge::save_npz(path, {{"dir/a", t}}), opforge::ValueError,
                       Message("save_npz: argument 'tensors': entry 0 has the name 'dir/a'; expected a non-empty "
                               "name without '/' or '\\'"));
  CHECK_THROWS_MATCHES(opforge::load_npy(kData + "i32_3.npy"), opforge::ValueError,
                       Message("load_npy: '" + kData + "i32_3.npy' holds int32 data '<i4', which opforge has no "
                               "dtype for (it has float32, float64, int64 and bool); convert it in NumPy first, e.g. "
                               "arr.astype(np.int64)"));
  CHECK_THROWS_MATCHES(opforge::load_npy(kData + "f64_big_endian_2.npy"), opforge::ValueError,
                       Message("load_npy: '" + kData + "f64_big_endian_2.npy' holds big-endian data '>f8', which "
                               "opforge has no dtype for (it has float32, float64, int64 and bool); convert it in "
                               "NumPy first, e.g. arr.astype(arr.dtype.newbyteorder('<'))"));
  CHECK_THROWS_MATCHES(opforge::load_npz(kData + "compressed.npz"), opforge::ValueError,
                       Message("load_npz: '" + kData + "compressed.npz' member 'W.npy' is compressed (ZIP method 8, "
                               "as np.savez_compressed writes); this reads stored members only: re-save the arrays "
                               "with np.savez"));
  CHECK_THROWS_WITH(opforge::load_npy(kData + "model.npz"),
                    "load_npy: '" + kData + "model.npz' is not a .npy file (it does not start with \"\\x93NUMPY\")");
  CHECK_THROWS_WITH(opforge::load_npz(kData + "f64_2x3.npy"),
                    "load_npz: '" + kData + "f64_2x3.npy' is not an .npz file (no ZIP end of central directory "
                    "record)");
  CHECK_THROWS_MATCHES(opforge::load_npy(dir.path() / "missing.npy"), opforge::Error,
                       Message("load_npy: cannot open '" + (dir.path() / "missing.npy").string() +
                               "': No such file or directory"));
  // Truncated data: the size it needs, where, and what is left.
  const std::string npy = bytes_of(kData + "f64_2x3.npy");
  const std::string cut = dir.path() / "cut.npy";
  write_bytes(cut, npy.substr(0, npy.size() - 8));
  CHECK_THROWS_MATCHES(opforge::load_npy(cut), opforge::ValueError,
                       Message("load_npy: '" + cut + "' is truncated: its header declares float64[2, 3], 48 bytes of "
                               "data, and 40 bytes follow the header"));
  // A flipped bit in a member's data: the CRC-32 catches it.
  std::string npz = bytes_of(kData + "model.npz");
  const std::size_t at = npz.find("\x93NUMPY") + 128 + 8;  // W's second element
  npz[at] = static_cast<char>(npz[at] ^ 0x10);
  const std::string damaged = dir.path() / "damaged.npz";
  write_bytes(damaged, npz);
  CHECK_THROWS_WITH(opforge::load_npz(damaged),
                    StartsWith("load_npz: '" + damaged + "' member 'W.npy' is damaged: its CRC-32 is ") &&
                        Contains(", the archive says "));
}

TEST_CASE("io: a failed save leaves an existing file as it was", "[io]") {
  opforge_tests::TempDir dir("opforge_io");
  const std::string path = dir.path() / "keep.npz";
  opforge::save_npz(path, {{"w", Tensor::full({3}, 2.0)}});
  const std::string before = bytes_of(path);
  // Refused before a byte is written (a duplicate name), and a write that cannot
  // start (a folder that does not exist): the file keeps its bytes.
  CHECK_THROWS(opforge::save_npz(path, {{"w", Tensor::ones({1})}, {"w", Tensor::ones({1})}}));
  CHECK_THROWS_WITH(opforge::save_npy((dir.path() / "no/such/dir/x.npy").string(), Tensor::ones({1})),
                    StartsWith("save_npy: cannot create '" + (dir.path() / "no/such/dir/x.npy").string() + ".tmp.") &&
                        EndsWith("': No such file or directory"));
  CHECK(bytes_of(path) == before);
  // Replaced whole when the save succeeds, and no temporary is left beside it.
  opforge::save_npz(path, {{"w", Tensor::full({3}, 5.0)}});
  CHECK(opforge::load_npz(path)[0].second.to_vector() == std::vector<double>{5, 5, 5});
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) files += entry.is_regular_file();
  CHECK(files == 1);
}

TEST_CASE("io: damaged or hostile files are refused before anything big is allocated, and never read out of bounds",
          "[io]") {
  // Found by a review under AddressSanitizer: a header length of 4 GiB was
  // allocated before it was checked (4.1 GB peak), a declared shape of 10^12
  // elements allocated (or ran out of memory) before the data's size was
  // compared with the file's, and a ZIP64 extra field longer than its entry
  // was read past the central directory's end.
  opforge_tests::TempDir dir("opforge_io");
  const std::string big_header = dir.path() / "big_header.npy";
  write_bytes(big_header, std::string("\x93NUMPY\x02\x00\xF0\xFF\xFF\xFF", 12));
  const std::int64_t before = opforge::peak_bytes();
  CHECK_THROWS_MATCHES(opforge::load_npy(big_header), opforge::ValueError,
                       Message("load_npy: '" + big_header + "' declares a .npy header of 4294967280 bytes, more than "
                               "the 100000 a header may have: the file is damaged or not a .npy file"));
  // A shape of 10^12 float64 in a file of 128 bytes: refused as truncated, nothing allocated.
  std::string npy = bytes_of(kData + "f64_2x3.npy");
  const std::size_t at = npy.find("(2, 3)");
  REQUIRE(at != std::string::npos);
  std::string huge = npy;
  huge.replace(at, 6, "(1000000000000,)     ");  // the same header length: the padding absorbs it
  huge.resize(128);
  const std::string huge_path = dir.path() / "huge.npy";
  write_bytes(huge_path, huge);
  opforge::reset_peak_bytes();
  CHECK_THROWS_MATCHES(opforge::load_npy(huge_path), opforge::ValueError,
                       Message("load_npy: '" + huge_path + "' is truncated: its header declares float64[1000000000000], "
                               "8000000000000 bytes of data, and 0 bytes follow the header"));
  std::string overflow = npy;
  overflow.replace(at, 6, "(4294967296, 4294967296)");
  const std::string overflow_path = dir.path() / "overflow.npy";
  write_bytes(overflow_path, overflow);
  CHECK_THROWS_WITH(opforge::load_npy(overflow_path),
                    Contains("is truncated: its header declares float64[4294967296, 4294967296], more bytes than 64 "
                             "bits count of data"));
  CHECK(opforge::peak_bytes() < before + (1 << 20));
  // An .npz whose one entry has its sizes in a ZIP64 extra field that claims
  // 65535 bytes where the entry has 4: refused, nothing read past the directory.
  const std::string good = dir.path() / "good.npz";
  opforge::save_npz(good, {{"w", Tensor::ones({2})}});
  std::string z = bytes_of(good);
  const std::size_t cd = z.find(std::string("PK\x01\x02", 4));
  REQUIRE(cd != std::string::npos);
  for (int k = 0; k < 8; ++k) z[cd + 20 + k] = '\xFF';  // compressed and stored sizes: "see the ZIP64 field"
  const std::size_t name_len = static_cast<unsigned char>(z[cd + 28]) | (static_cast<unsigned char>(z[cd + 29]) << 8);
  z[cd + 30] = 4;  // extra field length
  z[cd + 31] = 0;
  z.insert(cd + 46 + name_len, std::string("\x01\x00\xFF\xFF", 4));  // id 1 (ZIP64), length 65535
  const std::size_t eocd = z.find(std::string("PK\x05\x06", 4));
  REQUIRE(eocd != std::string::npos);
  z[eocd + 12] = static_cast<char>(static_cast<unsigned char>(z[eocd + 12]) + 4);  // the directory grew by 4 bytes
  const std::string bad = dir.path() / "bad_extra.npz";
  write_bytes(bad, z);
  CHECK_THROWS_MATCHES(opforge::load_npz(bad), opforge::ValueError,
                       Message("load_npz: '" + bad + "' has a damaged central directory (entry 0: an extra field runs "
                               "past its entry)"));
}
