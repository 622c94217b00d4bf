# spikewatch as a container image.
#
#   podman build --format docker -t spikewatch .        (docker build -t spikewatch .)
#   podman run --rm --read-only --tmpfs /tmp -p 9878:9878 \
#       -v ./spikewatch.yaml:/etc/spikewatch/spikewatch.yaml:ro spikewatch
#
# - The daemon is PID 1 (exec-form ENTRYPOINT, no shell in between). It installs handlers
#   for SIGTERM and SIGINT (graceful stop, exit 0 within 10 s) and SIGHUP (reload), and it
#   starts no child processes, so no init is needed to forward signals or reap zombies.
#   `spikewatch once` installs no SIGTERM handler: run it with `--init` if it must stop on
#   SIGTERM (a PID 1 without a handler ignores it).
# - It writes nothing to the root filesystem: run it with --read-only. `spikewatch demo`
#   writes its API token in the temp dir, so give it `--tmpfs /tmp`.
# - The run history (SQLite, storage.path) is in /var/lib/spikewatch, a VOLUME owned by the
#   image's user: SPIKEWATCH_STORAGE__PATH points there. Mount a named volume on it
#   (`-v spikewatch-runs:/var/lib/spikewatch`) to keep the runs across containers (without
#   one, the runtime makes an anonymous volume, writable even with --read-only).
# - The health check asks http://127.0.0.1:9878/healthz; when server.listen is another
#   port or address, set SPIKEWATCH_HEALTHCHECK_URL (not a config override: spikewatch
#   reads only SPIKEWATCH_<section>__... variables).
# - HEALTHCHECK is a Docker image format field: build with podman/buildah using
#   `--format docker`, or it is dropped from the OCI image.
# - BASE_IMAGE must have python3 (3.11, as deploy/requirements.lock is locked for) with
#   venv, on PATH: the official slim image (default) or a Debian bookworm with python3-venv.
#   Both stages use it, so the venv's interpreter path is the same in both.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- builder: the wheel, and a venv with the hashed dependencies and that wheel ----
FROM ${BASE_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

WORKDIR /src

# The build backend, pinned and hashed, in a venv of its own (never in the image).
COPY deploy/build-requirements.lock deploy/requirements.lock deploy/
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --no-deps --only-binary=:all: \
        -r deploy/build-requirements.lock

# The runtime venv: the dependencies first, so this layer is cached until the lock changes.
RUN python3 -m venv /opt/spikewatch \
    && /opt/spikewatch/bin/pip install --require-hashes --no-deps --only-binary=:all: \
        -r deploy/requirements.lock

COPY pyproject.toml README.md ./
COPY spikewatch ./spikewatch
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
    && /opt/spikewatch/bin/pip install --no-deps --no-index /dist/spikewatch-*.whl \
    && /opt/spikewatch/bin/pip check \
    && /opt/spikewatch/bin/pip uninstall --yes pip setuptools \
    && /opt/spikewatch/bin/spikewatch --version

# ---- the image: the base plus the venv, run as a fixed non-root user ----
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="spikewatch" \
      org.opencontainers.image.description="Continuous WebSocket spike and recovery prober with Prometheus metrics" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --gid 10001 spikewatch \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin spikewatch

# Owned by root: the user can read and run the code, never change it.
COPY --from=builder /opt/spikewatch /opt/spikewatch

# The run history's directory: the user's, and a volume (declared after it is made, so the
# volume starts with this owner and mode).
RUN install -d -o 10001 -g 10001 -m 0750 /var/lib/spikewatch
VOLUME ["/var/lib/spikewatch"]

ENV PATH=/opt/spikewatch/bin:$PATH \
    SPIKEWATCH_STORAGE__PATH=/var/lib/spikewatch \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001
EXPOSE 9878
STOPSIGNAL SIGTERM

HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/opt/spikewatch/bin/python", "-c", "import os, sys, urllib.request as u\nurl = os.environ.get('SPIKEWATCH_HEALTHCHECK_URL', 'http://127.0.0.1:9878/healthz')\ntry:\n    status = u.build_opener(u.ProxyHandler({})).open(url, timeout=4).status\nexcept Exception as exc:\n    sys.exit(f'{url}: {exc}')\nsys.exit(0 if status == 200 else f'{url}: HTTP {status}')"]

ENTRYPOINT ["/opt/spikewatch/bin/spikewatch"]
CMD ["run", "--config", "/etc/spikewatch/spikewatch.yaml"]
