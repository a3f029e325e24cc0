from setuptools import find_packages, setup

setup(
    name="marl",
    version="0.1.0",
    description="On-policy RL for teams of LLM agents (AT-GRPO), laptop to cluster",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["marl", "marl.*", "envs", "envs.*", "roles", "roles.*",
                                    "experiments", "experiments.*"]),
    include_package_data=True,
    install_requires=[
        "torch==2.13.0",
        "transformers==5.10.4",
        "tokenizers==0.22.2",
        "hydra-core==1.3.8",
        "omegaconf==2.3.1",
        "gymnasium==1.4.0",
        "pettingzoo==1.27.0",
        "wandb==0.31.0",
        "verl==0.9.1",
        "peft==0.21.2",  # policy=lora: one adapter per role (verl 0.9.1 requires peft too; this pins it)
        "numpy==2.3.5",  # not 2.4: vllm (the gpu extra) needs mistral-common, which caps numpy<2.4 on Python 3.11
        "tqdm==4.70.1",
        "PyYAML==6.0.3",  # experiments/sweeps reads W&B sweep files
        "matplotlib==3.11.2",  # the mismatch experiment's heatmap; the analysis notebook
    ],
    extras_require={
        "test": ["pytest==9.2.0", "hypothesis==6.170.15",
                 "nbclient==0.11.0", "nbformat==5.11.1", "ipykernel==7.4.0"],  # runs notebooks/ in the suite
        # vllm 0.31.0 is the newest release that accepts both torch==2.13.0 and transformers==5.10.4
        # (0.32+ needs transformers>=5.16.1, which verl 0.9.1 forbids; verl's own `vllm` extra pins
        # vllm 0.24.0, which needs torch 2.11.0). `pip install --dry-run ".[gpu,test]"` resolves with every
        # pin above; not yet run on a GPU.
        "gpu": ["vllm==0.31.0"],
        "bench": ["trl==1.16.0", "datasets==5.2.0", "accelerate==1.15.0"],  # benchmarks/trl_step.py only; not a dependency of the package
    },
    entry_points={"verl.plugins": ["at_grpo = marl.verl_plugin"]},
)
