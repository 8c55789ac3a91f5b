"""Neural-network building blocks with PyTorch's names, trained through ``begin_update``.

``Module.begin_update(x)`` returns ``(output, backprop)``; ``backprop(d_output)`` adds
parameter gradients into ``Parameter.grad`` and returns the gradient for the input.
"""

from predtext.nn import init
from predtext.nn.clip import clip_grad_norm_, clip_grad_value_, total_grad_norm
from predtext.nn.init import get_rng, manual_seed
from predtext.nn.layers import Dropout, Embedding, Linear, LockedDropout, Sequential
from predtext.nn.losses import (
                                CrossEntropyLoss,
                                MSELoss,
                                mse_loss,
                                softmax_cross_entropy,
                                softmax_cross_entropy_,
)
from predtext.nn.module import IncompatibleKeys, Module, Parameter, check_dtype
from predtext.nn.optim import SGD, Adam, AdamW, Optimizer, RMSprop
from predtext.nn.rnn import GRU, LSTM, RNN
from predtext.nn.schedules import CosineWithWarmup, LRScheduler, ReduceLROnPlateau, StepLR

__all__ = [
    "Module", "Parameter", "IncompatibleKeys", "check_dtype",
    "RNN", "LSTM", "GRU",
    "Linear", "Embedding", "Dropout", "LockedDropout", "Sequential",
    "CrossEntropyLoss", "MSELoss", "softmax_cross_entropy", "softmax_cross_entropy_", "mse_loss",
    "Optimizer", "SGD", "RMSprop", "Adam", "AdamW",
    "LRScheduler", "StepLR", "CosineWithWarmup", "ReduceLROnPlateau",
    "clip_grad_norm_", "clip_grad_value_", "total_grad_norm",
    "manual_seed", "get_rng", "init",
]
