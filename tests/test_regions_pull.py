"""`make pull` carries the frames labelled per region (issue 27): DATASET/.regions/frames/ (hidden, so class
folders and `python -m train` never take them for a class) and DATASET/regions.jsonl come over ssh with the rest,
while the other hidden files stay on the device. A real OpenSSH server on a loopback port (tests/test_deploy.py's
ssh_server fixture); the device is a folder on this machine."""

from test_deploy import archive, host_requirements, ssh_server, system_site  # noqa: F401 - `make deploy`'s fixtures
from test_pull import device_dataset, make_pull, tree


def test_make_pull_carries_the_frames_labelled_per_region(ssh_server, tmp_path):  # noqa: F811
    host, options = ssh_server
    device = device_dataset(tmp_path / "device" / "dataset")
    (device / ".regions" / "frames").mkdir(parents=True)
    (device / ".regions/frames/20261206-010203-0001.jpg").write_bytes(b"a whole frame")
    (device / ".regions/frames/.capture.tmp-9-9").write_bytes(b"half written")
    (device / "regions.jsonl").write_bytes(b'{"file": ".regions/frames/20261206-010203-0001.jpg", '
                                           b'"labels": {"door": "open"}}\n')
    destination = tmp_path / "host" / "data" / "tiny-own"
    result = make_pull(destination, device, host, options)
    assert result.returncode == 0, result.stdout + result.stderr
    files = tree(destination)
    assert ".regions/frames/20261206-010203-0001.jpg" in files and "regions.jsonl" in files
    assert not any(".capture.tmp" in name or name.startswith(".uncertain") for name in files)
