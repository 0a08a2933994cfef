import pytest

from support.trained_run import make_trained_run


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    return make_trained_run(tmp_path_factory.mktemp("trained"))
