"""The server's settings, from ``initializationOptions`` and ``workspace/didChangeConfiguration``,
and which saved files may be learned from.

Settings are a JSON object, either flat or under a ``"predtext"`` key::

    {"k": 6, "model": null, "config": null, "learning": false, "excludeFolders": [],
     "languages": ["plaintext", "text", "markdown", "git-commit", "gitcommit"]}
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Any

MAX_K = 50

#: Prose: plain text (VS Code's and Helix's names), Markdown, git commit messages (VS Code and
#: Helix say "git-commit", Neovim "gitcommit"). Code is left alone unless the settings list it.
DEFAULT_LANGUAGES = ("plaintext", "text", "markdown", "git-commit", "gitcommit")

#: Files never learned from, whatever the settings say: secrets and keys. Matched on the file
#: name (case-insensitive), and any file under one of SECRET_FOLDERS.
SECRET_NAMES = (".env", ".env.*", "*.env", ".envrc", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks",
                "*.keystore", "*.kdbx", "*.gpg", "*.pgp", "*.asc", "id_rsa*", "id_dsa*",
                "id_ecdsa*", "id_ed25519*", ".netrc", ".pgpass", ".npmrc", ".pypirc",
                ".git-credentials", "credentials*", "*secret*", "*password*", "*token*")
SECRET_FOLDERS = (".ssh", ".gnupg", ".aws", ".password-store", ".kube", ".docker")


@dataclass(frozen=True)
class Settings:
    k: int = 6
    model: str | None = None
    config: str | None = None
    learning: bool = False
    exclude_folders: tuple[str, ...] = ()
    languages: tuple[str, ...] = field(default=DEFAULT_LANGUAGES)

    def completes(self, language_id: str) -> bool:
        return "*" in self.languages or language_id in self.languages


_KEYS = {"k": "k", "model": "model", "config": "config", "learning": "learning",
         "excludeFolders": "exclude_folders", "languages": "languages"}


def updated(settings: Settings, options: Any) -> tuple[Settings, list[str]]:
    """``settings`` with what ``options`` sets; and one line for each setting refused (those
    keep their value): an unknown key, or a value of the wrong kind."""
    if options is None:
        return settings, []
    if isinstance(options, Mapping) and isinstance(options.get("predtext"), Mapping):
        options = options["predtext"]
    if not isinstance(options, Mapping):
        return settings, [f"settings must be an object, got {type(options).__name__}"]
    changes, problems = {}, []
    for key, value in options.items():
        name = _KEYS.get(key)
        if name is None:
            problems.append(f"unknown setting {key!r} (known: {', '.join(_KEYS)})")
            continue
        try:
            changes[name] = _checked(key, value)
        except ValueError as error:
            problems.append(str(error))
    return replace(settings, **changes), problems


def _checked(key: str, value: Any) -> Any:
    if key == "k":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_K:
            raise ValueError(f"setting k must be a whole number from 1 to {MAX_K}, got {value!r}")
        return value
    if key in ("model", "config"):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"setting {key} must be a file path or null, got {value!r}")
        return value
    if key == "learning":
        if not isinstance(value, bool):
            raise ValueError(f"setting learning must be true or false, got {value!r}")
        return value
    if not isinstance(value, Sequence) or isinstance(value, str) \
            or not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"setting {key} must be a list of strings, got {value!r}")
    return tuple(value)


def is_secret(path: PurePath) -> bool:
    """Whether ``path`` looks like a file of secrets or keys (never learned from)."""
    name = path.name.lower()
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in SECRET_NAMES):
        return True
    return any(part.lower() in SECRET_FOLDERS for part in path.parts[:-1])


def may_learn(path: Path, settings: Settings, roots: Sequence[Path] = ()) -> bool:
    """Whether a saved file at ``path`` may be learned from: learning is on, the file is no
    secret, and it is in none of the excluded folders (absolute, ``~/...``, or relative to a
    workspace folder in ``roots``)."""
    if not settings.learning or is_secret(path):
        return False
    path = Path(os.path.abspath(path))
    for folder in settings.exclude_folders:
        folder = os.path.expanduser(folder)
        bases = [Path(folder)] if os.path.isabs(folder) else [root / folder for root in roots]
        for base in bases:
            base = Path(os.path.abspath(base))
            if path == base or base in path.parents:
                return False
    return True
