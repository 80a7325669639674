"""Quality benchmark: choose PatchCore's defaults on one half of 12 categories, confirm them on the other.

Usage: python benchmarks/quality.py [--threads 2] [--quick] [--out DIR] [--seed 0] [--categories C ...]
       [--backbones efficientnet_lite0 ...] [--no-extras] [--min-predict 50] [--speed-reference IPS]
       [--post-hoc] [--train 60] [--test-good 20] [--test-bad 27] [--predict-images 60]
(docs/quality.md describes the dataset, the grid and the rule.)

1. Builds `oddspot.data.quality_dataset` under OUT/dataset (reused while its dataset.json equals
   the recipe of these options, rebuilt otherwise).
2. On the `selection` half, fits every setting of the grid with `oddspot.inspect.fit` (default
   `validation` protocol), evaluates it with `oddspot.inspect.evaluate` on the model `predict`
   and `evaluate` load (`oddspot.export.load_for_inference`, `--runtime auto`: OpenVINO here), and
   times `oddspot.inspect.predict` on the category's `predict/` JPEGs (decode + score + scores.csv
   and masks; no heatmap PNGs). Scoring variants re-score the same fitted bank: the memory bank
   does not depend on the scoring.
3. Chooses a setting by RULE (`choose`): among settings whose mean end-to-end predict speed over the
   selection categories is >= --min-predict img/s, the highest mean of (image AUROC + AUPRO) / 2;
   ties go to the faster. If none is fast enough, the fastest.
4. On the `confirmation` half, evaluates the chosen setting, the current library defaults, and
   each backbone at 1% and 10% coresets, and says whether the goal (mean image AUROC >= 0.99 and
   AUPRO >= 0.96 at >= 50 img/s) is met there.
5. On the `holdout` (five categories added after the confirmation half had been seen), evaluates
   the chosen setting and the library default, with the same goal check.
6. Prints, for those two settings on the confirmation half and the holdout, the image AUROC of
   each defect family (its images against all good ones), textures and objects apart.
7. With --post-hoc, also runs the whole selection grid on the confirmation half and the holdout
   and prints a bound, not a result: per category the best image AUROC and, apart, the best AUPRO
   of any setting, chosen after seeing them and ignoring speed. A half whose bound misses the
   goal cannot meet it with any setting of the grid, however chosen.
Results per (category, setting) are kept in OUT/results, so an interrupted run resumes. Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from oddspot.data.defects import FAMILIES
from oddspot.data.quality_dataset import CATEGORIES, HALVES, HOLDOUT_TEXTURES, TEXTURES, build_quality_dataset, recipe
from oddspot.files import claim_folder, read_json, staged_folder, write_json

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
RULE = ("among settings with mean end-to-end predict >= {min_predict:g} img/s on the selection half, the highest "
        "mean (image AUROC + AUPRO) / 2; ties to the faster; if none is fast enough, the fastest")
GOAL = {"image_auroc": 0.99, "aupro": 0.96, "predict_ips": 50.0}
TEXTURE_CATEGORIES = TEXTURES + HOLDOUT_TEXTURES
METRICS = ("image_auroc", "image_ap", "pixel_auroc", "aupro", "fit_ips", "predict_ips", "predict_ips_raw")


@dataclass(frozen=True)
class Setting:
    """One point of the grid: the PatchCore options it changes."""

    backbone: str = "efficientnet_lite0"
    layers: tuple[str, ...] = ("stage3", "stage5")
    image_size: int = 224
    coreset_ratio: float = 0.01
    scoring: str = "max"

    @property
    def label(self) -> str:
        return (f"{self.backbone.replace('efficientnet_', '')} {'+'.join(self.layers)} {self.image_size}px "
                f"{self.coreset_ratio:.0%} {self.scoring}")

    @property
    def fitted(self) -> Setting:
        """The setting whose fitted model this one scores with (scoring is applied after the search)."""
        return replace(self, scoring="max")

    def options(self) -> dict[str, Any]:
        return {**asdict(self), "layers": list(self.layers)}


LIBRARY_DEFAULT = Setting()
# The fine-grid extras: stage2 (stride 4) + stage3, so patches sit on a stride-4 grid (4x the queries of stride 8).
FINE_LAYERS = ("stage2", "stage3")
FINE_SIZES = (160, 192, 224, 256)


def backbone_setting(backbone: str) -> Setting:
    """A backbone with its default input size (`oddspot.choices.BACKBONE_SIZES`) and layers stage3 + stage5."""
    from oddspot import choices

    size = getattr(choices, "BACKBONE_SIZES", {}).get(backbone, 224)
    layers = getattr(choices, "BACKBONE_LAYERS", {}).get(backbone, ("stage3", "stage5"))
    return Setting(backbone, tuple(layers), int(size))


def available(backbone: str) -> bool:
    from oddspot.errors import OddspotError
    from oddspot.features import build_backbone

    try:
        build_backbone(backbone, device="cpu")
    except OddspotError:
        return False
    return True


def grids(backbones: Sequence[str], extras: bool) -> tuple[list[Setting], list[Setting]]:
    """(selection grid, confirmation grid without the chosen setting); both start with the library default."""
    base = [LIBRARY_DEFAULT] + [replace(backbone_setting(b), coreset_ratio=r, scoring=s) for b in backbones
                                for r in (0.01, 0.1) for s in ("max", "topk_mean")]
    extra = [] if not extras else [replace(LIBRARY_DEFAULT, image_size=256), replace(LIBRARY_DEFAULT, layers=("stage3", "stage4")),
                                   *(replace(LIBRARY_DEFAULT, layers=FINE_LAYERS, image_size=size) for size in FINE_SIZES)]
    extra += [replace(s, scoring="topk_mean") for s in extra]
    return list(dict.fromkeys(base + extra)), list(dict.fromkeys(base))


def covers(path: Path, spec: dict[str, Any]) -> bool:
    """Whether the dataset.json at `path` has the recipe `spec` for at least spec's categories."""
    if not path.exists():
        return False
    have = read_json(path, "delete the dataset folder to rebuild it")
    same = all(have.get(k) == v for k, v in spec.items() if k not in ("categories", "halves"))
    return same and set(spec["categories"]) <= set(have.get("categories") or [])


def set_threads(threads: int) -> None:
    import faiss
    import torch

    from oddspot.runtime.engine import set_threads as set_engine_threads

    set_engine_threads(threads)
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def timed_predict(run: Path, model: Any, images: Path, out: Path) -> float:
    """Seconds of one `oddspot.inspect.predict` over the folder `images` (scores.csv and masks, no heatmaps)."""
    from oddspot import inspect

    t = time.perf_counter()
    inspect.predict(run, [images], out, model=model, heatmaps=False, warn=lambda _: None)
    return time.perf_counter() - t


def reference_run(data: Path, category: str, folder: Path, seed: int) -> Path:
    """The library default fitted on `category` once, kept in `folder`: every setting's predict is timed beside it."""
    from oddspot import inspect

    if not (folder / "model.json").exists():
        inspect.fit(data, category, folder, options=LIBRARY_DEFAULT.options(), seed=seed)
    return folder


def measure(data: Path, category: str, fitted: Setting, scorings: Sequence[str], work: Path, seed: int,
            reference: Path) -> dict[str, dict]:
    """Fit `fitted` on one category, evaluate it under each scoring, time predict: {scoring: figures}.

    Predict is timed between two runs of the library default's `reference` model on the same
    images (`default_ips`: their mean speed), so speed ratios hold on a machine whose load drifts.
    """
    from oddspot import inspect
    from oddspot.export import load_for_inference

    run = work / "run"
    info = inspect.fit(data, category, run, options=fitted.options(), seed=seed)
    model = load_for_inference(run, "inspect", runtime="auto")
    default = load_for_inference(reference, "inspect", runtime="auto")
    images = data / category / "predict"
    n = len(list(images.glob("*.jpg")))
    warm = sorted(images.glob("*.jpg"))[:4]
    for r, m in ((run, model), (reference, default)):
        inspect.predict(r, warm, work / "warm", model=m, heatmaps=False, warn=lambda _: None)
    before = timed_predict(reference, default, images, work / "predict-default-1")
    predict_ips = n / timed_predict(run, model, images, work / "predict")
    default_ips = 2 * n / (before + timed_predict(reference, default, images, work / "predict-default-2"))
    out = {}
    for scoring in scorings:
        model.config.scoring = scoring
        m = inspect.evaluate(run, data, category, work / f"eval-{scoring}", bootstrap=0, gallery=0, model=model,
                             warn=lambda _: None)
        out[scoring] = {"image_auroc": m["image"]["auroc"], "image_ap": m["image"]["ap"], "pixel_auroc": m["pixel"]["auroc"],
                        "aupro": m["pixel"]["aupro"], "fit_ips": info["n_train"] / info["fit_seconds"],
                        "predict_ips": predict_ips, "default_ips": default_ips, "runtime": model.runtime,
                        "bank": int(model.memory_bank.shape[0]), "n_test": m["run"]["n_test"],
                        "families": family_aurocs(work / f"eval-{scoring}" / "scores.csv")}
    return out


def family_aurocs(scores_csv: Path) -> dict[str, float]:
    """Image AUROC of each defect family's images against all good images, from an evaluation's scores.csv."""
    import csv

    with open(scores_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    good = np.array([float(r["score"]) for r in rows if r["label"] == "0"])
    out = {}
    for family in sorted({r["defect_type"] for r in rows if r["label"] == "1"}):
        bad = np.array([float(r["score"]) for r in rows if r["label"] == "1" and r["defect_type"] == family])
        wins = (bad[:, None] > good[None, :]).sum() + 0.5 * (bad[:, None] == good[None, :]).sum()
        out[family] = float(wins / (bad.size * good.size))
    return out


def run_grid(data: Path, results: Path, categories: Sequence[str], settings: Sequence[Setting], seed: int,
             log: Any = print, families: bool = False) -> dict[tuple[str, Setting], dict]:
    """Figures of every (category, setting); cached per fitted setting under `results`.

    `families`: also the per-family image AUROCs (a cached row without them is measured again).
    """
    table: dict[tuple[str, Setting], dict] = {}
    by_fit: dict[Setting, list[Setting]] = {}
    for s in settings:
        by_fit.setdefault(s.fitted, []).append(s)
    for category in categories:
        for fitted, group in by_fit.items():
            key = fitted.label.replace(" ", "_").replace("%", "pct")
            cached = results / category / f"{key}.json"
            figures = json.loads(cached.read_text()) if cached.exists() else {}
            todo = [s.scoring for s in group if s.scoring not in figures or (families and "families" not in figures[s.scoring])]
            if todo:
                t = time.perf_counter()
                (results / category).mkdir(parents=True, exist_ok=True)
                reference = reference_run(data, category, results / category / "default-run", seed)
                with tempfile.TemporaryDirectory(dir=results / category) as work:
                    for scoring, row in measure(data, category, fitted, todo, Path(work), seed, reference).items():
                        if scoring in figures:  # measured before without the families: add them, keep the rest
                            figures[scoring]["families"] = row["families"]
                        else:
                            figures[scoring] = row
                write_json(cached, figures)
                log(f"  {category:10s} {fitted.label:40s} {time.perf_counter() - t:6.1f} s", flush=True)
            for s in group:
                table[(category, s)] = figures[s.scoring]
    return table


def half_means(table: dict[tuple[str, Setting], dict], categories: Sequence[str], setting: Setting) -> dict[str, float]:
    rows = [table[(c, setting)] for c in categories if (c, setting) in table]
    return {k: float(np.mean([r[k] for r in rows])) for k in METRICS if all(k in r for r in rows)} if rows else {}


def choose(means: dict[Setting, dict[str, float]], min_predict: float) -> Setting:
    """The setting RULE picks from per-setting mean figures (keys of METRICS)."""
    fast = {s: m for s, m in means.items() if m["predict_ips"] >= min_predict}
    if not fast:
        return max(means, key=lambda s: means[s]["predict_ips"])
    return max(fast, key=lambda s: ((fast[s]["image_auroc"] + fast[s]["aupro"]) / 2, fast[s]["predict_ips"]))


def rescaled(table: dict[tuple[str, Setting], dict], reference: float | None) -> dict[tuple[str, Setting], dict]:
    """`table` with predict speeds rescaled so the library default reads `reference` img/s on every category.

    A row's own `default_ips` (the default timed beside it) is the scale; else the default's row of its category.
    """
    out = {}
    for (category, setting), row in table.items():
        row = {**row, "predict_ips_raw": row["predict_ips"]}
        if reference:
            default = row.get("default_ips") or table[(category, LIBRARY_DEFAULT)]["predict_ips"]
            row["predict_ips"] = row["predict_ips"] * reference / default
        out[(category, setting)] = row
    return out


def print_half(name: str, table: dict[tuple[str, Setting], dict], categories: Sequence[str], settings: Sequence[Setting]) -> None:
    print(f"\n## {name} half: {', '.join(categories)}")
    print("| category | setting | image AUROC | image AP | pixel AUROC | AUPRO | fit img/s | predict img/s | raw predict img/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in categories:
        for s in settings:
            r = table.get((c, s))
            if r is not None:
                print(f"| {c} | {s.label} | {r['image_auroc']:.4f} | {r['image_ap']:.4f} | {r['pixel_auroc']:.4f} | "
                      f"{r['aupro']:.4f} | {r['fit_ips']:.1f} | {r['predict_ips']:.1f} | {r['predict_ips_raw']:.1f} |")
    print(f"\n### {name} half: means over {len(categories)} categories")
    print("| setting | image AUROC | image AP | pixel AUROC | AUPRO | fit img/s | predict img/s | raw predict img/s |")
    print("|---|---|---|---|---|---|---|---|")
    for s in settings:
        m = half_means(table, categories, s)
        if m:
            print(f"| {s.label} | {m['image_auroc']:.4f} | {m['image_ap']:.4f} | {m['pixel_auroc']:.4f} | {m['aupro']:.4f} | "
                  f"{m['fit_ips']:.1f} | {m['predict_ips']:.1f} | {m['predict_ips_raw']:.1f} |")


def print_families(table: dict[tuple[str, Setting], dict], halves: dict[str, Sequence[str]],
                   settings: Sequence[Setting]) -> None:
    """Mean image AUROC per defect family (its images against all good ones), textures and objects apart."""
    columns = [(half, kind, s) for half, cats in halves.items() for kind in ("textures", "objects") for s in settings
               if [c for c in cats if (c in TEXTURE_CATEGORIES) == (kind == "textures")]]
    if not columns:
        return
    print("\n### Image AUROC per defect family (mean over categories; each family against all good images)")
    print("| family | " + " | ".join(f"{h} {k}: {s.label}" for h, k, s in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for family in FAMILIES:
        cells = []
        for half, kind, s in columns:
            values = [table[(c, s)]["families"].get(family) for c in halves[half]
                      if (c in TEXTURE_CATEGORIES) == (kind == "textures") and "families" in table.get((c, s), {})]
            values = [v for v in values if v is not None]
            cells.append(f"{np.mean(values):.3f}" if values else "--")
        print(f"| {family} | " + " | ".join(cells) + " |")


def post_hoc_bound(table: dict[tuple[str, Setting], dict], categories: Sequence[str],
                   settings: Sequence[Setting]) -> dict[str, float]:
    """Means over `categories` of the best image AUROC and, separately, the best AUPRO any of `settings` reached."""
    best = {k: [max(table[(c, s)][k] for s in settings if (c, s) in table) for c in categories] for k in ("image_auroc", "aupro")}
    return {k: float(np.mean(v)) for k, v in best.items()}


def print_post_hoc(table: dict[tuple[str, Setting], dict], halves: dict[str, Sequence[str]],
                   settings: Sequence[Setting]) -> None:
    print(f"\n### Post-hoc bound over {len(settings)} settings (not a result: per category, the best image AUROC and "
          "the best AUPRO of any setting, each picked after seeing it, speed ignored)")
    print("| half | categories | best image AUROC (mean) | best AUPRO (mean) | could any setting meet the goal? |")
    print("|---|---|---|---|---|")
    for half, cats in halves.items():
        if cats:
            b = post_hoc_bound(table, cats, settings)
            reach = b["image_auroc"] >= GOAL["image_auroc"] and b["aupro"] >= GOAL["aupro"]
            print(f"| {half} | {', '.join(cats)} | {b['image_auroc']:.4f} | {b['aupro']:.4f} | "
                  f"{'not excluded' if reach else 'no'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 categories per half, small sets, Lite0 only: a smoke check")
    ap.add_argument("--out", type=Path, default=Path("quality-bench"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--categories", nargs="+", choices=CATEGORIES, default=None)
    ap.add_argument("--backbones", nargs="+", choices=BACKBONES, default=None)
    ap.add_argument("--no-extras", action="store_true",
                    help="only the backbones at their default layers and size (no Lite0 at 256 px, stage3+stage4 or the "
                         "stage2+stage3 fine grid)")
    ap.add_argument("--min-predict", type=float, default=GOAL["predict_ips"], help="the rule's speed floor, img/s")
    ap.add_argument("--post-hoc", action="store_true",
                    help="also run the whole selection grid on the confirmation half and the holdout, and print the "
                         "post-hoc bound: the best image AUROC and AUPRO per category over all settings")
    ap.add_argument("--speed-reference", type=float, default=None, metavar="IPS",
                    help="the library default's end-to-end predict img/s on an idle machine: every measured speed is "
                         "rescaled by IPS / (the default's speed measured on the same category), so a run on a busy "
                         "machine is gated as an idle one would be (raw speeds are printed too)")
    for name, default, quick in (("train", 60, 20), ("test-good", 20, 6), ("test-bad", 27, 9), ("predict-images", 60, 24)):
        ap.add_argument(f"--{name}", type=int, default=None, help=f"images per category (default {default}; --quick {quick})")
    args = ap.parse_args()
    if args.threads < 1 or args.min_predict < 0 or (args.speed_reference is not None and args.speed_reference <= 0):
        ap.error("--threads must be >= 1, --min-predict >= 0 and --speed-reference > 0")
    set_threads(args.threads)
    t0 = time.perf_counter()
    cats = list(args.categories or (("brick", "horse", "grass", "camera") if args.quick else CATEGORIES))
    sizes = dict(n_train=20, n_test_good=6, n_test_bad=9, n_predict=24) if args.quick else {}
    for key, value in (("n_train", args.train), ("n_test_good", args.test_good), ("n_test_bad", args.test_bad),
                       ("n_predict", args.predict_images)):
        if value is not None:
            if value < (len(FAMILIES) if key == "n_test_bad" else 2):
                ap.error(f"--{key[2:].replace('_', '-')} {value}: too few images")
            sizes[key] = value
    spec = recipe(cats, seed=args.seed, **sizes)
    out = claim_folder(args.out)
    data = out / "dataset"
    if not covers(data / "dataset.json", spec):
        with staged_folder(data) as stage:
            build_quality_dataset(stage, cats, seed=args.seed, **sizes)
        print(f"dataset built in {time.perf_counter() - t0:.0f} s: {data}", flush=True)
    # a category's images and figures do not depend on which other categories are built
    per_category = {k: v for k, v in spec.items() if k not in ("categories", "halves")} | {"speed_protocol": 2}
    results = out / "results" / hashlib.sha256(json.dumps(per_category, sort_keys=True).encode()).hexdigest()[:16]
    backbones = [b for b in (args.backbones or (("efficientnet_lite0",) if args.quick else BACKBONES)) if available(b)]
    selection_grid, confirm_grid = grids(backbones, not (args.quick or args.no_extras))
    selection = [c for c in HALVES["selection"] if c in cats]
    confirmation = [c for c in HALVES["confirmation"] if c in cats]
    holdout = [c for c in HALVES["holdout"] if c in cats]
    print(f"quality benchmark: {len(selection)} selection + {len(confirmation)} confirmation + {len(holdout)} holdout "
          f"categories, "
          f"backbones {', '.join(backbones)}, {args.threads} threads, load average {os.getloadavg()[0]:.2f}", flush=True)
    # Work order: each backbone on both halves first, then the selection-only settings, so an interrupted
    # run leaves complete per-backbone tables in OUT/results for a rerun with fewer --backbones.
    for fitted in dict.fromkeys(s.fitted for s in confirm_grid):
        run_grid(data, results, selection + confirmation, [s for s in confirm_grid if s.fitted == fitted], args.seed)
    table = rescaled(run_grid(data, results, selection, selection_grid, args.seed), args.speed_reference)
    means = {s: half_means(table, selection, s) for s in selection_grid}
    chosen = choose({s: m for s, m in means.items() if m}, args.min_predict)
    confirm = list(dict.fromkeys(confirm_grid + [chosen]))
    table.update(rescaled(run_grid(data, results, confirmation, confirm, args.seed), args.speed_reference))
    held = list(dict.fromkeys([LIBRARY_DEFAULT, chosen]))
    table.update(rescaled(run_grid(data, results, confirmation + holdout, held, args.seed, families=True),
                          args.speed_reference))
    if args.post_hoc:
        table.update(rescaled(run_grid(data, results, confirmation + holdout, selection_grid, args.seed),
                              args.speed_reference))
        confirm = list(dict.fromkeys(confirm + selection_grid))
        held = list(dict.fromkeys(held + selection_grid))
    if args.speed_reference:
        print(f"\npredict img/s below are rescaled to the library default = {args.speed_reference:g} img/s per category "
              "(--speed-reference); raw measured speeds are in the last column")
    print_half("Selection", table, selection, selection_grid)
    print_half("Confirmation", table, confirmation, confirm)
    if holdout:
        print_half("Holdout", table, holdout, held)
    print_families(table, {"confirmation": confirmation, "holdout": holdout}, list(dict.fromkeys([LIBRARY_DEFAULT, chosen])))
    if args.post_hoc:
        print_post_hoc(table, {"selection": selection, "confirmation": confirmation, "holdout": holdout}, selection_grid)
    print(f"\nRule: {RULE.format(min_predict=args.min_predict)}.")
    print(f"Chosen on the selection half: {chosen.label}; the library default is {LIBRARY_DEFAULT.label}.")
    for (half, categories), (name, s) in itertools.product((("Confirmation", confirmation), ("Holdout", holdout)),
                                                          (("chosen", chosen), ("library default", LIBRARY_DEFAULT))):
        m = half_means(table, categories, s)
        if m:
            met = m["image_auroc"] >= GOAL["image_auroc"] and m["aupro"] >= GOAL["aupro"] and m["predict_ips"] >= GOAL["predict_ips"]
            print(f"{half}, {name}: image AUROC {m['image_auroc']:.4f}, AUPRO {m['aupro']:.4f}, predict "
                  f"{m['predict_ips']:.1f} img/s -> goal (AUROC >= 0.99, AUPRO >= 0.96, >= 50 img/s) "
                  f"{'met' if met else 'NOT met'}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s, {args.threads} threads, load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
