"""Every option of ``secateurs prune``, ``sensitivity``, ``study``, ``export``, ``bench`` and ``summary``, defined once.

An :class:`Option` says what the value is (its parser, default, choices), how people are told about it (help,
metavar) and where it is kept (``dest``). The command line builds its argparse parsers from these records
(:mod:`secateurs.cli.options`), and recipes build their pydantic models from the same records
(:mod:`secateurs.recipes.schema`), so the two cannot drift apart.

The recipe key of an option is its long name with dashes as underscores (``--calibration-samples`` ->
``calibration_samples``); a switch that turns something off (``--no-latency``) is the key it sets, given
``false`` (``latency: false``, ``evaluate: false`` for ``--no-eval``). ``Option.cli`` is the option a key
comes from; docs/recipes.md lists both.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from secateurs.analysis import (
    DEFAULT_METHODS,
    DEFAULT_STUDY_AMOUNTS,
    METRIC_USAGE,
    MODES,
    SOURCES,
    check_metric_spec,
)
from secateurs.core.criteria import DEFAULT_CRITERION
from secateurs.data import available_methods
from secateurs.export import format_summaries
from secateurs.measure import DEFAULT_BUDGET_S, MIN_ROUNDS
from secateurs.recipes.arguments import (
    amount_arg,
    amounts_arg,
    device_arg,
    eval_spec_arg,
    format_arg,
    granularity_arg,
    input_shape_arg,
    max_drop_arg,
    method_names,
    non_negative_int,
    path_arg,
    positive_float,
    positive_int,
    seq_len_arg,
    study_method_arg,
    target_arg,
    whole_number,
)
from secateurs.recovery import FINETUNE_LR
from secateurs.sources import available_sources
from secateurs.streaming import MemoryBudgetError, parse_memory

#: How an option takes its value. ``value``: ``--key VALUE``; ``flag``: ``--key`` sets true; ``off``:
#: ``--no-key`` sets false; ``toggle``: ``--key``/``--no-key``; ``append``: ``--key V`` repeated, a list;
#: ``nargs``: ``--key V [V ...]``, a list; ``positional``: ``KEY`` without a dash; ``unset``: ``--no-key`` sets
#: ``dest`` to None (on the command line only: a recipe writes ``key: null``).
Kind = Literal["value", "flag", "off", "toggle", "append", "nargs", "positional", "unset"]


@dataclass(frozen=True)
class Option:
    """One option: its recipe key, its command-line spelling, and how its value is parsed and checked."""

    key: str
    help: str
    parse: Callable[[str], Any] | None = None
    default: Any = None
    choices: Sequence[str] | None = None
    kind: Kind = "value"
    metavar: str | None = None
    #: Where the parsed value is kept (argparse's dest, the pipeline's attribute); default: ``key``.
    dest: str | None = None
    #: The long option when it is not ``--key`` (``--eval`` for ``metric``...).
    flag: str | None = None
    required: bool = False
    #: How many values a positional option takes (argparse's nargs: ``*`` any number).
    nargs: str | None = None
    #: Only on the command line (output formatting, the output directory a recipe's run directory replaces).
    cli_only: bool = False

    @property
    def attribute(self) -> str:
        return self.dest or self.key

    @property
    def cli(self) -> str:
        """How the option is written on the command line: ``--calibration-samples``, ``--no-latency``, ``MODEL``."""
        if self.kind == "positional":
            return self.metavar or self.key.upper()
        if self.flag:
            return self.flag
        dashed = self.key.replace("_", "-")
        return f"--no-{dashed}" if self.kind in ("off", "unset") else f"--{dashed}"


@dataclass(frozen=True)
class OptionGroup:
    """Options shown together in ``--help`` (an argparse argument group; ``title`` None: the parser itself)."""

    title: str | None
    options: tuple[Option, ...]
    #: Options added to the same argparse group after these ones (a command's own additions).
    more: tuple[Option, ...] = field(default=())

    @property
    def all(self) -> tuple[Option, ...]:
        return self.options + self.more


def options_of(groups: Sequence[OptionGroup]) -> list[Option]:
    return [option for group in groups for option in group.all]


# ---- shared options ------------------------------------------------------------------------------

MODEL = Option(
    "model", kind="positional", metavar="MODEL",
    help="model spec: " + ", ".join(s.usage for s in available_sources()) + ", or a directory written by secateurs prune",
)  # fmt: skip
DEVICE = Option(
    "device", parse=device_arg, default="cpu",
    help="where to run the model: cpu, cuda, cuda:1, mps... (default %(default)s); files are always written from CPU",
)  # fmt: skip
INPUT_SHAPE = Option(
    "input_shape", parse=input_shape_arg, metavar="SHAPE",
    help="shape of the example input, e.g. 1,3,224,224 (images) or 1,128 (token ids); default per model",
)  # fmt: skip
MODEL_GROUP = OptionGroup("model", (MODEL, DEVICE, INPUT_SHAPE))


def timing_options(latency_time: float) -> tuple[Option, ...]:
    """--latency-time and --threads: how long and on how many threads forward passes are timed."""
    return (
        Option(
            "latency_time", parse=positive_float, default=latency_time, metavar="SECONDS",
            help="seconds of timed forward passes per model, after warm-up, in rounds that alternate between the "
            f"models compared; a model too slow for it gets fewer rounds (at least {MIN_ROUNDS}). The median and the "
            "spread over the rounds are reported (default %(default)s)",
        ),
        Option(
            "threads", parse=positive_int, default=1, metavar="N",
            help="intra-op threads while timing (default %(default)s: steady on a shared machine, comparable across "
            "machines; give more to time a multi-core deployment)",
        ),
    )  # fmt: skip


NO_LATENCY = Option(
    "latency", kind="off", default=True,
    help="skip timing the forward pass (the slowest measurement); secateurs prune then also keeps no copy of "
    "the model as loaded to time the pruned one against",
)  # fmt: skip
MEASURE_OPTIONS = (NO_LATENCY, *timing_options(DEFAULT_BUDGET_S))


def json_option(what: str) -> Option:
    return Option(
        "json", kind="flag", default=False, cli_only=True,
        help=f"print one JSON object instead of the human-readable report: {what}",
    )  # fmt: skip


#: --eval-samples N: beside every --eval.
EVAL_SAMPLES = Option(
    "eval_samples", parse=positive_int, metavar="N",
    help="evaluate on N windows, sentence pairs or images spread over the --eval file or folder (perplexity, sts, "
    "imagefolder): faster evaluations for sweeps, on a sample (default: all of it)",
)  # fmt: skip


def eval_option(default: str | None = "proxy") -> Option:
    """--eval SPEC: what a model is worth (see :mod:`secateurs.analysis.specs`); for every command that evaluates."""
    return Option(
        "eval", dest="metric", parse=eval_spec_arg, metavar="SPEC",
        default=None if default is None else check_metric_spec(default),
        help=f"the metric: {METRIC_USAGE} (loss, or output distance to the dense model, on a calibration batch: "
        "cheap) (default %(default)s)",
    )  # fmt: skip


# ---- secateurs prune -----------------------------------------------------------------------------

_SELECTION = (
    Option(
        "include", kind="append", metavar="PATTERN",
        help="prune only parameters matching this glob or re:REGEX (repeatable)",
    ),
    Option(
        "exclude", kind="append", metavar="PATTERN",
        help="never prune parameters matching this glob or re:REGEX (repeatable); with --shrink, module names kept whole",
    ),
)  # fmt: skip

PRUNING = OptionGroup("pruning", (
    Option(
        "method", default=DEFAULT_CRITERION, choices=method_names(), metavar="METHOD",
        help="importance criterion: %(choices)s (default %(default)s)",
    ),
    Option("norm", parse=positive_float, default=2.0, metavar="P", help="order of the norm for --method ln (default 2)"),
    Option(
        "amount", parse=amount_arg, metavar="AMOUNT",
        help="how much to prune: a fraction (0.5 or 50%%) of the weights or groups of each layer (local) "
        "or of all selected ones (global), or a count; not with N:M",
    ),
    Option(
        "granularity", parse=granularity_arg, default="unstructured", metavar="G",
        help="unstructured, N:M (e.g. 2:4), channel (whole output channels/neurons), in (input channels); "
        "with --shrink also head (attention heads) or layer (whole residual blocks) (default %(default)s)",
    ),
    Option(
        "scope", choices=("local", "global", "row"),
        help="rank within each layer (local), across all selected layers (global) or within each output row (row: "
        "unstructured and block:R[xC] only) (default: local; with --finetune, global for unstructured weights; "
        "Wanda: row)",
    ),
    Option(
        "normalize_scores", kind="toggle", default=True,
        help="for --scope global with channels, heads or layers: divide each unit's score by its layer's mean, "
        "so layers of different sizes compare fairly (default: on)",
    ),
    *_SELECTION,
    Option("seed", parse=whole_number, help="seed for random criteria (default: torch's global generator)"),
    Option(
        "allow_no_op", dest="allow_noop", kind="flag", default=False,
        help="accept a request that removes nothing (--amount 0, or an amount that rounds to no unit); "
        "by default that is an error naming the smallest amount that acts",
    ),
))  # fmt: skip

STRUCTURAL = OptionGroup("physical removal (--shrink)", (
    Option(
        "shrink", kind="flag", default=False,
        help="remove the pruned channels, heads or layers for real (--granularity channel, head or layer): "
        "a smaller dense model, checked against the masked one (max_abs_diff)",
    ),
    Option(
        "prune_normalized", kind="flag", default=False,
        help="also shrink widths under a normalisation (a transformer's or ConvNeXt's hidden size)",
    ),
    Option("round_to", parse=positive_int, metavar="N", help="keep channel counts multiples of N (e.g. 8)"),
    Option(
        "scored_by", choices=("outputs", "all"),
        help="score a unit by the weights producing it (outputs: filters, rows) or also by those reading it "
        "(all); default: the method's own choice (outputs for magnitude/Ln/random)",
    ),
))  # fmt: skip

CALIBRATION = OptionGroup(f"data-aware pruning (--method {', '.join(available_methods())})", (
    Option(
        "calibration", metavar="SOURCE",
        help="calibration data; best: the task's own data, sts:FILE (STS pairs), csv:FILE:COLUMN, "
        "tsv:FILE:COLUMN, jsonl:FILE:FIELD (several: COL1,COL2), images:DIR, python:MODULE:FUNCTION; else "
        "train (the model's own training inputs, e.g. the demo's digits), a text file, or a built-in text "
        "(english, random)",
    ),
    Option(
        "calibration_samples", parse=positive_int, metavar="N",
        help="number of calibration samples (default: 128 windows of text, 1024 sentences for sentence "
        "encoders, 256 images or training examples)",
    ),
    Option(
        "tokenizer", metavar="PATH",
        help="directory of a saved Hugging Face tokenizer for text calibration (default: the model's own)",
    ),
    Option(
        "seq_len", parse=seq_len_arg, metavar="N",
        help="tokens per calibration window or sentence (default: the model's maximum, at most 2048); "
        "a text shorter than one window is used whole, with a warning",
    ),
    Option(
        "allocation", choices=("uniform", "owl"), default="uniform",
        help="sparsity per block: uniform, or owl (less for blocks with more outlier weights) (default %(default)s)",
    ),
))  # fmt: skip


def memory_size_arg(text: str) -> int:
    """Bytes from ``4GB``, ``512MB`` (binary units) or a plain number of bytes."""
    try:
        return parse_memory(text)
    except MemoryBudgetError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size; write it as 4GB, 512MB or a number of bytes") from None


STREAMING = OptionGroup("models larger than memory (hf:DIR safetensors checkpoints; see docs/streaming.md)", (
    Option(
        "stream", kind="toggle",
        help="prune block by block, never holding the whole model: each block is read from the checkpoint, pruned, "
        "written to --out (a Hugging Face directory) and freed (default: chosen when pruning in memory would need "
        "more than the memory available or --max-memory; --no-stream loads the model anyway)",
    ),
    Option(
        "max_memory", parse=memory_size_arg, metavar="SIZE",
        help="memory the run may use, e.g. 4GB or 512MB: pruning in memory beyond it streams instead, and a "
        "streamed run whose estimated peak is larger is refused before any block is pruned",
    ),
    Option(
        "activations_dtype", choices=("float32", "bfloat16"),
        help="dtype of a streamed run's calibration activations between blocks: bfloat16 halves their memory "
        "(default: the checkpoint's dtype, at least float32)",
    ),
))  # fmt: skip

TARGET = OptionGroup("pruning to a target (instead of --amount; see docs/analysis.md#targets)", (
    Option(
        "target", parse=target_arg, metavar="KIND=RATIO",
        help="a budget as a ratio of the model as loaded: sparsity, params, macs, size, or latency (with --shrink, "
        "timed here on --threads); each layer's amount is chosen to lose the least, e.g. macs=0.5",
    ),
    Option(
        "max_drop", parse=max_drop_arg, metavar="POINTS",
        help="the most the --eval metric may lose, in its points (1.0: one accuracy point); without --target, "
        "prune as much as that allows; with it, refuse a budget predicted to cost more",
    ),
    Option(
        "allocate_from", choices=SOURCES,
        help="what predicts each layer's loss: sensitivity (a scan of every layer with --eval, default the cheap "
        "proxy metric), proxy (data free: the share of each layer's importance removed) or uniform (one amount "
        "for all: the baseline) (default: sensitivity with --eval or --max-drop, else proxy)",
    ),
    eval_option(default=None),
    EVAL_SAMPLES,
))  # fmt: skip

RECOVERY = OptionGroup("recovery (fine-tuning; models with known training data, e.g. demo)", (
    Option(
        "finetune", parse=non_negative_int, default=0, metavar="EPOCHS",
        help="fine-tune for EPOCHS epochs, pruning on --schedule meanwhile; pruned weights stay zero "
        "(default 0: no fine-tuning)",
    ),
    Option(
        "schedule", choices=("oneshot", "iterative", "gradual"), default="oneshot",
        help="oneshot: prune, then fine-tune; iterative: prune in up to 5 equal rounds at epoch boundaries; "
        "gradual: cubic schedule (Zhu & Gupta) every few steps; both finish after 60%% of the epochs "
        "(default %(default)s)",
    ),
    Option("distill", kind="flag", default=False, help="add a distillation loss (KL, T=2) from the dense model"),
    Option(
        "lr", parse=positive_float, default=FINETUNE_LR,
        help="fine-tuning learning rate, AdamW with cosine decay (default %(default)s; see "
        "benchmarks/results/cli_recovery.md)",
    ),
    Option(
        "checkpoint_dir", parse=path_arg, metavar="DIR",
        help="write resumable checkpoints here (atomically); rerun to resume",
    ),
))  # fmt: skip

PRUNE_MEASUREMENT = OptionGroup("measurement", MEASURE_OPTIONS, more=(
    Option(
        "evaluate", kind="off", default=True, flag="--no-eval",
        help="skip the task metric of models that have one (e.g. the demo CNN's accuracy)",
    ),
))  # fmt: skip

PRUNE_OUTPUT = OptionGroup("output", (
    Option(
        "out", parse=path_arg, metavar="DIR", cli_only=True,
        help="save the pruned model to this directory (written atomically); without it nothing is saved",
    ),
    Option(
        "overwrite", kind="flag", default=False, cli_only=True,
        help="replace DIR if it exists (only a directory secateurs wrote)",
    ),
    Option(
        "format", choices=("sparse", "dense", "both"),
        help="weights file: sparse (bitmask + nonzeros, small), dense (plain safetensors) or both (default: sparse; "
        "with --stream, dense, which plain from_pretrained loads)",
    ),
    json_option("every number of the report, and what was run"),
    Option("layers", kind="flag", default=False, cli_only=True, help="also print the per-layer pruning table"),
))  # fmt: skip

PRUNE_GROUPS = (MODEL_GROUP, PRUNING, STRUCTURAL, CALIBRATION, STREAMING, TARGET, RECOVERY, PRUNE_MEASUREMENT, PRUNE_OUTPUT)


# ---- secateurs sensitivity -----------------------------------------------------------------------

#: The files ``secateurs sensitivity --out`` (and a recipe's sensitivity step) writes.
SENSITIVITY_FILES = {"json": "sensitivity.json", "csv": "sensitivity.csv", "plot": "sensitivity.png"}

SENSITIVITY_SCAN = OptionGroup("scan", (
    eval_option(),
    EVAL_SAMPLES,
    Option(
        "granularity", parse=granularity_arg, default="unstructured", metavar="G",
        help="what a unit loses: unstructured (weights of one parameter), N:M (e.g. 2:4), channel (one coupled "
        "channel group), head (one attention block's heads) or layer (one residual block, removed) (default %(default)s)",
    ),
    Option(
        "amounts", parse=amounts_arg, metavar="A", help="fractions of each unit to prune: 0.1:0.9:0.1 "
        "(start:stop:step) or 0.25,0.5 (default 0.1:0.9:0.1; below 1 for channel and head; not with N:M or layer)",
    ),
    Option(
        "method", choices=method_names(), metavar="METHOD",
        help="importance criterion choosing what each unit loses: %(choices)s (default magnitude)",
    ),
    Option(
        "units", kind="nargs", metavar="GLOB",
        help="scan only the units matching these globs (or re:REGEX), by unit or module name (default: all)",
    ),
    Option("seed", parse=whole_number, help="seed for --method random and for sampling calibration data"),
    Option(
        "reuse", kind="off", default=None,
        help="always run the whole model (by default a proxy scan of a transformer skips the blocks "
        "before the one perturbed)",
    ),
))  # fmt: skip

SENSITIVITY_DATA = OptionGroup("calibration data (data-aware --method, and --eval proxy)", (
    Option(
        "calibration", metavar="SOURCE",
        help="a text file, english, sts:FILE, csv:FILE:COLUMN, images:DIR..., or train (the model's own training "
        "data, e.g. the demo's); the proxy's default is train where known, else the example input",
    ),
    Option("calibration_samples", parse=positive_int, metavar="N", help="number of calibration samples"),
))  # fmt: skip

SENSITIVITY_OUTPUT = OptionGroup("output", (
    Option(
        "out", parse=path_arg, metavar="DIR", cli_only=True,
        help=f"write {', '.join(SENSITIVITY_FILES.values())} into DIR (created if needed; each file written atomically)",
    ),
    Option("overwrite", kind="flag", default=False, cli_only=True, help="replace sensitivity files already in DIR"),
    Option("top", parse=positive_int, default=10, metavar="K", help="units in the printed table (default %(default)s)"),
    json_option("the whole result (every curve)"),
    Option("quiet", kind="flag", default=False, help="no progress bar or progress lines (for logs and CI)"),
))  # fmt: skip

SENSITIVITY_GROUPS = (MODEL_GROUP, SENSITIVITY_SCAN, SENSITIVITY_DATA, SENSITIVITY_OUTPUT)


# ---- secateurs study -----------------------------------------------------------------------------

DEFAULT_FINETUNE_EPOCHS = 10
STUDY_LATENCY_TIME = 0.05

STUDY_SWEEP = OptionGroup("sweep", (
    Option(
        "eval", dest="metric", parse=eval_spec_arg, metavar="SPEC",
        help=f"the metric: {METRIC_USAGE} (default: the model's own task metric where it has one, such "
        "as the demo's test accuracy, else proxy)",
    ),
    EVAL_SAMPLES,
    Option(
        "methods", kind="nargs", parse=study_method_arg, default=list(DEFAULT_METHODS), metavar="METHOD",
        help="CRITERION[:GRANULARITY]: random and l1 (unstructured), random:channel and l2:channel "
        f"(masked channels), l2:shrink (channels removed) (default: {' '.join(DEFAULT_METHODS)})",
    ),
    Option(
        "amounts", parse=amounts_arg, default=list(DEFAULT_STUDY_AMOUNTS), metavar="A",
        help="fractions to prune: 0.1:0.9:0.2 (start:stop:step) or 0.5,0.9 (default 0.1:0.9:0.2)",
    ),
    Option(
        "scope", dest="scopes", kind="nargs", choices=("local", "global"), default=["local", "global"],
        help="rank within each layer, across all layers, or both (default: both)",
    ),
    Option("seed", parse=whole_number, default=0, help="seed of random methods and of data order (default 0)"),
))  # fmt: skip

STUDY_RECOVERY = OptionGroup("recovery (models with known training data, e.g. demo)", (
    Option(
        "finetune", dest="finetune_epochs", parse=non_negative_int, default=DEFAULT_FINETUNE_EPOCHS,
        metavar="EPOCHS", help="fine-tuning epochs of each fine-tuned copy (default %(default)s; 0: one-shot only)",
    ),
    Option(
        "modes", kind="nargs", choices=MODES, help="what to compare: oneshot, finetuned (one-shot then "
        "fine-tuning), iterative, gradual (default: oneshot finetuned gradual)",
    ),
    Option(
        "finetune_methods", kind="nargs", parse=study_method_arg, metavar="METHOD",
        help="methods to fine-tune, among --methods (default: those neither random nor shrunk)",
    ),
    Option(
        "finetune_amounts", parse=amounts_arg, metavar="A",
        help="amounts to fine-tune at, among --amounts (default: the largest)",
    ),
    Option(
        "lr", parse=positive_float, default=FINETUNE_LR,
        help="fine-tuning learning rate, as secateurs prune --finetune (default %(default)s)",
    ),
))  # fmt: skip

STUDY_DETAILS = OptionGroup("details", (
    Option(
        "sensitivity", parse=granularity_arg, default="unstructured", metavar="G",
        help="granularity of the per-layer sensitivity scan (default %(default)s)",
    ),
    Option("sensitivity", kind="unset", cli_only=True, help="skip the sensitivity scan"),
    Option(
        "histogram_layers", kind="nargs", metavar="LAYER",
        help="layers whose weights are drawn as histograms (default: the first and last pruned)",
    ),
    Option(
        "detail_amount", parse=float, metavar="A",
        help="amount of the histograms and per-layer sparsity bars, among --amounts (default: the one nearest 0.5)",
    ),
    Option(
        "blocks", kind="toggle",
        help="per-block sensitivity and sparing the most fragile blocks (default: when the model is a "
        "stack of repeated blocks, such as a ViT)",
    ),
    Option("block_amount", parse=float, metavar="A", help="amount of the block study (default: --detail-amount)"),
    Option(
        "exclude_blocks", parse=non_negative_int, default=2, metavar="K",
        help="how many of the most fragile blocks stay dense (default %(default)s)",
    ),
))  # fmt: skip

STUDY_MEASUREMENT = OptionGroup("measurement", (
    Option("latency", kind="off", default=True, help="skip timing each copy against the dense model (MACs only)"),
    *timing_options(STUDY_LATENCY_TIME),
))  # fmt: skip

STUDY_OUTPUT = OptionGroup("output", (
    Option(
        "out", parse=path_arg, metavar="DIR", cli_only=True,
        help="write the report here (default: study-MODEL in the working directory)",
    ),
    Option("overwrite", kind="flag", default=False, cli_only=True, help="replace a study already in DIR"),
    Option("quiet", kind="flag", default=False, help="no progress bars or progress lines (for logs and CI)"),
    json_option("every number of the study"),
))  # fmt: skip

STUDY_GROUPS = (MODEL_GROUP, STUDY_SWEEP, STUDY_RECOVERY, STUDY_DETAILS, STUDY_MEASUREMENT, STUDY_OUTPUT)


# ---- secateurs export, bench, summary ------------------------------------------------------------

EXPORT_GROUPS = (OptionGroup(None, (
    Option(
        "model", kind="positional", metavar="MODEL", cli_only=True,
        help="a directory written by secateurs prune (or any model spec: demo, minilm, ...)",
    ),
    Option(
        "format", dest="formats", kind="append", parse=format_arg, required=True, metavar="FORMAT",
        help="output format, repeatable or comma-separated: "
        + "; ".join(f"{name}: {summary}" for name, summary in format_summaries().items()),
    ),
    Option("out", parse=path_arg, required=True, metavar="DIR", cli_only=True,
           help="export directory (written atomically)"),
    Option(
        "overwrite", kind="flag", default=False, cli_only=True,
        help="replace DIR if it exists (only a directory secateurs wrote)",
    ),
    Option(
        "input_shape", parse=input_shape_arg, metavar="SHAPE",
        help="shape of the example input the files are traced and checked on (default: the model's)",
    ),
    Option(
        "fixed_shapes", kind="flag", default=False,
        help="trace with the example input's exact shapes (default: batch size and token length free where the "
        "model allows it)",
    ),
    json_option("every file, its size, its check and how to load it"),
)),)  # fmt: skip

BENCH_GROUPS = (
    OptionGroup(None, (
        Option(
            "model", kind="positional", metavar="DIR", cli_only=True,
            help="a directory written by secateurs prune (its dense original is rebuilt from its source), or any "
            "model spec",
        ),
        Option(
            "exports", kind="positional", parse=path_arg, nargs="*", metavar="OUT", cli_only=True,
            help="export directories written by secateurs export",
        ),
    )),
    OptionGroup("measurement", (
        Option("latency", kind="off", default=True, help="skip timing (sizes and metrics only)"),
        Option("evaluate", kind="off", default=True, flag="--no-eval", help="skip the task metric"),
        *timing_options(DEFAULT_BUDGET_S),
    )),
    OptionGroup(None, (json_option("every row: bytes, latency, ratio to dense, metrics"),)),
)  # fmt: skip

SUMMARY_GROUPS = (
    MODEL_GROUP,
    OptionGroup(None, (
        json_option("the table, and the measurements with --measure"),
        Option(
            "measure", kind="flag", default=False,
            help="also measure parameters, MACs, size on disk and latency (median and spread over timed rounds)",
        ),
    )),
    OptionGroup("measurement", MEASURE_OPTIONS),
)  # fmt: skip


def measure_options(options: Any) -> dict[str, Any]:
    """The timing arguments of :func:`secateurs.measure.measure` and :func:`secateurs.measure.compare_latency`
    that :data:`MEASURE_OPTIONS` ask for (whether to time at all is ``options.latency``)."""
    return {"budget_s": options.latency_time, "threads": options.threads}


# ---- recipe-only steps ---------------------------------------------------------------------------

EVALUATE_GROUPS = (OptionGroup("evaluate", (
    Option(
        "eval", dest="metric", parse=eval_spec_arg, metavar="SPEC",
        help=f"the metric: {METRIC_USAGE} (default: the model's own task metric where it has one, else proxy)",
    ),
    EVAL_SAMPLES,
    Option(
        "calibration_samples", parse=positive_int, metavar="N",
        help="samples of the proxy's calibration batch (default: the proxy's own)",
    ),
    Option("seed", parse=whole_number, help="seed of the proxy's sample (default: the recipe's seed)"),
)),)  # fmt: skip
