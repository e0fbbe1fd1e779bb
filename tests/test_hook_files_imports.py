"""The hook loads whatever the user's project calls its modules (issue 7, item 10).

The user's ``memtop.py``, ``profiler.py``, ``runs.py``, ``tui.py``, ``analyzers.py`` and
``sitecustomize.py`` keep winning their imports, and memtop's records are still written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hookkit import read_lines, record_files, run_hooked, steps_of

import memtop

OWN_MODULES = {
    "memtop": "OWNER = 'user memtop'\n",
    "profiler": "OWNER = 'user profiler'\n",
    "runs": "OWNER = 'user runs'\n",
    "tui": "OWNER = 'user tui'\n",
    "analyzers": "OWNER = 'user analyzers'\n",
    "sitecustomize": "import sys\nsys.stderr.write('user sitecustomize ran\\n')\nOWNER = 'user sitecustomize'\n",
}

USES_OWN = """
import sys
if sys.argv[1] == "torch_first":
    import torch
import memtop, profiler, runs, tui, analyzers, sitecustomize
for module in (memtop, profiler, runs, tui, analyzers, sitecustomize):
    assert module.OWNER == "user " + module.__name__, module
import torch

model = torch.nn.Linear(8, 8)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(3):
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    opt.zero_grad()
import memtop as again
assert again.OWNER == "user memtop"
print("all mine")
"""


@pytest.mark.parametrize("order", ["own_first", "torch_first"])
def test_the_users_own_modules_win_and_records_are_written(tmp_path: Path, order: str) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    for name, text in OWN_MODULES.items():
        (project / f"{name}.py").write_text(text)
    run_dir = tmp_path / "run"
    proc = run_hooked(USES_OWN, project, run_dir, order)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "all mine"
    assert proc.stderr.count("user sitecustomize ran") == 1  # imported by the script, as without memtop
    assert "memtop:" not in proc.stderr
    records = read_lines(run_dir / "rank0.jsonl")
    assert steps_of(records) == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.short
def test_without_the_hook_the_same_script_runs_the_same(tmp_path: Path) -> None:
    """The reference: the script's own assertions hold when it runs bare."""
    project = tmp_path / "proj"
    project.mkdir()
    for name, text in OWN_MODULES.items():
        (project / f"{name}.py").write_text(text)
    proc = run_hooked(USES_OWN, project, tmp_path / "run", "own_first", extra_env={"PYTHONPATH": "", "MEMTOP_RUN_DIR": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "all mine"


USES_MEMTOP = """
import sys
import memtop
import torch

print(memtop.__file__)
model = torch.nn.Linear(8, 8)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
with memtop.profile(model, opt, runs_dir=sys.argv[1]) as prof:
    for _ in range(3):
        model(torch.randn(4, 8)).sum().backward()
        opt.step()
        opt.zero_grad()
    print(prof.run_dir)
import sitecustomize
print(sitecustomize.OWNER)
"""


def test_memtop_imported_by_the_script_is_the_running_hook(tmp_path: Path) -> None:
    """No memtop.py of the user's: ``import memtop`` is memtop, and ``memtop.profile`` joins the hook.

    A sitecustomize elsewhere on PYTHONPATH still runs once at start-up, chained by memtop's.
    """
    elsewhere = tmp_path / "site"
    elsewhere.mkdir()
    (elsewhere / "sitecustomize.py").write_text("import sys\nsys.stderr.write('their site ran\\n')\nOWNER = 'their site'\n")
    run_dir = tmp_path / "run"
    spare_runs = tmp_path / "spare_runs"
    project = tmp_path / "proj"
    from memtop.launcher import child_environment

    pythonpath = child_environment(run_dir, None)["PYTHONPATH"] + f":{elsewhere}"
    proc = run_hooked(USES_MEMTOP, project, run_dir, str(spare_runs), extra_env={"PYTHONPATH": pythonpath})
    assert proc.returncode == 0, proc.stderr
    file, joined, site_owner = proc.stdout.splitlines()
    assert Path(file).resolve() == Path(memtop.__file__).resolve()
    assert Path(joined).resolve() == run_dir.resolve()  # joined the hook's run: no run of its own
    assert not spare_runs.exists()
    assert site_owner == "their site" and proc.stderr.count("their site ran") == 1
    assert record_files(run_dir) == ["rank0.jsonl"]
    assert steps_of(read_lines(run_dir / "rank0.jsonl")) == [1, 2, 3]


def test_the_users_pythonpath_comes_before_memtops_own_checkout(tmp_path: Path) -> None:
    """``PYTHONPATH=<project>`` with a ``memtop.py`` there and the script in a sub-folder: theirs wins."""
    project = tmp_path / "proj"
    (project / "scripts").mkdir(parents=True)
    (project / "memtop.py").write_text(OWN_MODULES["memtop"])
    script = (
        "import memtop\nassert memtop.OWNER == 'user memtop', memtop\nimport torch\n"
        "model = torch.nn.Linear(8, 8)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for _ in range(3):\n    model(torch.randn(4, 8)).sum().backward()\n    opt.step()\n    opt.zero_grad()\n"
    )
    from memtop.launcher import child_environment

    base = {"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"}
    env = child_environment(tmp_path / "run", None, base=base)
    assert env["PYTHONPATH"].split(":")[1] == str(project)
    proc = run_hooked(script, project / "scripts", tmp_path / "run", extra_env={"PYTHONPATH": env["PYTHONPATH"]})
    assert proc.returncode == 0, proc.stderr
    assert steps_of(read_lines(tmp_path / "run" / "rank0.jsonl")) == [1, 2, 3]
