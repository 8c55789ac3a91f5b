"""The predictive-text engine: predictors, their combination, and keystroke-savings measurement.

    from predtext.engine import Engine, NGramModel
    engine = Engine.load(model="notes.safetensors")    # a model file from `predtext train`
    engine = Engine.load(model=NGramModel.from_text(open("my_text.txt").read()))  # n-gram only
    engine.suggest("I would like to ")       # next words
    engine.suggest("I would like to rea")    # completions of "rea"
    engine.learn("a line the user wrote")

Names are imported lazily, so ``import predtext.engine`` stays cheap.
"""

import importlib

_EXPORTS = {
    "Engine": "predtext.engine.engine",
    "Suggestion": "predtext.engine.suggestion",
    "Candidate": "predtext.engine.protocol",
    "Predictor": "predtext.engine.protocol",
    "Resources": "predtext.engine.protocol",
    "register_predictor": "predtext.engine.predictor",
    "available_predictors": "predtext.engine.predictor",
    "Context": "predtext.engine.context",
    "parse_context": "predtext.engine.context",
    "combine": "predtext.engine.combiner",
    "EngineConfig": "predtext.engine.config",
    "ConfigError": "predtext.engine.config",
    "load_config": "predtext.engine.config",
    "config_path": "predtext.engine.config",
    "DEFAULT_CONFIG_TOML": "predtext.engine.config",
    "NGramModel": "predtext.lm.ngram",
    "NGramPredictor": "predtext.engine.ngram",
    "Dictionary": "predtext.engine.dictionary",
    "DictionaryPredictor": "predtext.engine.dictionary",
    "HistoryPredictor": "predtext.engine.history",
    "forget_history": "predtext.engine.history",
    "AbbreviationPredictor": "predtext.engine.abbreviations",
    "NeuralPredictor": "predtext.engine.neural",
    "KsrReport": "predtext.engine.ksr",
    "simulate": "predtext.engine.ksr",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'predtext.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
