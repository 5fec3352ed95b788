"""``python -m deploy.wheelhouse --out dist/wheelhouse``: the Pi's wheels, for an install with no network.

Downloads (``pip download --only-binary=:all: --platform ... --python-version 3.13``) every wheel the device
requirements (deploy/requirements-pi.txt) need on Raspberry Pi OS: trixie (Python 3.13, the default) or
bookworm (``--python-version 3.11``), aarch64 (64-bit) and armv7l (32-bit) where PyPI has wheels. pip
evaluates environment markers (``; python_version < "3.12"``) for the Python that runs it, not the target's,
so the markers are evaluated here for the target first (``target_requirements``). ``make bundle WHEELS=1`` puts them into the device archive's wheels/, and
install.sh then installs with ``pip --no-index --find-links wheels/``.

A requirement with no wheel for a platform is reported, not fatal: on the Pi, numpy and Pillow come from
apt (python3-numpy, python3-pil; the venv sees them through --system-site-packages), and the device needs
only one of the two interpreters. ``wheelhouse.json`` in --out records what each platform got.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

DEFAULT_REQUIREMENTS = Path(__file__).resolve().parent / "requirements-pi.txt"
GLIBC_MINORS = range(17, 42)  # manylinux_2_17 ... manylinux_2_41 (bookworm: glibc 2.36, trixie: 2.41)
PLATFORMS = {
    "aarch64": ["manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in GLIBC_MINORS)],
    "armv7l": ["linux_armv7l", "manylinux2014_armv7l", *(f"manylinux_2_{minor}_armv7l" for minor in GLIBC_MINORS)],
    # not a Pi: the systemd test bed's containers (tests/systemd_bed.py)
    "x86_64": ["manylinux2014_x86_64", *(f"manylinux_2_{minor}_x86_64" for minor in GLIBC_MINORS)],
}


class WheelhouseError(ValueError):
    """The wheelhouse cannot be made; the message says what to fix."""


def requirement_lines(requirements: Path) -> list:
    """The requirement specifiers of a requirements file, comments and blank lines dropped."""
    if not requirements.is_file():
        raise WheelhouseError(f"requirements file {requirements} does not exist.")
    lines = [line.split("#", 1)[0].strip() for line in requirements.read_text().splitlines()]
    return [line for line in lines if line]


def target_requirements(requirements: Path, python_version: str, machine: str) -> list:
    """The requirement lines that apply on the target (CPython PYTHON_VERSION on Linux MACHINE), markers
    evaluated for it and dropped: e.g. tflite-runtime only for 3.11, numpy<2 only where it is."""
    environment = {"python_version": python_version, "python_full_version": f"{python_version}.0",
                   "implementation_name": "cpython", "platform_python_implementation": "CPython",
                   "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                   "platform_machine": machine}
    lines = []
    for line in requirement_lines(requirements):
        try:
            requirement = Requirement(line)
        except InvalidRequirement as error:
            raise WheelhouseError(f"{requirements}: {line!r} is not a requirement ({error}).") from error
        if requirement.marker is None or requirement.marker.evaluate(environment):
            lines.append(line.split(";", 1)[0].strip())  # as written, the marker dropped
    return lines


def write_target_requirements(requirements: Path, python_version: str, machine: str, out: Path) -> Path:
    """-> a requirements file for the target alone (markers evaluated), for pip download -r."""
    out.write_text("\n".join(target_requirements(requirements, python_version, machine)) + "\n")
    return out


def pip_download(arguments: list, platform: str, python_version: str, out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
               "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
               "--dest", str(out)]
    for tag in PLATFORMS[platform]:
        command += ["--platform", tag]
    return subprocess.run(command + arguments, check=False, capture_output=True, text=True)


def download_platform(requirements: Path, platform: str, python_version: str, out: Path) -> dict:
    """-> {"complete": [...], "without_dependencies": [...], "missing": [...]} for one platform.

    All requirements at once first (so their pins constrain each other, e.g. numpy<2); if that fails, each
    one alone under the others as constraints, and then without its dependencies."""
    with tempfile.TemporaryDirectory() as folder:
        target = write_target_requirements(requirements, python_version, platform,
                                           Path(folder) / "requirements.txt")
        return _download_lines(target, platform, python_version, out)


def _download_lines(requirements: Path, platform: str, python_version: str, out: Path) -> dict:
    lines = requirement_lines(requirements)
    if pip_download(["-r", str(requirements)], platform, python_version, out).returncode == 0:
        return {"complete": lines, "without_dependencies": [], "missing": []}
    result = {"complete": [], "without_dependencies": [], "missing": []}
    for line in lines:
        if pip_download(["-c", str(requirements), line], platform, python_version, out).returncode == 0:
            result["complete"].append(line)
        elif pip_download(["--no-deps", line], platform, python_version, out).returncode == 0:
            result["without_dependencies"].append(line)
        else:
            result["missing"].append(line)
    return result


def build(requirements: Path, out: Path, platforms: list, python_version: str = "3.13") -> dict:
    unknown = [name for name in platforms if name not in PLATFORMS]
    if unknown:
        raise WheelhouseError(f"unknown platform {', '.join(unknown)}: use {', '.join(PLATFORMS)}.")
    out.mkdir(parents=True, exist_ok=True)
    report = {"python_version": python_version, "requirements": str(requirements), "platforms": {}}
    for platform in platforms:
        print(f"wheelhouse: {platform}, Python {python_version}: pip download ...", flush=True)
        report["platforms"][platform] = download_platform(requirements, platform, python_version, out)
    report["wheels"] = sorted(path.name for path in out.glob("*.whl"))
    if not report["wheels"]:
        raise WheelhouseError(f"no wheel could be downloaded into {out}: is PyPI reachable (pip download)?")
    (out / "wheelhouse.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def summary(report: dict, out: Path) -> str:
    size = sum((out / name).stat().st_size for name in report["wheels"])
    lines = [f"wheelhouse: {len(report['wheels'])} wheels, {size / 2**20:.1f} MiB in {out}"]
    for platform, result in report["platforms"].items():
        text = f"  {platform}: {len(result['complete'])} of " \
               f"{sum(len(names) for names in result.values())} requirements with all their wheels"
        if result["without_dependencies"]:
            text += f"; only the package itself (its dependencies have no {platform} wheel on PyPI; apt has " \
                    f"numpy on the Pi): {', '.join(result['without_dependencies'])}"
        if result["missing"]:
            text += f"; no {platform} wheel on PyPI: {', '.join(result['missing'])}"
        lines.append(text)
    if any(result["missing"] or result["without_dependencies"] for result in report["platforms"].values()):
        lines.append("  (piwheels.org builds armv7l wheels for Raspberry Pi OS but is not reachable from here; "
                     "numpy and Pillow come from apt on the Pi: python3-numpy, python3-pil)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy.wheelhouse", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--requirements", default=str(DEFAULT_REQUIREMENTS), help="device requirements file")
    parser.add_argument("--out", default="dist/wheelhouse", help="folder for the wheels and wheelhouse.json")
    parser.add_argument("--platforms", default="aarch64,armv7l",
                        help=f"comma-separated, of: {', '.join(PLATFORMS)}")
    parser.add_argument("--python-version", default="3.13",
                        help="the Pi's Python: 3.13 on Raspberry Pi OS trixie, 3.11 on bookworm")
    return parser


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    platforms = [name.strip() for name in args.platforms.split(",") if name.strip()]
    try:
        report = build(Path(args.requirements), Path(args.out), platforms, args.python_version)
    except WheelhouseError as error:
        print(f"deploy.wheelhouse: {error}", file=sys.stderr)
        return 2
    print(summary(report, Path(args.out)))
    print("next: make bundle WHEELS=1   (the archive's install.sh then installs from wheels/, no network)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
