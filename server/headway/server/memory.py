"""Give the allocator's free memory back to the system after start-up.

Loading the store reads every task's encoding at once (about 50 MB for 100k
tasks) on the store's thread; the engine keeps each task deflated and drops
the encodings. glibc keeps the freed memory in that thread's arena for later
allocations, and it would stay resident for the life of the process: about
50 MiB of a server's start-up RSS. `malloc_trim` hands the free pages back;
elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes


def release_free_memory() -> None:
    """Return the C allocator's free pages to the system (glibc only; a few ms).

    The C library is found among the symbols the process already has loaded
    (`CDLL(None)`), not by `ctypes.util.find_library`, which runs a
    subprocess: a fork beside gRPC's threads.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return  # not glibc
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
