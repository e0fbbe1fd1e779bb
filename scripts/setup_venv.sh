#!/usr/bin/env bash
# Create the project's virtual environment and install memtop with its test tools.
# torch: a torch already installed for python3 is used as is (a user's CUDA build); otherwise a
# machine with an NVIDIA driver gets PyPI's default (CUDA) build and one without gets torch==2.13.0,
# the CPU build this project is tested with (an unpinned torch would pull several GB of CUDA).
set -euo pipefail
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "setup: using the torch already installed for $PYTHON"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --disable-pip-version-check --upgrade pip

if "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: torch $("$PY" -c 'import torch; print(torch.__version__)') already present"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found, installing PyPI's CUDA build of torch"
  "$PY" -m pip install -q --disable-pip-version-check torch
else
  echo "setup: no NVIDIA GPU, installing the CPU build torch==2.13.0"
  "$PY" -m pip install -q --disable-pip-version-check torch==2.13.0
fi
"$PY" -m pip install -q --disable-pip-version-check -e '.[test]'
echo "setup: done ($("$PY" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'))"
