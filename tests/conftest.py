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
