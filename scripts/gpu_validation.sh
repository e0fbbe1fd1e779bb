#!/usr/bin/env bash
# GPU validation in one command: scripts/gpu_validation.sh OUTDIR [--quick] [--dry-run] [--only a,b]
# Runs from the repository root with PYTHONPATH=$PWD (memtop need not be installed); see
# docs/validation/README.md. Without CUDA it prints one line and exits 0.
set -u
export MEMTOP_VALIDATION_CWD="$PWD"  # OUTDIR is taken relative to where you ran this
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m memtop.validation "$@"
