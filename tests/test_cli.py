"""The ``secateurs`` command: real subprocesses, their JSON, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from secateurs.cli.app import COMMANDS, main
from secateurs.recipes import prune_pipeline as steps
from secateurs.recipes.prune_pipeline import Step, add_prune_step
from secateurs.storage import read_manifest

FACTORY = textwrap.dedent(
    """
    from torch import nn

    def build():
        return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))

    build.input_shape = (2, 16)
    """
)
REQUIRED_KEYS = {
    "params_before",
    "params_after",
    "nonzero_after",
    "sparsity",
    "macs_before",
    "macs_after",
    "latency_ms_before",
    "latency_ms_after",
    "latency_ratio",
    "latency_spread",
    "latency_noisy",
    "output_dir",
}


@pytest.fixture()
def workdir(tmp_path) -> Path:
    (tmp_path / "factory.py").write_text(FACTORY)
    return tmp_path


def secateurs(*args: str, cwd: Path, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    environment = {**os.environ, "SECATEURS_CACHE": str(cwd / "cache"), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "secateurs", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("secateurs: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_prune_json_summary_and_pruning_again(workdir) -> None:
    out = workdir / "pruned"
    result = secateurs(
        "prune",
        "python:factory:build",
        "--amount",
        "0.5",
        "--latency-time",
        "0.01",
        "--out",
        str(out),
        "--json",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert REQUIRED_KEYS <= set(data)
    weights = 16 * 64 + 64 * 64  # the output layer is left alone
    assert data["params_before"] == data["params_after"] == weights + 64 * 4 + 64 + 64 + 4
    assert data["nonzero_after"] == data["nonzero_before"] - weights // 2
    assert data["pruned_sparsity"] == 0.5 and 0.4 < data["sparsity"] < 0.5
    assert data["macs_before"] == data["macs_after"] == 2 * (weights + 64 * 4)
    assert data["nonzero_macs_after"] == 2 * (weights // 2 + 64 * 4)
    assert data["latency_ms_before"] > 0 and data["latency_ms_after"] > 0
    assert data["size_bytes_after"] < data["size_bytes_before"]
    assert data["output_dir"] == str(out) and data["files"]["model.sparse.safetensors"] > 0
    manifest = read_manifest(out)
    assert manifest.source.spec == "python:factory:build" and manifest.source.input_shape == [2, 16]
    assert manifest.pruning[0]["amount"] == 0.5 and manifest.extra["command"].startswith("secateurs prune")

    summary = secateurs("summary", str(out), "--json", cwd=workdir)
    assert summary.returncode == 0, summary.stderr
    table = json.loads(summary.stdout)
    assert table["total"]["nonzeros"] == data["nonzero_after"] and len(table["pruning"]) == 1
    assert [layer["masked"] for layer in table["layers"]] == [True, True, False]

    again = secateurs(
        "prune", str(out), "--amount", "0.75", "--scope", "global", "--no-latency", "--out", str(workdir / "more"), "--json",
        cwd=workdir,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    more = json.loads(again.stdout)
    assert more["nonzero_before"] == data["nonzero_after"] and more["latency_ms_after"] is None
    assert more["nonzero_after"] == more["nonzero_before"] - weights // 4
    assert [step["amount"] for step in read_manifest(workdir / "more").pruning] == [0.5, 0.75]


def test_human_output_and_python_dash_m(workdir) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "secateurs", "prune", "python:factory:build", "--granularity", "2:4", "--no-latency", "--layers"],
        cwd=workdir, capture_output=True, text=True, timeout=300, env={**os.environ, "SECATEURS_CACHE": str(workdir / "c")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 layers pruned to 50.0%" in result.stdout and "Not saved" in result.stdout
    assert "MACs" in result.stdout and "size on disk" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("prune", "resnet18", "--amount", "0.5"), ("unknown model spec 'resnet18'", "torchvision:NAME")),
        (
            ("prune", "python:factory:build", "--amount", "0.5", "--input-shape", "2,15"),
            ("input shape 2,15 does not fit",),
        ),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(workdir, args, fragments) -> None:
    assert_one_line_error(secateurs(*args, "--no-latency", cwd=workdir), 2, *fragments)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("prune", "torchvision:resnet181", "--amount", "0.5"), ("did you mean resnet18",)),
        (("prune", "FACTORY", "--amount", "0.5", "--input-shape", "2,x"), ("--input-shape", "positive integers")),
        (("prune", "FACTORY"), ("give --amount",)),
        (("prune", "FACTORY", "--amount", "1.5"), ("--amount", "fraction in [0, 1]")),
        (("prune", "FACTORY", "--amount", "0.5", "--include", "nothing*"), ("matches no parameter",)),
        (("prune", "FACTORY", "--granularity", "3:4", "--amount", "0.5"), ("drop --amount",)),
        (("prune", "FACTORY", "--granularity", "2:4", "--scope", "global"), ("--scope local",)),
        (("summary", "FACTORY", "--input-shape", "0"), ("positive integers",)),
        (("demo", "--ratios", "0.5,2"), ("fractions between 0 and 1",)),
        (("prune", "FACTORY", "--amount", "0.5", "--eval-samples", "5"), ("add --eval perplexity:FILE",)),
        (("sensitivity", "FACTORY", "--eval-samples", "5"), ("--eval proxy", "--calibration-samples")),
        (("study", "FACTORY", "--eval", "task", "--eval-samples", "5"), ("--eval-samples 5: task takes no sample limit",)),
        (("frobnicate",), ("invalid choice",)),
        ((), ("required: COMMAND",)),
    ],
)
def test_more_bad_usage_in_process(workdir, capsys, args, fragments) -> None:
    argv = [str(workdir / "factory.py") if a == "FACTORY" else a for a in args]
    argv = [f"python:{a}:build" if a.endswith("factory.py") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("secateurs: error: ") and "Traceback" not in err[0]
    for fragment in fragments:
        assert fragment in err[0], err[0]


def test_missing_package_is_a_failure(workdir) -> None:
    shadow = workdir / "shadow"
    shadow.mkdir()
    (shadow / "timm.py").write_text('raise ModuleNotFoundError("No module named \'timm\'", name="timm")\n')
    result = secateurs("prune", "timm:resnet18", "--amount", "0.5", cwd=workdir, env={"PYTHONPATH": str(shadow)})
    assert_one_line_error(result, 1, "needs the package 'timm'", "pip install timm")


def test_existing_output_is_refused_then_overwritten(workdir) -> None:
    out = workdir / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    refused = secateurs(
        "prune", "python:factory:build", "--amount", "0.5", "--no-latency", "--out", str(out), cwd=workdir
    )
    assert_one_line_error(refused, 2, "already exists", "--overwrite")
    assert os.listdir(out) == ["manifest.json"]
    replaced = secateurs(
        "prune",
        "python:factory:build",
        "--amount",
        "0.5",
        "--no-latency",
        "--out",
        str(out),
        "--overwrite",
        cwd=workdir,
    )
    assert replaced.returncode == 0, replaced.stderr
    assert "model.sparse.safetensors" in os.listdir(out)


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_FSIZE to make a write fail half-way")
def test_failed_write_leaves_no_partial_directory(workdir) -> None:
    import resource
    import signal

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    result = secateurs(
        "prune", "python:factory:build", "--amount", "0.1", "--no-latency", "--format", "dense", "--out", "big",
        cwd=workdir, preexec_fn=small_files,
    )  # fmt: skip
    assert_one_line_error(result, 1, "cannot write big", "nothing was saved")
    assert not any(name == "big" or name.startswith(".big") for name in os.listdir(workdir))


def test_debug_shows_the_traceback(workdir) -> None:
    result = secateurs("prune", "resnet18", "--amount", "0.5", "--debug", cwd=workdir)
    assert result.returncode == 2 and "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("secateurs: error: unknown model spec")


def test_demo_json(workdir) -> None:
    result = secateurs(
        "demo", "--json", "--epochs", "2", "--ratios", "0.5", "--latency-time", "0.005", "--no-progress", cwd=workdir
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["rows"]) == 10 and {row["method"] for row in data["rows"]} >= {"L1 unstructured", "L2 structured shrunk"}
    assert data["reading"] and not data["cached_model"]
    assert data["cache_path"].startswith(str(workdir / "cache"))


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_everywhere(command, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"] if command else ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: secateurs" in out and "--debug" in out
    if command == "prune":
        for option in ("--method", "--amount", "--granularity", "--scope", "--include", "--exclude", "--seed", "--out"):
            assert option in out


def test_in_process_channel_global_and_step_registry(workdir, capsys, monkeypatch) -> None:
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("SECATEURS_CACHE", str(workdir / "cache"))
    seen = []
    monkeypatch.setattr(steps, "PRUNE_STEPS", list(steps.PRUNE_STEPS))
    add_prune_step(Step("spy", lambda run: seen.append(run.reports[-1].granularity)), after="prune")
    with pytest.raises(ValueError, match="no prune step named"):
        add_prune_step(Step("other", lambda run: None), before="nope")
    code = main(
        ["prune", f"python:{workdir / 'factory.py'}:build", "--granularity", "channel", "--scope", "global",
         "--method", "l2", "--amount", "0.25", "--no-latency", "--json"]
    )  # fmt: skip
    assert code == 0 and seen == ["Structured(dim='out')"]
    data = json.loads(capsys.readouterr().out)
    assert data["granularity"] == "channel" and data["pruned_sparsity"] > 0
