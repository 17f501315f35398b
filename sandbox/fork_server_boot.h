// The fork server's Python side, run as `python3 -S -c <kForkServerBoot> <args>` inside the
// sandbox. It prepares what every child shares (common modules, a frozen GC heap; for a
// one-batch server also the compiled program and its setup), then hands control to the native
// loop (fork_server_native.c, loaded from /box with ctypes.PyDLL) for good: that loop serves the
// supervisor's requests and forks one child per input, which comes back here, connected to its
// pipes, with its limits, the sandbox uid and the user seccomp filter already in place, and only
// then executes the program in a new __main__. The server itself never runs user code.
//
// One batch (argv: program_path native_path cpu_s wall_s fsize_bytes nofile nproc filter_path
// setup_path prelude_path [args...]; setup_path "-": no setup; else Program::setup, run here once
// into the __main__ every child then uses; prelude_path "-": no Program::prelude): the server
// runs the prelude, compiles the program and runs the setup before forking, and serves that
// program until the supervisor hangs up.
// Warm (argv: --warm native_path filter_path prelude_path): the server never sees a program; it
// runs the prelude (trusted, the same for every batch it serves) once at its start. Per batch the
// supervisor writes /box/main.py, /box/setup.py and /box/batch ("1" or "0": whether there is a
// setup, then "\0" + each program argument) into its host directory bound at /box, and sends 'B'
// with the limits; each child reads them, compiles the program and runs the setup itself, so
// every batch's children start from this same untouched interpreter.
// fd 3: SOCK_SEQPACKET to the supervisor. First 'G' (the server is in its cgroup: it may fork);
// then requests: 'R' + SCM_RIGHTS(stdin, stdout, stderr);
// 'K' while a child runs kills it; warm only: 'B' + limits starts a batch, 'E' ends it. Reply per
// request: struct "<iiddqiI" (wait status, flags [1 timed out, 2 setup failed, 4 a denied system
// call, 8 an exec refused, 16 batch ended], user s, system s, max rss KiB, the denied call's
// number and AUDIT_ARCH) + setup error text.
#pragma once

#include <cstddef>

namespace distil::sandbox::detail {

// The native loop as a shared object (built from fork_server_native.c, embedded at build time).
extern const unsigned char kForkServerNative[];
extern const std::size_t kForkServerNativeSize;

inline constexpr const char* kForkServerBoot = R"PY(
import os, sys, types, builtins, ctypes
args = sys.argv[1:]
warm = args[0] == "--warm"
if warm:
    native_path, filter_path, prelude_path = args[1], args[2], args[3]
    path, setup_path, batch_path, user_args = "/box/main.py", "/box/setup.py", "/box/batch", []
else:
    path, native_path = args[0], args[1]
    cpu_s, wall_s, fsize, nofile, nproc = float(args[2]), float(args[3]), int(args[4]), int(args[5]), int(args[6])
    filter_path, setup_path, prelude_path, user_args = args[7], args[8], args[9], args[10:]
with open(filter_path, "rb") as f:
    bpf = f.read()
bpf_buffer = ctypes.create_string_buffer(bpf, len(bpf))
# Modules most solutions import, loaded once here instead of once per test; the second line is
# what LiveCodeBench's import block (the code grader's runner) adds.
import collections, itertools, functools, heapq, bisect, math, re, string, typing, threading, atexit, time
import datetime, copy, random, statistics, operator, io, json
code, compile_error, setup_main, setup_error = None, None, None, None
prelude, prelude_error = None, None

def read_file(name):
    # Plain system calls: no io objects (a warm server's children do this per input, and each
    # object touched is a page copied).
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts = []
        while True:
            part = os.read(fd, 1 << 20)
            if not part:
                return b"".join(parts)
            parts.append(part)
    finally:
        os.close(fd)

def prepare(setup_file):
    # Compiles the program and runs the setup (None: there is none) into the __main__ the
    # program will run in: here, once, for a one-batch server; in each child for a warm one.
    global code, compile_error, setup_main, setup_error
    source = read_file(path)
    try:
        code = compile(source, path, "exec")
    except BaseException as e:
        code, compile_error = None, e
    if setup_file is not None:
        setup_main = types.ModuleType("__main__")
        setup_main.__file__ = path
        setup_main.__builtins__ = builtins
        if prelude is not None:
            setup_main.__prelude__ = prelude
        try:
            exec(compile(read_file(setup_file), setup_file, "exec"), setup_main.__dict__)
        except BaseException as e:
            setup_error = e

if prelude_path != "-":
    # Program::prelude: trusted, the same for every program this server serves; its module is
    # shared by all children (as any object of this process), none binds its names again.
    prelude = types.ModuleType("__main__")
    prelude.__builtins__ = builtins
    try:
        exec(compile(read_file(prelude_path), prelude_path, "exec"), prelude.__dict__)
    except BaseException as e:
        prelude_error = e
if not warm:
    prepare(None if setup_path == "-" else setup_path)
else:
    # The first compile in a process sets up the compiler (over 1 ms, most of it memory first
    # touched): done here once, every child inherits it.
    compile(b"import sys\nx = [i for i in range(3)]\n", "/box/warm-up.py", "exec")
# PyDLL: the loop runs holding the GIL, so each child returns into a consistent interpreter.
native = ctypes.PyDLL(native_path)
if warm:
    serve = native.distil_fork_server_warm
    serve.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
else:
    serve = native.distil_fork_server_serve
    serve.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_double, ctypes.c_longlong, ctypes.c_longlong,
                      ctypes.c_longlong, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_uint]
    cpu_limit = max(1, int(-(-cpu_s // 1)))
serve.restype = ctypes.c_int

def exit_code_of(e):
    # What the interpreter does with an uncaught SystemExit.
    c = e.code
    if c is None:
        return 0
    if isinstance(c, int):
        return c & 0xFF
    try:
        sys.stderr.write(str(c) + "\n")
    except BaseException:
        pass
    return 1

def run_user_code():
    # The native loop forked this process without Python's after-fork hooks (they touch, and so
    # copy, ~150 pages). Their one visible effect for a single-threaded parent is the main
    # thread's native id.
    threading.main_thread()._set_native_id()
    # random's own after-fork reseed is one of the hooks skipped: every child would replay the
    # server's sequence.
    random.seed()
    sys.argv = [path] + user_args
    sys.path[0] = os.path.dirname(path)
    if setup_main is not None:
        main = setup_main
    else:
        main = types.ModuleType("__main__")
        main.__file__ = path
        main.__builtins__ = builtins
        if prelude is not None:
            main.__prelude__ = prelude
    sys.modules["__main__"] = main
    status = 0
    if prelude_error is not None:
        tb = prelude_error.__traceback__.tb_next if prelude_error.__traceback__ is not None else None
        prelude_error.__traceback__ = tb
        sys.excepthook(type(prelude_error), prelude_error, tb)
        status = 1
    elif setup_error is not None:
        tb = setup_error.__traceback__.tb_next if setup_error.__traceback__ is not None else None
        setup_error.__traceback__ = tb
        sys.excepthook(type(setup_error), setup_error, tb)
        status = 1
    elif compile_error is not None:
        # As the interpreter reports a syntax error in the main file: no traceback at all.
        compile_error.__traceback__ = None
        sys.excepthook(type(compile_error), compile_error, None)
        status = 1
    else:
        try:
            exec(code, main.__dict__)
        except SystemExit as e:
            status = exit_code_of(e)
        except BaseException as e:
            # Drop this runner's frame so the traceback starts at the program, as one-shot.
            tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
            e.__traceback__ = tb
            sys.excepthook(type(e), e, tb)
            status = 1
    try:
        threading._shutdown()
    except BaseException:
        pass
    try:
        atexit._run_exitfuncs()
    except SystemExit as e:
        status = exit_code_of(e)
    except BaseException:
        pass
    try:
        sys.stdout.flush()
    except BaseException:
        status = 120
    try:
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(status)

def run_warm_child():
    # This batch's program, as the supervisor wrote it before the batch began (read-only here).
    global user_args
    batch = read_file(batch_path)
    user_args = [os.fsdecode(a) for a in batch[1:].split(b"\0")[1:]]
    prepare(setup_path if batch[:1] == b"1" else None)
    run_user_code()

import gc
# Everything allocated so far is shared with every child; a collection in a child would touch
# (and so copy) all of it. Freezing moves it out of the collector's reach.
gc.collect()
gc.freeze()
# The supervisor moves this process into the batch's cgroup while it boots; every child must be
# forked inside it, so nothing is forked before its 'G'.
if os.read(3, 1) != b"G":
    os._exit(1)
if warm:
    rc = serve(3, os.getpid() == 1, ctypes.addressof(bpf_buffer), len(bpf) // 8)
    if rc == 1:
        run_warm_child()
else:
    rc = serve(3, os.getpid() == 1, wall_s, cpu_limit, fsize, nofile, nproc, ctypes.addressof(bpf_buffer), len(bpf) // 8)
    if rc == 1:
        run_user_code()
os._exit(0 if rc == 0 else 1)
)PY";

}  // namespace distil::sandbox::detail
