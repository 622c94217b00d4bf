#!/usr/bin/env bash
# Regenerate the image's lock files, every version pinned and every file on PyPI hashed,
# for the image's Python (CPython 3.11, Linux x86_64):
#   deploy/requirements.lock        spikewatch's runtime dependencies ([project] dependencies
#                                   in pyproject.toml, not the test extras)
#   deploy/build-requirements.lock  the wheel's build backend ([build-system] requires)
# pip-tools runs in a throwaway venv, never the project's .venv, with PyPI as the only
# index (local find-links or mirrors are not reachable from the image build, and they do
# not hold PyPI's full set of files to hash).
#
#   bash deploy/lock.sh              # keep the current pins, add what is missing
#   bash deploy/lock.sh --upgrade    # move every pin to the newest allowed version
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
"$python" - <<'PY'
import platform, sys
want = ("cpython", (3, 11), "Linux", "x86_64")
have = (sys.implementation.name, sys.version_info[:2], platform.system(), platform.machine())
if have != want:
    sys.exit(f"deploy/lock.sh: needs CPython 3.11 on Linux x86_64 (the image's), not {have}")
PY

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL
"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet 'pip-tools==7.6.2'
"$tmp/venv/bin/python" -c '
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))
' >"$tmp/build-requirements.in"

# lock OUTPUT INPUT STDIN WHAT: pip-compile INPUT ('-': STDIN) into OUTPUT, under a header
# that says how.
lock() {
    local output=$1 input=$2 stdin=$3 what=$4
    shift 4
    CUSTOM_COMPILE_COMMAND='bash deploy/lock.sh' "$tmp/venv/bin/pip-compile" --quiet \
        --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
        --no-emit-find-links --output-file "$output" "$@" "$input" <"$stdin"
    {
        echo "# $what for the container image (CPython 3.11, Linux x86_64),"
        echo "# every version pinned and every file on PyPI hashed; the Dockerfile installs them"
        echo "# with pip install --require-hashes --no-deps -r $output"
        echo "# Regenerate after changing pyproject.toml (never edit by hand):"
        echo "#   bash deploy/lock.sh            (--upgrade moves every pin to the newest allowed)"
        echo "# which runs, in a throwaway venv with pip-tools 7.6.2 and PyPI as the only index:"
        echo "#   pip-compile --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url"
        echo "#       --no-emit-find-links --output-file $output $input"
        [ "$input" = - ] && echo "#   with pyproject.toml's [build-system] requires on its stdin"
        sed -n '/^#$/,$p' "$output" # pip-compile's own header starts at a bare '#'
    } >"$tmp/lock"
    mv "$tmp/lock" "$output"
    echo "$output: $(grep -c '^[a-z0-9]' "$output") pinned packages"
}

lock deploy/requirements.lock pyproject.toml /dev/null "spikewatch's runtime dependencies" "$@"
lock deploy/build-requirements.lock - "$tmp/build-requirements.in" \
    "The wheel's build backend" "$@"
