#!/usr/bin/env bash
# Install credential-agent into ./.venv, link `agent` into ~/.local/bin, start it.
#
#   scripts/install.sh
#
# Run again to upgrade: an agent left running from before the install is stopped and
# started again on the new code (saying so), and a vault that exists is kept.
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

# what runs now, before the files change under it: {"running": ..., "pid": ..., "locked": ...}
state() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null || echo '{}'
import json
try:
    from client import Client, errors
    with Client(autostart=False, timeout=5) as c:
        st = c.status()
    print(json.dumps({"running": True, "pid": st["pid"], "initialized": st["initialized"],
                      "locked": st["locked"], "key_source": st["key_source"], "credentials": st["credentials"]}))
except Exception:
    print(json.dumps({"running": False}))
PY
}
field() { "$VENV/bin/python" -c 'import json, sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$1" "$2"; }

before=$(state)
# a config file that names a team vault needs the team extra (hvac)
extras=fast
config=$("$VENV/bin/python" -c 'from client import paths; print(paths.config_path())' 2>/dev/null || true)
if [ -n "$config" ] && [ -f "$config" ] && grep -q '^\[remote\.' "$config"; then
  extras=fast,team
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q ".[$extras]"

mkdir -p "$HOME/.local/bin"
ln -sf "$VENV/bin/agent" "$HOME/.local/bin/agent"
if [ "$(field "$before" running)" = True ]; then
  # it runs the code it loaded before this install: start it again on the new one
  "$VENV/bin/agent" stop >/dev/null
  echo "stopped the agent that ran before this install (pid $(field "$before" pid)); starting it on the new code"
fi
"$VENV/bin/agent" start
"$VENV/bin/agent" status
case ":$PATH:" in
  *":$HOME/.local/bin:"*) ;;
  *) echo "add ~/.local/bin to PATH to run \`agent\` directly" ;;
esac
after=$(state)
if [ "$(field "$after" initialized)" = True ]; then
  echo "your vault is kept ($(field "$after" credentials) credentials, key source $(field "$after" key_source))"
  if [ "$(field "$before" running)" = True ] && [ "$(field "$before" locked)" = False ] \
      && [ "$(field "$after" locked)" = True ]; then
    echo "next: \`agent unlock\` (the restarted agent starts locked)"
  fi
else
  echo "next: \`agent init\` creates the vault (OS keystore if one works, else a passphrase)"
fi
