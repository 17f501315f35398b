// The fork server (run_batch): every input must give exactly what a one-shot run gives, and
// children must not see each other (files, processes, interpreter state).
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "sandbox/sandbox.h"

namespace distil::sandbox {
namespace {

Sandbox& sandbox() {
  static Sandbox instance{Config{}};
  return instance;
}

// 1 s of CPU: what the time-limit cases burn. Cases about memory get memory_limits().
Limits limits() {
  Limits l;
  l.cpu_time_s = 1;
  l.wall_time_s = 8;
  l.memory_mb = 256;
  return l;
}

// A memory bomb must hit its memory limit before any CPU limit on any machine, however slow its
// page faults: 10 s of CPU is ten times what filling 256 MB took on the slowest VM seen.
Limits memory_limits() {
  Limits l = limits();
  l.cpu_time_s = 10;
  l.wall_time_s = 20;
  return l;
}

Program python(const std::string& source) {
  Program p;
  p.source = source;
  return p;
}

void require_fork_server(const std::vector<RunResult>& results) {
  ASSERT_FALSE(results.empty());
  if (!sandbox().isolation().pid_namespace) GTEST_SKIP() << "fork server needs namespaces";
  ASSERT_TRUE(results[0].fork_server) << "fork server not used: " << sandbox().fork_server_failure();
}

struct Equivalence {
  const char* name;
  const char* source;
  std::vector<std::string> inputs;
  bool about_memory = false;  // runs under memory_limits()
  // Besides being equal, every result must have this stdout / a message containing this.
  const char* expect_stdout = nullptr;
  const char* expect_message = nullptr;
  int max_processes = 0;  // 0: the default
};

void PrintTo(const Equivalence& e, std::ostream* os) { *os << e.name; }

class BatchEqualsOneShot : public ::testing::TestWithParam<Equivalence> {};

TEST_P(BatchEqualsOneShot, SameResultPerInput) {
  const Equivalence& e = GetParam();
  Limits run_limits = e.about_memory ? memory_limits() : limits();
  if (e.max_processes > 0) run_limits.max_processes = e.max_processes;
  const auto batch = sandbox().run_batch(python(e.source), e.inputs, run_limits);
  require_fork_server(batch);
  ASSERT_EQ(batch.size(), e.inputs.size());
  for (std::size_t i = 0; i < e.inputs.size(); ++i) {
    const RunResult single = sandbox().run(python(e.source), e.inputs[i], run_limits);
    SCOPED_TRACE("input " + std::to_string(i));
    EXPECT_EQ(to_string(batch[i].verdict), to_string(single.verdict));
    EXPECT_EQ(batch[i].exit_code, single.exit_code);
    EXPECT_EQ(batch[i].signal, single.signal);
    EXPECT_EQ(batch[i].stdout_data, single.stdout_data);
    EXPECT_EQ(batch[i].stderr_data, single.stderr_data);
    EXPECT_EQ(batch[i].stdout_truncated, single.stdout_truncated);
    // The feedback too: a denied call's name, a refused exec.
    EXPECT_EQ(batch[i].message, single.message);
    if (e.expect_stdout) {
      EXPECT_EQ(batch[i].stdout_data, e.expect_stdout) << batch[i].stderr_data;
      EXPECT_EQ(single.stdout_data, e.expect_stdout) << single.stderr_data;
    }
    if (e.expect_message) {
      EXPECT_NE(batch[i].message.find(e.expect_message), std::string::npos) << batch[i].message;
      EXPECT_NE(single.message.find(e.expect_message), std::string::npos) << single.message;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Programs, BatchEqualsOneShot,
    ::testing::Values(
        Equivalence{"sum_stdin", "import sys\nprint(sum(map(int, sys.stdin.read().split())))\n", {"1 2", "", "x", "5"}},
        Equivalence{"input_until_eof", "while True:\n    print(input()[::-1])\n", {"ab\ncd\n", "", "x"}},
        Equivalence{"syntax_error", "def f(:\n    pass\n", {"", "1"}},
        Equivalence{"exit_codes", "import sys\nv = input()\nsys.exit(int(v) if v.isdigit() else v)\n", {"0", "3", "300", "oops"}},
        Equivalence{"set_order", "print(list({'apple', 'pear', 'fig', 'kiwi', input()}))\n", {"a", "b", "plum"}},
        Equivalence{"atexit_and_threads",
                    "import atexit, threading, sys\natexit.register(lambda: print('bye'))\n"
                    "t = threading.Thread(target=lambda: print('thread', input()))\nt.start()\nt.join()\n"
                    "print('main', file=sys.stderr)\n",
                    {"one", "two"}},
        Equivalence{"nested_exception",
                    "def f(n):\n    return 1 // n\ntry:\n    f(int(input()))\nexcept ZeroDivisionError as e:\n"
                    "    raise ValueError('wrapped') from e\nprint('fine')\n",
                    {"0", "2"}},
        Equivalence{"recursion", "import sys\nsys.setrecursionlimit(100000)\ndef f(n): return f(n + 1)\nf(0)\n", {"", ""}},
        Equivalence{"unicode_no_newline", "import sys\nsys.stdout.write('h\\u00e9llo \\u4e16\\u754c ' + input())\n", {"x", "y"}},
        Equivalence{"name_and_argv", "import sys\nprint(__name__, sys.argv, __file__)\n", {"", ""}},
        Equivalence{"stdout_flood", "import sys\nif input() == 'flood':\n    while True: print('z' * 1000)\nprint('small')\n", {"flood", "ok"}},
        Equivalence{"infinite_loop", "if input() == 'spin':\n    while True: pass\nprint('done')\n", {"spin", "no"}},
        Equivalence{"memory_bomb", "x = []\nif input() == 'eat':\n    while True: x.append(bytearray(1 << 24))\nprint(len(x))\n", {"eat", "no"}, true},
        Equivalence{"socket_denied", "import socket\nsocket.socket()\n", {"", ""}},
        Equivalence{"ptrace_denied", "import ctypes\nctypes.CDLL(None).ptrace(0, 0, 0, 0)\n", {"", ""}, false, nullptr,
                    "system call 'ptrace' (101) is not allowed"},
        Equivalence{"exec_denied", "import os\nos.execv('/bin/true', ['true'])\n", {"", ""}, false, nullptr,
                    "exit code 1; an exec of another program was denied"},
        // A refused exec the program survives: same feedback (it was "an exec ... denied" one-shot
        // and a bare EPERM in the fork server).
        Equivalence{"exec_denied_caught",
                    "import os\ntry:\n    os.execv('/bin/true', ['true'])\nexcept PermissionError as e:\n    print('refused', e.errno)\n",
                    {"", ""}, false, "refused 1\n", "an exec of another program was denied"},
        // Thread stacks (2 MiB by default) and one malloc arena: 32 threads alive at once fit
        // under 256 MiB of address space, and the main thread still recurses deeply (64 MiB).
        Equivalence{"threads_under_256_mib",
                    "import resource, threading\nb = threading.Barrier(33)\n"
                    "ts = [threading.Thread(target=b.wait) for _ in range(32)]\nfor t in ts: t.start()\n"
                    "b.wait()\nfor t in ts: t.join()\nprint('joined', len(ts), resource.getrlimit(resource.RLIMIT_STACK))\n",
                    {"", ""}, false, "joined 32 (67108864, 67108864)\n", nullptr, 64},
        Equivalence{"deep_recursion",
                    "import sys, functools\nsys.setrecursionlimit(50000)\n"
                    "def g(n): return 0 if n == 0 else g(n - 1) + 1\n"
                    "@functools.lru_cache(None)\ndef f(n): return 0 if n == 0 else f(n - 1) + 1\nprint(g(49000), f(20000))\n",
                    {"", ""}, false, "49000 20000\n"},
        // /dev/shm: multiprocessing's locks (sem_open) and POSIX shared memory.
        Equivalence{"multiprocessing_pool",
                    "import multiprocessing\nwith multiprocessing.Pool(2) as p:\n    print(p.map(abs, [-1, -2, 3]))\n",
                    {"", ""}, false, "[1, 2, 3]\n"},
        // SharedMemory registers with multiprocessing's resource tracker, a second interpreter it
        // starts with exec (denied by design): a program that does without it has its segment.
        Equivalence{"shared_memory_segment",
                    "from multiprocessing import resource_tracker, shared_memory\n"
                    "resource_tracker.register = resource_tracker.unregister = lambda *a: None\n"
                    "s = shared_memory.SharedMemory(create=True, size=1 << 20)\ns.buf[:5] = b'hello'\n"
                    "t = shared_memory.SharedMemory(name=s.name)\nprint(bytes(t.buf[:5]).decode())\n"
                    "t.close()\ns.close()\ns.unlink()\nimport os\nprint(os.listdir('/dev/shm'))\n",
                    {"", ""}, false, "hello\n[]\n"},
        // What /proc shows: this namespace's processes and nothing host-wide.
        Equivalence{"proc_listing",
                    "import os\nprint(sorted(p for p in os.listdir('/proc') if not p.isdigit()))\n", {"", ""}, false,
                    "['self', 'thread-self']\n"},
        // The native loop forks without Python's after-fork hooks: the thread machinery must
        // still see one main thread that is this process.
        Equivalence{"threads_and_identity",
                    "import os, queue, threading\nt = threading.main_thread()\n"
                    "print(t is threading.current_thread(), t.ident == threading.get_ident(),\n"
                    "      t.native_id == threading.get_native_id() == os.getpid(), threading.active_count())\n"
                    "q = queue.Queue()\nlock = threading.Lock()\n"
                    "def work(n):\n    with lock:\n        q.put(sum(range(n)))\n"
                    "ts = [threading.Thread(target=work, args=(int(input()) + i,)) for i in range(3)]\n"
                    "for x in ts: x.start()\nfor x in ts: x.join()\n"
                    "print(sorted(q.get() for _ in ts), threading.active_count())\n",
                    {"10", "1000"}},
        // Descriptors, limits, ids, session and seccomp as a one-shot program has them. (Not
        // RLIMIT_NPROC: a one-shot run's limit counts its init stub, which runs as the program's
        // uid, so it reads one higher for the same number of processes.)
        Equivalence{"descriptors_limits_ids",
                    "import os, resource\nfds = []\ntry:\n    while True: fds.append(os.open('/dev/null', os.O_RDONLY))\n"
                    "except OSError as e:\n    print('fds', fds[0], len(fds), e.errno)\n"
                    "for r in ('CPU', 'FSIZE', 'NOFILE', 'CORE', 'AS'):\n"
                    "    print(r, resource.getrlimit(getattr(resource, 'RLIMIT_' + r)))\n"
                    "print(os.getresuid(), os.getresgid(), os.getgroups(), os.getcwd(), os.getppid(), os.getpgrp(), os.getsid(0))\n"
                    "print([l for l in open('/proc/self/status') if l.startswith(('NoNewPrivs', 'Seccomp:', 'Cap'))])\n",
                    {"", ""}}),
    [](const ::testing::TestParamInfo<Equivalence>& info) { return std::string(info.param.name); });

TEST(ForkServerIsolation, FilesDoNotLeakBetweenInputs) {
  const auto results = sandbox().run_batch(
      python("import os\nif input() == 'write':\n    open('/tmp/secret', 'w').write('s')\n    os.mkdir('/tmp/d')\n"
             "    os.chmod('/tmp/d', 0)\nprint(sorted(os.listdir('/tmp')))\n"),
      {"write", "read", "read"}, limits());
  require_fork_server(results);
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].stdout_data, "['d', 'secret']\n");
  EXPECT_EQ(results[1].stdout_data, "[]\n") << results[1].stderr_data;
  EXPECT_EQ(results[2].stdout_data, "[]\n");
}

TEST(ForkServerIsolation, NestedDirectoriesLinksAndLockedModesAreWiped) {
  // Everything a child leaves in /tmp is gone for the next one, without following its links.
  const auto results = sandbox().run_batch(
      python("import os\nif input() == 'write':\n"
             "    d = '/tmp/' + '/'.join(['n%d' % i for i in range(40)])\n    os.makedirs(d)\n"
             "    open(d + '/f', 'w').write('x')\n    os.chmod(d, 0)\n    os.chmod('/tmp/n0', 0o100)\n"
             "    os.symlink('/box', '/tmp/box_link')\n    os.symlink('/tmp/n0', '/tmp/dir_link')\n"
             "    open('/tmp/a', 'w').write('a')\n    os.link('/tmp/a', '/tmp/hard')\n"
             "print(sorted(os.listdir('/tmp')))\n"),
      {"write", "read", "read"}, limits());
  require_fork_server(results);
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].stdout_data, "['a', 'box_link', 'dir_link', 'hard', 'n0']\n") << results[0].stderr_data;
  for (int i = 1; i < 3; ++i) {
    EXPECT_TRUE(results[i].fork_server) << sandbox().fork_server_failure();
    EXPECT_EQ(results[i].stdout_data, "[]\n") << results[i].stderr_data;
  }
}

TEST(ForkServerIsolation, TreeTooDeepToWipeRetiresTheServer) {
  // Past the wipe's nesting bound the server gives up rather than hand the next child a dirty
  // /tmp; the inputs after it run one-shot, with the same results.
  const auto results = sandbox().run_batch(
      python("import os\nif input() == 'deep':\n    os.makedirs('/tmp/' + '/'.join(['d'] * 300))\n"
             "print(os.listdir('/tmp'))\n"),
      {"deep", "look", "look"}, limits());
  require_fork_server(results);
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].stdout_data, "['d']\n") << results[0].stderr_data;
  for (int i = 1; i < 3; ++i) {
    EXPECT_FALSE(results[i].fork_server);
    EXPECT_EQ(to_string(results[i].verdict), "ok") << results[i].message;
    EXPECT_EQ(results[i].stdout_data, "[]\n");
  }
  EXPECT_NE(sandbox().fork_server_failure().find("cleaning /tmp"), std::string::npos) << sandbox().fork_server_failure();
}

TEST(ForkServerIsolation, EachChildDrawsItsOwnRandomness) {
  const auto results = sandbox().run_batch(
      python("import os, random\nprint(random.getrandbits(64), os.urandom(8).hex())\n"), {"", "", "", ""}, limits());
  require_fork_server(results);
  std::set<std::string> seen;
  for (const auto& r : results) EXPECT_TRUE(seen.insert(r.stdout_data).second) << "repeated: " << r.stdout_data;
}

TEST(ForkServerIsolation, ConcurrentBatchesKeepTheirOwnInputsAndFiles) {
  // As the env server grades several responses at once: one fork server per batch, side by side.
  constexpr int kThreads = 3, kInputs = 12;
  std::vector<std::vector<RunResult>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([t, &results] {
      std::vector<std::string> inputs;
      for (int i = 0; i < kInputs; ++i) inputs.push_back(std::to_string(t) + " " + std::to_string(i));
      results[t] = sandbox().run_batch(
          python("import os\nt, i = input().split()\nopen('/tmp/mine', 'w').write(t + i)\n"
                 "print(t, i, sorted(os.listdir('/tmp')), open('/tmp/mine').read())\n"),
          inputs, limits());
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    require_fork_server(results[t]);
    ASSERT_EQ(results[t].size(), static_cast<std::size_t>(kInputs));
    for (int i = 0; i < kInputs; ++i) {
      const std::string a = std::to_string(t), b = std::to_string(i);
      EXPECT_EQ(results[t][i].stdout_data, a + " " + b + " ['mine'] " + a + b + "\n") << results[t][i].stderr_data;
      EXPECT_TRUE(results[t][i].fork_server);
    }
  }
}

TEST(ForkServerIsolation, NoProcessOutlivesItsInput) {
  const auto results = sandbox().run_batch(
      python("import os, time\nif input() == 'spawn':\n    if os.fork() == 0:\n        time.sleep(30)\n"
             "        os._exit(0)\n"
             "others = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid())]\n"
             "print(len(others))\n"),
      {"spawn", "look"}, limits());
  require_fork_server(results);
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].stdout_data, "1\n");
  EXPECT_EQ(results[1].stdout_data, "0\n") << "a process of the first input survived into the second";
}

TEST(ForkServerIsolation, InterpreterStateDoesNotLeak) {
  const auto results = sandbox().run_batch(
      python("import builtins, sys\nprint(hasattr(builtins, 'leak'), 'leak_mod' in sys.modules)\n"
             "builtins.leak = 1\nsys.modules['leak_mod'] = sys\n"),
      {"", "", ""}, limits());
  require_fork_server(results);
  for (const auto& r : results) EXPECT_EQ(r.stdout_data, "False False\n");
}

TEST(ForkServerIsolation, ChildCannotKillTheServer) {
  const auto results = sandbox().run_batch(
      python("import os, signal\nif input() == 'kill':\n    os.kill(1, signal.SIGKILL)\nprint('alive')\n"),
      {"kill", "after", "after"}, limits());
  require_fork_server(results);
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].verdict, Verdict::runtime_error);
  EXPECT_NE(results[0].stderr_data.find("PermissionError"), std::string::npos) << results[0].stderr_data;
  EXPECT_TRUE(results[1].fork_server);
  EXPECT_EQ(results[2].stdout_data, "alive\n");
}

TEST(ForkServerIsolation, StopsAtFirstFailure) {
  const auto results = sandbox().run_batch(python("v = int(input())\nassert v < 3\nprint(v)\n"),
                                           {"1", "2", "5", "1"}, limits(), true);
  require_fork_server(results);
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[2].verdict, Verdict::runtime_error);
}

TEST(ForkServerIsolation, ProgramArgumentsReachTheProgram) {
  Program p = python("import sys\nprint(sys.argv[1:])\n");
  p.args = {"--flag", "value"};
  const auto results = sandbox().run_batch(p, {"", ""}, limits());
  require_fork_server(results);
  EXPECT_EQ(results[1].stdout_data, "['--flag', 'value']\n");
  EXPECT_EQ(sandbox().run(p, "", limits()).stdout_data, "['--flag', 'value']\n");
}


// The server boots while it is moved into the batch's cgroup and forks nothing before the move is
// done: every child is in the batch's cgroup, not the supervisor's. The server then roots a cgroup
// namespace at the cgroup it is in, so a child in the same cgroup reads "/" (one elsewhere, say the
// supervisor's, would read a path relative to it, "/.." and up).
TEST(ForkServerIsolation, ChildrenRunInTheBatchsCgroup) {
  if (!sandbox().isolation().cgroup) GTEST_SKIP() << "no cgroups on this host";
  const auto results = sandbox().run_batch(
      python("for line in open('/proc/self/cgroup'):\n    if 'memory' in line.split(':')[1] or line.startswith('0::'):\n"
             "        print(line.strip())\n"),
      {"", "", ""}, limits());
  require_fork_server(results);
  for (const auto& r : results) {
    ASSERT_EQ(r.verdict, Verdict::ok) << r.stderr_data;
    EXPECT_FALSE(r.stdout_data.empty());
    std::istringstream lines(r.stdout_data);
    for (std::string line; std::getline(lines, line);)
      EXPECT_EQ(line.substr(line.size() - 2), ":/") << "a child ran outside the batch's cgroup: " << r.stdout_data;
    EXPECT_EQ(r.stdout_data, results[0].stdout_data) << "all children of a batch share its cgroup";
  }
}

// Program::setup runs before the program in its namespace (once in a fork server, first in a
// one-shot run); the program keeps its own file name and line numbers; both paths agree.
TEST(ForkServerSetup, RunsBeforeTheProgramInItsNamespaceAndAgreesWithOneShot) {
  Program p = python("import sys\nprint(greeting, counter[0], sys.argv[1:], __name__)\ncounter[0] += 1\nx = 1 // int(input())\n");
  p.setup = "import collections\ngreeting = 'hi'\ncounter = [0]\n";
  p.args = {"a"};
  const std::vector<std::string> inputs = {"1\n", "0\n", "1\n"};
  const auto batch = sandbox().run_batch(p, inputs, limits());
  require_fork_server(batch);
  ASSERT_EQ(batch.size(), 3u);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    SCOPED_TRACE("input " + std::to_string(i));
    const RunResult single = sandbox().run(p, inputs[i], limits());
    EXPECT_EQ(batch[i].stdout_data, "hi 0 ['a'] __main__\n") << "each child starts from the setup's state";
    EXPECT_EQ(batch[i].stdout_data, single.stdout_data);
    EXPECT_EQ(batch[i].stderr_data, single.stderr_data);
    EXPECT_EQ(to_string(batch[i].verdict), to_string(single.verdict));
  }
  EXPECT_EQ(batch[1].verdict, Verdict::runtime_error);
  EXPECT_NE(batch[1].stderr_data.find("File \"/box/main.py\", line 4, in <module>"), std::string::npos) << batch[1].stderr_data;
  EXPECT_NE(batch[1].stderr_data.find("ZeroDivisionError"), std::string::npos) << batch[1].stderr_data;
  // A failing setup fails every input the same way, reported like the program's own error.
  p.setup = "raise ValueError('setup failed')\n";
  const auto failed = sandbox().run_batch(p, {"", ""}, limits());
  ASSERT_EQ(failed.size(), 2u);
  const RunResult single = sandbox().run(p, "", limits());
  for (const auto& r : failed) {
    EXPECT_EQ(r.verdict, Verdict::runtime_error);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.stderr_data.find("ValueError: setup failed"), std::string::npos) << r.stderr_data;
    EXPECT_EQ(r.stderr_data, single.stderr_data);
  }
  // Setup is for Python only.
  Program cpp;
  cpp.language = Language::cpp;
  cpp.source = "int main(){}";
  cpp.setup = "x = 1";
  EXPECT_EQ(sandbox().run(cpp, "", limits()).verdict, Verdict::sandbox_error);
}

// --- Warm fork servers (Config::warm_fork_servers): one server serves batch after batch -------

// Runs `first` then `second` (different programs) with the same limits and checks that the second
// ran on the server the first left warm: every isolation check below is about two batches on one
// interpreter, so it must not pass merely because the second batch got a fresh server.
void require_same_warm_server(const std::vector<RunResult>& first, const std::vector<RunResult>& second) {
  require_fork_server(first);
  ASSERT_FALSE(second.empty());
  ASSERT_TRUE(second[0].fork_server) << sandbox().fork_server_failure();
  ASSERT_EQ(second[0].fork_server_id, first[0].fork_server_id)
      << "the second batch did not reuse the first one's warm server: " << sandbox().fork_server_failure();
  ASSERT_EQ(second[0].fork_server_batch, first[0].fork_server_batch + 1);
  for (const auto& r : second) EXPECT_EQ(r.fork_server_id, second[0].fork_server_id);
}

TEST(WarmForkServer, ReusedAcrossBatchesOfDifferentPrograms) {
  const auto a = sandbox().run_batch(python("print('a', input())\n"), {"1", "2"}, limits());
  const auto b = sandbox().run_batch(python("print('b', int(input()) * 2)\n"), {"3", "4", "5"}, limits());
  require_same_warm_server(a, b);
  EXPECT_GE(b[0].fork_server_batch, 2u);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(a[1].stdout_data, "a 2\n");
  EXPECT_EQ(b[0].stdout_data, "b 6\n");
  EXPECT_EQ(b[2].stdout_data, "b 10\n");
}

// What one batch does to files, processes, the interpreter and its modules, the environment and
// its own program, a later batch on the same server does not see (as between inputs, Isolation).
TEST(WarmForkServer, BatchesDoNotSeeEachOther) {
  const char* hostile =
      "import builtins, collections, json, os, sys, time, random\n"
      "open('/tmp/left', 'w').write('x')\nos.makedirs('/tmp/d/e')\nos.chmod('/tmp/d', 0)\n"
      "os.symlink('/box', '/tmp/box_link')\n"
      "if os.fork() == 0:\n    time.sleep(30)\n    os._exit(0)\n"
      "builtins.print = lambda *a, **k: sys.stdout.write('patched\\n')\n"
      "builtins.leak = 1\nsys.modules['collections'] = sys\ncollections.deque = None\n"
      "json.dumps = None\nrandom.seed(0)\nos.environ['LEAK'] = '1'\nsys.setrecursionlimit(50)\n"
      "try:\n    open('/box/main.py', 'w')\nexcept OSError as e:\n    sys.stdout.write('box %d\\n' % e.errno)\n"
      "print('hostile')\n";
  const char* probe =
      "import builtins, collections, json, os, sys, random\n"
      "others = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid())]\n"
      "print(sorted(os.listdir('/tmp')), len(others))\n"
      "print(type(print).__name__, hasattr(builtins, 'leak'), collections.__name__, collections.deque.__name__)\n"
      "print(json.dumps([1]), 'LEAK' in os.environ, sys.getrecursionlimit() > 50, random.random() != 0.8444218515250481)\n"
      "print(sorted(os.listdir('/box')), open('/box/main.py').read() == open(__file__).read())\n";
  const auto a = sandbox().run_batch(python(hostile), {"", ""}, limits());
  require_fork_server(a);
  for (const auto& r : a) EXPECT_EQ(r.stdout_data, "box 30\npatched\n") << r.stderr_data;
  const auto b = sandbox().run_batch(python(probe), {"", ""}, limits());
  require_same_warm_server(a, b);
  for (const auto& r : b) {
    EXPECT_EQ(r.verdict, Verdict::ok) << r.stderr_data;
    EXPECT_EQ(r.stdout_data,
              "[] 0\n"
              "builtin_function_or_method False collections deque\n"
              "[1] False True True\n"
              "['batch', 'filter.bpf', 'main.py', 'native.so', 'prelude.py', 'setup.py'] True\n")
        << r.stderr_data;
  }
}

// Setup, arguments and limits are the batch's own: nothing of the previous batch's carries over.
TEST(WarmForkServer, SetupArgumentsAndLimitsArePerBatch) {
  Program first = python("import sys, resource\nprint(globals().get('greeting'), sys.argv[1:], resource.getrlimit(resource.RLIMIT_NOFILE))\n");
  first.setup = "greeting = 'hi'\n";
  first.args = {"x", "y"};
  Limits first_limits = limits();
  first_limits.max_open_files = 64;
  const auto a = sandbox().run_batch(first, {"", ""}, first_limits);
  Program second = python(first.source);
  Limits second_limits = limits();
  second_limits.max_open_files = 32;
  const auto b = sandbox().run_batch(second, {"", ""}, second_limits);
  require_same_warm_server(a, b);
  EXPECT_EQ(a[0].stdout_data, "hi ['x', 'y'] (64, 64)\n") << a[0].stderr_data;
  EXPECT_EQ(b[0].stdout_data, "None [] (32, 32)\n") << b[0].stderr_data;
  // The CPU limit too: 0.6 s of CPU passes under 2 s, then fails under 0.3 s on the same server.
  const Program spin = python("import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6:\n    pass\nprint('done')\n");
  Limits roomy = limits();
  roomy.cpu_time_s = 2;
  Limits tight = limits();
  tight.cpu_time_s = 0.3;
  const auto c = sandbox().run_batch(spin, {"", ""}, roomy);
  const auto d = sandbox().run_batch(spin, {"", ""}, tight);
  require_same_warm_server(c, d);
  for (const auto& r : c) EXPECT_EQ(r.verdict, Verdict::ok) << to_json(r).dump();
  for (const auto& r : d) EXPECT_EQ(r.verdict, Verdict::time_limit) << to_json(r).dump();
}

TEST(WarmForkServer, KeptPerMemoryLimit) {
  const Program p = python("import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0] >> 20)\n");
  Limits small = limits(), large = limits();
  small.memory_mb = 200;
  large.memory_mb = 300;
  const auto a = sandbox().run_batch(p, {"", ""}, small);
  const auto b = sandbox().run_batch(p, {"", ""}, large);
  const auto c = sandbox().run_batch(p, {"", ""}, small);
  require_fork_server(a);
  EXPECT_EQ(a[0].stdout_data, "200\n");
  EXPECT_EQ(b[0].stdout_data, "300\n");
  EXPECT_NE(a[0].fork_server_id, b[0].fork_server_id);
  require_same_warm_server(a, c);
}

// Retirement after Config::warm_fork_server_batches batches and after the idle time; with
// warm_fork_servers = 0 every batch gets a server of its own, as before warm servers.
TEST(WarmForkServer, RetiredAfterItsBatchesOrIdleTimeAndOffWhenDisabled) {
  if (!sandbox().isolation().pid_namespace) GTEST_SKIP() << "fork server needs namespaces";
  const Program p = python("print(input())\n");
  Config config;
  config.warm_fork_server_batches = 2;
  config.warm_fork_server_idle_s = 0.5;
  config.prespawned = 0;
  config.outside_id_base = sandbox().config().outside_id_base + 32768;  // not the shared sandbox's ids
  {
    Sandbox own(config);
    std::vector<unsigned long> ids;
    for (int i = 0; i < 3; ++i) ids.push_back(own.run_batch(p, {"1", "2"}, limits()).at(0).fork_server_id);
    EXPECT_EQ(ids[0], ids[1]);
    EXPECT_NE(ids[1], ids[2]) << "served more than warm_fork_server_batches batches";
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    EXPECT_NE(own.run_batch(p, {"1", "2"}, limits()).at(0).fork_server_id, ids[2]) << "not retired when idle";
  }
  config.warm_fork_servers = 0;
  Sandbox cold(config);
  const auto a = cold.run_batch(p, {"1", "2"}, limits());
  const auto b = cold.run_batch(p, {"1", "2"}, limits());
  ASSERT_TRUE(a[0].fork_server && b[0].fork_server) << cold.fork_server_failure();
  EXPECT_EQ(a[0].fork_server_batch, 1u);
  EXPECT_EQ(b[0].fork_server_batch, 1u);
  EXPECT_NE(a[0].fork_server_id, b[0].fork_server_id);
  EXPECT_EQ(b[1].stdout_data, "2\n");
}

// Program::prelude runs once per server (a warm one: at its start; servers are kept per
// prelude), its module is each child's own copy: what one child or batch does to it, no other
// sees. The same results one-shot.
TEST(WarmForkServer, PreludeIsSharedButNeverChanged) {
  Program p = python("m = __prelude__\nprint(m.names, m.counter, sorted(k for k in vars(m) if not k.startswith('__')))\n"
                     "m.counter += 1\nm.names.append(input())\nm.extra = 1\n");
  p.prelude = "import collections\nnames = []\ncounter = 0\n";
  const auto a = sandbox().run_batch(p, {"x", "y"}, limits());
  const auto b = sandbox().run_batch(p, {"z", "w"}, limits());
  require_same_warm_server(a, b);
  for (const auto* batch : {&a, &b})
    for (const auto& r : *batch) EXPECT_EQ(r.stdout_data, "[] 0 ['collections', 'counter', 'names']\n") << r.stderr_data;
  EXPECT_EQ(sandbox().run(p, "x", limits()).stdout_data, a[0].stdout_data);
  // Another prelude (or none) gets another server.
  Program q = python("print('__prelude__' in globals())\n");
  const auto c = sandbox().run_batch(q, {"", ""}, limits());
  require_fork_server(c);
  EXPECT_NE(c[0].fork_server_id, a[0].fork_server_id);
  EXPECT_EQ(c[0].stdout_data, "False\n");
  // A failing prelude fails every input like the program's own error would, one-shot alike.
  p.prelude = "raise KeyError('prelude')\n";
  const auto d = sandbox().run_batch(p, {"", ""}, limits());
  const RunResult single = sandbox().run(p, "", limits());
  ASSERT_EQ(d.size(), 2u);
  for (const auto& r : d) {
    EXPECT_EQ(r.verdict, Verdict::runtime_error);
    EXPECT_NE(r.stderr_data.find("KeyError: 'prelude'"), std::string::npos) << r.stderr_data;
    EXPECT_EQ(r.stderr_data, single.stderr_data);
  }
}

// A batch that leaves a tree too deep to wipe retires its warm server; the next batch gets a
// fresh one and a clean /tmp.
TEST(WarmForkServer, UncleanableServerIsNotReused) {
  const auto a = sandbox().run_batch(
      python("import os\nos.makedirs('/tmp/' + '/'.join(['d'] * 300), exist_ok=True)\nprint('deep')\n"), {"", ""}, limits());
  require_fork_server(a);
  const auto b = sandbox().run_batch(python("import os\nprint(os.listdir('/tmp'))\n"), {"", ""}, limits());
  require_fork_server(b);
  EXPECT_NE(b[0].fork_server_id, a[0].fork_server_id);
  for (const auto& r : b) EXPECT_EQ(r.stdout_data, "[]\n");
}

}  // namespace
}  // namespace distil::sandbox
