"""Global L1 pruning to 50% of a stack of large Linear layers: torch.nn.utils.prune against secateurs.

Each case runs in its own subprocess: build the model (``layers`` x ``width``x``width`` fp32 weights),
warm both libraries up on a tiny model, reset the peak-RSS counter (``/proc/self/clear_refs``), prune,
and read the peak (``VmHWM``). Extra memory is that peak above the resident model. Cases are:

* ``torch``: ``torch.nn.utils.prune.global_unstructured(..., pruning_method=L1Unstructured, amount=0.5)``
* ``compat``: the same call through ``secateurs.compat.prune`` (one import changed)
* ``engine``: ``secateurs.prune(model, 0.5, scope="global", include_output=True)``

torch needs about 12x the model in extra memory, so it is only run where the estimate fits in
``--torch-budget-gb``, and every case is killed if its resident memory passes the model plus that
budget; a case that does not fit in the memory free right now is recorded as not run rather than
pushing others out.

    python benchmarks/global_prune_memory.py                       # default sizes -> results/global_prune_memory.md
    python benchmarks/global_prune_memory.py --layers 1 2 4        # a quick run
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GB = 1 << 30
#: Extra memory torch.nn.utils.prune needs, in model sizes (measured here: 11.8x); used to skip cases.
TORCH_FACTOR = 12.5
LIBS = ("torch", "compat", "engine")


def status(key: str) -> int:
    """A /proc/self/status value in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise KeyError("MemAvailable")


def build(layers: int, width: int):
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(width, width, bias=False, device="meta") for _ in range(layers)])
    model.to_empty(device="cpu")
    with torch.no_grad():
        for layer in model:
            layer.weight.normal_(0, width**-0.5)
    return model


def prune(lib: str, model) -> None:
    if lib == "engine":
        import secateurs

        secateurs.prune(model, 0.5, scope="global", include_output=True)
        return
    if lib == "torch":
        import torch.nn.utils.prune as library
    else:
        import secateurs.compat.prune as library
    library.global_unstructured([(m, "weight") for m in model], pruning_method=library.L1Unstructured, amount=0.5)


def run_one(lib: str, layers: int, width: int, threads: int) -> dict:
    """The measurement itself, inside the case's own process."""
    import torch

    torch.set_num_threads(threads)
    prune(lib, build(2, 64))  # first-use costs of torch and the library are not the pruning's
    model = build(layers, width)
    params = sum(p.numel() for p in model.parameters())
    gc.collect()
    base = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = time.perf_counter()
    prune(lib, model)
    seconds = time.perf_counter() - start
    extra = status("VmHWM") - base
    weights = [m.weight.detach() for m in model]
    zeros = sum(int(w.numel() - torch.count_nonzero(w)) for w in weights)
    return {"params": params, "model_bytes": params * 4, "seconds": seconds, "extra_bytes": extra, "zeros": zeros}


def rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def run_case(lib: str, layers: int, width: int, threads: int, cap: int) -> dict:
    """Run one case in a subprocess, killed if its resident memory passes ``cap`` (an address-space
    limit would not do: importing torch alone reserves 3 GB of it)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--run-one", lib, str(layers), str(width), str(threads), str(out)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, rss_of(proc.pid))
            if peak > cap:
                proc.kill()
            time.sleep(0.05)
        _, err = proc.communicate()
        if proc.returncode == 0 and out.exists():
            return json.loads(out.read_text())
        if peak > cap:
            return {"error": f"killed: passed the {cap / GB:.0f} GB memory cap"}
        tail = err.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"error": f"failed: {tail[0][:100]}"}


def plan(lib: str, layers: int, width: int, torch_budget: int, margin: int) -> tuple[bool, str]:
    model = layers * width * width * 4
    extra = TORCH_FACTOR * model if lib == "torch" else 0.5 * model
    if lib == "torch" and extra > torch_budget:
        return False, f"over budget: needs ~{extra / GB:.0f} GB extra (> {torch_budget / GB:.0f} GB)"
    free = mem_available()
    if model + extra + margin > free:
        return False, f"not run: needs ~{(model + extra) / GB:.1f} GB, {free / GB:.1f} GB free"
    return True, ""


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as f:
        total = int(next(line for line in f if line.startswith("MemTotal")).split()[1]) * 1024
    return f"{cpu}, {os.cpu_count()} cores, {total / GB:.0f} GB RAM"


def fmt_size(params: int) -> str:
    return f"{params / 1e9:.2f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"


def write_table(rows: list[dict], args: argparse.Namespace, started: str, loads: tuple[str, str], path: Path) -> None:
    import torch

    lines = [
        "# Global L1 pruning to 50%: memory and time",
        "",
        "Command: `" + " ".join(["python benchmarks/global_prune_memory.py", *sys.argv[1:]]) + "`",
        "",
        f"Machine: {machine()}; torch {torch.__version__}; {args.threads} intra-op thread(s) for every case; "
        f"run {started}. Load average at start / end: {loads[0]} / {loads[1]}.",
        "",
        "Model: a stack of `Linear(w, w, bias=False)` layers in fp32. *Extra* is the peak RSS above the resident "
        "model while pruning (`VmHWM` after `/proc/self/clear_refs`), in GiB and in model sizes; secateurs' bool "
        "masks alone are 0.25x. Each case ran in its own process. The machine is shared with other engineers, so "
        "times are noisy (re-run on a quiet machine with the command above); memory is not.",
        "",
        "| params | layers x width | model | library | time (s) | extra (GiB) | extra / model | speed-up vs torch | sparsity |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        size = f"{row['layers']} x {row['width']}"
        model = f"{row['layers'] * row['width'] ** 2 * 4 / GB:.2f} GiB"
        head = f"| {fmt_size(row['layers'] * row['width'] ** 2)} | {size} | {model} | {row['lib']} |"
        if "seconds" not in row:
            lines.append(f"{head} {row.get('error') or row.get('skipped')} | | | | |")
            continue
        torch_row = next((r for r in rows if r["lib"] == "torch" and r["layers"] == row["layers"] and "seconds" in r), None)
        speedup = "" if torch_row is None or row["lib"] == "torch" else f"{torch_row['seconds'] / row['seconds']:.0f}x"
        lines.append(
            f"{head} {row['seconds']:.1f} | {row['extra_bytes'] / GB:.2f} | {row['extra_bytes'] / row['model_bytes']:.2f}x "
            f"| {speedup} | {row['zeros'] / row['params']:.3f} |"
        )
    lines += ["", *summary(rows), ""]
    tmp = path.with_suffix(".md.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)


def summary(rows: list[dict]) -> list[str]:
    """The issue's targets, checked against this run."""
    ours = [r for r in rows if r["lib"] != "torch" and "seconds" in r]
    if not ours:
        return ["No secateurs case ran."]
    worst = max(ours, key=lambda r: r["extra_bytes"] / r["model_bytes"])
    biggest = max(ours, key=lambda r: r["params"])
    speedups = []
    for row in ours:
        theirs = next((r for r in rows if r["lib"] == "torch" and r["layers"] == row["layers"] and "seconds" in r), None)
        if theirs:
            speedups.append((theirs["seconds"] / row["seconds"], theirs["extra_bytes"] / row["extra_bytes"], row))
    out = [
        "Targets (issue 2):",
        f"- extra memory <= 0.3x the model: worst secateurs case {worst['extra_bytes'] / worst['model_bytes']:.2f}x "
        f"({worst['lib']}, {fmt_size(worst['params'])} params)",
    ]
    if speedups:
        low = min(speedups, key=lambda s: s[0])
        out.append(
            f"- >= 10x faster than torch: slowest ratio {low[0]:.0f}x ({low[2]['lib']}, {fmt_size(low[2]['params'])}); "
            f"torch needed {min(s[1] for s in speedups):.0f}-{max(s[1] for s in speedups):.0f}x secateurs' extra memory"
        )
    out.append(f"- a 2B-parameter fp32 model pruned globally: largest secateurs case {fmt_size(biggest['params'])} params "
               f"in {biggest['seconds']:.0f} s with {biggest['extra_bytes'] / GB:.1f} GiB extra")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 30], help="stack depths to measure")
    parser.add_argument("--width", type=int, default=8192, help="each layer is width x width (default 8192: 67M params)")
    parser.add_argument("--libs", nargs="+", choices=LIBS, default=list(LIBS))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in every case (default 1: steadier on a shared machine)")
    parser.add_argument("--torch-budget-gb", type=float, default=16.0, help="skip torch cases whose estimated extra memory exceeds this")
    parser.add_argument("--margin-gb", type=float, default=2.0, help="memory to leave free for others")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "global_prune_memory.md")
    parser.add_argument("--run-one", nargs=5, metavar=("LIB", "LAYERS", "WIDTH", "THREADS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        lib, layers, width, threads, out = args.run_one
        Path(out).write_text(json.dumps(run_one(lib, int(layers), int(width), int(threads))))
        return

    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    load_start = f"{os.getloadavg()[0]:.1f}"
    rows = []
    for layers in args.layers:
        for lib in args.libs:
            row = {"lib": lib, "layers": layers, "width": args.width}
            ok, why = plan(lib, layers, args.width, int(args.torch_budget_gb * GB), int(args.margin_gb * GB))
            if ok:
                model = layers * args.width**2 * 4
                cap = int(model + (args.torch_budget_gb * GB if lib == "torch" else model) + 3 * GB)
                row.update(run_case(lib, layers, args.width, args.threads, cap))
            else:
                row["skipped"] = why
            rows.append(row)
            done = f"{row['seconds']:.1f} s, extra {row['extra_bytes'] / row['model_bytes']:.2f}x" if "seconds" in row else row.get("error") or row.get("skipped")
            print(f"{lib:>7} {fmt_size(layers * args.width ** 2):>6}: {done}", flush=True)
    load_end = f"{os.getloadavg()[0]:.1f}"
    write_table(rows, args, started, (load_start, load_end), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
