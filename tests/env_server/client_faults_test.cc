// The feedback client against endpoints that fail the way real ones do, all real processes on
// loopback: a stopped server (SIGSTOP), a web server that is not distil-env, a server whose queue
// is smaller than the batch, a server that keeps answering 429. What must hold: no item is lost
// that a healthy endpoint could grade, a bad endpoint costs one failure and then is avoided until
// its /readyz answers again, and every problem is reported as one line.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <thread>

#include "env_server/client/feedback_client.h"
#include "test_support.h"

namespace distil::env {
namespace {

using namespace distil::env::testing;

std::string url(std::uint16_t port) { return "http://127.0.0.1:" + std::to_string(port); }

std::vector<std::string> serve_args(std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"serve", "--tasks", tasks_file(), "--port", "0", "--workers", "2",
                                   "--access-log", "off", "--no-sandbox"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::vector<FeedbackItem> math_items(int n) {
  std::vector<FeedbackItem> items;
  for (int i = 0; i < n; ++i) items.push_back({"math-product", std::nullopt, "\\boxed{" + std::to_string(i) + "}"});
  return items;
}

// Log lines the client writes, kept for the test to read.
struct LogLines {
  std::mutex mutex;
  std::vector<std::string> lines;
  std::function<void(const std::string&)> sink() {
    return [this](const std::string& line) {
      std::lock_guard lock(mutex);
      lines.push_back(line);
    };
  }
  int count(const std::string& needle) {
    std::lock_guard lock(mutex);
    int n = 0;
    for (const auto& l : lines) n += l.find(needle) != std::string::npos;
    return n;
  }
  std::string all() {
    std::lock_guard lock(mutex);
    std::string s;
    for (const auto& l : lines) s += l + "\n";
    return s;
  }
};

// A process started with argv, killed at the end; `port` from the first line matching "port N".
class Process {
 public:
  explicit Process(std::vector<std::string> argv) {
    int out[2];
    if (pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // dies with the test, however the test ends
      dup2(out[1], 1);
      dup2(out[1], 2);
      close(out[0]);
      close(out[1]);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(out[1]);
    out_ = fdopen(out[0], "r");
  }
  ~Process() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_) std::fclose(out_);
  }
  std::string read_line() {
    char line[1024];
    return out_ && std::fgets(line, sizeof line, out_) ? std::string(line) : std::string();
  }

 private:
  pid_t pid_ = -1;
  std::FILE* out_ = nullptr;
};

// Python's own http.server: a real web server that is not a feedback server (404 HTML pages,
// 501 for POST). Its first line says "Serving HTTP on 127.0.0.1 port N ...".
std::uint16_t start_web_server(std::unique_ptr<Process>& process) {
  process = std::make_unique<Process>(std::vector<std::string>{"/usr/bin/python3", "-S", "-u", "-m", "http.server",
                                                               "0", "--bind", "127.0.0.1", "--directory", "/tmp"});
  const std::string line = process->read_line();
  const auto at = line.find(" port ");
  return at == std::string::npos ? 0 : static_cast<std::uint16_t>(std::stoi(line.substr(at + 6)));
}

// Waits (polling) for `done`, at most `timeout_s`: a liveness bound, not a speed claim.
bool eventually(const std::function<bool()>& done, double timeout_s = 60) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int>(timeout_s * 1000));
  while (std::chrono::steady_clock::now() < give_up) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

TEST(ClientFaults, StoppedEndpointCostsOneTimeoutThenIsAvoidedUntilReady) {
  ServerProcess stopped(serve_args()), healthy(serve_args());
  ASSERT_NE(stopped.port(), 0);
  ASSERT_NE(healthy.port(), 0);
  LogLines log;
  ClientConfig config;
  config.endpoints = {url(stopped.port()), url(healthy.port())};
  config.request_timeout_s = 2;
  config.probe_interval_s = 0.05;
  config.probe_timeout_s = 0.5;
  config.log = log.sink();
  FeedbackClient client(config);
  for (const auto& o : client.feedback(math_items(8))) ASSERT_TRUE(o.ok) << o.error;

  kill(stopped.pid(), SIGSTOP);
  for (int step = 0; step < 10; ++step)
    for (const auto& o : client.feedback(math_items(8))) ASSERT_TRUE(o.ok) << o.error;
  auto stats = client.endpoint_stats();
  // Exactly the one request sent before it was known to be stopped (round robin tries it in the
  // first two batches); that one's items went to the healthy endpoint.
  EXPECT_EQ(stats[0].failures, 1) << log.all();
  const std::int64_t requests_while_stopped = stats[0].requests;
  for (int step = 0; step < 10; ++step) client.feedback(math_items(8));
  EXPECT_EQ(client.endpoint_stats()[0].requests, requests_while_stopped) << "work went to a down endpoint";
  EXPECT_EQ(log.count("is down"), stats[0].failures) << log.all();  // one line per going down

  // Running again, but a --no-sandbox server's /readyz is 503 (alive, not ready): it stays
  // avoided while a healthy endpoint exists. (Coming back: the next test, with ready servers.)
  kill(stopped.pid(), SIGCONT);
  for (int step = 0; step < 5; ++step) client.feedback(math_items(8));
  EXPECT_EQ(client.endpoint_stats()[0].requests, requests_while_stopped);
  EXPECT_EQ(log.count("is back"), 0) << log.all();
}

TEST(ClientFaults, DownEndpointComesBackOnceItsReadyzAnswers) {
  if (!shared_sandbox().sandbox) GTEST_SKIP() << "a ready server needs a sandbox: " << shared_sandbox().why_not;
  std::vector<std::string> ready_args = {"serve", "--tasks", tasks_file(), "--port", "0", "--workers", "2",
                                         "--access-log", "off"};
  ServerProcess stopped(ready_args), healthy(ready_args);
  ASSERT_NE(stopped.port(), 0);
  ASSERT_NE(healthy.port(), 0);
  ASSERT_TRUE(eventually([&] { return call(stopped.port(), "GET", "/readyz").status == 200; }));
  ASSERT_TRUE(eventually([&] { return call(healthy.port(), "GET", "/readyz").status == 200; }));
  LogLines log;
  ClientConfig config;
  config.endpoints = {url(stopped.port()), url(healthy.port())};
  config.request_timeout_s = 2;
  config.probe_interval_s = 0.05;
  config.probe_timeout_s = 0.5;
  config.log = log.sink();
  FeedbackClient client(config);
  kill(stopped.pid(), SIGSTOP);
  for (int step = 0; step < 4; ++step)
    for (const auto& o : client.feedback(math_items(8))) ASSERT_TRUE(o.ok) << o.error;
  ASSERT_TRUE(client.endpoint_stats()[0].down) << log.all();
  const std::int64_t before = client.endpoint_stats()[0].requests;
  kill(stopped.pid(), SIGCONT);
  ASSERT_TRUE(eventually([&] { return !client.endpoint_stats()[0].down; })) << log.all();
  EXPECT_EQ(log.count("is back"), 1) << log.all();
  for (int step = 0; step < 4; ++step)
    for (const auto& o : client.feedback(math_items(8))) ASSERT_TRUE(o.ok) << o.error;
  EXPECT_GT(client.endpoint_stats()[0].requests, before) << "the endpoint that came back gets work again";
}

TEST(ClientFaults, WebServerThatIsNotDistilLosesNothingAndIsNamedOnce) {
  std::unique_ptr<Process> web;
  const std::uint16_t web_port = start_web_server(web);
  ASSERT_NE(web_port, 0) << "python3 -m http.server did not start";
  ServerProcess healthy(serve_args());
  ASSERT_NE(healthy.port(), 0);
  LogLines log;
  ClientConfig config;
  config.endpoints = {url(web_port), url(healthy.port())};
  config.log = log.sink();
  config.probe_interval_s = 0.05;
  FeedbackClient client(config);
  for (int step = 0; step < 10; ++step) {
    const auto outcomes = client.feedback(math_items(16));
    for (const auto& o : outcomes) ASSERT_TRUE(o.ok) << o.error;
    EXPECT_EQ(client.feedback_one(math_items(1)[0]).ok, true);
  }
  EXPECT_LE(client.endpoint_stats()[0].failures, 1) << log.all();
  EXPECT_EQ(log.count("is down"), 1) << log.all();
  for (const auto& line : log.lines) {
    EXPECT_EQ(line.find('\n'), std::string::npos) << line;
    EXPECT_EQ(line.find('<'), std::string::npos) << "HTML reached the log: " << line;
  }

  // At start the trainer and distil-eval refuse such a configuration, naming the endpoint.
  FeedbackClient checking(config);
  try {
    checking.require_endpoints();
    ADD_FAILURE() << "a web server that is not distil-env was accepted";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(url(web_port)), std::string::npos) << what;
    EXPECT_NE(what.find("not distil-env"), std::string::npos) << what;
    EXPECT_EQ(what.find(url(healthy.port())), std::string::npos) << "the good endpoint is not named: " << what;
  }
  ClientConfig only_dead = config;
  only_dead.endpoints = {"http://127.0.0.1:9"};
  FeedbackClient dead(only_dead);
  EXPECT_THROW(dead.require_endpoints(), std::runtime_error);
  ClientConfig good = config;
  good.endpoints = {url(healthy.port()), "http://127.0.0.1:9"};  // a good one beside an unreachable one: go on
  FeedbackClient mixed(good);
  EXPECT_NO_THROW(mixed.require_endpoints());
  EXPECT_TRUE(mixed.endpoint_stats()[1].down);
}

TEST(ClientFaults, BatchBiggerThanTheServersQueueIsSplitToFit) {
  ServerProcess small(serve_args({"--queue-capacity", "16"}));
  ASSERT_NE(small.port(), 0);
  ClientConfig config;
  config.endpoints = {url(small.port())};
  config.max_attempts = 1;
  // Waiting cannot admit a 64-item batch into a 16-job queue: success means it was split.
  config.overload_wait_s = 30;
  FeedbackClient client(config);
  const auto outcomes = client.feedback(math_items(64));
  ASSERT_EQ(outcomes.size(), 64u);
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    ASSERT_TRUE(outcomes[i].ok) << i << ": " << outcomes[i].error;
    EXPECT_EQ(outcomes[i].result["extracted"], std::to_string(i));
  }
}

// A server that answers 429 (Retry-After: 1) to its first `n` POSTs, then grades: the answers
// come from a small Python script, because only it can be told to refuse exactly n times.
constexpr const char* kOverloadedServer = R"PY(
import http.server, json, sys
left = int(sys.argv[1])
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        body = json.dumps({"status": "ok", "max_batch_items": 64, "queue_capacity": 64}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        global left
        items = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["items"]
        if left > 0:
            left -= 1
            body = json.dumps({"error": {"code": "overloaded", "message": "queue full"}}).encode()
            self.send_response(429); self.send_header("Retry-After", "1")
        else:
            body = json.dumps({"results": [{"reward": 1.0, "passed": True, "feedback": ""} for _ in items]}).encode()
            self.send_response(200)
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print("port", s.server_address[1], flush=True)
s.serve_forever()
)PY";

std::uint16_t start_overloaded(std::unique_ptr<Process>& process, int refusals) {
  const std::string script = "/tmp/distil-overloaded-" + std::to_string(getpid()) + ".py";
  std::ofstream(script) << kOverloadedServer;
  process = std::make_unique<Process>(
      std::vector<std::string>{"/usr/bin/python3", "-S", "-u", script, std::to_string(refusals)});
  const std::string line = process->read_line();
  unlink(script.c_str());
  return line.rfind("port ", 0) == 0 ? static_cast<std::uint16_t>(std::stoi(line.substr(5))) : 0;
}

TEST(ClientFaults, OverloadIsWaitedOutWithinItsBudgetNotDroppedAfterSixTries) {
  std::unique_ptr<Process> server;
  const std::uint16_t port = start_overloaded(server, 4);
  ASSERT_NE(port, 0);
  ClientConfig config;
  config.endpoints = {url(port)};
  config.max_attempts = 1;  // 429s are not failed attempts
  config.overload_wait_s = 60;
  config.backoff_initial_s = 0.01;
  FeedbackClient client(config);
  const auto outcomes = client.feedback(math_items(4));
  for (const auto& o : outcomes) EXPECT_TRUE(o.ok) << o.error;
  EXPECT_EQ(client.endpoint_stats()[0].requests, 5);  // 4 refusals, each waited out, then the answer

  // A budget smaller than what the server asks for: the items fail, saying it was a 429.
  std::unique_ptr<Process> stubborn;
  const std::uint16_t stubborn_port = start_overloaded(stubborn, 1000);
  ASSERT_NE(stubborn_port, 0);
  config.endpoints = {url(stubborn_port)};
  config.overload_wait_s = 2.5;
  FeedbackClient impatient(config);
  const auto failed = impatient.feedback(math_items(2));
  for (const auto& o : failed) {
    EXPECT_FALSE(o.ok);
    EXPECT_NE(o.error.find("429"), std::string::npos) << o.error;
  }
  // Retry-After 1 s within 2.5 s: waits of 1, 1 and the 0.5 left, so four requests.
  EXPECT_EQ(impatient.endpoint_stats()[0].requests, 4);
}

}  // namespace
}  // namespace distil::env
