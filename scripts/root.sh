# Sourced by the scripts that need root (demo.sh, test.sh, setup.sh when it installs).
#
# as_root WHY SCRIPT [ARGS...]: returns when this process is root; otherwise re-executes
# SCRIPT (an absolute path) with ARGS through sudo when sudo exists, and when it does not,
# exits 1 saying WHY root is needed and how to run it. `id` and `sudo` are looked up on
# PATH at call time (tests/deploy/test_scripts_root.py runs every branch with fakes).
as_root() {
    local why=$1 script=$2
    shift 2
    if [[ $(id -u) -eq 0 ]]; then
        return 0
    fi
    if command -v sudo >/dev/null 2>&1; then
        echo "${script##*/}: not root; re-running through sudo" >&2
        exec sudo -- bash "$script" "$@"
    fi
    echo "${script##*/}: needs root ($why), and sudo is not installed: run it as root" >&2
    exit 1
}
