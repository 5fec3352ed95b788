"""docs/pi-quickstart.md is the script of this test: every ```sh block marked ``<!-- bed -->`` runs as written,
in order, as the Pi's user `pi` (sudo as Raspberry Pi OS sets it up), on a fresh Debian trixie userland booted
with systemd in the systemd test bed (tests/systemd_bed.py).

Real: systemd, sudo, install.sh with its apt step (apt finds no network here and warns), pip, device doctor,
the service, the `edgecam` command, the Teach API, the teach. Stand-ins for what cannot exist here, set up
before the page's first block and named here: the network (pip reads /etc/pip.conf, which points at the bed's
offline wheels), the copy from the laptop (the archive put into /home/pi, the page's unmarked scp) and the
camera (EDGECAM_ARGS="--source images:/opt/frames ..." in /etc/default/edgecam, frames replayed). The unmarked
blocks (Imager, ssh, rpicam-hello, make bundle, scp) need real hardware or a laptop; the browser on the laptop
is the token's URL opened here with the token it printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time

from systemd_bed import (
    EDGECAM_ARGS,
    FRAMES_INSIDE,
    REPO,
    SHARE,
    Container,
    bed_share_fixture,  # noqa: F401 (fixture)
    build_archive,
    rootfs_dir,
)

PAGE = REPO / "docs" / "pi-quickstart.md"
MARKED = re.compile(r"^<!-- bed -->\n```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def marked_blocks(text: str) -> list:
    """The ```sh blocks right after a ``<!-- bed -->`` line, as written."""
    return [match.group(1) for match in MARKED.finditer(text)]


def test_the_page_marks_the_blocks_the_bed_runs():
    text = PAGE.read_text()
    blocks = marked_blocks(text)
    assert len(blocks) == text.count("<!-- bed -->") == 5, blocks  # every mark is followed by a block
    every = re.findall(r"^```sh\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    unmarked = "".join(block for block in every if block not in blocks)
    for hardware in ("rpicam-hello", "scp ", "ssh pi@"):  # left to a real Pi and a laptop
        assert hardware in unmarked and hardware not in "".join(blocks), hardware


def test_the_pi_quick_start_runs_as_written(bed_share, tmp_path):
    share, _, bundle = bed_share
    # `make bundle` on the laptop with NAME=rps: the same bundle under the README's name
    rps = tmp_path / "rps"
    shutil.copytree(bundle, rps)
    manifest = json.loads((rps / "manifest.json").read_text())
    (rps / "manifest.json").write_text(json.dumps(dict(manifest, name="rps"), indent=2))
    build_archive(rps, share / "edgecam-device-rps.tar.gz")
    blocks = marked_blocks(PAGE.read_text())
    with Container(rootfs_dir(share, "trixie"), f"edgecam-quickstart-{os.getpid()}", share) as box:
        box.run("useradd", "--create-home", "--shell", "/bin/bash", "pi")
        box.write("/etc/sudoers.d/010_pi-nopasswd", "pi ALL=(ALL) NOPASSWD: ALL\n", mode="0440")
        box.write("/etc/pip.conf", f"[global]\nno-index = true\nfind-links = {SHARE}/wheels-trixie\n")
        box.sh(f"cp -r {SHARE}/frames {FRAMES_INSIDE} && install -o pi -g pi -m 0644 "
               f"{SHARE}/edgecam-device-rps.tar.gz /home/pi/")
        box.write("/etc/default/edgecam", f'EDGECAM_ARGS="{EDGECAM_ARGS}"\n', mode="0600")
        outputs, seconds = [], []
        for block in blocks:
            started = time.monotonic()
            result = box.run("runuser", "-u", "pi", "--", "bash", "-e", "-c", block, check=False, timeout=400,
                             environment={"HOME": "/home/pi", "USER": "pi"})
            seconds.append(time.monotonic() - started)
            assert result.returncode == 0, f"{block}\nexited {result.returncode}:\n{result.stdout[-3000:]}\n" \
                                           f"{result.stderr[-3000:]}"
            outputs.append(result.stdout + result.stderr)
        install, check, url, token, teach = outputs
        assert "edgecam install: on Debian GNU/Linux 13 (trixie), Python 3.13" in install, install[-3000:]
        assert "edgecam install: service edgecam is running" in install, install[-3000:]
        assert check.splitlines()[0] == "active", check[:500]
        assert "Debian GNU/Linux 13 (trixie)" in check and "All required checks passed." in check, check[-3000:]
        assert "http://127.0.0.1:8080/teach" in url.splitlines(), url
        printed = re.search(r"http://[^ /]+:8080/teach\?token=([A-Za-z0-9_-]{32,})$", token, re.MULTILINE)
        assert printed, token[-3000:]  # `sudo edgecam token --write-defaults` printed the laptop's URL
        assert box.http("GET", "/status")[0] == 401  # the LAN lines took: a token is asked for now
        assert "recorded 10 frames of mug through the running service" in teach, teach[-3000:]
        assert "head revision 1 (taught): mug, nothing" in teach, teach[-3000:]  # edgecam status
        box.wait_for(lambda: box.http("GET", "/status", token=printed.group(1))[1]["model"]["labels"] == ["mug", "nothing"], 30,
                     "the service serving the taught head")
        print(f"pi quick start on trixie: install block {seconds[0]:.1f} s, every block {sum(seconds):.1f} s")
