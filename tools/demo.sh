#!/usr/bin/env bash
# Install hvguest into .venv and play a host session against the simulator.
# Needs no root and no Hyper-V.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/hvguest demo "$@"
