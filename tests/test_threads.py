"""Thread budget per job: parallel launchers share the cores instead of oversubscribing them."""

import os

from fedca.cli import job_threads


def test_explicit_thread_count_wins():
    assert job_threads(3, {"n_jobs": 8}) == 3


def test_parallel_jobs_share_the_cores():
    cores = os.cpu_count() or 1
    assert job_threads(0, {"n_jobs": 2}) == max(1, cores // 2)
    assert job_threads(0, {"n_jobs": -1}) == 1
    assert job_threads(0, None) == cores
