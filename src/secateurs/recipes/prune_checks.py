"""Prune options that contradict each other, refused before any slow work (loading, measuring)."""

from __future__ import annotations

import argparse

from secateurs.core.patterns import NM, parse_pattern
from secateurs.data import available_methods, check_calibration_source
from secateurs.recipes.arguments import UNIT_GRANULARITIES
from secateurs.recipes.errors import OptionError
from secateurs.sources import check_spec
from secateurs.storage import check_output_dir

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
    if args.out is not None:
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
    if args.granularity in UNIT_GRANULARITIES and not args.shrink:
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
