"""environment.yml mirrors the pins of requirements.txt, so conda and pip users run the same study."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_mirrors_requirements():
    reqs = {l.strip() for l in (ROOT / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) == reqs
    assert all("==" in r for r in reqs), "every requirement is pinned"
    assert "torch==2.14.1" in reqs and "torchvision==0.29.1" in reqs
