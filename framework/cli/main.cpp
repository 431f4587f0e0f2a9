// The opforge program: `opforge ops`, `opforge check` and `opforge bench ...`.
//
// Exit status: 0 on success, 1 when the command failed at run time (an op that
// does not exist, a check that failed, an error while running), 2 on a usage
// error (an unknown command or option, a missing or bad value) and, for
// `opforge check`, a plugin that did not load.
#include <iostream>
#include <string>
#include <vector>

#include <boost/program_options/errors.hpp>
#include <opforge/opforge.hpp>
#include <opforge/plugin_abi.h>

#include "commands.hpp"

namespace opforge_cli {
int run_check(const std::vector<std::string>& args);  // cmd_check.cpp
}  // namespace opforge_cli

namespace {

constexpr int kRunTimeError = 1;
constexpr int kUsageError = 2;

void usage(std::ostream& os) {
  os << "opforge " OPFORGE_VERSION_STRING " - an autograd framework whose every operator is a plugin\n\n"
        "Usage:\n"
        "  opforge ops [--json] [NAME]       list loaded plugins, their ops, and files that failed to load\n"
        "  opforge check PLUGIN.so [--op NAME] [--skip CHECK,...] [--gradcheck-skip INPUT,...] [--json]\n"
        "                                    run the op test harness on a plugin's ops (exit 1 if a check fails)\n"
        "  opforge bench lstsq [options]     time the least-squares gradient: fused, graph, explicit,\n"
        "                                    and one read of A (bandwidth)\n"
        "  opforge bench overhead [options]  time what the framework adds to one op call\n"
        "  opforge bench ops [options]       time svd, sqrt and exp through their plugins\n"
        "  opforge --help | --version\n\n"
        "Run `opforge <command> --help` for a command's options.\n"
        "Exit status: 0 success, 1 failure at run time (an op not found, a check failed, an error while\n"
        "             running), 2 usage error (unknown command or option, missing or bad value; for check,\n"
        "             also a plugin that did not load).\n"
        "Environment: OPFORGE_PLUGIN_PATH (more plugin directories or files, ':'-separated),\n"
        "             OPFORGE_NUM_THREADS (threads for kernels and BLAS, and the default of bench's\n"
        "             --threads; default: all cores).\n";
}

void bench_usage(std::ostream& os) {
  os << "Usage: opforge bench <benchmark> [options]\n\n"
        "Benchmarks:\n"
        "  lstsq     time the least-squares gradient: fused, graph, explicit, and one read of A (bandwidth)\n"
        "  overhead  time what the framework adds to one op call\n"
        "  ops       time svd, sqrt and exp through their plugins\n\n"
        "Run `opforge bench <benchmark> --help` for its options.\n";
}

bool is_help(const std::string& arg) { return arg == "--help" || arg == "-h" || arg == "help"; }

}  // namespace

namespace {
int run(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::cerr << "opforge: expected a command\n\n";
    usage(std::cerr);
    return kUsageError;
  }
  if (is_help(args[0])) {
    usage(std::cout);
    return 0;
  }
  if (args[0] == "--version" && args.size() > 1) {
    std::cerr << "opforge --version: takes no arguments, got '" << args[1] << "'\n";
    return kUsageError;
  }
  if (args[0] == "--version") {
    std::cout << "opforge " OPFORGE_VERSION_STRING " (plugin ABI " << OPFORGE_PLUGIN_ABI_MAJOR << "."
              << OPFORGE_PLUGIN_ABI_MINOR << ", " OPFORGE_COMPILER_ID ")\n";
    return 0;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  std::string command = args[0];  // as typed, for messages: "ops", "bench lstsq"
  try {
    if (args[0] == "ops") return opforge_cli::run_ops(rest);
    if (args[0] == "check") return opforge_cli::run_check(rest);
    if (args[0] == "bench") {
      if (!rest.empty() && is_help(rest[0])) {
        bench_usage(std::cout);
        return 0;
      }
      const std::vector<std::string> bench_args(rest.empty() ? rest.end() : rest.begin() + 1, rest.end());
      if (!rest.empty()) command += " " + rest[0];
      if (!rest.empty() && rest[0] == "lstsq") return opforge_cli::run_bench_lstsq(bench_args);
      if (!rest.empty() && rest[0] == "overhead") return opforge_cli::run_bench_overhead(bench_args);
      if (!rest.empty() && rest[0] == "ops") return opforge_cli::run_bench_ops(bench_args);
      std::cerr << "opforge bench: expected a benchmark name: lstsq, overhead or ops, got "
                << (rest.empty() ? std::string("none") : "'" + rest[0] + "'") << "\n\n";
      bench_usage(std::cerr);
      return kUsageError;
    }
  } catch (const opforge_cli::UsageError& e) {
    std::cerr << "opforge " << command << ": " << e.what() << "\nsee 'opforge " << command << " --help'\n";
    return kUsageError;
  } catch (const boost::program_options::error& e) {  // unknown option, missing value, bad number
    std::cerr << "opforge " << command << ": " << e.what() << "\nsee 'opforge " << command << " --help'\n";
    return kUsageError;
  } catch (const std::exception& e) {
    std::cerr << "opforge: " << e.what() << "\n";
    return kRunTimeError;
  }
  std::cerr << "opforge: unknown command '" << args[0] << "'\n\n";
  usage(std::cerr);
  return kUsageError;
}
}  // namespace

int main(int argc, char** argv) {
  const int status = run(std::vector<std::string>(argv + 1, argv + argc));
  // Output that never reached its file is a failure, not a success: a full
  // disk, a quota, a device that refuses writes.
  if (!std::cout.flush()) {
    std::cerr << "opforge: could not write the output to standard output (is the disk full?)\n";
    return status == 0 ? kRunTimeError : status;
  }
  return status;
}
