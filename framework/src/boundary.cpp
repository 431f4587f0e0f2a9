#include "boundary.hpp"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>
#include <typeinfo>

namespace opforge {
std::string demangle(const char* name) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> s(abi::__cxa_demangle(name, nullptr, nullptr, &status), std::free);
  return status == 0 && s ? std::string(s.get()) : std::string(name);
}

std::string plugin_origin(const OpEntry& op) {
  if (op.plugin_file.empty()) return "";
  return " (plugin '" + op.plugin_name + "', " + op.plugin_file + ")";
}

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

}  // namespace

void rethrow_as_core_error(const OpEntry& op, Phase phase) {
  const std::string& name = op.schema.name;
  // In forward, an error that already names the op passes as it is; otherwise
  // the op's name is put in front. In backward, the message always says which
  // forward op made the node being differentiated.
  auto decorate = [&](const std::string& msg) {
    if (phase == Phase::Backward) {
      const std::string own = name + ": ";
      return "in backward of '" + name + "': " + (starts_with(msg, own) ? msg.substr(own.size()) : msg);
    }
    return starts_with(msg, name + ":") ? msg : name + ": " + msg;
  };
  try {
    throw;
  } catch (const Error& e) {
    // Re-created as a core object: a subclass defined in a plugin must not escape it.
    throw_error(e.kind(), decorate(e.what()));
  } catch (const std::exception& e) {
    throw Error(decorate(demangle(typeid(e).name()) + ": " + e.what()));
  } catch (...) {
    throw PluginError(decorate("threw an exception of a type opforge does not know (not derived from std::exception)" +
                               plugin_origin(op) + "; op code must throw opforge::Error or a std::exception"));
  }
}

void rethrow_as_hook_error() {
  const std::string what = "a gradient hook registered by plugin code threw";
  try {
    throw;
  } catch (const Error& e) {
    throw_error(e.kind(), what + ": " + e.what());
  } catch (const std::exception& e) {
    throw Error(what + " " + demangle(typeid(e).name()) + ": " + e.what());
  } catch (...) {
    throw PluginError(what + " an exception of a type opforge does not know (not derived from std::exception); "
                             "hook code must throw opforge::Error or a std::exception");
  }
}

}  // namespace opforge
