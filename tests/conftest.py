"""Every test runs with the user's data and config out of reach: the data directory, the
config file and the XDG directories point into a temporary directory of the test's own (a
test that needs other places sets them itself)."""

import numpy
import pytest

#: The training tests' corpus: five short sentences, drawn 120 times (seeded).
SENTENCES = ["the cat sat on the mat.", "a dog ran to the log.", "the bird sang in a tree.",
             "my hat is on the bed.", "we ate the red jam."]


@pytest.fixture(autouse=True)
def _no_user_data(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("PREDTEXT_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg-config"))


@pytest.fixture
def corpus(tmp_path):
    """A small training file of SENTENCES (a test file may define its own ``corpus``)."""
    rng = numpy.random.default_rng(0)
    text = "\n".join(SENTENCES[i] for i in rng.integers(0, len(SENTENCES), 120)) + "\n"
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    return path
