#!/usr/bin/env bash
# edgecam kiosk: wait until the local daemon answers, then keep Chromium full-screen on its page.
# Started by the desktop session at login (edgecam-kiosk.desktop or labwc-autostart, see the README);
# install as /usr/local/bin/edgecam-kiosk. If Chromium exits or crashes it is started again.
#
# Settings, from the environment or /etc/default/edgecam-kiosk (shell syntax):
#   EDGECAM_KIOSK_URL    the page (default http://127.0.0.1:8080/; add ?token=SECRET if the daemon needs one)
#   EDGECAM_BROWSER      browser command (default: chromium-browser, else chromium)
#   EDGECAM_KIOSK_FLAGS  extra browser flags, e.g. "--force-device-scale-factor=1.5"
set -u
[ -r /etc/default/edgecam-kiosk ] && . /etc/default/edgecam-kiosk
URL=${EDGECAM_KIOSK_URL:-http://127.0.0.1:8080/}
ORIGIN=$(printf '%s' "$URL" | sed -E 's#^(https?://[^/?]+).*#\1#')
HEALTH="$ORIGIN/healthz"
say() { echo "edgecam-kiosk: $*" >&2; }

# One kiosk per login, even when both autostart routes (XDG .desktop and labwc) are installed.
LOCK="${XDG_RUNTIME_DIR:-/tmp}/edgecam-kiosk.lock"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$LOCK"
  flock -n 9 || { say "already running (lock $LOCK)"; exit 0; }
fi

BROWSER=${EDGECAM_BROWSER:-}
if [ -z "$BROWSER" ]; then
  for candidate in chromium-browser chromium; do
    if command -v "$candidate" >/dev/null 2>&1; then BROWSER=$candidate; break; fi
  done
fi
[ -n "$BROWSER" ] || { say "no chromium-browser or chromium here: sudo apt install chromium-browser"; exit 1; }

# Kiosk mode, no prompts or bubbles, nothing kept between boots, and no calls home (it runs offline).
FLAGS=(--kiosk --noerrdialogs --disable-infobars --incognito --no-first-run --disable-session-crashed-bubble
       --disable-features=Translate --check-for-update-interval=31536000 --disable-background-networking
       --disable-component-update --disable-sync --password-store=basic --overscroll-history-navigation=0
       --disable-pinch)

answers() {  # the daemon is up: 200 (ok) or 503 (degraded) both count, the page explains a degraded state
  local code
  if command -v curl >/dev/null 2>&1; then
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$HEALTH" 2>/dev/null)
  else
    code=$(python3 - "$HEALTH" <<'PY' 2>/dev/null
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=2).status)
except urllib.error.HTTPError as error:
    print(error.code)
except Exception:
    print("000")
PY
)
  fi
  [ -n "$code" ] && [ "$code" != 000 ]
}

wait_for_daemon() {  # Chromium would show a dead error page if it came first: wait for as long as it takes
  local waited=0
  until answers; do
    if [ $((waited % 30)) -eq 0 ]; then say "waiting for the edgecam daemon at $HEALTH (systemctl status edgecam)"; fi
    sleep 1
    waited=$((waited + 1))
  done
}

while true; do
  wait_for_daemon
  say "opening $ORIGIN/ in $BROWSER"
  # shellcheck disable=SC2086  # EDGECAM_KIOSK_FLAGS is a list of flags
  "$BROWSER" "${FLAGS[@]}" ${EDGECAM_KIOSK_FLAGS:-} "$URL"
  say "$BROWSER exited ($?); starting it again in 3 s"
  sleep 3
done
