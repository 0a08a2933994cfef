"""Fixtures shared across test packages."""

import pytest


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny really-trained run (see support.trained_run), trained once per session."""
    from support.trained_run import make_trained_run

    return make_trained_run(tmp_path_factory.mktemp("trained"))
