"""A controller that stops ends every watcher's stream, whatever the watcher left unread."""

from __future__ import annotations

from pathlib import Path

from controller_support import controller_document, start_controller


async def test_stop_ends_a_watcher_whose_queue_is_full(tmp_path: Path) -> None:
    running = await start_controller(controller_document(tmp_path, {}), tmp_path)
    controller = running.controller
    watcher, _ = controller.watch(None)
    while not watcher.queue.full():  # a watcher that reads nothing, exactly at its limit
        watcher.queue.put_nowait(None)
    await running.stop(0)  # raised QueueFull before, leaving the store and server open
    assert watcher.queue.get_nowait() is None and watcher.queue.empty()
