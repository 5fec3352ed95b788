"""/metrics: the /status snapshot as Prometheus text exposition format (pure: a dict in, text out)."""

from __future__ import annotations


def prometheus(status: dict, hub_dropped: int = 0) -> str:
    """The /status snapshot as Prometheus text exposition format."""
    lines = []

    def metric(name, kind, text, value, labels=""):
        lines.extend([f"# HELP edgecam_{name} {text}", f"# TYPE edgecam_{name} {kind}"])
        if isinstance(value, dict):
            for label_text, item in value.items():
                lines.append(f"edgecam_{name}{{{label_text}}} {_number(item)}")
        else:
            lines.append(f"edgecam_{name}{labels} {_number(value)}")

    model = status.get("model") or {}
    source = status.get("source") or {}
    latency = status.get("latency_ms") or {}
    last = status.get("last_result") or {}
    metric("up", "gauge", "1 when the daemon is running and its source delivers frames.",
           1 if status.get("state") == "running" else 0)
    metric("frames_total", "counter", "Frames classified.", status.get("frames", 0))
    metric("dropped_frames_total", "counter", "Stale camera frames dropped for a newer one.",
           status.get("dropped_frames", 0))
    metric("fps", "gauge", "Frames classified per second over the last seconds.", status.get("fps", 0.0))
    metric("latency_ms", "summary", "Per-frame pipeline latency in milliseconds (last 1000 frames).",
           {f'quantile="{q}"': latency.get(key) for q, key in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))})
    metric("source_up", "gauge", "1 when the frame source is delivering.", 1 if source.get("state") == "ok" else 0)
    metric("source_retries_total", "counter", "Source failures retried.", source.get("retries", 0))
    metric("reload_errors_total", "counter", "SIGHUP reloads that failed (the old model kept serving).",
           status.get("reload_errors", 0))
    skipped = status.get("skipped_frames") or {}
    metric("skipped_frames_total", "counter", "Source files skipped, by reason (too large, corrupt, ...).",
           {f'reason="{_escape(reason)}"': count for reason, count in sorted(skipped.items())} or 0)
    http = status.get("http") or {}
    metric("http_connections", "gauge", "Open HTTP connections.", http.get("connections", 0))
    metric("http_refused_total", "counter", "HTTP requests refused, by reason (busy, host, token, ...).",
           {f'reason="{_escape(reason)}"': count for reason, count in sorted((http.get("refused") or {}).items())}
           or 0)
    metric("events_dropped_total", "counter", "Server-sent events dropped for lagging clients.", hub_dropped)
    outputs = status.get("outputs") or {}
    if outputs:  # device/outputs/: one labelled series per output
        for name, kind, text, key in (
                ("output_written_total", "counter", "Results an output delivered.", "written"),
                ("output_dropped_total", "counter", "Results an output dropped (its queue was full).", "dropped"),
                ("output_errors_total", "counter", "Errors an output met (retried, or it turned off).", "errors")):
            metric(name, kind, text, {f'output="{_escape(o)}"': item.get(key, 0) for o, item in outputs.items()})
        metric("output_up", "gauge", "1 when the output is on and (for network outputs) connected.",
               {f'output="{_escape(o)}"': int(item.get("state") == "ok" and item.get("connected") is not False)
                for o, item in outputs.items()})
    metric("uptime_seconds", "gauge", "Seconds since the daemon started.", status.get("uptime_s", 0.0))
    metric("confidence", "gauge", "Confidence of the last result.", last.get("confidence"))
    drift = status.get("drift") or {}  # device/drift.py
    if drift:
        metric("drift_state", "gauge", "Drift state: 0 ok, 1 watch, 2 drifted (docs/drift.md).",
               {"ok": 0, "watch": 1, "drifted": 2}.get(drift.get("state"), 0))
        metric("drift_score", "gauge", "Share of the drift window's frames far from anything taught (0-1).",
               drift.get("score"))
        metric("drift_frame_score", "gauge", "The last frame's distance to what was taught, over the 95th "
               "percentile of the taught frames'.", drift.get("frame_score"))
        metric("drift_far_frames_total", "counter", "Frames far from anything taught.", drift.get("far_frames", 0))
    regions = status.get("regions") or []
    if regions:  # --region: one series per region (device/regions/serve.py)
        lasts = [(str(entry.get("name")), entry.get("last_result") or {}) for entry in regions]
        metric("region_confidence", "gauge", "Confidence of each region's last result.",
               {f'region="{_escape(name)}"': last.get("confidence") for name, last in lasts})
        metric("region_label", "gauge", "Each region's last label (1 for the label it reads now).",
               {f'region="{_escape(name)}",label="{_escape(last.get("label", ""))}"': 1 for name, last in lasts})
        metric("region_head_revision", "gauge", "The head revision each region is read with (0: the bundle's).",
               {f'region="{_escape(entry.get("name"))}"': (entry.get("head") or {}).get("revision", 0)
                for entry in regions})
        drifts = [(f'region="{_escape(entry.get("name"))}"', entry["drift"]) for entry in regions if entry.get("drift")]
        if drifts:  # each region's own drift monitor (device/drift.py), as the whole frame's above
            metric("region_drift_state", "gauge", "Each region's drift state: 0 ok, 1 watch, 2 drifted.",
                   {label: {"ok": 0, "watch": 1, "drifted": 2}.get(item.get("state"), 0) for label, item in drifts})
            metric("region_drift_score", "gauge", "Share of each region's drift window far from anything taught.",
                   {label: item.get("score") for label, item in drifts})
            metric("region_drift_frame_score", "gauge", "Each region's last frame's distance to what was taught.",
                   {label: item.get("frame_score") for label, item in drifts})
            metric("region_drift_far_frames_total", "counter", "Each region's frames far from anything taught.",
                   {label: item.get("far_frames", 0) for label, item in drifts})
    info = ",".join(f'{key}="{_escape(model.get(key, ""))}"' for key in ("format", "runtime", "sha256"))
    metric("model_info", "gauge", "The model being served.", {info: 1})
    return "\n".join(lines) + "\n"


def _number(value) -> str:
    return "NaN" if value is None else repr(float(value)) if isinstance(value, float) else str(int(value))


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
