"""Language models over text: tokenizers, corpora, the recurrent model, training, sampling.

    from predtext.lm import LanguageModel, TrainConfig, train

    result = train(["notes/"], "notes.safetensors", TrainConfig(time_budget=600))
    model = LanguageModel.load("notes.safetensors")
    print(model.generate("Dear ", 100, temperature=0.8, seed=1))

Names are imported on first use, so importing one submodule stays cheap.

``train`` and ``generate`` are functions here, although ``predtext.lm.train`` and
``predtext.lm.generate`` are also the modules that define them (``from predtext.lm.train
import TrainConfig`` works as before): importing a submodule binds it as an attribute of
its package, and ``_Package`` puts the function of the same name there instead.
"""

import importlib
import sys
import types

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

#: Submodules named after the function they define: the package attribute is the function.
_SHADOWED = ("train", "generate")


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'predtext.lm' has no attribute {name!r}")


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        # The import system binds a loaded submodule here; keep its function instead.
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
