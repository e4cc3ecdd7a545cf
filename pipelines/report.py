"""A static report: per-round held-out figures, training runs, datasets, judge bias and loss curves, as HTML with
PNGs (and the same figures as JSON)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import duckdb

from alignloop.pipelines.judges import report as judge_report
from alignloop.warehouse import db
from alignloop.warehouse.outputs import check_replaceable

JUDGE_METRICS = tuple(dict.fromkeys(judge_report.METRICS + judge_report.LISTWISE_METRICS + judge_report.RATING_METRICS
                                    + judge_report.STEP_METRICS + judge_report.BEST_OF_N_METRICS
                                    + judge_report.VERDICT_METRICS))
"""Pairwise judges' figures, then listwise, rating (human_accuracy and longer are shared), step judges', best-of-N
figures and every AI judge's invalid rate, as the judge report stores them."""


def rounds_summary(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """One entry per evaluated round: ``{"round": id, "policy_model_id": ..., <metric>: value, ...}``."""
    out: dict[str, dict[str, Any]] = {}
    for round_id, model_id, status, _, metric, value, details in con.execute(db.query("report_rounds")).fetchall():
        entry = out.setdefault(round_id, {"round": round_id, "policy_model_id": model_id, "status": status})
        entry[metric] = value
        if metric == "decision" and details:
            entry["decision"] = json.loads(details)
    return list(out.values())


def judge_summary(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for judge, _round, metric, value in con.execute(db.query("report_judges")).fetchall():
        out.setdefault(judge, {})[metric] = value
    return out


def runs_summary(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """One entry per training run, oldest first: what it trained, on what, and its held-out figures."""
    out = []
    for run_id, method, dataset_id, round_id, status, started, meta in con.execute(db.query("report_runs")).fetchall():
        m = json.loads(meta) if meta else {}
        out.append({"run": run_id, "method": method, "dataset": dataset_id, "round": round_id, "status": status,
                    "started_at": str(started), "steps": m.get("steps"), "train_seconds": m.get("train_seconds"),
                    "eval": {k.removeprefix("eval/"): v for k, v in (m.get("eval") or {}).items()}})
    return out


def datasets_summary(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """One entry per dataset snapshot, oldest first: kind, rows per split, content hash."""
    return [{"dataset": ds_id, "kind": kind, "rows": json.loads(rows) if rows else {}, "content_hash": digest,
             "created_at": str(created)}
            for ds_id, kind, rows, digest, created in con.execute(db.query("report_datasets")).fetchall()]


def _run_label(round_id: str | None, run_id: str, method: str, dataset_id: str | None) -> str:
    return f"{round_id}: {method}" if round_id else f"{method} on {dataset_id or '?'} ({run_id[:6]})"


def _plot_rounds(rounds: list[dict[str, Any]], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("heldout_accuracy", "heldout_reward", "rm_win_rate", "repetition", "distinct_2", "kl_to_reference",
             "win_rate", "judge_consistency")
    metrics = [m for m in names if any(m in r for r in rounds)]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    xs = list(range(len(rounds)))
    for ax, m in zip(axes[0], metrics):
        ax.plot(xs, [r.get(m) for r in rounds], marker="o")
        ax.set_title(m)
        ax.set_xticks(xs, [r["round"] for r in rounds], rotation=30, fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_losses(con: duckdb.DuckDBPyConnection, path: Path) -> Path | None:
    rows = con.execute(db.query("report_losses")).fetchall()
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for round_id, run_id, method, dataset_id, step, name, value in rows:
        series.setdefault((name, _run_label(round_id, run_id, method, dataset_id)), []).append((step, value))
    names = sorted({n for n, _ in series})
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for (n, rnd), pts in series.items():
            if n == name:
                ax.plot([s for s, _ in pts], [v for _, v in pts], label=rnd)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_judges(judges: dict[str, dict[str, float]], path: Path) -> Path | None:
    metrics = [m for m in JUDGE_METRICS if any(vals.get(m) is not None for vals in judges.values())]
    if not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 1.5 * len(metrics)), 3.2))
    width = 0.8 / len(judges)
    for i, (judge, vals) in enumerate(judges.items()):
        heights = [float("nan") if vals.get(m) is None else vals[m] for m in metrics]  # not measured: no bar
        ax.bar([j + i * width for j in range(len(metrics))], heights, width, label=judge[:40])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics, fontsize=8)
    ax.axhline(0.5, ls="--", c="grey", lw=1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6)
    ax.set_title("judge quality (dashed: 0.5, no position or length bias; chance accuracy)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    """An HTML table; floats to 3 decimals, every value escaped."""
    def cell(v: Any) -> str:
        return f"<td>{v:.3f}</td>" if isinstance(v, float) else f"<td>{html.escape('' if v is None else str(v))}</td>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    return f"<table><tr>{head}</tr>{''.join('<tr>' + ''.join(cell(v) for v in r) + '</tr>' for r in rows)}</table>"


def _judges_html(judges: dict[str, dict[str, float]]) -> str:
    if not judges:
        return "<p>No judge measured yet (<code>alignloop judge report</code>).</p>"
    metrics = [m for m in JUDGE_METRICS if any(vals.get(m) is not None for vals in judges.values())]
    return _table(["judge", *metrics], [[judge, *[vals.get(m) for m in metrics]] for judge, vals in judges.items()])


def _runs_html(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "<p>No training runs yet.</p>"
    metrics = sorted({k for r in runs for k in r["eval"]} - {"examples"})
    return _table(["run", "method", "dataset", "round", "status", "steps", "train s", *metrics],
                  [[r["run"][:12], r["method"], r["dataset"], r["round"], r["status"], r["steps"], r["train_seconds"],
                    *[r["eval"].get(m) for m in metrics]] for r in runs])


def _datasets_html(datasets: list[dict[str, Any]]) -> str:
    if not datasets:
        return "<p>No datasets yet.</p>"
    return _table(["dataset", "kind", "rows", "content hash", "created"],
                  [[d["dataset"], d["kind"], ", ".join(f"{k} {v}" for k, v in d["rows"].items()),
                    d["content_hash"][:12], d["created_at"][:19]] for d in datasets])


REPORT_FILES = ("index.html", "rounds.png", "losses.png", "judges.png")
"""What a report writes into its folder; an earlier report's are replaced, anybody else's never."""
_TITLE = "<title>alignloop report</title>"


def _check_report_folder(out: Path) -> None:
    """Refuse a folder where the report's files would replace files that are not an earlier report's (its
    ``index.html`` is not an alignloop report): ``--out .`` in a project with its own index.html."""
    page = out / "index.html"
    ours = page.is_file() and _TITLE in page.read_text(encoding="utf-8", errors="replace")
    for name in REPORT_FILES:
        check_replaceable(out / name, "--out", lambda _: None if ours else "it is not an earlier alignloop report's")


def write_report(con: duckdb.DuckDBPyConnection, out_dir: str | Path, samples: dict[str, Any] | None = None) -> Path:
    """Write ``index.html`` with plots into ``out_dir``; return its path. Files of the same names are replaced only
    where they are an earlier report's."""
    out = Path(out_dir)
    _check_report_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    rounds = rounds_summary(con)
    judges = judge_summary(con)
    plots = [p for p in (_plot_rounds(rounds, out / "rounds.png"), _plot_losses(con, out / "losses.png"),
                         _plot_judges(judges, out / "judges.png")) if p]
    cols = sorted({k for r in rounds for k in r} - {"round", "policy_model_id", "status", "decision"})
    rounds_html = (_table(["round", *cols, "decision"], [[r["round"], *[r.get(c) for c in cols],
                                                          r.get("decision", {}).get("reason", "")] for r in rounds])
                   if rounds else "<p>No evaluated rounds yet.</p>")
    sample_html = "".join(f"<h2>{html.escape(title)}</h2>{_table(['prompt', 'before', 'after'], [list(r) for r in rows])}"
                          for title, rows in (samples or {}).items())
    imgs = "".join(f'<p><img src="{p.name}" alt="{p.stem}"></p>' for p in plots)
    page = f"""<!doctype html><html><head><meta charset="utf-8">{_TITLE}
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}</style></head><body>
<h1>alignloop report</h1>
<h2>Rounds</h2>{rounds_html}
<h2>Judges</h2>{_judges_html(judges)}
<h2>Training runs</h2>{_runs_html(runs_summary(con))}
<h2>Datasets</h2>{_datasets_html(datasets_summary(con))}
{imgs}{sample_html}</body></html>"""
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
