"""Sweep a fitted cascade's two gate thresholds over an evaluation set: call rate, latency, AUROC, F1.

The gate and the localizer each score every image ONCE (the localizer with maps, as `evaluate`
runs it); each (low, high) setting then gives the cascade's scores without running anything
again: images with gate value in [low, high] take the localizer's score, the others are placed
below / above the localizer's validation range exactly as `CascadeHead.predict` places them. Per
setting, `results.csv` holds the call rate (share of images sent to the localizer), the latency
per image in ms (measured gate time + call rate x measured localizer time, both per image on this
set), image AUROC, F1-max, and F1 at the run's calibrated threshold (when it has one). The grid is
every pair low <= high of `steps + 1` quantiles of the gate values, plus the fitted setting;
`tradeoff.png` plots AUROC against call rate. The model is not changed: this is a study.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.files import atomic_write_bytes, staged_output, write_json
from oddspot.inspect.layout import batched, split_test_refs
from oddspot.metrics.bootstrap import rowwise_metrics
from oddspot.progress import track
from oddspot.records.evaluation import write_csv
from oddspot.runs.registry import load_model

RESULTS_FILE = "results.csv"
PLOT_FILE = "tradeoff.png"
HEADER = ("low", "high", "fitted", "call_rate", "latency_ms", "image_auroc", "image_f1_max", "image_f1_at_threshold")


def gate_outputs(model: Any, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Gate values, localizer scores, and the seconds the gate and the localizer took on `images`."""
    t0 = time.perf_counter()
    _, g = model.gate_pass(images, maps=False)
    t1 = time.perf_counter()
    loc = model.localizer.predict(images, maps=True)
    return np.asarray(g, np.float64), np.asarray(loc.scores, np.float64), t1 - t0, time.perf_counter() - t1


def placed_scores(g: np.ndarray, loc: np.ndarray, lows: np.ndarray, highs: np.ndarray,
                  th: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(settings x images) cascade scores and localizer calls for each (low, high), as `CascadeHead.predict`."""
    lo, hi = lows[:, None], highs[:, None]
    call = (g >= lo) & (g <= hi)
    placed = np.where(g < lo, th["localizer_min"] - (lo - g), th["localizer_max"] + (g - hi))
    return np.where(call, loc, placed), call


def settings_grid(g: np.ndarray, steps: int, fitted: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair low <= high of the gate values' quantiles (0, 1/steps, ..., 1), plus the fitted pair (flagged)."""
    q = np.unique(np.quantile(g, np.linspace(0, 1, steps + 1)))
    lo, hi = np.meshgrid(q, q, indexing="ij")
    keep = lo <= hi
    lows = np.append(lo[keep], fitted[0])
    highs = np.append(hi[keep], fitted[1])
    flag = np.zeros(lows.size, bool)
    flag[-1] = True
    return lows, highs, flag


def f1_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """F1 of "anomalous iff score >= threshold" for each row of scores."""
    pred = scores >= threshold
    tp = (pred & labels).sum(axis=1)
    return 2 * tp / (pred.sum(axis=1) + labels.sum())


def tradeoff_plot(rows: list[dict[str, Any]]) -> bytes:
    """Image AUROC against localizer call rate, coloured by F1-max; the fitted setting starred."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 3.9), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    ax.grid(True, color="#e3e6eb", linewidth=0.8)
    x = np.array([r["call_rate"] for r in rows])
    y = np.array([r["image_auroc"] for r in rows])
    f1 = np.array([r["image_f1_max"] for r in rows])
    dots = ax.scatter(x, y, c=f1, cmap="viridis", s=22, label="(low, high) settings")
    fitted = [r for r in rows if r["fitted"]]
    if fitted:
        ax.scatter([fitted[0]["call_rate"]], [fitted[0]["image_auroc"]], marker="*", s=220, color="#d64541",
                   edgecolor="black", zorder=3, label="fitted thresholds")
    fig.colorbar(dots, ax=ax, label="image F1-max")
    ax.set(xlabel="localizer call rate (share of images)", ylabel="image AUROC", xlim=(-0.02, 1.02),
           title="Cascade gate: accuracy vs localizer calls")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


@staged_output("out", inputs=("run", "data"))
def sweep_gate(run: str | Path, data: str | Path | None, category: str | None, out: str | Path, split: str | None = None,
               steps: int = 10, batch: int = 32, device: str | None = None) -> list[dict[str, Any]]:
    """Score the test split once with the cascade in `run`, then write results.csv, sweep.json and
    tradeoff.png for every gate setting of the grid (see the module); returns the rows. `data` and
    `category` None: the dataset the run's run.json records (`inspect.layout.run_dataset`)."""
    run, out = Path(run), Path(out)
    if int(steps) != steps or not 1 <= steps <= 100:
        raise OddspotError(f"--steps must be an integer in [1, 100], got {steps!r}")
    model = load_model(run, "inspect", device=device)
    if model.kind != "cascade":
        raise OddspotError(f"{run}: a {model.kind} model; the gate sweep needs a cascade (oddspot fit --model cascade)")
    th = model.state.get("thresholds")
    if th is None:
        raise OddspotError(f"{run}: the cascade gate has no thresholds; fit it with validation data")
    test, protocol = split_test_refs(run, data, category, split)
    parts, labels, gate_s, loc_s = [], [], 0.0, 0.0
    for chunk in track(list(batched(test, batch)), "gate sweep"):
        samples = [r.load() for r in chunk]
        g, loc, tg, tl = gate_outputs(model, [s.image for s in samples])
        parts.append((g, loc))
        labels += [int(s.label) for s in samples]
        gate_s, loc_s = gate_s + tg, loc_s + tl
    g = np.concatenate([p[0] for p in parts])
    loc = np.concatenate([p[1] for p in parts])
    y = np.asarray(labels, bool)
    lows, highs, flag = settings_grid(g, int(steps), (float(th["low"]), float(th["high"])))
    scores, call = placed_scores(g, loc, lows, highs, th)
    ranking = rowwise_metrics(scores, np.broadcast_to(y, scores.shape))
    cal = model.postprocess
    f1_cal = f1_at(scores, y, cal.image_threshold) if cal is not None else np.full(lows.size, np.nan)
    rate = call.mean(axis=1)
    per_gate, per_loc = gate_s / g.size, loc_s / g.size
    rows = [{"low": float(lows[i]), "high": float(highs[i]), "fitted": bool(flag[i]), "call_rate": float(rate[i]),
             "latency_ms": float(1000 * (per_gate + rate[i] * per_loc)), "image_auroc": float(ranking["auroc"][i]),
             "image_f1_max": float(ranking["f1_max"][i]), "image_f1_at_threshold": float(f1_cal[i])}
            for i in range(lows.size)]
    write_csv(out / RESULTS_FILE, HEADER, [[int(r[k]) if k == "fitted" else r[k] for k in HEADER] for r in rows])
    write_json(out / "sweep.json", {"run": str(run), "category": category, "split": protocol, "n_images": int(g.size),
                                    "n_anomalous": int(y.sum()), "steps": int(steps), "gate": model.config.gate,
                                    "gate_ms_per_image": 1000 * per_gate, "localizer_ms_per_image": 1000 * per_loc,
                                    "fitted": {"low": th["low"], "high": th["high"]},
                                    "latency": "gate ms + call rate x localizer ms, measured per image on this set"})
    atomic_write_bytes(out / PLOT_FILE, tradeoff_plot(rows))
    return rows
