"""CXR Study helper package: the notebooks' logic, laid out as the pipeline runs.

``config`` (params) → ``data`` (sources, decoding, scan, folds) → ``models`` / ``transforms`` → ``train``
(one fold) → ``evaluate`` (metrics, intervals, external validation) → ``cam`` (Grad-CAM, shortcut checks) →
``plots`` (every figure) → ``report`` (the run's index.html). ``layout`` names every file of a run;
``runner`` executes the notebooks as a job table (``run_all.py``).
"""

__version__ = "0.1.0"
