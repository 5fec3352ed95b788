#!/usr/bin/env bash
# edgecam device installer. Runs on the Pi from the unpacked device archive:
#   tar -xzf edgecam-device-NAME.tar.gz && sudo bash edgecam-device-NAME/install.sh
# Each install goes into its own release folder PREFIX/releases/ID (ID: a hash of the archive's contents) with
# its own venv; PREFIX/current and PREFIX/previous are links. A release becomes `current` only after its pip
# install and `device doctor` succeeded, and the service is switched back if it fails to start, so an upgrade
# never leaves the device without a working version. Running it twice with the same archive changes nothing.
# What the device learns lives outside the releases, in the state folder /var/lib/edgecam (the unit's
# StateDirectory=): the Teach view's dataset/ and the taught heads (models/<model key>/heads/). It is created
# once, owned by the service user, and no install, rollback or prune ever deletes it; a person teaching from a
# shell uses the `edgecam` command install.sh writes (/usr/local/bin/edgecam: edgecam status|teach|capture|...),
# which runs the current release as that user and finds the same folder.
# Raspberry Pi OS trixie (Debian 13, Python 3.13) and bookworm (Debian 12, Python 3.11): one requirements file
# with environment markers serves both (requirements.txt); the apt packages per release are in apt_packages.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: install.sh [options]            install this archive's release and (re)start the service
       install.sh --rollback [options] make the previous release current again
       install.sh --status [options]   show the current, previous and installed releases
Options:
  --prefix DIR     install folder (default /opt/edgecam)
  --root DIR       stage everything under DIR instead of / (a test or image root; implies --no-systemd).
                   Also taken from $EDGECAM_ROOT.
  --no-systemd     write the unit file but do not enable, start or restart the service
  --python PY      Python to build the venv with (default python3; the venv uses --system-site-packages
                   so apt's numpy, picamera2 and libcamera stay visible)
  --pip-args ARGS  extra pip install arguments, e.g. "--no-index --find-links /media/usb/wheels"
  --keep N         releases to keep, the current and previous ones always kept (default 3)
  --user NAME      system user the service runs as (default edgecam; created when missing)
  --no-apt         do not apt-get install missing python3-venv, python3-numpy, python3-pil, python3-picamera2
                   (only ever tried as root on a device with systemd, never with --root)
  --bin-dir DIR    where the `edgecam` command goes (default /usr/local/bin)
EOF
}

say() { echo "edgecam install: $*"; }
die() { echo "edgecam install: error: $*" >&2; exit 1; }

PREFIX=/opt/edgecam
ROOT=${EDGECAM_ROOT:-}
SYSTEMD=auto
PYTHON=python3
PIP_ARGS=""
KEEP=3
SERVICE_USER=edgecam
ACTION=install
APT=yes
BIN_DIR=/usr/local/bin
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a folder}; shift 2 ;;
    --root) ROOT=${2:?--root needs a folder}; shift 2 ;;
    --no-systemd) SYSTEMD=no; shift ;;
    --python) PYTHON=${2:?--python needs an interpreter}; shift 2 ;;
    --pip-args) PIP_ARGS=${2-}; shift 2 ;;
    --keep) KEEP=${2:?--keep needs a number}; shift 2 ;;
    --user) SERVICE_USER=${2:?--user needs a name}; shift 2 ;;
    --no-apt) APT=no; shift ;;
    --bin-dir) BIN_DIR=${2:?--bin-dir needs a folder}; shift 2 ;;
    --rollback) ACTION=rollback; shift ;;
    --status) ACTION=status; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path, got $PREFIX" ;; esac
case "$KEEP" in ''|*[!0-9]*) die "--keep must be a number, got $KEEP" ;; esac
[ "$KEEP" -ge 2 ] || KEEP=2
if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT" && ROOT=$(cd "$ROOT" && pwd)
  SYSTEMD=no
fi
for path in "$ROOT" "$PREFIX"; do
  case "$path" in *[[:space:]\#\&\|\\]*) die "paths with spaces or any of #&|\\ are not supported: $path" ;; esac
done
if [ "$SYSTEMD" = auto ]; then
  # The sd_booted() test: systemd is PID 1 and systemctl exists.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then SYSTEMD=yes; else SYSTEMD=no; fi
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE=$ROOT$PREFIX              # where the files are
UNIT_DIR=$ROOT/etc/systemd/system
ENV_FILE=$ROOT/etc/default/edgecam
LOG_DIR=$ROOT/var/log/edgecam
DATASET_DIR=$ROOT/var/lib/edgecam/dataset  # the daemon's default --dataset when it exists (device/teach/)
RELEASES=$BASE/releases

CHANGED=no  # set when the current release, the unit or the environment file changed: restart needed
release_of() { local target; target=$(readlink "$BASE/$1" 2>/dev/null) || return 0; basename "$target"; }

set_link() {  # set_link NAME RELEASE_ID: atomic (a new link renamed over the old one)
  ln -sfn "releases/$2" "$BASE/.$1.new"
  mv -Tf "$BASE/.$1.new" "$BASE/$1"
  [ "$1" != current ] || CHANGED=yes
}

json_field() {  # json_field FILE KEY -> value, or nothing
  "$PYTHON" -c 'import json, sys
try: print(json.load(open(sys.argv[1])).get(sys.argv[2]) or "")
except (OSError, ValueError): pass' "$1" "$2"
}

replace_if_changed() {  # replace_if_changed NEW TARGET: move NEW over TARGET, noting whether it differed
  if [ -f "$2" ] && cmp -s "$1" "$2"; then rm -f "$1"; else mv -f "$1" "$2"; CHANGED=yes; fi
}

write_env_file() {  # keep the user's lines (EDGECAM_ARGS, EDGECAM_TOKEN, ...); set EDGECAM_RUNTIME
  local runtime=$1 tmp
  mkdir -p "$(dirname "$ENV_FILE")"
  tmp=$(mktemp "$ENV_FILE.XXXXXX")
  if [ -f "$ENV_FILE" ]; then
    grep -v -e '^EDGECAM_RUNTIME=' -e '^# EDGECAM_RUNTIME is written by install.sh' "$ENV_FILE" >"$tmp" || true
  else
    cat >"$tmp" <<'EOF'
# edgecam service environment (read by edgecam.service). Your own lines are kept across installs.
# Extra daemon flags, e.g.: EDGECAM_ARGS="--source picamera2 --model edgetpu@usb:0 --http 0.0.0.0:8080"
# EDGECAM_TOKEN=... is required when --http listens beyond 127.0.0.1.
EDGECAM_ARGS=""
# Results to an MQTT broker with Home Assistant discovery (needs paho-mqtt in the venv; README "Outputs"):
# EDGECAM_MQTT=mqtt://homeassistant.local:1883
# EDGECAM_MQTT_USERNAME=edgecam
# EDGECAM_MQTT_PASSWORD=...
# EDGECAM_MQTT_TOPIC=edgecam/kitchen
# More MQTT flags go in EDGECAM_ARGS, e.g. "--mqtt-emit every --mqtt-ca /etc/edgecam/ca.crt --no-ha-discovery".
# POST each label change to a webhook (Node-RED, n8n, ...):
# EDGECAM_WEBHOOK=http://192.168.1.10:1880/edgecam
EOF
  fi
  if [ -n "$runtime" ]; then
    printf '# EDGECAM_RUNTIME is written by install.sh from `device doctor` (the runtime that worked)\n' >>"$tmp"
    printf 'EDGECAM_RUNTIME=%s\n' "$runtime" >>"$tmp"
  fi
  # systemd reads it as root: keep it private (EDGECAM_TOKEN), or as the user set it.
  if [ -f "$ENV_FILE" ]; then chmod --reference="$ENV_FILE" "$tmp"; else chmod 0600 "$tmp"; fi
  replace_if_changed "$tmp" "$ENV_FILE"
}

render_unit() {  # render_unit RELEASE_DIR: its unit, paths pointed at PREFIX/current -> RELEASE_DIR/state/
  local template=$1/device/systemd/edgecam.service out=$1/state/edgecam.service
  [ -f "$template" ] || die "$template is missing from the release"
  mkdir -p "$1/state"
  # Tokens first, so that a --root path which itself contains /opt/edgecam is not replaced twice.
  sed -e 's#/opt/edgecam/\.venv/#@PREFIX@/current/venv/#g' \
      -e 's#/opt/edgecam/artifacts/[^ ]*#@PREFIX@/current/bundle#g' \
      -e 's#^WorkingDirectory=.*#WorkingDirectory=@PREFIX@/current#' \
      -e 's#/opt/edgecam#@PREFIX@#g' -e 's#/etc/default/edgecam#@ENV_FILE@#g' -e 's#/var/log/edgecam#@LOG_DIR@#g' \
      -e "s#^User=.*#User=$SERVICE_USER#" -e "s#^Group=.*#Group=$SERVICE_USER#" \
      -e "s#@PREFIX@#$BASE#g" -e "s#@ENV_FILE@#$ENV_FILE#g" -e "s#@LOG_DIR@#$LOG_DIR#g" \
      "$template" >"$out"
  grep -q "^ExecStart=$BASE/current/venv/bin/python -m device --bundle $BASE/current/bundle" "$out" \
    || die "$template no longer has the ExecStart line install.sh expects; update render_unit in install.sh"
}

install_unit() {  # install_unit RELEASE_DIR
  local tmp
  mkdir -p "$UNIT_DIR"
  tmp=$(mktemp "$UNIT_DIR/.edgecam.service.XXXXXX")
  cp "$1/state/edgecam.service" "$tmp"
  chmod 0644 "$tmp"
  replace_if_changed "$tmp" "$UNIT_DIR/edgecam.service"
}

restart_service() {  # -> 0 when the service came up (Type=notify: restart waits for READY=1)
  [ "$SYSTEMD" = yes ] || { say "no systemd here (or --root/--no-systemd): unit written to $UNIT_DIR, not started"; return 0; }
  if [ "$CHANGED" = no ] && systemctl is-active --quiet edgecam.service; then
    say "service edgecam already runs this release; nothing to restart"
    return 0
  fi
  systemctl daemon-reload
  systemctl enable --quiet edgecam.service
  if systemctl restart edgecam.service && sleep 2 && systemctl is-active --quiet edgecam.service; then
    say "service edgecam is running ($(systemctl show -p MainPID --value edgecam.service | sed 's/^/pid /'))"
    return 0
  fi
  systemctl --no-pager --lines=20 status edgecam.service >&2 || true
  return 1
}

activate() {  # activate RELEASE_ID: unit + environment from that release, then restart
  local dir=$RELEASES/$1
  [ -f "$dir/state/edgecam.service" ] || render_unit "$dir"
  install_unit "$dir"
  write_env_file "$(json_field "$dir/state/runtime.json" runtime)"
  restart_service
}

ensure_service_user() {
  [ "$SYSTEMD" = yes ] || return 0
  id -u "$SERVICE_USER" >/dev/null 2>&1 && return 0
  say "creating system user $SERVICE_USER (groups: video$(getent group plugdev >/dev/null && echo ', plugdev'))"
  useradd --system --home-dir "$PREFIX" --no-create-home --shell /usr/sbin/nologin \
    --groups "video$(getent group plugdev >/dev/null && echo ',plugdev')" "$SERVICE_USER"
}

ensure_dataset_dir() {  # the captured frames: created once, kept across releases and rollbacks
  if [ ! -d "$DATASET_DIR" ]; then
    say "creating the dataset folder $DATASET_DIR (kept across releases; make pull copies it to the host)"
    mkdir -p "$DATASET_DIR"
    chmod 0750 "$DATASET_DIR"
  fi
  # Only for a real service user; a --root stage keeps the installing user as owner.
  if [ "$SYSTEMD" = yes ] && [ "$(id -u)" = 0 ] && id -u "$SERVICE_USER" >/dev/null 2>&1 \
     && [ "$(stat -c %U "$DATASET_DIR")" != "$SERVICE_USER" ]; then
    chown "$SERVICE_USER:$SERVICE_USER" "$(dirname "$DATASET_DIR")" "$DATASET_DIR"
  fi
}

tune_release() {  # the fastest model format and thread count here (device/tune.py); never fails the install
  local state
  state=$(dirname "$DATASET_DIR")
  if [ "$SYSTEMD" = yes ] && systemctl is-active --quiet edgecam.service; then
    if [ "$CHANGED" = no ]; then
      say "service edgecam already runs this release; its tuning stays"; return 0
    fi
    # the running daemon holds the Edge TPU and loads the CPU: measured beside it, the rows would be wrong
    say "stopping the running daemon while tuning (the new release starts right after)"
    systemctl stop edgecam.service || true
  fi
  say "device tune (which of the bundle's model formats, with how many threads, is fastest here)"
  "$RELEASES/$1/venv/bin/python" -m device tune --bundle "$RELEASES/$1/bundle" --state-dir "$state" --quiet \
    || { echo "edgecam install: warning: device tune failed; the daemon tunes on its first start" >&2; return 0; }
  if [ "$SYSTEMD" = yes ] && [ "$(id -u)" = 0 ] && id -u "$SERVICE_USER" >/dev/null 2>&1; then
    chown -R "$SERVICE_USER:$SERVICE_USER" "$state/tuning"  # the daemon re-tunes there when the board changes
  fi
}

install_command() {  # BIN_DIR/edgecam: the current release's device/command.py, as the service runs it
  local bin=$ROOT$BIN_DIR tmp
  mkdir -p "$bin"
  tmp=$(mktemp "$bin/.edgecam.XXXXXX")
  cat >"$tmp" <<EOF
#!/bin/sh
# edgecam: this device's command (written by install.sh; edgecam --help). It runs the current release
# ($BASE/current) as the service's user $SERVICE_USER with its state folder and $ENV_FILE.
exec $BASE/current/venv/bin/python -m device.command --prefix $BASE --user $SERVICE_USER \\
  --env-file $ENV_FILE --state-dir $(dirname "$DATASET_DIR") --log-dir $LOG_DIR "\$@"
EOF
  chmod 0755 "$tmp"
  if [ -f "$bin/edgecam" ] && cmp -s "$tmp" "$bin/edgecam"; then rm -f "$tmp"; else mv -f "$tmp" "$bin/edgecam"; fi
}

show_status() {
  echo "prefix:   $BASE"
  echo "current:  $(release_of current)"
  echo "previous: $(release_of previous)"
  echo "dataset:  $DATASET_DIR$([ -d "$DATASET_DIR" ] || echo ' (missing)')"
  echo "heads:    $(dirname "$DATASET_DIR")/models (taught heads, per model; python -m device status shows which serves)"
  echo "releases:"
  [ -d "$RELEASES" ] && ls -1 "$RELEASES" | sed 's/^/  /'
  return 0
}

rollback() {
  local current previous
  current=$(release_of current); previous=$(release_of previous)
  [ -n "$previous" ] && [ -f "$RELEASES/$previous/.complete" ] \
    || die "no previous release to roll back to in $BASE (install.sh --status lists them)"
  say "rolling back from ${current:-none} to $previous"
  set_link current "$previous"
  [ -n "$current" ] && set_link previous "$current"
  activate "$previous" || die "release $previous did not start either; see: journalctl -u edgecam"
  say "current release: $previous (install.sh --rollback again returns to $current)"
}

build_release() {  # build_release ID: copy, venv, pip, doctor; the folder is removed again on failure
  local id=$1 dir=$RELEASES/$1 site
  rm -rf "$dir"
  mkdir -p "$dir"
  BUILDING=$dir
  trap 'rm -rf "$BUILDING"; echo "edgecam install: failed; the current release is unchanged" >&2' EXIT
  say "copying release $id to $dir"
  cp -R "$HERE/device" "$HERE/bundle" "$HERE/requirements.txt" "$HERE/release.json" "$HERE/install.sh" "$dir/"
  for extra in wheels kiosk; do [ ! -d "$HERE/$extra" ] || cp -R "$HERE/$extra" "$dir/"; done
  say "creating venv ($("$PYTHON" --version 2>&1), --system-site-packages)"
  "$PYTHON" -m venv --system-site-packages "$dir/venv"
  site=$("$dir/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$dir" >"$site/edgecam-release.pth"  # `import device` from anywhere, e.g. python -m device doctor
  local pip=("$dir/venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet)
  if [ -d "$dir/wheels" ]; then  # an offline archive (make bundle WHEELS=1): pip never asks an index
    pip+=(--no-index --find-links "$dir/wheels")
    say "offline install: $(find "$dir/wheels" -name '*.whl' | wc -l) wheels in the archive, pip --no-index"
  fi
  # shellcheck disable=SC2206  # --pip-args is split into words on purpose
  pip+=($PIP_ARGS -r "$dir/requirements.txt")
  say "pip install -r requirements.txt"
  "${pip[@]}"
  package_imx500 "$dir"
  say "device doctor"
  [ -z "$ROOT" ] || mkdir -p "$LOG_DIR"  # on the device, systemd creates it for the service (LogsDirectory=)
  "$dir/venv/bin/python" -m device doctor --bundle "$dir/bundle" --verdict-dir "$dir/state" --log-dir "$LOG_DIR"
  render_unit "$dir"
  touch "$dir/.complete"
  trap - EXIT
}

prune() {
  local current previous kept=0 id
  current=$(release_of current); previous=$(release_of previous)
  # shellcheck disable=SC2045  # release ids are [A-Za-z0-9._-] (deploy/bundle.py); ls -t orders them by age
  for id in $(ls -1t "$RELEASES"); do
    if [ "$id" = "$current" ] || [ "$id" = "$previous" ]; then continue; fi
    kept=$((kept + 1))
    if [ $((kept + 2)) -gt "$KEEP" ]; then say "removing old release $id"; rm -rf "${RELEASES:?}/$id"; fi
  done
}

os_field() {  # os_field KEY -> its value in os-release(5), or nothing
  [ -f "$ROOT/etc/os-release" ] || return 0
  # shellcheck disable=SC1090,SC1091  # os-release is shell-compatible by its specification
  (. "$ROOT/etc/os-release" && eval "printf '%s' \"\${$1:-}\"")
}

apt_packages() {  # the Pi's own packages: a venv needs python3-venv; numpy, Pillow and picamera2 come from apt
  [ "$APT" = yes ] && [ "$SYSTEMD" = yes ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 0
  local package missing=() wanted
  case "$(os_field VERSION_CODENAME)" in
    # trixie: Python 3.13, NumPy 2.2, Pillow 11; ai-edge-litert is the interpreter (requirements.txt)
    trixie) wanted="python3-venv python3-numpy python3-pil python3-picamera2" ;;
    # bookworm: Python 3.11, NumPy 1.24 (tflite-runtime 2.14 needs NumPy 1.x), Pillow 9.4
    bookworm) wanted="python3-venv python3-numpy python3-pil python3-picamera2" ;;
    *) echo "edgecam install: warning: $(os_field PRETTY_NAME) is not a release edgecam is tested on" \
            "(Raspberry Pi OS trixie or bookworm); trying trixie's packages" >&2
       wanted="python3-venv python3-numpy python3-pil python3-picamera2" ;;
  esac
  for package in $wanted; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true
  for package in "${missing[@]}"; do
    apt-get install -y -qq --no-install-recommends "$package" >/dev/null \
      || echo "edgecam install: warning: apt-get install $package failed" >&2
  done
}

package_imx500() {  # package_imx500 RELEASE_DIR: the AI Camera's network.rpk from the bundle's packerOut.zip
  local packer=$1/bundle/imx500/packerOut.zip
  [ -f "$packer" ] || return 0
  if command -v imx500-package >/dev/null; then
    say "imx500-package: the AI Camera's network.rpk"
    imx500-package -i "$packer" -o "$1/bundle/imx500" \
      || echo "edgecam install: warning: imx500-package failed; python -m device doctor says what is missing" >&2
  else
    echo "edgecam install: warning: the bundle has an AI Camera model but imx500-package is missing: sudo apt" \
         "install imx500-all, then run install.sh again (python -m device doctor lists what is missing)" >&2
  fi
}

install() {
  [ -f "$HERE/release.json" ] && [ -d "$HERE/device" ] && [ -d "$HERE/bundle" ] \
    || die "$HERE is not an unpacked edgecam device archive (no release.json, device/, bundle/)"
  apt_packages
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null \
    || die "$PYTHON is missing or older than 3.9 (Raspberry Pi OS trixie has 3.13, bookworm 3.11)"
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
    || die "$PYTHON cannot create virtual environments: sudo apt install python3-venv"
  local id old os_name
  os_name=$(os_field PRETTY_NAME)
  say "on ${os_name:-an unknown OS}, $("$PYTHON" --version 2>&1)"
  id=$(json_field "$HERE/release.json" id)
  [ -n "$id" ] || die "$HERE/release.json has no release id"
  mkdir -p "$RELEASES"
  old=$(release_of current)
  if [ -f "$RELEASES/$id/.complete" ]; then
    say "release $id is already installed; checking it again"
    "$RELEASES/$id/venv/bin/python" -m device doctor --bundle "$RELEASES/$id/bundle" \
      --verdict-dir "$RELEASES/$id/state" --log-dir "$LOG_DIR" >/dev/null \
      || die "release $id no longer passes device doctor: run $RELEASES/$id/venv/bin/python -m device doctor"
  else
    build_release "$id"
  fi
  if [ "$old" != "$id" ]; then
    set_link current "$id"
    [ -n "$old" ] && set_link previous "$old"
  fi
  ensure_service_user
  ensure_dataset_dir
  install_command
  tune_release "$id"
  if ! activate "$id"; then
    if [ -n "$old" ] && [ "$old" != "$id" ]; then
      echo "edgecam install: the service did not start with $id; going back to $old" >&2
      set_link current "$old"; set_link previous "$id"
      activate "$old" || true
      die "release $id failed to start and $old runs again (journalctl -u edgecam shows why)"
    fi
    die "release $id is installed but the service did not start: journalctl -u edgecam shows why; fix" \
        "$ENV_FILE (e.g. EDGECAM_ARGS=\"--source opencv:0\") and run: sudo systemctl restart edgecam"
  fi
  prune
  say "current release: $id (runtime: $(json_field "$RELEASES/$id/state/runtime.json" runtime))"
  if [ "$SYSTEMD" = yes ]; then
    say "check: systemctl status edgecam; curl -s http://127.0.0.1:8080/status; journalctl -u edgecam -f"
    say "from a shell: edgecam status | edgecam capture --label NAME | edgecam teach | edgecam url (edgecam --help)"
  fi
}

mkdir -p "$BASE"
exec 9>"$BASE/.install.lock"
flock -n 9 || die "another install.sh is running on $BASE"
case "$ACTION" in
  install) install ;;
  rollback) rollback ;;
  status) show_status ;;
esac
