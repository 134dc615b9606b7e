"""No expected failure of an `arc-jax` subcommand ends in a traceback (issue 21, points 4 and 5).

Each subcommand (train, data check/show/prepare, convert, export, eval, generate, bench, plan,
demo) is driven into its failures: missing and damaged inputs, wrong formats, bad overrides and
options, damaged checkpoints, a run interrupted with Ctrl-C. Each must end with one line on stderr
("arc-jax <command>: error: ...", progress bars aside), a non-zero exit, and nothing lost or
half-written: no output folder left by a failed convert, export or eval, an untouched workdir after
a refused restart. `--debug` (or ARC_JAX_DEBUG=1) shows the traceback instead.

Damaged checkpoints of a training run are tests/test_damaged_checkpoints.py's, full disks
tests/test_save_failures.py's, SIGKILL and SIGTERM mid-run tests/test_kill_resume.py's.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arc_jax.cli import main  # noqa: E402
from test_damaged_checkpoints import error_lines, truncate  # noqa: E402
from test_kill_resume import ENV  # noqa: E402
from test_trainer import CONFIG, saved_state  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> SimpleNamespace:
    """A 2-step tiny_cpu run, its encoder exported as released and converted back to arc_jax, damaged
    copies of each, and a few input files."""
    root = tmp_path_factory.mktemp("faults")
    data = root / "data"
    args = ["train", "--config", str(CONFIG), "--workdir", str(root / "run"), "--log-every", "100",
            "--config.max_steps=2", "--config.checkpoint_every=2", "--config.optimizer.warmup_steps=1",
            "--config.eval.every=0", f"--config.data.dir={data}"]
    assert main(args) == 0
    assert main(["export", str(root / "run"), str(root / "released"), "--format", "released"]) == 0
    assert main(["convert", str(root / "released"), str(root / "arc_jax")]) == 0
    for name in ("run", "released", "arc_jax"):
        shutil.copytree(root / name, root / f"{name}_damaged")
    truncate(root / "run_damaged" / "checkpoints")
    truncate(root / "released_damaged")
    truncate(root / "arc_jax_damaged" / "params")
    inputs = root / "inputs"  # readers may cache an index beside an input: not in the checked listing
    inputs.mkdir()
    (inputs / "qa.jsonl").write_text("".join(json.dumps({"question": f"Who is {i}?", "answers": ["x"],
                                                       "passages": ["x y z"]}) + "\n" for i in range(8)))
    (inputs / "broken.jsonl").write_text('{"question": "q", "answers": ["a"]\n')
    (inputs / "syntax.py").write_text("def get_config(:\n")
    (inputs / "raises.py").write_text("def get_config():\n    return undefined_name\n")
    (inputs / "context.txt").write_text("Alice lives in Paris.")
    (inputs / "junk.model").write_bytes(b"junk")
    (inputs / "a_file").write_text("not a folder")
    return SimpleNamespace(root=root, data=data, train_args=args, tokenizer=str(data / "tokenizer.model"))


# case: (command as printed, argv, a fragment of the error line, outputs under the root that must not
# exist). In argv, {root} is the fixture's folder, {inputs} its input files, {config} tiny_cpu, {data}
# its data folder, and {tok} the tokenizer options of generate and eval.
CASES = {
    "train: config file missing": (
        "train", "train --config {inputs}/missing.py --workdir {root}/new", "missing.py: config file not found",
        ["new"]),
    "train: config file not Python": (
        "train", "train --config {inputs}/syntax.py --workdir {root}/new", "syntax.py:1: invalid Python", ["new"]),
    "train: config file raises": (
        "train", "train --config {inputs}/raises.py --workdir {root}/new",
        "raises.py:2: the config file fails to run (NameError", ["new"]),
    "train: unknown override": (
        "train", "train --config {config} --workdir {root}/new --config.nope=1", "no field config.nope", ["new"]),
    "train: override of the wrong type": (
        "train", "train --config {config} --workdir {root}/new --config.max_steps=many",
        "config.max_steps='many': expected int", ["new"]),
    "train: override without a value": (
        "train", "train --config {config} --workdir {root}/new --config.max_steps", "expected --config.field=value",
        ["new"]),
    "train: missing data": (
        "train", "train --config {config} --workdir {root}/new --config.max_steps=2 --config.optimizer.warmup_steps=1 "
                 "--config.data.dir={data} --config.data.generate= --config.data.sources={inputs}/none.jsonl",
        "none.jsonl: no such file", []),
    "train: no such option": (
        "train", "train --config {config} --workdir {root}/new --steps 3", "unrecognized arguments: --steps 3",
        ["new"]),
    "data check: config file missing": (
        "data", "data check --config {inputs}/missing.py", "config file not found", []),
    "data check: missing sources": (
        "data", "data check --config {config} --config.data.dir={data} --config.data.generate= "
                "--config.data.sources={inputs}/none.jsonl",
        "none.jsonl: no such file", []),
    "data show: a malformed record, strict": (
        "data", "data show --config {config} --config.data.dir={data} --config.data.generate= "
                "--config.data.sources={inputs}/broken.jsonl --config.data.strict=True",
        "broken.jsonl:1: malformed JSON", []),
    "data show: a tokenizer of no known format": (
        "data", "data show --config {config} --config.data.dir={data} "
                "--config.data.encoder_tokenizer={inputs}/junk.model",
        "junk.model: unknown tokenizer format", []),
    "data prepare: unknown dataset": (
        "data", "data prepare nope --out {root}/prepared", "unknown dataset 'nope'", ["prepared"]),
    "convert: missing input": (
        "convert", "convert {root}/missing {root}/out", "missing: no such file or folder", ["out"]),
    "convert: truncated released encoder": (
        "convert", "convert {root}/released_damaged {root}/out", "released_damaged/", ["out"]),
    "convert: an encoder read as a decoder": (
        "convert", "convert {root}/released {root}/out --kind decoder", "this is a released encoder, not a decoder",
        ["out"]),
    "export: damaged arc_jax checkpoint": (
        "export", "export {root}/arc_jax_damaged {root}/out --format released",
        "arc_jax_damaged/params: cannot restore", ["out"]),
    "export: a run with no intact checkpoint": (
        "export", "export {root}/run_damaged {root}/out --format released", "no checkpoint reads", ["out"]),
    "export: a decoder format for an encoder": (
        "export", "export {root}/arc_jax {root}/out --format hf", "unknown encoder output format 'hf'", ["out"]),
    "export: unknown format": (
        "export", "export {root}/arc_jax {root}/out --format x", "argument --format: invalid choice: 'x'", ["out"]),
    "eval: missing benchmark file": (
        "eval", "eval --encoder {root}/run --decoder {root}/run --data {inputs}/none.jsonl --out {root}/eval {tok}",
        "none.jsonl: cannot read", ["eval"]),
    "eval: malformed benchmark record": (
        "eval", "eval --encoder {root}/run --decoder {root}/run --data {inputs}/broken.jsonl --out {root}/eval {tok}",
        "broken.jsonl:1: malformed JSON", ["eval"]),
    "eval: unknown benchmark kind": (
        "eval", "eval --encoder {root}/run --decoder {root}/run --data {inputs}/qa.jsonl:nope --out {root}/eval {tok}",
        "unknown benchmark kind 'nope'", ["eval"]),
    "eval: a run with no intact checkpoint": (
        "eval", "eval --encoder {root}/run_damaged --decoder {root}/run --data {inputs}/qa.jsonl --out {root}/eval "
                "{tok}", "no checkpoint reads", ["eval"]),
    "eval: a step the run does not have": (
        "eval", "eval --encoder {root}/run --decoder {root}/run --data {inputs}/qa.jsonl --step 3 --out {root}/eval "
                "{tok}", "--step 3: ", ["eval"]),
    "generate: missing context file": (
        "generate", "generate --encoder {root}/run --decoder {root}/run --context {inputs}/none.txt --prompt Q {tok}",
        "none.txt: cannot read context file", []),
    "generate: an encoder given as the decoder": (
        "generate", "generate --encoder {root}/run --decoder {root}/arc_jax --prompt Q {tok}",
        "this is an arc_jax encoder, not a decoder", []),
    "generate: a tokenizer of no known format": (
        "generate", "generate --encoder {root}/run --decoder {root}/run --prompt Q {tok} "
                    "--encoder-tokenizer {inputs}/junk.model", "junk.model: unknown tokenizer format", []),
    "generate: a run with no intact checkpoint": (
        "generate", "generate --encoder {root}/run_damaged --decoder {root}/run --prompt Q {tok}",
        "no checkpoint reads", []),
    "generate: a decoder head the encoder lacks": (
        "generate", "generate --encoder {root}/run --decoder {root}/run --context {inputs}/context.txt --prompt Q "
                    "--decoder-index 3 {tok}", "decoder_index=3", []),
    "bench train: config file missing": (
        "bench", "bench train --config {inputs}/missing.py", "config file not found", []),
    "bench train: override of the wrong type": (
        "bench", "bench train --config {config} --config.model.encoder.backbone.dim=wide", "expected int", []),
    "bench train: no timed steps": (
        "bench train", "bench train --config {config} --steps 0", "argument --steps: 0: expected an int >= 1", []),
    "bench inference: a negative context length": (
        "bench inference", "bench inference --context-lens -5 --out {root}/bench",
        "argument --context-lens: -5: expected an int >= 1", ["bench"]),
    "plan: unknown topology": (
        "plan", "plan --config {config} --topology v9z-3", "unknown topology 'v9z-3'", []),
    "demo: a workdir that is a file": (
        "demo", "demo --smoke --workdir {inputs}/a_file", "a_file", []),
}


def argv_of(template: str, r) -> list[str]:
    """The arguments of a case's template (the last of two --encoder-tokenizer options wins)."""
    tok = f"--encoder-tokenizer {r.tokenizer} --decoder-tokenizer {r.tokenizer}"
    return template.format(root=r.root, inputs=r.root / "inputs", config=CONFIG, data=r.data, tok=tok).split()


@pytest.mark.parametrize("case", list(CASES))
def test_an_expected_failure_is_one_line_a_non_zero_exit_and_nothing_half_written(case, run, capsys, monkeypatch):
    monkeypatch.setenv("ARC_JAX_DEBUG", "0")  # off, and unset again after the test
    command, template, fragment, outputs = CASES[case]
    before = sorted(p.name for p in run.root.iterdir())
    try:
        code = main(argv_of(template, run))
    except SystemExit as e:  # argparse's usage errors exit
        code = e.code
    out, err = capsys.readouterr()
    lines = error_lines(err)
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith(f"arc-jax {command}: error: "), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert not [name for name in outputs if (run.root / name).exists()]
    # Nothing else written either, but for a workdir made before its input failed (left empty).
    new = [p for p in run.root.iterdir() if p.name not in before]
    assert all(p.is_dir() and not any(p.iterdir()) for p in new), new
    for p in new:
        p.rmdir()


def test_a_refused_restart_leaves_the_workdir_as_it_was(run, capsys):
    workdir = run.root / "run"
    before = {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in workdir.rglob("*")}
    argv = [*run.train_args, "--config.seed=9"]
    assert main(argv) == 2
    assert len(error_lines(capsys.readouterr().err)) == 1
    assert {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in workdir.rglob("*")} == before


def test_ctrl_c_during_training_stops_in_one_line_with_the_checkpoints_intact(run, tmp_path):
    """SIGINT after step 3's line: exit 130, one line, and every checkpoint left restores."""
    workdir = tmp_path / "run"
    # `python -m arc_jax.cli train ...` with SIGINT's handler set first: a shell without job control
    # starts background commands with SIGINT ignored, which their children inherit (Python then leaves
    # it ignored), so a suite run with `... &` would see the run finish all its steps instead.
    cli = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "from arc_jax.cli import main; sys.exit(main())")
    cmd = [sys.executable, "-u", "-c", cli, "train", "--config", str(CONFIG), "--workdir", str(workdir),
           "--log-every", "1", "--config.max_steps=200", "--config.checkpoint_every=2",
           "--config.optimizer.warmup_steps=1", "--config.eval.every=0", f"--config.data.dir={run.data}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        for line in proc.stdout:
            if line.startswith("step      3 "):
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["arc-jax train: interrupted (Ctrl-C)"], err
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())
    assert steps and all(step % 2 == 0 for step in steps), steps
    for step in steps:
        saved_state(workdir, step)  # restores


@pytest.mark.parametrize("how", ["--debug first", "--debug after the subcommand", "ARC_JAX_DEBUG=1"])
def test_debug_shows_the_traceback_of_an_expected_failure(how, run, monkeypatch):
    from arc_jax.errors import ConfigError

    monkeypatch.setenv("ARC_JAX_DEBUG", "0")  # off, and unset again after the test
    argv = ["train", "--config", f"{run.root}/inputs/missing.py", "--workdir", f"{run.root}/new"]
    if how == "--debug first":
        argv = ["--debug", *argv]
    elif how == "--debug after the subcommand":
        argv = [*argv, "--debug"]
    else:
        monkeypatch.setenv("ARC_JAX_DEBUG", "1")
    with pytest.raises(ConfigError, match="config file not found"):
        main(argv)


def test_debug_prints_the_traceback_from_the_console_script(run):
    cmd = [sys.executable, "-m", "arc_jax.cli", "--debug", "train", "--config", f"{run.root}/inputs/missing.py",
           "--workdir", f"{run.root}/new"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("Traceback (most recent call last):"), done.stderr
    assert done.stderr.strip().endswith("config file not found")


def test_only_orbax_abandoned_futures_are_quietened(monkeypatch, caplog):
    """The noise filters drop Orbax's closed-loop tracebacks and nothing else."""
    from arc_jax.train import checkpoint

    seen = []
    monkeypatch.setenv("ARC_JAX_DEBUG", "0")  # off, and unset again after the test
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    checkpoint.drop_abandoned_future_noise()
    sys.unraisablehook(SimpleNamespace(exc_value=RuntimeError("Event loop is closed")))
    other = SimpleNamespace(exc_value=RuntimeError("something else"))
    sys.unraisablehook(other)
    assert seen == [other]
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        logging.getLogger("asyncio").error("Future exception was never retrieved")
    assert "never retrieved" in caplog.text  # not from Orbax: kept
