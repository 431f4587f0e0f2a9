// A fresh empty folder under the system's temporary folder, removed (with what
// the test put in it) when the object goes out of scope. Shared by the tests
// that install plugin files or point the plugin path somewhere of their own.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace opforge_tests {

class TempDir {
 public:
  /// `prefix` names the folder (plus the process id and a counter), so a
  /// leftover from a crashed run says which test made it.
  explicit TempDir(const std::string& prefix = "opforge_test") {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            (prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
    path_ = std::filesystem::canonical(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  /// The full path of `name` inside the folder.
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace opforge_tests
