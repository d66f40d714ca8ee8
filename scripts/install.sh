#!/usr/bin/env bash
# Install credential-agent into ./.venv, link `agent` into ~/.local/bin, start it.
#
#   scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}   # scripts/test.sh uses .venv-test, so tests never turn this install editable

if ! "$PY" -c 'import ensurepip' 2>/dev/null; then
  echo "python3 -m venv needs ensurepip: on Debian/Ubuntu, apt-get install python3-venv" >&2
  exit 1
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VENV=$(cd "$VENV" && pwd)   # absolute: the link below must not depend on this directory
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q '.[fast]'

mkdir -p "$HOME/.local/bin"
ln -sf "$VENV/bin/agent" "$HOME/.local/bin/agent"
"$VENV/bin/agent" start
"$VENV/bin/agent" status
case ":$PATH:" in
  *":$HOME/.local/bin:"*) ;;
  *) echo "add ~/.local/bin to PATH to run \`agent\` directly" ;;
esac
echo "next: \`agent init\` creates the vault (OS keystore if one works, else a passphrase)"
