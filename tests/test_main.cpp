// The main of every test program. ctest runs each test case by name (through
// catch_discover_tests), and CMake splits those names at ';': a test case
// whose name holds one was reported as passed while running nothing. Such a
// name is refused here, when the build lists the test cases.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <iostream>

int main(int argc, char* argv[]) {
  Catch::Session session;
  if (const int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  int bad = 0;
  for (const Catch::TestCase& test : Catch::getAllTestCasesSorted(session.config())) {
    if (test.name.find(';') == std::string::npos) continue;
    std::cerr << test.lineInfo.file << ":" << test.lineInfo.line << ": test case name has a ';', which ctest would "
              << "split (and then run nothing under it): \"" << test.name << "\"\n";
    ++bad;
  }
  if (bad != 0) return 2;
  return session.run();
}
