// The fork server's Python side, run as `python3 -S -c <kForkServerBoot> <args>` inside the
// sandbox. It never runs user code itself: per input it forks a child that connects the pipes
// it was sent, sets the limits, drops to the sandbox uid, loads the user seccomp filter and only
// then executes the (pre-compiled) program in a new __main__. After the child, the server (PID
// namespace init) kills whatever it left and empties /tmp before the next input.
//
// argv: program_path tmpfs_mb cpu_s wall_s fsize_bytes nofile nproc filter_path [args...]
// Each child is forked ahead of its input (after the previous one's cleanup) and waits for its
// descriptors.
// fd 3: SOCK_SEQPACKET to the supervisor. Requests: 'R' + SCM_RIGHTS(stdin, stdout, stderr);
// 'K' while a child runs kills it. Reply per request: struct "<iiddq" (wait status, flags
// [1 timed out, 2 setup failed], user s, system s, max rss KiB) + setup error text.
#pragma once

namespace distil::sandbox::detail {

inline constexpr const char* kForkServerBoot = R"PY(
import os, sys, socket, struct, select, signal, resource, time, types, builtins, ctypes
args = sys.argv[1:]
path = args[0]
tmpfs_mb, cpu_s, wall_s, fsize, nofile, nproc = int(args[1]), float(args[2]), float(args[3]), int(args[4]), int(args[5]), int(args[6])
filter_path, user_args = args[7], args[8:]
libc = ctypes.CDLL(None, use_errno=True)
class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
with open(filter_path, "rb") as f:
    bpf = f.read()
bpf_buffer = ctypes.create_string_buffer(bpf, len(bpf))
fprog = SockFprog(len(bpf) // 8, ctypes.addressof(bpf_buffer))
with open(path, "rb") as f:
    source = f.read()
try:
    code = compile(source, path, "exec")
    compile_error = None
except BaseException as e:
    code, compile_error = None, e
# Modules most solutions import, loaded once here instead of once per test.
import collections, itertools, functools, heapq, bisect, math, re, string, typing, threading, atexit
sock = socket.socket(fileno=3)
import gc
# Everything allocated so far is shared with every child; a collection in a child would touch
# (and so copy) all of it. Freezing moves it out of the collector's reach.
gc.collect()
gc.freeze()
is_init = os.getpid() == 1
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, PR_SET_PDEATHSIG = 38, 22, 2, 1

def check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))

def wipe_tmp():
    # Children run one at a time and every process of a finished one is dead before this, so
    # emptying /tmp gives the next child the same clean directory. (A private mount namespace
    # per child would too, but its teardown costs milliseconds of RCU grace period per test.)
    stack = ["/tmp"]
    dirs = []
    while stack:
        d = stack.pop()
        dirs.append(d)
        with os.scandir(d) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    os.chmod(entry.path, 0o700, follow_symlinks=False)
                    stack.append(entry.path)
                else:
                    os.unlink(entry.path)
    for d in reversed(dirs[1:]):
        os.rmdir(d)

def become_sandboxed(fds, report_fd):
    os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    sock.detach()
    os.closerange(3, report_fd)
    os.closerange(report_fd + 1, 1 << 16)
    os.chdir("/tmp")
    cpu = max(1, int(-(-cpu_s // 1)))
    # As the one-shot path: SIGXCPU at the limit, SIGKILL a second later.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    for res, value in ((resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_NOFILE, nofile),
                       (resource.RLIMIT_NPROC, nproc), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))
    os.setgroups([])
    os.setresgid(1000, 1000, 1000)
    os.setresuid(1000, 1000, 1000)
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")

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
    sys.argv = [path] + user_args
    sys.path[0] = os.path.dirname(path)
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    status = 0
    if compile_error is not None:
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
        import atexit as _atexit
        _atexit._run_exitfuncs()
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

def terminate(pid):
    for kill in (os.kill, os.killpg):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass

def kill_leftovers(pid):
    # As the PID namespace's init, kill(-1) reaches every process but this one; what the child
    # forked is then reaped here, so no test leaves anything behind for the next.
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if is_init:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue

def fork_child():
    # Forked ahead of its input, so the fork and the child's after-fork work overlap with the
    # supervisor handling the previous result: the child waits (still the namespace's root,
    # running nothing but this) for its three descriptors on a private socket, and only then
    # becomes sandboxed. It is forked after the previous child's cleanup, from the same state.
    ctl, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ctl.close()
            os.close(report_r)
            _, fds, _, _ = socket.recv_fds(ctl_child, 16, 3)
            if len(fds) != 3:
                os._exit(0)
            ctl_child.detach()  # closed below with every other descriptor, never again later
            become_sandboxed(fds, report_w)
            os.close(report_w)
        except BaseException as e:
            os.write(report_w, repr(e).encode()[:4000])
            os._exit(127)
        run_user_code()
    ctl_child.close()
    os.close(report_w)
    return pid, ctl, report_r

next_child = fork_child()
while True:
    try:
        msg, fds, _, _ = socket.recv_fds(sock, 16, 3)
    except InterruptedError:
        continue
    if not msg:
        break
    if msg[:1] != b"R" or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        continue
    pid, ctl, report_r = next_child
    try:
        socket.send_fds(ctl, [b"R"], fds)
    except OSError:
        pass  # the child is gone: its wait status says so
    ctl.close()
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    deadline = time.monotonic() + wall_s
    flags = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            flags |= 1
            terminate(pid)
            break
        ready, _, _ = select.select([pidfd, sock], [], [], remaining)
        if pidfd in ready:
            break
        if sock in ready:
            if sock.recv(16)[:1] in (b"K", b""):
                terminate(pid)
                break
    while True:
        try:
            _, status, usage = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    # Before the reply: whatever the child left running may still hold its stdout open.
    kill_leftovers(pid)
    os.close(pidfd)
    error = os.read(report_r, 4096)
    os.close(report_r)
    if error:
        flags |= 2
    sock.send(struct.pack("<iiddq", status, flags, usage.ru_utime, usage.ru_stime, usage.ru_maxrss) + error)
    # After the reply, while the supervisor reads the result: the next child must start from an
    # empty /tmp, and is forked only once it is.
    try:
        wipe_tmp()
    except OSError as e:
        # The next child must not see this one's files: give up the server instead.
        msg, fds, _, _ = socket.recv_fds(sock, 16, 3)
        for fd in fds:
            os.close(fd)
        if not msg:
            break
        sock.send(struct.pack("<iiddq", 0, 2, 0.0, 0.0, 0) + ("cleaning /tmp: %r" % (e,)).encode())
        break
    next_child = fork_child()
)PY";

}  // namespace distil::sandbox::detail
