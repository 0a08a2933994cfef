"""Scoring new images with a trained run's fold ensemble (``python -m cxrlib predict``, notebook 06).

``ensemble`` (``load_ensemble``: the fold models, checked to agree), ``inputs`` (find, decode, resize and check
images), ``scoring`` (``predict_paths``: ensemble mean + each fold model; ``ensemble_cams``), ``widget`` (the
notebook's upload widget) and ``cli`` (the command). Nothing is imported here, so the CLI starts fast.
"""
