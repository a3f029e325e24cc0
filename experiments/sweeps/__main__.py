"""Run a W&B sweep file's grid offline as a Hydra multirun:

    python -m experiments.sweeps <name> [more marl.train overrides]   # e.g. k train.steps=20
    python -m experiments.sweeps --list
    python -m experiments.sweeps <name> --print                       # the command, not run
"""
from __future__ import annotations

import shlex
import subprocess
import sys

from experiments.sweeps import multirun_args, names


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] == "--list":
        print("\n".join(names()))
        return 0
    dry = "--print" in argv
    name, *extra = [a for a in argv if a != "--print"]
    try:
        cmd = [sys.executable, "-m", "marl.train", *multirun_args(name, extra)]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(shlex.join(cmd), flush=True)
    return 0 if dry else subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
