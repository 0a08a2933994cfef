"""Training of one cross-validation round: resumable, deterministic, single or multi-GPU.

``train_fold`` reads ``<task>/splits.csv``, loads the round's images once into memory (``fold_data``), trains
with early stopping on validation loss (``loop.fit`` over an ``epoch.EpochRunner``; ``checkpoint`` saves and
resumes) and writes the fold's model, history, predictions and ``train.json`` (``fold``). Paths come from
``cxrlib.layout``.

Randomness: the sampler and the augmentation of every batch draw from their own ``torch.Generator`` seeded
from (train.seed, epoch, batch) (``seeding``, ``sampling``), so results do not depend on DataLoader workers and
a resumed fold continues exactly. Torch's global RNG is seeded once at the start of ``train_fold`` (weight
initialisation, dropout) and its state is saved with the last checkpoint.

Several GPUs: ``torchrun --nproc-per-node N -m cxrlib.train --run-dir R --task T --fold K`` runs the same
training under DistributedDataParallel (``distributed``); train.batch_size is per process, every rank draws the
same class-balanced epoch order from a shared generator and takes its slice; rank 0 writes all artifacts.
A frozen backbone trains its head on backbone features computed once (``features``).
"""

from .checkpoint import HISTORY_COLUMNS, Checkpointer
from .distributed import Dist
from .fold import FoldResult, live_jupyter, predictions_frame, round_sentence, train_fold, versions
from .fold_data import FoldData, load_fold_data
from .loop import FitResult, fit
from .optim import make_optimizer, make_scheduler
from .sampling import epoch_indices, split_batches
from .seeding import derive_seed, generator

__all__ = [
    "HISTORY_COLUMNS", "Checkpointer", "Dist", "FitResult", "FoldData", "FoldResult", "derive_seed", "epoch_indices",
    "fit", "generator", "live_jupyter", "load_fold_data", "make_optimizer", "make_scheduler", "predictions_frame",
    "round_sentence", "split_batches", "train_fold", "versions",
]
