"""setup.py pins every dependency: an open-ended requirement (torch above all) lets pip pull a
multi-GB CUDA build, or a release nobody tested with the rest."""
import ast
import re
from pathlib import Path

SETUP = Path(__file__).resolve().parents[1] / "setup.py"
PINNED = re.compile(r"^[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.+\-]*$")


def requirements() -> dict[str, list[str]]:
    """{"install_requires": [...], "extras/<name>": [...]}, read from setup.py without running it."""
    call = next(n for n in ast.walk(ast.parse(SETUP.read_text()))
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords
          if k.arg in ("install_requires", "extras_require")}
    out = {"install_requires": kw["install_requires"]}
    out.update({f"extras/{name}": reqs for name, reqs in kw["extras_require"].items()})
    return out


def test_every_requirement_is_pinned_to_one_version():
    reqs = requirements()
    assert reqs["install_requires"] and "extras/gpu" in reqs
    loose = [f"{where}: {r!r}" for where, rs in reqs.items() for r in rs if not PINNED.match(r.replace(" ", ""))]
    assert not loose, "unpinned requirements (use name==version): " + "; ".join(loose)


def test_torch_is_pinned_to_the_cpu_wheel_and_the_gpu_extra_pins_vllm():
    reqs = requirements()
    assert "torch==2.13.0" in reqs["install_requires"]
    assert any(r.startswith("vllm==") for r in reqs["extras/gpu"])
