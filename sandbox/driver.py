"""The trusted driver that runs inside the sandbox. Standard library only: the parent passes this
file's text as `python -c`, so no project file is visible in the sandbox.

Protocol (one JSON object per line; the parent speaks first and closes stdin when done):
  parent -> {"code", "mode": "stdin"|"call", "fn", "uid", "limits": {...}}   once
  parent -> {"stdin": str} (mode stdin) | {"args": encode(args tuple)} (mode call)
  driver -> {"status", "out", "err", "seconds"}   one per job, in order

Only inputs ever come in; the parent judges the outputs, so nothing here can leak an expected
answer. `mode=stdin` runs each job in a fresh child; `mode=call` loads the program once in a child
and calls `fn(*args)` there per job (state persists between calls, as in HumanEval's own
harness), loading it again after a crash or a timeout. A child sets its rlimits and, when the
driver is root inside the sandbox, drops to the sandbox uid before any program code runs; the
driver never runs program code itself. After a job that timed out or ended, `kill(-1)` takes every
process the program left (it is the pid namespace's whole population but init and the driver).

Statuses: ok, timeout (wall clock or CPU limit), memory (MemoryError), output_limit, error
(exception, non-zero exit or a signal), no_result (call mode: the program exited instead of
returning).
"""
import json
import os
import resource
import select
import signal
import sys
import time
import traceback

MEMORY_EXIT = 120  # a child's exit status for a MemoryError
ERR_KEEP = 1000    # bytes of stderr kept (the tail)


def encode(v):
    """A plain Python value as JSON: lists as arrays, tuples, sets, dicts and bytes tagged, floats
    (inf and nan too) as JSON numbers. Anything else is refused: only data crosses the boundary."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, list):
        return [encode(x) for x in v]
    if isinstance(v, tuple):
        return {"tuple": [encode(x) for x in v]}
    if isinstance(v, (set, frozenset)):
        return {"set": [encode(x) for x in v]}
    if isinstance(v, dict):
        return {"dict": [[encode(k), encode(x)] for k, x in v.items()]}
    if isinstance(v, bytes):
        return {"bytes": v.hex()}
    raise TypeError(f"not a plain value: {type(v).__name__}")


def decode(j):
    if isinstance(j, list):
        return [decode(x) for x in j]
    if isinstance(j, dict):
        (tag, x), = j.items()
        if tag == "tuple":
            return tuple(decode(y) for y in x)
        if tag == "set":
            return {decode(y) for y in x}
        if tag == "dict":
            return {decode(k): decode(y) for k, y in x}
        if tag == "bytes":
            return bytes.fromhex(x)
        raise ValueError(f"unknown tag {tag!r}")
    return j


def main_namespace():
    """In a child, before program code: a fresh module as `__main__`, whose namespace the program
    runs in, so what it defines is found where pickle looks (multiprocessing sends a program's
    functions by reference to `__main__`)."""
    import types
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    return main.__dict__


def limit_and_drop(limits, uid):
    """In a fresh child: the rlimits, then (when root) the unprivileged uid. Runs before any program
    code. `address_mb` and `processes` are the parent's per-process caps (sandbox.Limits.caps): the
    whole budget per process where a cgroup holds the program's total, a share of it where none
    does. Program processes volunteer as the OOM killer's first victims (oom_score_adj 1000):
    never the driver, never the trainer."""
    import ctypes
    libc = ctypes.CDLL(None)
    libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE 1: a non-dumpable process's /proc files are root's
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    libc.prctl(4, 0, 0, 0, 0)  # and non-dumpable again, as the driver made it
    cpu = int(limits["timeout_s"]) + 1
    for lim, v in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, limits["address_mb"] << 20),
                   (resource.RLIMIT_NPROC, limits["processes"]), (resource.RLIMIT_NOFILE, limits["open_files"]),
                   (resource.RLIMIT_FSIZE, limits["file_mb"] << 20), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(lim, (v, v))
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        if os.getuid() == 0 or os.geteuid() == 0:
            os._exit(111)


def fresh_stdio():
    """The child's Python streams over its own fds 0-2 (the driver's are buffered protocol streams)."""
    import io
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)))
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)))
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)), line_buffering=True)
    sys.argv = ["program"]


def spawn(body, stdin_fd, limits, uid, keep=()):
    """Fork a child running `body()` with stdin from `stdin_fd`, stdout/stderr to new pipes and only
    the fds in `keep` besides. Returns (pid, stdout_read_fd, stderr_read_fd)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(stdin_fd, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for fd in range(3, 1024):
                if fd not in keep:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            os.chdir("/work")
            limit_and_drop(limits, uid)
            fresh_stdio()
            body()
        except MemoryError:
            os._exit(MEMORY_EXIT)
        except SystemExit as e:
            _flush()
            os._exit(e.code if isinstance(e.code, int) else (0 if e.code is None else 1))
        except BaseException as e:
            try:
                print_error(e)
            finally:
                os._exit(1)
        _flush()
        os._exit(0)
    os.close(out_w)
    os.close(err_w)
    return pid, out_r, err_r


def print_error(e):
    """The program's traceback, without the driver's own frames (they are in "<string>")."""
    tb = traceback.TracebackException.from_exception(e)
    tb.stack = traceback.StackSummary.from_list([f for f in tb.stack if f.filename != "<string>"])
    sys.stderr.write("".join(tb.format()))
    _flush()


def _flush():
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except BaseException:
            pass


def collect(out_fd, err_fd, deadline, cap, ans_fd=None, pid=None):
    """Read a child's pipes until they close, or a line arrives on `ans_fd`, or child `pid` exits
    (what it left in the pipes is read; a descendant holding them open is not waited for), or
    `deadline`. Returns (status, out, err, answer); status None = ended in time. stdout (or the
    answer) beyond `cap` bytes is an output_limit: reading stops, nothing more is buffered."""
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    if ans_fd is not None:
        bufs[ans_fd] = bytearray()
    live = set(bufs)
    status, exited = None, False
    while (ans_fd in live) if ans_fd is not None else live:
        left = deadline - time.monotonic()
        if left <= 0:
            status = "timeout"
            break
        ready, _, _ = select.select(list(live), [], [], 0 if exited else min(left, 0.01))
        if exited and not ready:
            break
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                live.discard(fd)
                continue
            bufs[fd] += chunk
            if fd == err_fd and len(bufs[fd]) > 4 * ERR_KEEP:
                del bufs[fd][:-ERR_KEEP]
        if len(bufs[out_fd]) > cap or (ans_fd is not None and len(bufs[ans_fd]) > cap):
            status = "output_limit"
            break
        if ans_fd is not None and b"\n" in bufs[ans_fd]:
            break
        if pid is not None and not exited and not ready:
            exited = _reap(pid)
    ans = bytes(bufs[ans_fd]) if ans_fd is not None else b""
    return status, bytes(bufs[out_fd][:cap]), bytes(bufs[err_fd][-ERR_KEEP:]), ans


_STATUS = {}  # exit statuses of children reaped while collecting


def _reap(pid):
    done, st = os.waitpid(pid, os.WNOHANG)
    if done:
        _STATUS[pid] = st
    return bool(done)


def wait_exit(pid, deadline):
    """Status of `pid` once it exits (None: exit 0), or "timeout" at `deadline`."""
    while pid not in _STATUS:
        if time.monotonic() >= deadline:
            return "timeout"
        if not _reap(pid):
            time.sleep(0.001)
    st = _STATUS.pop(pid)
    if os.WIFSIGNALED(st):
        return "timeout" if os.WTERMSIG(st) == signal.SIGXCPU else "error"
    code = os.WEXITSTATUS(st)
    return None if code == 0 else "memory" if code == MEMORY_EXIT else "error"


def kill_all():
    """Kill every process the program started (pid namespace: all but init and this driver) and reap them."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    _STATUS.clear()


def memfd_with(text):
    fd = os.memfd_create("stdin")
    os.write(fd, text.encode())
    os.lseek(fd, 0, 0)
    return fd


class Caller:
    """Call mode: one child holds the loaded program and answers calls on a pipe pair."""

    def __init__(self, setup):
        self.setup, self.pid = setup, None

    def start(self):
        code, fn = self.setup["code"], self.setup["fn"]
        self.req_r, self.req_w = os.pipe()
        self.ans_r, self.ans_w = os.pipe()
        req_r, ans_w = self.req_r, self.ans_w

        def serve():
            g = main_namespace()
            exec(compile(code, "<program>", "exec"), g)
            if "." in fn:  # "Class.method": LeetCode-style `class Solution`, called on a fresh instance
                cls, method = fn.split(".", 1)
                f = getattr(g[cls](), method, None) if callable(g.get(cls)) else None
            else:
                f = g.get(fn)
            if not callable(f):
                raise NameError(f"the program defines no function {fn!r}")
            inp = os.fdopen(req_r, "r")
            ans = os.fdopen(ans_w, "w")
            for line in inp:
                try:
                    msg = {"ok": encode(f(*decode(json.loads(line))))}
                except MemoryError:
                    msg = {"memory": 1}
                except Exception as e:
                    msg = {"error": f"{type(e).__name__}: {e}"[:ERR_KEEP]}
                _flush()
                ans.write(json.dumps(msg) + "\n")
                ans.flush()

        devnull = os.open("/dev/null", os.O_RDONLY)
        self.pid, self.out, self.err = spawn(serve, devnull, self.setup["limits"], self.setup["uid"],
                                             keep=(req_r, ans_w))
        os.close(devnull)
        os.close(req_r)
        os.close(ans_w)

    def call(self, args):
        limits = self.setup["limits"]
        if self.pid is None:
            self.start()
        deadline = time.monotonic() + limits["timeout_s"]
        try:
            os.write(self.req_w, json.dumps(args).encode() + b"\n")
        except BrokenPipeError:
            pass  # the child is gone: its answer pipe reads EOF below
        status, _, err, ans = collect(self.out, self.err, deadline, limits["output_bytes"], self.ans_r)
        value = ""
        if status is None and b"\n" not in ans:  # it closed the answer pipe: it exited, or will
            status = wait_exit(self.pid, deadline) or "no_result"
        elif status is None:
            try:
                msg = json.loads(ans.split(b"\n", 1)[0])
            except ValueError:
                msg = {"error": "malformed answer"}
            if "ok" in msg:
                status, value = "ok", json.dumps(msg["ok"])
            else:
                status, err = ("memory" if "memory" in msg else "error"), str(msg.get("error", "")).encode()
        if status != "ok":
            self.stop()  # a fresh load for the next call
        return status, value, err

    def stop(self):
        if self.pid is not None:
            kill_all()
            for fd in (self.req_w, self.ans_r, self.out, self.err):
                os.close(fd)
            self.pid = None


def run_stdin(setup, text):
    limits = setup["limits"]
    code = setup["code"]

    def body():
        exec(compile(code, "<program>", "exec"), main_namespace())

    fd = memfd_with(text)
    t0 = time.monotonic()
    deadline = t0 + limits["timeout_s"]
    pid, out_fd, err_fd = spawn(body, fd, limits, setup["uid"])
    os.close(fd)
    status, out, err, _ = collect(out_fd, err_fd, deadline, limits["output_bytes"], pid=pid)
    if status is None:
        status = wait_exit(pid, deadline) or "ok"
    kill_all()
    os.close(out_fd)
    os.close(err_fd)
    return status, out.decode(errors="replace"), err


def main():
    if os.getuid() != 0:  # programs share this uid: keep them from ptrace and /proc/<driver>/fd
        import ctypes
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
    proto_in = os.fdopen(os.dup(0), "r")
    proto_out = os.fdopen(os.dup(1), "w")
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    setup = json.loads(proto_in.readline())
    caller = Caller(setup) if setup["mode"] == "call" else None
    for line in proto_in:
        job = json.loads(line)
        t0 = time.monotonic()
        if caller is not None:
            status, out, err = caller.call(job["args"])
        else:
            status, out, err = run_stdin(setup, job["stdin"])
        proto_out.write(json.dumps({"status": status, "out": out, "err": err.decode(errors="replace"),
                                    "seconds": round(time.monotonic() - t0, 4)}) + "\n")
        proto_out.flush()
    if caller is not None:
        caller.stop()


if __name__ == "__main__":
    main()
