// Loading op plugins with Boost.DLL.
//
// Order of a load, each step with its own error:
//   1. the file exists and is a regular file;
//   2. dlopen succeeds (RTLD_NOW: unresolved symbols are reported here, not later);
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
#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <sstream>

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <boost/filesystem.hpp>

#include "opforge/plugin_abi.h"
#include "opforge/plugins.hpp"
#include "opforge/threads.hpp"
#include "opforge/version.hpp"
#include "plugin_keepalive.hpp"
#include "registry.hpp"

namespace opforge {
namespace fs = boost::filesystem;

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

using Closed = std::shared_ptr<std::atomic<bool>>;  // set once the library is closed

// A plugin loaded now.
struct LoadedPlugin {
  PluginInfo info;  // info.ops: the ops it provides now
  FileId id;
  std::shared_ptr<void> library;      // the loader's own reference
  Closed closed;
  std::vector<OpEntryPtr> entries;    // every op it registered, including any another plugin took over
};

// A plugin unloaded or replaced, whose library may still be open.
struct UnloadedPlugin {
  PluginInfo info;
  FileId id;
  std::weak_ptr<void> library;
  Closed closed;
  bool open() const { return !closed->load(std::memory_order_acquire); }
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
  std::mutex mu;  // guards everything below and serialises loads and unloads
  std::vector<LoadedPlugin> loaded;
  std::vector<UnloadedPlugin> unloaded;  // pruned of closed ones under `mu`
  std::vector<PluginLoadFailure> failures;

  void prune() {
    unloaded.erase(std::remove_if(unloaded.begin(), unloaded.end(), [](const UnloadedPlugin& u) { return !u.open(); }),
                   unloaded.end());
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

std::string read_str(const char* s) { return s ? std::string(s) : std::string("(null)"); }

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
    fail(file, "C++ standard library differs: the plugin was built with " + stdlib + " (" + read_str(d->compiler) +
                   "), opforge with " OPFORGE_STDLIB_ID " (" OPFORGE_COMPILER_ID ")",
         "rebuild the plugin against the C++ standard library opforge uses");
  }
  if (d->cxx11_string_abi != OPFORGE_CXX11_STRING_ABI) {
    fail(file, "C++ standard-library ABI differs: plugin _GLIBCXX_USE_CXX11_ABI=" +
                   std::to_string(d->cxx11_string_abi) + ", opforge " + std::to_string(OPFORGE_CXX11_STRING_ABI),
         "rebuild the plugin without overriding _GLIBCXX_USE_CXX11_ABI");
  }
  if (!d->name || !*d->name) fail(file, "its descriptor has no plugin name", "give OPFORGE_PLUGIN a name");
}

PluginInfo load_locked(LoaderState& st, const std::string& path, const LoadOptions& options, Dropped& dropped) {
  boost::system::error_code ec;
  const fs::path p(path);
  if (!fs::exists(p, ec)) fail(path, "file not found", "check the path (or OPFORGE_PLUGIN_PATH)");
  if (!fs::is_regular_file(p, ec)) fail(path, "not a regular file", "pass a plugin's .so file");
  const std::string file = fs::canonical(p, ec).string();
  const FileId id = file_id(file);
  for (const LoadedPlugin& other : st.loaded) {
    if (other.info.file == file) fail(file, "this file is already loaded (plugin '" + other.info.name + "')", "");
    if (other.id.same_file(id))
      fail(file, "this file is already loaded, as " + other.info.file + " (plugin '" + other.info.name + "')", "");
  }
  st.prune();
  for (const UnloadedPlugin& old : st.unloaded) {
    if ((old.info.file == file || old.id.same_file(id)) && !old.id.same_build(id)) {
      fail(file,
           "an earlier build of this file is still open: plugin '" + old.info.name + "' (" + old.info.file +
               ") was unloaded, but its ops are still in use (ops in use: " +
               std::to_string(old.library.use_count()) +
               "), and the dynamic loader would hand back that old code, not the file now on disk",
           "load the new build from another path (a copy of the file, not a link), or release the old "
           "plugin's op handles and graphs first");
    }
  }

  Closed closed = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<boost::dll::shared_library> lib(new boost::dll::shared_library(),
                                                  [closed](boost::dll::shared_library* l) {
                                                    delete l;  // dlclose
                                                    closed->store(true, std::memory_order_release);
                                                  });
  lib->load(file, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, ec);
  if (ec || !lib->is_loaded()) {
    // dlerror() holds the loader's own words (bad ELF header, undefined symbol...).
    const char* why = ::dlerror();
    std::string reason = why ? why : ec.message();
    if (reason.find("invalid ELF header") != std::string::npos || reason.find("file too short") != std::string::npos)
      fail(file, "not a shared library (" + reason + ")", "pass a plugin built with opforge_add_plugin");
    if (reason.find("undefined symbol") != std::string::npos)
      fail(file, "it needs a symbol that nothing loaded provides (" + reason + ")",
           "rebuild the plugin against this opforge, and link the libraries it uses");
    fail(file, "the dynamic loader refused it (" + reason + ")", "");
  }
  if (!lib->has(OPFORGE_PLUGIN_DESCRIPTOR_SYMBOL)) {
    fail(file, "it does not export " OPFORGE_PLUGIN_DESCRIPTOR_SYMBOL " (not an opforge plugin)",
         "declare the plugin with OPFORGE_PLUGIN(name, version) from <opforge/sdk/plugin.hpp>");
  }
  const auto describe = lib->get<const OpforgePluginDescriptor*()>(OPFORGE_PLUGIN_DESCRIPTOR_SYMBOL);
  const OpforgePluginDescriptor* d = describe();
  check_descriptor(file, d);
  if (!lib->has(OPFORGE_PLUGIN_REGISTER_SYMBOL)) {
    fail(file, "it has a descriptor but does not export " OPFORGE_PLUGIN_REGISTER_SYMBOL,
         "declare the plugin with OPFORGE_PLUGIN(name, version) from <opforge/sdk/plugin.hpp>");
  }
  PluginInfo info;
  info.name = d->name;
  info.version = read_str(d->version);
  info.file = file;
  info.sdk_version = read_str(d->sdk_version);
  info.compiler = read_str(d->compiler);
  st.loaded.reserve(st.loaded.size() + 1);  // here: `same_name` must stay valid
  auto same_name = std::find_if(st.loaded.begin(), st.loaded.end(),
                                [&](const LoadedPlugin& other) { return other.info.name == info.name; });
  if (same_name != st.loaded.end() && !options.replace_existing) {
    fail(file, "a plugin named '" + info.name + "' is already loaded from " + same_name->info.file,
         "give one of them another name, or remove one file from the plugin path (to replace the loaded one, "
         "call unload_plugin(\"" + info.name + "\") first, or load with LoadOptions::replace_existing)");
  }

  StagingRegistrar registrar(info.name, file, std::static_pointer_cast<void>(lib));
  const auto reg = lib->get<int(void*, char*, std::size_t)>(OPFORGE_PLUGIN_REGISTER_SYMBOL);
  char error[1024] = {0};
  int rc = 0;
  try {
    rc = reg(static_cast<PluginRegistrar*>(&registrar), error, sizeof error);
  } catch (...) {
    // OPFORGE_PLUGIN catches everything; reaching here means a hand-written entry point.
    rc = -1;
    std::snprintf(error, sizeof error, "an exception escaped the registration entry point");
  }
  if (rc != 0) {
    error[sizeof error - 1] = '\0';
    fail(file, std::string("its registration failed: ") + (error[0] ? error : "no reason given"),
         "none of its ops were registered; fix the plugin's registration code (the OPFORGE_PLUGIN body), "
         "or remove the file from the plugin path");
  }
  info.ops = registrar.op_names();
  LoadedPlugin rec;
  rec.info = info;
  rec.id = id;
  rec.library = std::static_pointer_cast<void>(lib);
  rec.closed = std::move(closed);
  rec.entries = registrar.entries();
  // Everything that can throw happens before the registry changes.
  const bool replacing = same_name != st.loaded.end();
  std::vector<OpEntryPtr> displaced;
  displaced.reserve(rec.entries.size());
  dropped.entries.reserve(dropped.entries.size() + rec.entries.size() + (replacing ? same_name->entries.size() : 0));
  dropped.libraries.reserve(dropped.libraries.size() + 1);
  std::optional<UnloadedPlugin> retired;
  if (replacing) {
    retired = UnloadedPlugin{same_name->info, same_name->id, same_name->library, same_name->closed};
    st.unloaded.reserve(st.unloaded.size() + 1);
  }

  // All or nothing: the replaced plugin's ops leave and the new ones arrive in one
  // registry change, or (a clash without replace_existing) nothing changes.
  static const std::vector<OpEntryPtr> none;
  registrar.commit(replacing ? same_name->entries : none, options.replace_existing, &displaced);

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
  Dropped dropped;  // declared before the lock: released after it
  LoaderState& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  return load_locked(st, path, options, dropped);
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
          old != st.unloaded.end()
              ? "it was already unloaded; its library stays open while its ops are in use (ops in use: " +
                    std::to_string(old->library.use_count()) + ")"
              : "no plugin of that name is loaded";
      throw PluginError("cannot unload plugin '" + name + "': " + why + "; loaded plugins: " + loaded_names(st));
    }
    LoadedPlugin& p = *it;
    // Everything that can throw happens before the registry changes.
    result.plugin = p.info;
    closed = p.closed;
    st.unloaded.push_back({p.info, p.id, p.library, p.closed});
    dropped.libraries.reserve(1);
    Registry::instance().remove(p.entries);
    // Every reference to an entry now is a user's, except the one in p.entries.
    std::size_t users = 0;
    for (const OpEntryPtr& e : p.entries) users += e->refcount.load(std::memory_order_acquire) - 1;
    result.users_left = users;
    dropped.entries = std::move(p.entries);
    dropped.libraries.push_back(std::move(p.library));
    st.loaded.erase(it);
  }
  dropped.release();  // closes the library here when no one else holds its ops
  result.unloaded_now = closed->load(std::memory_order_acquire);
  if (result.unloaded_now) result.users_left = 0;
  return result;
}

std::vector<PendingUnload> pending_unloads() {
  LoaderState& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  st.prune();
  std::vector<PendingUnload> out;
  for (const UnloadedPlugin& u : st.unloaded) out.push_back({u.info, static_cast<std::size_t>(u.library.use_count())});
  return out;
}

std::shared_ptr<void> keep_plugin_loaded(const void* address) {
  if (!address) return nullptr;
  Dl_info info{};
  if (::dladdr(address, &info) == 0 || !info.dli_fname) return nullptr;
  boost::system::error_code ec;
  const std::string file = fs::canonical(info.dli_fname, ec).string();
  if (ec) return nullptr;
  LoaderState& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  for (const LoadedPlugin& p : st.loaded)
    if (p.info.file == file) return p.library;
  for (const UnloadedPlugin& u : st.unloaded)
    if (u.info.file == file) {
      if (auto lib = u.library.lock()) return lib;
    }
  return nullptr;
}

std::vector<std::string> plugin_search_path() {
  std::vector<std::string> dirs;
  // Standard plugins live next to the core library: <libdir>/opforge/plugins,
  // in the build tree and in the install tree alike.
  const fs::path core = boost::dll::this_line_location();
  dirs.push_back((core.parent_path() / "opforge" / "plugins").string());
  for (auto& d : split_path(std::getenv("OPFORGE_PLUGIN_PATH"))) dirs.push_back(d);
  return dirs;
}

void load_default_plugins() {
  static std::once_flag once;
  std::call_once(once, [] {
    (void)num_threads();  // applies OPFORGE_NUM_THREADS
    Dropped dropped;  // stays empty: these loads replace nothing
    LoaderState& st = state();
    std::lock_guard<std::mutex> lock(st.mu);
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
        std::sort(files.begin(), files.end());
      } else if (from_env) {
        st.failures.push_back({dir, "OPFORGE_PLUGIN_PATH entry '" + dir + "' is neither a directory nor a file"});
      }
      for (const std::string& f : files) {
        const std::string key = fs::canonical(f, ec).string();
        if (!ec && std::find(tried.begin(), tried.end(), key) != tried.end()) continue;
        if (!ec) tried.push_back(key);
        try {
          load_locked(st, f, LoadOptions(), dropped);
        } catch (const Error& e) {
          st.failures.push_back({f, e.what()});
        }
      }
    }
  });
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
