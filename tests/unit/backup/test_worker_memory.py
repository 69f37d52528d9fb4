"""A worker gives back what a job freed (DESIGN.md 15.4)."""
import threading

from cbr_backup.worker.memory import give_back_freed_memory


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_memory_a_thread_freed_goes_back_to_the_system():
    """Blocks below malloc's mmap threshold, allocated on a thread (its own arena) with a small survivor after each
    one, stay in the arena when freed; the trim returns their pages."""
    survivors = []

    def churn():
        blocks = []
        for _ in range(1500):
            blocks.append(bytearray(100 << 10))  # 100 KiB: from the arena, not a mapping of its own
            survivors.append(bytearray(1024))    # from malloc too (pymalloc takes <= 512 bytes): a live chunk
            #                                      after each block, so freeing the blocks cannot shrink the heap
        blocks.clear()

    thread = threading.Thread(target=churn)
    thread.start()
    thread.join()
    before = _rss_kib()
    assert give_back_freed_memory()
    after = _rss_kib()
    assert before - after > 100 << 10  # most of the ~146 MiB freed came back
