"""`t2ikit generate`, `t2ikit info`, `t2ikit models` end to end on a tiny folder."""

import json
import os

from PIL import Image

from t2ikit.cli import main
from t2ikit.cli.info import format_parameters, parse_parameters, read_parameters
from t2ikit.models.registry import SHIPPED_MODEL, known_models, resolve_model


def test_generate_writes_pngs_with_parameters(env, tmp_path, capsys):
    out = tmp_path / "img.png"
    rc = main(["generate", "a red circle", "--model", "tiny-sd", "--n", "2", "--steps", "2", "--seed", "4",
               "--negative", "blue, green", "--sampler", "euler", "--size", "16x8", "--out", str(out), "--quiet"])
    assert rc == 0
    paths = [tmp_path / "img-0.png", tmp_path / "img-1.png"]
    assert capsys.readouterr().out.split() == [str(p) for p in paths]
    assert Image.open(paths[0]).size == (16, 8)
    assert main(["info", str(paths[1]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == {
        "prompt": "a red circle",
        "negative_prompt": "blue, green",
        "settings": {"Steps": 2, "Sampler": "Euler", "CFG scale": 4.0, "Seed": 5, "Size": "16x8", "Model": "tiny-sd"},
    }
    assert main(["info", str(paths[0])]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("Steps: 2, Sampler: Euler, CFG scale: 4.0, Seed: 4")


def test_generate_bad_input_is_a_clean_error(env, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    for argv, message in [
        (["--sampler", "nope"], "unknown sampler 'nope'"),
        (["--steps", "0"], "steps must be"),
        (["--guidance", "-1"], "guidance must be"),
        (["--size", "15x16"], "multiples of 2"),
        (["--size", "big"], "WIDTHxHEIGHT"),
        (["--model", str(tmp_path / "none")], "neither a folder nor a known model"),
    ]:
        assert main(["generate", "a red circle", "--model", "tiny-sd", "--out", out, "--quiet", *argv]) == 2
        assert message in capsys.readouterr().err
    assert not os.path.exists(out)


def test_guidance_rescale_is_recorded_rerun_and_refused_out_of_range(env, tmp_path, capsys):
    out, again = tmp_path / "r.png", tmp_path / "again.png"
    argv = ["generate", "a red circle", "--model", "tiny-sd", "--steps", "2", "--seed", "3", "--quiet"]
    assert main([*argv, "--guidance-rescale", "0.7", "--out", str(out)]) == 0
    settings = parse_parameters(read_parameters(out))["settings"]
    assert settings["Guidance rescale"] == 0.7
    assert main(["generate", "--from", str(out), "--out", str(again), "--quiet"]) == 0
    assert parse_parameters(read_parameters(again))["settings"] == settings
    assert Image.open(out).tobytes() == Image.open(again).tobytes()  # same seed, same image
    plain = tmp_path / "plain.png"
    assert main([*argv, "--out", str(plain)]) == 0
    assert Image.open(out).tobytes() != Image.open(plain).tobytes()
    capsys.readouterr()
    assert main([*argv, "--guidance-rescale", "1.5", "--out", str(tmp_path / "bad.png")]) == 2
    assert "guidance_rescale must be a number in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()


def test_generate_warns_about_unknown_words(env, tmp_path, capsys):
    assert main(["generate", "a zebra", "--model", "tiny-sd", "--steps", "1", "--out", str(tmp_path / "z.png"),
                 "--quiet"]) == 0
    assert "warning: words not in the model's vocabulary" in capsys.readouterr().err


def test_missing_shipped_model_is_reported(env, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("t2ikit.models.registry.shipped_model_path", lambda: tmp_path / SHIPPED_MODEL)
    assert main(["generate", "a red circle", "--out", str(tmp_path / "a.png")]) == 2
    assert f"shipped model {SHIPPED_MODEL} is not installed" in capsys.readouterr().err
    entries = known_models()
    assert entries[0].shipped and entries[0].kind == "missing" and entries[1].name == "tiny-sd"


def test_models_lists_shipped_first_then_env_folders(env, models_dir, capsys):
    assert main(["models", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert entries[0]["name"] == SHIPPED_MODEL and entries[0]["shipped"]
    tiny = entries[1]
    assert tiny["name"] == "tiny-sd" and tiny["kind"] == "t2ikit word-level" and 1e4 < tiny["params"] < 1e7
    assert resolve_model("tiny-sd") == models_dir / "tiny-sd"
    assert main(["models"]) == 0
    assert "tiny-sd" in capsys.readouterr().out


def test_info_errors(tmp_path, capsys):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    assert main(["info", str(plain)]) == 2
    assert "no 'parameters' text chunk" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "none.png")]) == 2


def test_parameters_round_trip_multiline_and_quoted():
    text = format_parameters("a red\ncircle", "", {"Steps": 3, "Model": "a,b", "CFG scale": 7.5})
    assert "Negative prompt" not in text
    parsed = parse_parameters(text)
    assert parsed == {"prompt": "a red\ncircle", "negative_prompt": "", "settings": {"Steps": 3, "Model": "a,b", "CFG scale": 7.5}}
