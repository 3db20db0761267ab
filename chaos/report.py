"""What a history says beyond the checkers' verdict: fault windows, unavailability per fault,
throughput and latency over time, and the self-contained ``report.html`` (inline SVG plots by
matplotlib, no network).

Contract: ``fault_stats`` and ``timeline`` are pure functions of the history (so ``replog chaos
check DIR`` recomputes them); ``write_report`` only renders.
"""

from __future__ import annotations

import html
import io
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chaos.history import Op, Pair, pair_ops

NS = 1e9
# Operations that need the cluster to make progress: an empty poll also completes "ok", so
# availability is measured on writes (and topic changes) only.
WRITE_FS = frozenset({"send", "append", "cdc-send", "create", "delete"})


def client_pairs(ops: Sequence[Op]) -> list[Pair]:
    return [p for p in pair_ops(ops) if p.invoke.process not in ("nemesis", "runner")]


def fault_windows(ops: Sequence[Op]) -> list[dict[str, Any]]:
    """Each injected fault as ``{"fault", "start", "end", "detail"}`` (seconds from the first
    event); a fault never stopped ends at the last event."""
    if not ops:
        return []
    t0, t_end = ops[0].time, ops[-1].time
    out: list[dict[str, Any]] = []
    open_: dict[str, Any] | None = None
    invoked = t0
    for op in ops:
        if op.process != "nemesis":
            continue
        if op.type == "invoke":
            # A fault begins when its injection begins (a power loss is over by its info).
            invoked = op.time
            continue
        value = op.value if isinstance(op.value, dict) else {}
        if op.f == "start":
            open_ = {
                "fault": value.get("fault", "?"),
                "start": (invoked - t0) / NS,
                "end": None,
                "detail": value,
            }
            out.append(open_)
        elif op.f == "stop" and open_ is not None:
            open_["end"] = (op.time - t0) / NS
            open_ = None
    for w in out:
        if w["end"] is None:
            w["end"] = (t_end - t0) / NS
    return out


def fault_stats(ops: Sequence[Op]) -> dict[str, Any]:
    """Per fault kind: windows, seconds, acknowledged operations per second during them, and
    unavailability = the longest stretch inside a window (and the 10 s after it, while the
    cluster recovers) with no acknowledged write (``WRITE_FS``)."""
    if not ops:
        return {}
    t0 = ops[0].time
    oks = sorted(
        (p.completion.time - t0) / NS
        for p in client_pairs(ops)  # type: ignore[union-attr]
        if p.type == "ok" and p.invoke.f in WRITE_FS
    )
    out: dict[str, Any] = {}
    for w in fault_windows(ops):
        lo, hi = w["start"], w["end"] + 10.0
        inside = [t for t in oks if lo <= t <= hi]
        edges = [lo, *inside, hi]
        gap = max(b - a for a, b in itertools.pairwise(edges))
        s = out.setdefault(
            w["fault"], {"windows": 0, "seconds": 0.0, "ok_ops": 0, "max_unavailable_s": 0.0}
        )
        s["windows"] += 1
        s["seconds"] = round(s["seconds"] + w["end"] - w["start"], 2)
        s["ok_ops"] += sum(1 for t in oks if w["start"] <= t <= w["end"])
        s["max_unavailable_s"] = round(max(s["max_unavailable_s"], gap), 2)
    for s in out.values():
        s["ok_per_s"] = round(s["ok_ops"] / s["seconds"], 1) if s["seconds"] > 0 else None
    return out


def timeline(ops: Sequence[Op]) -> dict[str, list[float]]:
    """Per second of the run: ok / failed-or-unknown completions and ok latency p50/p99 (ms)."""
    if not ops:
        return {"t": [], "ok": [], "other": [], "p50": [], "p99": []}
    t0 = ops[0].time
    seconds = int((ops[-1].time - t0) / NS) + 1
    ok = [0.0] * seconds
    other = [0.0] * seconds
    lat: list[list[float]] = [[] for _ in range(seconds)]
    for p in client_pairs(ops):
        if p.completion is None:
            continue
        s = min(seconds - 1, int((p.completion.time - t0) / NS))
        if p.type == "ok":
            ok[s] += 1
            lat[s].append((p.completion.time - p.invoke.time) / 1e6)
        else:
            other[s] += 1

    def q(xs: list[float], f: float) -> float:
        if not xs:
            return float("nan")
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(f * len(xs)))]

    return {
        "t": list(range(seconds)),
        "ok": ok,
        "other": other,
        "p50": [q(x, 0.5) for x in lat],
        "p99": [q(x, 0.99) for x in lat],
    }


def _svg(ops: Sequence[Op]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: a smaller, searchable file
    tl = timeline(ops)
    windows = fault_windows(ops)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    ax1.plot(tl["t"], tl["ok"], label="ok / s", color="tab:green", lw=1)
    ax1.plot(tl["t"], tl["other"], label="fail or unknown / s", color="tab:red", lw=1)
    ax1.set_ylabel("operations per second")
    ax2.plot(tl["t"], tl["p50"], label="p50", color="tab:blue", lw=1)
    ax2.plot(tl["t"], tl["p99"], label="p99", color="tab:purple", lw=1)
    ax2.set_yscale("log")
    ax2.set_ylabel("ok latency (ms)")
    ax2.set_xlabel("seconds since start")
    for w in windows:
        for ax in (ax1, ax2):
            ax.axvspan(w["start"], w["end"], color="tab:orange", alpha=0.18, lw=0)
        ax1.text(
            w["start"],
            1.0,
            w["fault"],
            transform=ax1.get_xaxis_transform(),
            fontsize=7,
            va="bottom",
            rotation=20,
        )
    ax1.legend(loc="upper right", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _table(rows: list[list[Any]], head: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def write_report(path: str | Path, results: dict[str, Any], ops: Sequence[Op]) -> None:
    valid = results.get("valid")
    colour = {True: "#1a7f37", False: "#cf222e"}.get(valid, "#9a6700")  # type: ignore[call-overload]
    faults = results.get("faults", {})
    fault_rows = [
        [k, v["windows"], v["seconds"], v["ok_per_s"], v["max_unavailable_s"]]
        for k, v in sorted(faults.items())
    ]
    anomalies = results.get("anomalies", {})
    anomaly_rows = [
        [k, v["count"], json.dumps(v.get("examples", [])[:2])[:300]]
        for k, v in sorted(anomalies.items())
    ]
    skipped = results.get("skipped", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>replog chaos report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;"
        "text-align:left;font-size:.9em}pre{background:#f6f8fa;padding:1em;overflow:auto}"
        "</style></head><body>",
        f"<h1>replog chaos run: <span style='color:{colour}'>valid = "
        f"{html.escape(json.dumps(valid))}</span></h1>",
        f"<p>{html.escape(json.dumps(results.get('run', {})))}</p>",
        _svg(ops),
        "<h2>Unavailability per fault</h2>",
        _table(
            fault_rows,
            [
                "fault",
                "windows",
                "seconds",
                "ok ops/s during",
                "longest stretch without an ok op (s)",
            ],
        ),
        "<h2>Anomalies</h2>",
        _table(anomaly_rows, ["kind", "count", "examples"]) if anomaly_rows else "<p>none</p>",
    ]
    if skipped:
        parts += [
            "<h2>Skipped nemeses</h2>",
            _table([[k, v] for k, v in skipped.items()], ["nemesis", "reason"]),
        ]
    parts += [
        "<h2>results.json</h2><pre>",
        html.escape(json.dumps(results, indent=1, default=str)[:200_000]),
        "</pre></body></html>",
    ]
    Path(path).write_text("".join(parts), encoding="utf-8")
