#!/usr/bin/env bash
# Downloads into DIR (default .whl/) the wheels that the GPU machine of issue 15 lacks, for CPython 3.12 on
# manylinux x86_64, pinned to the versions the test suite runs with here. That machine has Python 3.12.3, torch
# 2.11.0+cu130, transformers 5.17.0, peft, accelerate, numpy, pandas, scipy, statsmodels, scikit-learn, typer, rich,
# tqdm, jinja2, requests, lxml, pyarrow, safetensors, tokenizers and matplotlib, and no internet. It installs them with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
# (see benchmarks/gpu_check.sh for the whole command).
#
# Carried: what `import kofinsent`, the hf backend, `kofinsent.training.hf_trainer`, the eval / train / export CLIs and
# benchmarks/gpu_check.py import (checked with an import trace) and the machine lacks:
#   bitsandbytes (8-bit weights; one wheel with the kernels for CUDA 11.8-13.2: most of the folder's size),
#   pydantic + pydantic-core + annotated-types + typing-inspection (+ typing-extensions, which pydantic needs recent),
#   tomli-w (writing configs), beautifulsoup4 + soupsieve (the crawler's HTML parser, imported only when crawling),
#   gguf (kofinsent export gguf, for the unsloth stage).
# Not carried, because nothing the GPU check runs imports them (each is imported lazily where it is used):
#   kiwipiepy + kiwipiepy-model (the TF-IDF Kiwi baseline only; the model wheel alone is tens of MiB),
#   datasets (+ dill, multiprocess, xxhash, ...: only the unsloth engine imports it, and installing unsloth brings it;
#   the HF Trainer runs without it), unsloth itself (it needs the internet and its own CUDA stack).
#
#   bash benchmarks/offline_wheels.sh [DIR]        PYTHON_VERSION=3.11 for another interpreter (tests here)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PYVER=${PYTHON_VERSION:-3.12}
LIMIT_MIB=${LIMIT_MIB:-50}
WHEELS=(
  bitsandbytes==0.50.2
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
  tomli-w==1.2.0
  beautifulsoup4==4.15.0 soupsieve==4.1.4
  gguf==0.19.0
)
mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # only this script's wheels live there: no stale version may be installed with *.whl
# --only-binary with these platform tags also takes pure-Python py3-none-any wheels
"${PYTHON:-python3}" -m pip download --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -q -d "$DEST" "${WHEELS[@]}"
ls -l "$DEST"
size=$(du -sk "$DEST" | cut -f1)
echo "$DEST: $(ls "$DEST"/*.whl | wc -l) wheels, $((size / 1024)) MiB (limit ${LIMIT_MIB} MiB)"
if [ "$size" -gt $((LIMIT_MIB * 1024)) ]; then
  echo "error: $DEST is over ${LIMIT_MIB} MiB" >&2
  exit 1
fi
