// `opforge ops`: what is loaded, what each op takes, and what failed to load.
#include <iomanip>
#include <iostream>

#include <boost/program_options.hpp>
#include <opforge/opforge.hpp>

#include "commands.hpp"
#include "json.hpp"

namespace po = boost::program_options;

namespace opforge_cli {
namespace {

std::string input_list(const opforge::OpSchema& s) {
  std::string out;
  for (std::size_t i = 0; i < s.inputs.size(); ++i) out += (i ? ", " : "") + s.inputs[i];
  return out;
}

void print_one(const opforge::OpHandle& op) {
  const opforge::OpSchema& s = op.schema();
  std::cout << s.name << "(" << input_list(s) << ") -> " << s.num_outputs << " output" << (s.num_outputs == 1 ? "" : "s")
            << "\n  " << (s.doc.empty() ? "(no documentation)" : s.doc) << "\n  dtypes: " << s.dtypes.to_string()
            << (s.same_dtype ? " (all inputs of one dtype)" : "") << "\n";
  if (s.variadic)
    std::cout << "  the last input may repeat (" << s.inputs.size() << " to " << opforge::kMaxOpInputs
              << " inputs in all)\n";
  for (const opforge::AttrSpec& a : s.attrs) {
    std::cout << "  attribute " << a.name << ": " << opforge::attr_kind_name(a.kind)
              << (a.default_value.is_set() ? " = " + a.default_value.to_string() : std::string(" (required)"))
              << (a.doc.empty() ? "" : "  " + a.doc) << "\n";
  }
  std::cout << "  plugin: " << op.plugin_name() << " (" << op.plugin_file() << ")\n";
}

// One op's object in `opforge ops --json` (and all of `opforge ops NAME --json`).
Json op_json(const opforge::OpHandle& op) {
  const auto& s = op.schema();
  Json o = Json::object();
  Json inputs = Json::array();
  for (const auto& n : s.inputs) inputs.push(n);
  Json dtypes = Json::array();
  for (int t = 0; t < opforge::kNumDTypes; ++t)
    if (s.dtypes.contains(static_cast<opforge::DType>(t))) dtypes.push(opforge::dtype_name(static_cast<opforge::DType>(t)));
  o.set("name", s.name).set("inputs", inputs).set("num_outputs", s.num_outputs).set("dtypes", dtypes);
  Json attrs = Json::array();
  for (const opforge::AttrSpec& a : s.attrs) {
    Json ja = Json::object();
    ja.set("name", a.name).set("kind", opforge::attr_kind_name(a.kind));
    ja.set("default", a.default_value.is_set() ? a.default_value.to_string() : std::string());
    ja.set("required", !a.default_value.is_set()).set("doc", a.doc);
    attrs.push(ja);
  }
  o.set("attributes", attrs).set("variadic", s.variadic);
  o.set("doc", s.doc).set("plugin", op.plugin_name());
  return o;
}

}  // namespace

int run_ops(const std::vector<std::string>& args) {
  po::options_description desc("opforge ops [--json] [NAME]");
  desc.add_options()("help,h", "this help")("json", "print one JSON document")(
      "name", po::value<std::string>(), "show one op's documentation (with --json: its JSON object)");
  po::positional_options_description pos;
  pos.add("name", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).positional(pos).style(kCommandLineStyle).run(), vm);
  po::notify(vm);
  // `opforge ops help` as `opforge help` and `opforge bench help` (no op is named
  // "help": op names are "<family>.<name>").
  if (vm.count("help") || (vm.count("name") && vm["name"].as<std::string>() == "help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (vm.count("name")) {
    // A plugin that did not load may be the one the caller is asking about (a
    // fresh build refused while an installed copy answers for it): say so on
    // stderr, which leaves stdout (and --json) as it is.
    for (const auto& f : opforge::plugin_load_failures())
      std::cerr << "opforge ops: note: a plugin did not load (`opforge ops` lists every failure): " << f.reason
                << "\n";
    const opforge::OpHandle op = opforge::op(vm["name"].as<std::string>());
    if (vm.count("json")) std::cout << op_json(op).dump() << "\n";
    else print_one(op);
    return 0;
  }

  const auto plugins = opforge::loaded_plugins();
  const auto failures = opforge::plugin_load_failures();
  const auto ops = opforge::registered_ops();
  if (vm.count("json")) {
    Json out = Json::object();
    Json jp = Json::array();
    for (const auto& p : plugins) {
      Json o = Json::object();
      o.set("name", p.name).set("version", p.version).set("file", p.file).set("sdk_version", p.sdk_version);
      Json names = Json::array();
      for (const auto& n : p.ops) names.push(n);
      o.set("ops", names);
      jp.push(o);
    }
    Json jo = Json::array();
    for (const auto& op : ops) jo.push(op_json(op));
    Json jf = Json::array();
    for (const auto& f : failures) {
      Json o = Json::object();
      o.set("file", f.file).set("reason", f.reason);
      jf.push(o);
    }
    Json js = Json::array();
    for (const auto& d : opforge::plugin_search_path()) js.push(d);
    out.set("plugins", jp).set("ops", jo).set("failed", jf).set("search_path", js);
    std::cout << out.dump() << "\n";
    return 0;
  }

  for (const auto& p : plugins) {
    std::cout << "plugin " << p.name << " " << p.version << "  (" << p.file << ")\n";
    for (const auto& op : ops) {
      if (op.plugin_file() != p.file) continue;
      const auto& s = op.schema();
      std::cout << "  " << std::left << std::setw(22) << s.name << " inputs " << s.inputs.size() << " ("
                << input_list(s) << ")  dtypes " << s.dtypes.to_string() << "\n";
    }
  }
  if (plugins.empty()) std::cout << "no plugins loaded\n";
  if (!failures.empty()) {
    std::cout << "\nfailed to load:\n";
    for (const auto& f : failures) std::cout << "  " << f.file << "\n    " << f.reason << "\n";
  }
  std::cout << "\nsearch path:";
  for (const auto& d : opforge::plugin_search_path()) std::cout << " " << d;
  std::cout << "\n";
  return 0;
}

}  // namespace opforge_cli
