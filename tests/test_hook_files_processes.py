"""One record file per process, never two processes in one file (issue 7, item 8).

Real ``multiprocessing`` / ``torch.multiprocessing`` children under the injected hook: the main
process writes ``rank0.jsonl``, a child that steps an optimizer its own ``proc<pid>.jsonl`` (or
``rank<N>.jsonl`` once torch.distributed gives it a rank), DataLoader workers nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hookkit import read_lines, record_files, run_hooked, steps_of

from memtop.profiler import rankfile
from memtop.profiler.writers import RankFileWriter

SPAWN_CHILD = """
import multiprocessing as mp
import sys
import torch


def train(steps, model=None):
    model = model or torch.nn.Linear(16, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        model(torch.randn(4, 16)).sum().backward()
        opt.step()
        opt.zero_grad()
    return opt


def main():
    model = torch.nn.Linear(16, 16)
    opt = train(4, model)
    child = mp.get_context(sys.argv[1]).Process(target=train, args=(3,))
    child.start()
    child.join()
    print("child", child.pid, child.exitcode, flush=True)
    for _ in range(2):
        model(torch.randn(4, 16)).sum().backward()
        opt.step()
        opt.zero_grad()


if __name__ == "__main__":
    main()
"""


def _child_pid(stdout: str) -> int:
    line = next(x for x in stdout.splitlines() if x.startswith("child "))
    _, pid, code = line.split()
    assert code == "0"
    return int(pid)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_child_that_steps_writes_its_own_file(tmp_path: Path, method: str) -> None:
    run_dir = tmp_path / "run"
    proc = run_hooked(SPAWN_CHILD, tmp_path / "proj", run_dir, method)
    assert proc.returncode == 0, proc.stderr
    pid = _child_pid(proc.stdout)
    assert record_files(run_dir) == sorted(["rank0.jsonl", f"proc{pid}.jsonl"])
    main = read_lines(run_dir / "rank0.jsonl")
    assert steps_of(main) == [1, 2, 3, 4, 5, 6]  # the child's steps are not in here
    exits = [r for r in main if r["type"] == "exit"]
    assert len(exits) == 1 and exits[0]["steps"] == 6 and exits[0]["pid"] != pid
    child = read_lines(run_dir / f"proc{pid}.jsonl")
    assert steps_of(child) == [1, 2, 3]  # a session of its own, counted from 1
    if method == "spawn":  # a forked multiprocessing child leaves by os._exit: no exit record
        assert [r["pid"] for r in child if r["type"] == "exit"] == [pid]


DATALOADER = """
import torch
from torch.utils.data import DataLoader, TensorDataset


def main(context):
    data = TensorDataset(torch.randn(64, 16), torch.randn(64, 1))
    model = torch.nn.Linear(16, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        loader = DataLoader(data, batch_size=8, num_workers=2, multiprocessing_context=context)
        for x, y in loader:
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()


if __name__ == "__main__":
    import sys
    main(sys.argv[1])
"""


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_dataloader_workers_write_nothing(tmp_path: Path, context: str) -> None:
    run_dir = tmp_path / "run"
    proc = run_hooked(DATALOADER, tmp_path / "proj", run_dir, context)
    assert proc.returncode == 0, proc.stderr
    assert record_files(run_dir) == ["rank0.jsonl"]
    records = read_lines(run_dir / "rank0.jsonl")
    assert steps_of(records) == list(range(1, 17))  # 2 epochs x 8 batches, in order
    assert len([r for r in records if r["type"] == "exit"]) == 1


MP_SPAWN_DDP = """
import os
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, world, port, early):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    model = torch.nn.Linear(16, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step():
        model(torch.randn(4, 16)).sum().backward()
        opt.step()
        opt.zero_grad()

    if early and rank == 1:
        step()  # a step before init_process_group: no rank known yet
    dist.init_process_group("gloo", rank=rank, world_size=world)
    dist.barrier()
    for _ in range(3):
        step()
    dist.destroy_process_group()


if __name__ == "__main__":
    import socket, sys
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(2, port, sys.argv[1] == "early"), nprocs=2)
"""


@pytest.mark.parametrize("when", ["init_first", pytest.param("early", marks=pytest.mark.slow)])
def test_mp_spawn_ddp_ranks_name_their_files(tmp_path: Path, when: str) -> None:
    run_dir = tmp_path / "run"
    proc = run_hooked(MP_SPAWN_DDP, tmp_path / "proj", run_dir, when)
    assert proc.returncode == 0, proc.stderr
    assert record_files(run_dir) == ["rank0.jsonl", "rank1.jsonl"]
    for rank in (0, 1):
        records = read_lines(run_dir / f"rank{rank}.jsonl")
        expected = 4 if (when == "early" and rank == 1) else 3
        assert steps_of(records) == list(range(1, expected + 1))
        # a record written before init_process_group carries the rank known then (RANK, else 0)
        assert {r["rank"] for r in records if r.get("step", 0) > expected - 3} == {rank}
        assert len({r["pid"] for r in records if r["type"] == "exit"}) == 1


def test_two_writers_never_share_a_name(tmp_path: Path) -> None:
    first = RankFileWriter(tmp_path, rank=0)
    second = RankFileWriter(tmp_path, rank=0)
    first.put({"type": "step", "step": 1})
    second.put({"type": "step", "step": 1})
    assert first.path == tmp_path / "rank0.jsonl"
    assert second.path == tmp_path / f"proc{os.getpid()}.jsonl"
    for w in (first, second):
        assert steps_of(read_lines(w.path or tmp_path)) == [1]
        w.close()


def test_moving_to_a_rank_name_never_takes_a_held_one(tmp_path: Path) -> None:
    held = tmp_path / "rank1.jsonl"
    held.write_text("theirs\n")
    mine = tmp_path / "proc7.jsonl"
    mine.write_text("mine\n")
    assert rankfile.move_to_rank(mine, 1) is None
    assert held.read_text() == "theirs\n" and mine.exists()
    moved = rankfile.move_to_rank(mine, 2)
    assert moved == tmp_path / "rank2.jsonl" and moved.read_text() == "mine\n" and not mine.exists()
