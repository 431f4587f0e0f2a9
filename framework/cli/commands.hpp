// The subcommands of the opforge program. Each takes the arguments after its
// name and returns the exit status; errors in arguments are thrown as
// std::exception with a message for the user.
#pragma once

#include <string>
#include <vector>

namespace opforge_cli {

int run_ops(const std::vector<std::string>& args);
int run_bench_lstsq(const std::vector<std::string>& args);
int run_bench_overhead(const std::vector<std::string>& args);

/// Parses "300,1000,2000" into numbers; throws naming `option` on bad input.
std::vector<long> parse_int_list(const std::string& option, const std::string& text);

}  // namespace opforge_cli
