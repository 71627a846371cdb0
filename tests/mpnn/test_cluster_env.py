"""TF_CONFIG from a launcher's or scheduler's variables (`mpnn.cluster_env`), without a cluster."""

from __future__ import annotations

import json

import pytest

from mpnn import cluster_env
from mpnn.errors import UsageError


def test_slurm_host_lists_and_task_counts_expand_as_scontrol_does():
    assert cluster_env.expand_nodelist("node[01-03,07],gpu1") == ["node01", "node02", "node03", "node07", "gpu1"]
    assert cluster_env.expand_nodelist("c[9-11]") == ["c9", "c10", "c11"]
    assert cluster_env.expand_nodelist("login") == ["login"]
    assert cluster_env.expand_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert cluster_env.expand_tasks_per_node("4") == [4]


def _slurm(procid: int, host: str, **extra: str) -> dict[str, str]:
    return {"SLURM_JOB_ID": "4711", "SLURM_PROCID": str(procid), "SLURM_NTASKS": "4",
            "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_TASKS_PER_NODE": "2(x2)", "SLURMD_NODENAME": host, **extra}


def test_every_slurm_task_builds_the_same_worker_list_with_its_own_index():
    clusters = [cluster_env.slurm_cluster(_slurm(i, host)) for i, host in enumerate(["n1", "n1", "n2", "n2"])]
    base = cluster_env.job_port_base("4711")
    expected = (f"n1:{base}", f"n1:{base + 1}", f"n2:{base}", f"n2:{base + 1}")
    assert all(cluster.workers == expected for cluster in clusters)
    assert [c.index for c in clusters] == [0, 1, 2, 3]
    assert [(c.local_rank, c.local_size) for c in clusters] == [(0, 2), (1, 2), (0, 2), (1, 2)]
    config = json.loads(clusters[2].tf_config())
    assert config == {"cluster": {"worker": list(expected)}, "task": {"type": "worker", "index": 2}}
    # The step's own layout wins over the job's (srun -n 2 inside a larger allocation).
    step = cluster_env.slurm_cluster(_slurm(1, "n1", SLURM_NTASKS="2", SLURM_STEP_NODELIST="n1",
                                            SLURM_STEP_TASKS_PER_NODE="2"))
    assert step.workers == (f"n1:{base}", f"n1:{base + 1}")


def test_two_jobs_on_one_node_get_different_ports():
    assert cluster_env.job_port_base("100") != cluster_env.job_port_base("101")
    assert cluster_env.job_port_base("100") + cluster_env.PORTS_PER_JOB <= 65536


def test_slurm_without_its_variables_or_with_cyclic_tasks_is_one_usage_error():
    with pytest.raises(UsageError, match=r"--slurm: no SLURM_JOB_ID, SLURM_PROCID, SLURM_NTASKS, SLURM_JOB_NODELIST"):
        cluster_env.slurm_cluster({})
    with pytest.raises(UsageError, match="launch with srun --distribution=block"):
        cluster_env.slurm_cluster(_slurm(1, "n2"))  # block puts task 1 on n1


def test_pbs_ranks_from_the_node_file_and_the_mpi_rank(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("a\na\nb\n")
    env = {"PBS_NODEFILE": str(nodefile), "PBS_JOBID": "77.server", "OMPI_COMM_WORLD_RANK": "2",
           "OMPI_COMM_WORLD_SIZE": "3"}
    cluster = cluster_env.pbs_cluster(env)
    base = cluster_env.job_port_base("77.server")
    assert cluster.workers == (f"a:{base}", f"a:{base + 1}", f"b:{base}") and cluster.index == 2
    assert (cluster.local_rank, cluster.local_size) == (0, 1)
    with pytest.raises(UsageError, match="is not a readable file: not inside a PBS job"):
        cluster_env.pbs_cluster({})
    with pytest.raises(UsageError, match="no rank from the MPI launcher"):
        cluster_env.pbs_cluster({"PBS_NODEFILE": str(nodefile)})
    with pytest.raises(UsageError, match="2 ranks .* but 3 lines"):
        cluster_env.pbs_cluster({**env, "OMPI_COMM_WORLD_SIZE": "2"})


def test_tf_config_is_read_back_and_bad_ones_are_named():
    cluster = cluster_env.local_cluster([1000, 1001], 1)
    assert cluster_env.cluster_from_tf_config(cluster.tf_config()) == cluster
    assert cluster_env.cluster_from_tf_config("") is None
    with pytest.raises(UsageError, match="TF_CONFIG: not a worker cluster"):
        cluster_env.cluster_from_tf_config('{"cluster": {"worker": ["a:1"]}, "task": {"index": 3}}')


def test_a_task_of_several_without_tf_config_is_refused():
    cluster_env.check_alone({})
    cluster_env.check_alone({"SLURM_NTASKS": "4"})  # a batch script's shell, not a task of a step
    with pytest.raises(UsageError, match="one of 2 tasks .*mpnn-launch"):
        cluster_env.check_alone({"OMPI_COMM_WORLD_SIZE": "2"})
    with pytest.raises(UsageError, match="one of 4 tasks"):
        cluster_env.check_alone({"SLURM_STEP_NUM_TASKS": "4"})
