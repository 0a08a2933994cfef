"""Fixtures shared across test packages."""

import pytest


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny really-trained run (see support.trained_run), trained once per session."""
    from support.trained_run import make_trained_run

    return make_trained_run(tmp_path_factory.mktemp("trained"))


@pytest.fixture
def smoke_cfg(tmp_path):
    """``smoke_cfg(*overrides)``: smoke params on CPU with the image cache in the test's own folder."""
    from support.train_helpers import smoke_config

    return lambda *overrides: smoke_config(tmp_path, *overrides)
