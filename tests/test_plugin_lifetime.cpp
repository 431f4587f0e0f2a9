// Plugin lifetime: unload_plugin, reloading (the same file, or a rebuilt copy),
// LoadOptions::replace_existing, and the rule behind them all: nothing a plugin
// made (an OpHandle, a graph node) outlives its code, and once the last of
// those is gone the library really leaves the process (checked in
// /proc/self/maps and with dlopen(RTLD_NOLOAD)).
//
// The fixtures (tests/lifetime_fixtures) are all built from scaler.cpp:
// <family>.scale(x) = k x and <family>.square(x) = k x^2, with k set per build.
// Every test case works alone (ctest runs each in its own process) and with the
// others in one process: each uses plugins no other test loads.
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <opforge/opforge.hpp>
#include <opforge/sdk/harness.hpp>

#include "temp_dir.hpp"

#ifndef OPFORGE_LIFETIME_FIXTURES
#error "OPFORGE_LIFETIME_FIXTURES (the folder of tests/lifetime_fixtures' plugins) must be defined"
#endif

namespace fs = std::filesystem;
using opforge_tests::TempDir;
using opforge::OpHandle;
using opforge::Tensor;

namespace {

std::string fixture(const std::string& file) {
  return fs::canonical(std::string(OPFORGE_LIFETIME_FIXTURES) + "/" + file).string();
}

// True when /proc/self/maps has a mapping of `file` (also once the file was
// replaced or removed on disk: the kernel then shows "FILE (deleted)").
bool is_mapped(const std::string& file) {
  std::ifstream maps("/proc/self/maps");
  REQUIRE(maps.is_open());
  std::string line;
  while (std::getline(maps, line)) {
    std::istringstream fields(line);
    std::string address, perms, offset, device, inode, path;
    fields >> address >> perms >> offset >> device >> inode;
    std::getline(fields, path);
    path.erase(0, path.find_first_not_of(' '));
    if (path == file || path == file + " (deleted)") return true;
  }
  return false;
}

// True when the dynamic loader still has `file` open (it opens nothing new).
bool dl_has(const std::string& file) {
  void* h = ::dlopen(file.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (!h) return false;
  ::dlclose(h);
  return true;
}

bool plugin_is_loaded(const std::string& name) {
  const auto plugins = opforge::loaded_plugins();
  return std::any_of(plugins.begin(), plugins.end(), [&](const opforge::PluginInfo& p) { return p.name == name; });
}

opforge::PluginInfo loaded_plugin(const std::string& name) {
  for (const auto& p : opforge::loaded_plugins())
    if (p.name == name) return p;
  FAIL("plugin '" << name << "' is not loaded");
  return {};
}

// The pending unloads from `file` (0 or 1 of them).
std::vector<opforge::PendingUnload> pending_from(const std::string& file) {
  std::vector<opforge::PendingUnload> out;
  for (const auto& p : opforge::pending_unloads())
    if (p.plugin.file == file) out.push_back(p);
  return out;
}

std::string load_failure(const std::string& path, const opforge::LoadOptions& options = {}) {
  try {
    opforge::load_plugin(path, options);
  } catch (const opforge::PluginError& e) {
    return e.what();
  }
  FAIL("load_plugin('" << path << "') did not throw a PluginError");
  return {};
}

std::string unload_failure(const std::string& name) {
  try {
    opforge::unload_plugin(name);
  } catch (const opforge::PluginError& e) {
    return e.what();
  }
  FAIL("unload_plugin('" << name << "') did not throw a PluginError");
  return {};
}

// op(name) must fail as for a name no plugin provides.
void check_not_registered(const std::string& name) {
  try {
    opforge::op(name);
    FAIL("op('" << name << "') still resolves");
  } catch (const opforge::PluginError& e) {
    CHECK_THAT(e.what(), Catch::StartsWith("no op named '" + name + "' is registered") &&
                             Catch::EndsWith("(`opforge ops` lists the loaded plugins and the files that failed to load)"));
  }
}

std::string loaded_names() {
  std::vector<std::string> names;
  for (const auto& p : opforge::loaded_plugins()) names.push_back(p.name);
  std::sort(names.begin(), names.end());
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

opforge::LoadOptions replacing() {
  opforge::LoadOptions o;
  o.replace_existing = true;
  return o;
}

Tensor ones(std::int64_t n) { return Tensor::ones({n}); }

// Puts a copy of `from` at `to` the way a linker writes its output: a new file
// renamed into place (a new inode), never the old one overwritten in place.
void install(const std::string& from, const std::string& to) {
  const std::string tmp = to + ".new";
  fs::copy_file(from, tmp, fs::copy_options::overwrite_existing);
  fs::rename(tmp, to);
}

}  // namespace

// ---- the required scenario ---------------------------------------------------------

TEST_CASE("lifetime: a graph outlives its unloaded plugin, and the library leaves with the graph") {
  const std::string file = fixture("lt_unload.so");
  REQUIRE_FALSE(is_mapped(file));

  const opforge::PluginInfo info = opforge::load_plugin(file);
  CHECK(info.name == "lt_unload");
  CHECK(info.file == file);
  CHECK(info.ops == std::vector<std::string>{"lt_unload.scale", "lt_unload.square"});
  CHECK(is_mapped(file));
  CHECK(dl_has(file));

  {
    Tensor x = Tensor::from_values({1, 2, -3}).requires_grad_();
    Tensor y = opforge::op("lt_unload.square")({x});  // 3 x^2; the handle is gone after this line
    CHECK(y.to_vector() == std::vector<double>{3, 12, 27});

    const opforge::UnloadResult r = opforge::unload_plugin("lt_unload");
    CHECK(r.plugin.name == "lt_unload");
    CHECK(r.plugin.file == file);
    CHECK(r.plugin.ops == info.ops);
    CHECK_FALSE(r.unloaded_now);
    CHECK(r.users_left == 1);  // y's graph node

    // Gone for new lookups, not listed, but still open.
    check_not_registered("lt_unload.square");
    check_not_registered("lt_unload.scale");
    CHECK_FALSE(plugin_is_loaded("lt_unload"));
    const auto pending = pending_from(file);
    REQUIRE(pending.size() == 1);
    CHECK(pending[0].plugin.name == "lt_unload");
    CHECK(pending[0].ops_in_use == 1);  // square (scale had no user and is destroyed)
    CHECK(is_mapped(file));

    // The old graph still runs the old code: d(3 x^2)/dx = 6 x.
    y.backward(ones(3));
    CHECK(x.grad().to_vector() == std::vector<double>{6, 12, -18});
    CHECK(is_mapped(file));
  }  // the graph is dropped here: the last user of the library

  CHECK_FALSE(is_mapped(file));
  CHECK_FALSE(dl_has(file));
  CHECK(pending_from(file).empty());
}

// ---- what keeps a plugin loaded --------------------------------------------------------

TEST_CASE("lifetime: an OpHandle alone keeps an unloaded plugin loaded") {
  const std::string file = fixture("lt_handle.so");
  opforge::load_plugin(file);
  OpHandle h = opforge::op("lt_handle.scale");
  {
    const OpHandle copy = h;
    const opforge::UnloadResult r = opforge::unload_plugin("lt_handle");
    CHECK_FALSE(r.unloaded_now);
    CHECK(r.users_left == 2);  // h and copy
  }
  check_not_registered("lt_handle.scale");
  CHECK(is_mapped(file));
  REQUIRE(pending_from(file).size() == 1);
  CHECK(pending_from(file)[0].ops_in_use == 1);

  // The handle still calls the plugin's code.
  CHECK(h({Tensor::from_values({1, -2})}).to_vector() == std::vector<double>{3, -6});
  CHECK(h.plugin_name() == "lt_handle");
  CHECK(h.plugin_file() == file);

  h = OpHandle();
  CHECK_FALSE(is_mapped(file));
  CHECK_FALSE(dl_has(file));
  CHECK(pending_from(file).empty());
}

TEST_CASE("lifetime: a plugin nothing uses is closed by unload_plugin, and the same file loads again") {
  const std::string file = fixture("lt_reload.so");
  opforge::load_plugin(file);
  CHECK(opforge::op("lt_reload.scale")({Tensor::from_values({2})}).item() == 6.0);

  const opforge::UnloadResult r = opforge::unload_plugin("lt_reload");
  CHECK(r.unloaded_now);
  CHECK(r.users_left == 0);
  CHECK_FALSE(is_mapped(file));
  CHECK(pending_from(file).empty());
  check_not_registered("lt_reload.scale");

  // Reload: the ops come back, from a fresh dlopen of the file.
  const opforge::PluginInfo again = opforge::load_plugin(file);
  CHECK(again.name == "lt_reload");
  CHECK(again.ops == std::vector<std::string>{"lt_reload.scale", "lt_reload.square"});
  CHECK(is_mapped(file));
  const auto plugins = opforge::loaded_plugins();
  CHECK(std::count_if(plugins.begin(), plugins.end(), [](const auto& p) { return p.name == "lt_reload"; }) == 1);
  Tensor x = Tensor::from_values({1, 2}).requires_grad_();
  Tensor y = opforge::op("lt_reload.square")({x});
  CHECK(y.to_vector() == std::vector<double>{3, 12});
  y.backward(ones(2));
  CHECK(x.grad().to_vector() == std::vector<double>{6, 12});
  y = Tensor();

  // A hard link is the same file to the dynamic loader: refused as already loaded.
  TempDir dir("opforge_lifetime_test");
  const std::string link = dir.file("lt_reload_link.so");
  std::error_code ec;
  fs::create_hard_link(file, link, ec);
  if (ec) {
    WARN("no hard link from " << link << " to " << file << " (" << ec.message() << "): that check is skipped");
  } else {
    CHECK(load_failure(link) == "cannot load plugin '" + link + "': this file is already loaded, as " + file +
                                    " (plugin 'lt_reload')");
  }

  CHECK(opforge::unload_plugin("lt_reload").unloaded_now);
  CHECK_FALSE(is_mapped(file));
}

TEST_CASE("lifetime: the same unchanged file loads again while its old ops are still in use") {
  const std::string file = fixture("lt_shared.so");
  opforge::load_plugin(file);
  OpHandle old = opforge::op("lt_shared.scale");
  CHECK_FALSE(opforge::unload_plugin("lt_shared").unloaded_now);

  // dlopen hands back the library that is still open: the same code, so allowed.
  const opforge::PluginInfo info = opforge::load_plugin(file);
  CHECK(info.name == "lt_shared");
  const OpHandle fresh = opforge::op("lt_shared.scale");
  CHECK(fresh.entry() != old.entry());
  CHECK(fresh({Tensor::from_values({1})}).item() == 3.0);
  CHECK(old({Tensor::from_values({1})}).item() == 3.0);

  old = OpHandle();
  CHECK(pending_from(file).empty());
  CHECK(is_mapped(file));  // the new load holds it
  const opforge::UnloadResult r = opforge::unload_plugin("lt_shared");
  CHECK_FALSE(r.unloaded_now);
  CHECK(r.users_left == 1);  // fresh
}

// ---- a rebuilt plugin ------------------------------------------------------------------

TEST_CASE("lifetime: a rebuilt plugin loads from another file while old graphs keep the old code") {
  TempDir dir("opforge_lifetime_test");
  const std::string path = dir.file("lt_rebuilt.so");
  const std::string copy = dir.file("lt_rebuilt_copy.so");
  install(fixture("lt_rebuilt_v3.so"), path);
  opforge::load_plugin(path);

  Tensor x = Tensor::from_values({1, -2}).requires_grad_();
  Tensor y = opforge::op("lt_rebuilt.scale")({x});
  CHECK(y.to_vector() == std::vector<double>{3, -6});

  // "Rebuild" at the same path. dlopen would hand back the open library, so the
  // loader refuses the path as long as the old build is open.
  install(fixture("lt_rebuilt_v2.so"), path);
  CHECK(load_failure(path) == "cannot load plugin '" + path + "': this file is already loaded (plugin 'lt_rebuilt')");
  // A copy is a different file, but the plugin name is taken.
  install(fixture("lt_rebuilt_v2.so"), copy);
  CHECK(load_failure(copy) == "cannot load plugin '" + copy + "': a plugin named 'lt_rebuilt' is already loaded from " +
                                  path +
                                  "; give one of them another name, or remove one file from the plugin path (to "
                                  "replace the loaded one, call unload_plugin(\"lt_rebuilt\") first, or load with "
                                  "LoadOptions::replace_existing)");

  const opforge::UnloadResult r = opforge::unload_plugin("lt_rebuilt");
  CHECK_FALSE(r.unloaded_now);
  CHECK(r.users_left == 1);  // y's node
  // Unloaded, but y still holds the old build open: the changed file at the same
  // path is still refused, saying why.
  CHECK(load_failure(path) ==
        "cannot load plugin '" + path + "': an earlier build of this file is still open: plugin 'lt_rebuilt' (" + path +
            ") was unloaded, but its ops or what its code made are still in use (ops in use: 1; tensors, hooks or "
            "functions made by the plugin: 0), and the dynamic loader would hand back that old code, not the file "
            "now on disk; load the new build from another path (a copy of the file, not a link), or release the "
            "old plugin's op handles and graphs, and the tensors, hooks and make_op handles it made, first");

  // The copy loads: new calls get the new code (2 x)...
  const opforge::PluginInfo info = opforge::load_plugin(copy);
  CHECK(info.name == "lt_rebuilt");
  CHECK(info.file == copy);
  OpHandle fresh = opforge::op("lt_rebuilt.scale");
  CHECK(fresh.plugin_file() == copy);
  CHECK(fresh({Tensor::from_values({1, -2})}).to_vector() == std::vector<double>{2, -4});
  // ...while the old graph still backpropagates through the old code (3).
  y.backward(ones(2));
  CHECK(x.grad().to_vector() == std::vector<double>{3, 3});
  CHECK(is_mapped(path));
  CHECK(is_mapped(copy));

  y = Tensor();  // the old build's last user
  CHECK_FALSE(is_mapped(path));
  CHECK(is_mapped(copy));
  CHECK(pending_from(path).empty());

  // Once the old build is closed, the path itself loads its new content.
  fresh = OpHandle();
  CHECK(opforge::unload_plugin("lt_rebuilt").unloaded_now);
  CHECK(opforge::load_plugin(path).name == "lt_rebuilt");
  CHECK(opforge::op("lt_rebuilt.scale")({Tensor::from_values({5})}).item() == 10.0);
  CHECK(opforge::unload_plugin("lt_rebuilt").unloaded_now);
  CHECK_FALSE(is_mapped(path));
  CHECK_FALSE(is_mapped(copy));
}

// ---- replace_existing --------------------------------------------------------------------

TEST_CASE("lifetime: replace_existing takes ops over from another plugin, their old users keep the old code") {
  const std::string file_a = fixture("lt_repl_a.so");
  const std::string file_b = fixture("lt_repl_b.so");
  opforge::load_plugin(file_a);
  OpHandle old = opforge::op("lt_repl.scale");

  // By default: refused, with the usual message, and nothing changes.
  CHECK(load_failure(file_b) ==
        "plugin 'lt_repl_b' (" + file_b + ") registers op 'lt_repl.scale', which plugin 'lt_repl_a' (" + file_a +
            ") already provides; rename one of them, or remove one file from the plugin path");
  CHECK_FALSE(plugin_is_loaded("lt_repl_b"));
  CHECK(opforge::op("lt_repl.scale").plugin_name() == "lt_repl_a");
  CHECK_FALSE(is_mapped(file_b));

  const opforge::PluginInfo info = opforge::load_plugin(file_b, replacing());
  CHECK(info.name == "lt_repl_b");
  CHECK(info.ops == std::vector<std::string>{"lt_repl.scale", "lt_repl.square"});
  CHECK(opforge::op("lt_repl.scale").plugin_name() == "lt_repl_b");
  CHECK(opforge::op("lt_repl.square").plugin_name() == "lt_repl_b");
  CHECK(opforge::op("lt_repl.extra").plugin_name() == "lt_repl_a");  // B does not provide it
  CHECK(opforge::op("lt_repl.scale")({Tensor::from_values({1})}).item() == 2.0);
  CHECK(old({Tensor::from_values({1})}).item() == 3.0);
  CHECK(old.plugin_name() == "lt_repl_a");
  // A stays loaded with what it still provides.
  CHECK(loaded_plugin("lt_repl_a").ops == std::vector<std::string>{"lt_repl.extra"});
  CHECK(loaded_plugin("lt_repl_b").ops == info.ops);

  // Unloading A takes only its own op out of the registry.
  const opforge::UnloadResult r = opforge::unload_plugin("lt_repl_a");
  CHECK(r.plugin.ops == std::vector<std::string>{"lt_repl.extra"});
  CHECK_FALSE(r.unloaded_now);
  CHECK(r.users_left == 1);  // old
  check_not_registered("lt_repl.extra");
  CHECK(opforge::op("lt_repl.scale").plugin_name() == "lt_repl_b");
  CHECK(old({Tensor::from_values({1})}).item() == 3.0);
  CHECK(is_mapped(file_a));
  old = OpHandle();
  CHECK_FALSE(is_mapped(file_a));

  CHECK(opforge::unload_plugin("lt_repl_b").unloaded_now);
  CHECK_FALSE(is_mapped(file_b));
  check_not_registered("lt_repl.scale");
}

TEST_CASE("lifetime: replace_existing replaces a loaded plugin of the same name whole") {
  const std::string v3 = fixture("lt_swap_v3.so");
  const std::string v2 = fixture("lt_swap_v2.so");
  opforge::load_plugin(v3);
  Tensor x = Tensor::from_values({1, 2}).requires_grad_();
  Tensor y = opforge::op("lt_swap.square")({x});
  CHECK(y.to_vector() == std::vector<double>{3, 12});

  const opforge::PluginInfo info = opforge::load_plugin(v2, replacing());
  CHECK(info.name == "lt_swap");
  CHECK(info.file == v2);
  CHECK(info.ops == std::vector<std::string>{"lt_swap.scale", "lt_swap.square"});
  const auto plugins = opforge::loaded_plugins();
  CHECK(std::count_if(plugins.begin(), plugins.end(), [](const auto& p) { return p.name == "lt_swap"; }) == 1);
  CHECK(loaded_plugin("lt_swap").file == v2);
  check_not_registered("lt_swap.extra");  // the old build's op that the new one lacks
  {
    opforge::NoGradGuard no_grad;
    CHECK(opforge::op("lt_swap.square")({Tensor::from_values({1, 2})}).to_vector() == std::vector<double>{2, 8});
  }
  const auto pending = pending_from(v3);
  REQUIRE(pending.size() == 1);
  CHECK(pending[0].plugin.name == "lt_swap");
  CHECK(pending[0].ops_in_use == 1);

  y.backward(ones(2));
  CHECK(x.grad().to_vector() == std::vector<double>{6, 12});  // 6 x: the old build
  y = Tensor();
  CHECK_FALSE(is_mapped(v3));
  CHECK(pending_from(v3).empty());

  CHECK(opforge::unload_plugin("lt_swap").unloaded_now);
  CHECK_FALSE(is_mapped(v2));
}

// ---- errors ------------------------------------------------------------------------------

TEST_CASE("lifetime: unloading an unknown plugin names it and the loaded plugins") {
  CHECK(unload_failure("lt_nowhere") ==
        "cannot unload plugin 'lt_nowhere': no plugin of that name is loaded; loaded plugins: " + loaded_names());
  CHECK_THAT(loaded_names(), Catch::Contains("elementwise"));

  // A plugin unloaded already, still in use: said so.
  opforge::load_plugin(fixture("lt_unknown.so"));
  OpHandle h = opforge::op("lt_unknown.scale");
  opforge::unload_plugin("lt_unknown");
  CHECK(unload_failure("lt_unknown") ==
        "cannot unload plugin 'lt_unknown': it was already unloaded; its library stays open while its ops or what "
        "its code made are in use (ops in use: 1; tensors, hooks or functions made by the plugin: 0): release the "
        "op handles and graphs that use its ops, and the tensors, hooks and make_op handles it made, to close it; "
        "loaded plugins: " +
            loaded_names());
  h = OpHandle();
  CHECK(unload_failure("lt_unknown") ==
        "cannot unload plugin 'lt_unknown': no plugin of that name is loaded; loaded plugins: " + loaded_names());
}

// ---- threads -----------------------------------------------------------------------------

TEST_CASE("lifetime: unloads and reloads race safely with calls on other threads") {
  const std::string file = fixture("lt_threads.so");
  opforge::load_plugin(file);
  std::atomic<bool> stop{false};
  std::atomic<int> calls{0}, misses{0}, wrong{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 3; ++t) {
    workers.emplace_back([&] {
      while (!stop.load()) {
        try {
          const OpHandle h = opforge::op("lt_threads.square");
          Tensor x = Tensor::from_values({1, 2}).requires_grad_();
          Tensor y = h({x});
          y.backward(ones(2));
          if (y.to_vector() != std::vector<double>{3, 12} || x.grad().to_vector() != std::vector<double>{6, 12})
            ++wrong;
          ++calls;
        } catch (const opforge::PluginError&) {
          ++misses;  // between an unload and the next load
        }
      }
    });
  }
  while (calls.load() < 20) std::this_thread::yield();
  for (int i = 0; i < 100; ++i) {
    opforge::unload_plugin("lt_threads");
    opforge::load_plugin(file);
  }
  stop = true;
  for (auto& w : workers) w.join();
  CHECK(wrong == 0);
  CHECK(calls > 0);
  CHECK(pending_from(file).empty());  // the workers' handles and graphs are gone
  CHECK(opforge::unload_plugin("lt_threads").unloaded_now);
  CHECK_FALSE(is_mapped(file));
}

// ---- plugin code that escapes its op entries ----------------------------------------------

TEST_CASE("lifetime: memory freed by a plugin's deleter, and a plugin's gradient hook, keep the plugin loaded") {
  const std::string file = fixture("lt_escape.so");
  opforge::load_plugin(file);
  REQUIRE(is_mapped(file));
  {
    Tensor blob;
    Tensor x = Tensor::from_values({1, 2, 3}).requires_grad_();
    {
      blob = opforge::op("lt_escape.blob")({Tensor::from_values({4, 5, 6})});
      opforge::op("lt_escape.hooked")({x});  // registers the plugin's hook on x; the output is dropped
    }
    const opforge::UnloadResult r = opforge::unload_plugin("lt_escape");
    // No op of it is in use any more, but the blob's deleter and x's hook are
    // plugin code: the unload is deferred.
    CHECK_FALSE(r.unloaded_now);
    CHECK(is_mapped(file));
    CHECK(blob.to_vector() == std::vector<double>{4, 5, 6});

    // The hook (plugin code) still runs: it triples x's gradient.
    Tensor y = opforge::op("elementwise.square")({x});
    y.backward(ones(3));
    CHECK(x.grad().to_vector() == std::vector<double>{6, 12, 18});

    blob = Tensor();  // the plugin's deleter runs now, while it is mapped
    CHECK(is_mapped(file));  // x still holds the hook
  }  // x (and its hook) go: the last holder of the plugin's code
  CHECK_FALSE(is_mapped(file));
}

// The plugin is found by its load address, never by its file name: a file
// removed (or renamed) after loading, as a package upgrade does, must not let
// the plugin's deleter or hook outlive its code.
TEST_CASE("lifetime: a plugin whose file was removed after loading stays loaded while its blob and hook live") {
  TempDir dir("opforge_lifetime_test");
  const std::string path = dir.file("lt_deleted.so");
  install(fixture("lt_deleted.so"), path);
  opforge::load_plugin(path);
  fs::remove(path);  // the upgrade removes (or renames over) the file the process runs from
  REQUIRE(is_mapped(path));
  {
    Tensor x = Tensor::from_values({1, 2, 3}).requires_grad_();
    Tensor blob = opforge::op("lt_deleted.blob")({Tensor::from_values({4, 5, 6})});
    opforge::op("lt_deleted.hooked")({x});
    const opforge::UnloadResult r = opforge::unload_plugin("lt_deleted");
    CHECK_FALSE(r.unloaded_now);
    CHECK(r.users_left == 0);     // no op of it is in use
    CHECK(r.other_holders == 2);  // the blob's storage and x's hook
    CHECK(is_mapped(path));
    CHECK(blob.to_vector() == std::vector<double>{4, 5, 6});
    Tensor y = opforge::op("elementwise.square")({x});
    y.backward(ones(3));
    CHECK(x.grad().to_vector() == std::vector<double>{6, 12, 18});  // the hook ran
    blob = Tensor();  // the plugin's deleter runs, while it is mapped
    CHECK(is_mapped(path));
  }
  CHECK_FALSE(is_mapped(path));
  CHECK(pending_from(path).empty());
}

// ---- counts: ops in use and other holders --------------------------------------------------

TEST_CASE("lifetime: unloading counts ops in use apart from the tensors, hooks and functions a plugin made") {
  TempDir dir("opforge_lifetime_test");
  const std::string path = dir.file("lt_counts.so");
  install(fixture("lt_counts.so"), path);
  opforge::load_plugin(path);
  Tensor blob = opforge::op("lt_counts.blob")({Tensor::from_values({4, 5, 6})});

  const opforge::UnloadResult r = opforge::unload_plugin("lt_counts");
  CHECK_FALSE(r.unloaded_now);
  CHECK(r.users_left == 0);
  CHECK(r.other_holders == 1);
  REQUIRE(pending_from(path).size() == 1);
  CHECK(pending_from(path)[0].ops_in_use == 0);
  CHECK(pending_from(path)[0].other_holders == 1);
  CHECK(unload_failure("lt_counts") ==
        "cannot unload plugin 'lt_counts': it was already unloaded; its library stays open while its ops or what "
        "its code made are in use (ops in use: 0; tensors, hooks or functions made by the plugin: 1): release the "
        "op handles and graphs that use its ops, and the tensors, hooks and make_op handles it made, to close it; "
        "loaded plugins: " + loaded_names());

  // A rebuilt file at the same path is refused, with both counts.
  install(fixture("lt_counts.so"), path);  // a new inode: another build to the loader
  CHECK(load_failure(path) ==
          "cannot load plugin '" + path + "': an earlier build of this file is still open: plugin 'lt_counts' (" +
              path +
              ") was unloaded, but its ops or what its code made are still in use (ops in use: 0; tensors, hooks or "
              "functions made by the plugin: 1), and the dynamic loader would hand back that old code, not the file "
              "now on disk; load the new build from another path (a copy of the file, not a link), or release the "
              "old plugin's op handles and graphs, and the tensors, hooks and make_op handles it made, first");
  blob = Tensor();
  CHECK(pending_from(path).empty());
  CHECK_FALSE(is_mapped(path));
  CHECK(opforge::load_plugin(path).name == "lt_counts");
  OpHandle h = opforge::op("lt_counts.blob");
  blob = h({Tensor::from_values({1})});
  const opforge::UnloadResult r2 = opforge::unload_plugin("lt_counts");
  CHECK(r2.users_left == 1);  // h
  CHECK(r2.other_holders == 1);  // blob
  REQUIRE(pending_from(path).size() == 1);
  CHECK(pending_from(path)[0].ops_in_use == 1);
  CHECK(pending_from(path)[0].other_holders == 1);
  h = OpHandle();
  blob = Tensor();
  CHECK(pending_from(path).empty());
  CHECK_FALSE(is_mapped(path));
}

// ---- memory of the plugin's image -----------------------------------------------------------

TEST_CASE("lifetime: a tensor viewing a plugin's static data (no deleter) keeps the plugin loaded") {
  const std::string file = fixture("lt_static.so");
  opforge::load_plugin(file);
  Tensor view = opforge::op("lt_static.static_view")({Tensor::zeros({1})});
  const opforge::UnloadResult r = opforge::unload_plugin("lt_static");
  CHECK_FALSE(r.unloaded_now);
  CHECK(r.users_left == 0);
  CHECK(r.other_holders == 1);
  CHECK(is_mapped(file));
  CHECK(view.to_vector() == std::vector<double>{1.5, 2.5, 3.5, 4.5});
  Tensor copy = view;
  view = Tensor();
  CHECK(is_mapped(file));
  CHECK(copy.to_vector()[3] == 4.5);
  copy = Tensor();
  CHECK_FALSE(is_mapped(file));

  // Memory of the program or the heap keeps no plugin loaded (and costs nothing).
  std::vector<double> heap{1, 2};
  const Tensor borrowed = Tensor::from_blob(heap.data(), {2}, opforge::DType::Float64);
  CHECK(borrowed.to_vector() == heap);
  CHECK(pending_from(file).empty());
}

TEST_CASE("lifetime: a DLPack tensor with no deleter over a plugin's static data keeps the plugin loaded") {
  // from_dlpack gave the storage the core's own deleter, so nothing held the
  // plugin: after unload_plugin the data (and the DLManagedTensor the core would
  // read at release) were unmapped.
  const std::string file = fixture("lt_dlpack.so");
  opforge::load_plugin(file);
  Tensor t = opforge::op("lt_dlpack.dl_static")({Tensor::zeros({1})});
  const opforge::UnloadResult r = opforge::unload_plugin("lt_dlpack");
  CHECK_FALSE(r.unloaded_now);
  CHECK(r.other_holders == 1);
  CHECK(is_mapped(file));
  CHECK(t.to_vector() == std::vector<double>{7, 8, 9});
  t = Tensor();
  CHECK_FALSE(is_mapped(file));
}

TEST_CASE("lifetime: a library a plugin links, mapped with it, keeps the plugin loaded for what it made") {
  // The plugin's dlopen mapped lt_vendor_lib.so too, and its dlclose unmapped
  // it: a deleter or a table of the vendor library must hold the plugin.
  const std::string file = fixture("lt_vendor.so");
  const std::string vendor = fixture("lt_vendor_lib.so");
  opforge::load_plugin(file);
  REQUIRE(is_mapped(vendor));
  Tensor blob = opforge::op("lt_vendor.blob")({Tensor::from_values({1, 2, 3})});
  Tensor table = opforge::op("lt_vendor.table")({Tensor::zeros({1})});
  opforge::UnloadResult r = opforge::unload_plugin("lt_vendor");
  CHECK_FALSE(r.unloaded_now);
  CHECK(r.other_holders == 2);
  CHECK(is_mapped(file));
  CHECK(is_mapped(vendor));
  CHECK(table.to_vector() == std::vector<double>{10, 20, 30, 40});
  table = Tensor();
  CHECK(is_mapped(vendor));
  CHECK(blob.to_vector() == std::vector<double>{1, 2, 3});
  blob = Tensor();  // the vendor's deleter runs, then the plugin and its library go
  CHECK_FALSE(is_mapped(file));
  CHECK_FALSE(is_mapped(vendor));
  CHECK(pending_from(file).empty());
}

TEST_CASE("lifetime: a vendor library two plugins share holds whichever plugin is open for what it made") {
  // The library belonged to the first plugin's image only: once that one was
  // closed, a tensor the second made with the library's deleter held nothing.
  const std::string vendor = fixture("lt_vendor_lib.so");
  opforge::load_plugin(fixture("lt_vendor.so"));
  opforge::load_plugin(fixture("lt_vendor2.so"));
  CHECK(opforge::unload_plugin("lt_vendor").unloaded_now);
  CHECK(is_mapped(vendor));  // lt_vendor2 needs it
  Tensor blob = opforge::op("lt_vendor2.blob")({Tensor::from_values({4, 5})});
  const opforge::UnloadResult r = opforge::unload_plugin("lt_vendor2");
  CHECK_FALSE(r.unloaded_now);
  CHECK(r.other_holders == 1);
  CHECK(is_mapped(vendor));
  CHECK(blob.to_vector() == std::vector<double>{4, 5});
  blob = Tensor();
  CHECK_FALSE(is_mapped(vendor));
}

TEST_CASE("lifetime: a file loaded again while its old ops are in use keeps what the new load made accounted for") {
  // The second load of an unchanged file mapped nothing new, and the loader
  // recorded no address for it: a blob it made held nothing, and freeing it
  // after the unload ran unmapped code.
  const std::string file = fixture("lt_again.so");
  opforge::load_plugin(file);
  opforge::OpHandle old = opforge::op("lt_again.blob");
  CHECK_FALSE(opforge::unload_plugin("lt_again").unloaded_now);
  opforge::load_plugin(file);  // the same build: allowed, shares the mapped code
  old = opforge::OpHandle();
  Tensor blob = opforge::op("lt_again.blob")({Tensor::from_values({1, 2, 3})});
  const opforge::UnloadResult r = opforge::unload_plugin("lt_again");
  CHECK_FALSE(r.unloaded_now);
  CHECK(r.other_holders == 1);
  CHECK(is_mapped(file));
  blob = Tensor();
  CHECK_FALSE(is_mapped(file));
}

TEST_CASE("lifetime: a registrar kept by a plugin and called after its registration is refused, not freed memory") {
  const std::string file = fixture("lt_late.so");
  opforge::load_plugin(file);
  const Tensor x = Tensor::from_values({1, 2});
  std::string what;
  try {
    opforge::op("lt_late.late_add")({x});
  } catch (const opforge::Error& e) {
    what = e.what();
  }
  CHECK_THAT(what, Catch::Contains("plugin 'lt_late' (" + file + "): op 'lt_late.added_late' was added through the "
                                   "registrar after the plugin's registration returned; a PluginRegistrar is valid "
                                   "only during the OPFORGE_PLUGIN body"));
  {
    const auto ops = opforge::registered_ops();  // handles: released before the unload below
    CHECK(std::none_of(ops.begin(), ops.end(),
                       [](const opforge::OpHandle& h) { return h.name() == "lt_late.added_late"; }));
  }
  CHECK(opforge::op("lt_late.static_view")({x}).to_vector() == std::vector<double>{1.5, 2.5, 3.5, 4.5});
  const opforge::UnloadResult r = opforge::unload_plugin("lt_late");
  CHECK(r.users_left == 0);
  CHECK(r.other_holders == 0);
  CHECK(r.unloaded_now);
}

TEST_CASE("lifetime: a plugin the dynamic loader keeps mapped is reported, and its rebuilt file is refused in place") {
  // A thread_local with a destructor keeps the library mapped after its last
  // dlclose: a rebuilt file at the same path would load as the old code.
  TempDir dir("opforge_lifetime_resident");
  const std::string path = dir.file("lt_resident.so");
  install(fixture("lt_resident_1.so"), path);
  opforge::load_plugin(path);
  CHECK(opforge::op("lt_resident.build")({Tensor::zeros({1})}).item() == 1.0);  // registers the destructor
  const opforge::UnloadResult r = opforge::unload_plugin("lt_resident");
  CHECK(r.unloaded_now);
  CHECK(r.resident);
  CHECK(is_mapped(path));
  install(fixture("lt_resident_2.so"), path);
  CHECK_THAT(load_failure(path),
             Catch::StartsWith("cannot load plugin '" + path + "': an earlier build of this file (plugin "
                               "'lt_resident') stays mapped in this process: the dynamic loader did not unmap it") &&
                 Catch::Contains("load the new build from another path (a copy of the file, not a link), or restart "
                                 "the process"));
  // From another path, the new build loads and runs its own code.
  const std::string copy = dir.file("lt_resident_copy.so");
  install(fixture("lt_resident_2.so"), copy);
  opforge::load_plugin(copy);
  CHECK(opforge::op("lt_resident.build")({Tensor::zeros({1})}).item() == 2.0);
  opforge::unload_plugin("lt_resident");
}

TEST_CASE("lifetime: a failed load whose code made a tensor is pending, and its rebuilt file is refused in place") {
  TempDir dir("opforge_lifetime_fail_holder");
  const std::string path = dir.file("lt_fail_holder.so");
  install(fixture("lt_fail_holder_1.so"), path);
  CHECK_THAT(load_failure(path), Catch::Contains("this build fails after making a tensor over its static data"));
  CHECK_FALSE(plugin_is_loaded("lt_fail_holder"));
  const auto pending = pending_from(path);
  REQUIRE(pending.size() == 1);
  CHECK(pending[0].other_holders == 1);
  CHECK(is_mapped(path));
  install(fixture("lt_fail_holder_2.so"), path);
  CHECK_THAT(load_failure(path),
             Catch::Contains("an earlier build of this file is still open: plugin 'lt_fail_holder' (" + path +
                             ") failed to load, but what its code made before that are still in use"));
  const std::string copy = dir.file("lt_fail_holder_copy.so");
  install(fixture("lt_fail_holder_2.so"), copy);
  opforge::load_plugin(copy);
  CHECK(opforge::op("lt_fail_holder.build")({Tensor::zeros({1})}).item() == 2.0);
  opforge::unload_plugin("lt_fail_holder");
}

// ---- exceptions from plugin code ------------------------------------------------------------

TEST_CASE("lifetime: an exception a plugin's hook throws reaches the caller as a core error, after the unloading") {
  // The hook threw its own type, which reached the caller as it was: the
  // tensors died while the exception unwound, the plugin was unmapped, and the
  // handler's e.what() jumped into unmapped code.
  const std::string file = fixture("lt_hook_throws.so");
  opforge::load_plugin(file);
  std::string what;
  bool core_error = false;
  try {
    Tensor x = Tensor::from_values({1, 2, 3});
    x.requires_grad_(true);
    Tensor y = opforge::op("lt_hook_throws.refusing_hook")({x});
    const opforge::UnloadResult r = opforge::unload_plugin("lt_hook_throws");
    CHECK_FALSE(r.unloaded_now);  // x's hook holds it
    opforge::op("reduce.sum")({y}).backward();
  } catch (const opforge::Error& e) {
    core_error = true;
    what = e.what();  // the plugin is gone by now: this text must be the core's
  }
  CHECK(core_error);
  CHECK_FALSE(is_mapped(file));
  CHECK_THAT(what, Catch::Matchers::StartsWith("a gradient hook registered by plugin code threw ") &&
                       Catch::Matchers::EndsWith("HookRefused: the plugin's hook refused the gradient"));
}

// ---- a plugin's sample-input function (OpSchema::samples) -------------------------

namespace {
// A Function of the test program's own, for make_op.
class Doubler final : public opforge::Function {
 public:
  opforge::TensorList forward(opforge::Context&, opforge::TensorSpan in) const override {
    return {opforge::op("elementwise.mul")({in[0], Tensor::from_values({2})})};
  }
  opforge::TensorList backward(opforge::Context&, opforge::TensorSpan g) const override {
    return {opforge::op("elementwise.mul")({g[0], Tensor::from_values({2})})};
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const opforge::Error& e) {
    return e.what();
  }
  FAIL("no opforge::Error was thrown");
  return {};
}
}  // namespace

TEST_CASE("lifetime: a copy of an op's schema keeps its plugin loaded while its sample_inputs can be called") {
  // A copy's sample_inputs was a bare pointer into the plugin: once the handle
  // was gone and the plugin unloaded, calling it jumped into unmapped code.
  const std::string file = fixture("lt_samples.so");
  opforge::load_plugin(file);
  OpHandle h = opforge::op("lt_samples.scale");
  opforge::OpSchema copy = h.schema();
  opforge::SampleInputs samples = h.schema().sample_inputs;
  opforge::OpSchema moved = opforge::OpSchema(h.schema());
  h = OpHandle();
  const opforge::UnloadResult r = opforge::unload_plugin("lt_samples");
  CHECK_FALSE(r.unloaded_now);
  CHECK(r.users_left == 3);  // copy, samples, moved: counted as the op's users, like handles
  CHECK(r.other_holders == 0);
  check_not_registered("lt_samples.scale");
  REQUIRE(is_mapped(file));

  const std::vector<double> want = Tensor::randn(opforge::Dims{5}, opforge::DType::Float64, 7).to_vector();
  REQUIRE(copy.sample_inputs);
  const opforge::TensorList xs = copy.sample_inputs(opforge::DType::Float64, 7);
  REQUIRE(xs.size() == 1);
  CHECK(xs[0].to_vector() == want);
  CHECK(samples(opforge::DType::Float64, 7)[0].to_vector() == want);
  CHECK(moved.sample_inputs(opforge::DType::Float32, 7)[0].dtype() == opforge::DType::Float32);

  copy = opforge::OpSchema();  // assignment releases
  CHECK(is_mapped(file));
  samples = nullptr;
  CHECK(is_mapped(file));
  CHECK(pending_from(file).at(0).ops_in_use == 1);
  {
    const opforge::OpSchema last = std::move(moved);  // the reference moves with it
    CHECK(is_mapped(file));
  }
  CHECK_FALSE(is_mapped(file));
  CHECK_FALSE(dl_has(file));
  CHECK(pending_from(file).empty());
  // What is left behind holds nothing and says so.
  CHECK_FALSE(moved.sample_inputs);
  CHECK_FALSE(samples);
  CHECK(error_of([&] { samples(opforge::DType::Float64, 1); }) ==
        "an op's sample_inputs is empty (the schema sets none with OpSchema::samples)");
}

TEST_CASE("lifetime: make_op with a plugin op's schema keeps that plugin loaded for the new op's samples") {
  const std::string file = fixture("lt_samples_op.so");
  opforge::load_plugin(file);
  OpHandle mine;
  {
    opforge::OpSchema s = opforge::op("lt_samples_op.scale").schema();
    s.name = "mine.doubler";
    mine = opforge::make_op(std::move(s), std::make_unique<Doubler>());
  }
  const opforge::UnloadResult r = opforge::unload_plugin("lt_samples_op");
  CHECK_FALSE(r.unloaded_now);
  CHECK(r.users_left == 1);  // mine's op holds the op its schema came from
  REQUIRE(is_mapped(file));
  // The harness runs the new op on the plugin's samples.
  const opforge::TensorList xs = opforge::sdk::harness_inputs(mine, opforge::DType::Float64, 3);
  REQUIRE(xs.size() == 1);
  CHECK(xs[0].to_vector() == Tensor::randn(opforge::Dims{5}, opforge::DType::Float64, 3).to_vector());
  CHECK(mine(xs).to_vector() == opforge::op("elementwise.mul")({xs[0], Tensor::from_values({2})}).to_vector());
  mine = OpHandle();
  CHECK_FALSE(is_mapped(file));
  CHECK(pending_from(file).empty());
}

TEST_CASE("lifetime: a sample_inputs that throws reaches the caller as a core error naming the op") {
  const std::string file = fixture("lt_samples_throw.so");
  opforge::load_plugin(file);
  const std::string want =
      "lt_samples_throw.square: its sample_inputs(float64, seed 13) threw: square_samples: seed 13 is unlucky";
  OpHandle h = opforge::op("lt_samples_throw.square");
  CHECK(error_of([&] { h.schema().sample_inputs(opforge::DType::Float64, 13); }) == want);
  CHECK(error_of([&] { opforge::sdk::harness_inputs(h, opforge::DType::Float64, 13); }) == want);
  // After the unloading, through a copy of the schema: the text is still the core's.
  opforge::OpSchema copy = h.schema();
  h = OpHandle();
  CHECK_FALSE(opforge::unload_plugin("lt_samples_throw").unloaded_now);
  std::string what;
  try {
    copy.sample_inputs(opforge::DType::Float64, 13);
  } catch (const opforge::Error& e) {
    copy = opforge::OpSchema();  // the plugin is unmapped here, inside the handler
    CHECK_FALSE(is_mapped(file));
    what = e.what();
  }
  CHECK(what == want);
  // A sample function not (yet) bound to an op is named as such.
  const opforge::SampleInputs unbound = +[](opforge::DType, std::uint64_t) -> opforge::TensorList {
    throw std::invalid_argument("no inputs today");
  };
  CHECK(error_of([&] { unbound(opforge::DType::Float32, 2); }) ==
        "an op's sample_inputs(float32, seed 2) threw: no inputs today");
}
