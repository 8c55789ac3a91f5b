"""Engine configuration: which predictors run, their weights and options, read from TOML.

The config file lives at ``$PREDTEXT_CONFIG`` if set, else ``$XDG_CONFIG_HOME/predtext/config.toml``
(``~/.config/predtext/config.toml``). When it does not exist the defaults below apply. User data
(the typing history) lives under ``$PREDTEXT_DATA_DIR`` if set, else ``$XDG_DATA_HOME/predtext``
(``~/.local/share/predtext``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predtext.errors import PredtextError

try:
    import tomllib
except ModuleNotFoundError:      # Python 3.10
    import tomli as tomllib

DEFAULT_CONFIG_TOML = """\
# predtext engine configuration.
# Each [predictors.NAME] table runs one predictor; `type` defaults to NAME.
# A config file changes these defaults: it needs only the settings it changes, and
# `enabled = false` in a predictor's table turns that predictor off.

[engine]
combination = "linear"    # "linear" (weighted sum) or "max" (meritocracy)
time_budget_ms = 40       # a predictor slower than this is skipped for that keystroke
repeat_suggestions = false  # offer again what was passed over for the word being typed?
                            # (the best stays anyway)
learn = true              # learn from what you write (Engine.learn)
word_list = true          # a modern English word list (wordfreq) beside the model's words
# model = "~/models/notes.safetensors"   # model file to load (default: the packaged model)

[predictors.neural]       # the language model: beam search over characters, or next words
weight = 1.0
invented_words = false    # offer spellings no vocabulary, word list or writing of yours knows?
unknown_weight = 0.2      # with invented_words: such a spelling counts less ("soonly")
unknown_min = 0.02        # ... and is not offered at all below this probability
weights = "int8"          # step an 8-bit copy of the model (quicker keystrokes), or "float"
# device = "cuda"         # run the model on a GPU (needs CuPy); keystrokes are tiny steps,
                          # so the CPU (the default) is usually as quick

[predictors.ngram]        # n-gram of the loaded model's corpus
weight = 0.65
phrase_words = 3          # offer a phrase ("as soon as") of up to this many words; 1: words only
phrase_threshold = 0.5    # ... when each word after the first is at least this likely

[predictors.history]      # what you have written: your own n-gram plus recency
weight = 0.35

[predictors.bigrams]      # which word follows the last one in today's English (word pairs
weight = 0.5              # from Google Books Ngrams, shipped by symspellpy; `path` for others)
adapt = true              # its weight follows how well it foresees the words you write

[predictors.dictionary]   # word list: the model vocabulary, or `path`, or /usr/share/dict/words
weight = 0.02

[predictors.abbreviations]  # your table: brb = "be right back"; `path` to a TOML file
weight = 1.0

[predictors.typos]        # corrections of a word typed with a slip ("teh" -> the), to take or leave
weight = 1.0
context = true            # weigh them by the word before (the word pairs), when installed
"""

COMBINATION_POLICIES = ("linear", "max")
MAX_TIME_BUDGET_MS = 3_600_000.0


class ConfigError(PredtextError):
    """The config file is missing, unreadable or holds a bad value; the message names the file."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def user_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "predtext"


#: The terminal's line history (recalled with the up arrow), in :func:`user_data_dir`. Named here,
#: below the terminal, because ``predtext forget`` erases it with the typing history.
REPL_HISTORY_FILE = "repl_history"


def user_data_dir() -> Path:
    """Where predtext keeps user data (the typing history, the terminal's line history)."""
    override = os.environ.get("PREDTEXT_DATA_DIR")
    if override:
        return Path(override)
    base = (os.environ.get("XDG_DATA_HOME")
            or os.path.join(os.path.expanduser("~"), ".local", "share"))
    return Path(base) / "predtext"


def config_path() -> Path:
    """The config file the engine reads when none is named."""
    override = os.environ.get("PREDTEXT_CONFIG")
    return Path(override) if override else user_config_dir() / "config.toml"


@dataclass
class PredictorConfig:
    """One ``[predictors.NAME]`` table: ``type``, ``weight``, ``enabled`` and free options."""

    name: str
    type: str
    weight: float = 1.0
    enabled: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    adapt: bool = False     # the weight follows how well it foresees the user's words


@dataclass
class EngineConfig:
    """The engine's settings and the predictors it runs (in order)."""

    combination: str = "linear"
    time_budget_ms: float | None = 40.0
    repeat_suggestions: bool = False
    learn: bool = True
    word_list: bool = True
    model: str | None = None
    predictors: list[PredictorConfig] = field(default_factory=list)
    source: str = "<defaults>"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>",
                  over_defaults: bool = True) -> EngineConfig:
        """Validate a parsed TOML document. Raises :class:`ConfigError` naming ``source``.

        With ``over_defaults`` the document changes the default configuration: its
        ``[engine]`` settings replace the defaults' one by one, a predictor table adds to the
        default table of that name (unless it names another ``type``), and a predictor the
        document does not mention keeps running as by default.
        """
        def fail(problem):
            raise ConfigError(source, problem)

        if not isinstance(data, Mapping):
            fail("a config is a table of [engine] and [predictors.NAME], "
                 f"got {type(data).__name__}")
        if over_defaults:
            data = _over_defaults(data)
        unknown = set(data) - {"engine", "predictors"}
        if unknown:
            fail(f"unknown section(s) {sorted(unknown)} (expected [engine] and [predictors.NAME])")
        engine = data.get("engine", {})
        if not isinstance(engine, Mapping):
            fail("[engine] must be a table")
        config = cls(source=source)
        for key, value in engine.items():
            if key == "combination":
                if value not in COMBINATION_POLICIES:
                    fail(f"engine.combination must be one of {COMBINATION_POLICIES}, got {value!r}")
                config.combination = value
            elif key == "time_budget_ms":
                if (isinstance(value, bool) or not isinstance(value, (int, float))
                        or not 0 < value <= MAX_TIME_BUDGET_MS):
                    fail(f"engine.time_budget_ms must be a number of milliseconds above 0 and "
                         f"at most {MAX_TIME_BUDGET_MS:.0f}, got {value!r}")
                config.time_budget_ms = float(value)
            elif key == "model":
                if not isinstance(value, str) or not value.strip():
                    fail(f"engine.model must be the path of a model file, got {value!r}")
                config.model = value
            elif key in ("repeat_suggestions", "learn", "word_list"):
                if not isinstance(value, bool):
                    fail(f"engine.{key} must be true or false, got {value!r}")
                setattr(config, key, value)
            else:
                fail(f"unknown setting engine.{key}")
        predictors = data.get("predictors", {})
        if not isinstance(predictors, Mapping):
            fail("[predictors] must hold one table per predictor: [predictors.NAME]")
        for name, table in predictors.items():
            if not isinstance(table, Mapping):
                fail(f"predictors.{name} must be a table")
            options = dict(table)
            kind = options.pop("type", name)
            weight = options.pop("weight", 1.0)
            enabled = options.pop("enabled", True)
            adapt = options.pop("adapt", False)
            if not isinstance(kind, str) or not kind:
                fail(f"predictors.{name}.type must be a name, got {kind!r}")
            if not is_weight(weight):
                fail(f"predictors.{name}.weight must be a finite number >= 0, got {weight!r}")
            if not isinstance(enabled, bool):
                fail(f"predictors.{name}.enabled must be true or false, got {enabled!r}")
            if not isinstance(adapt, bool):
                fail(f"predictors.{name}.adapt must be true or false, got {adapt!r}")
            options.setdefault("name", name)
            config.predictors.append(PredictorConfig(name, kind, float(weight), enabled, options,
                                                     adapt))
        return config


def is_weight(value) -> bool:
    """Whether ``value`` can weigh a predictor: a finite number >= 0."""
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value) and value >= 0)


def _over_defaults(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` laid over the default document (see :meth:`EngineConfig.from_dict`); the
    result shares the default document's tables, which are only read."""
    defaults = _DEFAULTS
    merged = dict(data)
    engine = data.get("engine", {})
    if isinstance(engine, Mapping):
        merged["engine"] = {**defaults["engine"], **engine}
    predictors = data.get("predictors", {})
    if isinstance(predictors, Mapping):
        tables = dict(defaults["predictors"])
        for name, table in predictors.items():
            base = tables.get(name)
            if (isinstance(table, Mapping) and base is not None
                    and table.get("type", name) == base.get("type", name)):
                table = {**base, **table}
            tables[name] = table
        merged["predictors"] = tables
    return merged


_DEFAULTS = tomllib.loads(DEFAULT_CONFIG_TOML)


def default_config() -> EngineConfig:
    return EngineConfig.from_dict(_DEFAULTS, "<defaults>", over_defaults=False)


def load_config(path: str | os.PathLike | None = None,
                over_defaults: bool = True) -> EngineConfig:
    """Read the config at ``path``; with ``None``, the user's config file, or the defaults.
    ``over_defaults``: see :meth:`EngineConfig.from_dict`.

    A named file that is missing, and any file that is not valid TOML or holds bad values,
    raises :class:`ConfigError` naming the file.
    """
    if path is None:
        path = config_path()
        if not path.exists():
            return default_config()
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, "no such config file") from None
    except OSError as exc:
        raise ConfigError(path, f"cannot read config ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path, f"config is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"config is not valid TOML: {exc}") from None
    return EngineConfig.from_dict(data, str(path), over_defaults)
