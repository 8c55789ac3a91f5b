"""Combining the predictors' candidates into one ranked list.

Two policies:

``linear``
    weighted interpolation: score = sum of weight x probability over the predictors that
    proposed anything, divided by the sum of their weights (so it stays a probability even
    when a predictor was skipped for this keystroke, and a word every predictor backs wins);
``max``
    meritocracy: score = the best weight x probability any predictor gave (presage's default).

The same word from several predictors (compared lower-case, apostrophe style aside) becomes
one suggestion listing all its sources, strongest first, written as the strongest source
wrote it.
"""

from __future__ import annotations

from collections.abc import Sequence

from predtext.engine.context import normalize_word
from predtext.engine.protocol import Candidate
from predtext.engine.suggestion import Suggestion

POLICIES = ("linear", "max")

Proposal = tuple[str, float, Sequence[Candidate]]   # (predictor name, weight, candidates)


def combine(proposals: Sequence[Proposal], policy: str = "linear") -> list[Suggestion]:
    """All candidates merged and ranked by score (best first), as Suggestions with replace=0."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    # A predictor with nothing to say (a dictionary at a word boundary) holds no distribution
    # over the candidates, so it does not dilute the others.
    total_weight = sum(weight for _, weight, candidates in proposals if candidates)
    merged: dict[str, dict] = {}
    for name, weight, candidates in proposals:
        for text, probability in candidates:
            contribution = weight * probability
            key = normalize_word(text)
            entry = merged.get(key)
            if entry is None:
                entry = merged[key] = {"text": text, "best": -1.0, "sum": 0.0, "max": 0.0,
                                       "sources": {}}
            if contribution > entry["best"]:
                entry["best"], entry["text"] = contribution, text
            entry["sum"] += contribution
            entry["max"] = max(entry["max"], contribution)
            entry["sources"][name] = max(entry["sources"].get(name, 0.0), contribution)
    suggestions = []
    for entry in merged.values():
        if policy == "linear":
            score = entry["sum"] / total_weight if total_weight > 0 else 0.0
        else:
            score = entry["max"]
        names = sorted(entry["sources"], key=lambda n: -entry["sources"][n])
        source = names[0] if len(names) == 1 else tuple(names)
        suggestions.append(Suggestion(entry["text"], 0, min(score, 1.0), source))
    suggestions.sort(key=lambda s: -s.score)
    return suggestions
