// Plugin loading: every way a plugin file can fail, each with a real file from
// tests/fixtures, the exact message the loader gives (file, reason, what to do),
// and proof that the process goes on: the standard ops still work and a later
// valid load still succeeds. Then ops that misbehave at run time, and
// OPFORGE_PLUGIN_PATH, tested in a child process (default plugins load once per
// process).
//
// Every test case works alone (ctest runs each in its own process) and with all
// the others in one process: each failure test loads its own valid plugin
// (healthy_<x>.so), since a plugin name loads once per process.
#include <sys/wait.h>
#include <unistd.h>

#include <dlfcn.h>
#include <elf.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <opforge/opforge.hpp>
#include <opforge/plugin_abi.h>
#include <opforge/version.hpp>

#include "temp_dir.hpp"

#ifndef OPFORGE_TEST_FIXTURES
#error "OPFORGE_TEST_FIXTURES (the folder of tests/fixtures' plugins) must be defined"
#endif
#ifndef OPFORGE_CLI
#error "OPFORGE_CLI (the path of the opforge program) must be defined"
#endif

namespace fs = std::filesystem;
using opforge_tests::TempDir;
using opforge::Tensor;

namespace {

std::string fixture(const std::string& file) { return std::string(OPFORGE_TEST_FIXTURES) + "/" + file; }
// The loader names files by their canonical path.
std::string canonical_fixture(const std::string& file) { return fs::canonical(fixture(file)).string(); }

// load_plugin(path) must throw a PluginError; returns its message.
std::string load_failure(const std::string& path) {
  try {
    opforge::load_plugin(path);
  } catch (const opforge::PluginError& e) {
    return e.what();
  }
  FAIL("load_plugin('" << path << "') did not throw a PluginError");
  return {};
}

bool plugin_is_loaded(const std::string& name) {
  const auto plugins = opforge::loaded_plugins();
  return std::any_of(plugins.begin(), plugins.end(), [&](const opforge::PluginInfo& p) { return p.name == name; });
}

bool op_is_registered(const std::string& name) {
  const auto ops = opforge::registered_ops();
  return std::any_of(ops.begin(), ops.end(), [&](const opforge::OpHandle& h) { return h.name() == name; });
}

std::vector<std::string> ops_of_plugin(const std::string& plugin) {
  std::vector<std::string> names;
  for (const auto& h : opforge::registered_ops())
    if (h.plugin_name() == plugin) names.push_back(h.name());
  return names;
}

void check_standard_op_works() {
  const opforge::OpHandle add = opforge::op("elementwise.add");
  const Tensor sum = add({Tensor::from_values({1, 2, 3}), Tensor::from_values({10, 20, 30})});
  REQUIRE(sum.shape() == opforge::Dims{3});
  CHECK(sum.data<double>()[0] == 11.0);
  CHECK(sum.data<double>()[1] == 22.0);
  CHECK(sum.data<double>()[2] == 33.0);
}

// After a failed load: the standard ops still work, and a valid plugin
// (healthy_<suffix>.so, loaded by no other test) still loads and runs.
void check_process_goes_on(const std::string& suffix) {
  check_standard_op_works();
  const std::string name = "healthy_" + suffix;
  const opforge::PluginInfo info = opforge::load_plugin(fixture(name + ".so"));
  CHECK(info.name == name);
  CHECK(info.version == "1.0.0");
  CHECK(info.file == canonical_fixture(name + ".so"));
  CHECK(info.ops == std::vector<std::string>{name + ".twice"});
  CHECK(plugin_is_loaded(name));
  const Tensor y = opforge::op(name + ".twice")({Tensor::from_values({1.5, -2})});
  CHECK(y.data<double>()[0] == 3.0);
  CHECK(y.data<double>()[1] == -4.0);
}

// The "faulty" plugin (forward_throws.so): loaded once per process.
void ensure_faulty_loaded() {
  if (!plugin_is_loaded("faulty")) {
    const opforge::PluginInfo info = opforge::load_plugin(fixture("forward_throws.so"));
    REQUIRE(info.name == "faulty");
  }
}

// Runs a shell command; returns its exit status (-1 if it did not exit) and
// its stdout and stderr together.
struct RunResult {
  int status = -1;
  std::string output;
};
RunResult run_command(const std::string& command) {
  RunResult r;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int wstatus = ::pclose(pipe);
  if (wstatus != -1 && WIFEXITED(wstatus)) r.status = WEXITSTATUS(wstatus);
  return r;
}

std::string opforge_ops_with_plugin_path(const std::string& plugin_path) {
  return "OPFORGE_PLUGIN_PATH='" + plugin_path + "' timeout 120 '" OPFORGE_CLI "' ops";
}

// Runs the hidden test case `name` (tagged [.]) of this program in a child
// process, killed after two minutes, and checks that it passed: for loads that
// leave the process changed for good (a static initialiser that threw) or that
// used to hang.
void check_child_passes(const std::string& name) {
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const RunResult r = run_command("timeout 120 '" + self + "' '" + name + "'");
  INFO("output of the child process:\n" << r.output);
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Catch::Contains("All tests passed"));  // (also: the child test case exists)
}

// A copy of `from` cut to its first `bytes` bytes, at `to`.
void write_truncated(const std::string& from, const std::string& to, std::size_t bytes) {
  std::ifstream in(from, std::ios::binary);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(data.size() > bytes);
  std::ofstream out(to, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(bytes));
}

// A copy of `from` at `to`, with `bytes` written over it at `offset`.
void write_patched(const std::string& from, const std::string& to, std::size_t offset, const void* bytes,
                   std::size_t n) {
  std::ifstream in(from, std::ios::binary);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(data.size() >= offset + n);
  std::memcpy(&data[offset], bytes, n);
  std::ofstream out(to, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

// Where the last byte of a 64-bit ELF file's PT_LOAD segments lies: a copy
// shorter than this cuts a segment. (Half the file is not enough: with debug
// information, as in a sanitizer build, the second half holds no segment.)
std::size_t loaded_extent(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(data.size() >= sizeof(Elf64_Ehdr));
  Elf64_Ehdr eh;
  std::memcpy(&eh, data.data(), sizeof eh);
  REQUIRE(eh.e_ident[EI_CLASS] == ELFCLASS64);
  std::size_t need = 0;
  for (std::size_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    REQUIRE(eh.e_phoff + (i + 1) * sizeof ph <= data.size());
    std::memcpy(&ph, data.data() + eh.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_type == PT_LOAD) need = std::max<std::size_t>(need, ph.p_offset + ph.p_filesz);
  }
  return need;
}

}  // namespace

// ---- the standard plugins --------------------------------------------------------

TEST_CASE("plugin: the standard plugins load with no configuration") {
  const auto plugins = opforge::loaded_plugins();
  const auto it = std::find_if(plugins.begin(), plugins.end(),
                               [](const opforge::PluginInfo& p) { return p.name == "elementwise"; });
  REQUIRE(it != plugins.end());
  // From the standard folder next to libopforge, the first entry of the search path.
  const std::vector<std::string> search = opforge::plugin_search_path();
  REQUIRE_FALSE(search.empty());
  CHECK(fs::path(it->file).parent_path() == fs::canonical(search.front()));
  CHECK(fs::path(it->file).filename() == "elementwise.so");
  std::vector<std::string> ops = it->ops;
  std::sort(ops.begin(), ops.end());
  // The standard elementwise family includes at least these four (the benchmark's graph uses them).
  for (const char* name : {"elementwise.add", "elementwise.mul", "elementwise.square", "elementwise.sub"})
    CHECK(std::find(ops.begin(), ops.end(), name) != ops.end());
  for (const auto& f : opforge::plugin_load_failures()) CHECK(f.file.find("elementwise.so") == std::string::npos);
  CHECK(opforge::op("elementwise.add").plugin_name() == "elementwise");
  CHECK(opforge::op("elementwise.add").plugin_file() == it->file);
}

// ---- each way a load fails ---------------------------------------------------------

TEST_CASE("plugin: a missing file is refused") {
  const std::string path = fixture("does_not_exist.so");
  CHECK(load_failure(path) ==
        "cannot load plugin '" + path + "': file not found; check the path (or OPFORGE_PLUGIN_PATH)");
  check_process_goes_on("missing");
}

TEST_CASE("plugin: a text file named .so is refused as not a shared library") {
  const std::string file = canonical_fixture("not_a_library.so");
  const std::string msg = load_failure(file);
  // "(...)" holds the dynamic loader's own words ("...: invalid ELF header").
  CHECK_THAT(msg, Catch::StartsWith("cannot load plugin '" + file + "': not a shared library (") &&
                      Catch::EndsWith("); pass a plugin built with opforge_add_plugin"));
  check_process_goes_on("text");
}

TEST_CASE("plugin: a directory named .so, and a link to a file that is gone, are refused saying what they are") {
  TempDir dir("opforge_plugin_test");
  const std::string folder = dir.file("folder.so");
  fs::create_directory(folder);
  CHECK(load_failure(folder) == "cannot load plugin '" + folder +
                                    "': it is a directory, not a plugin file; pass the plugin's .so file (a folder "
                                    "of plugins belongs on OPFORGE_PLUGIN_PATH); in a plugin folder, rename the "
                                    "directory so that its name does not end in .so");
  const std::string link = dir.file("gone.so");
  fs::create_symlink(dir.file("removed.so"), link);
  CHECK(load_failure(link) == "cannot load plugin '" + link + "': a symbolic link to '" + dir.file("removed.so") +
                                  "', which does not exist; fix the link, or remove it (from the plugin folder)");
  check_process_goes_on("folder");
}

TEST_CASE("plugin: a loop of links, a path through a file, and a folder are refused saying what they are") {
  TempDir dir("opforge_plugin_test");
  const std::string a = dir.file("loop_a.so"), b = dir.file("loop_b.so");
  fs::create_symlink(b, a);
  fs::create_symlink(a, b);
  CHECK(load_failure(a) == "cannot load plugin '" + a +
                               "': a symbolic link that leads back to itself (a loop of links); fix the links so that "
                               "they end at the plugin's file, or remove them (from the plugin folder)");
  const std::string through = fixture("healthy_loop.so") + "/";
  CHECK(load_failure(through) ==
        "cannot load plugin '" + through +
            "': a part of the path before its end is a file, not a directory (a trailing '/' after a file name?); "
            "pass the plugin's file itself, e.g. without a trailing '/'");
  const std::string folder = dir.file("build");
  fs::create_directory(folder);
  CHECK(load_failure(folder) == "cannot load plugin '" + folder +
                                    "': it is a directory, not a plugin file; pass the plugin's .so file (a folder "
                                    "of plugins belongs on OPFORGE_PLUGIN_PATH)");
  check_process_goes_on("loop");
}

TEST_CASE("plugin: a descriptor function that throws its own exception type is refused with its message") {
  // The exception's type and what() are the plugin's: read while it is open, and
  // the PluginError the caller gets is the core's.
  const std::string file = canonical_fixture("descriptor_throws.so");
  CHECK_THAT(load_failure(file),
             Catch::StartsWith("cannot load plugin '" + file + "': its opforge_plugin_descriptor threw ") &&
                 Catch::Contains("DescriptorBroken (the descriptor fixture refuses to describe itself)") &&
                 Catch::EndsWith("whose descriptor cannot throw"));
  check_process_goes_on("descthrows");
}

TEST_CASE("plugin: a plugin name or version that is not plain words is refused showing it") {
  const std::string name_file = canonical_fixture("odd_name.so");
  CHECK(load_failure(name_file) ==
        "cannot load plugin '" + name_file +
            "': its plugin name 'odd name' is not a plain name; name the plugin (OPFORGE_PLUGIN's first argument) "
            "with at most 128 letters, digits and '_', as the family of its ops (e.g. 'myops' for 'myops.silu')");
  const std::string version_file = canonical_fixture("odd_version.so");
  CHECK(load_failure(version_file) ==
        "cannot load plugin '" + version_file +
            "': plugin 'odd_version': its version '1.0 beta' is not a plain version; give OPFORGE_PLUGIN a version "
            "of at most 64 letters, digits and . _ + - ~ (e.g. \"1.2.0\")");
  CHECK_FALSE(plugin_is_loaded("odd_version"));
  check_process_goes_on("oddname");
}

TEST_CASE("plugin: a plugin built with libstdc++'s debug mode is refused before its registration runs") {
  // _GLIBCXX_DEBUG changes std::vector's layout: the loader read an OpSchema
  // from such a plugin as garbage ("declares -395043008 outputs").
  const std::string file = canonical_fixture("debug_stdlib.so");
  CHECK(load_failure(file) ==
        "cannot load plugin '" + file +
            "': C++ standard library differs: the plugin was built with libstdc++ in debug mode (_GLIBCXX_DEBUG) (" +
            OPFORGE_COMPILER_ID + "), opforge with " OPFORGE_STDLIB_ID " (" OPFORGE_COMPILER_ID
            "); build the plugin and opforge alike, both with or both without _GLIBCXX_DEBUG (it changes the layout "
            "of the standard containers opforge and its plugins share; _GLIBCXX_ASSERTIONS checks without changing "
            "it)");
  CHECK_FALSE(plugin_is_loaded("debug_stdlib"));
}

TEST_CASE("plugin: a shared library without a descriptor is refused") {
  const std::string file = canonical_fixture("no_descriptor.so");
  // The fixture is a valid library: only the descriptor is missing.
  void* handle = ::dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  REQUIRE(handle != nullptr);
  CHECK(::dlsym(handle, "opforge_fixture_harmless") != nullptr);
  ::dlclose(handle);

  CHECK(load_failure(file) ==
        "cannot load plugin '" + file +
            "': it does not export opforge_plugin_descriptor (not an opforge plugin); declare the plugin with "
            "OPFORGE_PLUGIN(name, version) from <opforge/sdk/plugin.hpp>");
  check_process_goes_on("nodesc");
}

TEST_CASE("plugin: a plugin built for another major ABI version is refused") {
  const std::string file = canonical_fixture("abi_major.so");
  const std::string major = std::to_string(OPFORGE_PLUGIN_ABI_MAJOR);
  const std::string minor = std::to_string(OPFORGE_PLUGIN_ABI_MINOR);
  CHECK(load_failure(file) == "cannot load plugin '" + file + "': plugin ABI version " +
                                  std::to_string(OPFORGE_PLUGIN_ABI_MAJOR + 1) +
                                  ".0 is not supported by this opforge (plugin ABI " + major + "." + minor +
                                  "; it accepts " + major + ".0 to " + major + "." + minor +
                                  "); rebuild the plugin against the opforge SDK " OPFORGE_VERSION_STRING);
  CHECK_FALSE(plugin_is_loaded("abi_major"));
  check_process_goes_on("major");
}

TEST_CASE("plugin: a plugin built for a newer minor ABI version is refused") {
  const std::string file = canonical_fixture("abi_minor_newer.so");
  const std::string major = std::to_string(OPFORGE_PLUGIN_ABI_MAJOR);
  CHECK(load_failure(file) == "cannot load plugin '" + file + "': the plugin was built for plugin ABI " + major +
                                  "." + std::to_string(OPFORGE_PLUGIN_ABI_MINOR + 1) + ", newer than this opforge's " +
                                  major + "." + std::to_string(OPFORGE_PLUGIN_ABI_MINOR) +
                                  "; upgrade opforge, or rebuild the plugin against the opforge SDK "
                                  OPFORGE_VERSION_STRING);
  CHECK_FALSE(plugin_is_loaded("abi_minor_newer"));
  check_process_goes_on("minor");
}

TEST_CASE("plugin: a plugin built with another C++ standard library is refused") {
  const std::string file = canonical_fixture("stdlib_mismatch.so");
  CHECK(load_failure(file) == "cannot load plugin '" + file +
                                  "': C++ standard library differs: the plugin was built with libc++ (Clang 17.0.6), "
                                  "opforge with " OPFORGE_STDLIB_ID " (" OPFORGE_COMPILER_ID
                                  "); rebuild the plugin against the C++ standard library opforge uses");
  CHECK_FALSE(plugin_is_loaded("stdlib_mismatch"));
  check_process_goes_on("stdlib");
}

TEST_CASE("plugin: a plugin whose first include is plugin_abi.h records its standard library and loads") {
  // plugin_abi.h is the plain-C contract; before it included a C++ header of its
  // own, a plugin that included it first described itself as built with an
  // "unknown" standard library and string ABI 0, and was refused.
  const opforge::PluginInfo info = opforge::load_plugin(fixture("abi_header_first.so"));
  CHECK(info.name == "abi_header_first");
  CHECK(info.ops == std::vector<std::string>{"abi_header_first.twice"});
  const Tensor y = opforge::op("abi_header_first.twice")({Tensor::from_values({1.5, -2})});
  CHECK(y.data<double>()[0] == 3.0);
  CHECK(y.data<double>()[1] == -4.0);
}

TEST_CASE("plugin: a registration entry that throws is reported with its message") {
  const std::string file = canonical_fixture("register_throws.so");
  CHECK(load_failure(file) == "cannot load plugin '" + file +
                                  "': its registration failed: boom: table missing; none of its ops were registered; "
                                  "fix the plugin's registration code (the OPFORGE_PLUGIN body), or remove the file "
                                  "from the plugin path");
  CHECK_FALSE(plugin_is_loaded("register_throws"));
  check_process_goes_on("throws");
}

TEST_CASE("plugin: a registration body that throws a non-std exception, or adds one op twice, is refused") {
  const std::string todo = "; none of its ops were registered; fix the plugin's registration code (the "
                           "OPFORGE_PLUGIN body), or remove the file from the plugin path";
  const std::string thrower = canonical_fixture("register_throws_int.so");
  CHECK(load_failure(thrower) == "cannot load plugin '" + thrower +
                                     "': its registration failed: the registration body threw an exception not "
                                     "derived from std::exception" + todo);
  const std::string twice = canonical_fixture("register_adds_twice.so");
  CHECK(load_failure(twice) == "cannot load plugin '" + twice + "': its registration failed: plugin "
                                   "'register_adds_twice' (" + twice + ") adds op 'register_adds_twice.first' "
                                   "twice; give each op its own name" + todo);
  for (const char* name : {"register_throws_int", "register_adds_twice"}) {
    CHECK_FALSE(plugin_is_loaded(name));
    CHECK_FALSE(op_is_registered(std::string(name) + ".first"));
  }
  check_standard_op_works();
}

TEST_CASE("plugin: a long registration message reaches the caller whole, or cut to 65535 bytes saying so") {
  const std::string todo = "; none of its ops were registered; fix the plugin's registration code (the "
                           "OPFORGE_PLUGIN body), or remove the file from the plugin path";
  const std::string cut = "... (cut: the loader reads at most 65535 bytes of a plugin's message)";
  const auto message = [](std::size_t bytes) {
    std::string m = "m0123456789";
    m.resize(bytes - 3, 'x');
    return m + "END";
  };
  // 3000 bytes: more than the 1 KiB the loader once read, all of it shown.
  const std::string f3000 = canonical_fixture("register_long_3000.so");
  CHECK(load_failure(f3000) == "cannot load plugin '" + f3000 + "': its registration failed: " + message(3000) + todo);
  // 100000 bytes: the first 65535, and a word that the rest was cut.
  const std::string f100k = canonical_fixture("register_long_100000.so");
  CHECK(load_failure(f100k) == "cannot load plugin '" + f100k + "': its registration failed: " +
                                   message(100000).substr(0, 65535) + cut + todo);
  // A cut through a two-byte UTF-8 character drops its first byte too.
  const std::string futf8 = canonical_fixture("register_long_utf8.so");
  CHECK(load_failure(futf8) == "cannot load plugin '" + futf8 + "': its registration failed: " +
                                   std::string(65534, 'x') + cut + todo);
  for (const char* name : {"register_long_3000", "register_long_100000", "register_long_utf8"}) {
    CHECK_FALSE(plugin_is_loaded(name));
    CHECK_FALSE(op_is_registered(std::string(name) + ".first"));
  }
  check_standard_op_works();
}

TEST_CASE("plugin: a registration that fails part way registers none of its ops") {
  const std::string file = canonical_fixture("register_throws.so");
  // It added "register_throws.first" before it threw.
  (void)load_failure(file);
  CHECK_FALSE(op_is_registered("register_throws.first"));
  CHECK(ops_of_plugin("register_throws").empty());
  CHECK_THROWS_AS(opforge::op("register_throws.first"), opforge::PluginError);
  // Nothing was kept: the same file fails the same way again, not as "already loaded".
  CHECK_THAT(load_failure(file), Catch::Contains("its registration failed: boom: table missing"));
}

TEST_CASE("plugin: an invalid op schema is refused with the reason") {
  const std::string file = canonical_fixture("bad_schema.so");
  CHECK(load_failure(file) ==
        "cannot load plugin '" + file + "': its registration failed: plugin 'bad_schema' (" + file +
            "): invalid op schema: op name 'noprefix' is not qualified: expected 'family.name', e.g. 'linalg.mv'; "
            "none of its ops were registered; fix the plugin's registration code (the OPFORGE_PLUGIN body), or "
            "remove the file from the plugin path");
  CHECK_FALSE(plugin_is_loaded("bad_schema"));
  CHECK_FALSE(op_is_registered("bad_schema.fine"));
  CHECK_FALSE(op_is_registered("noprefix"));
  check_process_goes_on("schema");
}

namespace {
struct Identity final : opforge::Function {
  opforge::TensorList forward(opforge::Context&, opforge::TensorSpan in) const override { return {in[0]}; }
  opforge::TensorList backward(opforge::Context&, opforge::TensorSpan g) const override { return {g[0]}; }
};
// What OpSchema::validate says (the registrar and make_op run the same check).
std::string schema_problem(const opforge::OpSchema& schema) {
  try {
    opforge::make_op(schema, std::make_unique<Identity>());
  } catch (const opforge::ValueError& e) {
    const std::string prefix = "make_op: invalid schema: ";
    const std::string msg = e.what();
    return msg.compare(0, prefix.size(), prefix) == 0 ? msg.substr(prefix.size()) : msg;
  }
  return "(accepted)";
}
}  // namespace

TEST_CASE("plugin: an op name that is empty, has two dots or odd characters is refused saying what is wrong") {
  using opforge::OpSchema;
  const std::string qualified = "expected 'family.name', e.g. 'linalg.mv'";
  CHECK(schema_problem(OpSchema("").input_names({"x"})) == "the op name is empty; " + qualified);
  for (const char* name : {"fam.op.x", "fam..op", "fam.op."})
    CHECK(schema_problem(OpSchema(name).input_names({"x"})) ==
          "op name '" + std::string(name) + "' has more than one '.': " + qualified);
  CHECK(schema_problem(OpSchema("fam.op-x").input_names({"x"})) ==
        "op name 'fam.op-x' has the character '-': use letters, digits, '_' and one '.'");
  // A character that cannot be shown as it is is given as its byte.
  CHECK(schema_problem(OpSchema("fam.op\n").input_names({"x"})) ==
        "op name 'fam.op\n' has the byte 0x0a (not printable ASCII): use letters, digits, '_' and one '.'");
  CHECK(schema_problem(OpSchema("fam.op\xc3\xa9").input_names({"x"})) ==
        "op name 'fam.op\xc3\xa9' has the byte 0xc3 (not printable ASCII): use letters, digits, '_' and one '.'");
  CHECK(schema_problem(OpSchema("fam.op_2").input_names({"x"})) == "(accepted)");
}

TEST_CASE("plugin: an op declaring more than 64 outputs is refused (one bit per output marks it non-differentiable)") {
  using opforge::OpSchema;
  CHECK(schema_problem(OpSchema("fam.op").input_names({"x"}).outputs(65)) ==
        "op 'fam.op' declares 65 outputs; at most 64");
  CHECK(schema_problem(OpSchema("fam.op").input_names({"x"}).outputs(0)) == "op 'fam.op' declares 0 outputs; at least 1");
  CHECK(schema_problem(OpSchema("fam.op").input_names({"x"}).outputs(64)) == "(accepted)");
}

TEST_CASE("plugin: an input without a name, or two inputs of one name, are refused") {
  using opforge::OpSchema;
  CHECK(schema_problem(OpSchema("fam.op").input_names({"x", ""})) ==
        "op 'fam.op': input 1 has no name; give every input a name in input_names() (messages name the input)");
  CHECK(schema_problem(OpSchema("fam.op").input_names({"a", "b", "a"})) ==
        "op 'fam.op': inputs 0 and 2 are both named 'a'; give each input its own name in input_names() (messages "
        "name the input)");
  // Names reach messages and `opforge ops --json`: plain words only.
  CHECK(schema_problem(OpSchema("fam.op").input_names({"x\"q"})) ==
        "op 'fam.op': input 0 is named 'x\"q'; use letters, digits and '_' in input names");
  CHECK(schema_problem(OpSchema("fam.op").input_names({"x"}).attr("a b", opforge::AttrKind::Int, 1)) ==
        "op 'fam.op': attribute 0 is named 'a b'; use letters, digits and '_' in attribute names");
  CHECK(schema_problem(OpSchema("fam.op").input_names({"x_1"}).attr("axis_2", opforge::AttrKind::Int, 1)) ==
        "(accepted)");
  // A sample attribute given twice: the second silently won.
  CHECK(schema_problem(OpSchema("fam.op")
                           .input_names({"x"})
                           .attr("k", opforge::AttrKind::Int, 1)
                           .sample_attrs({{"k", std::int64_t{2}}, {"k", std::int64_t{3}}})) ==
        "op 'fam.op': sample attribute 'k' is given twice in sample_attrs(); give it once");
}

TEST_CASE("plugin: a duplicate op name is refused naming the op and both files") {
  const opforge::OpHandle add = opforge::op("elementwise.add");
  const std::string standard_file = add.plugin_file();
  REQUIRE_FALSE(standard_file.empty());
  const std::string file = canonical_fixture("duplicate_op.so");
  CHECK(load_failure(file) == "plugin 'dupe' (" + file + ") registers op 'elementwise.add', which plugin "
                                  "'elementwise' (" + standard_file + ") already provides; rename one of them, or "
                                  "remove one file from the plugin path");
  // The standard op is untouched.
  CHECK(opforge::op("elementwise.add").plugin_name() == "elementwise");
  CHECK(opforge::op("elementwise.add").plugin_file() == standard_file);
  check_process_goes_on("dupe");
}

TEST_CASE("plugin: a name clash found at commit registers none of the plugin's ops") {
  (void)opforge::op("elementwise.add");
  const std::string file = canonical_fixture("duplicate_op.so");
  CHECK_THAT(load_failure(file), Catch::Contains("registers op 'elementwise.add'"));
  // "dupe.fine" was valid and staged, but the clash drops the whole plugin.
  CHECK_FALSE(op_is_registered("dupe.fine"));
  CHECK(ops_of_plugin("dupe").empty());
  CHECK_FALSE(plugin_is_loaded("dupe"));
}

TEST_CASE("plugin: load_plugin loads the standard plugins before the file it is given") {
  // First thing in the process: had duplicate_op.so gone first, it would have
  // taken "elementwise.add" and the standard elementwise plugin would fail.
  const std::string file = canonical_fixture("duplicate_op.so");
  CHECK_THAT(load_failure(file), Catch::StartsWith("plugin 'dupe' (" + file + ") registers op 'elementwise.add'"));
  CHECK(opforge::op("elementwise.add").plugin_name() == "elementwise");
  for (const auto& f : opforge::plugin_load_failures()) CHECK(f.file.find("elementwise.so") == std::string::npos);
}

TEST_CASE("plugin: LoadOptions::replace_same_name replaces a plugin of the same name, but takes no other plugin's op") {
  const std::string name = "healthy_rename";
  const std::string installed = canonical_fixture(name + ".so");
  REQUIRE(opforge::load_plugin(installed).name == name);
  TempDir dir("opforge_plugin_test");
  const std::string build = dir.file(name + ".so");
  fs::copy_file(installed, build);
  // Without the option: refused, naming the loaded file.
  CHECK_THAT(load_failure(build), Catch::Contains("a plugin named '" + name + "' is already loaded from " + installed));
  opforge::LoadOptions options;
  options.replace_same_name = true;
  const opforge::PluginInfo info = opforge::load_plugin(build, options);
  CHECK(info.file == build);
  CHECK(opforge::op(name + ".twice").plugin_file() == build);
  CHECK(opforge::op(name + ".twice")({Tensor::from_values({2})}).item() == 4.0);
  // An op name another plugin provides is still refused, and nothing changes.
  const std::string dupe = canonical_fixture("duplicate_op.so");
  try {
    opforge::load_plugin(dupe, options);
    FAIL("duplicate_op.so loaded with replace_same_name");
  } catch (const opforge::PluginError& e) {
    CHECK_THAT(e.what(), Catch::StartsWith("plugin 'dupe' (" + dupe + ") registers op 'elementwise.add'"));
  }
  CHECK(opforge::op("elementwise.add").plugin_name() == "elementwise");
  CHECK_FALSE(plugin_is_loaded("dupe"));
}

// ---- ops that misbehave when run ---------------------------------------------------

TEST_CASE("plugin: a forward that throws a std exception gives an Error naming the op") {
  ensure_faulty_loaded();
  const opforge::OpHandle boom = opforge::op("faulty.boom");
  try {
    boom({Tensor::from_values({1, 2})});
    FAIL("faulty.boom did not throw");
  } catch (const opforge::Error& e) {
    CHECK(e.kind() == opforge::ErrorKind::Generic);
    CHECK(std::string(e.what()) == "faulty.boom: std::out_of_range: index 7 out of range");
  }
  // The op is still there and the process goes on.
  CHECK(opforge::op("faulty.boom").valid());
  check_standard_op_works();
}

TEST_CASE("plugin: a forward that throws an unknown type gives a PluginError naming the op and plugin") {
  ensure_faulty_loaded();
  const opforge::OpHandle weird = opforge::op("faulty.weird");
  const std::string file = canonical_fixture("forward_throws.so");
  CHECK_THROWS_MATCHES(
      weird({Tensor::from_values({1, 2})}), opforge::PluginError,
      Catch::Message("faulty.weird: threw an exception of a type opforge does not know (not derived from "
                     "std::exception) (plugin 'faulty', " + file +
                     "); op code must throw opforge::Error or a std::exception"));
  // The op is still there and the process goes on.
  CHECK(opforge::op("faulty.weird").valid());
  check_standard_op_works();
}

TEST_CASE("plugin: a backward returning too few gradients gives an AutogradError naming the plugin") {
  ensure_faulty_loaded();
  const std::string file = canonical_fixture("forward_throws.so");
  const Tensor a = Tensor::from_values({1, 2, 3}).requires_grad_();
  const Tensor b = Tensor::from_values({4, 5, 6}).requires_grad_();
  const Tensor y = opforge::op("faulty.bad_grad_count")({a, b});
  CHECK_THROWS_MATCHES(y.backward(Tensor::ones({3})), opforge::AutogradError,
                       Catch::Message("in backward of 'faulty.bad_grad_count': backward returned 1 gradient(s), "
                                      "expected 2 (one per input; return an undefined Tensor for an input that "
                                      "needs none) (plugin 'faulty', " + file + ")"));
  CHECK_FALSE(a.grad().defined());
  CHECK_FALSE(b.grad().defined());
}

namespace {
// What backward through the faulty op `name` on x = [1, 2, 3] throws (an
// AutogradError); x must get no gradient.
std::string faulty_backward_error(const std::string& name) {
  ensure_faulty_loaded();
  const Tensor x = Tensor::from_values({1, 2, 3}).requires_grad_();
  const Tensor y = opforge::op(name)({x});
  std::string msg = "(no AutogradError)";
  try {
    y.backward(Tensor::ones({3}));
  } catch (const opforge::AutogradError& e) {
    msg = e.what();
  }
  CHECK_FALSE(x.grad().defined());
  return msg;
}
}  // namespace

TEST_CASE("plugin: a backward returning a gradient of the wrong shape or dtype gives an AutogradError naming the "
          "plugin") {
  const std::string in_plugin = " (plugin 'faulty', " + canonical_fixture("forward_throws.so") + ")";
  CHECK(faulty_backward_error("faulty.bad_grad_shape") ==
        "in backward of 'faulty.bad_grad_shape': the gradient for input 0 'x' has shape [2], expected [3] (the "
        "input's shape)" + in_plugin + "; return a gradient of the input's shape (opforge::sum_to reduces a "
        "broadcast one)");
  CHECK(faulty_backward_error("faulty.bad_grad_dtype") ==
        "in backward of 'faulty.bad_grad_dtype': the gradient for input 0 'x' has dtype float32, expected float64 "
        "(the input's dtype)" + in_plugin + "; return the gradient in the input's dtype (convert it with "
        ".to(ctx.input_dtype(i)))");
}

TEST_CASE("plugin: an op reading an input or gradient past what it was given gets an IndexError, not garbage") {
  ensure_faulty_loaded();
  const std::string span = "TensorSpan: index 1 is out of range for 1 tensor (an op's forward gets one tensor per "
                           "input its schema declares, in the order of input_names; its backward one gradient per "
                           "output)";
  const Tensor x = Tensor::from_values({1, 2, 3}).requires_grad_();
  CHECK_THROWS_MATCHES(opforge::op("faulty.reads_past_inputs")({x}), opforge::IndexError,
                       Catch::Message("faulty.reads_past_inputs: " + span));
  const Tensor y = opforge::op("faulty.reads_past_grads")({x});
  try {
    y.backward(Tensor::ones({3}));
    FAIL("backward reading g[1] of 1 did not throw");
  } catch (const opforge::Error& e) {
    CHECK_THAT(e.what(), Catch::StartsWith("in backward of 'faulty.reads_past_grads': "));
    CHECK_THAT(e.what(), Catch::Contains(span));
  }
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("plugin: a forward returning the wrong number of outputs, or an undefined one, names the plugin") {
  ensure_faulty_loaded();
  const std::string file = canonical_fixture("forward_throws.so");
  // With and without a graph: the same check, the same message.
  for (const bool grad : {false, true}) {
    INFO("input requires grad: " << grad);
    const Tensor x = Tensor::from_values({1, 2, 3}).requires_grad_(grad);
    CHECK_THROWS_MATCHES(opforge::op("faulty.bad_output_count").call({x}), opforge::AutogradError,
                         Catch::Message("faulty.bad_output_count: forward returned 1 outputs, expected 2 (as its "
                                        "schema declares) (plugin 'faulty', " + file +
                                        "); return one tensor per output, or declare the count with "
                                        "OpSchema::outputs(n)"));
    CHECK_THROWS_MATCHES(opforge::op("faulty.undefined_output")({x}), opforge::AutogradError,
                         Catch::Message("faulty.undefined_output: forward returned an undefined tensor as output 0 "
                                        "(plugin 'faulty', " + file + "); return a defined tensor for every output"));
  }
  check_standard_op_works();
}

// ---- OPFORGE_PLUGIN_PATH, in a child process -----------------------------------

TEST_CASE("plugin: a bad file on OPFORGE_PLUGIN_PATH is reported and the program goes on") {
  TempDir dir("opforge_plugin_test");
  fs::copy_file(fixture("not_a_library.so"), dir.path() / "not_a_library.so");
  const std::string file = (dir.path() / "not_a_library.so").string();
  const RunResult r = run_command(opforge_ops_with_plugin_path(dir.path().string()));
  INFO("output of `opforge ops`:\n" << r.output);
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Catch::Contains(file) && Catch::Contains("not a shared library"));
  CHECK_THAT(r.output, Catch::Contains("elementwise"));  // the standard plugins still loaded
}

TEST_CASE("plugin: `opforge ops NAME` notes on stderr a plugin on OPFORGE_PLUGIN_PATH that did not load") {
  // The case that misled: a fresh build refused, an op of the same name found
  // elsewhere, and the answer said nothing of the refusal.
  TempDir dir("opforge_plugin_test");
  fs::copy_file(fixture("not_a_library.so"), dir.path() / "not_a_library.so");
  const std::string file = (dir.path() / "not_a_library.so").string();
  const std::string command =
      "OPFORGE_PLUGIN_PATH='" + dir.path().string() + "' timeout 120 '" OPFORGE_CLI "' ops elementwise.add";
  const RunResult both = run_command(command);
  INFO("output of `opforge ops elementwise.add`:\n" << both.output);
  CHECK(both.status == 0);
  CHECK_THAT(both.output, Catch::Contains("opforge ops: note: a plugin did not load (`opforge ops` lists every "
                                          "failure): cannot load plugin '" + file + "'"));
  CHECK_THAT(both.output, Catch::Contains("elementwise.add(a, b) -> 1 output"));
  const RunResult json = run_command("(" + command + " --json 2>/dev/null)");  // stdout alone: the JSON, no note
  CHECK(json.status == 0);
  CHECK_THAT(json.output, Catch::StartsWith("{\"name\": \"elementwise.add\"") && !Catch::Contains("note:"));
}

TEST_CASE("plugin: OPFORGE_PLUGIN_PATH loads a named file and reports a missing entry") {
  TempDir dir("opforge_plugin_test");
  const std::string missing = (dir.path() / "no_such_folder").string();
  const std::string healthy = canonical_fixture("healthy_envpath.so");
  const RunResult r = run_command(opforge_ops_with_plugin_path(missing + ":" + healthy));
  INFO("output of `opforge ops`:\n" << r.output);
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Catch::Contains("healthy_envpath"));
  CHECK_THAT(r.output, Catch::Contains("OPFORGE_PLUGIN_PATH entry '" + missing +
                                       "' does not exist; fix the entry, or remove it from OPFORGE_PLUGIN_PATH"));
}

TEST_CASE("plugin: OPFORGE_PLUGIN_PATH skips empty entries, and reports a folder named .so and a dangling link in "
          "a plugin folder with what to do") {
  TempDir dir("opforge_plugin_test");
  fs::create_directory(dir.path() / "sub.so");
  fs::create_symlink(dir.file("removed.so"), dir.path() / "gone.so");
  const std::string healthy = canonical_fixture("healthy_envpath.so");
  const RunResult r = run_command(opforge_ops_with_plugin_path(":" + dir.path().string() + "::" + healthy + ":"));
  INFO("output of `opforge ops`:\n" << r.output);
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Catch::Contains("healthy_envpath.twice"));
  CHECK_THAT(r.output, Catch::Contains("cannot load plugin '" + dir.file("sub.so") +
                                       "': it is a directory, not a plugin file; pass the plugin's .so file"));
  CHECK_THAT(r.output, Catch::Contains("cannot load plugin '" + dir.file("gone.so") + "': a symbolic link to '" +
                                       dir.file("removed.so") + "', which does not exist; fix the link"));
  CHECK_THAT(r.output, !Catch::Contains("entry ''"));  // an empty entry is no entry
}

TEST_CASE("plugin: an unreadable folder on OPFORGE_PLUGIN_PATH is reported, not silently skipped") {
  if (::geteuid() == 0) {
    WARN("running as root, which lists any folder: the unreadable folder cannot be made here");
    return;
  }
  TempDir dir("opforge_plugin_test");
  const fs::path locked = dir.path() / "locked";
  fs::create_directory(locked);
  fs::permissions(locked, fs::perms::none);
  const RunResult r = run_command(opforge_ops_with_plugin_path(locked.string()));
  fs::permissions(locked, fs::perms::owner_all);
  INFO("output of `opforge ops`:\n" << r.output);
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Catch::Contains("cannot list the plugin folder '" + locked.string() + "' (") &&
                           Catch::Contains("); its plugins were not loaded; make the folder readable (chmod a+rx), "
                                           "or remove it from OPFORGE_PLUGIN_PATH"));
}

TEST_CASE("plugin: OPFORGE_PLUGIN_PATH naming a folder already searched loads each file once") {
  // The standard folder, given again (twice) on OPFORGE_PLUGIN_PATH.
  const std::string standard = fs::canonical(opforge::plugin_search_path().front()).string();
  const RunResult r = run_command(opforge_ops_with_plugin_path(standard + ":" + standard + "/elementwise.so"));
  INFO("output of `opforge ops`:\n" << r.output);
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Catch::Contains("elementwise.add"));
  CHECK_THAT(r.output, !Catch::Contains("already loaded"));
}

// ---- a static initialiser that throws (inside dlopen) ------------------------------

TEST_CASE("child: a static initialiser that throws", "[.]") {
  const std::string file = canonical_fixture("static_init_throws.so");
  const std::string msg = load_failure(file);
  CHECK(msg == "cannot load plugin '" + file +
                   "': a static initialiser of the plugin threw std::runtime_error (static table of "
                   "static_init_throws is missing) inside the dynamic loader; fix the plugin (a static initialiser "
                   "must not throw: do fallible set-up in the OPFORGE_PLUGIN body) or remove the file from the plugin "
                   "path, then restart the process: the exception left the process's dynamic loader locked and "
                   "possibly inconsistent, so loading a library on another thread may hang");
  CHECK_FALSE(plugin_is_loaded("static_init_throws"));
  // Another thread's load is refused at once, saying why, instead of hanging in dlopen.
  std::string other;
  std::thread t([&] {
    try {
      opforge::load_plugin(fixture("healthy_sinit.so"));
      other = "loaded";
    } catch (const opforge::PluginError& e) {
      other = e.what();
    }
  });
  t.join();
  CHECK(other == "cannot load plugin '" + canonical_fixture("healthy_sinit.so") +
                     "': the static initialiser of plugin file '" + file +
                     "' threw inside the dynamic loader on another thread, which left the loader locked: this load "
                     "would hang; restart the process (after fixing or removing '" + file + "')");
  // The thread that holds the loader's lock may still load, and ops still run.
  check_process_goes_on("sinit");
}

TEST_CASE("plugin: a static initialiser that throws gives a PluginError, and other threads' loads are refused") {
  check_child_passes("child: a static initialiser that throws");
}

TEST_CASE("plugin: a static initialiser that throws on OPFORGE_PLUGIN_PATH is recorded and the program goes on") {
  const std::string file = canonical_fixture("static_init_throws.so");
  const RunResult r = run_command(opforge_ops_with_plugin_path(file));
  INFO("output of `opforge ops`:\n" << r.output);
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Catch::Contains(file) && Catch::Contains("a static initialiser of the plugin threw"));
  CHECK_THAT(r.output, Catch::Contains("elementwise.add"));
}

// ---- a truncated file --------------------------------------------------------------

TEST_CASE("plugin: a truncated plugin file is refused before the dynamic loader maps it") {
  TempDir dir("opforge_plugin_test");
  const std::string whole = canonical_fixture("healthy_nodesc.so");
  const std::size_t need = loaded_extent(whole);
  REQUIRE(need > 200);
  const std::string half = dir.file("half.so");
  write_truncated(whole, half, need / 2);  // half of what its segments need
  const std::string todo = "); rebuild the plugin, or copy it again in full (the file is incomplete: an interrupted "
                           "copy or download, or a full disk)";
  CHECK(load_failure(half) == "cannot load plugin '" + half + "': not a shared library (truncated: the file has " +
                                  std::to_string(need / 2) + " bytes, its segments need " + std::to_string(need) +
                                  todo);
  // The ELF header, but not all of its program headers.
  const std::string head = dir.file("head.so");
  write_truncated(whole, head, 100);
  CHECK_THAT(load_failure(head),
             Catch::StartsWith("cannot load plugin '" + head +
                               "': not a shared library (truncated: the file has 100 bytes, its program headers need ") &&
                 Catch::EndsWith(todo));
  check_process_goes_on("truncated");
}

// ---- an ELF file for another machine, or of another kind ---------------------------

TEST_CASE("plugin: a plugin built for another machine, and an ELF file that is no library, are refused saying so") {
  static_assert(sizeof(void*) == 8, "the expected messages below are a 64-bit process's");
  TempDir dir("opforge_plugin_test");
  const std::string whole = canonical_fixture("healthy_elf.so");
  const std::string todo = "; rebuild the plugin on this machine (or with a compiler for it)";
  // e_machine: AArch64 on x86-64, x86-64 elsewhere. (The dynamic loader's own
  // words for this are "cannot open shared object file: No such file or directory".)
#if defined(__x86_64__)
  const std::uint16_t other = EM_AARCH64;
  const std::string machines = "the file is for AArch64 (arm64), this process runs on x86-64";
#else
  const std::uint16_t other = EM_X86_64;
  const std::string machines = "the file is for x86-64, this process runs on ";
#endif
  const std::string arm = dir.file("other_machine.so");
  write_patched(whole, arm, offsetof(Elf64_Ehdr, e_machine), &other, sizeof other);
  CHECK_THAT(load_failure(arm), Catch::StartsWith("cannot load plugin '" + arm + "': built for another machine (" +
                                                  machines) && Catch::EndsWith(")" + todo));
  const unsigned char class32 = ELFCLASS32;
  const std::string c32 = dir.file("class32.so");
  write_patched(whole, c32, EI_CLASS, &class32, 1);
  CHECK(load_failure(c32) == "cannot load plugin '" + c32 +
                                 "': built for another machine (the file is 32-bit ELF, this process is 64-bit)" + todo);
  for (const auto& [type, what] : std::vector<std::pair<std::uint16_t, std::string>>{
           {ET_EXEC, "an executable program"}, {ET_REL, "an object file (.o), not linked"}, {ET_CORE, "a core dump"}}) {
    const std::string f = dir.file("type" + std::to_string(type) + ".so");
    write_patched(whole, f, offsetof(Elf64_Ehdr, e_type), &type, sizeof type);
    CHECK(load_failure(f) == "cannot load plugin '" + f + "': not a shared library (it is " + what +
                                 "); pass a plugin built with opforge_add_plugin");
  }
  check_process_goes_on("elf");
}

// ---- registration code that calls back into opforge --------------------------------

TEST_CASE("child: registration code calls back into opforge", "[.]") {
  for (const char* name : {"reentrant_loaded", "reentrant_blob", "reentrant_make_op", "reentrant_hook"}) {
    INFO("plugin " << name);
    const opforge::PluginInfo info = opforge::load_plugin(fixture(std::string(name) + ".so"));
    CHECK(info.name == name);
    CHECK(opforge::op(std::string(name) + ".twice")({Tensor::from_values({2})}).item() == 4.0);
  }
  // The blob it keeps in a static variable is its own code's: it holds the plugin.
  const opforge::UnloadResult r = opforge::unload_plugin("reentrant_blob");
  CHECK_FALSE(r.unloaded_now);
  CHECK(r.users_left == 0);
  CHECK(r.other_holders == 1);
}

TEST_CASE("plugin: registration code may call loaded_plugins, from_blob, make_op and register_hook") {
  check_child_passes("child: registration code calls back into opforge");
}

TEST_CASE("plugin: a plugin on OPFORGE_PLUGIN_PATH may resolve a standard op in its registration") {
  const RunResult r = run_command(opforge_ops_with_plugin_path(canonical_fixture("reentrant_op.so")));
  INFO("output of `opforge ops`:\n" << r.output);
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Catch::Contains("reentrant_op.twice"));
  CHECK_THAT(r.output, !Catch::Contains("failed to load"));
}
