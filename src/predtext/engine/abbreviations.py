"""Abbreviation predictor: a user table that expands a typed abbreviation (brb -> be right back).

The table is TOML, either flat or under an ``[abbreviations]`` table::

    [abbreviations]
    brb = "be right back"
    afaik = "as far as I know"

It lives at ``abbreviations.toml`` in the user config directory unless the predictor's ``path``
option names another file; entries may also be given inline in the engine config
(``[predictors.abbreviations.table]``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from predtext.engine.config import ConfigError, tomllib, user_config_dir
from predtext.engine.context import Context, is_partial_word, normalize_word
from predtext.engine.protocol import Candidate, Resources

TABLE_FILE = "abbreviations.toml"

log = logging.getLogger("predtext.engine")


def _validated(entries: Mapping[str, Any], source: str) -> dict[str, str]:
    table, unusable = {}, []
    for abbreviation, expansion in entries.items():
        if not isinstance(expansion, str) or not expansion.strip():
            raise ConfigError(source, f"abbreviation {abbreviation!r} must expand to text, "
                                      f"got {expansion!r}")
        key = abbreviation.strip()
        if not key:
            raise ConfigError(source, "an abbreviation is empty")
        # Only the word being typed is looked up, so a key that cannot be one ("omw!", "c u")
        # would never fire: say so, and keep the rest of the table.
        if not is_partial_word(key):
            unusable.append(abbreviation)
            continue
        table[normalize_word(key)] = expansion.strip()
    if unusable:
        log.warning("%s: abbreviations %s left out: a key must be one word (letters and digits, "
                    "with ' or - inside or at the end), as it is matched against the word "
                    "before the cursor",
                    source, ", ".join(repr(a) for a in unusable))
    return table


def load_table(path) -> dict[str, str]:
    """Abbreviation -> expansion from a TOML file. Raises ConfigError naming the file."""
    try:
        data = tomllib.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "no such abbreviation table") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(path, f"not a readable TOML abbreviation table: {exc}") from None
    entries = data.get("abbreviations", data)
    if not isinstance(entries, Mapping):
        raise ConfigError(path, "[abbreviations] must be a table of abbreviation = \"expansion\"")
    return _validated(entries, str(path))


class AbbreviationPredictor:
    """Offers the expansion when the typed word is exactly an abbreviation of the table.

    The expansion replaces the abbreviation; its probability is 1 (the user typed the key).
    """

    inline = True     # bounded work: run in the caller's thread (see PredictorRunner)

    def __init__(self, table: Mapping[str, str], name: str = "abbreviations"):
        self.name = name
        self.table = _validated(table, "<table>")

    def predict(self, context: Context, k: int) -> list[Candidate]:
        if not context.prefix:
            return []
        expansion = self.table.get(normalize_word(context.prefix))
        return [Candidate(expansion, 1.0)] if expansion else []


def make_predictor(options: Mapping[str, Any], resources: Resources) -> AbbreviationPredictor:
    """Factory for ``type = "abbreviations"``: ``path`` and/or an inline ``table``.

    Without ``path``, the user's ``abbreviations.toml`` is read when it exists (else the table
    is empty); a ``path`` that does not exist is an error.
    """
    table: dict[str, str] = {}
    path = options.get("path")
    if path:
        table.update(load_table(os.path.expanduser(str(path))))
    else:
        default = user_config_dir() / TABLE_FILE
        if default.exists():
            table.update(load_table(default))
    inline = options.get("table", {})
    if not isinstance(inline, Mapping):
        raise ConfigError("<config>", "predictors.abbreviations.table must be a table")
    table.update(_validated(inline, "<config>"))
    return AbbreviationPredictor(table, name=str(options.get("name", "abbreviations")))
