// POST /run_code (SandboxFusion's route): real programs in the real sandbox through the real
// server over HTTP, the request validation, and verl's own client logic
// (verl_sandbox_fusion_client.py) reading the answers.
#include <cstdio>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "env_server/run_code.h"
#include "env_server/server.h"
#include "tests/env_server/test_support.h"

namespace distil::env {
namespace {

using nlohmann::json;
using namespace distil::env::testing;

// --- without a server ---------------------------------------------------------------------------

TEST(RunCodeBase64, RoundTripsEveryByteAndRefusesMalformedText) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (std::size_t n : {0u, 1u, 2u, 3u, 4u, 255u, 256u}) {
    const std::string bytes = all.substr(0, n);
    std::string back;
    ASSERT_TRUE(base64_decode(base64_encode(bytes), back)) << n;
    EXPECT_EQ(back, bytes) << n;
  }
  EXPECT_EQ(base64_encode("ab"), "YWI=");
  std::string out;
  EXPECT_TRUE(base64_decode("YW\nI=", out));
  EXPECT_EQ(out, "ab");
  for (const char* bad : {"YWI", "Y===", "YW=I", "YW!=", "=WI="}) EXPECT_FALSE(base64_decode(bad, out)) << bad;
}

TEST(RunCodeRequest, DefaultsCapsAndSandboxFusionMeaningOfMinusOne) {
  RunCodeLimits limits;
  auto job = parse_run_code_request({{"code", "print(1)"}, {"language", "python"}}, limits);
  EXPECT_TRUE(job.run);
  EXPECT_EQ(job.limits.cpu_time_s, 10);  // SandboxFusion's default run_timeout
  EXPECT_EQ(job.limits.compile_cpu_time_s, 10);
  EXPECT_EQ(job.limits.memory_mb, limits.default_memory_mb);
  EXPECT_EQ(job.stdin_data, "");
  job = parse_run_code_request({{"code", "x"}, {"language", "cpp"}, {"run_timeout", 1e6}, {"compile_timeout", 2.5},
                                {"memory_limit_MB", -1}, {"stdin", nullptr}, {"unknown_field", 1}},
                               limits);
  EXPECT_EQ(job.limits.cpu_time_s, limits.max_run_timeout_s);
  EXPECT_EQ(job.limits.compile_cpu_time_s, 2.5);
  EXPECT_EQ(job.limits.memory_mb, limits.default_memory_mb);
  job = parse_run_code_request({{"code", "x"}, {"language", "python"}, {"memory_limit_MB", 1 << 20}}, limits);
  EXPECT_EQ(job.limits.memory_mb, limits.max_memory_mb);
  job = parse_run_code_request({{"code", "x"}, {"language", "go"}}, limits);
  EXPECT_FALSE(job.run);
}

// --- through the server -------------------------------------------------------------------------

class RunCode : public ::testing::Test {
 protected:
  static ServerConfig quiet_config() {
    ServerConfig c;
    c.host = "127.0.0.1";
    c.port = 0;
    c.io_threads = 2;
    c.workers = 2;
    c.access_log = nullptr;
    return c;
  }
  void SetUp() override {
    if (!shared_sandbox().sandbox) GTEST_SKIP() << "no sandbox on this host: " << shared_sandbox().why_not;
  }
  void start(ServerConfig config = quiet_config()) {
    server_ = std::make_unique<Server>(config, TaskStore::from_files({tasks_file()}), graders::Registry::builtin(),
                                       shared_sandbox().sandbox.get());
    port_ = server_->start();
  }
  RawResponse post(const json& body, const std::vector<std::string>& headers = {}) {
    return call(port_, "POST", "/run_code", body.dump(), headers);
  }
  // A 200 answer's body (the test fails when the status is another).
  json run(const json& body) {
    auto r = post(body);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.json();
  }
  static void expect_refused(const RawResponse& r, const std::string& field, const json& loc) {
    EXPECT_EQ(r.status, 422) << r.body;
    const json body = r.json();
    EXPECT_EQ(body["error"]["field"], field) << r.body;
    ASSERT_TRUE(body["detail"].is_array()) << r.body;
    EXPECT_EQ(body["detail"][0]["loc"], loc) << r.body;  // FastAPI's shape: ["body", field...]
    EXPECT_TRUE(body["detail"][0]["msg"].is_string());
    EXPECT_TRUE(body["detail"][0]["type"].is_string());
  }

  std::unique_ptr<Server> server_;
  std::uint16_t port_ = 0;
};

const std::string kCppSum = "#include <cstdio>\nint main(){long a,b;if(scanf(\"%ld %ld\",&a,&b)!=2)return 2;"
                            "printf(\"%ld\\n\",a+b);return 0;}\n";

TEST_F(RunCode, PythonReadsStdinAndWritesStdout) {
  start();
  const json r = run({{"code", "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))"},
                      {"language", "python"},
                      {"stdin", "19 23\n"}});
  EXPECT_EQ(r["status"], "Success");
  EXPECT_EQ(r["message"], "");
  EXPECT_TRUE(r["compile_result"].is_null());
  EXPECT_TRUE(r.contains("executor_pod_name"));
  EXPECT_EQ(r["files"], json::object());
  const json& run_result = r["run_result"];
  EXPECT_EQ(run_result["status"], "Finished");
  EXPECT_EQ(run_result["return_code"], 0);
  EXPECT_EQ(run_result["stdout"], "42\n");
  EXPECT_EQ(run_result["stderr"], "");
  EXPECT_TRUE(run_result["execution_time"].is_number_float());
}

TEST_F(RunCode, NonzeroExitIsFailedWithItsReturnCode) {
  start();
  const json r = run({{"code", "import sys\nprint('partial')\nsys.exit(3)"}, {"language", "python"}});
  EXPECT_EQ(r["status"], "Failed");
  EXPECT_EQ(r["message"], "");
  EXPECT_EQ(r["run_result"]["status"], "Finished");
  EXPECT_EQ(r["run_result"]["return_code"], 3);
  EXPECT_EQ(r["run_result"]["stdout"], "partial\n");
}

TEST_F(RunCode, RuntimeErrorIsFailedWithTheTracebackOnStderr) {
  start();
  const json r = run({{"code", "def f(x):\n    return 1 // x\nf(0)\n"}, {"language", "python"}});
  EXPECT_EQ(r["status"], "Failed");
  EXPECT_EQ(r["run_result"]["status"], "Finished");
  EXPECT_EQ(r["run_result"]["return_code"], 1);
  const std::string err = r["run_result"]["stderr"];
  EXPECT_NE(err.find("Traceback"), std::string::npos) << err;
  EXPECT_NE(err.find("ZeroDivisionError"), std::string::npos) << err;
}

TEST_F(RunCode, InfiniteLoopIsTimeLimitExceededWithNoReturnCode) {
  start();
  const json r = run({{"code", "while True:\n    pass\n"}, {"language", "python"}, {"run_timeout", 1}});
  EXPECT_EQ(r["status"], "Failed");
  EXPECT_EQ(r["run_result"]["status"], "TimeLimitExceeded");
  EXPECT_TRUE(r["run_result"]["return_code"].is_null());
  EXPECT_TRUE(r["run_result"]["execution_time"].is_number());
}

TEST_F(RunCode, MemoryLimitStopsAnAllocationBeyondIt) {
  start();
  const std::string code = "x = bytearray(512 * 1024 * 1024)\nprint(len(x))\n";
  const json small = run({{"code", code}, {"language", "python"}, {"memory_limit_MB", 128}});
  EXPECT_EQ(small["status"], "Failed") << small.dump();
  EXPECT_EQ(small["run_result"]["status"], "Finished");
  EXPECT_NE(small["run_result"]["return_code"], 0);
  EXPECT_EQ(small["run_result"]["stdout"], "");
  const json big = run({{"code", code}, {"language", "python"}, {"memory_limit_MB", 1024}});
  EXPECT_EQ(big["status"], "Success") << big.dump();
  EXPECT_EQ(big["run_result"]["stdout"], "536870912\n");
}

TEST_F(RunCode, CppCompileErrorIsFailedWithCompileResultAndNoRun) {
  start();
  const json r = run({{"code", "int main() { return undeclared; }\n"}, {"language", "cpp"}});
  EXPECT_EQ(r["status"], "Failed");
  EXPECT_EQ(r["message"], "");
  const json& c = r["compile_result"];
  EXPECT_EQ(c["status"], "Finished");
  EXPECT_NE(c["return_code"], 0);
  EXPECT_NE(c["stderr"].get<std::string>().find("undeclared"), std::string::npos) << c.dump();
  EXPECT_TRUE(r["run_result"].is_null());
}

TEST_F(RunCode, CppCompilesThenRuns) {
  start();
  const json r = run({{"code", kCppSum}, {"language", "cpp"}, {"stdin", "40 2"}});
  EXPECT_EQ(r["status"], "Success") << r.dump();
  EXPECT_EQ(r["compile_result"]["status"], "Finished");
  EXPECT_EQ(r["compile_result"]["return_code"], 0);
  EXPECT_TRUE(r["compile_result"]["execution_time"].is_number());
  EXPECT_EQ(r["run_result"]["status"], "Finished");
  EXPECT_EQ(r["run_result"]["return_code"], 0);
  EXPECT_EQ(r["run_result"]["stdout"], "42\n");
  const json bad_input = run({{"code", kCppSum}, {"language", "cpp"}, {"stdin", "x"}});
  EXPECT_EQ(bad_input["status"], "Failed");
  EXPECT_EQ(bad_input["run_result"]["return_code"], 2);
}

TEST_F(RunCode, UnsupportedLanguagesGetSandboxFusionsAnswers) {
  start();
  // A language SandboxFusion lists but distil-env does not run: its answer for a language
  // without a runner (HTTP 200, SandboxError).
  const json java = run({{"code", "class Main {}"}, {"language", "java"}});
  EXPECT_EQ(java["status"], "SandboxError");
  EXPECT_NE(java["message"].get<std::string>().find("'java'"), std::string::npos) << java.dump();
  EXPECT_TRUE(java["run_result"].is_null());
  EXPECT_TRUE(java["compile_result"].is_null());
  // A name SandboxFusion's model does not accept: FastAPI's 422.
  auto klingon = post({{"code", "x"}, {"language", "klingon"}});
  expect_refused(klingon, "language", json::array({"body", "language"}));
  EXPECT_EQ(klingon.json()["detail"][0]["type"], "literal_error");
}

TEST_F(RunCode, FilesGoInAndFetchFilesComeBack) {
  start();
  std::string binary;
  for (int i = 0; i < 256; ++i) binary += static_cast<char>(i);
  const std::string code =
      "import os\n"
      "data = open('data/in.bin', 'rb').read()\n"
      "open('out.bin', 'wb').write(data[::-1])\n"
      "os.makedirs('deep/er', exist_ok=True)\n"
      "open('deep/er/note.txt', 'w').write(open('note.txt').read().upper())\n"
      "os.symlink('/etc/passwd', 'link')\n"
      "try:\n    os.mkfifo('fifo')  # the sandbox may refuse it\nexcept OSError:\n    pass\n"
      "print(len(data))\n";
  const json r = run({{"code", code},
                      {"language", "python"},
                      {"files", {{"data/in.bin", base64_encode(binary)}, {"note.txt", base64_encode("hello")},
                                 {"skipped.txt", nullptr}}},
                      {"fetch_files", {"out.bin", "deep/er/note.txt", "missing.txt", "link", "fifo", "data"}}});
  ASSERT_EQ(r["status"], "Success") << r.dump();
  EXPECT_EQ(r["run_result"]["stdout"], "256\n");
  const json& files = r["files"];
  std::string reversed(binary.rbegin(), binary.rend());
  EXPECT_EQ(files["out.bin"], base64_encode(reversed));
  EXPECT_EQ(files["deep/er/note.txt"], base64_encode("HELLO"));
  // Missing, a link (never followed by the server), a FIFO and a directory are left out.
  EXPECT_EQ(files.size(), 2u) << files.dump();

  // C++ sees the files in its working directory too.
  const json cpp = run({{"code", "#include <fstream>\n#include <iostream>\nint main(){std::ifstream f(\"in.txt\");"
                                 "int a,b;f>>a>>b;std::ofstream(\"sum.txt\")<<a+b;std::cout<<\"ok\\n\";}\n"},
                        {"language", "cpp"},
                        {"files", {{"in.txt", base64_encode("40 2")}}},
                        {"fetch_files", {"sum.txt"}}});
  ASSERT_EQ(cpp["status"], "Success") << cpp.dump();
  EXPECT_EQ(cpp["files"]["sum.txt"], base64_encode("42"));
}

TEST_F(RunCode, PathTraversalIsRefusedNamingTheField) {
  start();
  expect_refused(post({{"code", "x"}, {"language", "python"}, {"files", {{"../escape.txt", "YWI="}}}}),
                 "files[\"../escape.txt\"]", json::array({"body", "files", "../escape.txt"}));
  expect_refused(post({{"code", "x"}, {"language", "python"}, {"files", {{"/etc/cron.d/x", "YWI="}}}}),
                 "files[\"/etc/cron.d/x\"]", json::array({"body", "files", "/etc/cron.d/x"}));
  expect_refused(post({{"code", "x"}, {"language", "python"}, {"fetch_files", {"ok.txt", "a/../../etc/passwd"}}}),
                 "fetch_files[1]", json::array({"body", "fetch_files", 1}));
  expect_refused(post({{"code", "x"}, {"language", "python"}, {"fetch_files", {"/etc/passwd"}}}), "fetch_files[0]",
                 json::array({"body", "fetch_files", 0}));
}

TEST_F(RunCode, MalformedJsonAndWrongTypesAre422NamingTheField) {
  start();
  auto malformed = call(port_, "POST", "/run_code", "{\"code\": \"print(1)\", ");
  EXPECT_EQ(malformed.status, 422) << malformed.body;
  EXPECT_EQ(malformed.json()["error"]["code"], "malformed_json");
  EXPECT_EQ(malformed.json()["detail"][0]["type"], "json_invalid");
  struct Case {
    json body;
    std::string field;
  };
  const json base = {{"code", "print(1)"}, {"language", "python"}};
  auto with = [&](const char* key, json value) {
    json b = base;
    b[key] = std::move(value);
    return b;
  };
  std::vector<Case> cases = {
      {{{"language", "python"}}, "code"},
      {{{"code", "x"}}, "language"},
      {with("code", 5), "code"},
      {with("language", json::array()), "language"},
      {with("stdin", 3), "stdin"},
      {with("run_timeout", "10"), "run_timeout"},
      {with("run_timeout", -1), "run_timeout"},
      {with("compile_timeout", true), "compile_timeout"},
      {with("memory_limit_MB", 1.5), "memory_limit_MB"},
      {with("memory_limit_MB", 4), "memory_limit_MB"},
      {with("files", json::array()), "files"},
      {with("files", {{"a.txt", 7}}), "files[\"a.txt\"]"},
      {with("files", {{"a.txt", "not base64!"}}), "files[\"a.txt\"]"},
      {with("fetch_files", "a.txt"), "fetch_files"},
      {with("fetch_files", {1}), "fetch_files[0]"},
      {with("args", {"ok", 2}), "args[1]"},
      {json::array({1, 2}), "body"},
  };
  for (const auto& c : cases) {
    auto r = post(c.body);
    EXPECT_EQ(r.status, 422) << c.body.dump() << " -> " << r.body;
    EXPECT_EQ(r.json()["error"]["field"], c.field) << c.body.dump() << " -> " << r.body;
    EXPECT_NE(r.json()["error"]["message"].get<std::string>().find(c.field), std::string::npos) << r.body;
  }
  // The server kept serving.
  EXPECT_EQ(run(base)["run_result"]["stdout"], "1\n");
}

TEST_F(RunCode, AuthIsRequiredWhenConfigured) {
  auto config = quiet_config();
  config.auth_token = "s3cret-token";
  start(config);
  const json body = {{"code", "print(1)"}, {"language", "python"}};
  auto none = post(body);
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.headers["WWW-Authenticate"], "Bearer");
  EXPECT_EQ(post(body, {"Authorization: Bearer wrong"}).status, 401);
  auto ok = post(body, {"Authorization: Bearer s3cret-token"});
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.json()["run_result"]["stdout"], "1\n");
}

TEST_F(RunCode, WrongMethodIs405AndLimitsAreReported) {
  start();
  EXPECT_EQ(call(port_, "GET", "/run_code").status, 405);
  auto limits = call(port_, "GET", "/v1/limits");
  ASSERT_EQ(limits.status, 200);
  EXPECT_EQ(limits.json()["run_code"]["max_run_timeout_s"], RunCodeLimits{}.max_run_timeout_s) << limits.body;
}

// Back-pressure as on the other routes: with the one worker busy and the mean run time known,
// a request that would wait longer than max_queue_wait_s is refused at once with 429.
TEST_F(RunCode, OverloadIs429WithRetryAfter) {
  auto config = quiet_config();
  config.workers = 1;
  config.max_queue_wait_s = 1e-6;  // any run in the sandbox took longer
  start(config);
  ASSERT_EQ(run({{"code", "print(1)"}, {"language", "python"}})["status"], "Success");
  std::thread busy([&] { post({{"code", "import time\ntime.sleep(1)\n"}, {"language", "python"}}); });
  bool running = false;
  for (int i = 0; i < 400 && !running; ++i) {
    running = call(port_, "GET", "/metrics").body.find("distil_busy_workers 1") != std::string::npos;
    if (!running) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(running) << "the slow run never started";
  auto refused = post({{"code", "print(2)"}, {"language", "python"}});
  busy.join();
  EXPECT_EQ(refused.status, 429) << refused.body;
  EXPECT_EQ(refused.json()["error"]["code"], "overloaded");
  ASSERT_TRUE(refused.headers.count("Retry-After"));
}

// verl's client logic (call_sandbox_api + _process_single_case, reimplemented with the standard
// library in verl_sandbox_fusion_client.py) reads distil-env's answers as it reads SandboxFusion's.
TEST_F(RunCode, VerlsSandboxFusionClientGetsTheRightVerdicts) {
  const char* python = "/usr/bin/python3";
  if (access(python, X_OK) != 0) GTEST_SKIP() << python << " is not there to run verl's client logic";
  // verl sends no Authorization header, so a verl user runs the server without a token.
  start();
  const std::string add = "a, b = map(int, input().split())\nprint(a + b)\n";
  const json cases = json::array({
      {{"code", add}, {"language", "python"}, {"stdin", "1 2"}, {"expected", "3"}, {"timeout", 10}},
      {{"code", add}, {"language", "python"}, {"stdin", "1 2"}, {"expected", "4"}, {"timeout", 10}},
      {{"code", "raise SystemExit(input())"}, {"language", "python"}, {"stdin", "boom"}, {"expected", ""}, {"timeout", 10}},
      {{"code", "while True:\n    pass\n"}, {"language", "python"}, {"stdin", ""}, {"expected", ""}, {"timeout", 1}},
      {{"code", kCppSum}, {"language", "cpp"}, {"stdin", "40 2"}, {"expected", "42\n"}, {"timeout", 10}},
      {{"code", "int main() { return nope; }"}, {"language", "cpp"}, {"stdin", ""}, {"expected", ""}, {"timeout", 10}},
      {{"code", "class Main {}"}, {"language", "java"}, {"stdin", ""}, {"expected", ""}, {"timeout", 10}},
  });
  char cases_path[] = "/tmp/distil-verl-cases-XXXXXX";
  const int fd = mkstemp(cases_path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(cases_path) << cases.dump();
  const std::string command = std::string(python) + " " + DISTIL_SOURCE_DIR +
                              "/tests/env_server/verl_sandbox_fusion_client.py http://127.0.0.1:" +
                              std::to_string(port_) + "/run_code < " + cases_path;
  std::string output;
  if (FILE* pipe = popen(command.c_str(), "r")) {
    char buf[4096];
    std::size_t n;
    while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) output.append(buf, n);
    EXPECT_EQ(pclose(pipe), 0) << output;
  }
  std::remove(cases_path);
  const json verdicts = json::parse(output, nullptr, false);
  ASSERT_TRUE(verdicts.is_array()) << output;
  const json expected = json::array({
      {true, "success"},
      {false, "wrong_answer"},
      {-2, "runtime_error"},
      {-3, "timeout"},
      {true, "success"},
      {-4, "compile_error"},
      {-1, "sandbox_error"},
  });
  EXPECT_EQ(verdicts, expected) << output;
}

}  // namespace
}  // namespace distil::env
