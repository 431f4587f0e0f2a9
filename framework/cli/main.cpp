// The opforge program: `opforge ops` and `opforge bench ...`.
#include <iostream>
#include <string>
#include <vector>

#include <opforge/opforge.hpp>
#include <opforge/plugin_abi.h>

#include "commands.hpp"

namespace opforge_cli {
int run_check(const std::vector<std::string>& args);  // cmd_check.cpp
}  // namespace opforge_cli

namespace {

void usage(std::ostream& os) {
  os << "opforge " OPFORGE_VERSION_STRING " - an autograd framework whose every operator is a plugin\n\n"
        "Usage:\n"
        "  opforge ops [--json] [NAME]       list loaded plugins, their ops, and files that failed to load\n"
        "  opforge check PLUGIN.so [--op NAME] [--json]\n"
        "                                    run the op test harness on a plugin's ops (exit 1 if a check fails)\n"
        "  opforge bench lstsq [options]     time the least-squares gradient: fused, graph, explicit,\n"
        "                                    and one read of A (bandwidth)\n"
        "  opforge bench overhead [options]  time what the framework adds to one op call\n"
        "  opforge bench ops [options]       time svd, sqrt and exp through their plugins\n"
        "  opforge --help | --version\n\n"
        "Run `opforge <command> --help` for a command's options.\n"
        "Environment: OPFORGE_PLUGIN_PATH (more plugin directories or files, ':'-separated),\n"
        "             OPFORGE_NUM_THREADS (threads for kernels and BLAS; default: all cores).\n";
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    usage(std::cout);
    return args.empty() ? 1 : 0;
  }
  if (args[0] == "--version") {
    std::cout << "opforge " OPFORGE_VERSION_STRING " (plugin ABI " << OPFORGE_PLUGIN_ABI_MAJOR << "."
              << OPFORGE_PLUGIN_ABI_MINOR << ", " OPFORGE_COMPILER_ID ")\n";
    return 0;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  try {
    if (args[0] == "ops") return opforge_cli::run_ops(rest);
    if (args[0] == "check") return opforge_cli::run_check(rest);
    if (args[0] == "bench") {
      if (!rest.empty() && rest[0] == "lstsq") return opforge_cli::run_bench_lstsq({rest.begin() + 1, rest.end()});
      if (!rest.empty() && rest[0] == "overhead")
        return opforge_cli::run_bench_overhead({rest.begin() + 1, rest.end()});
      if (!rest.empty() && rest[0] == "ops") return opforge_cli::run_bench_ops({rest.begin() + 1, rest.end()});
      std::cerr << "opforge bench: expected a benchmark name: lstsq, overhead or ops\n";
      return 2;
    }
  } catch (const std::exception& e) {
    std::cerr << "opforge: " << e.what() << "\n";
    return 1;
  }
  std::cerr << "opforge: unknown command '" << args[0] << "'\n\n";
  usage(std::cerr);
  return 2;
}
