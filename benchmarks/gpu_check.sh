#!/usr/bin/env bash
# Issue 15's GPU check: one table (eval items/s at batch 16 / 64 / auto vs the compute floor, generation, training
# samples/s for 8-bit and bf16 LoRA, peak GPU memory, the tiny 8-bit learning check, unsloth + export gguf where
# unsloth is importable) on a random model of polyglot-ko-1.3b's exact shape, in under 8 minutes on one CUDA GPU.
# The Python is benchmarks/gpu_check.py (its docstring says what each row measures; the stages are in gpu_stages.py);
# this wrapper only sets the environment. Local files only: no hub, no network.
#
# On the GPU machine (Python 3.12, torch 2.11+cu130, transformers 5.17; no internet), from the repo root with the
# wheels of benchmarks/offline_wheels.sh carried in .whl/:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/gpu_check.sh --out "$OUT"
#
# Here (no GPU): bash benchmarks/gpu_check.sh --dry-run   (the same stages, tiny shape, CPU, well under a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TRANSFORMERS_VERBOSITY=error TQDM_DISABLE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
