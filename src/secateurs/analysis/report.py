"""A study's report: one self-contained HTML file, a Markdown summary, the numbers as JSON and CSV, the figures.

:func:`write_report` writes into a directory, every file atomically (a reader never sees half a file):

==================  ===========================================================================
``study.json``      every number (:class:`StudyResult`): the only input of :func:`rebuild_report`
``study.csv``       the sweep, one row per method, scope and amount
``recovery.csv``    one-shot against fine-tuned copies (when fine-tuned)
``sensitivity.csv`` the layer scan, and ``blocks.csv`` the per-block scan (when run)
``figures/*.png``   the figures (:mod:`secateurs.analysis.figures`), redrawn from the numbers
``summary.md``      findings, tables and the figures by relative link
``report.html``     the same with the figures embedded as base64 PNG: no script, nothing fetched
==================  ===========================================================================
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from secateurs.analysis.figures import FIGURES, FigureSpec, draw_figures
from secateurs.analysis.findings import findings, plural
from secateurs.analysis.study_result import StudyResult
from secateurs.storage import OutputExistsError, WriteError, atomic_file

STUDY_JSON = "study.json"
FIGURE_FOLDER = "figures"
#: The tables a study writes only when it has their numbers.
OPTIONAL_TABLES = ("recovery.csv", "sensitivity.csv", "blocks.csv")
_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    html: Path
    markdown: Path
    json: Path
    csv: list[Path]
    figures: list[Path]


def check_report_dir(out_dir: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Refuse, before any work, a place a report cannot go: a file, a folder holding another study (unless
    ``overwrite``), or one that cannot be written."""
    target = Path(out_dir)
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{target} exists and is not a directory; choose another out_dir")
    if (target / STUDY_JSON).exists() and not overwrite:
        raise OutputExistsError(f"{target} already holds a study ({STUDY_JSON}); pass overwrite=True to replace it")
    existing = next(p for p in (target.absolute(), *target.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise WriteError(f"cannot write {target}: {existing} is not writable; choose another out_dir")
    return target


def write_report(result: StudyResult, out_dir: str | os.PathLike[str]) -> ReportFiles:
    """Write the report of ``result`` into ``out_dir`` (created if needed; see the module docstring)."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = _write(folder / STUDY_JSON, result.to_json())
    tables = _write_tables(result, folder)
    figures = draw_figures(result, folder / FIGURE_FOLDER)
    markdown = _write(folder / "summary.md", markdown_summary(result, figures))
    page = _write(folder / "report.html", html_report(result, figures))
    drawn = [path for _, path in figures]
    _remove_stale(folder, {*tables, *drawn})
    return ReportFiles(page, markdown, json_path, tables, drawn)


def _remove_stale(folder: Path, written: set[Path]) -> None:
    """Remove the report files an earlier study left that this one does not have (no recovery, no blocks)."""
    owned = [folder / name for name in OPTIONAL_TABLES] + [folder / FIGURE_FOLDER / spec.file for spec in FIGURES]
    for path in owned:
        if path not in written:
            path.unlink(missing_ok=True)


def rebuild_report(out_dir: str | os.PathLike[str]) -> ReportFiles:
    """Every file of the report in ``out_dir`` written again from its ``study.json`` alone."""
    folder = Path(out_dir)
    if not (folder / STUDY_JSON).is_file():
        raise OutputExistsError(f"{folder} holds no {STUDY_JSON}: give the directory a study wrote")
    return write_report(StudyResult.from_json(folder / STUDY_JSON), folder)


def _write(path: Path, text: str) -> Path:
    with atomic_file(path) as temp:
        temp.write_text(text, encoding="utf-8")
    return path


def _csv(rows: Sequence[dict[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _write_tables(result: StudyResult, folder: Path) -> list[Path]:
    written = [_write(folder / "study.csv", _csv([asdict(row) for row in result.rows]))]
    if result.recovery:
        written.append(_write(folder / "recovery.csv", _csv([asdict(row) for row in result.recovery])))
    scans = ((result.sensitivity, "sensitivity.csv"), (result.blocks and result.blocks.sensitivity, "blocks.csv"))
    for scan, name in scans:
        if scan is not None:
            scan.to_csv(folder / name)
            written.append(folder / name)
    return written


# ---- what both documents say ----------------------------------------------------------------------


def facts(result: StudyResult) -> list[str]:
    """How the study was run, one line each."""
    settings, env, timing = result.settings, result.environment, result.timing
    lines = [
        f"Model {result.model}: {result.dense_params:,} parameters, {result.dense_macs:,} MACs on its example input; "
        f"{result.label} of the dense model: {result.dense:.4g} "
        f"({'higher' if result.higher_is_better else 'lower'} is better).",
        f"Methods: {', '.join(result.methods)}; amounts {', '.join(f'{a:g}' for a in settings.get('amounts', []))}; "
        f"scopes {', '.join(result.scopes)}; seed {settings.get('seed')}.",
    ]
    if timing.get("measured"):
        low, high = timing["rounds_min"], timing["rounds_max"]
        rounds = f"{low}" if low == high else f"{low}-{high}"
        noisy = (f"; {timing['noisy_copies']} of the comparisons are noisy (their rounds spread by more than 10%): "
                 "other work was running" if timing.get("noisy_copies") else "")
        lines.append(f"Latency: every copy timed against the dense model on its example input, interleaved round by "
                     f"round, {rounds} rounds, on {plural(timing['threads'], 'thread')}{noisy}.")
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.stages.items())
    load = env.get("load_average")
    busy = f", load average {load:.1f} at the start" if load is not None else ""
    lines.append(f"Wall time {result.seconds:.0f} s ({stages}) on {plural(env.get('cpus') or 0, 'CPU')}, "
                 f"{env.get('machine')}, torch {env.get('torch')}{busy}.")
    return lines + result.notes


def matrix(result: StudyResult) -> tuple[list[str], list[list[str]]]:
    """The sweep at a glance: a header and one row per method and scope, one column per amount."""
    amounts = sorted({row.amount for row in result.rows})
    header = ["method (scope)", *(f"{a:g}" for a in amounts)]
    rows = []
    for method in result.methods:
        for scope in result.scopes:
            values = {row.amount: row.value for row in result.curve(method, scope)}
            rows.append([f"{method} ({scope})", *(f"{values[a]:.4g}" if a in values else "" for a in amounts)])
    return header, rows


def recovery_table(result: StudyResult) -> tuple[list[str], list[list[str]]]:
    modes = list(dict.fromkeys(r.mode for r in result.recovery))
    header = ["method", "amount", "one-shot", *modes]
    rows = []
    for method, amount in dict.fromkeys((r.method, r.amount) for r in result.recovery):
        oneshot = result.row(method, result.recovery[0].scope, amount)
        values = {r.mode: r.value for r in result.recovery if (r.method, r.amount) == (method, amount)}
        rows.append([method, f"{amount:g}", f"{oneshot.value:.4g}" if oneshot else "",
                     *(f"{values[m]:.4g}" if m in values else "" for m in modes)])
    return header, rows


def _tables(result: StudyResult) -> list[tuple[str, tuple[list[str], list[list[str]]]]]:
    tables = [(f"{result.label} of every copy", matrix(result))]
    if result.recovery:
        first = result.recovery[0]
        tables.append((f"Recovery ({first.epochs} epochs, {first.scope} scope)", recovery_table(result)))
    return tables


# ---- Markdown and HTML ------------------------------------------------------------------------------


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def markdown_summary(result: StudyResult, figures: list[tuple[FigureSpec, Path]]) -> str:
    parts = [f"# Pruning study: {result.model}", "", *(f"- {line}" for line in facts(result)), "", "## Findings", ""]
    parts += [f"- {line}" for line in findings(result)]
    for title, (header, rows) in _tables(result):
        parts += ["", f"## {title}", "", _markdown_table(header, rows)]
    parts += ["", "## Figures", ""]
    for spec, path in figures:
        parts += [f"![{spec.file}]({FIGURE_FOLDER}/{path.name})", "", spec.caption(result), ""]
    parts.append("Rebuild every file here from study.json with `secateurs report DIR`.")
    return "\n".join(parts) + "\n"


def _html_list(lines: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_figure(result: StudyResult, spec: FigureSpec, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(spec.caption(result))
    image = f'<img src="data:image/png;base64,{data}" alt="{caption}">'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def html_report(result: StudyResult, figures: list[tuple[FigureSpec, Path]]) -> str:
    """The report as one HTML page: inline style, figures as data URIs, no script, no external resource."""
    title = html.escape(f"Pruning study: {result.model}")
    body = [f"<h1>{title}</h1>", _html_list(facts(result)), "<h2>Findings</h2>", _html_list(findings(result))]
    for name, (header, rows) in _tables(result):
        body += [f"<h2>{html.escape(name)}</h2>", _html_table(header, rows)]
    body += ["<h2>Figures</h2>", *(_html_figure(result, spec, path) for spec, path in figures)]
    body.append("<p>Rebuild every file of this report from <code>study.json</code> with "
                "<code>secateurs report DIR</code>.</p>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
