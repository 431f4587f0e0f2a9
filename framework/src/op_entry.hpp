// OpEntry: a registered op. Internal to the core.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "opforge/op.hpp"

namespace opforge {

struct OpEntry {
  // Declared first so it is destroyed last: the Function's destructor is plugin
  // code and must run while the library is mapped.
  std::shared_ptr<void> library;
  std::unique_ptr<Function> fn;
  OpSchema schema;
  std::string plugin_name;
  std::string plugin_file;
  std::atomic<std::uint32_t> refcount{0};

  ~OpEntry() { fn.reset(); }  // before `library`, whatever the member order
};

}  // namespace opforge
