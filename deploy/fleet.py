"""``python -m deploy.fleet --inventory hosts.ini --archive dist/edgecam-device-NAME.tar.gz``: a fleet rollout.

Runs deploy/ansible/rollout.yml with ansible-playbook (``pip install -e '.[fleet]'``): hosts in batches of
--serial, each gets the archive, runs its install.sh, restarts, and must answer /healthz and run the new
release's model (sha256 via /status) within the health timeout; a host that fails is rolled back to its
previous release, and more failures than --max-fail-percentage in a batch stop the rollout. Then prints
which host runs which release and model::

    edgecam fleet report: release rps-858ee1854520
    HOST  RESULT       RELEASE          MODEL    SHA256        RUNTIME         TUNED                                OS                             HEAD        REFIT  FREE     NOTE
    pi-1  updated      rps-858ee1854520 int8     e96b1610899d  ai_edge_litert  int8 x2 9.81 ms (tuned, 2026-12-05)  Debian GNU/Linux 13 (trixie)   r3 taught   done   21.4 GB  healthy
    pi-2  rolled back  rps-c7a9d456023d float32  9a5334487d52  ai_edge_litert  float32 x4 (command line)            Debian GNU/Linux 12 (bookworm) r0 bundle   -      3.2 GB   /healthz on 127.0.0.1:8080: ...; back on ...
    pi-3  not reached  rps-c7a9d456023d int8     ...           ...             -                                    Debian GNU/Linux 13 (trixie)   -           -      20.9 GB  the rollout stopped before this host's batch

TUNED is the daemon's /status "tuning" (device/tune.py): the format and interpreter threads it serves, the
per-frame time ``python -m device tune`` measured on that device, and whether the choice came from the tuning,
the command line or the default (int8). OS is the host's /etc/os-release; HEAD the head the daemon serves
(its revision: r0 the bundle's own, else taught on the device); REFIT the re-fit of a taught head after a
new model (running, done, skipped, refused, failed; - none); FREE the free disk under the install folder.

Each host's settings come from the inventory (edgecam_mqtt, edgecam_mqtt_topic, edgecam_name, edgecam_token,
edgecam_address): deploy/ansible/settings.py writes them into a managed block of /etc/default/edgecam, and
the NOTE says when a host's own line overrides one or a hand-edited fleet line was replaced.

Exit codes: 0 every host runs the release; 1 a host failed its check (rolled back) or was not reached
because the rollout stopped; 2 bad input (no archive, no inventory, no ansible-playbook, a playbook
error); 3 only unreachable hosts kept it from finishing (try again later).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PLAYBOOK = Path(__file__).resolve().parent / "ansible" / "rollout.yml"
MARKER = "EDGECAM-FLEET "
RESULTS = {"updated": "updated", "rolled_back": "rolled back", "failed": "failed", "not_reached": "not reached",
           "unreachable": "unreachable"}


class FleetError(ValueError):
    """The rollout cannot start; the message says what to fix."""


def archive_facts(archive: Path) -> dict:
    """-> {top, release, models} from the device archive's release.json."""
    if not archive.is_file():
        raise FleetError(f"{archive} does not exist: make bundle NAME=... writes it (or pass --archive).")
    try:
        with tarfile.open(archive) as tar:
            top = tar.getnames()[0].split("/")[0]
            info = json.load(tar.extractfile(f"{top}/release.json"))
    except (tarfile.TarError, KeyError, IndexError, TypeError, ValueError) as error:
        raise FleetError(f"{archive} is not an edgecam device archive ({error}): make bundle writes one.") from None
    return {"top": top, "release": info["id"], "models": info.get("models", [])}


def find_ansible(name: str) -> str:
    """ansible-playbook beside this Python (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise FleetError(f"{name} not found: pip install -e '.[fleet]' (ansible-core), or make setup.")
    return found


def inventory_hosts(inventory: str, limit: list) -> list:
    """Every host name of the inventory (within --limit), in its order (ansible-inventory --list)."""
    result = subprocess.run([find_ansible("ansible-inventory"), "-i", inventory, "--list", *limit], check=False,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise FleetError(f"ansible-inventory cannot read {inventory}: {result.stderr.strip()[-400:]}")
    data = json.loads(result.stdout)
    hosts, seen = [], set()

    def walk(group: str) -> None:
        for host in data.get(group, {}).get("hosts", []):
            if host not in seen:
                seen.add(host)
                hosts.append(host)
        for child in data.get(group, {}).get("children", []):
            walk(child)

    walk("all")
    if not hosts:
        raise FleetError(f"{inventory} lists no hosts{' matching --limit' if limit else ''}: one per line, "
                         "e.g. pi-1 ansible_host=192.168.1.21 ansible_user=pi")
    return hosts


def parse_record(line: str) -> dict | None:
    """The playbook's ``"msg": "EDGECAM-FLEET {json}"`` debug lines (default callback, JSON results) -> dict."""
    text = line.strip()
    if not text.startswith(f'"msg": "{MARKER}'):
        return None
    try:
        return json.loads(json.loads(text[len('"msg": '):].rstrip(","))[len(MARKER):])
    except ValueError:
        return None


def run_playbook(command: list, environment: dict) -> tuple:
    """Run ansible-playbook, its output passed through; -> (exit code, {(phase, host): record})."""
    records = {}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment, bufsize=1) as process:
        for line in process.stdout:
            sys.stdout.write(line)
            record = parse_record(line)
            if record:
                records[record["phase"], record["host"]] = record
    sys.stdout.flush()
    return process.returncode, records


def host_rows(hosts: list, records: dict) -> list:
    """One dict per host: result, release, model, sha256, runtime, tuned, note."""
    rows = []
    for host in hosts:
        before, after = records.get(("before", host)), records.get(("after", host))
        if after:
            result, state = after["result"], after.get("state") or {}
            if result == "updated":
                note = "healthy"
            else:
                note = after.get("failure") or "failed"
                back = state.get("release")
                note += f"; back on {back}" if result == "rolled_back" and back else ""
                note += f"; runs {back or 'no release'}" if result == "failed" else ""
                note += f"; {state.get('reason')}" if state.get("reason") and result == "rolled_back" else ""
                note += f"; rollback failed: {after['rollback_error']}" if after.get("rollback_error") else ""
        elif before:
            result, state, note = "not_reached", before.get("state") or {}, "the rollout stopped before this host's batch"
        else:
            result, state, note = "unreachable", {}, "no record: unreachable, or the probe failed there (see ansible's output); run again later"
        model = state.get("model") or {}
        settings = (records.get(("settings", host)) or {}).get("settings")
        note = "; ".join(filter(None, (note, settings_note(settings))))
        rows.append({"host": host, "result": result, "release": state.get("release") or "-",
                     "model": model.get("format") or "-", "sha256": (model.get("sha256") or "-")[:12],
                     "runtime": model.get("runtime") or "-", "tuned": tuned(state.get("tuning")),
                     "os": state.get("os") or "-", "head": head(state.get("head")), "refit": refit(state.get("head")),
                     "free": free(state.get("free_bytes")), "settings": settings, "note": note})
    return rows


def head(info: dict | None) -> str:
    """/status head -> "r3 taught" or "r0 bundle"."""
    if not isinstance(info, dict) or info.get("revision") is None:
        return "-"
    return f"r{info['revision']} {info.get('source') or ''}".strip()


def refit(info: dict | None) -> str:
    """The re-fit of a taught head after a new model (/status head.refit): running, done, failed, ... or -."""
    return (info.get("refit") if isinstance(info, dict) else None) or "-"


def free(count) -> str:
    return f"{count / 1e9:.1f} GB" if isinstance(count, (int, float)) else "-"


def settings_note(settings: dict | None) -> str:
    """What deploy/ansible/settings.py did to the host's /etc/default/edgecam, when it needs a person's eye."""
    if not isinstance(settings, dict):
        return ""
    parts = []
    for item in settings.get("overridden") or []:
        where = item.get("flag") or "own line"
        parts.append(f"{item['key']} from the inventory does not apply: the host's {where} (line {item['line']} "
                     "of /etc/default/edgecam) sets another value")
    if settings.get("edited"):
        parts.append(f"hand-edited fleet settings replaced: {', '.join(settings['edited'])}")
    return "; ".join(parts)


def tuned(tuning: dict | None) -> str:
    """/status "tuning" (device/tune.py's Choice) -> one cell: what the device serves and where that came from."""
    if not isinstance(tuning, dict) or not tuning.get("format"):
        return "-"
    threads = f"{tuning['format']} x{tuning.get('threads')}"
    if tuning.get("median_ms") is not None:
        return f"{threads} {tuning['median_ms']:.2f} ms ({tuning.get('how')}, {str(tuning.get('date'))[:10]})"
    return f"{threads} ({tuning.get('how')})"


def format_report(release: str, rows: list) -> str:
    columns = [("HOST", "host"), ("RESULT", "result"), ("RELEASE", "release"), ("MODEL", "model"),
               ("SHA256", "sha256"), ("RUNTIME", "runtime"), ("TUNED", "tuned"), ("OS", "os"), ("HEAD", "head"),
               ("REFIT", "refit"), ("FREE", "free"), ("NOTE", "note")]
    cells = [[RESULTS.get(row[key], row[key]) if key == "result" else str(row.get(key, "-")) for _, key in columns]
             for row in rows]
    widths = [max(len(title), *(len(line[index]) for line in cells)) for index, (title, _) in enumerate(columns)]
    lines = [f"edgecam fleet report: release {release}"]
    for line in [[title for title, _ in columns], *cells]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    counts = {}
    for row in rows:
        counts[row["result"]] = counts.get(row["result"], 0) + 1
    lines.append(", ".join(f"{count} {RESULTS[result]}" for result, count in counts.items()))
    return "\n".join(lines)


def exit_code(rows: list, playbook_code: int) -> int:
    results = {row["result"] for row in rows}
    if results & {"rolled_back", "failed", "not_reached"}:
        return 1
    if "unreachable" in results:
        return 3
    return 2 if playbook_code != 0 else 0  # the playbook failed without any host's record: a playbook error


def rollout(inventory: str, archive: Path, serial: str, max_fail_percentage: int, report_dir: Path,
            limit: str = "", extra_args: list = ()) -> tuple:
    """Run the playbook; -> (exit code, report rows, release id)."""
    if not Path(inventory).exists():
        raise FleetError(f"inventory {inventory} does not exist: write one (README, section Fleets).")
    facts = archive_facts(archive)
    limit_args = ["--limit", limit] if limit else []
    hosts = inventory_hosts(inventory, limit_args)
    variables = {"edgecam_archive": str(archive.resolve()), "edgecam_top": facts["top"],
                 "edgecam_release": facts["release"], "edgecam_serial": serial,
                 "edgecam_max_fail_percentage": max_fail_percentage}
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="edgecam-fleet-", delete=False) as handle:
        json.dump(variables, handle)
    environment = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    environment.setdefault("ANSIBLE_PIPELINING", "True")  # one ssh round trip per task
    environment.setdefault("ANSIBLE_RETRY_FILES_ENABLED", "False")
    try:
        command = [find_ansible("ansible-playbook"), "-i", inventory, str(PLAYBOOK), "-e", f"@{handle.name}",
                   *limit_args, *extra_args]
        code, records = run_playbook(command, environment)
    finally:
        os.unlink(handle.name)
    rows = host_rows(hosts, records)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.json").write_text(json.dumps({"release": facts["release"], "hosts": rows}, indent=2) + "\n")
    return exit_code(rows, code), rows, facts["release"]


def percentage(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be between 0 and 100, got {text}")
    return value


def batch_size(text: str) -> str:
    number = text[:-1] if text.endswith("%") else text
    if not number.isdigit() or int(number) < 1:
        raise argparse.ArgumentTypeError(f"must be a number of hosts (2) or a percentage (25%), got {text}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy.fleet", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--inventory", required=True, help="Ansible inventory of the devices (hosts.ini)")
    parser.add_argument("--archive", required=True, help="device archive from make bundle")
    parser.add_argument("--serial", type=batch_size, default="1", help="hosts per batch: a number or a percentage")
    parser.add_argument("--max-fail-percentage", type=percentage, default=0,
                        help="failed hosts per batch (in %%) tolerated before the rollout stops")
    parser.add_argument("--report-dir", default="dist/fleet-report", help="where report.json goes")
    parser.add_argument("--limit", default="", help="only these hosts: an Ansible pattern (pi-1,pi-2 or kiosks); default: all")
    parser.add_argument("ansible_args", nargs="*", help="more ansible-playbook arguments, after -- (e.g. -- -vv)")
    return parser


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code, rows, release = rollout(args.inventory, Path(args.archive), args.serial, args.max_fail_percentage,
                                      Path(args.report_dir), args.limit, args.ansible_args)
    except FleetError as error:
        print(f"edgecam fleet: {error}", file=sys.stderr)
        return 2
    print(format_report(release, rows))
    print(f"details: {Path(args.report_dir) / 'report.json'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
