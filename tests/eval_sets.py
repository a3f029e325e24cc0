"""Small data sets shaped like the real benchmarks' files, written by tests (nothing is downloaded)."""
from __future__ import annotations

import json
from pathlib import Path


def maths_files(d: Path, n: int = 2) -> Path:
    """An AIME-shaped data set of n problems (rows {id, problem, answer}, as math-ai/aime25 has them)."""
    d.mkdir(parents=True, exist_ok=True)
    rows = [{"id": i, "problem": f"Compute $2^{{{i + 3}}}$ modulo $1000$.", "answer": str(2 ** (i + 3) % 1000)}
            for i in range(n)]
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d
