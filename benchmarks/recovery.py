"""Recovery after pruning on MNIST-1D: one-shot, one-shot + fine-tune, iterative and gradual, as a Markdown table.

Two models: the demo's CNN (``secateurs.demo``: 3 convolutions and 2 linear layers; a stand-in of 3
convolutions and a linear classifier when the demo is not installed) and a deeper 1-D ResNet
(stem + 6 basic blocks, 16/32/64 channels) trained here. Each is trained dense once; then every
schedule gets the same fine-tuning budget (``--epochs``, AdamW, cosine learning rate) at 50/75/90%
unstructured sparsity (global magnitude) and 30/50/70% of channels removed (L2 filters, each layer on its
own, physically removed between cycles when ``secateurs.structural`` is available).

"Recovered" is the share of the accuracy lost to one-shot pruning at that sparsity that a schedule wins
back: ``(final - one_shot) / (dense - one_shot)``; above 100% means it ends better than dense.

The baseline of issue 5 is reproduced in the same run with ``torch.nn.utils.prune`` masks on the CNN and
the same 10-epoch AdamW fine-tuning: L2-structured 50% and 70% of filters, L1-unstructured 90% per layer.

    nice python benchmarks/recovery.py                   # full table -> benchmarks/results/recovery.md
    nice python benchmarks/recovery.py --quick           # 2 epochs, one sparsity each: a smoke test
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

import torch
import torch.nn.functional as F
from torch import nn

from secateurs import select
from secateurs.recovery import evaluate, fit, recover, recovered_fraction

HERE = Path(__file__).resolve().parent
UNSTRUCTURED = (0.5, 0.75, 0.9)
STRUCTURED = (0.3, 0.5, 0.7)
SCHEDULES = ("oneshot", "iterative", "gradual")


# ---- data and models --------------------------------------------------------------------------------


def load_mnist1d() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The packaged loader when present, else the mnist1d package directly (generated locally, no download)."""
    try:
        from secateurs.datasets import load_dataset

        data = load_dataset("mnist1d")
        return (data.x_train, data.y_train), (data.x_test, data.y_test)
    except ImportError:
        from mnist1d.data import get_dataset_args, make_dataset

        raw = make_dataset(get_dataset_args())
        as_x = lambda a: torch.tensor(a, dtype=torch.float32).unsqueeze(1)  # noqa: E731
        return (as_x(raw["x"]), torch.tensor(raw["y"]).long()), (as_x(raw["x_test"]), torch.tensor(raw["y_test"]).long())


def cnn3() -> nn.Module:
    """3 convolutions + linear classifier, as the issue's baseline describes."""
    return nn.Sequential(
        nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(),
        nn.Conv1d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 10, 10),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.shortcut = (
            nn.Identity() if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv1d(cin, cout, 1, stride, bias=False), nn.BatchNorm1d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet1d(width: int = 16) -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(1, width, 3, 1, 1, bias=False), nn.BatchNorm1d(width), nn.ReLU(),
        BasicBlock(width, width, 1), BasicBlock(width, width, 1),
        BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 2 * width, 1),
        BasicBlock(2 * width, 4 * width, 2), BasicBlock(4 * width, 4 * width, 1),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4 * width, 10),
    )


def demo_cnn() -> tuple[nn.Module, str] | None:
    """The demo's CNN architecture for MNIST-1D (untrained; trained here with the benchmark's recipe)."""
    try:
        from secateurs.datasets import load_dataset
        from secateurs.demo import build_model
    except ImportError:
        return None
    return build_model(load_dataset("mnist1d")), "demo CNN (3 conv + 2 linear)"


# ---- runs ---------------------------------------------------------------------------------------------


def structural_available() -> bool:
    try:
        from secateurs import structural
    except ImportError:
        return False
    return hasattr(structural, "shrink")


def train_dense(model: nn.Module, train, test, epochs: int, seed: int) -> tuple[float, float]:
    torch.manual_seed(seed)
    result = fit(model, train, epochs=epochs, lr=3e-3, weight_decay=0.01, batch_size=64, seed=seed, eval_data=test)
    per_epoch = sum(log.seconds for log in result.history) / len(result.history)
    return evaluate(model, test), per_epoch


def run_schedule(dense: nn.Module, train, test, *, schedule: str, amount: float, structured: bool, shrink: bool,
                 epochs: int, seed: int, distill: bool = False) -> dict:
    model = copy.deepcopy(dense)
    options = dict(method="l2", pattern="channel", scope="local") if structured else dict(method="magnitude", scope="global")
    started = time.perf_counter()
    result = recover(
        model, train, test, amount=amount, epochs=epochs, schedule=schedule, seed=seed, batch_size=64,
        lr=3e-3, weight_decay=0.01, shrink=structured and shrink, example_inputs=test[0][:2] if shrink else None,
        distill=distill, **options,
    )
    row = result.to_dict()
    row["wall"] = time.perf_counter() - started
    row["epoch_first"] = result.history[0].seconds if result.history else None
    row["epoch_last"] = result.history[-1].seconds if result.history else None
    return row


def torch_prune_baseline(dense: nn.Module, train, test, epochs: int, seed: int) -> list[dict]:
    """Issue 5's baseline: torch.nn.utils.prune masks, then the same AdamW fine-tuning."""
    import torch.nn.utils.prune as tprune

    rows = []
    for label, apply in (
        ("L2-structured 50% of filters", lambda m: tprune.ln_structured(m, "weight", amount=0.5, n=2, dim=0)),
        ("L2-structured 70% of filters", lambda m: tprune.ln_structured(m, "weight", amount=0.7, n=2, dim=0)),
        ("L1-unstructured 90% per layer", lambda m: tprune.l1_unstructured(m, "weight", amount=0.9)),
    ):
        model = copy.deepcopy(dense)
        for target in select(model).targets:  # the layers secateurs prunes by default: all but the classifier
            apply(target.module)
        pruned = evaluate(model, test)
        started = time.perf_counter()
        fit(model, train, epochs=epochs, lr=3e-3, weight_decay=0.01, batch_size=64, seed=seed)
        rows.append({"label": label, "pruned": pruned, "finetuned": evaluate(model, test), "wall": time.perf_counter() - started})
    return rows


# ---- report -------------------------------------------------------------------------------------------


def pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}"


def model_table(name: str, dense: float, epoch_dense: float, rows: dict, shrunk: bool) -> list[str]:
    lines = [
        f"### {name}: dense {pct(dense)}%, {epoch_dense:.2f} s/epoch dense",
        "",
        "| pattern | sparsity | one-shot | one-shot + FT | iterative | gradual | recovered (FT / it. / gr.) | wall s (FT / it. / gr.) | s/epoch first -> last (gr.) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (pattern, amount), runs in rows.items():
        oneshot = runs["oneshot"]["accuracy_pruned"]
        finals = [runs[s]["accuracy_finetuned"] for s in SCHEDULES]
        recovered = [recovered_fraction(dense, oneshot, f) for f in finals]
        walls = [runs[s]["wall"] for s in SCHEDULES]
        gradual = runs["gradual"]
        label = "unstructured (global)" if pattern == "unstructured" else ("channels, shrunk" if shrunk else "channels, masked")
        lines.append(
            f"| {label} | {amount:.0%} | {pct(oneshot)} | {pct(finals[0])} | {pct(finals[1])} | {pct(finals[2])} | "
            + " / ".join(f"{pct(r, 0)}%" for r in recovered)
            + " | " + " / ".join(f"{w:.0f}" for w in walls)
            + f" | {gradual['epoch_first']:.2f} -> {gradual['epoch_last']:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning budget of every schedule (default 10)")
    parser.add_argument("--dense-epochs", type=int, default=30, help="dense training epochs (default 30)")
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet"], choices=["cnn", "resnet"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    parser.add_argument("--no-shrink", action="store_true", help="structured runs keep masks instead of removing channels")
    parser.add_argument("--distill", action="store_true", help="also run gradual + distillation at the highest sparsities")
    parser.add_argument("--quick", action="store_true", help="2 epochs, one sparsity of each kind: a smoke test")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "recovery.md")
    parser.add_argument("--json", type=Path, help="also write every number as JSON here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs, args.dense_epochs = 2, 3
    unstructured = (0.9,) if args.quick else UNSTRUCTURED
    structured = (0.7,) if args.quick else STRUCTURED
    shrink = not args.no_shrink and structural_available()
    train, test = load_mnist1d()
    started = time.perf_counter()
    report: dict = {"models": {}}
    sections: list[str] = []

    for key in args.models:
        torch.manual_seed(args.seed)
        if key == "cnn":
            found = demo_cnn()
            model, name = found if found else (cnn3(), "3-layer 1-D CNN")
        else:
            model, name = resnet1d(), "1-D ResNet (6 basic blocks)"
        dense_acc, epoch_dense = train_dense(model, train, test, args.dense_epochs, args.seed)
        print(f"{name}: dense {dense_acc:.2%}", flush=True)
        rows: dict = {}
        for pattern, amounts in (("unstructured", unstructured), ("channel", structured)):
            for amount in amounts:
                runs = {}
                for schedule in SCHEDULES:
                    runs[schedule] = run_schedule(model, train, test, schedule=schedule, amount=amount,
                                                  structured=pattern == "channel", shrink=shrink, epochs=args.epochs, seed=args.seed)
                    print(f"  {pattern} {amount:.0%} {schedule}: pruned {runs[schedule]['accuracy_pruned']:.2%} "
                          f"-> {runs[schedule]['accuracy_finetuned']:.2%} ({runs[schedule]['wall']:.0f}s)", flush=True)
                if args.distill and amount == max(amounts):
                    runs["gradual+kd"] = run_schedule(model, train, test, schedule="gradual", amount=amount,
                                                      structured=pattern == "channel", shrink=shrink, epochs=args.epochs,
                                                      seed=args.seed, distill=True)
                    print(f"  {pattern} {amount:.0%} gradual+kd: {runs['gradual+kd']['accuracy_finetuned']:.2%}", flush=True)
                rows[(pattern, amount)] = runs
        sections += model_table(name, dense_acc, epoch_dense, rows, shrink) + [""]
        report["models"][key] = {
            "name": name, "dense": dense_acc, "epoch_dense": epoch_dense,
            "runs": {f"{p}:{a}": {s: {k: v for k, v in r.items() if k != "events"} for s, r in runs.items()} for (p, a), runs in rows.items()},
        }
        if key == "cnn":
            baseline = torch_prune_baseline(model, train, test, args.epochs, args.seed)
            report["baseline"] = {"dense": dense_acc, "rows": baseline}
            sections += [
                f"### Baseline: torch.nn.utils.prune + {args.epochs} epochs AdamW, same CNN (dense {pct(dense_acc)}%)",
                "",
                "| pruning | after pruning | after fine-tuning | recovered | issue 5's figure |",
                "| --- | ---: | ---: | ---: | --- |",
            ]
            quoted = ["98% recovered", "91% recovered", "43% recovered (45.9%)"]
            for row, figure in zip(baseline, quoted):
                rec = recovered_fraction(dense_acc, row["pruned"], row["finetuned"])
                sections.append(f"| {row['label']} | {pct(row['pruned'])} | {pct(row['finetuned'])} | {pct(rec, 0)}% | {figure} |")
            sections.append("")
        if args.distill:
            for (pattern, amount), runs in rows.items():
                if "gradual+kd" in runs:
                    sections.append(f"- {name}, {pattern} {amount:.0%}: gradual + distillation ends at "
                                    f"{pct(runs['gradual+kd']['accuracy_finetuned'])}% (gradual alone {pct(runs['gradual']['accuracy_finetuned'])}%)")
            sections.append("")

    verdicts = targets(report)
    total = time.perf_counter() - started
    header = [
        "# Recovery after pruning (MNIST-1D)",
        "",
        f"Command: `nice python benchmarks/recovery.py {' '.join(sys.argv[1:])}`",
        "",
        f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores shared with other work, torch {torch.__version__}, "
        f"{args.threads} thread(s); total {total / 60:.1f} min. Timings are noisy (shared machine): re-run on a quiet one.",
        "",
        f"Fine-tuning budget: {args.epochs} epochs for every schedule (AdamW, lr 3e-3 cosine, weight decay 0.01, batch 64). "
        "Iterative: up to 5 equal rounds at epoch boundaries over the first 60% of the budget; gradual: cubic "
        "(Zhu & Gupta) over the first 60% of the steps, ~20 events. One-shot is the accuracy right after pruning, "
        "before any fine-tuning. Structured runs "
        + ("remove channels physically (secateurs.structural) at each event." if shrink else
           "keep masks (secateurs.structural was not available): per-epoch times do not change."),
        "",
    ]
    text = "\n".join(header + verdicts + [""] + sections)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    print(text)


def targets(report: dict) -> list[str]:
    """Issue 5's targets, checked on the CNN (where the baseline was measured) and the ResNet."""
    lines = ["## Targets", ""]
    for key, model in report["models"].items():
        dense = model["dense"]
        runs = model["runs"]
        if "unstructured:0.9" in runs:
            final = runs["unstructured:0.9"]["gradual"]["accuracy_finetuned"]
            ok = final >= dense - 0.01
            lines.append(f"- {model['name']}: gradual 90% unstructured ends at {pct(final)}% vs dense {pct(dense)}% "
                         f"({'met' if ok else 'NOT met'}: within 1 point)")
        if "channel:0.7" in runs:
            cell = runs["channel:0.7"]
            oneshot = cell["oneshot"]["accuracy_pruned"]
            best = max(SCHEDULES, key=lambda s: cell[s]["accuracy_finetuned"])
            rec = recovered_fraction(dense, oneshot, cell[best]["accuracy_finetuned"])
            lines.append(f"- {model['name']}: 70% of channels, best schedule ({best}) recovers {pct(rec, 0)}% of the one-shot loss "
                         f"({'met' if rec is not None and rec >= 0.98 else 'NOT met'}: >= 98%)")
    return lines


if __name__ == "__main__":
    main()
