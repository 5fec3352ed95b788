"""The daemon's resident memory (issue 22, item 5: peak RSS 80.4 MB against the bench's 80 MB limit): the daemon
process hashes the model with Python's built-in sha256 instead of mapping OpenSSL's libcrypto (3.3 MB resident),
and keeps numpy's OpenBLAS to one thread. Checked on the real daemon process, from its own /proc maps."""

import json
import os
import subprocess
import sys
from pathlib import Path

import device_bundle

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import json, runpy, sys, os
sys.argv = ["device"] + json.loads(sys.argv[1])
code = 0
try:
    runpy.run_module("device", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
maps = open("/proc/self/maps").read()
print(json.dumps({"code": code, "hashlib": "hashlib" in sys.modules,
                  "_hashlib": sys.modules.get("_hashlib") is not None,
                  "libcrypto": "libcrypto" in maps, "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS")}),
      file=sys.stderr)
"""


def test_the_daemon_verifies_its_model_without_mapping_libcrypto(bundle):
    images = device_bundle.heldout(bundle)[0][1].parent.parent
    arguments = ["--bundle", bundle, "--model", "int8", "--threads", "1", "--source", f"images:{images}", "--once",
                 "--max-fps", "0", "--http", "127.0.0.1:0", "--emit", "off"]
    environment = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([str(a) for a in arguments])], cwd=REPO,
                          env=dict(environment, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] == 0 and report["hashlib"]  # it ran, and hashed the model (sha256 checked)
    assert not report["_hashlib"] and not report["libcrypto"], report
    assert report["blas_threads"] == "1"


def test_the_memory_breakdown_groups_resident_pages_by_mapping():
    from bench.memory import resident_by_mapping

    groups = resident_by_mapping(os.getpid())
    rss_kb = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    assert abs(sum(groups.values()) - rss_kb) < 0.1 * rss_kb  # every resident page is in one group
    assert groups["[heap]"] > 0 and groups["site-packages/numpy"] > 0  # numpy: pytest's conftest imports it
