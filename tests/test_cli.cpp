// The opforge program: `ops` (listing, one op, JSON) and `bench lstsq --json`
// (the main job's rows and their accuracy), run as a child process.
#include <catch2/catch.hpp>

#include <cstdio>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef OPFORGE_CLI
#error "OPFORGE_CLI (the path of the opforge program) must be defined"
#endif

namespace {

struct Run {
  int status = -1;
  std::string out;
};

// Runs the program; its stderr is dropped, or with with_stderr read with stdout.
// env: assignments put before the command ("NAME=value ...").
Run run(const std::string& args, bool with_stderr = false, const std::string& env = "") {
  Run r;
  FILE* p = ::popen((env + " '" OPFORGE_CLI "' " + args + (with_stderr ? " 2>&1" : " 2>/dev/null")).c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream is(s);
  for (std::string l; std::getline(is, l);)
    if (!l.empty()) v.push_back(l);
  return v;
}

double number_after(const std::string& line, const std::string& key) {
  const std::regex re("\"" + key + "\": ([-+0-9.eE]+)");
  std::smatch m;
  REQUIRE(std::regex_search(line, m, re));
  return std::stod(m[1]);
}

}  // namespace

TEST_CASE("cli: `opforge ops` lists the standard plugins and their ops", "[cli]") {
  const Run r = run("ops");
  INFO(r.out);
  CHECK(r.status == 0);
  for (const char* p : {"plugin elementwise ", "plugin reduce ", "plugin linalg ", "plugin loss ", "plugin shape "})
    CHECK_THAT(r.out, Catch::Contains(p));
  CHECK_THAT(r.out, Catch::Contains("loss.lstsq") && Catch::Contains("inputs 3 (A, x, y)"));
}

TEST_CASE("cli: `opforge ops NAME` documents one op with its attributes", "[cli]") {
  const Run r = run("ops reduce.sum");
  INFO(r.out);
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::StartsWith("reduce.sum(x) -> 1 output"));
  CHECK_THAT(r.out, Catch::Contains("attribute axes: int list = []"));
  CHECK_THAT(r.out, Catch::Contains("attribute keepdims: bool = false"));
  CHECK(run("ops no.such_op").status == 1);
}

TEST_CASE("cli: `opforge ops --json` is one JSON document with every op's schema", "[cli]") {
  const Run r = run("ops --json");
  CHECK(r.status == 0);
  REQUIRE(lines(r.out).size() == 1);
  CHECK_THAT(r.out, Catch::StartsWith("{\"plugins\": ["));
  CHECK_THAT(r.out, Catch::Contains("{\"name\": \"loss.lstsq\", \"inputs\": [\"A\", \"x\", \"y\"], \"num_outputs\": 1"));
  CHECK_THAT(r.out, Catch::Contains("\"attributes\": [{\"name\": \"axes\", \"kind\": \"int list\""));
  CHECK_THAT(r.out, Catch::Contains("\"failed\": []"));
}

TEST_CASE("cli: `opforge bench lstsq --json` prints every method in both dtypes, accurate", "[cli][bench]") {
  const Run r = run("bench lstsq --sizes 40,64 --repeat 3 --json");
  INFO(r.out);
  REQUIRE(r.status == 0);
  const auto rows = lines(r.out);
  REQUIRE(rows.size() == 2 * 2 * 4);  // sizes x dtypes x (fused, graph, explicit, bandwidth)
  int seen[2][3] = {};
  for (const std::string& row : rows) {
    INFO(row);
    for (const char* key : {"\"d\": ", "\"dtype\": ", "\"method\": ", "\"median_ms\": ", "\"min_ms\": ",
                            "\"ratio_explicit\": ", "\"ratio_bandwidth\": "})
      CHECK_THAT(row, Catch::Contains(key));
    const bool f64 = row.find("\"dtype\": \"float64\"") != std::string::npos;
    const bool gradient = row.find("\"method\": \"bandwidth\"") == std::string::npos;
    CHECK((row.find("\"rel_err\": ") != std::string::npos) == gradient);  // the read-once row is no gradient
    if (gradient) CHECK(number_after(row, "rel_err") < (f64 ? 1e-10 : 1e-4));
    CHECK(number_after(row, "median_ms") >= number_after(row, "min_ms"));
    int k = -1;
    if (row.find("\"method\": \"fused\"") != std::string::npos) k = 0;
    if (row.find("\"method\": \"graph\"") != std::string::npos) k = 1;
    if (row.find("\"method\": \"explicit\"") != std::string::npos) k = 2;
    if (k >= 0) ++seen[f64 ? 0 : 1][k];
  }
  for (auto& dt : seen)
    for (int count : dt) CHECK(count == 2);
}

TEST_CASE("cli: `bench lstsq --methods` times only the methods asked for", "[cli][bench]") {
  const Run r = run("bench lstsq --sizes 40 --dtype float64 --repeat 3 --methods fused,bandwidth --json");
  INFO(r.out);
  REQUIRE(r.status == 0);
  const auto rows = lines(r.out);
  REQUIRE(rows.size() == 2);
  CHECK_THAT(rows[0], Catch::Contains("\"method\": \"fused\""));
  CHECK_THAT(rows[1], Catch::Contains("\"method\": \"bandwidth\""));
  CHECK_THAT(rows[0], Catch::Contains("\"ratio_bandwidth\": "));
  CHECK_THAT(rows[0], !Catch::Contains("ratio_explicit"));  // explicit did not run: no ratio to it
  CHECK(number_after(rows[0], "rel_err") < 1e-10);         // still checked against the explicit formula

  const Run bad = run("bench lstsq --methods fused,fastest", true);
  CHECK(bad.status != 0);
  CHECK_THAT(bad.out, Catch::Contains("--methods: expected a comma-separated list of fused, graph, explicit, "
                                      "bandwidth; got 'fastest'"));
}

TEST_CASE("cli: `bench lstsq --caches cold` reads a buffer larger than the caches before each timed call",
          "[cli][bench]") {
  const Run warm = run("bench lstsq --sizes 40 --dtype float32 --repeat 2 --methods fused,bandwidth --json");
  REQUIRE(warm.status == 0);
  for (const std::string& row : lines(warm.out)) CHECK_THAT(row, Catch::Contains("\"caches\": \"warm\""));

  // stderr (progress, the flush buffer's size) comes with stdout here: keep the JSON rows.
  const Run cold = run("bench lstsq --sizes 40 --dtype float32 --repeat 2 --methods fused,bandwidth --json "
                       "--caches cold", true);
  INFO(cold.out);
  REQUIRE(cold.status == 0);
  const std::regex said("caches cold: a ([0-9]+) MiB buffer is read before each timed call \\(last-level cache: "
                        "([0-9]+) MiB\\)");
  std::smatch m;
  REQUIRE(std::regex_search(cold.out, m, said));
  CHECK(std::stol(m[1]) >= 64);
  CHECK(std::stol(m[1]) >= 4 * std::stol(m[2]));
  int rows = 0;
  for (const std::string& row : lines(cold.out)) {
    if (row[0] != '{') continue;
    ++rows;
    CHECK_THAT(row, Catch::Contains("\"caches\": \"cold\""));
    if (row.find("\"method\": \"fused\"") != std::string::npos) CHECK(number_after(row, "rel_err") < 1e-4);
  }
  CHECK(rows == 2);

  const Run bad = run("bench lstsq --caches lukewarm", true);
  CHECK(bad.status != 0);
  CHECK_THAT(bad.out, Catch::Contains("--caches: expected warm or cold, got 'lukewarm'"));
}

TEST_CASE("cli: `opforge bench ops --json` times svd, sqrt and exp in each dtype, accurate", "[cli][bench]") {
  const Run r =
      run("bench ops --svd-sizes 8,33 --elementwise-sizes 1000,70000 --dtype both --repeat 3 --threads 1,2 --json");
  INFO(r.out);
  REQUIRE(r.status == 0);
  const auto rows = lines(r.out);
  REQUIRE(rows.size() == 2 * 2 * 6);  // threads x dtypes x (two svd, two sqrt, two exp)
  int svd = 0, sqrt = 0, exp = 0;
  for (const std::string& row : rows) {
    INFO(row);
    for (const char* key : {"\"op\": ", "\"n\": ", "\"dtype\": ", "\"threads\": ", "\"median_ms\": ",
                            "\"min_ms\": ", "\"rel_err\": "})
      CHECK_THAT(row, Catch::Contains(key));
    const bool f64 = row.find("\"dtype\": \"float64\"") != std::string::npos;
    CHECK(number_after(row, "median_ms") >= number_after(row, "min_ms"));
    CHECK(number_after(row, "min_ms") > 0);
    if (row.find("\"op\": \"svd\"") != std::string::npos) {
      ++svd;
      CHECK(number_after(row, "rel_err") < (f64 ? 1e-12 : 1e-4));  // U diag(S) V^T gives A back
    } else if (row.find("\"op\": \"sqrt\"") != std::string::npos) {
      ++sqrt;
      CHECK(number_after(row, "rel_err") == 0);  // the same IEEE square root as std::sqrt
    } else {
      ++exp;
      CHECK_THAT(row, Catch::Contains("\"op\": \"exp\""));
      CHECK(number_after(row, "rel_err") < (f64 ? 1e-15 : 1e-6));  // within a few ulp of std::exp
    }
  }
  CHECK(svd == 8);
  CHECK(sqrt == 8);
  CHECK(exp == 8);
  CHECK_THAT(rows.front(), Catch::Contains("\"n\": 8,"));
  CHECK_THAT(rows.front(), Catch::Contains("\"threads\": 1,"));

  const Run bad = run("bench ops --svd-sizes 0", true);
  CHECK(bad.status != 0);
  CHECK_THAT(bad.out, Catch::Contains("--svd-sizes: expected a comma-separated list of positive integers, got '0'"));
  CHECK(run("bench ops --dtype int8").status != 0);
}

TEST_CASE("cli: output that cannot be written is a run-time failure (exit 1), not a success", "[cli]") {
  // /dev/full refuses every write, as a full disk does.
  CHECK(run("ops >/dev/full").status == 1);
  CHECK(run("ops NAME_THAT_IS_NOT_AN_OP >/dev/full").status == 1);  // already failing: its own status
  CHECK(run("ops >/dev/null").status == 0);
}

TEST_CASE("cli: bad options get a message and a non-zero status", "[cli]") {
  CHECK(run("bench lstsq --sizes 10,x").status != 0);
  CHECK(run("bench lstsq --dtype float16").status != 0);
  CHECK(run("frobnicate").status == 2);
  CHECK(run("--version").status == 0);
  const Run extra = run("--version extra", true);
  CHECK(extra.status == 2);
  CHECK(extra.out == "opforge --version: takes no arguments, got 'extra'\n");
  // No option is guessed from a prefix: "--siz" is not "--sizes".
  for (const std::string& args : {"bench lstsq --siz 50", "bench ops --rep 1", "ops --js", "check --o x x.so"}) {
    const Run r = run(args, true);
    INFO(args << "\n" << r.out);
    CHECK(r.status == 2);
    CHECK_THAT(r.out, Catch::Matchers::Contains("unrecognised option"));
  }
}

TEST_CASE("cli: an invalid OPFORGE_VECTOR_ISA is reported once when opforge loads, and every op still runs",
          "[cli][bench]") {
  // It used to make each vectorised op throw at its first call: a job died minutes in.
  const std::string args = "bench ops --svd-sizes 8 --elementwise-sizes 10 --repeat 1 --json";
  const Run bad = run(args, true, "OPFORGE_VECTOR_ISA=sse");
  CHECK(bad.status == 0);
  const std::string warning =
      "opforge: OPFORGE_VECTOR_ISA='sse' is not baseline or avx2; kernels use the widest vector code this CPU runs "
      "(unset it, or set it to baseline or avx2)";
  CHECK_THAT(bad.out, Catch::Contains(warning) && Catch::Contains("\"op\": \"exp\""));
  CHECK(bad.out.find(warning) == bad.out.rfind(warning));  // once
  for (const char* isa : {"baseline", "avx2"}) {
    const Run ok = run(args, false, std::string("OPFORGE_VECTOR_ISA=") + isa);
    CHECK(ok.status == 0);
    CHECK_THAT(ok.out, Catch::Contains("\"op\": \"exp\""));
  }
}

TEST_CASE("cli: an invalid OPFORGE_LSTSQ_KERNEL stops `bench lstsq` with a message naming it", "[cli][bench]") {
  const Run bad = run("bench lstsq --sizes 20 --dtype float64 --repeat 1 --methods fused", true,
                      "OPFORGE_LSTSQ_KERNEL=fast");
  CHECK(bad.status != 0);
  CHECK_THAT(bad.out, Catch::Contains("loss.lstsq") &&
                          Catch::Contains("OPFORGE_LSTSQ_KERNEL: expected pipelined, two_phase or automatic "
                                          "(or unset), got 'fast'"));
  for (const char* variant : {"pipelined", "two_phase", "automatic"}) {
    const Run ok = run("bench lstsq --sizes 20 --dtype float64 --repeat 1 --methods fused --json", false,
                       std::string("OPFORGE_LSTSQ_KERNEL=") + variant);
    CHECK(ok.status == 0);
    CHECK_THAT(ok.out, Catch::Contains("\"method\": \"fused\""));
  }
}

TEST_CASE("cli: `opforge --help` names every method and op the benchmarks time", "[cli]") {
  const Run r = run("--help");
  INFO(r.out);
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("fused, graph, explicit,") && Catch::Contains("(bandwidth)"));
  CHECK_THAT(r.out, Catch::Contains("time svd, sqrt and exp"));
}

TEST_CASE("cli: usage errors exit 2 with a pointer to the command's --help, run-time failures exit 1", "[cli]") {
  const std::vector<std::pair<std::string, std::string>> usage_errors = {
      {"ops --bogus", "see 'opforge ops --help'"},
      {"ops reduce.sum linalg.mv", "see 'opforge ops --help'"},
      {"bench lstsq --bogus", "see 'opforge bench lstsq --help'"},
      {"bench lstsq --sizes", "see 'opforge bench lstsq --help'"},  // missing value
      {"bench lstsq --threads 0", "see 'opforge bench lstsq --help'"},
      {"bench lstsq --repeat abc", "see 'opforge bench lstsq --help'"},
      {"bench lstsq --methods fastest", "see 'opforge bench lstsq --help'"},
      {"bench ops --dtype int64", "see 'opforge bench ops --help'"},
      {"bench ops --threads 0", "see 'opforge bench ops --help'"},
      {"bench overhead --bogus", "see 'opforge bench overhead --help'"},
      {"bench overhead --rounds abc", "see 'opforge bench overhead --help'"},
      {"bench", "Usage: opforge bench <benchmark>"},
      {"bench nosuch", "got 'nosuch'"},
      {"check --bogus", "opforge check"},
      {"frobnicate", "unknown command 'frobnicate'"},
      {"", "expected a command"},
  };
  for (const auto& [args, said] : usage_errors) {
    const Run r = run(args, true);
    INFO("opforge " << args << "\n" << r.out);
    CHECK(r.status == 2);
    CHECK_THAT(r.out, Catch::Contains(said));
  }
  const Run missing = run("ops no.such_op", true);  // a lookup that failed at run time
  CHECK(missing.status == 1);
}

TEST_CASE("cli: `opforge bench --help` lists the benchmarks and exits 0", "[cli]") {
  for (const char* help : {"bench --help", "bench -h", "bench help"}) {
    const Run r = run(help);
    INFO(help << "\n" << r.out);
    CHECK(r.status == 0);
    CHECK_THAT(r.out, Catch::StartsWith("Usage: opforge bench <benchmark> [options]"));
    for (const char* name : {"\n  lstsq ", "\n  overhead ", "\n  ops "}) CHECK_THAT(r.out, Catch::Contains(name));
  }
}

TEST_CASE("cli: `opforge ops help` is its --help, as `opforge help` and `opforge bench help` are", "[cli]") {
  for (const char* help : {"ops --help", "ops -h", "ops help"}) {
    const Run r = run(help);
    INFO(help << "\n" << r.out);
    CHECK(r.status == 0);
    CHECK_THAT(r.out, Catch::StartsWith("opforge ops [--json] [NAME]"));
  }
}

TEST_CASE("cli: `bench overhead` takes --rounds and --iters of at least 1", "[cli]") {
  for (const char* args : {"--rounds 0", "--rounds -3", "--iters 0", "--iters -5", "--iters 2147483648"}) {
    const Run r = run(std::string("bench overhead ") + args, true);
    INFO(args << "\n" << r.out);
    CHECK(r.status == 2);
    const std::string option = std::string(args).substr(0, std::string(args).find(' '));
    const std::string value = std::string(args).substr(option.size() + 1);
    CHECK_THAT(r.out, Catch::Contains(option + ": expected an integer from 1 to 2147483647, got '" + value + "'"));
  }
  const Run ok = run("bench overhead --rounds 1 --iters 1 --json");
  INFO(ok.out);
  CHECK(ok.status == 0);
  const auto rows = lines(ok.out);
  REQUIRE(rows.size() == 3);
  for (const std::string& row : rows) CHECK(number_after(row, "min_us") >= 0);

  const Run repeat = run("bench lstsq --repeat abc", true);
  CHECK(repeat.status == 2);
  CHECK_THAT(repeat.out, Catch::Contains("--repeat: expected an integer from 1 to 2147483647, got 'abc'"));
}

TEST_CASE("cli: the benchmarks refuse stray arguments and malformed lists", "[cli]") {
  struct Bad {
    const char* args;
    const char* said;
  };
  for (const Bad& b : {
           Bad{"bench lstsq --sizes 40, 60", "unexpected argument '60' (list values take no spaces: --sizes 40,60)"},
           Bad{"bench lstsq --sizes 40, 60, 80", "unexpected argument '60,' (list values take no spaces: "
                                                 "--sizes 40,60,80)"},
           Bad{"bench lstsq extra", "unexpected argument 'extra'"},
           Bad{"bench lstsq --json extra", "unexpected argument 'extra'"},
           Bad{"bench ops --svd-sizes 8, 16", "unexpected argument '16' (list values take no spaces: "
                                             "--svd-sizes 8,16)"},
           Bad{"bench overhead extra", "unexpected argument 'extra'"},
           Bad{"bench lstsq --sizes 50,", "--sizes: expected a comma-separated list of positive integers, got an "
                                         "empty item in '50,'"},
           Bad{"bench lstsq --sizes ,50", "got an empty item in ',50'"},
           Bad{"bench lstsq --sizes 50,,60", "got an empty item in '50,,60'"},
           Bad{"bench lstsq --sizes ''", "--sizes: expected a comma-separated list of positive integers, got an "
                                         "empty value"},
           Bad{"bench lstsq --sizes '50, 60'", "--sizes: expected a comma-separated list of positive integers (no "
                                              "spaces), got '50, 60'"},
           Bad{"bench lstsq --sizes '50 ,60'", "(no spaces), got '50 ,60'"},
           Bad{"bench lstsq --sizes 10,x", "--sizes: expected a comma-separated list of positive integers, got 'x' "
                                          "in '10,x'"},
           Bad{"bench lstsq --sizes +5", "got '+5'"},
           Bad{"bench lstsq --threads 1,", "--threads: expected a comma-separated list of positive integers, got an "
                                          "empty item in '1,'"},
           Bad{"bench lstsq --methods ''", "--methods: expected a comma-separated list of fused, graph, explicit, "
                                          "bandwidth, got an empty value"},
           Bad{"bench lstsq --methods fused,", "got an empty item in 'fused,'"},
       }) {
    const Run r = run(b.args, true);
    INFO(b.args << "\n" << r.out);
    CHECK(r.status == 2);
    CHECK_THAT(r.out, Catch::Contains(b.said));
    CHECK_THAT(r.out, !Catch::Contains("median"));  // nothing ran
  }
}

TEST_CASE("cli: --threads past OPFORGE_NUM_THREADS's limit is refused, and every option is checked before any work",
          "[cli]") {
  for (const char* bench : {"bench lstsq", "bench ops"}) {
    for (const char* value : {"1025", "1048577", "2147483648", "4294967297", "1,99999999999999999999999"}) {
      const Run r = run(std::string(bench) + " --threads " + value, true);
      INFO(bench << " --threads " << value << "\n" << r.out);
      CHECK(r.status == 2);
      CHECK_THAT(r.out, Catch::Contains("--threads: expected a comma-separated list of positive integers up to "
                                        "1024 (OPFORGE_NUM_THREADS's limit too), got '"));
      CHECK_THAT(r.out, !Catch::Contains("BLAS:"));  // nothing was printed before the options were checked
    }
  }
  // --threads was checked after the BLAS line and after --caches cold's buffer was allocated.
  const Run late = run("bench lstsq --caches cold --threads 0", true);
  INFO(late.out);
  CHECK(late.status == 2);
  CHECK_THAT(late.out, Catch::Contains("--threads: expected a comma-separated list of positive integers, got '0'"));
  CHECK_THAT(late.out, !Catch::Contains("BLAS:") && !Catch::Contains("caches cold"));
}

TEST_CASE("cli: sizes whose tensors' byte counts overflow int64 are refused before anything is printed", "[cli]") {
  struct Bad {
    const char* args;
    const char* said;
  };
  for (const Bad& b : {
           Bad{"bench lstsq --sizes 9000000000000000000",
               "--sizes: expected a comma-separated list of positive integers up to 339546978 (A's size in bytes, "
               "10 d * d * 8, must fit in 64 bits), got '9000000000000000000'"},
           Bad{"bench lstsq --sizes 40,339546979", "up to 339546978"},
           Bad{"bench ops --svd-sizes 1073741824", "--svd-sizes: expected a comma-separated list of positive integers "
                                                   "up to 1073741823"},
           Bad{"bench ops --elementwise-sizes 1152921504606846976",
               "--elementwise-sizes: expected a comma-separated list of positive integers up to 1152921504606846975"},
       }) {
    const Run r = run(b.args, true);
    INFO(b.args << "\n" << r.out);
    CHECK(r.status == 2);
    CHECK_THAT(r.out, Catch::Contains(b.said));
    CHECK_THAT(r.out, !Catch::Contains("median ms") && !Catch::Contains("BLAS:"));
  }
  // The largest d is accepted; allocating A (9.2 EB) then fails at run time: exit status 1.
  const Run oom = run("bench lstsq --sizes 339546978 --dtype float64 --repeat 1 --methods bandwidth", true);
  INFO(oom.out);
  CHECK(oom.status == 1);
  CHECK_THAT(oom.out, Catch::Contains("out of memory"));
}

TEST_CASE("cli: OPFORGE_NUM_THREADS is the benchmarks' default thread count, and --threads overrides it",
          "[cli][bench]") {
  const std::string ops = "bench ops --svd-sizes 8 --elementwise-sizes 10 --repeat 1 --dtype float64 --json";
  const std::string lstsq = "bench lstsq --sizes 20 --dtype float64 --repeat 1 --methods fused --json";
  for (const std::string& args : {ops, lstsq}) {
    const Run r = run(args, false, "OPFORGE_NUM_THREADS=3");  // 3: not this machine's core count, likely
    INFO(args << "\n" << r.out);
    REQUIRE(r.status == 0);
    REQUIRE(!lines(r.out).empty());
    for (const std::string& row : lines(r.out)) CHECK(number_after(row, "threads") == 3);
    const Run given = run(args + " --threads 1", false, "OPFORGE_NUM_THREADS=3");
    REQUIRE(given.status == 0);
    for (const std::string& row : lines(given.out)) CHECK(number_after(row, "threads") == 1);
    // An invalid value (once ignored in silence, or cast to a negative int
    // beyond int's range) is reported on stderr; every core is used, and the
    // rows say how many.
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    for (const char* bad : {"abc", "0", "-3", " 2", "2x", "1025", "2147483648", "99999999999999999999"}) {
      const std::string env = std::string("OPFORGE_NUM_THREADS='") + bad + "'";
      const Run r2 = run(args, true, env);
      INFO(env << "\n" << r2.out);
      REQUIRE(r2.status == 0);
      CHECK_THAT(r2.out, Catch::Contains(std::string("opforge: OPFORGE_NUM_THREADS='") + bad +
                                         "' is not a whole number from 1 to 1024; using all "));
      int rows = 0;
      for (const std::string& row : lines(r2.out)) {
        if (row.empty() || row[0] != '{') continue;
        ++rows;
        if (cores > 0) CHECK(number_after(row, "threads") == cores);
      }
      CHECK(rows > 0);
    }
  }
}

TEST_CASE("cli: `opforge ops NAME --json` is that op's object from `opforge ops --json`, which has the search path",
          "[cli]") {
  const Run all = run("ops --json");
  REQUIRE(all.status == 0);
  for (const char* args : {"ops reduce.sum --json", "ops --json reduce.sum"}) {
    const Run one = run(args);
    INFO(args << "\n" << one.out);
    CHECK(one.status == 0);
    REQUIRE(lines(one.out).size() == 1);
    CHECK_THAT(one.out, Catch::StartsWith("{\"name\": \"reduce.sum\", \"inputs\": [\"x\"]"));
    CHECK_THAT(all.out, Catch::Contains(lines(one.out)[0]));  // the very object of the full listing
  }
  CHECK(run("ops no.such_op --json").status == 1);

  // The text listing ends with the search path; the JSON has it as strings.
  const Run text = run("ops");
  const std::string said = text.out.substr(text.out.rfind("search path:") + 12);
  std::string want = "\"search_path\": [";
  std::istringstream dirs(said);
  bool first = true;
  for (std::string d; dirs >> d; first = false) want += (first ? "\"" : ", \"") + d + "\"";
  CHECK_FALSE(first);  // at least the standard plugins' directory
  CHECK_THAT(all.out, Catch::Contains(want + "]"));
}
