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
import gc


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


def freeze_start_up_objects() -> None:
    """Leave what start-up built out of every later garbage collection.

    The modules, descriptors, settings and indexes made at start-up live as
    long as the process, yet each full collection would walk all of them
    again, on the event loop, while calls and streams wait (pauses of 100 ms
    and more were seen under fan-out). Collect the start-up garbage first, then
    move the survivors to the permanent generation. Only the process's owner
    calls this (`python -m headway.server`): a program that embeds the server
    keeps its own collector settings.
    """
    gc.collect()
    gc.freeze()
    release_free_memory()  # what that collection freed
