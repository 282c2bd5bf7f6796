#!/usr/bin/env bash
# The GPU check (mtlbench/gpu_check.py) on a bare GPU machine: PyTorch is there, a package registry is not.
# Here first: bash workflow/scripts/gpu_wheels.sh (the wheels the machine lacks, into .whl/, carried beside the
# checkout). There, from the repository's root: bash workflow/scripts/gpu_check.sh [--methods ...] [--budget-s 450]
# The training core needs numpy, scipy, pandas, pyyaml, tqdm and mlxtend beside PyTorch; the suite itself runs
# from this checkout (no install). Results: $OUT/gpu_check.csv (or gpu_check/gpu_check.csv here).
set -uo pipefail
if ! python3 -c "import numpy, scipy, pandas, yaml, tqdm, mlxtend" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  python3 -c "import numpy, scipy, pandas, yaml, tqdm, mlxtend" || { echo "a package is still missing" >&2; exit 2; }
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
out=${OUT:-gpu_check}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null
python3 -m mtlbench.gpu_check --out "$out/runs" "$@"
rc=$?
cp "$out/runs/gpu_check.csv" "$out/" 2>/dev/null
exit $rc
