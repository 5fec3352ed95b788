#!/usr/bin/env bash
# make pull HOST=user@host [NAME=...]: copy the device's dataset (the Teach view's captured frames) into a
# folder on this machine over ssh, merging: files already here are never overwritten or deleted.
# Usage: deploy/pull.sh USER@HOST DEST [REMOTE_DATASET]
#   DEST            e.g. data/rps-own (created when missing); train on it with: python -m train --data DEST
#   REMOTE_DATASET  the dataset folder on the device (default /var/lib/edgecam/dataset, made by install.sh)
# One ssh connection streams the folder as a tar archive into a staging folder inside DEST; each file is then
# moved into place only where DEST has no file of that name. A file here that differs from the device's copy
# is kept and listed; JSON-lines indexes (*.jsonl) get the device's lines they lack appended. Hidden files
# (half-written temporaries, the unsure-frames ring) are not copied, but for the frames labelled per region
# (.regions/frames/, beside regions.jsonl: docs/regions.md).
# Environment:
#   EDGECAM_SSH_OPTS  extra ssh options, e.g. "-p 2222 -i ~/.ssh/pi_key"
#   EDGECAM_SUDO      command to read the folder on the device (default: "sudo -n" when the login user
#                     cannot read it; the folder belongs to the service user). Set it empty to never use sudo.
# Exit status: 0 copied (or nothing new), 2 bad arguments or no dataset on the device, 3 ssh could not
# connect (worth a retry), 1 anything else (DEST is left as it was, apart from files already moved in).
set -euo pipefail

die() { echo "edgecam pull: error: $1" >&2; exit "${2:-1}"; }
[ $# -ge 2 ] && [ -n "$1" ] && [ -n "$2" ] \
  || die "usage: deploy/pull.sh USER@HOST DEST [REMOTE_DATASET]  (make pull HOST=pi@raspberrypi.local)" 2
HOST=$1
DEST=$2
REMOTE_DATASET=${3:-/var/lib/edgecam/dataset}
case "$REMOTE_DATASET" in /*) ;; *) die "the device's dataset folder must be an absolute path, got $REMOTE_DATASET" 2 ;; esac
[ ! -e "$DEST" ] || [ -d "$DEST" ] || die "$DEST exists and is not a folder: pass another NAME= or DEST" 2

read -r -a SSH_OPTS <<<"${EDGECAM_SSH_OPTS:-}"
SUDO_MODE=${EDGECAM_SUDO-auto}
# What the device runs; its standard output is the archive. Exit 42: no dataset there, or no way to read it.
REMOTE=$(cat <<EOF
set -eu
dir=$(printf '%q' "$REMOTE_DATASET")
if [ ! -d "\$dir" ]; then
  echo "edgecam pull: \$(hostname) has no dataset folder \$dir: record frames on the Teach view (/teach) first," \
       "or pass the folder the daemon uses (make pull HOST=... DEVICE_DATASET=DIR)" >&2
  exit 42
fi
sudo=$(printf '%q' "$SUDO_MODE")
if [ "\$sudo" = auto ]; then
  if [ -r "\$dir" ] && [ -x "\$dir" ]; then sudo=""; else sudo="sudo -n"; fi
fi
if [ -n "\$sudo" ] && ! \$sudo true 2>/dev/null; then
  echo "edgecam pull: \$(id -un)@\$(hostname) cannot read \$dir: it needs passwordless sudo (Raspberry Pi OS's" \
       "first user has it), or membership of the folder's group" >&2
  exit 42
fi
\$sudo tar -C "\$dir" -cf - .
EOF
)

mkdir -p "$DEST"
STAGE=$(mktemp -d "$DEST/.pull.XXXXXX")  # inside DEST: moving a file into place is an atomic rename
trap 'rm -rf "$STAGE"' EXIT
echo "edgecam pull: copying $HOST:$REMOTE_DATASET into $DEST"
ENCODED=$(printf '%s\n' "$REMOTE" | base64 | tr -d '\n')
set +e
ssh "${SSH_OPTS[@]}" "$HOST" "bash -c \"\$(echo $ENCODED | base64 -d)\"" </dev/null | tar -xf - -C "$STAGE"
STATUS=("${PIPESTATUS[@]}")
set -e
case "${STATUS[0]}" in
  0) ;;
  1) echo "edgecam pull: warning: some files changed on $HOST while they were read (recording?); pull again later" >&2 ;;
  42) exit 2 ;;  # the device said why
  255) die "could not reach $HOST over ssh (see above): check the address and that \`ssh $HOST\` works, then try again" 3 ;;
  *) die "reading $REMOTE_DATASET on $HOST failed (exit ${STATUS[0]}, see above); nothing was copied" ;;
esac
[ "${STATUS[1]}" = 0 ] || die "the archive from $HOST could not be unpacked (tar exit ${STATUS[1]}); nothing was copied"

added=0 same=0 kept=0 appended=0
while IFS= read -r -d '' file; do
  relative=${file#"$STAGE"/}
  case "/$relative" in
    /.regions/frames/[!.]*) ;;  # frames labelled per region (docs/regions.md): hidden from class folders, pulled
    */.*) continue ;;  # temporaries and the unsure-frames ring stay on the device
  esac
  target=$DEST/$relative
  if [ ! -e "$target" ]; then
    mkdir -p "$(dirname "$target")"
    mv -n "$file" "$target"
    added=$((added + 1))
  elif cmp -s "$file" "$target"; then
    same=$((same + 1))
  elif [[ $relative == *.jsonl ]]; then
    new_lines=$(grep -cvxFf "$target" "$file" || true)
    grep -vxFf "$target" "$file" >>"$target" || true
    appended=$((appended + new_lines))
  else
    kept=$((kept + 1))
    echo "edgecam pull: kept $target (the device's copy differs; yours is not overwritten)"
  fi
done < <(find "$STAGE" -type f -print0 | sort -z)

echo "edgecam pull: $added new file(s), $same already here, $kept kept as they were, $appended index line(s) added"
for folder in "$DEST"/*/; do
  [ -d "$folder" ] || continue
  echo "  $(basename "$folder"): $(find "$folder" -maxdepth 1 -type f -iname '*.jpg' | wc -l) images"
done
echo "edgecam pull: done. Train on it: python -m train --data $DEST (see docs/own-objects.md)"
