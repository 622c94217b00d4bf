#!/usr/bin/env bash
# The whole test suite from a clean checkout (the README's test command; .ci/run runs it).
# It makes .venv, installs spikewatch with its test extras, then runs lint, types and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 \
    | grep -v '^WARNING: Location' || true

echo "== ruff"
.venv/bin/ruff check spikewatch tests
.venv/bin/ruff format --check spikewatch tests
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest --cov --cov-report=term --cov-fail-under=90 "$@"
