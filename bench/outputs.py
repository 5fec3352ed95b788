"""Per-frame cost of the MQTT output, on against off, side by side in one process (``make bench``).

Two daemons' per-frame steps (Daemon.handle: classify, then hand the result to the outputs) on the same
frame, one with stdout only, one with stdout + MQTT publishing every result (qos 0) to a real Mosquitto
started here on a loopback port. Two figures each: the median time the inference thread spends per frame
(what MQTT may add to latency), and the process CPU time per frame including the outputs' worker threads
and paho's network thread (what MQTT costs a Pi's CPU). None when mosquitto or paho-mqtt is missing.
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_mosquitto(folder: Path):
    """(process, port) of a throwaway anonymous Mosquitto on 127.0.0.1, or None when it is not installed."""
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        return None
    port = free_port()
    config = folder / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        time.sleep(0.05)
    process.terminate()
    return None


def mqtt_cost(bundle: Path, model: str, threads: int, frames: int = 1000, rounds: int = 10) -> dict | None:
    """{"off": {"step_ms", "cpu_ms"}, "on": {...}} or None (no mosquitto / paho-mqtt here)."""
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        return None
    from bench.measure import NullStream
    from device.daemon import Daemon, Options
    from device.outputs.settings import OutputSettings

    with tempfile.TemporaryDirectory(prefix="edgecam-bench-mqtt-") as folder:
        broker = start_mosquitto(Path(folder))
        if broker is None:
            return None
        process, port = broker
        try:
            daemons = {}
            for case, settings in (("off", OutputSettings()),
                                   ("on", OutputSettings(mqtt=f"mqtt://127.0.0.1:{port}", mqtt_emit="every",
                                                         mqtt_status_interval=0, mqtt_queue=frames + 100))):
                daemon = Daemon(Options(bundle=str(bundle), model=model, source="images:unused", threads=threads,
                                        emit="every", http="off", outputs=settings), stdout=NullStream())
                daemon.classifier = daemon.load()
                daemon.open_outputs()
                daemons[case] = daemon
            return measure(daemons, frames, rounds)
        finally:
            for daemon in locals().get("daemons", {}).values():
                daemon.outputs.close()
            process.terminate()
            process.wait(timeout=10)


def drained(daemon) -> bool:
    return all(channel.describe()["queued"] == 0 for channel in daemon.outputs.channels)


def measure(daemons: dict, frames: int, rounds: int) -> dict:
    loaded = daemons["off"].classifier.model
    frame = np.random.default_rng(0).integers(0, 256, size=(loaded.height, loaded.width, 3), dtype=np.uint8)
    steps = {case: [] for case in daemons}
    cpu = {case: 0.0 for case in daemons}
    for daemon in daemons.values():  # warm-up
        for _ in range(20):
            daemon.handle(frame)
    per_round = max(1, frames // rounds)
    for _ in range(rounds):
        for case, daemon in daemons.items():
            cpu_start = time.process_time()
            for _ in range(per_round):
                start = time.perf_counter()
                daemon.handle(frame)
                steps[case].append(time.perf_counter() - start)
            deadline = time.monotonic() + 10
            while not drained(daemon) and time.monotonic() < deadline:  # the outputs' share counts too
                time.sleep(0.001)
            cpu[case] += time.process_time() - cpu_start
    return {case: {"step_ms": statistics.median(steps[case]) * 1000, "cpu_ms": cpu[case] / len(steps[case]) * 1000,
                   "written": daemons[case].outputs.describe().get("mqtt", {}).get("written")}
            for case in daemons}
