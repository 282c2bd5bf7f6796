#!/usr/bin/env bash
# The GPU check (mtlbench/gpu_check.py) on a bare GPU machine: PyTorch is there, a package registry is not.
# Run from the repository's root: bash workflow/scripts/gpu_check.sh [--methods ...] [--budget-s 450]
# The training core needs numpy, scipy, pyyaml and tqdm beside PyTorch. Where one is missing, carry it as a
# wheel in .whl/ (pip download --no-deps --only-binary=:all: --python-version <the machine's> -d .whl NAME);
# the suite itself runs from this checkout (no install). Results: $OUT/gpu_check.csv (or gpu_check/ here).
set -euo pipefail
if ! python3 -c "import numpy, scipy, yaml, tqdm" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
out=${OUT:-gpu_check}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
python3 -m mtlbench.gpu_check --out "$out/runs" "$@"
cp "$out/runs/gpu_check.csv" "$out/" 2>/dev/null || true
