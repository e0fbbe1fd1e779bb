"""The in-process TensorBoard writer (explicit API): the training thread only appends, the
writer's thread takes the records in batches, and every record handed over before close is in
the event file, read back by TensorBoard's own reader."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from memtop.profiler.writers import TensorBoardWriter

pytest.importorskip("tensorboard")

TAG = "TensorProfiling/Tensor_Category/parameters_MB"


def _record(step: int) -> dict[str, object]:
    return {
        "type": "step",
        "step": step,
        "time": 1_700_000_000.0 + step,
        "categories": {"parameters": step * 1024 * 1024},
    }


def _steps_written(logdir: Path) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.step for e in acc.Scalars(TAG)]


def test_every_record_added_before_close_is_written(tmp_path: Path) -> None:
    tb = TensorBoardWriter(tmp_path, poll_secs=0.01)
    for step in range(1, 501):
        tb.add_step(_record(step))
        if step % 100 == 0:
            time.sleep(0.02)  # let the thread take a batch mid-run
    tb.close()
    assert tb.error is None
    assert _steps_written(tmp_path) == list(range(1, 501))


def test_records_added_while_the_thread_takes_them_are_not_lost(tmp_path: Path) -> None:
    tb = TensorBoardWriter(tmp_path, poll_secs=0.0005)
    done = threading.Event()

    def produce() -> None:
        for step in range(1, 3001):
            tb.add_step(_record(step))
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join()
    assert done.is_set()
    tb.close()
    assert _steps_written(tmp_path) == list(range(1, 3001))


def test_a_writer_that_falls_behind_drops_records_rather_than_blocking(tmp_path: Path) -> None:
    tb = TensorBoardWriter(tmp_path, poll_secs=60.0)  # the thread does not take anything before close
    for step in range(1, TensorBoardWriter.MAX_PENDING + 101):
        tb.add_step(_record(step))
    assert len(tb._pending) == TensorBoardWriter.MAX_PENDING
    tb.close()
    assert _steps_written(tmp_path) == list(range(1, TensorBoardWriter.MAX_PENDING + 1))
