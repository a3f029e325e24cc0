"""The seccomp filter (sandbox/seccomp.py): what it refuses, what a program still does under it, and
the refusal to run anything where it cannot be built."""
from __future__ import annotations

import pytest

import sandbox
from sandbox import Limits, seccomp

ISSUE_LIST = {"unshare", "setns", "mount", "umount2", "pivot_root", "ptrace", "process_vm_readv",
              "process_vm_writev", "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd",
              "io_uring_setup", "io_uring_enter", "io_uring_register", "init_module", "finit_module",
              "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl"}


def test_every_listed_call_is_refused_with_a_reason():
    assert ISSUE_LIST <= set(seccomp.DENIED) and all(len(why) > 10 for why in seccomp.DENIED.values())
    assert len(seccomp.program()) % 8 == 0 and seccomp.program()  # struct sock_filter instructions


def test_a_program_does_what_solutions_do_and_nothing_the_filter_refuses():
    code = ("import ctypes, errno, multiprocessing, os, threading\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "print('unshare', libc.unshare(0x10000000), errno.errorcode[ctypes.get_errno()])\n"
            "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
            "pid = os.fork()\nif pid == 0: os._exit(3)\nprint('fork', os.waitpid(pid, 0)[1] >> 8)\n"
            "def sq(x): return x * x\n"
            "with multiprocessing.Pool(2) as p: print('pool', p.map(sq, [2, 3]))\n"
            "open('/tmp/f', 'w').write('x'); print('file', open('/tmp/f').read())\n")
    r = sandbox.run_program(code, Limits(timeout_s=10.0))
    assert r.status == "ok", r
    assert r.out.split("\n")[:5] == ["unshare -1 EPERM", "thread", "fork 3", "pool [4, 9]", "file x"]


def test_without_a_filter_the_sandbox_refuses_and_runs_nothing(monkeypatch, tmp_path):
    def missing():
        raise seccomp.FilterUnavailable("no seccomp: libseccomp.so.2: cannot open shared object file")

    monkeypatch.setattr(seccomp, "pipe_fd", missing)
    monkeypatch.setattr(sandbox, "_probe", sandbox._probe.__wrapped__)
    marker = tmp_path / "ran"
    with pytest.raises(sandbox.SandboxUnavailable, match="no seccomp: libseccomp.so.2"):
        sandbox.run_program(f"open({str(marker)!r}, 'w').write('x')")
    with pytest.raises(sandbox.SandboxUnavailable, match="unavailable: no seccomp"):
        sandbox.check_available()
    assert not marker.exists()


def test_a_filter_that_does_not_hold_is_refused(monkeypatch):
    """The availability probe also checks the filter is in force: a bwrap that ignored --seccomp
    (here: an empty filter, which allows everything) makes the sandbox unavailable."""
    monkeypatch.setattr(seccomp, "program", lambda: b"\x06\x00\x00\x00\x00\x00\xff\x7f")  # BPF: return ALLOW
    monkeypatch.setattr(sandbox, "_probe", sandbox._probe.__wrapped__)
    with pytest.raises(sandbox.SandboxUnavailable, match="the seccomp filter is not in force"):
        sandbox.check_available()
