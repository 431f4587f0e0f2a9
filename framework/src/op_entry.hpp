// OpEntry: a registered op. Internal to the core.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include <boost/smart_ptr/intrusive_ptr.hpp>

#include "opforge/op.hpp"

namespace opforge {

struct OpEntry {
  // Declared first so it is destroyed last: the Function's destructor is plugin
  // code and must run while the library is mapped.
  std::shared_ptr<void> library;
  // What keeps the plugin of schema.sample_inputs loaded when it is not the op's
  // own: the registered op whose schema this one was copied from, or (make_op
  // only) the plugin that holds the function.
  boost::intrusive_ptr<OpEntry> samples_from;
  std::shared_ptr<void> samples_library;
  std::unique_ptr<Function> fn;
  OpSchema schema;
  std::string plugin_name;
  std::string plugin_file;
  std::atomic<std::uint32_t> refcount{0};

  ~OpEntry() { fn.reset(); }  // before `library`, whatever the member order
};

}  // namespace opforge
