"""Freed large blocks stay in the heap, so the tensors a training step makes are not page-faulted anew."""

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import resource, sys, torch
    from fedca.heap import keep_freed_blocks
    if sys.argv[1] == "tuned":
        assert keep_freed_blocks()
    faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    per_epoch = []
    for epoch in range(4):  # like the steps of an epoch: large temporaries, shrinking as clients finish
        before = faults()
        for mib in range(96, 8, -8):
            torch.empty(mib << 18).fill_(1.0)
        per_epoch.append(faults() - before)
    print(sum(per_epoch[1:]))
""")


def _page_faults_after_the_first_epoch(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_kept_blocks_are_reused_instead_of_faulted_in_again():
    default, tuned = _page_faults_after_the_first_epoch("default"), _page_faults_after_the_first_epoch("tuned")
    assert default >= 3 * (sum(range(96, 8, -8)) << 20) // 4096 // 2  # most blocks come fresh from the kernel
    assert tuned * 3 < default
