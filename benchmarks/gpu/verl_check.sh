#!/usr/bin/env bash
# engine=verl end to end on one GPU node (policy=shared, per_role, lora; a few steps each on a
# random Qwen3-1.7B-architecture model): one PASS/FAIL line per check, and throughput.
#   pip install torch==2.11.0 && pip install -e ".[gpu]"
#   bash benchmarks/gpu/verl_check.sh [n_gpus]      # default: every visible GPU (per_role and lora need an even count)
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python benchmarks/gpu/verl_check.py --gpus "${1:-0}"
