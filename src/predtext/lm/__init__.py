"""Language models over text: tokenizers, corpora, the recurrent model, training, sampling.

    from predtext.lm import LanguageModel, TrainConfig, train

    result = train(["notes/"], "notes.safetensors", TrainConfig(time_budget=600))
    model = LanguageModel.load("notes.safetensors")
    print(model.generate("Dear ", 100, temperature=0.8, seed=1))

Names are imported on first use, so importing one submodule stays cheap.
"""

_EXPORTS = {
    "LanguageModel": "predtext.lm.model",
    "LMState": "predtext.lm.model",
    "default_model_path": "predtext.lm.model",
    "TrainConfig": "predtext.lm.train",
    "TrainResult": "predtext.lm.train",
    "TrainingError": "predtext.lm.train",
    "train": "predtext.lm.train",
    "fit": "predtext.lm.train",
    "evaluate": "predtext.lm.train",
    "generate": "predtext.lm.generate",
    "beam_search": "predtext.lm.generate",
    "Continuation": "predtext.lm.generate",
    "word_boundary_ids": "predtext.lm.generate",
    "CharTokenizer": "predtext.lm.tokenizers",
    "WordTokenizer": "predtext.lm.tokenizers",
    "tokenizer_from_json": "predtext.lm.tokenizers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'predtext.lm' has no attribute {name!r}")
