"""Backtest report files: ``report.json``, PNG plots and one self-contained ``report.html``.

Plots (matplotlib, Agg backend, no display needed): ``roc.png``, ``pr.png``, ``weekly.png``
(AUC and average precision per ISO week) and ``scores.png`` (score distribution by class). The
HTML page embeds the same PNGs as base64 ``data:`` URIs, so it can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from stream import wire
from stream.backtest import BacktestResult, pr_curve, roc_curve

__all__ = ["write_report", "write_scores", "render_plots", "render_html", "summary_lines"]

PLOTS = ("roc", "pr", "weekly", "scores")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight",
                metadata={"Software": None})  # no version stamp: same input, same bytes
    return buf.getvalue()


def render_plots(result: BacktestResult, report: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes per plot name (``PLOTS``)."""
    plt = _pyplot()
    known = result.labels >= 0
    s, y = result.scores[known], result.labels[known].astype(bool)
    out: dict[str, bytes] = {}
    overall = report["overall"]

    fig, ax = plt.subplots(figsize=(5, 5))
    fpr, tpr = roc_curve(s, y)
    if fpr is not None:
        ax.plot(fpr, tpr, lw=1.5, label=f"AUC {overall['roc_auc']:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    out["roc"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    precision, recall, _ = pr_curve(s, y)
    if precision is not None:
        ax.step(recall, precision, where="post", lw=1.5,
                label=f"AP {overall['average_precision']:.3f}")
        ax.axhline(y.mean(), ls="--", lw=0.8, color="grey", label=f"base rate {y.mean():.4f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1),
           ylim=(0, 1.01))
    ax.legend(loc="upper right")
    out["pr"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    weeks = report["weekly"]
    x = np.arange(len(weeks))
    auc = [w["roc_auc"] if w["roc_auc"] is not None else np.nan for w in weeks]
    ap = [w["average_precision"] if w["average_precision"] is not None else np.nan
          for w in weeks]
    ax.plot(x, auc, marker="o", label="ROC AUC")
    ax.plot(x, ap, marker="s", label="average precision")
    ax.set_xticks(x, [w["week_start"] for w in weeks], rotation=30, ha="right")
    ax.set(ylim=(0, 1.01), title="Per week (week starting Monday, UTC)", xlabel="week")
    ax.legend(loc="lower left")
    out["weekly"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.linspace(0.0, 1.0, 51)
    if len(s):
        ax.hist(s[~y], bins=bins, density=True, alpha=0.6, label=f"legitimate ({(~y).sum():,})")
        ax.hist(s[y], bins=bins, density=True, alpha=0.6, label=f"fraud ({y.sum():,})")
    ax.set(xlabel="score", ylabel="density", title="Score distribution by class (labelled)",
           yscale="log")
    ax.legend(loc="upper right")
    out["scores"] = _png(fig)
    plt.close(fig)
    return out


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The headline figures, one per line (the CLI prints them; the HTML shows them)."""
    ev, o, sp = report["events"], report["overall"], report["speed"]
    lines = [f"events: {ev['scored']:,} scored, {ev['labelled']:,} labelled ({ev['fraud']:,} "
             f"fraud), {ev['unlabelled']:,} without a label (scored, excluded from metrics)",
             f"ROC AUC {_fmt(o['roc_auc'])}, average precision {_fmt(o['average_precision'])}"]
    for b in o["budgets"]:
        lines.append(f"budget {b['budget']:.2%} (top {b['k']:,} labelled events): precision "
                     f"{_fmt(b['precision'])}, recall {_fmt(b['recall'])}")
    for u in report["user_topk"]:
        lines.append(f"users: precision at top-{u['k']} per day {_fmt(u['mean_precision'])} "
                     f"(mean of {len(u['days'])} days; pooled {_fmt(u['precision'])})")
    since = report.get("since")
    if since:
        b = since["budgets"][0] if since["budgets"] else None
        lines.append(f"from {since['from']} ({since['n']:,} labelled, {since['fraud']:,} fraud): "
                     f"ROC AUC {_fmt(since['roc_auc'])}, average precision "
                     f"{_fmt(since['average_precision'])}"
                     + (f", precision at {b['budget']:.2%} {_fmt(b['precision'])}" if b else ""))
    learning = report.get("learning") or {}
    if learning:
        lines.append("model: " + ", ".join(
            (["per-merchant models blended in"] if learning.get("merchant_models")
             else ["global model alone (no per-merchant models)"])
            + ([f"learning frozen from {learning['frozen_at']}"] if learning.get("frozen_at")
               else [])))
    lines.append(f"speed: {sp['events_per_second']:,.0f} events/s scoring "
                 f"({sp['run_seconds']:.1f}s; loading {sp['load_seconds']:.1f}s)")
    return lines


def render_html(report: dict[str, Any], plots: dict[str, bytes]) -> str:
    """One self-contained page: figures, tables and the plots embedded as base64 PNGs."""
    ev, lab, o = report["events"], report["labels"], report["overall"]
    img = {name: "data:image/png;base64," + base64.b64encode(data).decode()
           for name, data in plots.items()}
    budgets = _table(["review budget", "reviewed (k)", "precision", "recall", "lowest score"],
                     [[f"{b['budget']:.2%}", b["k"], b["precision"], b["recall"],
                       b["threshold"]] for b in o["budgets"]])
    b0 = o["budgets"][0]["budget"] if o["budgets"] else None
    b0_label = f"@{b0:.2%}" if b0 is not None else ""
    weekly = _table(["week from", "labelled", "fraud", "ROC AUC", "AP", f"precision{b0_label}",
                     f"recall{b0_label}"],
                    [[w["week_start"], w["n"], w["fraud"], w["roc_auc"],
                      w["average_precision"], w["budgets"][0]["precision"],
                      w["budgets"][0]["recall"]] for w in report["weekly"]])
    merchants = _table(["merchant", "events", "labelled", "fraud", "ROC AUC", "AP",
                        f"precision{b0_label}", f"recall{b0_label}"],
                       [[m["merchant_id"], m["events"], m["n"], m["fraud"], m["roc_auc"],
                         m["average_precision"], m["budgets"][0]["precision"],
                         m["budgets"][0]["recall"]] for m in report["merchants"]])
    users = ""
    for u in report["user_topk"]:
        users += (f"<h3>Top-{u['k']} users per day</h3><p>Mean daily precision "
                  f"<b>{_fmt(u['mean_precision'])}</b>; pooled {_fmt(u['hits'])} fraudulent of "
                  f"{_fmt(u['flagged'])} flagged users ({_fmt(u['precision'])}).</p>")
        users += _table(["day", "users", "fraudulent users", "flagged", "hits", "precision"],
                        [[d["day"], d["users"], d["fraud_users"], d["flagged"], d["hits"],
                          d["precision"]] for d in u["days"]])
    sp = report["speed"]
    stages = " &rarr; ".join(f"{html.escape(st['name'])} ({st['features']} features)"
                             for st in report["stages"])
    period = report.get("period") or {}
    learning = ""
    if report.get("learning"):
        learning = ("<h2>Learning</h2><pre>"
                    + html.escape(wire.dumps(report["learning"]).decode()) + "</pre>")
    headline = "".join(f"<li>{html.escape(line)}</li>" for line in summary_lines(report))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fraudstream backtest</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }} .plots img {{ width: 48%; }} .note {{ color: #555; }}
</style></head><body>
<h1>fraudstream backtest</h1>
<p>Model <b>{html.escape(report['model'])}</b>
(version {html.escape(str(report['model_version']))});
stages {stages}; {report['partitions']} partition(s) per stage.
Period {html.escape(period.get('from', '-'))} to {html.escape(period.get('to', '-'))}.</p>
<ul>{headline}</ul>
<p class="note">Ground truth is the label log (the latest <code>is_fraud</code> per event).
{ev['unlabelled']:,} of {ev['scored']:,} events have no label: they were scored (and their
features counted) but are left out of every metric below. Events read {ev['read']:,}, rejected
{ev['rejected']:,}; labels read {lab['read']:,}, rejected {lab['rejected']:,}, applied
{lab['applied']:,} in label-time order. Scores are prequential: every event is scored before any
label of it is learned.</p>
<h2>Overall</h2>
<p>ROC AUC <b>{_fmt(o['roc_auc'])}</b>, average precision <b>{_fmt(o['average_precision'])}</b>
on {o['n']:,} labelled events ({o['fraud']:,} fraud).</p>
{budgets}
<div class="plots"><img alt="ROC curve" src="{img['roc']}"><img alt="precision-recall curve"
src="{img['pr']}"></div>
<img alt="score distribution by class" src="{img['scores']}">
<h2>User-level precision</h2>
{users}
<h2>Per week</h2>
<img alt="weekly AUC and AP" src="{img['weekly']}">
{weekly}
<h2>Largest merchants by volume</h2>
{merchants}
{learning}
<h2>Speed</h2>
<p>{sp['events']:,} events scored in {sp['run_seconds']:.2f}s: <b>{sp['events_per_second']:,.0f}
events/s</b> (features and model, labels included); loading and validating the logs took
{sp['load_seconds']:.2f}s ({_fmt(sp['end_to_end_events_per_second'], 0)} events/s end to
end).</p>
</body></html>
"""


def write_report(out_dir: Path, result: BacktestResult, report: dict[str, Any]) -> dict[str, Path]:
    """Write ``report.json``, the PNGs and ``report.html`` into ``out_dir``; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    plots = render_plots(result, report)
    for name, data in plots.items():
        p = out_dir / f"{name}.png"
        p.write_bytes(data)
        paths[name] = p
    p = out_dir / "report.json"
    p.write_bytes(wire.dumps(report) + b"\n")
    paths["json"] = p
    p = out_dir / "report.html"
    p.write_text(render_html(report, plots), encoding="utf-8")
    paths["html"] = p
    return paths


def write_scores(path: str | Path, result: BacktestResult) -> int:
    """Every event's score as JSON Lines (``.gz`` compresses): event_id, event_time, user_id,
    merchant_id, score, label (``true``/``false``, ``null`` without a label)."""
    from stream.simulate import write_jsonl

    labels = result.labels.tolist()
    times = result.event_times.tolist()
    scores = result.scores.tolist()

    def rows() -> Any:
        for i, event_id in enumerate(result.event_ids):
            y = labels[i]
            yield {"event_id": event_id, "event_time": times[i], "user_id": result.user_ids[i],
                   "merchant_id": result.merchant_ids[i], "score": scores[i],
                   "label": None if y < 0 else bool(y)}

    return write_jsonl(rows(), path)
