"""device/sinks.py: JSON lines on stdout (every frame or label changes) and the rotating log file."""

import io
import json

import pytest

from device.sinks import Emitter, LogFileSink, StdoutSink


def results(*labels):
    return [{"frame": index, "label": label, "confidence": 0.9} for index, label in enumerate(labels, 1)]


def test_every_and_change_modes():
    every, change = io.StringIO(), io.StringIO()
    sinks = [StdoutSink("every", every), StdoutSink("change", change)]
    for result in results("rock", "rock", "unknown", "unknown", "rock", "paper"):
        for sink in sinks:
            sink.write(result)
    assert len(every.getvalue().splitlines()) == 6
    assert [json.loads(line)["frame"] for line in change.getvalue().splitlines()] == [1, 3, 5, 6]


def test_off_mode_and_bad_mode():
    assert not Emitter("off").wants(results("rock")[0])
    with pytest.raises(ValueError, match="--emit must be one of"):
        Emitter("sometimes")


def test_a_closed_stdout_stops_emitting_instead_of_crashing():
    class Gone(io.StringIO):
        def write(self, text):
            raise BrokenPipeError

    sink = StdoutSink("every", Gone())
    sink.write(results("rock")[0])
    sink.write(results("paper")[0])
    assert sink.emitter.mode == "off"
    sink.close()


def test_log_file_has_results_and_events_as_json_lines(tmp_path):
    path = tmp_path / "edgecam.log"
    sink = LogFileSink(str(path), max_bytes=10_000, backups=1, mode="change")
    sink.event("start", pid=1)
    for result in results("rock", "rock", "paper"):
        sink.write(result)
    sink.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"event": "start", "pid": 1}
    assert [line["frame"] for line in lines[1:]] == [1, 3]
