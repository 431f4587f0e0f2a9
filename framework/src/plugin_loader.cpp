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
#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <boost/filesystem.hpp>

#include "opforge/plugin_abi.h"
#include "opforge/plugins.hpp"
#include "opforge/threads.hpp"
#include "opforge/version.hpp"
#include "registry.hpp"

namespace opforge {
namespace fs = boost::filesystem;

namespace {

std::mutex g_mu;  // guards the lists below and serialises loads
std::vector<PluginInfo> g_loaded;
std::vector<PluginLoadFailure> g_failures;

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

PluginInfo load_locked(const std::string& path) {
  boost::system::error_code ec;
  const fs::path p(path);
  if (!fs::exists(p, ec)) fail(path, "file not found", "check the path (or OPFORGE_PLUGIN_PATH)");
  if (!fs::is_regular_file(p, ec)) fail(path, "not a regular file", "pass a plugin's .so file");
  const std::string file = fs::canonical(p, ec).string();
  for (const PluginInfo& info : g_loaded) {
    if (info.file == file) fail(file, "this file is already loaded (plugin '" + info.name + "')", "");
  }

  auto lib = std::make_shared<boost::dll::shared_library>();
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
  for (const PluginInfo& other : g_loaded) {
    if (other.name == info.name)
      fail(file, "a plugin named '" + info.name + "' is already loaded from " + other.file,
           "give one of them another name, or remove one file from the plugin path");
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
  registrar.commit();
  info.ops = registrar.op_names();
  g_loaded.push_back(info);
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

PluginInfo load_plugin(const std::string& path) {
  // The standard plugins (and OPFORGE_PLUGIN_PATH) load first, whatever the
  // order of calls: a plugin loaded by hand never takes an op name or a plugin
  // name from them, and a clash is always reported against the explicit load.
  load_default_plugins();
  std::lock_guard<std::mutex> lock(g_mu);
  return load_locked(path);
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
    std::lock_guard<std::mutex> lock(g_mu);
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
        g_failures.push_back({dir, "OPFORGE_PLUGIN_PATH entry '" + dir + "' is neither a directory nor a file"});
      }
      for (const std::string& f : files) {
        const std::string key = fs::canonical(f, ec).string();
        if (!ec && std::find(tried.begin(), tried.end(), key) != tried.end()) continue;
        if (!ec) tried.push_back(key);
        try {
          load_locked(f);
        } catch (const Error& e) {
          g_failures.push_back({f, e.what()});
        }
      }
    }
  });
}

std::vector<PluginInfo> loaded_plugins() {
  load_default_plugins();
  std::lock_guard<std::mutex> lock(g_mu);
  return g_loaded;
}

std::vector<PluginLoadFailure> plugin_load_failures() {
  load_default_plugins();
  std::lock_guard<std::mutex> lock(g_mu);
  return g_failures;
}

}  // namespace opforge
