"""Temperature scaling (Guo et al. 2017): one scalar T per model, fitted on its validation images, so that
softmax(logits / T) is calibrated. T > 0 keeps every view's class ranking; label smoothing leaves a network's
probabilities too flat (T < 1 sharpens them), a network trained without it is often too confident (T > 1)."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar

from ..inference import probs_from_logits

T_BOUNDS = (0.05, 20.0)  # a fit at a bound means the validation set cannot pin T down (e.g. all correct)


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``targets`` under the (N, V, C) logits' view-averaged softmax at T."""
    p = probs_from_logits(logits, temperature)[np.arange(len(targets)), np.asarray(targets)]
    return float(-np.log(np.clip(p, 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The T in ``T_BOUNDS`` minimising the validation NLL of (N, V, C) logits (V views averaged after the
    softmax, as the predictions are); searched on log T."""
    logits, targets = np.asarray(logits, dtype=np.float32), np.asarray(targets)
    if logits.ndim != 3 or len(logits) != len(targets) or not len(targets):
        raise ValueError(f"fit_temperature: needs (N, V, C) logits and N targets, got {logits.shape} and "
                         f"{targets.shape}")
    lo, hi = (math.log(b) for b in T_BOUNDS)
    res = minimize_scalar(lambda log_t: nll(logits, targets, math.exp(log_t)), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-4})
    return float(math.exp(res.x))
