// .npy and .npz files: NumPy's formats, written and read without NumPy.
//
// .npy (numpy/lib/format.py): the magic "\x93NUMPY", a version byte pair, the
// header's length (2 bytes little-endian in 1.0, 4 in 2.0 and 3.0), then a
// Python dict literal such as
//   {'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }
// padded with spaces and a newline so that the data starts at a multiple of 64
// bytes, then the elements. save_npy writes the same bytes np.save of NumPy 1.24
// writes (the header's spare spaces after the dict included), so a file's bytes
// do not depend on which of the two wrote it.
//
// .npz: a ZIP archive of .npy members, stored (no compression), as np.savez
// writes. NumPy writes each member's local header in ZIP64 form (sizes
// 0xFFFFFFFF and a ZIP64 extra field); the central directory has the real
// sizes, so the reader takes sizes, CRC and offsets from there, and ZIP64
// extra fields where a central directory entry has them. Every member's CRC-32
// is checked as it is read: a damaged archive is refused, not loaded wrong.
#include "opforge/io.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "opforge/autograd.hpp"
#include "opforge/error.hpp"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "io.cpp writes and reads little-endian data with plain copies: a big-endian port must swap bytes");

namespace opforge {
namespace {

// ---- files ------------------------------------------------------------------------

struct FileCloser {
  void operator()(std::FILE* f) const noexcept {
    if (f) std::fclose(f);
  }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

[[noreturn]] void throw_os(const char* fn, const std::string& what, const std::string& path, int err) {
  throw Error(std::string(fn) + ": cannot " + what + " '" + path + "': " + std::strerror(err));
}

File open_read(const char* fn, const std::string& path) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) throw_os(fn, "open", path, errno);
  return f;
}

/// A file written under a temporary name beside `path`, renamed over it by
/// commit(): an existing file is replaced whole or not at all.
class AtomicWriter {
 public:
  AtomicWriter(const char* fn, std::string path) : fn_(fn), path_(std::move(path)) {
    // A name of its own (process, then a counter), created only if it does not
    // exist: two saves to one path, from two threads or processes, never share a
    // temporary, and a file or link already there is never written through.
    static std::atomic<unsigned> counter{0};
    for (int attempt = 0;; ++attempt) {
      tmp_ = path_ + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
      const int fd = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd >= 0) {
        f_.reset(::fdopen(fd, "wb"));
        if (!f_) {
          const int err = errno;
          ::close(fd);
          std::remove(tmp_.c_str());
          throw_os(fn_, "create", tmp_, err);
        }
        return;
      }
      if (errno != EEXIST || attempt == 100) throw_os(fn_, "create", tmp_, errno);
    }
  }
  ~AtomicWriter() {
    if (!committed_) {
      f_.reset();
      std::remove(tmp_.c_str());
    }
  }
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;

  void write(const void* p, std::size_t n) {
    if (n > 0 && std::fwrite(p, 1, n, f_.get()) != n) throw_os(fn_, "write", tmp_, errno);
    written_ += n;
  }
  std::uint64_t written() const { return written_; }
  void commit() {
    std::FILE* f = f_.release();
    if (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0) {
      const int err = errno;
      std::fclose(f);
      throw_os(fn_, "write", tmp_, err);
    }
    if (std::fclose(f) != 0) throw_os(fn_, "write", tmp_, errno);
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) throw_os(fn_, "replace", path_, errno);
    committed_ = true;
  }

 private:
  const char* fn_;
  std::string path_, tmp_;
  File f_;
  std::uint64_t written_ = 0;
  bool committed_ = false;
};

// ---- CRC-32 (ZIP's: polynomial 0xEDB88320, reflected) ----------------------------------

const std::array<std::uint32_t, 256>& crc_table() {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}
/// Continues a CRC-32: crc32(crc32(0, a), b) is the CRC of a followed by b.
std::uint32_t crc32(std::uint32_t crc, const void* data, std::size_t n) {
  const auto& t = crc_table();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) crc = t[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

// ---- .npy header ----------------------------------------------------------------------

const char* descr_of(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "<f4";
    case DType::Float64: return "<f8";
    case DType::Int64: return "<i8";
    case DType::Bool: return "|b1";
  }
  return "?";
}

/// The header np.save writes for this dtype and shape, padding included.
std::string npy_header(DType dtype, const Dims& shape) {
  std::string shape_text = "(";
  for (std::size_t k = 0; k < shape.size(); ++k)
    shape_text += (k ? ", " : "") + std::to_string(shape[k]);
  shape_text += shape.size() == 1 ? ",)" : ")";
  std::string dict = std::string("{'descr': '") + descr_of(dtype) + "', 'fortran_order': False, 'shape': " +
                     shape_text + ", }";
  // NumPy's spare room to grow the first axis in place: up to 21 digits.
  if (!shape.empty()) dict += std::string(21 - std::min<std::size_t>(21, std::to_string(shape[0]).size()), ' ');
  const std::size_t prefix = 10;  // magic (6), version (2), length (2)
  const std::size_t hlen = dict.size() + 1;
  const std::size_t pad = 64 - (prefix + hlen) % 64;
  const std::size_t total = hlen + pad;
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(total & 0xFF);
  out += static_cast<char>((total >> 8) & 0xFF);
  out += dict;
  out.append(pad, ' ');
  out += '\n';
  return out;
}

/// What a .npy header says.
struct NpyInfo {
  DType dtype = DType::Float64;
  Dims shape;
  bool fortran = false;
  std::uint64_t header_bytes = 0;  // magic to the end of the header
};

/// Reads bytes from a file, within the bytes a member may use (an .npz member),
/// and keeps the CRC-32 of what it read.
class Reader {
 public:
  Reader(std::FILE* f, std::uint64_t limit, const char* fn, std::string where)
      : f_(f), limit_(limit), fn_(fn), where_(std::move(where)) {}
  void read(void* p, std::uint64_t n, const char* what) {
    if (n > limit_ - used_)
      throw ValueError(std::string(fn_) + ": " + where_ + " is truncated: " + what + " needs " + std::to_string(n) +
                       " bytes at byte " + std::to_string(used_) + ", and only " + std::to_string(limit_ - used_) +
                       " remain");
    const std::size_t got = std::fread(p, 1, static_cast<std::size_t>(n), f_);
    if (got != n) {
      if (std::ferror(f_)) throw Error(std::string(fn_) + ": cannot read " + where_ + ": " + std::strerror(errno));
      throw ValueError(std::string(fn_) + ": " + where_ + " is truncated: " + what + " needs " + std::to_string(n) +
                       " bytes at byte " + std::to_string(used_) + ", and the file ends after " +
                       std::to_string(got));
    }
    crc_ = crc32(crc_, p, got);
    used_ += n;
  }
  std::uint32_t crc() const { return crc_; }
  std::uint64_t used() const { return used_; }
  std::uint64_t remaining() const { return limit_ - used_; }
  const std::string& where() const { return where_; }
  const char* fn() const { return fn_; }

 private:
  std::FILE* f_;
  std::uint64_t limit_, used_ = 0;
  const char* fn_;
  std::string where_;
  std::uint32_t crc_ = 0;
};

[[noreturn]] void bad_header(const Reader& r, const std::string& why, const std::string& header) {
  throw ValueError(std::string(r.fn()) + ": " + r.where() + " has a .npy header it cannot read: " + why +
                   " (header: " + header + ")");
}

/// The value after 'key': in the header dict, from its first character.
std::size_t find_key(const std::string& h, const std::string& key) {
  for (const char q : {'\'', '"'}) {
    const std::string k = std::string(1, q) + key + std::string(1, q);
    std::size_t at = h.find(k);
    if (at == std::string::npos) continue;
    at = h.find(':', at + k.size());
    if (at == std::string::npos) return std::string::npos;
    ++at;
    while (at < h.size() && h[at] == ' ') ++at;
    return at;
  }
  return std::string::npos;
}

DType dtype_of_descr(const Reader& r, const std::string& d) {
  if (d == "<f8" || d == "=f8") return DType::Float64;
  if (d == "<f4" || d == "=f4") return DType::Float32;
  if (d == "<i8" || d == "=i8") return DType::Int64;
  if (d == "|b1" || d == "<b1" || d == "=b1") return DType::Bool;
  std::string what = "'" + d + "'", fix = "arr.astype(np.float64), arr.astype(np.int64) or arr.astype(bool)";
  // The item size in bits, from text that came from the file: digits only, bounded.
  auto bits = [&d]() -> std::string {
    std::uint64_t n = 0;
    std::size_t i = 2;
    for (; i < d.size() && i < 8 && d[i] >= '0' && d[i] <= '9'; ++i) n = n * 10 + static_cast<std::uint64_t>(d[i] - '0');
    return i == 2 ? std::string("?") : std::to_string(8 * n);
  };
  if (d.size() >= 2 && d[0] == '>') {
    what = "big-endian data " + what;
    fix = "arr.astype(arr.dtype.newbyteorder('<'))";
  } else if (d.size() >= 2) {
    switch (d[1]) {
      case 'f': what = "float" + bits() + " data " + what;
        fix = "arr.astype(np.float32) or arr.astype(np.float64)"; break;
      case 'i': what = "int" + bits() + " data " + what;
        fix = "arr.astype(np.int64)"; break;
      case 'u': what = "uint" + bits() + " data " + what;
        fix = "arr.astype(np.int64)"; break;
      case 'c': what = "complex data " + what; fix = "arr.real and arr.imag, saved apart"; break;
      case 'O': what = "Python objects " + what; fix = "an array of numbers"; break;
      default: break;
    }
  }
  throw ValueError(std::string(r.fn()) + ": " + r.where() + " holds " + what +
                   ", which opforge has no dtype for (it has float32, float64, int64 and bool); convert it in NumPy "
                   "first, e.g. " + fix);
}

NpyInfo read_npy_header(Reader& r) {
  unsigned char pre[8];
  r.read(pre, 8, "the .npy magic and version");
  if (std::memcmp(pre, "\x93NUMPY", 6) != 0)
    throw ValueError(std::string(r.fn()) + ": " + r.where() +
                     " is not a .npy file (it does not start with \"\\x93NUMPY\")");
  const int major = pre[6];
  if (major < 1 || major > 3)
    throw ValueError(std::string(r.fn()) + ": " + r.where() + " is .npy format version " + std::to_string(major) +
                     "." + std::to_string(pre[7]) + "; this reads 1.0, 2.0 and 3.0");
  std::uint32_t hlen = 0;
  if (major == 1) {
    unsigned char b[2];
    r.read(b, 2, "the header length");
    hlen = b[0] | (std::uint32_t(b[1]) << 8);
  } else {
    unsigned char b[4];
    r.read(b, 4, "the header length");
    hlen = b[0] | (std::uint32_t(b[1]) << 8) | (std::uint32_t(b[2]) << 16) | (std::uint32_t(b[3]) << 24);
  }
  // Checked before anything is allocated: a damaged or hostile length must not
  // make this allocate gigabytes. NumPy's own reader refuses headers over 10,000
  // bytes; opforge's are under 200 (at most 8 axes).
  constexpr std::uint32_t kMaxHeader = 100000;
  if (hlen > kMaxHeader || hlen > r.remaining())
    throw ValueError(std::string(r.fn()) + ": " + r.where() + " declares a .npy header of " + std::to_string(hlen) +
                     " bytes, " + (hlen > kMaxHeader ? "more than the " + std::to_string(kMaxHeader) + " a header may have"
                                                     : "more than the " + std::to_string(r.remaining()) +
                                                           " bytes that follow") +
                     ": the file is damaged or not a .npy file");
  std::string h(hlen, '\0');
  r.read(h.data(), hlen, "the header");
  NpyInfo info;
  info.header_bytes = r.used();
  while (!h.empty() && (h.back() == '\n' || h.back() == ' ' || h.back() == '\0')) h.pop_back();

  std::size_t at = find_key(h, "descr");
  if (at == std::string::npos || at >= h.size()) bad_header(r, "no 'descr'", h);
  if (h[at] == '[') bad_header(r, "a structured dtype (a list of fields); opforge tensors have one dtype", h);
  const char quote = h[at];
  if (quote != '\'' && quote != '"') bad_header(r, "'descr' is not a string", h);
  const std::size_t end = h.find(quote, at + 1);
  if (end == std::string::npos) bad_header(r, "'descr' is not a string", h);
  info.dtype = dtype_of_descr(r, h.substr(at + 1, end - at - 1));

  at = find_key(h, "fortran_order");
  if (at == std::string::npos) bad_header(r, "no 'fortran_order'", h);
  if (h.compare(at, 4, "True") == 0) info.fortran = true;
  else if (h.compare(at, 5, "False") != 0) bad_header(r, "'fortran_order' is neither True nor False", h);

  at = find_key(h, "shape");
  if (at == std::string::npos || at >= h.size() || h[at] != '(') bad_header(r, "no 'shape' tuple", h);
  const std::size_t close = h.find(')', at);
  if (close == std::string::npos) bad_header(r, "'shape' is not closed", h);
  std::size_t p = at + 1;
  while (p < close) {
    while (p < close && (h[p] == ' ' || h[p] == ',')) ++p;
    if (p >= close) break;
    std::size_t q = p;
    std::int64_t v = 0;
    while (q < close && h[q] >= '0' && h[q] <= '9') {
      if (v > (std::numeric_limits<std::int64_t>::max() - (h[q] - '0')) / 10) bad_header(r, "a size overflows int64", h);
      v = v * 10 + (h[q] - '0');
      ++q;
    }
    if (q == p) bad_header(r, "'shape' holds something other than sizes", h);
    if (q < close && h[q] == 'L') ++q;  // Python 2's long literal
    if (info.shape.size() == kMaxDims)
      bad_header(r, "more than " + std::to_string(kMaxDims) + " axes (opforge tensors have at most that many)", h);
    info.shape.push_back(v);
    p = q;
  }
  return info;
}

/// The tensor whose header `info` is, its data read from r.
Tensor read_npy_data(Reader& r, const NpyInfo& info) {
  Dims stored = info.shape;  // Fortran order: the transpose's shape, read in C order
  if (info.fortran) std::reverse(stored.begin(), stored.end());
  // The data's size, checked against what the file holds before anything is
  // allocated: a damaged shape must not allocate (or fault in) gigabytes.
  std::uint64_t bytes = itemsize(info.dtype);
  bool overflow = false;
  for (std::int64_t n : stored) overflow = overflow || __builtin_mul_overflow(bytes, static_cast<std::uint64_t>(n), &bytes);
  if (overflow || bytes > r.remaining())
    throw ValueError(std::string(r.fn()) + ": " + r.where() + " is truncated: its header declares " +
                     dtype_name(info.dtype) + info.shape.to_string() + ", " +
                     (overflow ? std::string("more bytes than 64 bits count") : std::to_string(bytes) + " bytes") +
                     " of data, and " + std::to_string(r.remaining()) + " bytes follow the header");
  Tensor t = Tensor::empty(stored, info.dtype);
  r.read(t.data_ptr(), t.nbytes(), "the data");
  if (info.dtype == DType::Bool) {  // NumPy's bools are 0 or 1; any other byte is true
    auto* b = static_cast<unsigned char*>(t.data_ptr());
    for (std::int64_t i = 0; i < t.numel(); ++i) b[i] = b[i] != 0;
  }
  if (!info.fortran || stored.size() < 2) return t;
  Dims order;
  for (std::size_t k = stored.size(); k-- > 0;) order.push_back(static_cast<std::int64_t>(k));
  NoGradGuard no_grad;
  return t.permute(order).contiguous();
}

/// t as its .npy bytes go out: detached, contiguous, row-major.
Tensor dense_for_saving(const char* fn, const Tensor& t, const std::string& what) {
  OPFORGE_CHECK(t.defined(), ValueError, fn, ": ", what, " is undefined (a default-constructed Tensor)");
  NoGradGuard no_grad;
  return t.detach().contiguous();
}

// ---- ZIP records ------------------------------------------------------------------------

void put16(std::string& s, std::uint32_t v) {
  s += static_cast<char>(v & 0xFF);
  s += static_cast<char>((v >> 8) & 0xFF);
}
void put32(std::string& s, std::uint32_t v) {
  put16(s, v & 0xFFFF);
  put16(s, v >> 16);
}
std::uint32_t get16(const unsigned char* p) { return p[0] | (std::uint32_t(p[1]) << 8); }
std::uint32_t get32(const unsigned char* p) { return get16(p) | (get16(p + 2) << 16); }
std::uint64_t get64(const unsigned char* p) { return get32(p) | (std::uint64_t(get32(p + 4)) << 32); }

constexpr std::uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr std::uint32_t kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr std::uint32_t kDosDate = (0 << 9) | (1 << 5) | 1;  // 1980-01-01, ZIP's first day: files carry no time

struct Member {
  std::string name;
  std::uint32_t crc = 0;
  std::uint64_t size = 0;    // stored bytes (no compression)
  std::uint64_t offset = 0;  // of its local header
  std::uint32_t method = 0;
};

std::uint64_t file_size(const char* fn, std::FILE* f, const std::string& path) {
  if (std::fseek(f, 0, SEEK_END) != 0) throw_os(fn, "seek in", path, errno);
  const long size = std::ftell(f);
  if (size < 0) throw_os(fn, "seek in", path, errno);
  return static_cast<std::uint64_t>(size);
}

void seek(const char* fn, std::FILE* f, std::uint64_t at, const std::string& path) {
  if (at > static_cast<std::uint64_t>(std::numeric_limits<long>::max()) || std::fseek(f, static_cast<long>(at), SEEK_SET) != 0)
    throw_os(fn, "seek in", path, errno ? errno : EINVAL);
}

std::vector<Member> read_central_directory(const char* fn, std::FILE* f, const std::string& path) {
  const std::string where = "'" + path + "'";
  const std::uint64_t size = file_size(fn, f, path);
  const std::uint64_t tail = std::min<std::uint64_t>(size, 22 + 65535);
  std::vector<unsigned char> buf(static_cast<std::size_t>(tail));
  seek(fn, f, size - tail, path);
  if (std::fread(buf.data(), 1, buf.size(), f) != buf.size()) throw_os(fn, "read", path, errno);
  std::int64_t eocd = -1;
  for (std::int64_t i = static_cast<std::int64_t>(tail) - 22; i >= 0; --i)
    if (get32(&buf[static_cast<std::size_t>(i)]) == kEndSig) {
      eocd = i;
      break;
    }
  if (eocd < 0)
    throw ValueError(std::string(fn) + ": " + where + " is not an .npz file (no ZIP end of central directory record)");
  const unsigned char* e = &buf[static_cast<std::size_t>(eocd)];
  std::uint64_t count = get16(e + 10), cd_size = get32(e + 12), cd_offset = get32(e + 16);
  if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {  // ZIP64 end records
    const std::uint64_t loc = size - tail + static_cast<std::uint64_t>(eocd);
    unsigned char l[20], z[56];
    if (loc < 20) throw ValueError(std::string(fn) + ": " + where + " has a damaged ZIP64 end record");
    seek(fn, f, loc - 20, path);
    if (std::fread(l, 1, 20, f) != 20 || get32(l) != kZip64LocatorSig)
      throw ValueError(std::string(fn) + ": " + where + " has a damaged ZIP64 end record");
    seek(fn, f, get64(l + 8), path);
    if (std::fread(z, 1, 56, f) != 56 || get32(z) != kZip64EndSig)
      throw ValueError(std::string(fn) + ": " + where + " has a damaged ZIP64 end record");
    count = get64(z + 32);
    cd_size = get64(z + 40);
    cd_offset = get64(z + 48);
  }
  if (cd_offset > size || cd_size > size - cd_offset)
    throw ValueError(std::string(fn) + ": " + where + " is truncated or damaged (its central directory lies past its end)");
  std::vector<unsigned char> cd(static_cast<std::size_t>(cd_size));
  seek(fn, f, cd_offset, path);
  if (!cd.empty() && std::fread(cd.data(), 1, cd.size(), f) != cd.size()) throw_os(fn, "read", path, errno);
  std::vector<Member> members;
  std::size_t p = 0;
  for (std::uint64_t k = 0; k < count; ++k) {
    if (p + 46 > cd.size() || get32(&cd[p]) != kCentralSig)
      throw ValueError(std::string(fn) + ": " + where + " has a damaged central directory (entry " + std::to_string(k) +
                       ")");
    const unsigned char* c = &cd[p];
    Member m;
    m.method = get16(c + 10);
    m.crc = get32(c + 16);
    std::uint64_t compressed = get32(c + 20);
    m.size = get32(c + 24);
    const std::size_t name_len = get16(c + 28), extra_len = get16(c + 30), comment_len = get16(c + 32);
    m.offset = get32(c + 42);
    if (p + 46 + name_len + extra_len + comment_len > cd.size())
      throw ValueError(std::string(fn) + ": " + where + " has a damaged central directory (entry " + std::to_string(k) +
                       ")");
    m.name.assign(reinterpret_cast<const char*>(c + 46), name_len);
    // ZIP64 extra field (id 1): the 64-bit values of those fields that read 0xFFFFFFFF, in this order.
    const unsigned char* x = c + 46 + name_len;
    for (std::size_t q = 0; q + 4 <= extra_len;) {
      const std::uint32_t id = get16(x + q), len = get16(x + q + 2);
      if (q + 4 + len > extra_len)
        throw ValueError(std::string(fn) + ": " + where + " has a damaged central directory (entry " +
                         std::to_string(k) + ": an extra field runs past its entry)");
      if (id == 1) {
        std::size_t v = q + 4;
        auto take = [&](std::uint64_t& field) {
          if (field != 0xFFFFFFFF) return;
          if (v + 8 > q + 4 + len) throw ValueError(std::string(fn) + ": " + where + " has a damaged ZIP64 field");
          field = get64(x + v);
          v += 8;
        };
        take(m.size);
        take(compressed);
        take(m.offset);
      }
      q += 4 + len;
    }
    if (m.method == 0 && compressed != m.size)
      throw ValueError(std::string(fn) + ": " + where + " member '" + m.name + "' is damaged (stored, yet " +
                       std::to_string(compressed) + " bytes hold " + std::to_string(m.size) + ")");
    members.push_back(std::move(m));
    p += 46 + name_len + extra_len + comment_len;
  }
  return members;
}

}  // namespace

void save_npy(const std::string& path, const Tensor& t) {
  const Tensor c = dense_for_saving("save_npy", t, "argument 't'");
  const std::string header = npy_header(c.dtype(), c.shape());
  AtomicWriter w("save_npy", path);
  w.write(header.data(), header.size());
  w.write(c.data_ptr(), c.nbytes());
  w.commit();
}

Tensor load_npy(const std::string& path) {
  File f = open_read("load_npy", path);
  const std::uint64_t size = file_size("load_npy", f.get(), path);
  seek("load_npy", f.get(), 0, path);
  Reader r(f.get(), size, "load_npy", "'" + path + "'");
  const NpyInfo info = read_npy_header(r);
  return read_npy_data(r, info);
}

void save_npz(const std::string& path, const NamedTensors& tensors) {
  constexpr const char* fn = "save_npz";
  OPFORGE_CHECK(tensors.size() < 0xFFFF, ValueError, fn, ": argument 'tensors': expected fewer than 65535 tensors (no ",
                "ZIP64 here), got ", tensors.size(), "; save them in several archives");
  std::vector<Tensor> dense;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const std::string& name = tensors[i].first;
    OPFORGE_CHECK(!name.empty() && name.find_first_of("/\\") == std::string::npos, ValueError, fn,
                  ": argument 'tensors': entry ", i, " has the name '", name,
                  "'; expected a non-empty name without '/' or '\\'");
    for (std::size_t j = 0; j < i; ++j)
      OPFORGE_CHECK(tensors[j].first != name, ValueError, fn, ": argument 'tensors': the name '", name,
                    "' is given twice (entries ", j, " and ", i, "); each tensor needs its own name");
    dense.push_back(dense_for_saving(fn, tensors[i].second, "the tensor named '" + name + "'"));
  }
  AtomicWriter w(fn, path);
  std::string central;
  for (std::size_t i = 0; i < dense.size(); ++i) {
    const Tensor& c = dense[i];
    const std::string name = tensors[i].first + ".npy";
    const std::string header = npy_header(c.dtype(), c.shape());
    const std::uint64_t size = header.size() + static_cast<std::uint64_t>(c.nbytes());
    const std::uint64_t offset = w.written();
    OPFORGE_CHECK(size < 0xFFFFFFFFu && offset < 0xFFFFFFFFu && offset + size + 30 + name.size() < 0xFFFFFFFFu,
                  ValueError, fn, ": the archive would pass 4 GiB at the tensor named '", tensors[i].first,
                  "' (no ZIP64 here); save large tensors one by one with save_npy");
    const std::uint32_t crc = crc32(crc32(0, header.data(), header.size()), c.data_ptr(), c.nbytes());
    std::string local;
    put32(local, kLocalSig);
    put16(local, 20);  // version needed: 2.0
    put16(local, 0);   // flags
    put16(local, 0);   // stored
    put16(local, 0);   // time
    put16(local, kDosDate);
    put32(local, crc);
    put32(local, static_cast<std::uint32_t>(size));
    put32(local, static_cast<std::uint32_t>(size));
    put16(local, static_cast<std::uint32_t>(name.size()));
    put16(local, 0);  // extra
    local += name;
    w.write(local.data(), local.size());
    w.write(header.data(), header.size());
    w.write(c.data_ptr(), c.nbytes());

    put32(central, kCentralSig);
    put16(central, 20);  // made by: MS-DOS, 2.0
    put16(central, 20);
    put16(central, 0);
    put16(central, 0);
    put16(central, 0);
    put16(central, kDosDate);
    put32(central, crc);
    put32(central, static_cast<std::uint32_t>(size));
    put32(central, static_cast<std::uint32_t>(size));
    put16(central, static_cast<std::uint32_t>(name.size()));
    put16(central, 0);  // extra
    put16(central, 0);  // comment
    put16(central, 0);  // disk
    put16(central, 0);  // internal attributes
    put32(central, 0);  // external attributes
    put32(central, static_cast<std::uint32_t>(offset));
    central += name;
  }
  const std::uint64_t cd_offset = w.written();
  OPFORGE_CHECK(cd_offset + central.size() < 0xFFFFFFFFu, ValueError, fn,
                ": the archive would pass 4 GiB (no ZIP64 here); save large tensors one by one with save_npy");
  std::string end;
  put32(end, kEndSig);
  put16(end, 0);
  put16(end, 0);
  put16(end, static_cast<std::uint32_t>(dense.size()));
  put16(end, static_cast<std::uint32_t>(dense.size()));
  put32(end, static_cast<std::uint32_t>(central.size()));
  put32(end, static_cast<std::uint32_t>(cd_offset));
  put16(end, 0);  // comment
  w.write(central.data(), central.size());
  w.write(end.data(), end.size());
  w.commit();
}

NamedTensors load_npz(const std::string& path) {
  constexpr const char* fn = "load_npz";
  File f = open_read(fn, path);
  const std::uint64_t size = file_size(fn, f.get(), path);
  NamedTensors out;
  for (const Member& m : read_central_directory(fn, f.get(), path)) {
    const std::string where = "'" + path + "' member '" + m.name + "'";
    if (m.method != 0)
      throw ValueError(std::string(fn) + ": " + where + " is compressed (ZIP method " + std::to_string(m.method) +
                       ", as np.savez_compressed writes); this reads stored members only: re-save the arrays with "
                       "np.savez");
    unsigned char local[30];
    seek(fn, f.get(), m.offset, path);
    if (m.offset + 30 > size || std::fread(local, 1, 30, f.get()) != 30 || get32(local) != kLocalSig)
      throw ValueError(std::string(fn) + ": " + where + " is damaged (no local header at byte " +
                       std::to_string(m.offset) + ")");
    const std::uint64_t data = m.offset + 30 + get16(local + 26) + get16(local + 28);
    if (data > size || m.size > size - data)
      throw ValueError(std::string(fn) + ": " + where + " is truncated (" + std::to_string(m.size) +
                       " bytes from byte " + std::to_string(data) + " of a " + std::to_string(size) + "-byte file)");
    seek(fn, f.get(), data, path);
    Reader r(f.get(), m.size, fn, where);
    const NpyInfo info = read_npy_header(r);
    Tensor t = read_npy_data(r, info);
    if (r.used() != m.size)
      throw ValueError(std::string(fn) + ": " + where + " holds " + std::to_string(m.size) + " bytes, and its .npy " +
                       "header and data take " + std::to_string(r.used()));
    if (r.crc() != m.crc)
      throw ValueError(std::string(fn) + ": " + where + " is damaged: its CRC-32 is " + std::to_string(r.crc()) +
                       ", the archive says " + std::to_string(m.crc));
    std::string name = m.name;
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0) name.resize(name.size() - 4);
    out.emplace_back(std::move(name), std::move(t));
  }
  return out;
}

}  // namespace opforge
