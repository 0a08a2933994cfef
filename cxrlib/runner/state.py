"""``results/<run>/run.json``: params, provenance and per-job status, updated atomically under a lock."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from filelock import FileLock

from .. import io
from ..config import StudyConfig
from ..errors import ArtifactError
from ..layout import RunLayout

#: Distributions whose versions a run records.
PACKAGES = (
    "cxrlib", "torch", "torchvision", "scikit-learn", "numpy", "pandas", "pillow", "grad-cam",
    "papermill", "nbconvert", "nbclient", "ipykernel", "matplotlib",
)
STATUSES = ("pending", "running", "done", "failed", "skipped")
MAX_INVOCATIONS = 100


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def as_stored(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists), for comparisons with a stored run.json."""
    return json.loads(json.dumps(obj, default=str))


def params_diff(old: dict, new: dict, prefix: str = "", defaults: dict | None = None) -> list[str]:
    """Dotted keys whose values differ between two nested params mappings. With ``defaults`` (the same shape), a
    key the old mapping lacks does not count while the new value is its default: a setting added by a newer
    cxrlib, left as it was."""
    keys = sorted(set(old) | set(new))
    out: list[str] = []
    for key in keys:
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        default = defaults.get(key, "<absent>") if isinstance(defaults, dict) else "<absent>"
        if isinstance(a, dict) and isinstance(b, dict):
            out += params_diff(a, b, f"{prefix}{key}.", default if isinstance(default, dict) else None)
        elif a == "<absent>" and b == default != "<absent>":
            continue
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def git_info(repo: str | os.PathLike | None = None) -> dict | None:
    """Commit and dirty flag (tracked files only) of the repository holding ``cxrlib``; None outside git."""
    repo = Path(repo) if repo else Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=20)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def versions(packages: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def seeds(cfg: StudyConfig) -> dict[str, int]:
    return {"split": cfg.split.seed, "train": cfg.train.seed, "evaluate": cfg.evaluate.seed}


def data_fingerprint(run_dir: str | os.PathLike, tasks: Sequence[str]) -> dict:
    """SHA-256 of each task's splits.csv and one hash over them all (the run's data identity)."""
    per_task = {}
    for task in tasks:
        path = RunLayout(run_dir).task(task).splits
        if path.exists():
            per_task[task] = hashlib.sha256(path.read_bytes()).hexdigest()
    combined = hashlib.sha256("".join(f"{t}:{h}\n" for t, h in sorted(per_task.items())).encode()).hexdigest()
    return {"splits": per_task, "sha256": combined if per_task else None}


def merge_tables(old: list[dict], new: list[dict]) -> list[dict]:
    """This invocation's job table, then the recorded rows of jobs it does not list (other tasks). Those keep
    their id, kind and outputs, but ``index`` None and no ``depends`` / ``after``: indices refer to the current
    table only."""
    current = {row["id"] for row in new}
    earlier = [{**{k: v for k, v in row.items() if k not in ("depends", "after")}, "index": None}
               for row in old if row.get("id") not in current]
    return [*new, *earlier]


class RunRecord:
    """Reads and updates ``run.json``; every update is a locked read-modify-write with an atomic rename,
    so concurrent ``--job-index`` invocations (SLURM arrays) do not lose each other's entries."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = RunLayout(self.run_dir).record
        self._git: dict | None = None

    @property
    def git(self) -> dict:
        """This process's code version (``git_info``, asked once): recorded with each invocation and each job
        that runs, since one run may be made by several invocations on different commits."""
        if self._git is None:
            self._git = git_info() or {"commit": None, "dirty": None}
        return self._git

    def read(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            data = io.read_json(self.path)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{self.path}: unreadable run record ({exc}); move it away to start afresh") from exc
        if not isinstance(data, dict):
            raise ArtifactError(f"{self.path}: not a run record (expected a JSON object)")
        return data

    @contextlib.contextmanager
    def update(self) -> Iterator[dict]:
        """Yield the current record (a dict, empty for a new run) to modify; write it back on success."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # filelock: a lock file beside the record, safe on NFS and Windows (fcntl is neither)
        with FileLock(RunLayout(self.run_dir).record_lock):
            data = self.read() or {}
            yield data
            data["updated"] = now()
            io.write_json(self.path, data)

    def set_job(self, job_id: str, **fields: Any) -> None:
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown job status {fields['status']!r}")
        with self.update() as data:
            data.setdefault("jobs", {}).setdefault(job_id, {}).update(fields)

    def start_invocation(self, *, cfg: StudyConfig, params_file: str | None, overrides: Sequence[str],
                         tasks: Sequence[str], job_table: list[dict], force: bool) -> int:
        """Record params/provenance for this invocation and add pending entries for unseen jobs.

        ``tasks`` and ``job_table`` are merged with the recorded ones, so an invocation on some tasks does not
        drop the others from the record. Returns the invocation's number (its index in ``invocations``).
        """
        with self.update() as data:
            if not data:
                data["run"] = self.run_dir.name
                data["created"] = now()
            if force or "params" not in data:
                data["params"] = as_stored(cfg.to_dict())
            data["params_file"] = params_file
            data["overrides"] = list(overrides)
            data["tasks"] = list(dict.fromkeys([*data.get("tasks", []), *tasks]))
            data["seeds"] = seeds(cfg)
            data["git"] = self.git
            data["versions"] = versions()
            data["platform"] = {"system": platform.platform(), "machine": platform.machine(),
                                "executable": sys.executable}
            data["job_table"] = merge_tables(data.get("job_table") or [], job_table)
            jobs = data.setdefault("jobs", {})
            for row in job_table:
                jobs.setdefault(row["id"], {"status": "pending"})
            calls = data.setdefault("invocations", [])
            calls.append({"argv": sys.argv[1:], "pid": os.getpid(), "start": now(), "end": None, "exit_code": None,
                          "git_commit": self.git["commit"], "git_dirty": self.git["dirty"]})
            del calls[:-MAX_INVOCATIONS]
            return len(calls) - 1

    def end_invocation(self, exit_code: int, tasks: Sequence[str]) -> None:
        with self.update() as data:
            pid = os.getpid()
            for call in reversed(data.get("invocations", [])):
                if call.get("pid") == pid and call.get("end") is None:
                    call.update(end=now(), exit_code=exit_code)
                    break
            data["data_fingerprint"] = data_fingerprint(self.run_dir, [*data.get("tasks", []), *tasks])
