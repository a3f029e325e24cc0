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


def pins(reqs: list[str]) -> dict[str, str]:
    return dict(r.replace(" ", "").split("==") for r in reqs)


def test_torch_comes_from_one_extra_the_cpu_wheel_or_verls_tested_gpu_stack():
    """No torch or transformers in the base requirements: the `cpu` extra pins the CPU wheel on
    this project's machines, the `gpu` extra pins verl 0.9.1's own tested stack (its `vllm` extra,
    read from verl's installed metadata)."""
    import importlib.metadata as md

    reqs = requirements()
    base = pins(reqs["install_requires"])
    assert "torch" not in base and "transformers" not in base
    assert pins(reqs["extras/cpu"])["torch"] == "2.13.0"
    verl_vllm = {}
    for r in md.requires("verl"):
        spec, _, marker = r.partition(";")
        if 'extra == "vllm"' in marker and "==" in spec:
            name, version = spec.strip().split("==")
            verl_vllm[name] = version
    gpu = pins(reqs["extras/gpu"])
    assert {k: gpu[k] for k in ("torch", "transformers", "vllm")} == {k: verl_vllm[k] for k in ("torch", "transformers", "vllm")}


def test_readme_commands_install_the_cpu_stack():
    readme = (SETUP.parent / "README.md").read_text()
    ci = (SETUP.parent / ".ci" / "run").read_text()
    main = 'pip install torch==2.13.0 && pip install -e ".[cpu]" && python -m marl.train +exp=planning'
    tests = 'pip install torch==2.13.0 && pip install -e ".[cpu,test]" && python -m pytest -q'
    assert main in readme and tests in readme and tests in ci
