"""Keep freed large blocks in the process heap instead of returning them to the OS.

glibc serves every allocation above its mmap threshold (at most 32 MB by default) with a
fresh mapping and unmaps it on free, so a tensor of that size made and dropped every training
step is page-faulted and zeroed by the kernel each time. On ML-1M that is about a fifth of a
round. Raising the mmap and trim thresholds lets such blocks be reused. Peak memory is
unchanged; the process just keeps what it has used.
"""

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 1 << 30  # bytes: blocks up to 1 GiB come from the heap
TRIM_THRESHOLD = (1 << 31) - 1  # bytes of free heap top kept before trimming (mallopt takes an int)


def keep_freed_blocks() -> bool:
    """Raise the thresholds where the C library has ``mallopt`` (glibc); returns whether it did."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
