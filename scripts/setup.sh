#!/usr/bin/env bash
# Set up everything mmenc needs: system packages for the bundled data, a virtual environment
# (.venv, or $MMENC_VENV) with the pinned torch stack, mmenc itself and every plugin under
# plugins/. Safe to run again: it does nothing when its inputs have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${MMENC_VENV:-.venv}
python=${PYTHON:-python3}
plugins=""
for d in plugins/*/; do
    if [ -f "$d/pyproject.toml" ]; then plugins="$plugins ${d%/}"; fi
done
stamp="$venv/.mmenc-setup"
want=$(cat constraints.txt pyproject.toml scripts/apt-packages.txt scripts/setup.sh \
        $(for d in $plugins; do echo "$d/pyproject.toml"; done) | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/mmenc" ]; then
    exit 0
fi

missing=""
for pkg in $(grep -v '^#' scripts/apt-packages.txt || true); do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "setup: installing system packages:$missing"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# no wheel cache: the torch stack is installed once per environment, and its cache would hold
# another 3 GB on the same disk
pip="$venv/bin/python -m pip --no-cache-dir"
$pip install -q --upgrade pip
if ! "$venv/bin/python" -c "import torch, torchaudio" >/dev/null 2>&1; then
    # the torch stack takes about 7 GB in the venv and its downloads about 3 GB while pip works
    need_gb=11
    free_kb=$(df -Pk "$venv" | awk 'NR == 2 {print $4}')
    if [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
        echo "setup: the torch stack needs about $need_gb GB free on the disk of $venv;" \
             "$((free_kb / 1024 / 1024)) GB are free there (df -h $venv). Free some space," \
             "or set MMENC_VENV to a folder on a larger disk." >&2
        exit 1
    fi
fi
echo "setup: installing the torch stack (first time: several GB, a few minutes)"
$pip install -q -c constraints.txt torch torchvision
$pip install -q -c constraints.txt torchaudio
echo "setup: installing mmenc and its plugins:" $plugins
editable=""
for d in $plugins; do editable="$editable -e $d"; done
$pip install -q -c constraints.txt -e ".[data,test,all]" $editable
# MIDI rendering (mmenc_audio.render): tinysoundfont declares pyaudio, which has no Linux wheel
# and is only used for live playback, so it is installed without its dependencies
$pip install -q -c constraints.txt --no-deps tinysoundfont
echo "$want" > "$stamp"
