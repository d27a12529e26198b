"""Prune options that contradict each other, refused before any slow work (loading, measuring)."""

from __future__ import annotations

import argparse
from pathlib import Path

from secateurs.core.patterns import NM, parse_pattern
from secateurs.data import available_methods, check_calibration_source
from secateurs.data.methods import Needs, get_method
from secateurs.recipes.arguments import UNIT_GRANULARITIES
from secateurs.recipes.commands import check_eval_samples
from secateurs.recipes.errors import OptionError
from secateurs.sources import check_spec
from secateurs.storage import check_output_dir
from secateurs.streaming import (
    Checkpoint,
    CheckpointError,
    in_memory_peak,
    needs_streaming,
)
from secateurs.streaming import memory as streaming_memory
from secateurs.streaming.checkpoint import INDEX_FILE
from secateurs.streaming.writer import STATE_DIR

#: Granularities ``--shrink`` removes physically (secateurs.structural.shrink).
SHRINK_GRANULARITIES = ("channel", *UNIT_GRANULARITIES)


def uses_data(args: argparse.Namespace) -> bool:
    """Whether pruning reads calibration data: a data-aware method, or OWL's sparsity per block."""
    return args.method in available_methods() or args.allocation == "owl"


def _fixed_sparsity(granularity: str) -> NM | None:
    """The N:M pattern when ``granularity`` is one: it fixes the sparsity, so no --amount goes with it."""
    if granularity in UNIT_GRANULARITIES:
        return None
    pattern = parse_pattern(granularity)
    return pattern if isinstance(pattern, NM) else None


def check_request(args: argparse.Namespace, *, check_model: bool = True) -> None:
    """Refuse contradictory options, a model spec that names nothing (unless ``check_model`` is false: a model
    already loaded), and an output directory that may not be written, before any slow work (loading included)."""
    if check_model:
        check_spec(args.model, args.input_shape)
    _check_amount(args)
    _check_shrink(args)
    _check_calibration(args)
    _check_finetune(args)
    check_eval_samples(args)
    if args.out is not None and not args.stream:  # a streamed run's output is checked by check_stream_request
        check_output_dir(args.out, args.overwrite)


def _check_amount(args: argparse.Namespace) -> None:
    pattern = _fixed_sparsity(args.granularity)
    if pattern is None:
        if args.amount is None and args.target is None and args.max_drop is None:  # a target chooses amounts
            raise OptionError("amount", "give --amount (e.g. --amount 0.5), or an N:M --granularity such as 2:4")
        return
    if args.amount is not None:
        raise OptionError("granularity",
            f"--granularity {args.granularity} fixes the sparsity at {1 - pattern.n / pattern.m:.0%}; drop --amount"
        )
    if args.scope == "global":
        raise OptionError("scope", "N:M pruning is decided within each block of M weights; use --scope local")


def _check_shrink(args: argparse.Namespace) -> None:
    streamed_depth = args.stream and args.granularity == "layer"  # blocks left out of the written checkpoint
    if args.granularity in UNIT_GRANULARITIES and not args.shrink and not streamed_depth:
        raise OptionError("granularity", f"--granularity {args.granularity} removes whole units physically: add --shrink")
    if (args.prune_normalized or args.round_to or args.scored_by) and not args.shrink:
        raise OptionError("prune_normalized", "--prune-normalized, --round-to and --scored-by shape physical removal: add --shrink")
    if not args.shrink:
        return
    if args.granularity not in SHRINK_GRANULARITIES:
        raise OptionError("shrink", f"--shrink removes channels, heads or layers: use --granularity {', '.join(SHRINK_GRANULARITIES)}")
    if args.include:
        raise OptionError("shrink",
            "--shrink follows coupled channels through the whole model: drop --include, keep layers whole with --exclude MODULE"
        )
    if args.method == "sparsegpt":
        raise OptionError("method", "SparseGPT prunes weights inside rows; to remove units use --method activation, wanda or taylor")
    if args.allocation == "owl":
        raise OptionError("allocation", "--allocation owl sets unstructured sparsity per block; drop it with --shrink")


def _check_calibration(args: argparse.Namespace) -> None:
    if uses_data(args) and args.calibration is None:
        raise OptionError("method", f"--method {args.method} needs calibration data: add --calibration english, a text file, or train")
    if args.calibration is not None and not uses_data(args):
        raise OptionError("method", f"--method {args.method} reads no calibration data; drop --calibration or use --method wanda")
    if args.calibration not in (None, "train"):
        check_calibration_source(args.calibration, tokenizer=args.tokenizer)


def _check_finetune(args: argparse.Namespace) -> None:
    if not args.finetune:
        if args.schedule != "oneshot" or args.distill or args.checkpoint_dir:
            raise OptionError("schedule", "--schedule, --distill and --checkpoint-dir shape fine-tuning: give --finetune EPOCHS too")
        return
    if uses_data(args):
        raise OptionError("finetune",
            "--finetune prunes with data-free criteria on its schedule; prune with --method "
            f"{args.method} first (--out DIR), then fine-tune from Python (secateurs.recovery)"
        )
    if args.shrink and args.granularity != "channel":
        raise OptionError("finetune", "--finetune with --shrink removes channels between cycles: use --granularity channel")
    if _fixed_sparsity(args.granularity) and args.schedule != "oneshot":
        raise OptionError("schedule", "N:M fixes the sparsity of every block at once: use --schedule oneshot with --finetune")


# ---- streaming (--stream, --max-memory, --activations-dtype) ----------------------------------------


def checkpoint_directory(model: str) -> Path | None:
    """The directory of an ``hf:DIR`` model spec; None for any other source."""
    return Path(model[len("hf:") :]).expanduser() if model.startswith("hf:") else None


def _size(size: int) -> str:
    """A size in GiB, or MiB below one GiB."""
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def _in_memory_need(args: argparse.Namespace) -> tuple[int, int] | None:
    """Bytes pruning the model in memory is expected to take, and its checkpoint's size; None without a
    safetensors ``hf:DIR`` checkpoint to read the sizes from."""
    directory = checkpoint_directory(args.model)
    if directory is None:
        return None
    try:
        size = Checkpoint(directory).nbytes()
    except CheckpointError:
        return None
    return in_memory_peak(size), size


def streaming_reason(args: argparse.Namespace) -> str | None:
    """Why the model must be streamed: pruning its ``hf:DIR`` checkpoint in memory would need more than the
    memory available now (or --max-memory); None when it fits, or when it is no safetensors checkpoint."""
    need = _in_memory_need(args)
    if need is None:
        return None
    limit, what = streaming_memory.available_memory(), "available"
    if args.max_memory is not None and args.max_memory < limit:
        limit, what = args.max_memory, "that --max-memory allows"
    if not needs_streaming(need[1], limit):
        return None
    return (f"pruning {args.model} in memory would need about {_size(need[0])} "
            f"({streaming_memory.IN_MEMORY_FACTOR}x its {_size(need[1])} checkpoint), more than the {_size(limit)} {what}")  # fmt: skip


def check_in_memory_request(args: argparse.Namespace) -> None:
    """Refuse the streaming options in a run that loads the model: --activations-dtype, and a --max-memory the
    in-memory run would exceed (or cannot be checked against)."""
    if args.activations_dtype is not None:
        raise OptionError("activations_dtype", "--activations-dtype shapes a streamed run: add --stream, or drop it")
    if args.max_memory is None:
        return
    need = _in_memory_need(args)
    if need is None:
        raise OptionError("max_memory",
            f"--max-memory is checked against an hf:DIR safetensors checkpoint's size; {args.model} is none: drop --max-memory"
        )  # fmt: skip
    if need[0] > args.max_memory:
        raise OptionError("max_memory",
            f"pruning {args.model} in memory would need about {_size(need[0])}, more than --max-memory {_size(args.max_memory)}: "
            "stream it block by block (--stream) or raise --max-memory"
        )  # fmt: skip


def streamed_methods() -> list[str]:
    """The --method names a streamed run takes: those that prune block by block (no gradients through the model)."""
    return [name for name in ("magnitude", *available_methods()) if get_method(name).needs is not Needs.GRADIENTS]


def check_stream_request(args: argparse.Namespace, *, in_recipe: bool = False) -> None:
    """Refuse, before anything is read but headers, what a streamed run cannot do."""
    if in_recipe:
        raise OptionError("stream", "streaming reads a checkpoint from disk, and a recipe's model is already in "
                          "memory: drop it here, and stream the checkpoint with the command secateurs prune")  # fmt: skip
    directory = checkpoint_directory(args.model)
    if directory is None:
        raise OptionError("stream", f"--stream reads a Hugging Face safetensors checkpoint: give MODEL as hf:DIR, not {args.model}")
    try:
        checkpoint = Checkpoint(directory)
    except CheckpointError as exc:
        raise OptionError("model", f"--stream: {exc}") from None
    refusals = _stream_refusals(args) or (_stream_depth_refusals(args) if args.granularity == "layer" else {})
    if refusals:
        raise OptionError(*next(iter(refusals.items())))
    _check_stream_output(args, checkpoint)


def _stream_refusals(args: argparse.Namespace) -> dict[str, str]:
    """What --stream refuses in ``args``, keyed by the option to change; empty when all is well."""
    methods = streamed_methods()
    gradients = " (it needs gradients through the whole model)" if args.method in available_methods() else ""
    refusals = {
        "out": (args.out is None, "--stream writes each block as soon as it is pruned: add --out DIR"),
        "shrink": (args.shrink, (
            "--shrink removes units across the whole model, and --stream holds one block at a time: drop --shrink or --stream"
        )),
        "finetune": (bool(args.finetune), (
            "--finetune trains the whole model, which --stream never holds: prune with --stream, then fine-tune the output"
        )),
        "target": (args.target is not None or args.max_drop is not None, (
            "--target and --max-drop measure the whole model to choose each layer's amount, which --stream cannot: give --amount"
        )),
        "method": (args.method not in methods, f"--stream prunes with --method {', '.join(methods)}, not {args.method}{gradients}"),
        "scope": (args.scope == "global", (
            "--scope global ranks every layer of the model at once, and --stream sees one block at a time: use --scope row or local"
        )),
        "format": (args.format == "both", "--stream writes one set of shards: --format dense (loads with from_pretrained) or sparse"),
        "calibration": (args.calibration == "train", (
            "--calibration train: the CLI knows no training data for an hf: checkpoint; give the task's own data "
            "(csv:FILE:COLUMN...), a text file or english"
        )),
    }  # fmt: skip
    return {key: message for key, (refused, message) in refusals.items() if refused}


def _stream_depth_refusals(args: argparse.Namespace) -> dict[str, str]:
    """What --stream --granularity layer (whole blocks left out by their influence) refuses, by option."""
    refusals = {
        "method": (not uses_data(args), (
            "--granularity layer ranks blocks by their influence on calibration data (1 - cos of each block's input "
            "and output, whichever data-aware method is named): add --method wanda and --calibration SOURCE"
        )),
        "include": (bool(args.include), "--granularity layer removes whole blocks: keep some with --exclude, not --include"),
        "allocation": (args.allocation != "uniform", "--allocation owl sets each block's sparsity: drop it with --granularity layer"),
        "scope": (args.scope is not None, "blocks are ranked by their influence across the model: drop --scope"),
        "format": (args.format == "sparse", "whole blocks are left out and the rest copied: drop --format sparse"),
    }  # fmt: skip
    return {key: message for key, (refused, message) in refusals.items() if refused}


def _check_stream_output(args: argparse.Namespace, checkpoint: Checkpoint) -> None:
    """--out must be new, empty, an unfinished streamed run (continued), or a finished one with --overwrite."""
    out = Path(args.out)
    if not out.exists():
        check_output_dir(out, needed_bytes=checkpoint.nbytes())
        return
    if not out.is_dir():
        raise OptionError("out", f"--out {out} exists and is not a directory; choose another DIR")
    unfinished, finished = (out / STATE_DIR).is_dir(), (out / INDEX_FILE).is_file()
    if any(out.iterdir()) and not (unfinished or finished):
        raise OptionError("out", f"--out {out} holds files no streamed run wrote; choose an empty or new DIR")
    if finished and not unfinished and not args.overwrite:
        raise OptionError("overwrite", f"--out {out} holds a finished streamed run: add --overwrite to replace it, or choose another DIR")
