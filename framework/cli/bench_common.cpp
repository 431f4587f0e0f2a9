// Argument parsing and timing summaries shared by the `opforge bench` commands.
#include <algorithm>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include <opforge/blas.hpp>

#include "bench_options.hpp"
#include "commands.hpp"

namespace opforge_cli {

std::vector<long> parse_int_list(const std::string& option, const std::string& text) {
  std::vector<long> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    std::size_t used = 0;
    long v = 0;
    try {
      v = std::stol(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || item.empty() || v <= 0)
      throw UsageError("--" + option + ": expected a comma-separated list of positive integers, got '" +
                                  text + "'");
    out.push_back(v);
  }
  if (out.empty()) throw UsageError("--" + option + ": expected at least one value");
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
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return false;
  }
  return true;
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
