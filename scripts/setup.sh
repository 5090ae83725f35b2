#!/usr/bin/env bash
# Create .venv and install ShardGuard with everything it needs; idempotent and quick when
# nothing changed. Called by every Makefile target. Variables: VENV, PYTHON, TORCH.
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
stamp="$VENV/.shardguard-installed"
want="$(printf '%s\n' "$TORCH" | cat - pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# PyTorch first, pinned (a bare 'torch' would pull the CUDA build); override with TORCH=...
echo "setup: installing $TORCH"
"${pip[@]}" "$TORCH"
echo "setup: installing shardguard and its dependencies"
"${pip[@]}" -e ".[full,dev,imagenet]"
echo "$want" > "$stamp"
