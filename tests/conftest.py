"""Fixtures shared by the test files: one tiny random SD folder per session, a pipeline per module."""

import pytest
from tiny import make_tiny_sd_folder


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    """A tiny random Stable-Diffusion-style diffusers folder; tests copy it before changing anything."""
    return make_tiny_sd_folder(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def pipe(folder):
    """A fresh T2IPipeline on `folder` for each test module (a module may install hooks or change it)."""
    from t2ikit.pipeline import T2IPipeline

    return T2IPipeline.from_folder(folder)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A models folder holding one tiny folder named "tiny-sd" (what `--model tiny-sd` resolves to under `env`)."""
    root = tmp_path_factory.mktemp("models")
    make_tiny_sd_folder(root / "tiny-sd")
    return root


@pytest.fixture
def env(models_dir, monkeypatch):
    """The registry reads `models_dir` (T2IKIT_MODELS), offline."""
    monkeypatch.setenv("T2IKIT_MODELS", str(models_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tiny_protocol(tmp_path, monkeypatch):
    """The report's mini protocol at test sizes (tests/report_helpers.py); a root folder for its runs."""
    from report_helpers import tiny_mini_protocol

    return tiny_mini_protocol(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module (use with pytestmark): the machine is shared, and multi-threaded torch is
    slower than one thread here."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
