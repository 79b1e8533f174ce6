#!/usr/bin/env bash
# Sets up everything isthmus needs on a fresh Debian machine, idempotently:
# the Debian packages the demo, the tests and the tools use, and a venv in .venv
# with isthmus installed (editable) plus its dev tools.
# Needs root for apt-get (re-runs itself through sudo then); skips apt when every package
# is already installed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
source scripts/root.sh

# etcd-server provides /usr/bin/etcd for the replicated-controller tests (isthmus_lab.etcd
# starts its own members on free ports; the Debian service is not used). openssl makes the
# throwaway CA and certificates of the etcd-over-TLS tests (isthmus_lab.certs).
# The check below runs on every call, .venv or not, so adding a package here installs it
# on the next run of an existing checkout.
apt_packages=(iproute2 nftables conntrack tcpdump iperf3 iputils-ping procps python3-venv etcd-server openssl)
# systemd gives systemd-analyze and cloud-init gives `cloud-init schema`, for tests/deploy
# (the units and the Terraform user data). They come without their recommends.
norec_packages=(systemd cloud-init)
missing=()
missing_norec=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
for p in "${norec_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing_norec+=("$p")
done
if ((${#missing[@]} + ${#missing_norec[@]})); then
    # Installing needs root: re-run through sudo, or say so (scripts/root.sh).
    as_root "to install Debian packages: ${missing[*]} ${missing_norec[*]}" \
        "$here/scripts/setup.sh" "$@"
    echo "setup: installing Debian packages: ${missing[*]} ${missing_norec[*]}"
    # Installing starts no service on this machine: while apt runs, a policy-rc.d (unless
    # one is already there) refuses every start that a package's scripts ask for.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# scripts/setup.sh: start no service while installing\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    if ((${#missing[@]})); then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if ((${#missing_norec[@]})); then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing_norec[@]}" >/dev/null
    fi
    # cloud-init is here for its schema check only: when this script installed it, it never
    # runs at boot (cloud-init's own switch), so it cannot reconfigure this machine.
    if [[ " ${missing_norec[*]} " == *" cloud-init "* ]]; then
        touch /etc/cloud/cloud-init.disabled
    fi
    if [[ -e $policy ]] && grep -q "scripts/setup.sh" "$policy"; then
        rm -f "$policy"
        trap - EXIT
    fi
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
