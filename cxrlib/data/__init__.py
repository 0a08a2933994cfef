"""From a data root to leakage-free folds.

``sources`` (one reader per native layout over the ``table`` contract) → ``images`` / ``dicom`` (robust decode
to 8-bit gray, cache keyed by content hash) → ``scan`` (hashes, sizes, unreadable files) → ``phash``
(near-duplicates) → ``splits`` (task labels, groups, folds, leakage audit). ``describe`` turns tables into
what a reader looks at; ``fetch`` downloads the public sets.
"""
