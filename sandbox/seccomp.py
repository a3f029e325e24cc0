"""The seccomp filter every sandboxed program runs under: the system calls a solution program never
needs, refused.

bwrap loads it (`--seccomp FD`) into the sandbox's first process after setting up the namespaces
and before the driver starts, so the driver and every program process inherit it and no program
code ever runs without it. It is compiled once per process with libseccomp (through `pyseccomp`)
into a classic BPF program; a call from another architecture's system-call table (i386 or x32 on
x86_64) kills the process, so the list cannot be bypassed that way. Everything else is allowed:
threads, fork, multiprocessing, files, numpy.

Each refused call fails with EPERM (clone3 with ENOSYS: glibc then falls back to clone, whose flags
the filter can read; clone3 passes them in memory it cannot). Where no filter can be built the
sandbox is unavailable (`SandboxUnavailable`): a program never runs without it.
"""
from __future__ import annotations

import errno
import os
import tempfile
from functools import lru_cache

# The refused system calls and why (a solution program needs none of them).
DENIED = {
    "unshare": "new namespaces: in a user namespace a program holds every capability over its own "
               "namespaces and reaches kernel code unprivileged processes cannot (most container escapes start there)",
    "setns": "joining another process's namespaces",
    "mount": "mounting file systems (and remounting the sandbox's read-only binds)",
    "umount2": "unmounting the sandbox's binds",
    "pivot_root": "changing the root file system",
    "open_tree": "the new mount API, as mount", "move_mount": "the new mount API, as mount",
    "fsopen": "the new mount API, as mount", "fsconfig": "the new mount API, as mount",
    "fsmount": "the new mount API, as mount", "fspick": "the new mount API, as mount",
    "mount_setattr": "the new mount API, as mount",
    "ptrace": "reading and steering another process (the driver, another program)",
    "process_vm_readv": "reading another process's memory without ptrace",
    "process_vm_writev": "writing another process's memory without ptrace",
    "bpf": "loading kernel programs (the verifier and JIT are a frequent escape surface)",
    "perf_event_open": "kernel and hardware performance events: side channels and kernel bugs",
    "keyctl": "the kernel keyring, which no namespace isolates",
    "add_key": "the kernel keyring, which no namespace isolates",
    "request_key": "the kernel keyring, which no namespace isolates",
    "userfaultfd": "pausing the kernel mid-copy: the usual lever of kernel race exploits",
    "io_uring_setup": "io_uring: a second system-call path this filter cannot see, and a frequent source of kernel bugs",
    "io_uring_enter": "io_uring (as io_uring_setup)", "io_uring_register": "io_uring (as io_uring_setup)",
    "init_module": "loading a kernel module", "finit_module": "loading a kernel module",
    "delete_module": "unloading a kernel module",
    "kexec_load": "replacing the running kernel", "kexec_file_load": "replacing the running kernel",
    "reboot": "rebooting the machine",
    "swapon": "adding swap space", "swapoff": "removing swap space",
    "acct": "process accounting to a file",
    "quotactl": "disk quotas", "quotactl_fd": "disk quotas",
    "open_by_handle_at": "opening a host file by its handle, past the mount namespace",
}
# clone with any of these flags makes a namespace, as unshare does
CLONE_NEW = {"CLONE_NEWTIME": 0x80, "CLONE_NEWNS": 0x20000, "CLONE_NEWCGROUP": 0x02000000,
             "CLONE_NEWUTS": 0x04000000, "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000,
             "CLONE_NEWPID": 0x20000000, "CLONE_NEWNET": 0x40000000}


class FilterUnavailable(RuntimeError):
    """No seccomp filter can be built here (sandbox.bwrap turns it into SandboxUnavailable)."""


@lru_cache(maxsize=1)
def program() -> bytes:
    """The filter as the classic BPF program bwrap's --seccomp reads, built once per process."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError, RuntimeError) as e:  # the package, or libseccomp.so.2 under it
        raise FilterUnavailable(f"no seccomp: {e}; the pinned 'pyseccomp' package needs libseccomp "
                                "(Debian/Ubuntu: apt install libseccomp2); reinstall marl (pip install -e .)") from e
    f = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED:
        try:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        except (RuntimeError, ValueError, OSError) as e:  # a call this libseccomp does not know
            raise FilterUnavailable(f"libseccomp cannot refuse {name}: {e}") from e
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for flag in CLONE_NEW.values():
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


def pipe_fd() -> int:
    """A readable file descriptor holding the filter, for one bwrap (`--seccomp FD`; pass it in
    pass_fds, close it once bwrap has started). A pipe: the program is far smaller than its buffer."""
    bpf = program()
    r, w = os.pipe()
    try:
        os.write(w, bpf)
    finally:
        os.close(w)
    return r
