"""Every test runs with the user's data and config out of reach: the data directory, the
config file and the XDG directories point into a temporary directory of the test's own (a
test that needs other places sets them itself)."""

import pytest


@pytest.fixture(autouse=True)
def _no_user_data(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("PREDTEXT_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg-config"))
