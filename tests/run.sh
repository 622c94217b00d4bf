#!/usr/bin/env bash
# The whole test suite from a clean checkout (the README's test command; .ci/run runs it).
# It makes .venv, installs spikewatch with its test extras, then runs lint, types and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages some tests need: Debian's chromium (the status page in a real browser),
# prometheus (promtool, and the server for the end-to-end test), prometheus-alertmanager
# (amtool, and the server), and podman, runc and debootstrap (the container test builds and
# runs the image; debootstrap makes its base image). Installed when missing; without them
# those tests fail, never skip.
#
# kubectl (`kubectl kustomize`, for the Kubernetes manifests) must be >= 1.27 with
# kustomize v5. These machines' image ships one (Google Cloud SDK's kubectl 1.32, kustomize
# v5.5); Debian bookworm's `kubernetes-client` is 1.20 with kustomize v2, too old to render
# the manifests, so it is not installed as a stand-in: a missing kubectl is reported.
if ! command -v kubectl >/dev/null 2>&1; then
    echo "tests need kubectl >= 1.27 (with kustomize v5) on PATH; Debian's kubernetes-client is too old" >&2
    exit 1
fi
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
PATH=$PATH:/usr/sbin:/sbin command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing ${need[*]} (Debian packages)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "tests need the Debian packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
        exit 1
    fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]' 2>&1 \
    | grep -v '^WARNING: Location' || true

echo "== ruff"
.venv/bin/ruff check spikewatch tests bench
.venv/bin/ruff format --check spikewatch tests bench
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest --cov --cov-report=term --cov-fail-under=90 "$@"
