// Option parsing shared by the `opforge bench` commands (Boost.Program_options;
// included by those commands only).
#pragma once

#include <string>
#include <vector>

#include <boost/program_options.hpp>

namespace opforge_cli {

/// Parses `args` against `desc` into `vm`. With --help, prints `desc` and
/// returns false (the command then exits with status 0). Bad options throw
/// with po's message (main() reports them as usage errors).
bool parse_bench_options(const boost::program_options::options_description& desc,
                         const std::vector<std::string>& args, boost::program_options::variables_map& vm);

}  // namespace opforge_cli
