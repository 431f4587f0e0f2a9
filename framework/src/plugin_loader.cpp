// Loading op plugins with Boost.DLL.
//
// Order of a load, each step with its own error:
//   1. the file exists and is a regular file;
//   2. an ELF file is for this machine, a shared library and not truncated
//      (checked before dlopen, whose words for these mislead or which would
//      crash on them); dlopen succeeds (RTLD_NOW: unresolved symbols are
//      reported here, not later);
//   3. it exports opforge_plugin_descriptor, and the descriptor's plain-C fields
//      (size, ABI version, compiler, C++ ABI) match this core;
//   4. it exports opforge_plugin_register, which is called with a staging
//      registrar; its ops are committed to the registry only if it succeeds and
//      no name clashes.
// The library handle is shared by every op the plugin registers, so the code
// stays mapped while any op handle or graph node made from it is alive.
//
// Lifetime: the loader holds one more reference to each loaded library (and to
// every op entry it registered). unload_plugin (or a load with replace_existing)
// takes the plugin's ops out of the registry and drops the loader's references;
// the library is closed when the last op entry holding it is destroyed. What the
// loader drops is released after its lock (and the registry's) is let go, so a
// plugin's static destructors never run under either.
//
// No plugin code runs under the loader's lock (nor inside a call_once): dlopen
// (static initialisers), the descriptor and the registration entry point run
// unlocked, so that registration code may call back into opforge (op(),
// loaded_plugins(), Tensor::from_blob, make_op, register_hook, load_plugin).
// A load takes the lock three times: to check the file and mark it as being
// loaded, to publish where the library is mapped, and to commit.
//
// Identity: a plugin is found from an address (a deleter, a hook, a vtable, its
// static data) by where its PT_LOAD segments, and those of the libraries it needs
// that the program did not have mapped before (image_objects), are mapped,
// recorded at load time
// from the dynamic loader's own program headers (dl_iterate_phdr), never by its
// file name (the file may be gone, renamed or replaced since) and without
// dladdr (which takes the dynamic loader's lock). A lock-free table of the
// mapped ranges answers "in no plugin" without any lock, for the common case.
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <string>
#include <typeinfo>
#include <vector>

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <boost/filesystem.hpp>

#include "boundary.hpp"
#include "opforge/plugin_abi.h"
#include "opforge/plugins.hpp"
#include "opforge/threads.hpp"
#include "opforge/version.hpp"
#include "plugin_keepalive.hpp"
#include "registry.hpp"

namespace opforge {
namespace fs = boost::filesystem;

namespace plugin_map {
std::atomic<std::uintptr_t> hull_lo{UINTPTR_MAX};
std::atomic<std::uintptr_t> hull_hi{0};
std::atomic<int> untracked{0};
}  // namespace plugin_map

namespace {

// Which file a plugin was loaded from, as the dynamic loader sees it. dlopen
// hands back an already open library for the same path (or the same inode)
// without reading the file again, so a rebuilt file must not be loaded while
// the old build is still open.
struct FileId {
  bool known = false;  // stat() succeeded
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  std::int64_t mtime_ns = 0;
  bool same_file(const FileId& o) const { return known && o.known && dev == o.dev && ino == o.ino; }
  bool same_build(const FileId& o) const { return same_file(o) && size == o.size && mtime_ns == o.mtime_ns; }
};

FileId file_id(const std::string& file) {
  FileId id;
  struct stat st {};
  if (::stat(file.c_str(), &st) == 0) {
    id.known = true;
    id.dev = st.st_dev;
    id.ino = st.st_ino;
    id.size = st.st_size;
    id.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  }
  return id;
}

// ---- where plugins are mapped: a lock-free table for the fast "in no plugin" answer ----

// One slot per open plugin library: the hull [lo, hi) of its PT_LOAD segments.
// Written by loads and closes (which may run on any thread), read lock-free by
// keep_plugin_loaded. A reader may see a slot being filled or cleared: either
// way the answer is only "maybe", checked exactly under the loader's lock.
constexpr int kSlots = 256;
struct Slot {
  std::atomic<std::uintptr_t> lo{0};
  std::atomic<std::uintptr_t> hi{0};
  std::atomic<bool> used{false};
};
Slot g_slots[kSlots];
std::atomic<int> g_slot_end{0};    // slots [0, end) may be in use
// The hull of every range ever published (it only grows), and the count of open
// libraries that found no free slot (then every address is a "maybe"): see
// may_be_in_plugin in plugin_keepalive.hpp.
std::atomic<std::uintptr_t>& g_hull_lo = plugin_map::hull_lo;
std::atomic<std::uintptr_t>& g_hull_hi = plugin_map::hull_hi;
std::atomic<int>& g_untracked = plugin_map::untracked;

constexpr int kUnpublished = -2;
constexpr int kUntracked = -1;

int publish_range(std::uintptr_t lo, std::uintptr_t hi) noexcept {
  std::uintptr_t v = g_hull_lo.load(std::memory_order_relaxed);
  while (lo < v && !g_hull_lo.compare_exchange_weak(v, lo, std::memory_order_release)) {
  }
  v = g_hull_hi.load(std::memory_order_relaxed);
  while (hi > v && !g_hull_hi.compare_exchange_weak(v, hi, std::memory_order_release)) {
  }
  for (int i = 0; i < kSlots; ++i) {
    bool expected = false;
    if (!g_slots[i].used.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) continue;
    g_slots[i].hi.store(hi, std::memory_order_relaxed);
    g_slots[i].lo.store(lo, std::memory_order_release);
    int end = g_slot_end.load(std::memory_order_relaxed);
    while (end < i + 1 && !g_slot_end.compare_exchange_weak(end, i + 1, std::memory_order_release)) {
    }
    return i;
  }
  g_untracked.fetch_add(1, std::memory_order_release);
  return kUntracked;
}

void retract_range(int slot) noexcept {
  if (slot == kUnpublished) return;
  if (slot == kUntracked) {
    g_untracked.fetch_sub(1, std::memory_order_release);
    return;
  }
  g_slots[slot].lo.store(0, std::memory_order_relaxed);
  g_slots[slot].hi.store(0, std::memory_order_relaxed);
  g_slots[slot].used.store(false, std::memory_order_release);
}

// False when `address` is surely in no open plugin library. No lock, no call.
bool maybe_in_plugin(std::uintptr_t a) noexcept {
  if (!may_be_in_plugin(reinterpret_cast<const void*>(a))) return false;
  if (g_untracked.load(std::memory_order_acquire) != 0) return true;
  const int end = g_slot_end.load(std::memory_order_acquire);
  for (int i = 0; i < end; ++i) {
    const std::uintptr_t lo = g_slots[i].lo.load(std::memory_order_acquire);
    if (lo != 0 && a >= lo && a < g_slots[i].hi.load(std::memory_order_relaxed)) return true;
  }
  return false;
}

// A shared object the dynamic loader mapped for a plugin: the plugin's file or a
// library it needs that was not loaded before (a vendor library it wraps).
struct MappedObject {
  std::uintptr_t base = 0;  // link_map l_addr
  std::string name;         // link_map l_name
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> segments;  // [lo, hi) of each PT_LOAD
};

// Set once the library is closed (by the library's deleter, on whichever thread).
struct CloseState {
  std::atomic<bool> closed{false};
  // Still mapped after the last dlclose: the dynamic loader keeps a library with
  // thread_local destructors or STB_GNU_UNIQUE symbols (see still_mapped).
  std::atomic<bool> resident{false};
  // Written by the loading thread before the library is shared.
  std::vector<int> slots;       // one published range per object of `objects`
  std::vector<MappedObject> objects;
};
using Closed = std::shared_ptr<CloseState>;

// One dlopen of a plugin file, shared by the loader's records of it (loading,
// loaded, unloaded). The mutable members are guarded by the loader's mutex.
struct Image {
  std::weak_ptr<void> library;  // every op entry of it holds the library; so does the loader while loaded
  Closed closed;
  // [lo, hi) of each PT_LOAD, as mapped, of the plugin's file and of the
  // libraries it needs that the program did not have first (image_objects).
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> segments;
  // The one reference to the library that tensors, hooks and make_op entries
  // made by plugin code share: its use count is how many of them there are.
  std::weak_ptr<void> holders;
  // The registrar its registration got: kept, closed, so that a later call through
  // an address the plugin kept is refused (it holds nothing once closed).
  std::shared_ptr<PluginRegistrar> registrar;

  bool open() const { return !closed->closed.load(std::memory_order_acquire); }
  bool contains(std::uintptr_t a) const {
    for (const auto& s : segments)
      if (a >= s.first && a < s.second) return true;
    return false;
  }
};
using ImagePtr = std::shared_ptr<Image>;

// Drops the library reference a holder token carried once the last holder is
// gone (not when the control block is freed: the loader's weak_ptr keeps that).
struct ReleaseLibrary {
  std::shared_ptr<void> library;
  void operator()(void*) { library.reset(); }
};

// A reference for a tensor, hook or Function made by the image's code; null
// once the library is closed. Called under the loader's mutex; never drops the
// last reference to a library there.
std::shared_ptr<void> holder_of(Image& image) {
  if (auto h = image.holders.lock()) return h;
  std::shared_ptr<void> lib = image.library.lock();
  if (!lib) return nullptr;
  void* const p = lib.get();
  std::shared_ptr<void> h(p, ReleaseLibrary{std::move(lib)});
  image.holders = h;
  return h;
}

// How many ops of a plugin are in use, and how many other things hold it.
struct Uses {
  std::size_t ops = 0;
  std::size_t others = 0;
};
Uses uses_of(const Image& image, bool loader_holds) {
  const long lib = image.library.use_count();
  const long others = image.holders.use_count();
  const long ops = lib - (others > 0 ? 1 : 0) - (loader_holds ? 1 : 0);
  return {static_cast<std::size_t>(std::max(ops, 0L)), static_cast<std::size_t>(others)};
}
std::string uses_text(const Uses& u) {
  return "ops in use: " + std::to_string(u.ops) + "; tensors, hooks or functions made by the plugin: " +
         std::to_string(u.others);
}

// Every shared object mapped now, with its PT_LOAD segments, from the dynamic
// loader's own program headers.
std::vector<MappedObject> mapped_objects() {
  std::vector<MappedObject> out;
  ::dl_iterate_phdr(
      [](struct dl_phdr_info* info, std::size_t, void* arg) -> int {
        MappedObject o;
        o.base = info->dlpi_addr;
        o.name = info->dlpi_name ? info->dlpi_name : "";
        for (ElfW(Half) i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
          const std::uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
          o.segments.emplace_back(lo, lo + ph.p_memsz);
        }
        static_cast<std::vector<MappedObject>*>(arg)->push_back(std::move(o));
        return 0;
      },
      &out);
  return out;
}

// The objects mapped before the first plugin load: the program and the libraries
// it links (libopforge, the C++ runtime, libc, oneTBB, OpenBLAS...). A plugin's
// image never includes them: they outlive every plugin.
const std::vector<MappedObject>& core_objects() {
  static const std::vector<MappedObject> core = mapped_objects();
  return core;
}

bool same_object(const MappedObject& a, std::uintptr_t base, const char* name) {
  return a.base == base && name && a.name == name;
}

// The shared objects a plugin's dlclose may unmap, so what their code or data made
// must hold the plugin: its own file (always: also when an earlier load of the
// same file still had it mapped) and, transitively, the libraries it needs
// (DT_NEEDED: a vendor library it wraps) that are not the core's. Libraries a
// plugin opens itself with dlopen are not followed (they may leave while it stays).
// Found from the dynamic loader's own link maps: dlopen(RTLD_NOLOAD) of a needed
// name hands back the library already loaded for it, with no search and no load.
std::vector<MappedObject> image_objects(void* handle) {
  const std::vector<MappedObject>& core = core_objects();
  const std::vector<MappedObject> now = mapped_objects();
  std::vector<MappedObject> out;
  std::vector<const struct link_map*> todo;
  struct link_map* own = nullptr;
  if (::dlinfo(handle, RTLD_DI_LINKMAP, &own) == 0 && own) todo.push_back(own);
  bool first = true;
  while (!todo.empty()) {
    const struct link_map* lm = todo.back();
    todo.pop_back();
    const auto base = static_cast<std::uintptr_t>(lm->l_addr);
    auto in = [&](const std::vector<MappedObject>& list) {
      return std::find_if(list.begin(), list.end(),
                          [&](const MappedObject& o) { return same_object(o, base, lm->l_name); });
    };
    if (!first && (in(core) != core.end() || in(out) != out.end())) continue;
    first = false;
    const auto mapped = in(now);
    if (mapped == now.end() || mapped->segments.empty()) continue;
    out.push_back(*mapped);
    // Its DT_NEEDED names, from its dynamic section (the string table's address is
    // relocated in place on most targets; where it is not, it is an offset).
    const char* strtab = nullptr;
    for (const ElfW(Dyn)* d = lm->l_ld; d && d->d_tag != DT_NULL; ++d)
      if (d->d_tag == DT_STRTAB) {
        std::uintptr_t at = d->d_un.d_ptr;
        const bool inside = std::any_of(mapped->segments.begin(), mapped->segments.end(),
                                        [&](const auto& seg) { return at >= seg.first && at < seg.second; });
        if (!inside) at += base;
        strtab = reinterpret_cast<const char*>(at);
      }
    if (!strtab) continue;
    for (const ElfW(Dyn)* d = lm->l_ld; d->d_tag != DT_NULL; ++d) {
      if (d->d_tag != DT_NEEDED) continue;
      void* dep = ::dlopen(strtab + d->d_un.d_val, RTLD_LAZY | RTLD_NOLOAD);
      if (!dep) continue;
      struct link_map* dlm = nullptr;
      if (::dlinfo(dep, RTLD_DI_LINKMAP, &dlm) == 0 && dlm) todo.push_back(dlm);
      ::dlclose(dep);  // only the reference this lookup took: the plugin still needs it
    }
  }
  return out;
}

// Whether the object loaded as `o` is still mapped (after its last dlclose).
bool still_mapped(const MappedObject& o) {
  struct Search {
    const MappedObject* o;
    bool found;
  } search{&o, false};
  ::dl_iterate_phdr(
      [](struct dl_phdr_info* info, std::size_t, void* arg) -> int {
        auto* s = static_cast<Search*>(arg);
        if (!same_object(*s->o, info->dlpi_addr, info->dlpi_name)) return 0;
        s->found = true;
        return 1;
      },
      &search);
  return search.found;
}

// The buffer a plugin's registration entry point writes its error message into.
constexpr std::size_t kRegistrationMessageBytes = 64 * 1024;

// The message a failed registration wrote: read up to the buffer's end whether
// or not the plugin terminated it; a message that fills the buffer was cut, so
// it loses any partial UTF-8 character at the end and says so.
std::string registration_message(const std::vector<char>& buf) {
  const std::size_t cap = buf.size() - 1;  // bytes a terminated message can have
  std::size_t n = 0;
  while (n < buf.size() && buf[n] != '\0') ++n;
  if (n == 0) return "no reason given";
  if (n < cap) return std::string(buf.data(), n);
  n = cap;
  std::size_t lead = n;  // start of the last character
  while (lead > 0 && (static_cast<unsigned char>(buf[lead - 1]) & 0xC0) == 0x80 && n - lead < 3) --lead;
  if (lead > 0) {
    const auto c = static_cast<unsigned char>(buf[lead - 1]);
    const std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    if (len > 1 && n - (lead - 1) < len) n = lead - 1;  // the last character is incomplete
  }
  return std::string(buf.data(), n) + "... (cut: the loader reads at most " + std::to_string(cap) +
         " bytes of a plugin's message)";
}

// ---- the loader's state ----

// A plugin loaded now.
struct LoadedPlugin {
  PluginInfo info;  // info.ops: the ops it provides now
  FileId id;
  std::shared_ptr<void> library;      // the loader's own reference
  ImagePtr image;
  std::vector<OpEntryPtr> entries;    // every op it registered, including any another plugin took over
};

// A plugin unloaded or replaced, or one whose load failed after dlopen, whose
// library may still be open.
struct UnloadedPlugin {
  PluginInfo info;
  FileId id;
  ImagePtr image;
  bool failed = false;  // its load failed (what its code made before that may hold it)
  bool open() const { return image->open(); }
};

// A file being loaded now (its plugin code runs with the loader's lock let go).
struct LoadingPlugin {
  std::uint64_t ticket = 0;
  std::string file;
  FileId id;
  std::thread::id thread;
  ImagePtr image;  // once dlopen succeeded
};

// What the loader drops, released only once its lock is let go.
struct Dropped {
  std::vector<OpEntryPtr> entries;
  std::vector<std::shared_ptr<void>> libraries;
  void release() {
    entries.clear();  // destroys the Functions (plugin code) first
    libraries.clear();
  }
  ~Dropped() { release(); }
};

struct LoaderState {
  std::mutex mu;  // guards everything below; never held while plugin code runs
  std::condition_variable done;  // a load finished (a LoadingPlugin left `loading`)
  std::vector<LoadedPlugin> loaded;
  std::vector<UnloadedPlugin> unloaded;  // pruned of closed ones under `mu`
  // Closed plugins the dynamic loader kept mapped: a changed build of one of these
  // files would load as the old code (dlopen hands back the mapped library).
  std::vector<UnloadedPlugin> resident;
  std::vector<LoadingPlugin> loading;
  std::uint64_t next_ticket = 1;
  std::vector<PluginLoadFailure> failures;
  // A static initialiser threw inside dlopen: the dynamic loader's lock stays
  // held by that thread for good (see static_initialiser_threw).
  bool dl_broken = false;
  std::thread::id dl_broken_thread;
  std::string dl_broken_file;
  std::string dl_broken_message;

  // Closed plugins leave `unloaded`; those the dynamic loader kept mapped go to
  // `resident` while they stay mapped (checked again on each prune: another
  // dlopen of the same file may have reopened it, or its last thread ended).
  void prune() {
    for (UnloadedPlugin& u : unloaded)
      if (!u.open() && u.image->closed->resident.load(std::memory_order_acquire)) resident.push_back(u);
    unloaded.erase(std::remove_if(unloaded.begin(), unloaded.end(), [](const UnloadedPlugin& u) { return !u.open(); }),
                   unloaded.end());
    resident.erase(std::remove_if(resident.begin(), resident.end(),
                                  [](const UnloadedPlugin& u) { return !still_mapped(u.image->closed->objects.front()); }),
                   resident.end());
  }
};

// Never destroyed, like the registry: no library is closed during static
// destruction, while other objects may still hold its ops.
LoaderState& state() {
  static LoaderState* s = new LoaderState();
  return *s;
}

std::string loaded_names(const LoaderState& st) {
  std::vector<std::string> names;
  for (const LoadedPlugin& p : st.loaded) names.push_back(p.info.name);
  std::sort(names.begin(), names.end());
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "none" : out;
}

[[noreturn]] void fail(const std::string& file, const std::string& what, const std::string& todo) {
  throw PluginError("cannot load plugin '" + file + "': " + what + (todo.empty() ? "" : "; " + todo));
}

// ---- a truncated file: refused before dlopen maps it (reading past the end of a
// mapped file is SIGBUS) ----

constexpr const char* kTruncatedTodo =
    "rebuild the plugin, or copy it again in full (the file is incomplete: an interrupted copy or download, or a "
    "full disk)";

[[noreturn]] void fail_truncated(const std::string& file, std::uint64_t size, const char* what, std::uint64_t need) {
  fail(file,
       "not a shared library (truncated: the file has " + std::to_string(size) + " bytes, its " + what + " need " +
           std::to_string(need) + ")",
       kTruncatedTodo);
}

template <class Ehdr, class Phdr>
void check_elf_extent(const std::string& file, int fd, std::uint64_t size) {
  Ehdr eh{};
  if (size < sizeof eh || ::pread(fd, &eh, sizeof eh, 0) != static_cast<ssize_t>(sizeof eh)) return;  // dlopen says
  if (eh.e_phentsize != sizeof(Phdr) || eh.e_phnum == 0) return;  // dlopen says what is wrong
  const std::uint64_t table_end = static_cast<std::uint64_t>(eh.e_phoff) + std::uint64_t{eh.e_phnum} * sizeof(Phdr);
  if (table_end > size) fail_truncated(file, size, "program headers", table_end);
  std::vector<Phdr> ph(eh.e_phnum);
  const auto bytes = static_cast<ssize_t>(ph.size() * sizeof(Phdr));
  if (::pread(fd, ph.data(), static_cast<std::size_t>(bytes), static_cast<off_t>(eh.e_phoff)) != bytes) return;
  std::uint64_t need = 0;
  for (const Phdr& p : ph)
    if (p.p_type == PT_LOAD) need = std::max(need, static_cast<std::uint64_t>(p.p_offset) + p.p_filesz);
  if (need > size) fail_truncated(file, size, "segments", need);
}

// ---- an ELF file for another machine, or not a shared library: refused before
// dlopen, whose words for it mislead (a plugin built for another architecture
// is "cannot open shared object file: No such file or directory") ----

// The ELF header of this library (libopforge) as mapped, from the linker (GNU ld,
// gold, lld): the machine and class a plugin must match. Weak: where no linker
// provides it, dlopen alone checks.
extern "C" const ElfW(Ehdr) __ehdr_start __attribute__((weak, visibility("hidden")));

std::string machine_name(unsigned m) {
  static const std::pair<unsigned, const char*> names[] = {
      {EM_X86_64, "x86-64"},     {EM_AARCH64, "AArch64 (arm64)"}, {EM_386, "x86 (32-bit)"}, {EM_ARM, "ARM (32-bit)"},
      {EM_RISCV, "RISC-V"},      {EM_PPC64, "PowerPC 64"},        {EM_S390, "s390"},         {EM_LOONGARCH, "LoongArch"}};
  for (const auto& [machine, name] : names)
    if (machine == m) return name;
  return "machine type " + std::to_string(m) + " (ELF e_machine)";
}

void check_elf_target(const std::string& file, unsigned elf_class, unsigned type, unsigned machine) {
  constexpr const char* todo = "rebuild the plugin on this machine (or with a compiler for it)";
  constexpr unsigned own_class = sizeof(void*) == 8 ? ELFCLASS64 : ELFCLASS32;
  if (elf_class != own_class)
    fail(file,
         std::string("built for another machine (the file is ") + (elf_class == ELFCLASS32 ? "32" : "64") +
             "-bit ELF, this process is " + (own_class == ELFCLASS32 ? "32" : "64") + "-bit)",
         todo);
  const unsigned own_machine = &__ehdr_start ? __ehdr_start.e_machine : EM_NONE;
  if (own_machine != EM_NONE && machine != own_machine)
    fail(file,
         "built for another machine (the file is for " + machine_name(machine) + ", this process runs on " +
             machine_name(own_machine) + ")",
         todo);
  if (type == ET_DYN) return;
  const char* what = "an ELF file of another type";
  if (type == ET_EXEC) what = "an executable program";
  if (type == ET_REL) what = "an object file (.o), not linked";
  if (type == ET_CORE) what = "a core dump";
  fail(file, std::string("not a shared library (it is ") + what + ")", "pass a plugin built with opforge_add_plugin");
}

void check_elf_file(const std::string& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;  // dlopen reports why
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return;
  // e_ident, then e_type and e_machine: the same offsets in 32- and 64-bit files.
  unsigned char ident[EI_NIDENT + 4] = {};
  if (::pread(fd, ident, sizeof ident, 0) != static_cast<ssize_t>(sizeof ident)) return;
  if (std::memcmp(ident, ELFMAG, SELFMAG) != 0) return;  // not ELF: dlopen's "invalid ELF header"
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  if (ident[EI_DATA] != ELFDATA2LSB) return;
#else
  if (ident[EI_DATA] != ELFDATA2MSB) return;
#endif
  std::uint16_t type = 0, machine = 0;  // in this machine's byte order, checked above
  std::memcpy(&type, ident + EI_NIDENT, 2);
  std::memcpy(&machine, ident + EI_NIDENT + 2, 2);
  check_elf_target(file, ident[EI_CLASS], type, machine);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (ident[EI_CLASS] == ELFCLASS64) check_elf_extent<Elf64_Ehdr, Elf64_Phdr>(file, fd, size);
  else if (ident[EI_CLASS] == ELFCLASS32) check_elf_extent<Elf32_Ehdr, Elf32_Phdr>(file, fd, size);
}

// ---- a static initialiser that throws ----

// The exception unwound through dlopen, which never released the dynamic
// loader's (recursive) lock, nor restored its error-catching state: this thread
// holds that lock for good, so a dlopen or dladdr on any other thread would
// wait forever. Nothing portable releases it; the loader refuses loads from
// other threads from now on (rather than hang), and says to restart.
[[noreturn]] void static_initialiser_threw(LoaderState& st, const std::string& file, const std::string& thrown) {
  const std::string msg =
      "cannot load plugin '" + file + "': a static initialiser of the plugin threw " + thrown +
      " inside the dynamic loader; fix the plugin (a static initialiser must not throw: do fallible set-up in the "
      "OPFORGE_PLUGIN body) or remove the file from the plugin path, then restart the process: the exception left "
      "the process's dynamic loader locked and possibly inconsistent, so loading a library on another thread may hang";
  {
    std::lock_guard<std::mutex> lock(st.mu);
    if (!st.dl_broken) {
      st.dl_broken = true;
      st.dl_broken_thread = std::this_thread::get_id();
      st.dl_broken_file = file;
      st.dl_broken_message = msg;
    }
  }
  throw PluginError(msg);
}

std::string read_str(const char* s) { return s ? std::string(s) : std::string("(null)"); }

// Inside a catch block only: the exception in flight as "TYPE (WHAT)", or words for
// one of a type that is not a std::exception (read while its library is open).
std::string thrown_text() {
  try {
    throw;
  } catch (const std::exception& e) {
    return demangle(typeid(e).name()) + " (" + e.what() + ")";
  } catch (...) {
    return "an exception of a type opforge does not know (not derived from std::exception)";
  }
}

// `s` with control characters, quotes, backslashes and bytes past ASCII as \xNN.
std::string printable(const std::string& s) {
  std::string out;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '"' && c != '\\') {
      out += ch;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out.size() > 200 ? out.substr(0, 200) + "..." : out;
}

void check_descriptor(const std::string& file, const OpforgePluginDescriptor* d) {
  if (!d) fail(file, "opforge_plugin_descriptor() returned null", "the plugin is broken; rebuild it with OPFORGE_PLUGIN");
  // The first three fields exist in every version of the struct.
  if (d->abi_major != OPFORGE_PLUGIN_ABI_MAJOR) {
    fail(file,
         "plugin ABI version " + std::to_string(d->abi_major) + "." + std::to_string(d->abi_minor) +
             " is not supported by this opforge (plugin ABI " + std::to_string(OPFORGE_PLUGIN_ABI_MAJOR) + "." +
             std::to_string(OPFORGE_PLUGIN_ABI_MINOR) + "; it accepts " + std::to_string(OPFORGE_PLUGIN_ABI_MAJOR) +
             ".0 to " + std::to_string(OPFORGE_PLUGIN_ABI_MAJOR) + "." + std::to_string(OPFORGE_PLUGIN_ABI_MINOR) + ")",
         "rebuild the plugin against the opforge SDK " OPFORGE_VERSION_STRING);
  }
  if (d->abi_minor > OPFORGE_PLUGIN_ABI_MINOR) {
    fail(file,
         "the plugin was built for plugin ABI " + std::to_string(d->abi_major) + "." + std::to_string(d->abi_minor) +
             ", newer than this opforge's " + std::to_string(OPFORGE_PLUGIN_ABI_MAJOR) + "." +
             std::to_string(OPFORGE_PLUGIN_ABI_MINOR),
         "upgrade opforge, or rebuild the plugin against the opforge SDK " OPFORGE_VERSION_STRING);
  }
  if (d->struct_size < sizeof(OpforgePluginDescriptor)) {
    fail(file,
         "its descriptor is " + std::to_string(d->struct_size) + " bytes, expected at least " +
             std::to_string(sizeof(OpforgePluginDescriptor)) + " for plugin ABI " +
             std::to_string(d->abi_major) + "." + std::to_string(d->abi_minor),
         "the plugin is broken; rebuild it with OPFORGE_PLUGIN");
  }
  const std::string stdlib = read_str(d->stdlib);
  if (stdlib != OPFORGE_STDLIB_ID) {
    const bool debug_mode = stdlib.find("_GLIBCXX_DEBUG") != std::string::npos ||
                            std::strstr(OPFORGE_STDLIB_ID, "_GLIBCXX_DEBUG") != nullptr;
    fail(file, "C++ standard library differs: the plugin was built with " + stdlib + " (" + read_str(d->compiler) +
                   "), opforge with " OPFORGE_STDLIB_ID " (" OPFORGE_COMPILER_ID ")",
         debug_mode
             ? "build the plugin and opforge alike, both with or both without _GLIBCXX_DEBUG (it changes the layout "
               "of the standard containers opforge and its plugins share; _GLIBCXX_ASSERTIONS checks without changing "
               "it)"
             : "rebuild the plugin against the C++ standard library opforge uses");
  }
  if (d->cxx11_string_abi != OPFORGE_CXX11_STRING_ABI) {
    fail(file, "C++ standard-library ABI differs: plugin _GLIBCXX_USE_CXX11_ABI=" +
                   std::to_string(d->cxx11_string_abi) + ", opforge " + std::to_string(OPFORGE_CXX11_STRING_ABI),
         "rebuild the plugin without overriding _GLIBCXX_USE_CXX11_ABI");
  }
  if (!d->name || !*d->name) fail(file, "its descriptor has no plugin name", "give OPFORGE_PLUGIN a name");
  // The name and version are printed in listings and messages (and JSON): plain words only.
  const std::string name = d->name;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_') || name.size() > 128)
      fail(file, "its plugin name '" + printable(name) + "' is not a plain name",
           "name the plugin (OPFORGE_PLUGIN's first argument) with at most 128 letters, digits and '_', as the "
           "family of its ops (e.g. 'myops' for 'myops.silu')");
  const std::string version = d->version ? d->version : "";  // (null: shown as "(null)", as before)
  for (char c : version)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || std::strchr("._+-~", c)) || version.size() > 64)
      fail(file, "plugin '" + name + "': its version '" + printable(version) + "' is not a plain version",
           "give OPFORGE_PLUGIN a version of at most 64 letters, digits and . _ + - ~ (e.g. \"1.2.0\")");
}

// Takes a file's LoadingPlugin out of `loading` when its load ends, however it ends.
class LoadingGuard {
 public:
  LoadingGuard(LoaderState& st, std::uint64_t ticket) : st_(st), ticket_(ticket) {}
  LoadingGuard(const LoadingGuard&) = delete;
  LoadingGuard& operator=(const LoadingGuard&) = delete;
  ~LoadingGuard() {
    {
      std::lock_guard<std::mutex> lock(st_.mu);
      remove_locked();
    }
    st_.done.notify_all();
  }
  // Under the lock, once the plugin is committed (the same critical section).
  void remove_locked() {
    st_.loading.erase(std::remove_if(st_.loading.begin(), st_.loading.end(),
                                     [&](const LoadingPlugin& l) { return l.ticket == ticket_; }),
                      st_.loading.end());
  }
  LoadingPlugin* record() {
    for (LoadingPlugin& l : st_.loading)
      if (l.ticket == ticket_) return &l;
    return nullptr;
  }

 private:
  LoaderState& st_;
  std::uint64_t ticket_;
};

// Loads one file. Takes the loader's lock only around its own steps: plugin code
// (static initialisers, the descriptor, registration) runs unlocked.
PluginInfo load_file(LoaderState& st, const std::string& path, const LoadOptions& options) {
  boost::system::error_code ec;
  const fs::path p(path);
  if (!fs::exists(p, ec)) {
    struct stat lst {};
    errno = 0;
    if (::stat(path.c_str(), &lst) != 0 && errno == ELOOP)
      fail(path, "a symbolic link that leads back to itself (a loop of links)",
           "fix the links so that they end at the plugin's file, or remove them (from the plugin folder)");
    if (errno == ENOTDIR)
      fail(path, "a part of the path before its end is a file, not a directory (a trailing '/' after a file name?)",
           "pass the plugin's file itself, e.g. without a trailing '/'");
    if (fs::is_symlink(p, ec))
      fail(path, "a symbolic link to '" + fs::read_symlink(p, ec).string() + "', which does not exist",
           "fix the link, or remove it (from the plugin folder)");
    fail(path, "file not found", "check the path (or OPFORGE_PLUGIN_PATH)");
  }
  if (fs::is_directory(p, ec))
    fail(path, "it is a directory, not a plugin file",
         std::string("pass the plugin's .so file (a folder of plugins belongs on OPFORGE_PLUGIN_PATH)") +
             (p.extension() == ".so" ? "; in a plugin folder, rename the directory so that its name does not end in .so"
                                     : ""));
  if (!fs::is_regular_file(p, ec)) fail(path, "not a regular file", "pass a plugin's .so file");
  const std::string file = fs::canonical(p, ec).string();
  const FileId id = file_id(file);
  const std::thread::id me = std::this_thread::get_id();

  // Declared before any lock is taken, so destroyed after every lock is let go:
  // the library (and its staged entries) are never released under the lock.
  std::shared_ptr<boost::dll::shared_library> lib;
  Dropped dropped;
  // Outlives the load (the image keeps it): a plugin that kept the registrar's
  // address and calls it later gets an error, not freed memory. Closed when
  // load_file returns, after every lock is let go (close() drops what it staged).
  std::shared_ptr<StagingRegistrar> registrar;
  struct CloseRegistrar {
    std::shared_ptr<StagingRegistrar>& r;
    ~CloseRegistrar() {
      if (r) r->close();
    }
  } close_registrar{registrar};

  std::uint64_t ticket = 0;
  {
    std::unique_lock<std::mutex> lock(st.mu);
    for (;;) {
      if (st.dl_broken) {
        if (st.dl_broken_file == file) throw PluginError(st.dl_broken_message);
        if (st.dl_broken_thread != me)
          fail(file, "the static initialiser of plugin file '" + st.dl_broken_file +
                         "' threw inside the dynamic loader on another thread, which left the loader locked: this "
                         "load would hang",
               "restart the process (after fixing or removing '" + st.dl_broken_file + "')");
      }
      for (const LoadedPlugin& other : st.loaded) {
        if (other.info.file == file) fail(file, "this file is already loaded (plugin '" + other.info.name + "')", "");
        if (other.id.same_file(id))
          fail(file, "this file is already loaded, as " + other.info.file + " (plugin '" + other.info.name + "')", "");
      }
      auto busy = std::find_if(st.loading.begin(), st.loading.end(), [&](const LoadingPlugin& l) {
        return l.file == file || l.id.same_file(id);
      });
      if (busy == st.loading.end()) break;
      if (busy->thread == me)
        fail(file, "this file is being loaded already, by this thread (the plugin's registration code, or code it "
                   "calls, loads its own file)",
             "do not call load_plugin on a plugin's own file from its registration");
      st.done.wait(lock);  // another thread loads it: wait, then look again ("already loaded", or a failure)
    }
    st.prune();
    for (const UnloadedPlugin& old : st.unloaded) {
      if ((old.info.file == file || old.id.same_file(id)) && !old.id.same_build(id)) {
        fail(file,
             "an earlier build of this file is still open: plugin '" + old.info.name + "' (" + old.info.file + ") " +
                 (old.failed ? "failed to load, but what its code made before that"
                             : "was unloaded, but its ops or what its code made") +
                 " are still in use (" + uses_text(uses_of(*old.image, false)) +
                 "), and the dynamic loader would hand back that old code, not the file now on disk",
             "load the new build from another path (a copy of the file, not a link), or release the old "
             "plugin's op handles and graphs, and the tensors, hooks and make_op handles it made, first");
      }
    }
    for (const UnloadedPlugin& old : st.resident) {
      if ((old.info.file == file || old.id.same_file(id)) && !old.id.same_build(id)) {
        fail(file,
             "an earlier build of this file (plugin '" + old.info.name + "') stays mapped in this process: the "
             "dynamic loader did not unmap it when opforge closed it (it has thread_local objects with destructors, "
             "or unique symbols: STB_GNU_UNIQUE, from inline function-local statics or static members of templates "
             "with default visibility), and would hand back that old code, not the file now on disk",
             "load the new build from another path (a copy of the file, not a link), or restart the process; "
             "to let a rebuilt plugin reload in place, build it with opforge_add_plugin (hidden visibility) and "
             "without thread_local objects that have destructors");
      }
    }
    ticket = st.next_ticket++;
    st.loading.push_back({ticket, file, id, me, nullptr});
  }
  LoadingGuard guard(st, ticket);

  check_elf_file(file);  // another machine's, not a library, or truncated: before dlopen maps it
  Closed closed = std::make_shared<CloseState>();
  lib.reset(new boost::dll::shared_library(), [closed](boost::dll::shared_library* l) {
    delete l;  // dlclose
    for (int slot : closed->slots) retract_range(slot);
    if (!closed->objects.empty() && still_mapped(closed->objects.front()))
      closed->resident.store(true, std::memory_order_release);
    closed->closed.store(true, std::memory_order_release);
  });
  (void)core_objects();  // taken before the first plugin is mapped
  try {
    lib->load(file, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, ec);
  } catch (...) {
    static_initialiser_threw(st, file, thrown_text());
  }
  if (ec || !lib->is_loaded()) {
    // dlerror() holds the loader's own words (bad ELF header, undefined symbol...).
    const char* why = ::dlerror();
    std::string reason = why ? why : ec.message();
    if (reason.find("cannot read file data") != std::string::npos)
      fail(file, "not a shared library (truncated: " + reason + ")", kTruncatedTodo);
    if (reason.find("invalid ELF header") != std::string::npos || reason.find("file too short") != std::string::npos ||
        reason.find("cannot dynamically load") != std::string::npos)  // a position-independent executable
      fail(file, "not a shared library (" + reason + ")", "pass a plugin built with opforge_add_plugin");
    if (reason.find("undefined symbol") != std::string::npos)
      fail(file, "it needs a symbol that nothing loaded provides (" + reason + ")",
           "rebuild the plugin against this opforge, and link the libraries it uses");
    fail(file, "the dynamic loader refused it (" + reason + ")",
         "check that the file is readable and that the libraries it needs are installed (ldd " + file + ")");
  }

  // Where it is mapped: from now on an address in it, or in a library it needs
  // that is not the core's, finds this load. The plugin's own file comes first.
  std::vector<MappedObject> mapped = image_objects(lib->native());
  auto image = std::make_shared<Image>();
  image->library = std::static_pointer_cast<void>(lib);
  image->closed = closed;
  for (const MappedObject& o : mapped) {
    std::uintptr_t lo = o.segments.front().first, hi = o.segments.front().second;
    for (const auto& seg : o.segments) {
      image->segments.push_back(seg);
      lo = std::min(lo, seg.first);
      hi = std::max(hi, seg.second);
    }
    closed->slots.push_back(publish_range(lo, hi));
  }
  closed->objects = std::move(mapped);
  // From here on a failure leaves a record while anything the plugin's code made
  // (in its static initialisers or its registration) holds the library, so that a
  // rebuilt file is not loaded as this one's code (load_file's check above).
  PluginInfo info;
  info.name = fs::path(file).stem().string();
  info.file = file;
  struct RecordFailure {
    LoaderState& st;
    const PluginInfo& info;
    const FileId& id;
    ImagePtr image;
    int uncaught = std::uncaught_exceptions();
    ~RecordFailure() {
      if (!image || std::uncaught_exceptions() == uncaught) return;
      std::lock_guard<std::mutex> lock(st.mu);
      try {
        UnloadedPlugin u{info, id, image, true};
        u.info.ops.clear();
        st.unloaded.push_back(std::move(u));
      } catch (...) {  // out of memory: the record is lost, not the error being thrown
      }
    }
  } record_failure{st, info, id, image};
  {
    std::lock_guard<std::mutex> lock(st.mu);
    if (LoadingPlugin* rec = guard.record()) rec->image = image;
  }

  if (!lib->has(OPFORGE_PLUGIN_DESCRIPTOR_SYMBOL)) {
    fail(file, "it does not export " OPFORGE_PLUGIN_DESCRIPTOR_SYMBOL " (not an opforge plugin)",
         "declare the plugin with OPFORGE_PLUGIN(name, version) from <opforge/sdk/plugin.hpp>");
  }
  const auto describe = lib->get<const OpforgePluginDescriptor*()>(OPFORGE_PLUGIN_DESCRIPTOR_SYMBOL);
  const OpforgePluginDescriptor* d = nullptr;
  // A hand-written descriptor function may throw: its exception (of a type the
  // plugin may define) is turned into words here, while the library is open.
  std::string thrown;
  try {
    d = describe();
  } catch (...) {
    thrown = thrown_text();
  }
  if (!thrown.empty())
    fail(file, "its " OPFORGE_PLUGIN_DESCRIPTOR_SYMBOL " threw " + thrown,
         "declare the plugin with OPFORGE_PLUGIN(name, version) from <opforge/sdk/plugin.hpp>, whose descriptor "
         "cannot throw");
  check_descriptor(file, d);
  if (!lib->has(OPFORGE_PLUGIN_REGISTER_SYMBOL)) {
    fail(file, "it has a descriptor but does not export " OPFORGE_PLUGIN_REGISTER_SYMBOL,
         "declare the plugin with OPFORGE_PLUGIN(name, version) from <opforge/sdk/plugin.hpp>");
  }
  info.name = d->name;
  info.version = read_str(d->version);
  info.sdk_version = read_str(d->sdk_version);
  info.compiler = read_str(d->compiler);

  auto name_taken = [&]() -> void {
    if (options.replace_existing || options.replace_same_name) return;
    for (const LoadedPlugin& other : st.loaded)
      if (other.info.name == info.name)
        fail(file, "a plugin named '" + info.name + "' is already loaded from " + other.info.file,
             "give one of them another name, or remove one file from the plugin path (to replace the loaded one, "
             "call unload_plugin(\"" + info.name + "\") first, or load with LoadOptions::replace_existing)");
  };
  {
    std::lock_guard<std::mutex> lock(st.mu);
    name_taken();  // before running its registration; checked again at commit
  }

  registrar = std::make_shared<StagingRegistrar>(info.name, file, std::static_pointer_cast<void>(lib));
  image->registrar = registrar;
  const auto reg = lib->get<int(void*, char*, std::size_t)>(OPFORGE_PLUGIN_REGISTER_SYMBOL);
  std::vector<char> error(kRegistrationMessageBytes, '\0');
  int rc = 0;
  try {
    rc = reg(static_cast<PluginRegistrar*>(registrar.get()), error.data(), error.size());
  } catch (...) {
    // OPFORGE_PLUGIN catches everything; reaching here means a hand-written entry point.
    rc = -1;
    std::snprintf(error.data(), error.size(), "an exception escaped the registration entry point");
  }
  if (rc != 0) {
    fail(file, "its registration failed: " + registration_message(error),
         "none of its ops were registered; fix the plugin's registration code (the OPFORGE_PLUGIN body), "
         "or remove the file from the plugin path");
  }
  info.ops = registrar->op_names();
  LoadedPlugin rec;
  rec.info = info;
  rec.id = id;
  rec.library = std::static_pointer_cast<void>(lib);
  rec.image = image;
  rec.entries = registrar->entries();

  std::lock_guard<std::mutex> lock(st.mu);
  name_taken();  // another thread may have loaded that name meanwhile
  st.loaded.reserve(st.loaded.size() + 1);  // here: `same_name` must stay valid
  auto same_name = std::find_if(st.loaded.begin(), st.loaded.end(),
                                [&](const LoadedPlugin& other) { return other.info.name == info.name; });
  // Everything that can throw happens before the registry changes.
  const bool replacing = same_name != st.loaded.end();
  std::vector<OpEntryPtr> displaced;
  displaced.reserve(rec.entries.size());
  dropped.entries.reserve(dropped.entries.size() + rec.entries.size() + (replacing ? same_name->entries.size() : 0));
  dropped.libraries.reserve(dropped.libraries.size() + 1);
  std::optional<UnloadedPlugin> retired;
  if (replacing) {
    retired = UnloadedPlugin{same_name->info, same_name->id, same_name->image};
    st.unloaded.reserve(st.unloaded.size() + 1);
  }

  // All or nothing: the replaced plugin's ops leave and the new ones arrive in one
  // registry change, or (a clash without replace_existing) nothing changes.
  static const std::vector<OpEntryPtr> none;
  registrar->commit(replacing ? same_name->entries : none, options.replace_existing, &displaced);

  if (replacing) {
    st.unloaded.push_back(std::move(*retired));
    dropped.entries.insert(dropped.entries.end(), same_name->entries.begin(), same_name->entries.end());
    dropped.libraries.push_back(std::move(same_name->library));
    st.loaded.erase(same_name);
  }
  // Ops taken from other plugins: those plugins no longer provide them (their
  // entries stay with them: users of the old op keep the old code loaded).
  for (const OpEntryPtr& e : displaced) {
    for (LoadedPlugin& other : st.loaded) {
      if (std::find(other.entries.begin(), other.entries.end(), e) == other.entries.end()) continue;
      auto& ops = other.info.ops;
      ops.erase(std::remove(ops.begin(), ops.end(), e->schema.name), ops.end());
    }
  }
  dropped.entries.insert(dropped.entries.end(), displaced.begin(), displaced.end());
  st.loaded.push_back(std::move(rec));
  guard.remove_locked();  // loaded and no longer loading, in one step
  record_failure.image.reset();  // loaded: no failure to record
  return info;
}

std::vector<std::string> split_path(const char* s) {
  std::vector<std::string> out;
  if (!s) return out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ':'))
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace

PluginInfo load_plugin(const std::string& path) { return load_plugin(path, LoadOptions()); }

PluginInfo load_plugin(const std::string& path, const LoadOptions& options) {
  // The standard plugins (and OPFORGE_PLUGIN_PATH) load first, whatever the
  // order of calls: a plugin loaded by hand never takes an op name or a plugin
  // name from them (unless told to), and a clash is always reported against the
  // explicit load.
  load_default_plugins();
  return load_file(state(), path, options);
}

UnloadResult unload_plugin(const std::string& name) {
  load_default_plugins();
  LoaderState& st = state();
  UnloadResult result;
  Dropped dropped;
  Closed closed;
  {
    std::lock_guard<std::mutex> lock(st.mu);
    st.prune();
    auto it = std::find_if(st.loaded.begin(), st.loaded.end(),
                           [&](const LoadedPlugin& p) { return p.info.name == name; });
    if (it == st.loaded.end()) {
      auto old = std::find_if(st.unloaded.begin(), st.unloaded.end(),
                              [&](const UnloadedPlugin& p) { return p.info.name == name; });
      const std::string why =
          old != st.unloaded.end() && old->failed
              ? "it failed to load; its library stays open while what its code made before that is in use (" +
                    uses_text(uses_of(*old->image, false)) + "): release those tensors, hooks and make_op handles "
                    "to close it"
          : old != st.unloaded.end()
              ? "it was already unloaded; its library stays open while its ops or what its code made are in use (" +
                    uses_text(uses_of(*old->image, false)) +
                    "): release the op handles and graphs that use its ops, and the tensors, hooks and make_op "
                    "handles it made, to close it"
              : "no plugin of that name is loaded";
      throw PluginError("cannot unload plugin '" + name + "': " + why + "; loaded plugins: " + loaded_names(st));
    }
    LoadedPlugin& p = *it;
    // Everything that can throw happens before the registry changes.
    result.plugin = p.info;
    closed = p.image->closed;
    st.unloaded.push_back({p.info, p.id, p.image});
    dropped.libraries.reserve(1);
    Registry::instance().remove(p.entries);
    // Every reference to an entry now is a user's, except the one in p.entries.
    std::size_t users = 0;
    for (const OpEntryPtr& e : p.entries) users += e->refcount.load(std::memory_order_acquire) - 1;
    result.users_left = users;
    result.other_holders = static_cast<std::size_t>(p.image->holders.use_count());
    dropped.entries = std::move(p.entries);
    dropped.libraries.push_back(std::move(p.library));
    st.loaded.erase(it);
  }
  dropped.release();  // closes the library here when no one else holds its ops
  result.unloaded_now = closed->closed.load(std::memory_order_acquire);
  result.resident = result.unloaded_now && closed->resident.load(std::memory_order_acquire);
  if (result.unloaded_now) result.users_left = result.other_holders = 0;
  return result;
}

std::vector<PendingUnload> pending_unloads() {
  LoaderState& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  st.prune();
  std::vector<PendingUnload> out;
  for (const UnloadedPlugin& u : st.unloaded) {
    const Uses uses = uses_of(*u.image, false);
    out.push_back({u.info, uses.ops, uses.others});
  }
  return out;
}

std::shared_ptr<void> keep_plugin_loaded(const void* address) {
  const auto a = reinterpret_cast<std::uintptr_t>(address);
  if (!a || !maybe_in_plugin(a)) return nullptr;  // the common case: no lock, no call
  LoaderState& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  // A plugin registering now (its registration code made a tensor, a hook...).
  for (const LoadingPlugin& l : st.loading)
    if (l.image && l.image->open() && l.image->contains(a)) return holder_of(*l.image);
  for (const LoadedPlugin& p : st.loaded)
    if (p.image->contains(a)) return holder_of(*p.image);
  for (const UnloadedPlugin& u : st.unloaded)
    if (u.open() && u.image->contains(a)) {
      if (auto h = holder_of(*u.image)) return h;
    }
  return nullptr;
}

std::vector<std::string> plugin_search_path() {
  // Standard plugins live next to the core library: <libdir>/opforge/plugins,
  // in the build tree and in the install tree alike. Found once (dladdr).
  // (Resolved: the library may be found through an RPATH like bin/../lib.)
  static const std::string standard = [] {
    const fs::path dir = boost::dll::this_line_location().parent_path() / "opforge" / "plugins";
    boost::system::error_code ec;
    const fs::path resolved = fs::weakly_canonical(dir, ec);
    return (ec ? dir.lexically_normal() : resolved).string();
  }();
  std::vector<std::string> dirs{standard};
  for (auto& d : split_path(std::getenv("OPFORGE_PLUGIN_PATH"))) dirs.push_back(d);
  return dirs;
}

// Once per process, like call_once, but re-entrant: a default plugin's
// registration code that calls op() (or anything else that loads the default
// plugins) on the loading thread goes on with the plugins loaded so far, instead
// of waiting for itself. Other threads wait until the default plugins are in.
void load_default_plugins() {
  static std::atomic<bool> done{false};
  if (done.load(std::memory_order_acquire)) return;
  static std::mutex mu;
  static std::condition_variable cv;
  static bool running = false;
  static std::thread::id runner;
  {
    std::unique_lock<std::mutex> lock(mu);
    if (done.load(std::memory_order_relaxed)) return;
    if (running) {
      if (runner == std::this_thread::get_id()) return;
      cv.wait(lock, [] { return done.load(std::memory_order_relaxed); });
      return;
    }
    running = true;
    runner = std::this_thread::get_id();
  }
  struct Finish {
    ~Finish() {
      {
        std::lock_guard<std::mutex> lock(mu);
        running = false;
        done.store(true, std::memory_order_release);
      }
      cv.notify_all();
    }
  } finish;

  (void)num_threads();  // applies OPFORGE_NUM_THREADS
  LoaderState& st = state();
  auto record = [&](const std::string& file, const std::string& reason) {
    std::lock_guard<std::mutex> lock(st.mu);
    st.failures.push_back({file, reason});
  };
  const char* env = std::getenv("OPFORGE_PLUGIN_PATH");
  const auto extra = split_path(env);
  // Each file is tried once, however many entries reach it (OPFORGE_PLUGIN_PATH
  // naming the standard folder, or a folder and a file in it): a second try
  // would only record a spurious "already loaded" failure.
  std::vector<std::string> tried;
  for (const std::string& dir : plugin_search_path()) {
    boost::system::error_code ec;
    const bool from_env = std::find(extra.begin(), extra.end(), dir) != extra.end();
    std::vector<std::string> files;
    if (fs::is_regular_file(dir, ec)) {
      files.push_back(dir);  // OPFORGE_PLUGIN_PATH may name files too
    } else if (fs::is_directory(dir, ec)) {
      for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        if (it->path().extension() == ".so") files.push_back(it->path().string());
      }
      if (ec)  // an unreadable folder: its plugins would be missing without a word
        record(dir, "cannot list the plugin folder '" + dir + "' (" + ec.message() + "); its plugins were not "
                    "loaded; make the folder readable (chmod a+rx), or remove it from OPFORGE_PLUGIN_PATH");
      std::sort(files.begin(), files.end());
    } else if (from_env) {
      record(dir, fs::exists(dir, ec)
                      ? "OPFORGE_PLUGIN_PATH entry '" + dir + "' is neither a directory nor a file; name a folder of "
                            "plugins or a plugin's .so file"
                      : "OPFORGE_PLUGIN_PATH entry '" + dir + "' does not exist; fix the entry, or remove it from "
                            "OPFORGE_PLUGIN_PATH");
    }
    for (const std::string& f : files) {
      const std::string key = fs::canonical(f, ec).string();
      if (!ec && std::find(tried.begin(), tried.end(), key) != tried.end()) continue;
      if (!ec) tried.push_back(key);
      try {
        load_file(st, f, LoadOptions());
      } catch (const std::exception& e) {  // opforge::Error, and std::bad_alloc and the like
        record(f, e.what());
      } catch (...) {
        record(f, "cannot load plugin '" + f + "': an exception of a type opforge does not know escaped the loader");
      }
    }
  }
}

std::vector<PluginInfo> loaded_plugins() {
  load_default_plugins();
  LoaderState& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  std::vector<PluginInfo> out;
  for (const LoadedPlugin& p : st.loaded) out.push_back(p.info);
  return out;
}

std::vector<PluginLoadFailure> plugin_load_failures() {
  load_default_plugins();
  LoaderState& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  return st.failures;
}

}  // namespace opforge
