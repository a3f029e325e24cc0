"""The memory fan-out attack: how much memory one sandboxed program's processes hold at once.

    python benchmarks/fanout.py [--reps 3] [--children 12] [--child-mb 200] [--memory-mb 256]
    PYTHONPATH=<another checkout> python benchmarks/fanout.py --save-as fanout_before   # that checkout's sandbox

The program forks `--children` children that each fill `--child-mb` (under the per-process cap)
and hold it; `--memory-mb` is the sandbox's memory limit. A sampler outside sums the proportional
set size (Pss, so shared pages count once) of every process of the run every 10 ms; the peak is
reported with the program's own count of children holding their memory, its status, and a benign
program run in another sandbox at the same time. Median over repetitions.
"""
from __future__ import annotations

import argparse
import secrets
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, save, table  # noqa: E402

import sandbox  # noqa: E402
from sandbox import Limits  # noqa: E402


def _attacks():
    """This checkout's sandbox/attacks.py, whichever checkout `sandbox` came from (PYTHONPATH):
    the same attack program measures an older sandbox."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("attacks_here", Path(__file__).resolve().parents[1] / "sandbox" / "attacks.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


fan_out = _attacks().fan_out

def pss_mb(comm: str) -> float:
    """Summed Pss of the live processes named `comm`."""
    total = 0
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if (d / "comm").read_text().strip() != comm:
                continue
            for line in (d / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total / 1024


def one(children: int, child_mb: int, memory_mb: int) -> dict:
    comm = "marl-fan" + secrets.token_hex(2)
    code = fan_out(children, child_mb).format(comm=comm)
    peak, done = [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], pss_mb(comm))
            time.sleep(0.01)

    s = threading.Thread(target=sample)
    s.start()
    benign = {}
    b = threading.Thread(target=lambda: benign.update(r=sandbox.run_program("print(6 * 7)", Limits(timeout_s=5.0))))
    t0 = time.monotonic()
    attack = threading.Thread(target=lambda: benign.update(a=sandbox.run_program(code, Limits(timeout_s=2.5,
                                                                                               memory_mb=memory_mb))))
    attack.start()
    time.sleep(0.5)
    b.start()
    attack.join()
    b.join()
    seconds = time.monotonic() - t0
    time.sleep(0.3)
    done.set()
    s.join()
    r = benign["a"]
    held = max([int(x.split()[1]) for x in r.out.splitlines() if x.startswith("held ")], default=0)
    return {"status": r.status, "held_mb": held, "peak_pss_mb": round(peak[0], 1), "seconds": round(seconds, 2),
            "benign": benign["r"].status + ":" + benign["r"].out.strip()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--children", type=int, default=12)
    ap.add_argument("--child-mb", type=int, default=200)
    ap.add_argument("--memory-mb", type=int, default=256)
    ap.add_argument("--save-as", default="fanout", help="results/<name>.json (e.g. fanout_before for another checkout)")
    args = ap.parse_args()
    sandbox.check_available()
    runs = [one(args.children, args.child_mb, args.memory_mb) for _ in range(args.reps)]
    row = {"sandbox": str(Path(sandbox.__file__).resolve().parents[1]), "budget MB": args.memory_mb,
           "status": "/".join(sorted({r["status"] for r in runs})),
           "held at once, MB (program's count)": median([r["held_mb"] for r in runs]),
           "peak Pss MB (sampled)": median([r["peak_pss_mb"] for r in runs]),
           "seconds": median([r["seconds"] for r in runs]),
           "benign program beside it": "/".join(sorted({r["benign"] for r in runs}))}
    print(table([list(row.values())], list(row)))
    save(args.save_as, {"args": vars(args), "runs": runs, "summary": row})


if __name__ == "__main__":
    main()
