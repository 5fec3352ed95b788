"""``python -m deploy.bundle --bundle artifacts/rps --out dist/edgecam-device-rps.tar.gz``: the device archive

Everything a Raspberry Pi needs to run a bundle, and nothing of the host side::

    edgecam-device-NAME/
      install.sh          installer (releases, `current` link, --rollback, systemd, device doctor)
      release.json        name, release id (a hash of the contents), models, creation time
      requirements.txt    pinned device requirements (default: deploy/requirements-pi.txt)
      device/             the device package, with device/systemd/edgecam.service
      bundle/             manifest.json (listing only the models shipped), labels.txt, tflite/model_*.tflite,
                          tflite/head.npz (the bundle's own head in numpy): every file the manifest names
      kiosk/              the optional full-screen kiosk launcher for the Pi's desktop (deploy/kiosk/)
      wheels/             only with --wheelhouse: wheels for an offline install

The archive is reproducible: sorted entries, fixed owner, modes and times, so the same inputs give the same
bytes, and the release id tells the installer whether a release is already there.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import sys
import tarfile
from pathlib import Path

import device
from device.layout import EDGETPU_FORMAT, MANIFEST, TFLITE_DIR
from device.manifest import (
    LABELS_FILENAME,
    MODEL_FORMATS,
    PARITY_FAILED,
    PARITY_SKIPPED,
    ManifestError,
    load_manifest,
    sha256_file,
)

DEPLOY_DIR = Path(__file__).resolve().parent
DEVICE_DIR = Path(device.__file__).resolve().parent
DEFAULT_REQUIREMENTS = DEPLOY_DIR / "requirements-pi.txt"
DEFAULT_MODELS = ("int8", EDGETPU_FORMAT)  # always shipped when the bundle has them (others: when their parity passed)
SKIPPED_NAMES = {"__pycache__", ".pytest_cache", ".DS_Store"}
SKIPPED_SUFFIXES = (".pyc", ".pyo", ".swp", "~")
FIXED_MTIME = 1_700_000_000  # 2023-11-14: reproducible archives


class BundleError(ValueError):
    """The device archive cannot be built; the message says what to fix."""


def device_files() -> list:
    """(archive path, source path) for the device package, without caches and editor files."""
    files = []
    for path in sorted(DEVICE_DIR.rglob("*")):
        relative = path.relative_to(DEVICE_DIR)
        if path.is_dir() or SKIPPED_NAMES & set(relative.parts) or path.name.endswith(SKIPPED_SUFFIXES):
            continue
        files.append((f"device/{relative.as_posix()}", path))
    return files


def choose_models(manifest, requested: list | None, bundle: Path) -> list:
    """The model formats to ship: ``requested`` (all must exist), ``["all"]``, or the defaults present."""
    available = sorted(manifest.models, key=MODEL_FORMATS.index)
    if requested in (None, []):
        # int8 (and the Edge TPU model), plus every other format whose own parity passed: the device's tuner
        # (device/tune.py) picks the fastest of them on the device itself, so it needs them to choose from
        from device.tune import exclusions

        passed = {fmt for fmt, why in exclusions(manifest, edgetpu=True).items() if why is None}
        chosen = [fmt for fmt in available if fmt in DEFAULT_MODELS or fmt in passed]
        if not any(fmt in manifest.models for fmt in DEFAULT_MODELS):
            raise BundleError(
                f"{bundle / MANIFEST} lists no int8 model (it has: {', '.join(available) or 'none'}). "
                f"Convert the bundle first (make convert, or python -m convert {bundle}), or pick models "
                "with --models float32,...")
        return chosen
    if requested == ["all"]:
        if not available:
            raise BundleError(f"{bundle / MANIFEST} lists no models: convert the bundle first.")
        return available
    missing = [fmt for fmt in requested if fmt not in manifest.models]
    if missing:
        raise BundleError(f"{bundle / MANIFEST} has no {', '.join(missing)} model "
                          f"(it has: {', '.join(available) or 'none'}).")
    return requested


def check_parity(manifest, bundle: Path, force: bool = False) -> None:
    """Refuse models whose parity failed or was never measured (--skip-parity), unless FORCE."""
    if force or manifest.parity not in (PARITY_FAILED, PARITY_SKIPPED):
        return
    why = ("failed its accuracy parity check" if manifest.parity == PARITY_FAILED
           else "was converted with --skip-parity, so its accuracy was never measured")
    raise BundleError(
        f"{bundle / MANIFEST}: the bundle {why} (parity: {manifest.parity!r}). Run python -m convert {bundle} "
        "(make convert) until parity holds, or ship it anyway with --force (make bundle FORCE=1)."
    )


def bundle_entries(bundle: Path, models: list | None, force: bool = False) -> tuple:
    """-> (manifest name, shipped formats, [(archive path, bytes or source path)]) for the bundle/ folder."""
    try:
        manifest = load_manifest(bundle)
    except ManifestError as error:
        raise BundleError(str(error)) from None
    check_parity(manifest, bundle, force)
    chosen = choose_models(manifest, models, bundle)
    entries = [(f"bundle/{manifest.models[fmt].file}", checked(bundle, manifest.models[fmt].file,
                                                              manifest.models[fmt].sha256)) for fmt in chosen]
    if manifest.embedding is not None and manifest.embedding.head_file:  # the bundle's own head in numpy
        entries.append((f"bundle/{manifest.embedding.head_file}",
                        checked(bundle, manifest.embedding.head_file, manifest.embedding.head_sha256)))
    if manifest.embedding is not None and manifest.embedding.drift_file:  # its drift reference (device/drift.py)
        entries.append((f"bundle/{manifest.embedding.drift_file}",
                        checked(bundle, manifest.embedding.drift_file, manifest.embedding.drift_sha256)))
    if manifest.imx500 is not None and manifest.imx500.sha256:  # the AI Camera's model (install.sh packages it)
        entries.append((f"bundle/{manifest.imx500.file}", checked(bundle, manifest.imx500.file,
                                                                  manifest.imx500.sha256)))
        if (bundle / manifest.imx500.memory_report).is_file():
            entries.append((f"bundle/{manifest.imx500.memory_report}", bundle / manifest.imx500.memory_report))
    manifest.models = {fmt: manifest.models[fmt] for fmt in chosen}  # the device sees only what it has
    entries.append((f"bundle/{MANIFEST}", manifest.to_json().encode()))
    labels = bundle / LABELS_FILENAME
    entries.append((f"bundle/{LABELS_FILENAME}",
                    labels if labels.is_file() else ("\n".join(manifest.labels) + "\n").encode()))
    return manifest.name, chosen, entries


def checked(bundle: Path, relative: str, sha256: str) -> Path:
    """A file the manifest names, present and matching its sha256 (the device checks them again)."""
    path = bundle / relative
    if not path.is_file():
        raise BundleError(f"{path} is missing although the manifest lists it: re-run python -m convert {bundle}.")
    if sha256 and sha256_file(path) != sha256:
        raise BundleError(f"{path} does not match its sha256 in the manifest: re-run python -m convert {bundle}.")
    return path


def read(source) -> bytes:
    return source if isinstance(source, bytes) else Path(source).read_bytes()


def safe_name(name: str) -> str:
    """The bundle's name as a folder name on the Pi: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "bundle"


def release_id(name: str, entries: list) -> str:
    """``NAME-<12 hex digits of a hash over every path and content>``."""
    digest = hashlib.sha256()
    for arcname, source in sorted(entries, key=lambda item: item[0]):
        digest.update(arcname.encode() + b"\0" + hashlib.sha256(read(source)).digest())
    return f"{safe_name(name)}-{digest.hexdigest()[:12]}"


def collect(bundle: Path, models: list | None = None, requirements: Path = DEFAULT_REQUIREMENTS,
            wheelhouse: Path | None = None, force: bool = False) -> tuple:
    """-> (top folder name, release info, [(archive path, bytes or path)]) without writing anything."""
    name, chosen, entries = bundle_entries(bundle, models, force)
    if not Path(requirements).is_file():
        raise BundleError(f"requirements file {requirements} does not exist.")
    entries += device_files()
    entries += [(f"kiosk/{path.name}", path) for path in sorted((DEPLOY_DIR / "kiosk").glob("*")) if path.is_file()]
    entries.append(("install.sh", DEPLOY_DIR / "install.sh"))
    entries.append(("requirements.txt", Path(requirements)))
    if wheelhouse is not None:
        wheels = sorted(Path(wheelhouse).glob("*.whl"))
        if not wheels:
            raise BundleError(f"--wheelhouse {wheelhouse} holds no .whl files.")
        entries += [(f"wheels/{wheel.name}", wheel) for wheel in wheels]
    info = {"name": name, "id": release_id(name, entries), "models": chosen,
            "source_bundle": str(bundle), "format": 1}
    entries.append(("release.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()))
    return f"edgecam-device-{safe_name(name)}", info, sorted(entries, key=lambda item: item[0])


def write_archive(out: Path, top: str, entries: list) -> None:
    """A reproducible .tar.gz: sorted entries, root-owned, fixed times, 0755 for scripts, 0644 otherwise."""
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folders = set()
        for arcname, source in entries:
            parts = f"{top}/{arcname}".split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if folder not in folders:
                    folders.add(folder)
                    tar.addfile(_info(folder, tarfile.DIRTYPE, 0o755, 0))
            data = read(source)
            mode = 0o755 if arcname.endswith(".sh") else 0o644  # never the host's 0600 (convert/ writes those)
            tar.addfile(_info(f"{top}/{arcname}", tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
    temporary = out.with_name(out.name + ".partial")
    with open(temporary, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as stream:
        stream.write(buffer.getvalue())
    temporary.replace(out)


def _info(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build(bundle, out, models: list | None = None, requirements=DEFAULT_REQUIREMENTS,
          wheelhouse=None, force: bool = False) -> dict:
    """Write the archive; -> release info with ``archive``, ``size_bytes`` and ``model_bytes`` added.
    FORCE: ship a bundle whose parity failed or was skipped."""
    bundle, out = Path(bundle), Path(out)
    top, info, entries = collect(bundle, models, Path(requirements), Path(wheelhouse) if wheelhouse else None,
                                 force)
    write_archive(out, top, entries)
    model_bytes = sum(len(read(source)) for name, source in entries
                      if name.startswith(f"bundle/{TFLITE_DIR}/") and name.endswith(".tflite"))
    return dict(info, archive=str(out), size_bytes=out.stat().st_size, model_bytes=model_bytes,
                files=len(entries))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.bundle",
        description="Write the device archive (device package, models, manifest, labels, pinned requirements, "
                    "systemd unit, install.sh) for a Raspberry Pi. Nothing of the host side goes in.")
    parser.add_argument("--bundle", required=True, help="converted bundle folder (artifacts/NAME)")
    parser.add_argument("--out", required=True, help="archive to write, e.g. dist/edgecam-device-NAME.tar.gz")
    parser.add_argument("--models", default="",
                        help="comma-separated formats to ship (int8,float32,...) or 'all' (default: int8 and "
                             "int8_edgetpu when the bundle has them, and every other format whose parity passed, "
                             "for the device's tuner to choose from)")
    parser.add_argument("--requirements", default=str(DEFAULT_REQUIREMENTS), help="device requirements file (default: deploy/requirements-pi.txt)")
    parser.add_argument("--wheelhouse", default=None,
                        help="folder of .whl files to ship for an offline install (install.sh then uses "
                             "pip --no-index --find-links wheels/; default: none, pip uses the index)")
    parser.add_argument("--force", action="store_true",
                        help="ship the bundle even when its parity failed or was skipped (the manifest's parity "
                             "field); default: refuse")
    return parser


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    models = [fmt.strip() for fmt in args.models.split(",") if fmt.strip()] or None
    try:
        info = build(args.bundle, args.out, models, args.requirements, args.wheelhouse, force=args.force)
    except BundleError as error:
        print(f"deploy.bundle: {error}", file=sys.stderr)
        return 2
    print(f"wrote {info['archive']}: release {info['id']}, {info['files']} files, "
          f"{info['size_bytes'] / 1024:.1f} KiB ({info['model_bytes'] / 1024:.1f} KiB of models: "
          f"{', '.join(info['models'])})")
    print(f"next: make deploy HOST=pi@raspberrypi.local   (or copy it to the Pi and run: "
          f"tar -xzf {Path(info['archive']).name} && sudo bash edgecam-device-{safe_name(info['name'])}/install.sh)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
