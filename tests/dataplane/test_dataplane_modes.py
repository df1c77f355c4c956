"""Worker modes: busy polling, CPU pinning and real-time scheduling. A pinned worker runs on
the CPU it was given; a busy-polling worker spins while idle where a wake-up worker sleeps in
poll(); a real-time worker is SCHED_FIFO at the priority asked and still sleeps when idle;
all forward."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from lab_support import dataplane, engine_ports, send_and_capture, standard_fib

from corridor import lab as L
from corridor import traffic

pytestmark = pytest.mark.lab  # network namespaces, real traffic, root

TASKS = Path("/proc/self/task")


def _threads() -> dict[int, tuple[str, int]]:
    """Thread id → (allowed CPU list, CPU ticks used) for every thread of this process."""
    out = {}
    for task in TASKS.iterdir():
        try:
            status = (task / "status").read_text()
            stat = (task / "stat").read_text()
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        allowed = [x for x in status.splitlines() if x.startswith("Cpus_allowed_list")]
        cpus = allowed[0].split(":")[1].strip()
        fields = stat.rsplit(")", 1)[1].split()
        out[int(task.name)] = (cpus, int(fields[11]) + int(fields[12]))  # utime + stime
    return out


def _start(lab: L.Lab, busy: bool, pin: bool, realtime: int | None = None):
    dp = dataplane()
    eng = dp.Engine(
        standard_fib(dp), ports=engine_ports(), workers=1, netns=lab.ns("dut"),
        busy_poll=busy, pin_cpus=pin, realtime_priority=realtime,
    )  # fmt: skip
    eng.start()
    return eng


def _forwards(lab: L.Lab) -> None:
    frames = traffic.build_frames(L_SPEC, [100, 600, 1400], flows=4)
    assert len(send_and_capture(lab, frames)) == len(frames)


L_SPEC = traffic.FrameSpec(src=L.GEN_V4, dst="198.19.1.1", src_mac=L.GEN_MAC, dst_mac=L.DUT_IN_MAC)


def _idle_ticks(new: set[int], seconds: float = 1.0) -> dict[int, int]:
    before = _threads()
    time.sleep(seconds)
    after = _threads()
    return {t: after[t][1] - before[t][1] for t in new if t in before and t in after}


def _runnable_share(threads: set[int], seconds: float = 2.0) -> dict[int, float]:
    """The share of `seconds` each thread spent running or ready to run (waiting for a CPU
    on a run queue): about 1 for a thread that never sleeps, however busy the machine."""

    def runnable() -> dict[int, int]:
        got = {}
        for t in threads:
            try:
                with open(f"/proc/self/task/{t}/schedstat") as f:
                    run, wait, _ = map(int, f.read().split())
            except FileNotFoundError:
                continue
            got[t] = run + wait
        return got

    before, started = runnable(), time.monotonic()
    time.sleep(seconds)
    after, wall = runnable(), time.monotonic() - started
    return {t: (after[t] - before[t]) / 1e9 / wall for t in before if t in after}


def test_pinned_busy_polling_worker(lab: L.Lab) -> None:
    first = sorted(os.sched_getaffinity(0))[0]
    before = set(_threads())
    eng = _start(lab, busy=True, pin=True)
    try:
        new = set(_threads()) - before
        pinned = {t for t in new if _threads().get(t, ("", 0))[0] == str(first)}
        assert pinned, f"no engine thread pinned to cpu {first}: {[_threads()[t] for t in new]}"
        _forwards(lab)
        # A busy-polling worker never sleeps while idle: it runs, or waits for its CPU when
        # other work on the machine holds it (a CPU-time bound would fail on a busy machine).
        share = _runnable_share(pinned)
        assert max(share.values()) >= 0.9, f"idle busy-polling worker runnable only {share}"
    finally:
        eng.stop()


def test_wake_up_worker_sleeps_when_idle(lab: L.Lab) -> None:
    before = set(_threads())
    eng = _start(lab, busy=False, pin=False)
    try:
        new = set(_threads()) - before
        assert new, "the engine started no thread"
        _forwards(lab)
        ticks = _idle_ticks(new)
        assert max(ticks.values()) <= 10, f"idle wake-up workers used {ticks} ticks in 1 s"
    finally:
        eng.stop()


def _workers(threads: set[int]) -> set[int]:
    """The engine's worker threads among `threads` (named corridor-w<i>)."""
    out = set()
    for t in threads:
        try:
            if (TASKS / str(t) / "comm").read_text().startswith("corridor-w"):
                out.add(t)
        except FileNotFoundError:
            continue
    return out


def test_realtime_worker_runs_sched_fifo_and_sleeps_when_idle(lab: L.Lab) -> None:
    before = set(_threads())
    eng = _start(lab, busy=False, pin=False, realtime=7)
    try:
        workers = _workers(set(_threads()) - before)
        assert workers, "the engine started no corridor-w thread"
        for t in workers:
            assert os.sched_getscheduler(t) == os.SCHED_FIFO, f"worker {t} is not SCHED_FIFO"
            assert os.sched_getparam(t).sched_priority == 7
        _forwards(lab)
        # Real-time and idle, it must still sleep: the kernel's receive on its core runs
        # only then.
        ticks = _idle_ticks(workers)
        assert max(ticks.values()) <= 10, f"idle real-time workers used {ticks} ticks in 1 s"
    finally:
        eng.stop()
    # The other threads of the process keep their policy.
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
