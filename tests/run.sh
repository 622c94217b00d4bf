#!/usr/bin/env bash
# The whole test suite from a clean checkout (the README's test command; .ci/run runs it).
# It makes .venv, installs spikewatch with its test extras, then runs lint, types and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages some tests need: Debian's chromium (the status page in a real browser),
# prometheus (promtool, and the server for the end-to-end test), prometheus-alertmanager
# (amtool, and the server), and podman, runc and debootstrap (the container test builds and
# runs the image; debootstrap makes its base image), and the real servers tests/peers runs
# spikewatch against: nginx-light, haproxy, mosquitto, and ruby with puma and
# ruby-actioncable. Installed when missing; without them those tests fail, never skip.
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
PATH=$PATH:/usr/sbin:/sbin command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
PATH=$PATH:/usr/sbin:/sbin command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
PATH=$PATH:/usr/sbin:/sbin command -v mosquitto >/dev/null 2>&1 || need+=(mosquitto)
command -v ruby >/dev/null 2>&1 || need+=(ruby)
command -v puma >/dev/null 2>&1 || need+=(puma)
command -v ruby >/dev/null 2>&1 && ruby -e 'require "action_cable"' >/dev/null 2>&1 || need+=(ruby-actioncable)
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

# The real servers of tests/peers that come from npm (Socket.IO, graphql-ws, ws), pinned by
# tests/peers/package-lock.json: installed once, like bench/'s.
if [ ! -d tests/peers/node_modules ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "tests need node and npm on PATH (tests/peers runs Socket.IO and graphql-ws)" >&2
        exit 1
    fi
    echo "== npm ci (tests/peers/package-lock.json)"
    (cd tests/peers && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi

echo "== ruff"
.venv/bin/ruff check spikewatch tests bench
.venv/bin/ruff format --check spikewatch tests bench
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest --cov --cov-report=term --cov-fail-under=90 "$@"
