#!/usr/bin/env bash
# Run the CPython part of the test suite under each other CPython version found here,
# each in a venv of its own (.venv-3.12, .venv-3.13). The library and the tools support
# CPython 3.11 and later. Most tests whose time goes to MicroPython runs are left out,
# because `make test` runs them under .venv: those named micropython, the soak and most
# of the sim. The sim's option checks and its default scenario still run, so that the
# sim, like the bench and the board deploy, is tried on every version.
#
# OTHER_PYTHONS lists the versions (default "3.12 3.13"). A version is looked for as
# pythonX.Y on PATH, then in pyenv's versions, also when pyenv itself is not on PATH.
# One that is not found is reported and skipped; every one found must pass.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

versions=${OTHER_PYTHONS-3.12 3.13}

find_python() {
    local version=$1
    local candidate
    # A pyenv shim is on PATH for every version pyenv has, but fails for one that is not
    # selected, so each candidate must run.
    if candidate=$(command -v "python$version") && "$candidate" -c "" 2>/dev/null; then
        echo "$candidate"
        return 0
    fi
    local root
    root=$(pyenv root 2>/dev/null) || root=${PYENV_ROOT:-$HOME/.pyenv}
    for candidate in "$root/versions/$version".*/bin/"python$version"; do
        if [ -x "$candidate" ] && "$candidate" -c "" 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

status=0
for version in $versions; do
    if ! python=$(find_python "$version"); then
        echo "CPython $version not found on PATH or in pyenv; its tests did not run"
        continue
    fi
    venv=".venv-$version"
    echo "=== Tests on $("$python" --version) ($python), in $venv"
    if ! make --no-print-directory setup VENV="$venv" PYTHON="$python"; then
        echo "setting up $venv failed"
        status=1
        continue
    fi
    "$venv/bin/python" -m pytest -q tests -k "not micropython" \
        --ignore=tests/test_sim.py --ignore=tests/test_soak.py || status=1
    "$venv/bin/python" -m pytest -q tests/test_sim.py \
        -k "invalid or must_be or needs or default_scenario_delivers" || status=1
done
exit "$status"
