#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system packages (when root), a venv
# with the project and its test tools, lint, types, then pytest against real agent
# processes and a real Secret Service (gnome-keyring on a private D-Bus bus).
#
#   scripts/test.sh [PYTEST ARGS...]
#
# It installs into its own venv, .venv-test (VENV=... names another), as an editable
# install: never into .venv, where scripts/install.sh keeps the user's installed copy.
#
# Exit status: pytest's, except that "no tests collected" (5) is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv-test}
log() { printf '== %s\n' "$*" >&2; }

# Debian packages the tests use: a real Secret Service (dbus-daemon, gnome-keyring),
# systemd-analyze / systemd-socket-activate (unit tests), ssh-agent and secret-tool
# (benchmark baselines), strace, taskset/setarch (util-linux), useradd and mount
# (reliability suite). Installed only when missing and root.
need=()
command -v dbus-daemon >/dev/null || need+=(dbus-daemon)
command -v dbus-send >/dev/null || need+=(dbus-bin)
command -v gnome-keyring-daemon >/dev/null || need+=(gnome-keyring)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v ssh-agent >/dev/null || need+=(openssh-client)
# benchmark rows and a client test: syscalls per request (strace), the CLI's baseline (secret-tool)
command -v strace >/dev/null || need+=(strace)
command -v secret-tool >/dev/null || need+=(libsecret-tools)
command -v setarch >/dev/null || need+=(util-linux)
# Debian's python3 needs python3-venv for `python3 -m venv` (ensurepip)
"$PY" -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
# reliability suite as root: a second Unix user (useradd), small tmpfs data dirs (mount)
command -v useradd >/dev/null || need+=(passwd)
command -v mount >/dev/null || need+=(mount)
# `agent completion` and `agent man` tests: the shells the scripts are for, and the page's renderers
command -v zsh >/dev/null || need+=(zsh)
command -v fish >/dev/null || need+=(fish)
command -v groff >/dev/null || need+=(groff-base)
command -v man >/dev/null || need+=(man-db)
# `agent get --clip` tests: a real clipboard on a private X server
command -v Xvfb >/dev/null || need+=(xvfb)
command -v xclip >/dev/null || need+=(xclip)
command -v xsel >/dev/null || need+=(xsel)
# approvals through a real pinentry on a pty (tests/agent/test_pinentry.py)
command -v pinentry-tty >/dev/null || need+=(pinentry-tty)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" </dev/null >/dev/null
  else
    log "missing ${need[*]} (not root or no apt-get): the tests that need them will skip, saying why"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
log "installing the project and its test tools into $VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip </dev/null >/dev/null
"$VENV/bin/python" -m pip install -q -e '.[test,dev,fast,team,aws]' </dev/null

log "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check agent client
log "mypy --strict"
"$VENV/bin/mypy" --strict agent client

# On Linux as root the packages above are there, so the real Secret Service must
# come up: a failure to start it is an error, not a quiet skip.
if [ "$(uname -s)" = Linux ] && command -v gnome-keyring-daemon >/dev/null && command -v dbus-daemon >/dev/null; then
  export CA_TEST_REQUIRE_SECRET_SERVICE=1
fi

log "pytest"
rc=0
"$VENV/bin/python" -m pytest --durations=25 "$@" </dev/null || rc=$?
if [ "$rc" = 5 ]; then
  log "pytest collected no tests: that is a failure"
  exit 1
fi
exit "$rc"
