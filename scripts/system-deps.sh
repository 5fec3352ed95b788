#!/usr/bin/env bash
# Debian packages the test suite drives for real: Chromium (kiosk page tests), OpenSSH (deploy tests),
# qemu-user-static and debootstrap (make pi-sim and its test), Mosquitto (the MQTT output's tests),
# systemd-container, mmdebstrap and zstd (the systemd test bed: tests/systemd_bed.py, make systemd-test).
# Installs only what is missing; skips quietly when it cannot (not root, no apt): those tests then skip
# with a message naming this script.
set -uo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/sbin/sshd ] || need+=(openssh-server openssh-client)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
{ command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: no apt-get here; install ${need[*]} yourself to run the browser and ssh tests." >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "system-deps: not root and no passwordless sudo; install ${need[*]} to run the browser and ssh tests." >&2
    exit 0
  fi
fi
echo "system-deps: installing ${need[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
  || echo "system-deps: apt-get install ${need[*]} failed; the browser and ssh tests will skip." >&2
exit 0
