// Argument parsing and timing summaries shared by the `opforge bench` commands.
#include <algorithm>
#include <iostream>
#include <stdexcept>

#include <opforge/blas.hpp>
#include <opforge/threads.hpp>

#include "bench_options.hpp"
#include "commands.hpp"

namespace opforge_cli {

std::vector<std::string> split_list(const std::string& option, const std::string& text, const std::string& expected) {
  const std::string prefix = "--" + option + ": expected " + expected;
  if (text.empty()) throw UsageError(prefix + ", got an empty value");
  if (text.find_first_of(" \t\n\r\f\v") != std::string::npos)
    throw UsageError(prefix + " (no spaces), got '" + text + "'");
  std::vector<std::string> items;
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = text.find(',', start);
    items.push_back(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (items.back().empty()) throw UsageError(prefix + ", got an empty item in '" + text + "'");
    if (comma == std::string::npos) return items;
    start = comma + 1;
  }
}

std::vector<long> parse_int_list(const std::string& option, const std::string& text, long max,
                                 const std::string& max_reason) {
  const std::string expected = "a comma-separated list of positive integers";
  std::vector<long> out;
  for (const std::string& item : split_list(option, text, expected)) {
    const std::string got = "got '" + item + "'" + (item == text ? "" : " in '" + text + "'");
    if (item.find_first_not_of("0123456789") != std::string::npos)
      throw UsageError("--" + option + ": expected " + expected + ", " + got);
    bool too_big = true;  // digits only: out of range for stoul is above max too
    try {
      too_big = std::stoul(item) > static_cast<unsigned long>(max);
    } catch (const std::out_of_range&) {
    }
    if (too_big)
      throw UsageError("--" + option + ": expected " + expected + " up to " + std::to_string(max) +
                       (max_reason.empty() ? "" : " (" + max_reason + ")") + ", " + got);
    const long v = std::stol(item);
    if (v <= 0) throw UsageError("--" + option + ": expected " + expected + ", " + got);
    out.push_back(v);
  }
  return out;
}

long parse_int_option(const std::string& option, const std::string& text, long min, long max) {
  std::size_t used = 0;
  long v = 0;
  try {
    v = std::stol(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const bool digits = !text.empty() && text.find_first_not_of("-0123456789") == std::string::npos;
  if (!digits || used != text.size() || v < min || v > max)
    throw UsageError("--" + option + ": expected an integer from " + std::to_string(min) + " to " +
                     std::to_string(max) + ", got '" + text + "'");
  return v;
}

std::vector<opforge::DType> parse_dtypes(const std::string& text) {
  if (text == "both") return {opforge::DType::Float64, opforge::DType::Float32};
  if (text == "float64") return {opforge::DType::Float64};
  if (text == "float32") return {opforge::DType::Float32};
  throw UsageError("--dtype: expected float64, float32 or both, got '" + text + "'");
}

bool parse_bench_options(const boost::program_options::options_description& desc,
                         const std::vector<std::string>& args, boost::program_options::variables_map& vm) {
  namespace po = boost::program_options;
  const po::parsed_options parsed = po::command_line_parser(args).options(desc).style(kCommandLineStyle).run();
  // The benchmarks take no positional arguments, and po would drop them silently:
  // "--sizes 40, 60" ran d = 40 only.
  const std::vector<po::option>& opts = parsed.options;
  for (std::size_t i = 0; i < opts.size(); ++i) {
    if (opts[i].position_key < 0) continue;
    const std::string token = opts[i].value.empty() ? std::string() : opts[i].value.front();
    std::string message = "unexpected argument '" + token + "'";
    // After "--sizes 40," the user meant one list: say how to write it.
    if (i > 0 && opts[i - 1].position_key < 0 && opts[i - 1].value.size() == 1 &&
        !opts[i - 1].value.front().empty() && opts[i - 1].value.front().back() == ',') {
      std::string list = opts[i - 1].value.front();
      for (std::size_t j = i; j < opts.size() && opts[j].position_key >= 0 && !list.empty() && list.back() == ',';
           ++j)
        list += opts[j].value.empty() ? std::string() : opts[j].value.front();
      message += " (list values take no spaces: --" + opts[i - 1].string_key + " " + list + ")";
    }
    throw UsageError(message);
  }
  po::store(parsed, vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return false;
  }
  return true;
}

long default_threads() {
  // The core reads OPFORGE_NUM_THREADS when it loads (an invalid value is
  // reported there, and means all cores); num_threads() is what it applied.
  // Should it ever be < 1, run, and report, all cores.
  const int n = opforge::num_threads();
  return n > 0 ? n : opforge::hardware_threads();
}

Timing summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  const std::size_t k = ms.size();
  return {k % 2 ? ms[k / 2] : 0.5 * (ms[k / 2 - 1] + ms[k / 2]), ms.front()};
}

void print_blas_kernels(const std::string& bench) {
  std::cerr << bench << ": BLAS: OpenBLAS, " << opforge::blas_core() << " kernels";
  const std::string note = opforge::blas_core_note();
  if (!note.empty()) std::cerr << " (" << note << ")";
  std::cerr << std::endl;
}

}  // namespace opforge_cli
