"""Programs written to break out of the sandbox, and what "contained" means for each.

`python -m sandbox` runs them all on this machine and prints the table (attack, outcome, time to
contain); tests/sandbox/test_attacks.py asserts every one is contained. Each program is formatted
with the fields of a `Probe`: a canary file and a world-writable directory outside the sandbox, a
loopback listener, the trainer's pid, a secret in the trainer's environment and the expected output
of the job (which only the trainer holds).
"""
from __future__ import annotations

import os
import secrets
import socket
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from sandbox import Limits, Result, run_stdin
from sandbox.judge import same_stdout

LIMITS = Limits(timeout_s=1.0, memory_mb=256)
MARK = "import ctypes\nctypes.CDLL(None).prctl(15, b'{comm}', 0, 0, 0)\n"  # PR_SET_NAME: find its processes later


@dataclass
class Probe:
    """What the attacks aim at, set up on the host for one run."""

    dir: Path
    canary: Path
    outside: Path
    port: int
    listener: socket.socket
    trainer_pid: int
    secret: str    # in the trainer's environment, in the canary, and the expected output

    def fields(self, comm: str) -> dict:
        return {"canary": self.canary, "outside": self.outside, "port": self.port,
                "trainer_pid": self.trainer_pid, "secret": self.secret, "comm": comm}

    def accepted(self) -> int:
        n = 0
        while True:
            try:
                self.listener.accept()[0].close()
                n += 1
            except BlockingIOError:
                return n


def open_probe() -> Probe:
    d = Path(tempfile.mkdtemp(prefix="marl-probe-"))
    d.chmod(0o755)  # readable by anyone: only the sandbox's view keeps a program out
    secret = "marl-" + secrets.token_hex(8)
    canary = d / "canary.txt"
    canary.write_text(secret)
    canary.chmod(0o644)
    outside = d / "outside"
    outside.mkdir()
    outside.chmod(0o777)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    return Probe(d, canary, outside, listener.getsockname()[1], listener, os.getpid(), secret)


def close_probe(p: Probe) -> None:
    p.listener.close()
    for f in sorted(p.dir.rglob("*"), reverse=True):
        f.rmdir() if f.is_dir() else f.unlink()
    p.dir.rmdir()


def alive(comm: str) -> int:
    """Live (not zombie) processes on this host named `comm`."""
    n = 0
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if (d / "comm").read_text().strip() == comm and (d / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                n += 1
        except (OSError, IndexError):
            pass
    return n


def gone(comm: str, grace_s: float = 2.0) -> float | None:
    """Seconds until no live process named `comm` is left (None if some outlive `grace_s`): a
    killed process takes a moment to die, an escaped one (the attacks sleep 5 s) does not."""
    t0 = time.monotonic()
    while alive(comm):
        if time.monotonic() - t0 > grace_s:
            return None
        time.sleep(0.02)
    return time.monotonic() - t0


@dataclass(frozen=True)
class Attack:
    name: str
    code: str  # formatted with Probe.fields
    check: Callable[[Result, Probe, str], str]  # "" if contained, else what got out
    stdin: str = ""
    timeout_s: float | None = None  # this attack's job limit, where LIMITS' is too short to show it


def _no_secret(r: Result, p: Probe, comm: str) -> str:
    return "the secret reached the program" if p.secret in r.out + r.err else ""


def _none_left(r: Result, p: Probe, comm: str) -> str:
    return f"{alive(comm)} of its processes outlived the run" if gone(comm) is None else ""


def _status(*allowed: str) -> Callable:
    def check(r: Result, p: Probe, comm: str) -> str:
        if r.status not in allowed:
            return f"status {r.status}, expected {'/'.join(allowed)}"
        return _none_left(r, p, comm)
    return check


def _nothing_written(r: Result, p: Probe, comm: str) -> str:
    return "a file appeared outside the sandbox" if any(p.outside.iterdir()) else ""


def _listener_quiet(r: Result, p: Probe, comm: str) -> str:
    return "the loopback listener accepted a connection" if p.accepted() else ""


def _not_a_pass(r: Result, p: Probe, comm: str) -> str:
    return "judged a pass" if same_stdout(r.out, p.secret) else ""


def _trainer_alive(r: Result, p: Probe, comm: str) -> str:
    try:
        os.kill(p.trainer_pid, 0)
    except ProcessLookupError:
        return "the trainer is dead"
    return ""


ATTACKS = [
    Attack("fork bomb", MARK + "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
           _status("timeout", "error")),
    Attack("infinite loop", MARK + "while True: pass", _status("timeout")),
    Attack("memory bomb", MARK + "x = bytearray(8 << 30)", _status("memory")),
    Attack("1 GB of output", MARK + "import sys\nfor _ in range(16384): sys.stdout.write('x' * 65536)",
           _status("output_limit")),
    Attack("write outside the work directory",
           "for f in ('{outside}/escaped', '/usr/escaped', '/escaped', '/tmp/../escaped'):\n"
           "    try: open(f, 'w').write('x'); print('wrote', f)\n    except OSError as e: print(f, e)",
           _nothing_written),
    Attack("read a canary file outside it",
           "for f in ('{canary}', '/etc/shadow', '/etc/passwd'):\n"
           "    try: print(open(f).read())\n    except OSError as e: print(f, e)", _no_secret),
    Attack("connect to a loopback listener",
           "import socket\ntry: socket.create_connection(('127.0.0.1', {port}), timeout=0.5); print('connected')\n"
           "except OSError as e: print(e)", _listener_quiet),
    Attack("signal or kill the parent",
           "import os, signal\nfor pid in ({trainer_pid}, os.getppid(), 1, -1):\n"
           "    try: os.kill(pid, signal.SIGKILL)\n    except OSError as e: print(pid, e)", _trainer_alive),
    Attack("a setsid() child outliving the timeout",
           "import os, time\nif os.fork() == 0:\n    os.setsid()\n" + "\n".join("    " + line for line in MARK.splitlines())
           + "\n    time.sleep(5)\n    open('{outside}/late', 'w').write('x')\n    os._exit(0)\nprint('parent done')",
           lambda r, p, c: _none_left(r, p, c) or _nothing_written(r, p, c)),
    Attack("read the trainer's environment",
           "import os, glob\nprint(dict(os.environ))\nfor f in glob.glob('/proc/*/environ'):\n"
           "    try: print(open(f, 'rb').read())\n    except OSError as e: print(f, e)", _no_secret),
    Attack("deep recursion", MARK + "import sys\nsys.setrecursionlimit(10 ** 9)\ndef f(n): return f(n + 1)\nf(0)",
           _status("error", "timeout", "memory")),
    Attack("SystemExit(0) before any output", "raise SystemExit(0)\nprint('{secret}')", _not_a_pass),
    Attack("threads that ignore signals",
           MARK + "import signal, threading\nthreading.stack_size(1 << 18)  # small stacks fit any memory cap\ndef spin():\n    signal.pthread_sigmask(signal.SIG_BLOCK, range(1, 32))\n"
           "    while True: pass\nfor _ in range(4): threading.Thread(target=spin).start()\nspin()",
           _status("timeout")),
    Attack("look for the expected output",
           "import os\nfound = []\nfor top in ('/', '/proc'):\n"
           "    for root, dirs, files in os.walk(top):\n        for f in files:\n"
           "            try:\n                with open(os.path.join(root, f), 'rb') as h: data = h.read(1 << 16)\n"
           "            except OSError: continue\n"
           "            i = data.find(b'marl-')\n            if i >= 0: found.append(data[i:i + 21].decode(errors='replace'))\n"
           "print(found[0] if found else 'nothing')", _not_a_pass, stdin="a question whose answer only the trainer holds"),
]


def _held_within_budget(r: Result, p: Probe, comm: str) -> str:
    """Contained: the children never held more than the budget at once (each reports once it holds
    its memory, then keeps it)."""
    held = max([int(line.split()[1]) for line in r.out.splitlines() if line.startswith("held ")], default=0)
    return f"its processes held {held} MB at once, over the {LIMITS.memory_mb} MB budget" if held > LIMITS.memory_mb \
        else _none_left(r, p, comm)


# The trainer reads the driver's answers from a pipe; a program that could write to it (through
# /proc/<pid>/fd of a process holding it) would answer for itself: the forged line comes first.
FORGE = ("import json, os\nline = json.dumps({{'status': 'ok', 'out': 'FORGED', 'err': '', 'seconds': 0}}) + '\\n'\n"
         "for pid in sorted({{1, os.getppid()}}):\n    for fd in (1, 0):\n        try:\n"
         "            with open(f'/proc/{{pid}}/fd/{{fd}}', 'w') as f: f.write(line)\n"
         "            print('wrote', pid, fd, file=__import__('sys').stderr)\n"
         "        except OSError as e: print(pid, fd, e, file=__import__('sys').stderr)\nprint('real')")


def _not_forged(r: Result, p: Probe, comm: str) -> str:
    return "a forged answer reached the trainer" if "FORGED" in r.out else ""


def fan_out(children: int = 12, mb: int = 200) -> str:
    """A program whose `children` each fill `mb` MB, every one under the per-process cap, and hold
    it; the parent prints the total held as each reports. Only a budget over all the program's
    processes stops them (sandbox/cgroup.py; rlimit shares where no cgroup can be made). Keeps
    `{comm}` for Probe.fields."""
    return (MARK + f"import os, time\nr, w = os.pipe()\nfor i in range({children}):\n    if os.fork() == 0:\n"
            f"        os.close(r)\n        try:\n            x = bytearray({mb} << 20)\n"
            "            for j in range(0, len(x), 4096): x[j] = 1\n            os.write(w, b'x')\n"
            "        except MemoryError: pass\n        time.sleep(5)\n        os._exit(0)\n"
            f"os.close(w)\nheld = 0\nfor i in range({children}):\n    if not os.read(r, 1): break\n    held += {mb}\n"
            "    print('held', held, flush=True)\n")


# 3 s: twelve children filling 200 MB each take longer than LIMITS' 1 s on two busy cores
ATTACKS.append(Attack("memory fan-out over child processes", fan_out(), _held_within_budget, timeout_s=3.0))
ATTACKS.append(Attack("forge an answer through the driver's pipe", FORGE, _not_forged))

# Raw system calls by number (x86_64), each line "<what> <errno name>" or "<what> ALLOWED": the
# seccomp filter's (sandbox/seccomp.py) answer is EPERM (clone3: ENOSYS); any other answer means
# the call reached the kernel. A call that succeeds as clone forks: that child leaves at once.
SYSCALLS = (
    "import ctypes, errno, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "def call(what, nr, *args):\n"
    "    ctypes.set_errno(0)\n"
    "    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])\n"
    "    if r == 0 and what.startswith('clone'): os._exit(0)\n"
    "    print(what, 'ALLOWED' if r >= 0 else errno.errorcode.get(ctypes.get_errno(), '?'), flush=True)\n"
    "zero = ctypes.create_string_buffer(256)\nbuf = ctypes.addressof(zero)\n")


def _refused(*expected: str) -> Callable:
    """Contained: the program printed exactly `expected` calls, each refused by the filter."""
    def check(r: Result, p: Probe, comm: str) -> str:
        got = dict(line.rsplit(" ", 1) for line in r.out.splitlines() if " " in line)
        wrong = [f"{w}: {got.get(w, 'not reached')}" for w in expected
                 if got.get(w) != ("ENOSYS" if w.startswith("clone3") else "EPERM")]
        return "reached the kernel: " + ", ".join(wrong) if wrong else ""
    return check


SYSCALL_ATTACKS = [
    Attack("a namespace from inside (unshare, clone, setns)",
           SYSCALLS + "call('unshare user', 272, 0x10000000)\ncall('unshare mount', 272, 0x20000)\n"
           "call('unshare net', 272, 0x40000000)\ncall('clone user', 56, 0x10000000 | 17, 0, 0, 0, 0)\n"
           "call('clone pid', 56, 0x20000000 | 17, 0, 0, 0, 0)\ncall('clone3', 435, buf, 88)\n"
           "call('setns', 308, os.open('/proc/self/ns/net', os.O_RDONLY), 0)",
           _refused("unshare user", "unshare mount", "unshare net", "clone user", "clone pid", "clone3", "setns")),
    Attack("trace or read another process",
           SYSCALLS + "call('ptrace traceme', 101, 0, 0, 0, 0)\ncall('ptrace attach parent', 101, 16, os.getppid(), 0, 0)\n"
           "call('process_vm_readv', 310, os.getpid(), buf, 0, buf, 0, 0)\n"
           "call('process_vm_writev', 311, os.getpid(), buf, 0, buf, 0, 0)",
           _refused("ptrace traceme", "ptrace attach parent", "process_vm_readv", "process_vm_writev")),
    Attack("the kernel's attack surface (bpf, perf, keyrings, userfaultfd, io_uring)",
           SYSCALLS + "call('bpf', 321, 0, buf, 48)\ncall('perf_event_open', 298, buf, 0, -1, -1, 0)\n"
           "call('keyctl', 250, 0, -3, 0)\ncall('add_key', 248, buf, buf, 0, 0, -3)\n"
           "call('request_key', 249, buf, buf, 0, -3)\ncall('userfaultfd', 323, 0)\n"
           "call('io_uring_setup', 425, 1, buf)",
           _refused("bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd", "io_uring_setup")),
    Attack("mount, modules, kexec, reboot, swap",
           SYSCALLS + "call('mount', 165, buf, buf, buf, 0, 0)\ncall('umount2', 166, buf, 0)\n"
           "call('pivot_root', 155, buf, buf)\ncall('fsopen', 430, buf, 0)\ncall('open_tree', 428, -100, buf, 0)\n"
           "call('init_module', 175, buf, 0, buf)\ncall('finit_module', 313, -1, buf, 0)\n"
           "call('kexec_load', 246, 0, 0, 0, 0)\ncall('reboot', 169, 0, 0, 0, 0)\ncall('swapon', 167, buf, 0)\n"
           "call('acct', 163, 0)\ncall('open_by_handle_at', 304, -1, buf, 0)",
           _refused("mount", "umount2", "pivot_root", "fsopen", "open_tree", "init_module", "finit_module",
                    "kexec_load", "reboot", "swapon", "acct", "open_by_handle_at")),
]
ATTACKS += SYSCALL_ATTACKS


def run_attack(a: Attack, probe: Probe, limits: Limits = LIMITS) -> tuple[Result, str, float]:
    """(result, "" if contained else why not, seconds until the run was over and none of its
    processes was left)."""
    comm = "marl-" + secrets.token_hex(3)
    os.environ["MARL_PROBE_SECRET"] = probe.secret
    t0 = time.monotonic()
    try:
        r = run_stdin(a.code.format(**probe.fields(comm)), [a.stdin],
                      replace(limits, timeout_s=a.timeout_s) if a.timeout_s else limits)[0]
    finally:
        del os.environ["MARL_PROBE_SECRET"]
    why = a.check(r, probe, comm)
    return r, why, time.monotonic() - t0  # the check waits for the run's processes to be gone
