#!/usr/bin/env bash
# Install what the local stack and the tests need on a fresh Debian machine, then sync the
# workspace: uv (from PyPI), PostgreSQL binaries and nginx (Debian packages). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root (or sudo) to run: $*" >&2; exit 1; fi
}

apt_updated=0
apt_install() {
    if [ $apt_updated = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
    # never let the package start its own system service (the stack runs its own instance)
    as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    as_root rm -f /usr/sbin/policy-rc.d
}

if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check uv
    hash -r
fi
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then
    apt_install postgresql
fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    apt_install nginx
fi
# The newest CPython the project supports that this machine has: uv finds interpreters on PATH,
# and pyenv's installed versions are not there (their shims answer only for the global one).
newest_python() {
    local v c
    for v in 3.13 3.12 3.11; do
        for c in "$(command -v "python$v" 2>/dev/null || true)" \
            "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v"; do
            if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys' >/dev/null 2>&1; then
                echo "$c"
                return
            fi
        done
    done
}
python=$(newest_python)
uv sync --frozen --quiet ${python:+--python "$python"}
