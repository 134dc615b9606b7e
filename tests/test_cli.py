"""The arc-jax command line: help texts, convert/export through main(), one-line errors."""

import subprocess
import sys
from pathlib import Path

import pytest

from arc_jax.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [[], ["convert"], ["export"], ["roundtrip"]])
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(command + ["--help"])
    assert exit_info.value.code == 0
    assert len(capsys.readouterr().out.splitlines()) > 5


def test_console_script_is_installed():
    out = subprocess.run([Path(sys.executable).parent / "arc-jax", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "convert" in out.stdout and "export" in out.stdout


def test_convert_then_export_encoder(tmp_path, capsys):
    from arc_jax.inference.api import Encoder
    from arc_jax.tools.roundtrip import random_params, tiny_configs

    enc_cfg, dec_cfg = tiny_configs()
    enc_params, _ = random_params(enc_cfg, dec_cfg, seed=0)
    Encoder(enc_cfg, enc_params).save(tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), str(tmp_path / "released"), "--format", "released"]) == 0
    assert (tmp_path / "released" / "model.safetensors").is_file()
    assert main(["convert", str(tmp_path / "released"), str(tmp_path / "back"), "--dtype", "bfloat16"]) == 0
    assert "wrote encoder" in capsys.readouterr().out
    import arc_jax
    assert str(arc_jax.load_encoder(tmp_path / "back").dtype) == "bfloat16"


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    assert main(["convert", str(tmp_path / "junk"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the (empty) progress bar
    assert err.startswith("arc-jax convert: error: ") and "junk" in err and "unknown" in err
    assert not (tmp_path / "out").exists()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in (ROOT / "README.md").read_text()
    assert ci.endswith("python -m pytest tests")


def test_convert_fresh_encoder_from_a_decoder_backbone(tmp_path, capsys):
    import numpy as np

    import arc_jax
    from arc_jax.inference.api import DecoderLM
    from arc_jax.tools.roundtrip import random_params, tiny_configs

    enc_cfg, dec_cfg = tiny_configs()
    _, dec_params = random_params(enc_cfg, dec_cfg, seed=0)
    DecoderLM(dec_cfg, dec_params).save(tmp_path / "backbone", format="hf")
    assert main(["convert", "--fresh-encoder", str(tmp_path / "backbone"), str(tmp_path / "enc"),
                 "--n-truncated-layers", "1", "--compress-rates", "-4", "--decoder-dims", "96", "64",
                 "--projector-hidden", "16"]) == 0
    assert "fresh encoder (1 layers, pooling [-4], 2 decoder head(s))" in capsys.readouterr().out
    enc = arc_jax.load_encoder(tmp_path / "enc")
    first_layer = np.asarray(dec_params["layers"]["block"]["attention"]["wq"][0])
    np.testing.assert_array_equal(np.asarray(enc.params["pooling_layers_0"]["attention"]["wq"]), first_layer)
    assert [c.shape for c in enc.compress([[1, 2, 3, 4, 5]], decoder=1)] == [(3, 64)]


@pytest.mark.parametrize("name", ["DataError", "ConfigError", "ConversionError", "TrainingError"])
def test_every_expected_failure_is_an_arc_jax_error(name):
    from arc_jax import errors

    assert issubclass(getattr(errors, name), errors.ArcJaxError)


def test_old_error_locations_and_bases_still_hold():
    from arc_jax import errors
    from arc_jax.config_loading import ConfigError
    from arc_jax.convert import ConversionError
    from arc_jax.data.bad_records import DataError
    from arc_jax.train.errors import TrainingStopped

    assert (ConfigError, ConversionError, DataError) == (errors.ConfigError, errors.ConversionError, errors.DataError)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(TrainingStopped, errors.TrainingError) and issubclass(TrainingStopped, RuntimeError)


@pytest.mark.parametrize("command, message", [
    (["data", "check", "--config", "{tmp}/missing.py"], "arc-jax data: error: {tmp}/missing.py: config file not found"),
    (["convert", "{tmp}/missing", "{tmp}/out"], "arc-jax convert: error: {tmp}/missing: no such file or folder"),
])
def test_config_and_conversion_errors_print_the_same_one_line(command, message, tmp_path, capsys):
    assert main([part.format(tmp=tmp_path) for part in command]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message.format(tmp=tmp_path)
