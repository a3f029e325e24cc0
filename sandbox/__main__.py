"""`python -m sandbox`: run every attack of sandbox/attacks.py here and print the table."""
import platform

from sandbox import check_available
from sandbox.attacks import ATTACKS, LIMITS, close_probe, open_probe, run_attack


def main() -> int:
    check_available()
    print(f"limits: {LIMITS}; {platform.node()}, uid {__import__('os').geteuid()}\n")
    print("| attack | outcome | contained | time to contain |\n|---|---|---|---|")
    failed = 0
    for a in ATTACKS:
        probe = open_probe()
        try:
            r, why, s = run_attack(a, probe)
        finally:
            close_probe(probe)
        failed += bool(why)
        print(f"| {a.name} | {r.status} | {'yes' if not why else 'NO: ' + why} | {s:.2f} s |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
