"""Perplexity of a small character-level GPT on held-out tinyshakespeare, dense and pruned.

The first run trains the model (GPT-2 architecture from transformers, 4 blocks of width 256, about
12 minutes on 2 CPU cores) and caches it under ``$SECATEURS_CACHE`` (default ``benchmarks/.cache``);
later runs load it. Text: the first 90% of ``input.txt`` trains (and calibrates), the last 10% is held out.

    python benchmarks/gpt_shakespeare.py                # train if needed, then the table
    python benchmarks/gpt_shakespeare.py --train-only   # just build the cache
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_TEXT = HERE.parent.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"

#: The training recipe; its hash names the cache entry, so changing it retrains.
RECIPE = {
    "n_layer": 4,
    "n_embd": 256,
    "n_head": 4,
    "context": 128,
    "batch": 32,
    "steps": 800,
    "lr": 2e-3,
    "min_lr": 1e-4,
    "warmup": 40,
    "weight_decay": 0.1,
    "dropout": 0.1,
    "train_fraction": 0.9,
    "seed": 0,
}


def cache_dir() -> Path:
    root = os.environ.get("SECATEURS_CACHE")
    return Path(root) if root else HERE / ".cache"


def load_text(path: Path) -> str:
    if not path.is_file():
        sys.exit(f"no text at {path}; pass --text PATH to tinyshakespeare's input.txt")
    return path.read_text(encoding="utf-8")


def encode(text: str, vocab: str) -> torch.Tensor:
    index = {ch: i for i, ch in enumerate(vocab)}
    return torch.tensor([index[ch] for ch in text], dtype=torch.long)


def split(text: str, vocab: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and held-out token streams: the first ``train_fraction`` of the text, and the rest."""
    cut = int(len(text) * RECIPE["train_fraction"])
    return encode(text[:cut], vocab), encode(text[cut:], vocab)


def build_model(vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=RECIPE["context"],
        n_embd=RECIPE["n_embd"],
        n_layer=RECIPE["n_layer"],
        n_head=RECIPE["n_head"],
        resid_pdrop=RECIPE["dropout"],
        embd_pdrop=RECIPE["dropout"],
        attn_pdrop=RECIPE["dropout"],
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def learning_rate(step: int) -> float:
    """Linear warm-up, then cosine decay to ``min_lr``."""
    if step < RECIPE["warmup"]:
        return RECIPE["lr"] * (step + 1) / RECIPE["warmup"]
    progress = (step - RECIPE["warmup"]) / max(1, RECIPE["steps"] - RECIPE["warmup"])
    return RECIPE["min_lr"] + 0.5 * (RECIPE["lr"] - RECIPE["min_lr"]) * (1 + math.cos(math.pi * progress))


def train(text: str, destination: Path) -> None:
    from tqdm import tqdm

    torch.manual_seed(RECIPE["seed"])
    vocab = "".join(sorted(set(text)))
    train_ids, _ = split(text, vocab)
    model = build_model(len(vocab))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": RECIPE["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=RECIPE["lr"],
        betas=(0.9, 0.95),
    )
    generator = torch.Generator().manual_seed(RECIPE["seed"])
    context, batch = RECIPE["context"], RECIPE["batch"]
    model.train()
    progress = tqdm(range(RECIPE["steps"]), desc="training GPT", unit="step")
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        starts = torch.randint(0, len(train_ids) - context - 1, (batch,), generator=generator)
        window = torch.stack([train_ids[s : s + context] for s in starts.tolist()])
        loss = model(input_ids=window, labels=window).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 20 == 0:
            progress.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=".tmp-gpt-"))
    try:
        model.save_pretrained(staging)
        (staging / "vocab.json").write_text(json.dumps({"vocab": vocab, "recipe": RECIPE}), encoding="utf-8")
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def model_path(text: str) -> Path:
    key = hashlib.sha256((json.dumps(RECIPE, sort_keys=True) + hashlib.sha256(text.encode()).hexdigest()).encode())
    return cache_dir() / f"gpt-shakespeare-{key.hexdigest()[:12]}"


def load_model(text: str):
    """The cached model and its vocabulary, training it first when the cache has none."""
    from transformers import GPT2LMHeadModel

    path = model_path(text)
    if not (path / "vocab.json").is_file():
        print(f"no cached model at {path}: training one (about 12 minutes on 2 cores)", file=sys.stderr)
        train(text, path)
    vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    model = GPT2LMHeadModel.from_pretrained(path)
    model.eval()
    return model, vocab


def perplexity(model, ids: torch.Tensor, context: int, batch: int = 32) -> float:
    """exp(mean next-character loss) over non-overlapping windows of the held-out stream."""
    usable = (ids.numel() // context) * context
    windows = ids[:usable].view(-1, context)
    total, count = 0.0, 0
    with torch.no_grad():
        for chunk in windows.split(batch):
            logits = model(input_ids=chunk).logits[:, :-1]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum")
            total += float(loss)
            count += chunk[:, 1:].numel()
    return math.exp(total / count)


def calibration_windows(train_ids: torch.Tensor, samples: int, context: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, train_ids.numel() - context, (samples,), generator=generator)
    return torch.stack([train_ids[s : s + context] for s in starts.tolist()])


METHODS = ("magnitude", "wanda", "sparsegpt")
COLUMNS = ("50", "2:4", "4:8")


def prune_copy(dense, method: str, column: str, calibration: torch.Tensor):
    import copy

    from secateurs.data import prune_with_data

    model = copy.deepcopy(dense)
    options = {"granularity": column} if ":" in column else {"amount": int(column) / 100}
    start = time.perf_counter()
    report = prune_with_data(model, calibration if method != "magnitude" else None, method=method, progress=False, **options)
    return model, time.perf_counter() - start, report.sparsity


def outlier_spread(model, calibration: torch.Tensor) -> float:
    """Median over the pruned layers of (largest input-feature RMS / median input-feature RMS)."""
    from secateurs.data import collect_input_statistics
    from secateurs.data.sequential import find_blocks

    _, blocks = find_blocks(model)
    layers = [m for m in blocks.modules() if hasattr(m, "weight") and getattr(m.weight, "dim", lambda: 0)() == 2]
    stats = collect_input_statistics(model, calibration, layers)
    spreads = torch.tensor([float(stats.input_rms(m).max() / stats.input_rms(m).median()) for m in layers])
    return float(spreads.median())


def reading(results: dict, columns: list[str], spread: float) -> str:
    """The ordering per column, and why Wanda may sit close to magnitude here."""
    orders = []
    for column in columns:
        ranked = sorted(METHODS, key=lambda m: results[f"{m}_{column}"]["ppl"])
        orders.append(f"{column if ':' in column else column + '%'}: " + " < ".join(ranked))
    text = "Reading (lower perplexity first): " + "; ".join(orders) + "."
    gaps = [
        (results[f"magnitude_{c}"]["ppl"] - results[f"wanda_{c}"]["ppl"],
         results[f"magnitude_{c}"]["ppl"] - results[f"sparsegpt_{c}"]["ppl"])
        for c in columns
    ]
    if any(wanda < 0.5 * sparsegpt for wanda, sparsegpt in gaps):
        text += (
            " Wanda gains less over magnitude here than the LLaMA results suggest: its advantage comes from the "
            "few input features with very large activations that emerge in large language models (up to about 20x "
            "the rest from about 6B parameters, Dettmers et al. 2022), which make |W|·‖X‖ rank weights very differently from |W|. "
            "This 3M-parameter character model trained for minutes has no such outliers: in the median pruned "
            f"layer the largest input feature's RMS is only {spread:.1f}x the median feature's (measured on the "
            "calibration set), so Wanda's ranking stays close to magnitude's. SparseGPT still wins clearly "
            "because it also updates the kept weights to reconstruct each layer's output."
        )
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT, help="tinyshakespeare input.txt")
    parser.add_argument("--train-only", action="store_true", help="build the cached model and stop")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--samples", type=int, default=128, help="calibration windows of the context length (default 128)")
    parser.add_argument("--columns", nargs="+", default=list(COLUMNS), help="sparsity %% or N:M (default 50 2:4 4:8)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "gpt_shakespeare.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    text = load_text(args.text)
    dense, vocab = load_model(text)
    if args.train_only:
        return
    train_ids, held_out = split(text, vocab)
    context = RECIPE["context"]
    calibration = calibration_windows(train_ids, args.samples, context)
    results: dict[str, dict] = {"dense": {"ppl": perplexity(dense, held_out, context)}}
    print(f"dense: {results['dense']['ppl']:.3f}", file=sys.stderr)
    for method in METHODS:
        for column in args.columns:
            model, seconds, sparsity = prune_copy(dense, method, column, calibration)
            name = f"{method}_{column}"
            results[name] = {"ppl": perplexity(model, held_out, context), "seconds": seconds, "sparsity": sparsity}
            print(f"{name}: {results[name]['ppl']:.3f} ({seconds:.1f} s)", file=sys.stderr)

    command = "python benchmarks/gpt_shakespeare.py " + " ".join(argv if argv is not None else sys.argv[1:])
    heads = [f"{c}%" if ":" not in c else c for c in args.columns]
    lines = [
        "# Small GPT on tinyshakespeare: held-out perplexity after pruning",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()} CPU, {args.threads} threads (torch {torch.__version__}); shared with other "
        "jobs, so times are indicative.  ",
        f"Model: GPT-2 architecture, {RECIPE['n_layer']} blocks, width {RECIPE['n_embd']}, {RECIPE['n_head']} heads, "
        f"context {context}, character vocabulary of {len(vocab)}; trained {RECIPE['steps']} steps of "
        f"{RECIPE['batch']} x {context} characters on the first 90% of the text.  ",
        f"Held out: the last 10% ({held_out.numel():,} characters), perplexity per character. Calibration: "
        f"{args.samples} windows of {context} characters from the training part, the same for every method. "
        "Pruned: every Linear/Conv1D in the blocks (embeddings and the tied output layer are kept).",
        "",
        "| method | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(heads),
        f"| dense | {results['dense']['ppl']:.3f} |" + " |" * (len(heads) - 1),
    ]
    for method in METHODS:
        cells = [f"{results[f'{method}_{c}']['ppl']:.3f}" for c in args.columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", reading(results, args.columns, outlier_spread(dense, calibration))]
    lines += ["", "| run | sparsity | seconds |", "|---|---|---|"]
    lines += [f"| {n} | {r['sparsity']:.3f} | {r['seconds']:.1f} |" for n, r in results.items() if n != "dense"]
    table = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_suffix(".tmp")
    temporary.write_text(table, encoding="utf-8")
    os.replace(temporary, args.output)
    if args.json:
        print(json.dumps({name: round(r["ppl"], 4) for name, r in results.items()}, indent=1))
    else:
        print(table)


if __name__ == "__main__":
    main()
