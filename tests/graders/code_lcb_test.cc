// LiveCodeBench semantics of the code grader (issue 14), on real programs in the real sandbox:
// exit()/quit(), LCB's import block and recursion limit, no 64 KiB output cap, functional results
// compared with Python's == outside the candidate's process (never calling the candidate's __eq__),
// one process for all functional tests, and feedback a teacher can use (user frames and line
// numbers, the exception line kept, signals and exit codes named, the output limit named). Also
// the cases where LiveCodeBench's harness is wrong and distil is deliberately right.
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "graders/code_values.h"
#include "graders/grader.h"
#include "tests/graders/shared_sandbox.h"

using namespace distil;
using distil::test::shared_sandbox;

namespace {

struct Io {
  std::string input, output;
};

tasks::Task stdin_task(const std::vector<Io>& tests) {
  nlohmann::json t = nlohmann::json::array();
  for (const auto& io : tests) t.push_back({{"input", io.input}, {"output", io.output}});
  return tasks::task_from_json({{"id", "s"}, {"domain", "code"}, {"prompt", "p"}, {"tests", t}});
}

tasks::Task functional_task(const std::string& func, const std::vector<Io>& tests) {
  nlohmann::json t = nlohmann::json::array();
  for (const auto& io : tests) t.push_back({{"input", io.input}, {"output", io.output}, {"type", "functional"}});
  return tasks::task_from_json(
      {{"id", "f"}, {"domain", "code"}, {"prompt", "p"}, {"tests", t}, {"metadata", {{"func_name", func}}}});
}

graders::GradeResult grade(const tasks::Task& task, const std::string& code, graders::GradeOptions options = {}) {
  graders::GradeContext context{shared_sandbox(nullptr)};
  return graders::grade(graders::Registry::builtin(), task, "```python\n" + code + "\n```\n", options, context);
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

const std::vector<Io> kSum = {{"1 2\n", "3\n"}, {"10 -4\n", "6\n"}, {"7 8\n", "15\n"}};

}  // namespace

// ---- stdin programs -------------------------------------------------------------------------

TEST(CodeLcb, ExitAndQuitEndTheProgramAsInLiveCodeBench) {
  REQUIRE_SANDBOX();
  for (const std::string& code : {std::string("a, b = map(int, input().split())\nprint(a + b)\nexit()\nprint('not reached')"),
                                  std::string("a, b = map(int, input().split())\nprint(a + b)\nquit()"),
                                  std::string("a, b = map(int, input().split())\nprint(a + b)\nexit(0)"),
                                  std::string("import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit()")}) {
    auto r = grade(stdin_task(kSum), code);
    EXPECT_EQ(r.verdict, "accepted") << code << "\n" << r.feedback;
  }
  // exit(3) is a nonzero exit: named in the feedback.
  auto r = grade(stdin_task(kSum), "exit(3)");
  EXPECT_EQ(r.verdict, "runtime_error") << r.feedback;
  EXPECT_TRUE(has(r.feedback, "exit code 3")) << r.feedback;
  EXPECT_FALSE(has(r.feedback, "NameError")) << r.feedback;
}

TEST(CodeLcb, LiveCodeBenchImportsAndRecursionLimitForStdinPrograms) {
  REQUIRE_SANDBOX();
  // No import line at all: every name comes from LCB's import block.
  const std::string code =
      "a, b = map(int, stdin.readline().split())\n"
      "q = deque([a]); q.append(b)\n"
      "h = []; heappush(h, b); heappush(h, a)\n"
      "c = Counter([a, b]); d = defaultdict(int); d[a] += 1\n"
      "assert gcd(12, 18) == 6 and floor(sqrt(16)) == 4 and inf > 10**18\n"
      "assert list(accumulate([1, 2])) == [1, 3] and bisect_left([1, 3], 2) == 1\n"
      "assert deepcopy([1]) == [1] and itemgetter(0)([5]) == 5 and mean([1, 3]) == 2\n"
      "assert isinstance(randint(1, 2), int) and ascii_lowercase[0] == 'a'\n"
      "@lru_cache(None)\n"
      "def depth(n):\n"
      "    return 0 if n == 0 else 1 + depth(n - 1)\n"
      "def plain(n):\n"
      "    return 0 if n == 0 else 1 + plain(n - 1)\n"
      "assert plain(20000) == 20000\n"
      "print(sum(q))\n";
  auto r = grade(stdin_task(kSum), code);
  EXPECT_EQ(r.verdict, "accepted") << r.feedback;
}

TEST(CodeLcb, TracebacksCarryTheUsersLineNumbersAndNoRunnerFrames) {
  REQUIRE_SANDBOX();
  auto r = grade(stdin_task(kSum), "x = 1\ny = 0\nprint(x // y)");
  EXPECT_EQ(r.verdict, "runtime_error");
  EXPECT_TRUE(has(r.feedback, "line 3")) << r.feedback;
  EXPECT_TRUE(has(r.feedback, "print(x // y)")) << "the source line is shown\n" << r.feedback;
  EXPECT_TRUE(has(r.feedback, "ZeroDivisionError: integer division or modulo by zero")) << r.feedback;
  EXPECT_FALSE(has(r.feedback, "_main")) << r.feedback;
  EXPECT_FALSE(has(r.feedback, "exec(")) << r.feedback;
  // A syntax error: the message and the user's line, no traceback of ours.
  r = grade(stdin_task(kSum), "x = 1\nprint((x)\n");
  EXPECT_EQ(r.verdict, "runtime_error");
  EXPECT_TRUE(has(r.feedback, "SyntaxError")) << r.feedback;
  EXPECT_TRUE(has(r.feedback, "line 2")) << r.feedback;
  EXPECT_FALSE(has(r.feedback, "_compile_source")) << r.feedback;
}

TEST(CodeLcb, LongTracebacksKeepTheExceptionLine) {
  REQUIRE_SANDBOX();
  auto r = grade(stdin_task(kSum), "def f(n):\n    return f(n + 1) + 1\nprint(f(0))");
  EXPECT_EQ(r.verdict, "runtime_error");
  EXPECT_TRUE(has(r.feedback, "RecursionError: maximum recursion depth exceeded")) << r.feedback;
  EXPECT_TRUE(has(r.feedback, "Traceback (most recent call last)")) << "the head stays too\n" << r.feedback;
  // Long chained exceptions: the middle is cut, the last exception line survives.
  r = grade(stdin_task(kSum),
            "def g(k):\n"
            "    try:\n"
            "        raise ValueError('inner ' + 'x' * 1000)\n"
            "    except ValueError:\n"
            "        raise KeyError('the last one')\n"
            "g(1)");
  EXPECT_TRUE(has(r.feedback, "KeyError: 'the last one'")) << r.feedback;
  EXPECT_TRUE(has(r.feedback, "characters cut")) << r.feedback;
}

TEST(CodeLcb, SignalsAndExitCodesAreNamed) {
  REQUIRE_SANDBOX();
  auto r = grade(stdin_task(kSum), "import ctypes\nctypes.string_at(0)");
  EXPECT_EQ(r.verdict, "runtime_error");
  EXPECT_TRUE(has(r.feedback, "killed by signal SIGSEGV")) << r.feedback;
  if (getenv("SHOW_FEEDBACK")) std::cout << r.feedback << "\n----\n";
  r = grade(stdin_task(kSum), "import os\nos.abort()");
  EXPECT_EQ(r.verdict, "runtime_error");
  EXPECT_TRUE(has(r.feedback, "killed by signal SIGABRT")) << r.feedback;
  r = grade(stdin_task(kSum), "import sys\nsys.exit(1)");
  EXPECT_EQ(r.verdict, "runtime_error");
  EXPECT_TRUE(has(r.feedback, "No error output; the program ended with exit code 1.")) << r.feedback;
  if (getenv("SHOW_FEEDBACK")) std::cout << r.feedback << "\n----\n";
  r = grade(stdin_task(kSum), "import sys\nsys.exit('bad input')");
  EXPECT_TRUE(has(r.feedback, "bad input")) << r.feedback;
  EXPECT_TRUE(has(r.feedback, "exit code 1")) << r.feedback;
  if (getenv("SHOW_FEEDBACK")) std::cout << r.feedback << "\n----\n";
}

TEST(CodeLcb, LargeOutputIsGradedAndTheOutputLimitIsNamed) {
  REQUIRE_SANDBOX();
  // ~1.3 MB of correct output: far over the old 64 KiB cap; LiveCodeBench has none.
  std::string expected;
  for (int i = 0; i < 200000; ++i) expected += std::to_string(i) + "\n";
  auto r = grade(stdin_task({{"200000\n", expected}}), "n = int(input())\nprint('\\n'.join(map(str, range(n))))");
  EXPECT_EQ(r.verdict, "accepted") << r.feedback.substr(0, 500);
  r = grade(stdin_task({{"1\n", "1\n"}}), "import sys\nsys.stdout.write('x' * (40 << 20))");
  EXPECT_EQ(r.verdict, "output_limit") << r.feedback.substr(0, 500);
  EXPECT_TRUE(has(r.feedback, "Output Limit Exceeded (limit 32 MiB of output)")) << r.feedback.substr(0, 500);
}

TEST(CodeLcb, WhereLiveCodeBenchsHarnessIsWrongDistilRunsTheProgramAsPythonDoes) {
  REQUIRE_SANDBOX();
  // Each of these fails under LCB's stdin mock or its wrapping into a function; each is correct.
  const std::vector<std::string> programs = {
      "import sys\nfor line in sys.stdin:\n    a, b = map(int, line.split())\n    print(a + b)",         // iterate stdin
      "import sys\na, b = map(int, sys.stdin.buffer.readline().split())\nprint(a + b)",                 // buffer.readline
      "a, b = map(int, open(0).read().split())\nprint(a + b)",                                            // open(0)
      "import sys\na, b = map(int, input().split())\nsys.stdout.buffer.write(b'%d\\n' % (a + b))",       // stdout.buffer
      "total = 0\ndef add(x):\n    global total\n    total += x\nfor v in input().split():\n    add(int(v))\nprint(total)",
      "def main():\n    a, b = map(int, input().split())\n    print(a + b)\nif __name__ == '__main__':\n    main()",
  };
  for (const auto& code : programs) {
    auto r = grade(stdin_task(kSum), code);
    EXPECT_EQ(r.verdict, "accepted") << code << "\n" << r.feedback;
  }
  // A ``` inside a line of the program (or of prose) does not end the code block.
  graders::GradeContext context{shared_sandbox(nullptr)};
  auto r = graders::grade(graders::Registry::builtin(), stdin_task({{"", "a```b\n"}}),
                          "Use a fenced block like ```python.\n```python\nprint('a```b')\n```\n", {}, context);
  EXPECT_EQ(r.verdict, "accepted") << r.feedback;
}

// ---- functional programs --------------------------------------------------------------------

TEST(CodeLcb, FunctionalComparisonIsPythonEquality) {
  REQUIRE_SANDBOX();
  auto ok = [](const std::string& expected, const std::string& ret) {
    auto r = grade(functional_task("f", {{"0", expected}}), "class Solution:\n    def f(self, x):\n        return " + ret);
    EXPECT_TRUE(r.verdict == "accepted" || r.verdict == "wrong_answer") << r.feedback;
    return r.passed;
  };
  EXPECT_TRUE(ok("true", "1")) << "1 == True";
  EXPECT_TRUE(ok("1", "True"));
  EXPECT_TRUE(ok("2", "2.0"));
  EXPECT_TRUE(ok("2.5", "2.5"));
  EXPECT_TRUE(ok("[1, 2]", "(1, 2)")) << "a top-level tuple is a list";
  EXPECT_FALSE(ok("[[1, 2]]", "[(1, 2)]")) << "a nested tuple is not";
  EXPECT_FALSE(ok("9007199254740993", "float(9007199254740993)")) << "int and float compare exactly";
  EXPECT_TRUE(ok("9007199254740992", "float(9007199254740992)"));
  EXPECT_TRUE(ok("123456789012345678901234567890", "123456789012345678901234567890"));
  EXPECT_FALSE(ok("123456789012345678901234567890", "123456789012345678901234567891"));
  EXPECT_TRUE(ok("{\"a\": 1, \"b\": [true]}", "{'b': [1], 'a': 1.0}"));
  EXPECT_FALSE(ok("{\"1\": 1}", "{1: 1}"));
  EXPECT_FALSE(ok("\"1\"", "1"));
  EXPECT_FALSE(ok("null", "0"));
  EXPECT_TRUE(ok("null", "None"));
  EXPECT_FALSE(ok("[1, 2]", "[2, 1]"));
  EXPECT_TRUE(ok("\"h\\u00e9\\ud83d\\ude00\"", "'h\\u00e9\\U0001F600'"));
  EXPECT_FALSE(ok("0.30000000000000004", "0.3"));
  EXPECT_TRUE(ok("1e400", "float('inf')")) << "json.loads reads 1e400 as inf";
  EXPECT_FALSE(ok("NaN", "float('nan')")) << "nan != nan";
}

TEST(CodeLcb, FunctionalNeverCallsTheCandidatesEquality) {
  REQUIRE_SANDBOX();
  const std::string always_equal =
      "class Anything:\n"
      "    def __eq__(self, other): return True\n"
      "    def __ne__(self, other): return False\n"
      "    __hash__ = None\n"
      "class Solution:\n"
      "    def twoSum(self, nums, target):\n"
      "        return Anything()\n";
  const auto task = functional_task("twoSum", {{"[2,7,11,15]\n9", "[0, 1]"}, {"[3,2,4]\n6", "[1, 2]"}});
  auto r = grade(task, always_equal);
  EXPECT_EQ(r.verdict, "wrong_answer") << r.feedback;
  EXPECT_TRUE(has(r.feedback, "an object of type Anything")) << r.feedback;
  // A subclass of a plain type is not plain either, nor a plain container holding one.
  r = grade(task, "class I(int):\n    def __eq__(self, o): return True\nclass Solution:\n    def twoSum(self, nums, target):\n        return [I(0), I(1)]");
  EXPECT_EQ(r.verdict, "wrong_answer") << r.feedback;
  EXPECT_TRUE(has(r.feedback, "type I")) << r.feedback;
  r = grade(task, "class L(list):\n    def __eq__(self, o): return True\nclass Solution:\n    def twoSum(self, nums, target):\n        return L()");
  EXPECT_EQ(r.verdict, "wrong_answer") << r.feedback;
  // Patching what the runner might use does not change the comparison, which happens outside.
  r = grade(task,
            "import builtins, json\n"
            "builtins.type = lambda *a: int\n"
            "builtins.isinstance = lambda *a: True\n"
            "json.dumps = lambda *a, **k: '[0, 1]'\n"
            "class Solution:\n"
            "    def twoSum(self, nums, target):\n"
            "        return [5, 5]\n");
  EXPECT_FALSE(r.passed) << r.feedback;
}

TEST(CodeLcb, SetsAndOtherResultsAreComparedOrNamedNeverAHarnessCrash) {
  REQUIRE_SANDBOX();
  auto r = grade(functional_task("f", {{"3", "[0, 1, 2]"}}), "def f(n):\n    return set(range(n))");
  EXPECT_EQ(r.verdict, "wrong_answer") << r.feedback;
  EXPECT_TRUE(has(r.feedback, "Output:\n{0, 1, 2}")) << r.feedback;
  EXPECT_FALSE(has(r.feedback, "JSON serializable")) << r.feedback;
  r = grade(functional_task("f", {{"3", "[0, 1, 2]"}}), "def f(n):\n    return iter(range(n))");
  EXPECT_EQ(r.verdict, "wrong_answer") << r.feedback;
  EXPECT_TRUE(has(r.feedback, "an object of type range_iterator")) << r.feedback;
  r = grade(functional_task("f", {{"3", "[0, 1, 2]"}}), "def f(n):\n    x = []\n    x.append(x)\n    return x");
  EXPECT_EQ(r.verdict, "wrong_answer") << r.feedback;
}

TEST(CodeLcb, FunctionalTestsShareOneProcessAsOnLeetCode) {
  REQUIRE_SANDBOX();
  const auto task = functional_task("f", {{"0", "1"}, {"0", "2"}, {"0", "3"}});
  auto r = grade(task, "calls = []\nclass Solution:\n    def f(self, x):\n        calls.append(x)\n        return len(calls)");
  EXPECT_EQ(r.verdict, "accepted") << "module state persists between tests\n" << r.feedback;
  r = grade(task, "class Solution:\n    def __init__(self): self.n = 0\n    def f(self, x):\n        self.n += 1\n        return self.n");
  EXPECT_EQ(r.verdict, "accepted") << "one Solution() instance serves every test\n" << r.feedback;
}

TEST(CodeLcb, FunctionalCodeIsNotMainAndHasTheImports) {
  REQUIRE_SANDBOX();
  const auto task = functional_task("maxGcd", {{"[4, 6, 9]", "3"}, {"[5, 10]", "5"}});
  const std::string code =
      "class Solution:\n"
      "    def maxGcd(self, nums: List[int]) -> int:\n"
      "        c = Counter(nums)\n"
      "        return max(gcd(a, b) for a, b in combinations(nums, 2))\n"
      "if __name__ == '__main__':\n"
      "    print(Solution().maxGcd(list(map(int, input().split()))))\n";
  auto r = grade(task, code);
  EXPECT_EQ(r.verdict, "accepted") << r.feedback;
}

TEST(CodeLcb, FunctionalFeedbackShowsOnlyUserFramesWithUserLineNumbers) {
  REQUIRE_SANDBOX();
  const auto task = functional_task("f", {{"1", "1"}, {"0", "0"}});
  auto r = grade(task,
                 "class Solution:\n"
                 "    def f(self, x):\n"
                 "        print('dbg', x)\n"
                 "        return helper(x)\n"
                 "def helper(x):\n"
                 "    return 1 // x\n");
  EXPECT_EQ(r.verdict, "runtime_error") << r.feedback;
  EXPECT_TRUE(has(r.feedback, "Test Case 2: Runtime Error")) << r.feedback;
  EXPECT_TRUE(has(r.feedback, "line 4, in f")) << r.feedback;
  EXPECT_TRUE(has(r.feedback, "line 6, in helper")) << r.feedback;
  EXPECT_TRUE(has(r.feedback, "ZeroDivisionError")) << r.feedback;
  EXPECT_FALSE(has(r.feedback, "_main")) << r.feedback;
  EXPECT_FALSE(has(r.feedback, "harness")) << r.feedback;
  EXPECT_TRUE(has(r.feedback, "Debug Output:\ndbg 0")) << "test 2's own prints\n" << r.feedback;
  EXPECT_FALSE(has(r.feedback, "dbg 1")) << "not test 1's\n" << r.feedback;
  EXPECT_EQ(r.details["tests_passed"], 1);
  // An error while loading the code fails every test with its traceback.
  r = grade(task, "x = [1]\ny = x[5]\ndef f(x): return x\n");
  EXPECT_EQ(r.verdict, "runtime_error") << r.feedback;
  EXPECT_TRUE(has(r.feedback, "line 2")) << r.feedback;
  EXPECT_TRUE(has(r.feedback, "IndexError")) << r.feedback;
  r = grade(task, "def g(x): return x\n");
  EXPECT_EQ(r.verdict, "runtime_error") << r.feedback;
  EXPECT_TRUE(has(r.feedback, "does not define a function f")) << r.feedback;
}

TEST(CodeLcb, FunctionalLimitsAndCrashesAreChargedToTheTestThatCausedThem) {
  REQUIRE_SANDBOX();
  graders::GradeOptions options;
  options.per_test_timeout_s = 1;
  const auto task = functional_task("f", {{"1", "1"}, {"0", "0"}, {"2", "2"}});
  auto r = grade(task, "def f(x):\n    while x == 0:\n        pass\n    return x", options);
  EXPECT_EQ(r.verdict, "time_limit") << r.feedback;
  EXPECT_TRUE(has(r.feedback, "Test Case 2: Time Limit Exceeded (limit 1 s CPU)")) << r.feedback;
  EXPECT_EQ(r.details["tests_passed"], 1);
  // A timeout the program swallows is still a timeout.
  r = grade(task, "def f(x):\n    try:\n        while x == 0:\n            pass\n    except BaseException:\n        pass\n    return x",
            options);
  EXPECT_EQ(r.verdict, "time_limit") << r.feedback;
  r = grade(task, "import ctypes\ndef f(x):\n    if x == 0:\n        ctypes.string_at(0)\n    return x", options);
  EXPECT_EQ(r.verdict, "runtime_error") << r.feedback;
  EXPECT_TRUE(has(r.feedback, "Test Case 2: Runtime Error")) << r.feedback;
  EXPECT_TRUE(has(r.feedback, "killed by signal SIGSEGV")) << r.feedback;
  if (getenv("SHOW_FEEDBACK")) std::cout << r.feedback << "\n----\n";
  r = grade(task, "def f(x):\n    if x == 0:\n        exit(0)\n    return x", options);
  EXPECT_EQ(r.verdict, "runtime_error") << r.feedback;
  EXPECT_TRUE(has(r.feedback, "SystemExit")) << r.feedback;
  // run_all_tests goes past a failure in the same process.
  options.run_all_tests = true;
  r = grade(task, "def f(x):\n    return x // x * x", options);
  EXPECT_EQ(r.details["tests_run"], 3) << r.feedback;
  EXPECT_EQ(r.details["tests_passed"], 2) << r.feedback;
}

// ---- the comparison itself, without a sandbox ---------------------------------------------------

TEST(CodeValues, PythonJsonAndEquality) {
  using graders::code::parse_python_json;
  using graders::code::parse_tagged_result;
  using graders::code::python_equal;
  using graders::code::python_repr;
  auto eq = [](const std::string& tagged, const std::string& json) {
    auto a = parse_tagged_result(tagged);
    auto b = parse_python_json(json);
    EXPECT_TRUE(a && b) << tagged << " / " << json;
    return a && b && python_equal(*a, *b);
  };
  EXPECT_TRUE(eq("true", "1"));
  EXPECT_TRUE(eq("1.0", "1"));
  EXPECT_FALSE(eq("1.5", "1"));
  EXPECT_TRUE(eq("{\"i\": \"-100000000000000000000000\"}", "-100000000000000000000000"));
  EXPECT_FALSE(eq("{\"t\": [1, 2]}", "[1, 2]")) << "only the grader turns a top-level tuple into a list";
  EXPECT_TRUE(eq("{\"d\": [[\"a\", 1], [\"b\", 2]]}", "{\"b\": 2, \"a\": 1}"));
  EXPECT_FALSE(eq("{\"d\": [[1, 1]]}", "{\"1\": 1}"));
  EXPECT_FALSE(eq("{\"s\": [1, 2]}", "[1, 2]"));
  EXPECT_TRUE(eq("{\"f\": \"inf\"}", "Infinity"));
  EXPECT_FALSE(eq("{\"f\": \"nan\"}", "NaN"));
  EXPECT_TRUE(eq("[]", "[]"));
  EXPECT_FALSE(eq("[]", "{}"));
  auto dup = parse_python_json("{\"a\": 1, \"a\": 2}");
  ASSERT_TRUE(dup);
  EXPECT_TRUE(python_equal(*parse_tagged_result("{\"d\": [[\"a\", 2]]}"), *dup)) << "json.loads keeps the last value";
  // Sets compare by membership, including equal numbers of different types.
  EXPECT_TRUE(python_equal(*parse_tagged_result("{\"s\": [1, 2.0]}"), *parse_tagged_result("{\"z\": [2, true]}")));
  EXPECT_EQ(python_repr(*parse_tagged_result("{\"t\": [1, \"a'b\", null, {\"s\": []}, {\"t\": [2]}]}")),
            "(1, \"a'b\", None, set(), (2,))");
  EXPECT_EQ(python_repr(*parse_tagged_result("{\"d\": [[\"k\", [true, 2.5]]]}")), "{'k': [True, 2.5]}");
  // Hostile text never throws and is bounded.
  EXPECT_FALSE(parse_python_json(std::string(100000, '[')));
  EXPECT_FALSE(parse_tagged_result("{\"q\": 1}"));
  EXPECT_FALSE(parse_python_json("[1,]"));
  EXPECT_FALSE(parse_python_json("\"\x01\""));
  EXPECT_FALSE(parse_python_json("01"));
}

TEST(CodeValues, HostileTextNeverThrowsAndDeepResultsStillCompare) {
  using graders::code::parse_python_json;
  using graders::code::parse_tagged_result;
  using graders::code::python_equal;
  using graders::code::python_repr;
  std::uint64_t state = 0x9e3779b97f4a7c15ULL;
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  const std::string alphabet = "[]{}\",:0123456789.eE+-tfnulrsiadzNIy \\u\x01\xff";
  for (int i = 0; i < 20000; ++i) {
    std::string text;
    const std::size_t length = next() % 40;
    for (std::size_t k = 0; k < length; ++k) text += alphabet[next() % alphabet.size()];
    auto a = parse_python_json(text);
    auto b = parse_tagged_result(text);
    if (a && b) {
      (void)python_equal(*a, *b);
      EXPECT_LE(python_repr(*a, 100).size(), 103u);
    }
  }
  // A tuple nested 1500 deep (within the runner's 2000 containers) is 3000 JSON levels.
  std::string deep, expected;
  for (int i = 0; i < 1500; ++i) {
    deep += "[";
    expected += "[";
  }
  for (int i = 0; i < 1500; ++i) {
    deep += "]";
    expected += "]";
  }
  std::string tagged;
  for (int i = 0; i < 1500; ++i) tagged += "{\"t\": [";
  for (int i = 0; i < 1500; ++i) tagged += "]}";
  ASSERT_TRUE(parse_tagged_result(tagged));
  ASSERT_TRUE(parse_python_json(deep));
  EXPECT_TRUE(python_equal(*parse_tagged_result(deep), *parse_python_json(expected)));
  EXPECT_FALSE(python_equal(*parse_tagged_result(tagged), *parse_python_json(expected))) << "tuples are not lists";
  EXPECT_FALSE(parse_python_json(std::string(5000, '[') + std::string(5000, ']'))) << "bounded depth";
}

