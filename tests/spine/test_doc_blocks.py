"""Every command README.md and docs/ show a reader works as written (or says why it cannot here).

One sandbox for the whole session, as one newcomer following README and then docs/ top to
bottom: README's "First ten minutes" starts the gateway and lands a lake; later pages query that
lake and talk to that gateway. See ``tests/doc_blocks.py`` for the rules of a runnable block.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from doc_blocks import Block, Sandbox, blocks, documents
from support import REPO_ROOT, free_port

pytestmark = pytest.mark.integration

DOCUMENTS = list(documents(REPO_ROOT))


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(
        tmp_path_factory.mktemp("newcomer"), REPO_ROOT, shared_data.parent, free_port()
    )
    yield sandbox
    sandbox.close()


@pytest.fixture(scope="module")
def shared_data() -> Path:  # module scope for the sandbox; the same check as tests/conftest.py
    data = REPO_ROOT.parent / "shared" / "data"
    if not (data / "speech_commands" / "manifest.csv").exists():
        pytest.skip(f"real data not found at {data}")
    return data


def test_every_skipped_block_says_why() -> None:
    for path in DOCUMENTS:
        for block in blocks(path):
            assert block.skip is None or len(block.skip) > 10, f"{block.where}: give a reason"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_documented_commands_work_as_written(path: Path, newcomer: Sandbox) -> None:
    ran: list[Block] = []
    for block in blocks(path):
        if block.skip is None:
            newcomer.run(block)
            ran.append(block)
    if path.name == "README.md":
        assert ran, "README's first ten minutes must run"
