"""Each policy's initial LoRA adapter under engine=verl: marl's seeded initialisation, written to
disk for verl to load (`model.lora_adapter_path`).

verl 0.9.1 draws a new adapter's A matrices from the worker's unseeded generator (two identical
runs started from different adapters), and builds its `LoraConfig` without dropout. Loading an
adapter marl wrote avoids both: the weights are exactly `engine=local`'s (the same
`add_adapters`, seed and policy order), and the adapter's config carries rank, alpha, dropout and
target modules as `conf/policy/lora.yaml` sets them.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from marl.engine.spec import EngineSpec


def write_initial_adapters(spec: EngineSpec, directory: str | None = None) -> dict[str, str]:
    """{policy id: a directory holding its adapter (PEFT's `adapter_config.json` and weights)}.
    `directory`: where to write them (default, a new temporary directory; a multi-node cluster
    needs one every node sees, e.g. TMPDIR on a shared filesystem)."""
    from marl.engine.local import load_model
    from marl.engine.local.policies import add_adapters

    if spec.lora is None:
        raise ValueError("write_initial_adapters is for policy=lora")
    root = Path(directory or tempfile.mkdtemp(prefix="marl_lora_init_"))
    model, _, _ = load_model(spec.model_path, spec.dtype)
    peft_model = add_adapters(model, spec.policy_ids, spec.lora, spec.seed)
    peft_model.save_pretrained(str(root), selected_adapters=list(spec.policy_ids))
    out = {pid: str(root / pid) for pid in spec.policy_ids}  # PEFT writes an adapter not named "default" under its name
    for pid, d in out.items():
        if not (Path(d) / "adapter_config.json").exists():
            raise RuntimeError(f"PEFT wrote no adapter for policy {pid!r} under {d}")
    return out
