#!/usr/bin/env bash
# make pi-sim: run the device archive in an emulated Raspberry-Pi-OS-like arm64 userland and check that its
# labels equal the x86 run's. No binfmt support needed: Python runs as
#   qemu-aarch64-static -cpu cortex-a72 -L ROOT ROOT/usr/bin/python3.13
# ROOT is Debian trixie arm64 (what Raspberry Pi OS is built on since 2025-10; --release bookworm for the one
# before) from `debootstrap --foreign` with apt's python3 (3.13; bookworm 3.11), python3-numpy (2.2; 1.24) and
# python3-pil, the .debs unpacked with dpkg -x. The archive's requirements, their markers evaluated for that
# Python (deploy/wheelhouse.py), come as aarch64 wheels (pip download --platform), unpacked into a site folder
# on PYTHONPATH;
# an archive with wheels/ (make bundle WHEELS=1) is instead installed from those wheels by the emulated pip
# into a venv, with the network cut (unshare -n): the offline install, proven.
# `device doctor` runs emulated and probes every runtime in its own emulated process; the daemon then runs
# on the runtime it chose with the int8 model, on replayed images.
#
# Usage: deploy/pi_sim.sh ARCHIVE [--release trixie|bookworm] [--images DIR] [--count N]
#   --release NAME Raspberry Pi OS's Debian release to emulate (default trixie: Python 3.13; bookworm: 3.11)
#   --images DIR   images to replay (default: the source bundle's held-out images, else DATASET/test)
#   --count N      how many of them, spread evenly (default 12; about 0.5 s each emulated)
# Environment: EDGECAM_PI_SIM_DIR (cache folder, default .pi-sim), EDGECAM_PI_SIM_RUN (this run's folder,
#   default CACHE/run), PY (host Python, default .venv/bin/python), EDGECAM_PI_SIM_MIRROR (Debian mirror).
# Writes RUN/result.json; exits 0 when the arm64 labels equal the x86 labels.
set -euo pipefail

say() { echo "pi-sim: $*"; }
die() { echo "pi-sim: error: $*" >&2; exit 1; }
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

[ $# -ge 1 ] || die "usage: deploy/pi_sim.sh ARCHIVE [--release trixie|bookworm] [--images DIR] [--count N]   (make pi-sim)"
ARCHIVE=$(realpath "$1"); shift
IMAGES=""
COUNT=12
DEBIAN=trixie
while [ $# -gt 0 ]; do
  case "$1" in
    --release) DEBIAN=${2:?--release needs trixie or bookworm}; shift 2 ;;
    --images) IMAGES=$(realpath "${2:?--images needs a folder}"); shift 2 ;;
    --count) COUNT=${2:?--count needs a number}; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
[ -f "$ARCHIVE" ] || die "$ARCHIVE does not exist: make bundle first"
CACHE=$(mkdir -p "${EDGECAM_PI_SIM_DIR:-$REPO/.pi-sim}" && cd "${EDGECAM_PI_SIM_DIR:-$REPO/.pi-sim}" && pwd)
PY=${PY:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
MIRROR=${EDGECAM_PI_SIM_MIRROR:-http://deb.debian.org/debian}
case "$DEBIAN" in
  trixie) PYV=3.13 ;;
  bookworm) PYV=3.11 ;;
  *) die "--release must be trixie (Raspberry Pi OS today) or bookworm, got $DEBIAN" ;;
esac
PLATFORMS=(--platform manylinux_2_34_aarch64 --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64
           --platform manylinux2014_aarch64 --python-version "$PYV" --implementation cp --abi "cp${PYV/./}"
           --only-binary=:all:)
SECONDS=0
stage() { say "[$SECONDS s] $*"; }

# ---- tools -----------------------------------------------------------------------------------
missing=()
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    stage "installing ${missing[*]} (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    die "needs ${missing[*]}: sudo apt-get install ${missing[*]}"
  fi
fi

# ---- the arm64 userland (cached) -------------------------------------------------------------
exec 8>"$CACHE/.lock"
flock 8  # one builder of the caches at a time; released once they are ready
ROOTFS=$CACHE/rootfs-$DEBIAN-arm64
if [ ! -f "$ROOTFS/.complete" ]; then
  [ "$(id -u)" = 0 ] || die "debootstrap needs root to build $ROOTFS once (sudo make pi-sim); later runs reuse it"
  stage "debootstrap --foreign arm64 $DEBIAN into $ROOTFS"
  rm -rf "$ROOTFS"
  debootstrap --foreign --arch=arm64 --variant=minbase --include=python3,python3-numpy,python3-pil \
    "$DEBIAN" "$ROOTFS" "$MIRROR" >"$CACHE/debootstrap-$DEBIAN.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap-$DEBIAN.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap-$DEBIAN.log)"; }
  stage "unpacking $(ls "$ROOTFS"/var/cache/apt/archives/*.deb | wc -l) .debs (dpkg -x; no second stage, no binfmt)"
  for deb in "$ROOTFS"/var/cache/apt/archives/*.deb; do dpkg -x "$deb" "$ROOTFS"; done
  # The alternatives system would link these; without the second stage, link them by hand.
  for lib in blas/libblas.so.3 lapack/liblapack.so.3; do
    [ ! -e "$ROOTFS/usr/lib/aarch64-linux-gnu/$lib" ] || ln -sfn "$lib" "$ROOTFS/usr/lib/aarch64-linux-gnu/${lib#*/}"
  done
  touch "$ROOTFS/.complete"
fi
# qemu-user before 10 (bookworm's 7.2) crashes ai-edge-litert 2.3.0 with SIGSEGV in Interpreter(); trixie's
# qemu-user 10.0 runs it. Such a host gets trixie's static qemu-aarch64 from Debian's archive once (apt-get
# download + dpkg -x into the cache; nothing is installed). EDGECAM_PI_SIM_QEMU=PATH picks one yourself.
qemu_major() { "$1" --version 2>/dev/null | sed -n '1s/^qemu-aarch64 version \([0-9]*\).*/\1/p'; }
QEMU_BIN=${EDGECAM_PI_SIM_QEMU:-$(command -v qemu-aarch64-static)}
if [ -z "${EDGECAM_PI_SIM_QEMU:-}" ] && [ "$(qemu_major "$QEMU_BIN")" -lt 10 ] 2>/dev/null; then
  NEWER=$CACHE/qemu-trixie/usr/bin/qemu-aarch64
  if [ ! -x "$NEWER" ] && command -v apt-get >/dev/null; then
    stage "qemu-user $(qemu_major "$QEMU_BIN") here; fetching trixie's qemu-user (10.0) into $CACHE/qemu-trixie"
    apt_dir=$CACHE/qemu-apt
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    echo "deb $MIRROR trixie main" >"$apt_dir/sources.list"
    APT_OPTS=(-q -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o APT::Sandbox::User=root)
    if apt-get "${APT_OPTS[@]}" update >"$CACHE/qemu-apt.log" 2>&1 \
       && (cd "$apt_dir" && apt-get "${APT_OPTS[@]}" download qemu-user >>"$CACHE/qemu-apt.log" 2>&1); then
      dpkg -x "$apt_dir"/qemu-user_*.deb "$CACHE/qemu-trixie"
    fi
    rm -rf "$apt_dir"
  fi
  if [ -x "$NEWER" ]; then
    QEMU_BIN=$NEWER
  else
    echo "pi-sim: warning: qemu-user $(qemu_major "$QEMU_BIN") may crash ai-edge-litert (trixie's 10.0 does not);" \
         "set EDGECAM_PI_SIM_QEMU to a newer qemu-aarch64 (log: $CACHE/qemu-apt.log)" >&2
  fi
fi
QEMU=("$QEMU_BIN" -cpu cortex-a72 -L "$ROOTFS" "$ROOTFS/usr/bin/python$PYV")
VERSIONS=$(env -i "${QEMU[@]}" -c 'import platform, numpy, PIL; print(platform.machine(), "Python", platform.python_version(), "NumPy", numpy.__version__, "Pillow", PIL.__version__)') \
  || die "python$PYV does not run under qemu in $ROOTFS; remove it and retry"
VERSIONS="$VERSIONS, qemu-aarch64 $(qemu_major "$QEMU_BIN")"
stage "emulated userland: $VERSIONS"

# ---- offline install (an archive with wheels/: make bundle WHEELS=1) -----------------------------
# What install.sh does on the Pi, emulated: a venv with --system-site-packages (apt's numpy and Pillow stay),
# then `pip install --no-index --find-links wheels/ -r requirements.txt`, run by the emulated aarch64
# Python itself (so its own wheel tags choose) inside `unshare -n`: a network namespace with no interface
# but a downed loopback, so nothing can be fetched. pip is this host's pip package (pure Python), put on
# PYTHONPATH for that one command: Debian's python3 has no pip and no ensurepip.
offline_install() {
  local venv=$RUN/venv pip_dir=$RUN/pip-only host_pip network
  host_pip=$("$PY" -c 'import os, pip; print(os.path.dirname(pip.__file__))')
  mkdir -p "$pip_dir" && ln -sfn "$host_pip" "$pip_dir/pip"
  command -v unshare >/dev/null || die "unshare (util-linux) is needed to cut the network for the offline install"
  stage "offline install: $(ls "$RELEASE/wheels"/*.whl | wc -l) wheels from the archive, emulated pip, network cut (unshare -n)"
  env -i "${QEMU[@]}" -m venv --without-pip --system-site-packages "$venv"
  network=$(unshare -n "$PY" -c 'import socket
try:
    socket.create_connection(("pypi.org", 443), timeout=5); print("reachable")
except OSError as error:
    print(f"cut ({error})")') || die "unshare -n failed: the offline install needs root or user namespaces"
  [ "${network%% *}" = cut ] || die "the network is still reachable inside unshare -n"
  unshare -n env -i PATH="$PATH" HOME="$RUN" LANG=C.UTF-8 PYTHONPATH="$pip_dir" PYTHONDONTWRITEBYTECODE=1 \
    "${QEMU[@]:0:${#QEMU[@]}-1}" "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
    --no-index --find-links "$RELEASE/wheels" -r "$RELEASE/requirements.txt" >"$RUN/offline-pip.log" 2>&1 \
    || { tail -20 "$RUN/offline-pip.log" >&2; die "the offline pip install failed (log: $RUN/offline-pip.log)"; }
  say "$(grep '^Successfully installed' "$RUN/offline-pip.log" || echo 'nothing to install')"
  printf '%s\n' "$network" >"$RUN/offline-network.txt"
  QEMU=("${QEMU[@]:0:${#QEMU[@]}-1}" "$venv/bin/python")  # from now on the venv's Python
  ARM_PYTHONPATH=$RELEASE  # the venv finds its own packages
}

# ---- the archive and its aarch64 wheels (cached per requirements) ------------------------------
RUN=${EDGECAM_PI_SIM_RUN:-$CACHE/run}
rm -rf "$RUN" && mkdir -p "$RUN" && RUN=$(cd "$RUN" && pwd)
tar -xzf "$ARCHIVE" -C "$RUN"
RELEASE=$RUN/$(tar -tzf "$ARCHIVE" | awk -F/ 'NR == 1 {print $1}')
if [ -d "$RELEASE/wheels" ]; then
  flock -u 8
  offline_install  # the archive's own wheels, installed by the emulated pip with the network cut
else
  REQUIREMENTS_HASH=$(sha256sum "$RELEASE/requirements.txt" | cut -c1-12)-cp${PYV/./}
  SITE=$CACHE/site-$REQUIREMENTS_HASH
  if [ ! -f "$SITE/.complete" ]; then
    stage "pip download aarch64 CPython $PYV wheels for requirements.txt (deploy/wheelhouse.py)"
    rm -rf "$SITE" "$CACHE/wheels-$REQUIREMENTS_HASH"
    PYTHONPATH=$REPO "$PY" -m deploy.wheelhouse --requirements "$RELEASE/requirements.txt" --platforms aarch64 \
      --python-version "$PYV" --out "$CACHE/wheels-$REQUIREMENTS_HASH" >"$CACHE/pip.log" 2>&1 \
      || { tail -20 "$CACHE/pip.log" >&2; die "pip download failed (log: $CACHE/pip.log)"; }
    # apt provides numpy and Pillow on Pi OS (--system-site-packages): install every other wheel.
    wheels=()
    for wheel in "$CACHE/wheels-$REQUIREMENTS_HASH"/*.whl; do
      case "$(basename "$wheel")" in numpy-*|pillow-*) ;; *) wheels+=("$wheel") ;; esac
    done
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-index --target "$SITE" \
      "${PLATFORMS[@]}" "${wheels[@]}"
    touch "$SITE/.complete"
  fi
  flock -u 8
  stage "aarch64 site: $(cd "$CACHE/wheels-$REQUIREMENTS_HASH" && ls ./*.whl | sed 's#^\./##; s/-cp.*//; s/-py.*//' | tr '\n' ' ')"
fi

# ---- images ------------------------------------------------------------------------------------
"$PY" - "$RELEASE" "$RUN/images" "$COUNT" "$IMAGES" <<'EOF' || die "no images to replay: pass --images DIR"
import json, shutil, sys
from pathlib import Path
release, out, count, given = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
suffixes = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
paths = []
if given:
    paths = sorted(p for p in Path(given).rglob("*") if p.suffix.lower() in suffixes)
else:  # the source bundle's held-out images (heldout.txt relative to manifest.dataset.root), else root/test
    source = Path(json.loads((release / "release.json").read_text()).get("source_bundle", ""))
    root = Path(json.loads((release / "bundle/manifest.json").read_text())["dataset"]["root"] or "-")
    if not root.is_absolute():
        root = (source / root) if (source / root).exists() else root
    heldout = source / "heldout.txt"
    if heldout.is_file():
        paths = [root / line.split("\t", 1)[1] for line in heldout.read_text().splitlines() if "\t" in line]
    elif (root / "test").is_dir():
        paths = sorted(p for p in (root / "test").rglob("*") if p.suffix.lower() in suffixes)
paths = [p for p in paths if p.is_file()]
if not paths:
    sys.exit(1)
step = max(len(paths) / count, 1)
chosen = [paths[int(i * step)] for i in range(min(count, len(paths)))]
out.mkdir(parents=True)
for index, path in enumerate(chosen):
    shutil.copy(path, out / f"{index:03d}_{path.parent.name}_{path.name}")
print(f"pi-sim: {len(chosen)} images from {chosen[0].parent.parent}")
EOF

DAEMON=(-m device --bundle "$RELEASE/bundle" --model int8 --source "images:$RUN/images" --once --http off
        --max-fps 0 --emit every --threads 4)

# ---- x86 reference run -----------------------------------------------------------------------------
X86_RUNTIME=$(cd "$RELEASE" && PYTHONPATH=$RELEASE "$PY" -c 'import platform; from device.runtime import import_runtime
print(platform.machine(), import_runtime()[0])')
stage "x86 run ($X86_RUNTIME)"
(cd "$RELEASE" && PYTHONPATH=$RELEASE "$PY" "${DAEMON[@]}" >"$RUN/labels-x86.jsonl" 2>"$RUN/x86.log") \
  || { cat "$RUN/x86.log" >&2; die "the x86 run failed"; }

# ---- arm64: doctor, then the daemon on the runtime it chose --------------------------------------------
ARM_ENV=(env -i PATH="$PATH" HOME="$RUN" LANG=C.UTF-8 PYTHONPATH="${ARM_PYTHONPATH:-$RELEASE:$SITE}"
         PYTHONDONTWRITEBYTECODE=1)
stage "arm64 device doctor (emulated; each runtime probed in its own emulated process)"
set +e
(cd "$RELEASE" && "${ARM_ENV[@]}" EDGECAM_PROBE_PYTHON="${QEMU[*]}" "${QEMU[@]}" -m device doctor \
  --bundle "$RELEASE/bundle" --state-dir "$RUN/state" --log-dir "$RUN/logs" --output "$RUN/doctor-arm64.json")
DOCTOR=$?
set -e
[ -f "$RUN/state/runtime.json" ] || die "device doctor wrote no verdict (exit $DOCTOR)"
RUNTIME=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["runtime"] or "")' "$RUN/state/runtime.json")
[ -n "$RUNTIME" ] || die "no runtime works in the emulated arm64 userland (see the doctor above)"
stage "arm64 run (emulated cortex-a72, EDGECAM_RUNTIME=$RUNTIME)"
ARM_START=$SECONDS
(cd "$RELEASE" && "${ARM_ENV[@]}" EDGECAM_RUNTIME="$RUNTIME" "${QEMU[@]}" "${DAEMON[@]}" \
  >"$RUN/labels-arm64.jsonl" 2>"$RUN/arm64.log") || { cat "$RUN/arm64.log" >&2; die "the arm64 run failed"; }
ARM_SECONDS=$((SECONDS - ARM_START))

# ---- compare -----------------------------------------------------------------------------------------------
"$PY" - "$RUN" "$RUNTIME" "$ARM_SECONDS" "$SECONDS" "$VERSIONS" "$X86_RUNTIME" <<'EOF'
import json, sys
from pathlib import Path
run, runtime, arm_seconds, total, versions, x86_runtime = sys.argv[1:7]
run, arm_seconds, total = Path(run), int(arm_seconds), int(total)
def results(name):
    return [json.loads(line) for line in (run / name).read_text().splitlines() if line.startswith("{")]
x86, arm = results("labels-x86.jsonl"), results("labels-arm64.jsonl")
doctor = json.loads((run / "doctor-arm64.json").read_text())
# label: after smoothing and the threshold ("unknown"); raw_label: the frame's own argmax. Both must match.
equal = bool(x86) and all([r[key] for r in x86] == [r[key] for r in arm] for key in ("label", "raw_label"))
diff = max((abs(a["probabilities"][k] - b["probabilities"][k]) for a, b in zip(x86, arm) for k in a["probabilities"]),
           default=None)
summary = {
    "equal": equal, "frames": len(x86), "arm64_frames": len(arm), "arm64_runtime": runtime,
    "arm64_runtimes": {name: r["status"] + (f" ({r['signal']})" if r.get("signal") else "")
                       for name, r in doctor["runtimes"].items()},
    "arm64_userland": versions, "x86": x86_runtime,
    "max_probability_difference": diff, "arm64_daemon_seconds": arm_seconds,
    "arm64_seconds_per_frame": round(arm_seconds / max(len(arm), 1), 2), "total_seconds": total,
    "labels_x86": [r["label"] for r in x86], "labels_arm64": [r["label"] for r in arm],
    "raw_labels_x86": [r["raw_label"] for r in x86], "raw_labels_arm64": [r["raw_label"] for r in arm],
    "arm64_latency_ms_median": sorted(r["latency_ms"] for r in arm)[len(arm) // 2] if arm else None,
    "offline_install": None,
}
if (run / "offline-network.txt").is_file():  # an archive with wheels/: installed with the network cut
    pip_log = (run / "offline-pip.log").read_text().splitlines()
    installed = [line for line in pip_log if line.startswith("Successfully installed")]
    summary["offline_install"] = {"network": (run / "offline-network.txt").read_text().strip(),
                                  "installed": installed[0].split()[2:] if installed else []}
(run / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"pi-sim: runtimes under arm64 emulation: {summary['arm64_runtimes']}")
same = sum(a["label"] == b["label"] and a["raw_label"] == b["raw_label"] for a, b in zip(x86, arm))
print(f"pi-sim: {'PASS' if equal else 'FAIL'}: {same}/{len(x86)} labels (and raw labels) equal, x86 vs arm64 "
      f"{runtime}; max probability difference {diff}; arm64 daemon {arm_seconds} s for {len(arm)} frames "
      f"({summary['arm64_latency_ms_median']:.0f} ms median per frame emulated); {total} s in all")
if summary["offline_install"]:
    print(f"pi-sim: offline install from the archive's wheels, network {summary['offline_install']['network']}: "
          f"{' '.join(summary['offline_install']['installed']) or 'nothing needed'}")
print(f"pi-sim: labels {summary['labels_arm64']}; details: {run / 'result.json'}")
sys.exit(0 if equal else 1)
EOF
