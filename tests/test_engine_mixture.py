"""The online mixture weight: a predictor's weight follows how well it foresaw the user's words."""

import pytest

from predtext.engine import mixture
from predtext.engine.config import ConfigError, EngineConfig
from predtext.engine.context import parse_context
from predtext.engine.engine import Engine
from predtext.engine.mixture import AdaptiveWeights
from predtext.engine.predictor import Candidate

PROPOSALS = [("pairs", 0.5, [Candidate("much", 0.6), Candidate("good", 0.2)]),
             ("model", 1.0, [Candidate("often", 0.5), Candidate("much", 0.1)])]


def written(weights, before, word, proposals=PROPOSALS):
    """The boundary after ``before`` proposed ``proposals``; then ``word`` was written."""
    weights.remember(parse_context(before), proposals)
    weights.settle(parse_context(before + word + " "))


def test_the_factor_rises_when_the_pairs_foresee_the_word_and_falls_when_they_miss():
    hits, misses = AdaptiveWeights(["pairs"]), AdaptiveWeights(["pairs"])
    risen, fallen = [], []
    for i in range(60):
        before = "thank you very " * (i + 1)
        written(hits, before, "much")
        written(misses, before, "often")
        risen.append(hits.factor("pairs"))
        fallen.append(misses.factor("pairs"))
    assert 1.0 < risen[0] < risen[5] <= risen[-1] == pytest.approx(mixture.HIGH)
    assert 1.0 > fallen[0] > fallen[5] >= fallen[-1] == pytest.approx(mixture.LOW)
    assert hits.factor("model") == misses.factor("model") == 1.0    # not adaptive
    # One step is the EM responsibility's: share s = 1/3, p = 0.6, q = 0.1.
    share, responsibility = 0.5 / 1.5, (0.6 / 3) / (0.6 / 3 + 2 / 3 * 0.1)
    moved = share + mixture.RATE * (responsibility - share)
    assert risen[0] == pytest.approx(moved / (1 - moved) * 2)
    hits.reset()
    assert hits.factor("pairs") == 1.0


def test_nothing_is_learned_without_evidence():
    weights = AdaptiveWeights(["pairs"])
    written(weights, "thank you very ", "nice")          # neither list held it
    assert weights.factor("pairs") == pytest.approx(1.0)
    silent = [("pairs", 0.5, []), PROPOSALS[1]]          # the pairs said nothing here
    written(weights, "Stop. ", "often", silent)
    assert weights.factor("pairs") == 1.0
    # The text before the boundary was changed (backspaced over): no word of it is judged.
    weights.remember(parse_context("thank you very "), PROPOSALS)
    weights.settle(parse_context("thank you so much "))
    assert weights.factor("pairs") == 1.0
    # While the word is still being typed the boundary waits; the first word written counts.
    weights.remember(parse_context("thank you very "), PROPOSALS)
    weights.settle(parse_context("thank you very mu"))
    assert weights.factor("pairs") == 1.0
    weights.settle(parse_context("thank you very much, often "))
    assert weights.factor("pairs") > 1.0


def test_every_keystroke_of_the_word_counts():
    weights = AdaptiveWeights(["pairs"])
    weights.remember(parse_context("we need a "), PROPOSALS)      # neither holds "nice"
    weights.settle(parse_context("we need a n"))
    typed = [("pairs", 0.5, [Candidate("nice", 0.9)]), ("model", 1.0, [Candidate("new", 0.8)])]
    weights.remember(parse_context("we need a n"), typed)
    elsewhere = [("pairs", 0.5, [Candidate("nice", 0.9)])]       # another word's keystroke
    weights.remember(parse_context("we need an n"), elsewhere)
    weights.settle(parse_context("we need a nice "))
    # The boundary pulls by nothing; the keystroke "n" by its responsibility; the mean of two.
    share = 1 / 3
    responsibility = share * 0.9 / (share * 0.9 + (1 - share) * mixture.FLOOR)
    moved = share + mixture.RATE * (responsibility - share) / 2
    assert weights.factor("pairs") == pytest.approx(moved / (1 - moved) * 2)


class Fixed:
    """Offers the same next words at every boundary."""

    def __init__(self, name, candidates):
        self.name, self.candidates = name, candidates

    def predict(self, context, k):
        return [] if context.prefix else self.candidates[:k]


def _engine(adapt):
    config = EngineConfig.from_dict({"engine": {"time_budget_ms": 60_000},
                                     "predictors": {"pairs": {"weight": 1.0, "adapt": adapt},
                                                    "model": {"weight": 1.0}}},
                                    over_defaults=False)
    return Engine([Fixed("pairs", [Candidate("alpha", 0.6), Candidate("beta", 0.1)]),
                   Fixed("model", [Candidate("beta", 0.4)])], config)


@pytest.mark.parametrize("adapt", [True, False])
def test_an_engine_weighs_an_adaptive_predictor_by_what_the_user_wrote(adapt):
    with _engine(adapt) as engine:
        text = "so "
        assert engine.suggest(text)[0].text == "alpha"       # 0.6 / 2 against 0.5 / 2
        for _ in range(30):
            engine.suggest(text)
            text += "beta "
        # The pairs kept missing: their weight fell, and the model's word comes first.
        assert engine.suggest(text)[0].text == ("beta" if adapt else "alpha")
        engine.forget()
        assert engine.suggest(text + "x ")[0].text == "alpha"


def test_adapt_must_be_true_or_false():
    with pytest.raises(ConfigError, match="predictors.bigrams.adapt"):
        EngineConfig.from_dict({"predictors": {"bigrams": {"adapt": "yes"}}})
    adapting = [p.name for p in EngineConfig.from_dict({}).predictors if p.adapt]
    assert adapting == ["bigrams"]
