// The Python programs the code grader runs in the sandbox around a candidate's code (internal to
// graders/). Both embed the candidate's source as a string literal and compile it under its own
// file name, so tracebacks carry the candidate's own line numbers and none of the runner's frames.
//
// What they add, as LiveCodeBench's harness (lcb_runner/evaluation/testing_util.py) does:
// - exit() and quit() (Python runs with -S, so site never defines them);
// - LiveCodeBench's import block (`from string import *` ... `import json`) and
//   sys.setrecursionlimit(50000), executed in the program's namespace before its first line;
// - functional tests: the code is imported under a module name that is not "__main__" (so an
//   `if __name__ == "__main__":` block does not run), one Solution() instance (or the module)
//   serves every test of the problem in one process, so module and instance state persist as on
//   LeetCode and in LiveCodeBench.
//
// The functional runner never compares anything: it writes each result, checked by exact type to
// be a plain value (None, bool, int, float, str, list, tuple, dict, set, frozenset), as tagged
// JSON on a private descriptor; the grader compares it with the expected value in C++, outside
// the candidate's process, with Python's == semantics. The expected values never enter the
// sandbox.
#pragma once

namespace distil::graders::code {

// LiveCodeBench's `import_string`, statement for statement.
inline constexpr const char* kLcbImports =
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\nfrom random import *\n"
    "from statistics import *\nfrom itertools import *\nfrom functools import *\nfrom operator import *\n"
    "from io import *\nfrom sys import *\nfrom json import *\nfrom builtins import *\nfrom typing import *\n"
    "import string\nimport re\nimport datetime\nimport collections\nimport heapq\nimport bisect\nimport copy\n"
    "import math\nimport random\nimport statistics\nimport itertools\nimport functools\nimport operator\n"
    "import io\nimport sys\nimport json\nsys.setrecursionlimit(50000)\n";

// Shared head of both runners: exit/quit, the candidate's source, the traceback printer.
// `_SRC`, `_IMPORTS` and (functional) `_FUNC` are assigned by the grader in front of this.
inline constexpr const char* kRunnerCommon = R"PY(
import sys, builtins, types, os
_FILE = "solution.py"

class _Quitter:
    # As site.Quitter: exit()/quit() close stdin and raise SystemExit(code).
    def __init__(self, name):
        self.name = name
    def __repr__(self):
        return "Use %s() or Ctrl-D (i.e. EOF) to exit" % self.name
    def __call__(self, code=None):
        try:
            sys.stdin.close()
        except BaseException:
            pass
        raise SystemExit(code)

builtins.exit = _Quitter("exit")
builtins.quit = _Quitter("quit")

def _register_source():
    import linecache
    linecache.cache[_FILE] = (len(_SRC), None, _SRC.splitlines(True), _FILE)

def _format_exception(e):
    # From the candidate's first frame on: the runner's frames are dropped (library frames the
    # candidate called into stay, they show where it failed), line numbers are its own.
    _register_source()
    import traceback
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != _FILE:
        tb = tb.tb_next
    try:
        return "".join(traceback.format_exception(type(e), e, tb))
    except BaseException:
        return "%s (the traceback could not be formatted)\n" % type(e).__name__

def _compile_source():
    try:
        return compile(_SRC, _FILE, "exec"), None
    except BaseException as e:  # SyntaxError, ValueError (NUL byte), MemoryError, RecursionError
        _register_source()
        import traceback
        try:
            text = "".join(traceback.format_exception_only(type(e), e))
        except BaseException:
            text = type(e).__name__ + "\n"
        return None, text
)PY";

// Stdin programs: run as __main__, stdin and stdout untouched. The setup part (with
// kRunnerCommon, Program::setup: a fork server runs it once) compiles the code into the
// namespace the import block ran in (the prelude's); the program part (per test) only runs it.
// The import block is the program's prelude (Program::prelude, kLcbImports): `__prelude__` is
// the module it ran in, which becomes the candidate's __main__.
inline constexpr const char* kStdinSetup = R"PY(
_code, _error = _compile_source()
_user = __prelude__
_user.__file__ = _FILE
_user.__builtins__ = builtins
)PY";

inline constexpr const char* kStdinMain = R"PY(
def _run():
    if _code is None:
        sys.stderr.write(_error)
        raise SystemExit(1)
    sys.modules["__main__"] = _user
    try:
        exec(_code, _user.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        text = _format_exception(e)
        try:
            sys.stdout.flush()
        except BaseException:
            pass
        sys.stderr.write(text)
        raise SystemExit(1)

_run()
)PY";

// Functional tests (kRunnerCommon + this as the setup, kFunctionalMain as the program). stdin: a JSON object {"tests": [input text, ...], "cpu_s": per-test CPU limit,
// "all": run past a test that raised or timed out}. Result channel: the descriptor that was
// stdout; fd 1 and sys.stdout then point at stderr, so the candidate's prints (and anything it
// writes to fd 1) become its Debug Output. Frames, one line each:
//   S <k>                         test k starts (0-based)
//   R <k> <cpu_s> <tagged JSON>   test k returned a plain value
//   U <k> <cpu_s> <type path>     test k returned something else (its type named)
//   X <k> <cpu_s> <JSON string>   test k raised (the formatted traceback)
//   T <k> <cpu_s>                 test k ran past the CPU limit
//   L <JSON string>               the code could not be loaded (syntax error, exception at import,
//                                 no such function): every test fails with it
//   H <JSON string>               a test input was not JSON (a broken task)
// On stderr, "\x1e\x1fdistil-test <k>\x1f\n" marks where test k's Debug Output starts.
inline constexpr const char* kFunctionalRunner = R"PY(
def _main():
    import json, time, signal
    _type, _len, _repr, _isinstance = type, len, repr, isinstance
    _int_repr, _float_repr = int.__repr__, float.__repr__
    _process_time, _write, _dumps = time.process_time, os.write, json.dumps
    _sis = getattr(sys, "set_int_max_str_digits", None)
    _gis = getattr(sys, "get_int_max_str_digits", None)
    request = json.loads(sys.stdin.buffer.read().decode("utf-8", "surrogatepass"))
    tests, cpu_limit, run_all = request["tests"], float(request["cpu_s"]), bool(request["all"])
    out_fd = os.dup(1)
    os.set_inheritable(out_fd, False)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    err = sys.stderr

    def frame(text):
        data = (text + "\n").encode("utf-8", "surrogatepass")
        view = memoryview(data)
        while view:
            n = _write(out_fd, view)
            view = view[n:]

    def mark(k):
        try:
            err.flush()
        except BaseException:
            pass
        try:
            _write(2, b"\x1e\x1fdistil-test %d\x1f\n" % k)
        except BaseException:
            pass

    class _NotPlain(Exception):
        pass

    def encode(v, depth, path):
        # Exact types only: a subclass (an int whose __eq__ lies) is not a plain value.
        if depth > 2000:
            raise _NotPlain(path + " nested more than 2000 levels deep")
        t = _type(v)
        if v is None or t is bool:
            return v
        if t is int:
            if -(1 << 63) <= v < (1 << 63):
                return v
            return {"i": _int_repr(v)}
        if t is float:
            if v != v or v in (float("inf"), float("-inf")):
                return {"f": _float_repr(v)}
            return v
        if t is str:
            return v
        if t is list:
            return [encode(x, depth + 1, path) for x in v]
        if t is tuple:
            return {"t": [encode(x, depth + 1, path) for x in v]}
        if t is dict:
            return {"d": [[encode(k, depth + 1, path), encode(x, depth + 1, path)] for k, x in v.items()]}
        if t is set:
            return {"s": [encode(x, depth + 1, path) for x in v]}
        if t is frozenset:
            return {"z": [encode(x, depth + 1, path) for x in v]}
        name = getattr(t, "__qualname__", None)
        if _type(name) is not str:
            name = "?"
        module = getattr(t, "__module__", None)
        if _type(module) is str and module not in ("builtins", "solution"):
            name = module + "." + name
        raise _NotPlain(name)

    class _Timeout(BaseException):
        pass

    fired = [False]

    def on_timer(signum, stack):
        # The kernel's CPU accounting for the timer can run ahead of process_time(): once it
        # fired, the test is over its limit even if the program catches the exception.
        fired[0] = True
        raise _Timeout()

    inputs = []
    for k, text in enumerate(tests):
        try:
            inputs.append([json.loads(line) for line in text.split("\n") if line.strip()])
        except BaseException as e:
            frame("H " + _dumps("test %d: an input line is not JSON: %s" % (k + 1, e)))
            return
    code, error = _compile_source()
    if code is None:
        frame("L " + _dumps(error))
        return
    module = types.ModuleType("solution")
    module.__file__ = _FILE
    module.__builtins__ = builtins
    sys.modules["solution"] = module
    exec(_IMPORTS, module.__dict__)
    mark(0)
    try:
        exec(code, module.__dict__)
        if "class Solution" in _SRC and "Solution" in module.__dict__:
            target = module.__dict__["Solution"]()
            where = "Solution." + _FUNC
        else:
            target = module
            where = "a function " + _FUNC
        method = getattr(target, _FUNC, None)
        if method is None:
            frame("L " + _dumps("The program does not define %s.\n" % where))
            return
    except SystemExit as e:
        frame("L " + _dumps("The program exited while it was being loaded (SystemExit: %s).\n" % (e.code,)))
        return
    except BaseException as e:
        frame("L " + _dumps(_format_exception(e)))
        return
    signal.signal(signal.SIGPROF, on_timer)
    for k, args in enumerate(inputs):
        if k:
            mark(k)
        frame("S %d" % k)
        fired[0] = False
        start = _process_time()
        failed = None
        result = None
        try:
            signal.setitimer(signal.ITIMER_PROF, cpu_limit + 0.05)
            try:
                result = method(*args)
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
        except _Timeout:
            failed = "T"
        except SystemExit as e:
            failed = "X"
            error = "SystemExit: the function called exit() (code %r) instead of returning\n" % (e.code,)
        except BaseException as e:
            failed = "X"
            error = _format_exception(e)
        cpu = _process_time() - start
        if failed is None and (cpu > cpu_limit or fired[0]):
            failed = "T"
        if failed == "T":
            frame("T %d %.6f" % (k, cpu))
        elif failed == "X":
            frame("X %d %.6f %s" % (k, cpu, _dumps(error)))
        else:
            old = _gis() if _gis else None
            try:
                if _sis:
                    _sis(0)
                frame("R %d %.6f %s" % (k, cpu, _dumps(encode(result, 0, ""), ensure_ascii=True)))
            except _NotPlain as e:
                frame("U %d %.6f %s" % (k, cpu, _dumps(str(e.args[0]))))
            except RecursionError:
                frame("U %d %.6f %s" % (k, cpu, _dumps("a value nested too deeply (or containing itself)")))
            finally:
                if _sis and old is not None:
                    _sis(old)
            continue
        if not run_all:
            return
)PY";

inline constexpr const char* kFunctionalMain = "_main()\n";

}  // namespace distil::graders::code
