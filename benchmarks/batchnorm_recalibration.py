"""One-shot accuracy after channel removal, with and without BatchNorm recalibration.

The MNIST-1D ResNet of ``benchmarks/allocation.py`` (trained here, 30 epochs, 500 training samples held out for
the scan) falls to near chance when channels are removed one-shot, whatever the allocation: its BatchNorm layers
keep the running statistics of the dense model. ``secateurs.recovery.recalibrate_batchnorm`` re-estimates them
with forward passes over training samples (no gradient, no weight change). Each row shrinks the same trained model
to the same MACs as ``allocation.py`` does (uniform, the data-free proxy, a sensitivity scan of held-out top-1)
and reports test accuracy right after shrinking, then after recalibration on 256 and on 1,024 training samples.

    nice .venv/bin/python benchmarks/batchnorm_recalibration.py   # -> benchmarks/results/batchnorm_recalibration.md/.json

The committed table ends with a reading written by hand after the run; a re-run rewrites the table without it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from secateurs.recovery import recalibrate_batchnorm
from secateurs.storage import atomic_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from allocation import TARGETS, allocated, percent, resnet_setup, scan_curves, uptime

ROWS = ("uniform", "proxy", "sensitivity, task metric")
SAMPLES = (256, 1024)


def run(dense_epochs: int) -> dict:
    """Test accuracy of every row and target: shrunk, then recalibrated on each sample count."""
    setup = resnet_setup(dense_epochs)
    curves = scan_curves(setup)
    result = {"dense": percent(setup["model"], setup["test"]), "rows": {}}
    for target in TARGETS:
        for row in ROWS:
            shrunk = allocated(setup, target, row, curves)
            cells = {"pruned": percent(shrunk, setup["test"])}
            for samples in SAMPLES:
                model = copy.deepcopy(shrunk)
                recalibrate_batchnorm(model, setup["train"], num_samples=samples)
                cells[f"recalibrated {samples}"] = percent(model, setup["test"])
            result["rows"][f"{row} @ {target}"] = cells
            print(target, row, cells, flush=True)
    return result


def lines(result: dict, command: str, load: tuple[str, str], seconds: float, threads: int) -> list[str]:
    out = ["# BatchNorm recalibration after channel removal (MNIST-1D ResNet)", "",
           f"`{command}`: {platform.machine()} CPU, {os.cpu_count()} cores, {threads} threads, torch {torch.__version__}, "
           f"{seconds:.0f} s; load at start `{load[0]}`, at end `{load[1]}`.", "",
           f"Dense test accuracy {result['dense']:.1f}% (1,000 test samples, 0.1 point each). One seed.", "",
           "| MACs | allocation | shrunk | + BN recalibrated (256 samples) | + BN recalibrated (1,024 samples) |",
           "| ---: | --- | ---: | ---: | ---: |"]  # fmt: skip
    for target in TARGETS:
        for row in ROWS:
            cells = result["rows"][f"{row} @ {target}"]
            values = [cells["pruned"], *(cells[f"recalibrated {s}"] for s in SAMPLES)]
            out.append(f"| {target} | {row} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    return out + [""]


def write(path: Path, text: str) -> None:
    with atomic_file(path) as temp:
        temp.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dense-epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "batchnorm_recalibration.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = " ".join(["python benchmarks/batchnorm_recalibration.py", *sys.argv[1:]])
    start_load, started = uptime(), time.perf_counter()
    result = run(args.dense_epochs)
    text = "\n".join(lines(result, command, (start_load, uptime()), time.perf_counter() - started, args.threads))
    write(args.out, text)
    write(args.out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
