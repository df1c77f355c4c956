"""Fixtures of the data-plane tests: a private lab (namespaces `cor-t<pid>-gen|dut|sink`,
removed afterwards even when a test fails) and the checks that fail, never skip, when
something the tests need is missing."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from corridor.lab import Lab, LabError


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """One lab for the session, kernel forwarding off."""
    lab = Lab(prefix=f"cor-t{os.getpid()}-")
    try:
        lab.up()
    except LabError as e:
        lab.down()
        pytest.fail(f"cannot build the lab: {e}")
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture
def kernel_router(lab: Lab) -> Iterator[Lab]:
    """The lab with the dut's kernel forwarding, switched off again afterwards."""
    lab.kernel_forwarding(True)
    try:
        yield lab
    finally:
        lab.kernel_forwarding(False)
