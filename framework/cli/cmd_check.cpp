// `opforge check PLUGIN.so [--op NAME] [--skip CHECK,...] [--gradcheck-skip INPUT,...] [--json]`: the test harness
// (opforge::sdk::check_op) over every op of one plugin, one line per op and check.
//
// Exit status: 0 when every check passed (or was skipped), 1 when any failed or
// the plugin registers no op (nothing checked is not a pass), 2 when the plugin
// cannot be loaded or the arguments are wrong.
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include <boost/program_options.hpp>
#include <opforge/opforge.hpp>
#include <opforge/sdk/harness.hpp>

#include "commands.hpp"
#include "json.hpp"

namespace po = boost::program_options;

namespace opforge_cli {
namespace {

constexpr int kFailed = 1;
constexpr int kUsageOrLoadError = 2;

// The plugin at `path`: the loaded one when that file is loaded already (a
// standard plugin, or one on OPFORGE_PLUGIN_PATH), else loaded now. A plugin of
// the same name loaded from another file (an installed copy of the plugin being
// developed) is replaced: the file named on the command line is the one checked.
// A plugin named like a standard one is refused instead, unless it provides all
// of that one's ops (a build of the standard plugin itself): it could never load
// beside the standard plugin (load_plugin refuses a second plugin of one name),
// and checking it in the standard one's place would pass a plugin no program can
// load, or fail the checks of ops that call the standard one's.
opforge::PluginInfo find_or_load(const std::string& path) {
  std::error_code ec;
  const std::filesystem::path canonical = std::filesystem::canonical(path, ec);
  const std::vector<opforge::PluginInfo> before = opforge::loaded_plugins();  // loads the standard plugins first
  if (!ec) {
    for (const opforge::PluginInfo& p : before)
      if (p.file == canonical.string()) return p;
  }
  opforge::LoadOptions options;
  options.replace_same_name = true;
  opforge::PluginInfo plugin = opforge::load_plugin(path, options);
  const std::filesystem::path standard_dir = opforge::plugin_search_path().front();
  for (const opforge::PluginInfo& p : before) {
    if (p.name != plugin.name) continue;
    // A build of the standard plugin itself (a copy, a developer's build) provides
    // every op the standard one does: checked in its place, as any other plugin.
    const bool provides_all =
        std::all_of(p.ops.begin(), p.ops.end(), [&](const std::string& op) {
          return std::find(plugin.ops.begin(), plugin.ops.end(), op) != plugin.ops.end();
        });
    if (std::filesystem::path(p.file).parent_path() == standard_dir && !provides_all)
      throw std::runtime_error("plugin '" + plugin.name + "' (" + plugin.file +
                               ") has the name of the standard plugin " + p.file +
                               ", so no program can load it (a second plugin of one name is refused); rename it: "
                               "OPFORGE_PLUGIN(\"another_name\", ...), with ops named \"another_name.op\"");
    std::cerr << "opforge check: plugin '" << plugin.name << "' was also loaded from " << p.file << "; checking "
              << plugin.file << " in its place\n";
  }
  return plugin;
}

// A note on stderr for each op not named "<plugin>.<op>": the convention the
// docs and `opforge ops` rely on, so most likely a typo in the op's name.
void note_op_families(const opforge::PluginInfo& plugin) {
  const std::string family = plugin.name + ".";
  for (const std::string& op : plugin.ops)
    if (op.compare(0, family.size(), family) != 0)
      std::cerr << "opforge check: note: op '" << op << "' of plugin '" << plugin.name << "' is not named '"
                << family << "<op>', as ops are by convention (a typo in its name or in the plugin's?)\n";
}

// The op of `plugin` called `name` ("loss.lstsq", or just "lstsq"); "" if none.
std::string find_op(const opforge::PluginInfo& plugin, const std::string& name) {
  for (const std::string& op : plugin.ops)
    if (op == name) return op;
  for (const std::string& op : plugin.ops)
    if (op.size() > name.size() && op.compare(op.size() - name.size(), name.size(), name) == 0 &&
        op[op.size() - name.size() - 1] == '.')
      return op;
  return {};
}

// What runs now, for a crash report: "opforge check: <op> <check> crashed the
// process (signal N) ..." written by the signal handler, which may only call
// async-signal-safe functions (write, raise): the text is made before each check.
char g_crash_note[2048] = "";
std::atomic<std::size_t> g_crash_note_len{0};
std::atomic<bool> g_crashing{false};
std::string g_plugin_path;

void set_crash_note(const std::string& op, const std::string& check) {
  const std::string note = "\nopforge check: the op " + op + " crashed the process during the check '" + check +
                           "' (the lines above are the checks that finished). To look into it, run `opforge check " +
                           g_plugin_path + " --op " + op + "` under a debugger or a sanitizer; `--skip " + check +
                           "` lets the other checks run\n";
  g_crash_note_len.store(0);
  const std::size_t n = std::min(note.size(), sizeof g_crash_note);
  std::memcpy(g_crash_note, note.data(), n);
  g_crash_note_len.store(n);
}

// Not SA_RESETHAND: a second thread faulting at the same moment would then die
// of the default action before the first had written the note. The first one in
// writes it and dies of the signal; any other waits for that.
extern "C" void on_crash(int sig) {
  if (g_crashing.exchange(true)) {
    for (;;) ::pause();
  }
  const std::size_t n = g_crash_note_len.load();
  if (n > 0) {
    ssize_t ignored = ::write(STDERR_FILENO, g_crash_note, n);
    (void)ignored;
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);  // the status still says which signal
}

void install_crash_report() {
  // On a stack of its own: a stack overflow (runaway recursion) leaves none to run on.
  static std::vector<char> alt_stack(std::max<std::size_t>(SIGSTKSZ, 64 * 1024));
  stack_t ss{};
  ss.ss_sp = alt_stack.data();
  ss.ss_size = alt_stack.size();
  sigaltstack(&ss, nullptr);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) {
    struct sigaction sa {};
    sa.sa_handler = on_crash;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_ONSTACK;
    sigaction(sig, &sa, nullptr);
  }
}

// "gradcheck, backward_contract, ...": from the harness itself, so no list here can miss a check.
std::string joined_check_names() {
  std::string joined;
  for (const std::string& c : opforge::sdk::check_names()) joined += (joined.empty() ? "" : ", ") + c;
  return joined;
}

// "a,b" -> {"a", "b"}; every name must be a check of the harness.
std::vector<std::string> parse_skip(const std::string& list, std::string& error) {
  // Every comma-separated item, empty ones too (`--skip ""`, `--skip a,`): an empty
  // item is refused like an unknown name, where it used to skip nothing, silently.
  std::vector<std::string> names;
  const auto& all = opforge::sdk::check_names();
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = list.find(',', start);
    const std::string name = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (std::find(all.begin(), all.end(), name) == all.end()) {
      error = "option '--skip': '" + name + "' is no check (the checks: " + joined_check_names() + ")";
      return {};
    }
    names.push_back(name);
    if (comma == std::string::npos) return names;
    start = comma + 1;
  }
}

// "s,t" -> {"s", "t"}: input names for gradcheck to leave out; no item may be empty.
std::vector<std::string> parse_input_names(const std::string& list, std::string& error) {
  std::vector<std::string> names;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = list.find(',', start);
    const std::string name = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (name.empty()) {
      error = "option '--gradcheck-skip': expected input names separated by commas, got '" + list +
              "' (an empty item)";
      return {};
    }
    names.push_back(name);
    if (comma == std::string::npos) return names;
    start = comma + 1;
  }
}

}  // namespace

int run_check(const std::vector<std::string>& args) {
  po::options_description desc(
      "opforge check PLUGIN.so [--op NAME] [--skip CHECK,...] [--gradcheck-skip INPUT,...] [--json]");
  desc.add_options()("help,h", "this help")("op", po::value<std::string>(), "check only this op of the plugin")(
      "json", "one JSON object per line: op, check, passed, skipped, detail (the summary goes to stderr)")(
      "skip", po::value<std::string>(), "checks not to run, comma-separated (each reported SKIP)")(
      "gradcheck-skip", po::value<std::string>(),
      "inputs gradcheck leaves out, by name, comma-separated (each op that has an input of that name; e.g. the "
      "input of a straight-through estimator)")(
      "plugin", po::value<std::string>(), "the plugin file (.so) to load and check");
  po::positional_options_description pos;
  pos.add("plugin", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(desc).positional(pos).style(kCommandLineStyle).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "opforge check: " << e.what() << "\n" << desc << "\n";
    return kUsageOrLoadError;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n"
              << "Checks: " << joined_check_names() << "\n        (docs/harness.md says what each does).\n"
              << "Exit status: 0 all passed, 1 a check failed (or the plugin registers no op), 2 the plugin\n"
                 "did not load, --op names no op of it, or bad arguments.\n";
    return 0;
  }
  if (!vm.count("plugin")) {
    std::cerr << "opforge check: expected a plugin file, e.g. `opforge check build/myops.so`\n" << desc << "\n";
    return kUsageOrLoadError;
  }
  const std::string path = vm["plugin"].as<std::string>();
  const bool json = vm.count("json") > 0;
  opforge::sdk::CheckOptions options;
  if (vm.count("skip")) {
    std::string error;
    options.skip = parse_skip(vm["skip"].as<std::string>(), error);
    if (!error.empty()) {
      std::cerr << "opforge check: " << error << "\n";
      return kUsageOrLoadError;
    }
  }
  std::vector<std::string> gradcheck_skip;
  if (vm.count("gradcheck-skip")) {
    std::string error;
    gradcheck_skip = parse_input_names(vm["gradcheck-skip"].as<std::string>(), error);
    if (!error.empty()) {
      std::cerr << "opforge check: " << error << "\n";
      return kUsageOrLoadError;
    }
  }
  g_plugin_path = path;
  options.on_check = set_crash_note;
  install_crash_report();

  opforge::PluginInfo plugin;
  try {
    plugin = find_or_load(path);
    note_op_families(plugin);
  } catch (const std::exception& e) {
    std::cerr << "opforge check: " << e.what() << "\n";
    return kUsageOrLoadError;
  }

  std::vector<std::string> ops = plugin.ops;
  if (ops.empty()) {
    // Nothing to check is not a pass: the plugin's registration added nothing.
    (json ? std::cerr : std::cout) << "FAILED: plugin '" << plugin.name << "' (" << plugin.file
                                   << "): 0 ops: it registers none, so nothing was checked; add its ops in its "
                                      "OPFORGE_PLUGIN body (registrar.add<F>(opforge::OpSchema(\"family.name\")...))\n";
    return kFailed;
  }
  if (vm.count("op")) {
    const std::string wanted = vm["op"].as<std::string>();
    const std::string found = find_op(plugin, wanted);
    if (found.empty()) {
      std::string names;
      for (const auto& n : plugin.ops) names += (names.empty() ? "" : ", ") + n;
      std::cerr << "opforge check: plugin '" << plugin.name << "' (" << plugin.file << ") has no op named '"
                << wanted << "'; its ops: " << (names.empty() ? "none" : names) << "\n";
      return kUsageOrLoadError;
    }
    ops = {found};
  }

  // Each --gradcheck-skip name must be an input of some op checked.
  for (const std::string& input : gradcheck_skip) {
    bool found = false;
    std::string inputs;
    for (const std::string& name : ops) {
      const auto& names = opforge::op(name).schema().inputs;
      found = found || std::find(names.begin(), names.end(), input) != names.end();
      for (const std::string& n : names)
        if (inputs.find("'" + n + "'") == std::string::npos) inputs += (inputs.empty() ? "'" : ", '") + n + "'";
    }
    if (!found) {
      std::cerr << "opforge check: option '--gradcheck-skip': no op checked has an input named '" << input
                << "' (their inputs: " << (inputs.empty() ? "none" : inputs) << ")\n";
      return kUsageOrLoadError;
    }
  }

  int passed = 0, failed = 0, skipped = 0;
  std::vector<std::string> failed_ops;
  // Each line as soon as its check has run (flushed: if a later check crashes
  // the process, the lines before it are out).
  auto print = [json](const opforge::sdk::CheckResult& r) {
    if (json) {
      Json o = Json::object();
      o.set("op", r.op).set("check", r.check).set("passed", r.passed).set("skipped", r.skipped).set("detail", r.detail);
      std::cout << o.dump() << std::endl;
    } else {
      std::cout << opforge::sdk::format_result(r) << std::endl;
    }
  };
  std::vector<bool> printed_passed;  // each check's line as it went out
  options.on_result = [&](const opforge::sdk::CheckResult& r) {
    print(r);
    printed_passed.push_back(r.passed);
  };
  for (const std::string& name : ops) {
    printed_passed.clear();
    const opforge::OpHandle handle = opforge::op(name);
    options.gradcheck.skip_inputs.clear();
    for (const std::string& input : gradcheck_skip) {
      const auto& names = handle.schema().inputs;
      if (std::find(names.begin(), names.end(), input) != names.end()) options.gradcheck.skip_inputs.push_back(input);
    }
    const opforge::sdk::CheckReport report = opforge::sdk::check_op(handle, options);
    bool op_failed = false;
    for (std::size_t i = 0; i < report.size(); ++i) {
      const opforge::sdk::CheckResult& r = report[i];
      if (r.skipped) {
        ++skipped;
      } else if (r.passed) {
        ++passed;
      } else {
        ++failed;
        op_failed = true;
      }
      // A later check can fail deterministic after its line went out: say it again.
      if (i < printed_passed.size() && printed_passed[i] != r.passed) print(r);
    }
    if (op_failed) failed_ops.push_back(name);
  }

  std::ostream& summary = json ? std::cerr : std::cout;
  summary << (failed ? "FAILED" : "OK") << ": plugin '" << plugin.name << "' (" << plugin.file << "): " << ops.size()
          << " op" << (ops.size() == 1 ? "" : "s") << ", " << passed << " passed, " << failed << " failed, " << skipped
          << " skipped";
  if (!failed_ops.empty()) {
    summary << "; failing ops:";
    for (const auto& n : failed_ops) summary << " " << n;
  }
  summary << "\n";
  return failed ? kFailed : 0;
}

}  // namespace opforge_cli
