#!/usr/bin/env bash
# Sets up everything isthmus needs on a fresh Debian machine, idempotently:
# the Debian packages the demo, the tests and the tools use, and a venv in .venv
# with isthmus installed (editable) plus its dev tools.
# Needs root for apt-get; skips apt when every package is already installed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

# etcd-server provides /usr/bin/etcd for the replicated-controller tests (isthmus.lab.etcd
# starts its own members on free ports; the Debian service is not used).
# The check below runs on every call, .venv or not, so adding a package here installs it
# on the next run of an existing checkout.
apt_packages=(iproute2 nftables tcpdump iperf3 iputils-ping procps python3-venv etcd-server)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: need root to install Debian packages: ${missing[*]}" >&2
        exit 1
    fi
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: isthmus needs Python 3.11 or newer; $py is $("$py" --version 2>&1)" >&2
    exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv"
    "$py" -m venv .venv
fi
stamp=.venv/.isthmus-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    echo "setup: installing isthmus and its dev tools into .venv"
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[dev]'
    touch "$stamp"
fi
