// The subcommands of the opforge program. Each takes the arguments after its
// name and returns the exit status. Errors in arguments are thrown as
// UsageError (or boost::program_options::error), which main() reports with a
// pointer to the command's --help and exit status 2; other exceptions are
// failures at run time (exit status 1).
#pragma once

#include <climits>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/program_options/cmdline.hpp>

#include <opforge/threads.hpp>
#include <opforge/dtype.hpp>

namespace opforge_cli {

/// The command-line style of every subcommand: Boost's default without guessing
/// an option from a prefix, so that "--siz 50" is an unknown option, not
/// "--sizes 50" (a prefix that means one option today may mean two tomorrow).
inline constexpr int kCommandLineStyle = boost::program_options::command_line_style::default_style &
                                         ~boost::program_options::command_line_style::allow_guessing;

/// A bad command line: the message names the option, what it takes and what it got.
struct UsageError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

int run_ops(const std::vector<std::string>& args);
int run_bench_lstsq(const std::vector<std::string>& args);
int run_bench_overhead(const std::vector<std::string>& args);
int run_bench_ops(const std::vector<std::string>& args);

/// Splits "a,b,c" at the commas. No item may be empty ("", "a,", "a,,b") and
/// none may hold whitespace; throws UsageError naming `option`, `expected` (what
/// the option takes, e.g. "a comma-separated list of positive integers") and
/// the text otherwise.
std::vector<std::string> split_list(const std::string& option, const std::string& text, const std::string& expected);

/// Parses "300,1000,2000" into numbers from 1 to `max` (split_list's rules;
/// digits only); throws UsageError naming `option`, the rule and the value.
/// `max_reason`, when not empty, says why `max` is the limit.
std::vector<long> parse_int_list(const std::string& option, const std::string& text, long max = LONG_MAX,
                                 const std::string& max_reason = "");

/// The most threads --threads may ask for: set_num_threads's and OPFORGE_NUM_THREADS's limit.
constexpr long kMaxThreads = opforge::kMaxThreads;

/// One integer in [min, max] ("--repeat 20"); throws UsageError naming `option`
/// with the range and `text` otherwise (not a number, out of range).
long parse_int_option(const std::string& option, const std::string& text, long min, long max);

/// "float64", "float32" or "both" (float64 first); throws naming --dtype otherwise.
std::vector<opforge::DType> parse_dtypes(const std::string& text);

/// The benchmarks' default --threads: the core's setting, OPFORGE_NUM_THREADS
/// when it is set (and valid), else all cores.
long default_threads();

/// Median (the mean of the middle two for an even count) and minimum of timings in ms.
struct Timing {
  double median_ms = 0;
  double min_ms = 0;
};
Timing summarize(std::vector<double> ms);

/// Writes to stderr which kernels OpenBLAS runs, and opforge's note where it
/// selected other ones: "<bench>: BLAS: OpenBLAS, <core> kernels".
void print_blas_kernels(const std::string& bench);

}  // namespace opforge_cli
