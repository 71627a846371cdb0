"""The thread plan of a rank (`mpnn.distributed.thread_plan`) and which models take its batch cut."""

from __future__ import annotations

import pytest

from mpnn import models
from mpnn.distributed import ThreadPlan, thread_plan


@pytest.mark.parametrize(
    ("cores_per_rank", "local_ranks", "gpu", "expected"),
    [
        (2, 1, False, ThreadPlan(1, 2, 2)),  # one process on a 2-core node: two halves at once
        (16, 1, False, ThreadPlan(8, 2, 2)),
        (1, 2, False, ThreadPlan(1, 1, 1)),  # one rank per core (the CPU job scripts)
        (4, 2, False, ThreadPlan(2, 2, 2)),
        (8, 1, True, ThreadPlan(0, 0, 1)),  # a lone GPU rank keeps TensorFlow's defaults
        (8, 4, True, ThreadPlan(8, 1, 1)),  # GPU ranks sharing a node share its cores
    ],
)
def test_thread_plan_by_cores_ranks_and_device(cores_per_rank, local_ranks, gpu, expected):
    assert thread_plan(cores_per_rank, local_ranks, gpu) == expected


def test_given_threads_win_and_one_inter_op_thread_means_no_cut():
    assert thread_plan(2, 1, False, intra_op_threads=2) == ThreadPlan(2, 2, 2)
    assert thread_plan(2, 1, False, inter_op_threads=1) == ThreadPlan(1, 1, 1)
    assert thread_plan(1, 1, False, intra_op_threads=3, inter_op_threads=4) == ThreadPlan(3, 4, 1)
    assert thread_plan(2, 1, False, batch_cut=3) == ThreadPlan(1, 2, 3)
    assert thread_plan(1, 1, False, batch_cut=2) == ThreadPlan(1, 1, 2)


def test_only_the_mpnn_takes_the_cut():
    # GAT-LSPE's batch normalisation takes statistics over the whole batch: a cut would
    # change its results.
    assert models.batch_cut_for("mpnn", 2) == 2
    assert models.batch_cut_for("gat-lspe", 2) == 1
    # The geometry model runs faster uncut on 2 cores (RESULTS.md, "Geometry model against SchNetPack").
    assert models.batch_cut_for("schnet", 2) == 1
