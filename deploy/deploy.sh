#!/usr/bin/env bash
# make deploy HOST=user@host: copy the device archive to the Pi over ssh and run its installer there.
# Usage: deploy/deploy.sh USER@HOST ARCHIVE [install.sh options...]
# One ssh connection: the archive goes over stdin into a temporary folder on the Pi, install.sh runs from
# there (with sudo when the remote user is not root) and the folder is removed afterwards.
# Environment:
#   EDGECAM_SSH_OPTS      extra ssh options, e.g. "-p 2222 -i ~/.ssh/pi_key"
#   EDGECAM_INSTALL_ARGS  install.sh options, e.g. "--keep 5" (arguments after ARCHIVE are added too)
#   EDGECAM_SUDO          command to gain root on the Pi (default: "sudo -n" unless you log in as root;
#                         set it empty to run install.sh as the login user, e.g. with --root)
set -euo pipefail

die() { echo "edgecam deploy: error: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: deploy/deploy.sh USER@HOST ARCHIVE [install.sh options...]  (make deploy HOST=pi@raspberrypi.local)"
HOST=$1
ARCHIVE=$2
shift 2
[ -n "$HOST" ] || die "HOST is empty: make deploy HOST=pi@raspberrypi.local"
[ -f "$ARCHIVE" ] || die "$ARCHIVE does not exist: make bundle first"
TOP=$(tar -tzf "$ARCHIVE" | awk -F/ 'NR == 1 {print $1}')  # awk reads it all: no SIGPIPE
[ -n "$TOP" ] && tar -tzf "$ARCHIVE" "$TOP/install.sh" >/dev/null 2>&1 \
  || die "$ARCHIVE is not an edgecam device archive (no $TOP/install.sh): make bundle writes one"

read -r -a SSH_OPTS <<<"${EDGECAM_SSH_OPTS:-}"
read -r -a INSTALL_ARGS <<<"${EDGECAM_INSTALL_ARGS:-}"
INSTALL_ARGS+=("$@")
SUDO_MODE=${EDGECAM_SUDO-auto}

quoted_args=""
for argument in "${INSTALL_ARGS[@]}"; do quoted_args+=" $(printf '%q' "$argument")"; done
# The script the Pi runs; its standard input is the archive.
REMOTE=$(cat <<EOF
set -eu
dir=\$(mktemp -d /tmp/edgecam-deploy.XXXXXX)
trap 'rm -rf "\$dir"' EXIT
cat >"\$dir/archive.tar.gz"
tar -xzf "\$dir/archive.tar.gz" -C "\$dir"
sudo=$(printf '%q' "$SUDO_MODE")
if [ "\$sudo" = auto ]; then
  if [ "\$(id -u)" = 0 ]; then sudo=""; else sudo="sudo -n"; fi
fi
if [ -n "\$sudo" ] && ! \$sudo true 2>/dev/null; then
  echo "edgecam deploy: \$(id -un)@\$(hostname) needs passwordless sudo to install (Raspberry Pi OS's first user has it)," \
       "or log in as root, or set EDGECAM_SUDO=''" >&2
  exit 1
fi
\$sudo bash "\$dir/$TOP/install.sh"$quoted_args
EOF
)

echo "edgecam deploy: copying $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1)) to $HOST and running install.sh"
# base64 keeps the script one plain word whatever the Pi's login shell is (bash, dash, ...).
ENCODED=$(printf '%s\n' "$REMOTE" | base64 | tr -d '\n')
ssh "${SSH_OPTS[@]}" "$HOST" "bash -c \"\$(echo $ENCODED | base64 -d)\"" <"$ARCHIVE" \
  || die "install on $HOST failed (see above); the release that was running is unchanged"
echo "edgecam deploy: done. On the Pi: systemctl status edgecam; curl -s http://127.0.0.1:8080/status"
