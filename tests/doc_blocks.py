"""The code blocks of README.md and docs/, and a newcomer's sandbox that runs them as written.

A block is runnable unless the line before its fence says why not:
``<!-- doc-test: skip: <reason> -->`` (a GPU, a cluster, minutes of CPU that another named test
covers). Runnable blocks run in document order in one sandbox that looks like a fresh clone —
every tracked top-level entry linked, ``../shared`` beside it, ``.venv/bin`` first on PATH (as
after ``source .venv/bin/activate``), no ``SONOLAKE_*`` setting — so state one block leaves
(a running gateway, a landed lake) is what the next one finds, as it would be for a reader.

- ``bash``/``sh``: each logical line runs with ``bash -o pipefail -c`` and must exit 0 (or the
  code its trailing comment documents, ``# … exit 2``, as a dry run does); a line
  ending in ``&`` starts a background process (kept until the sandbox closes) and, for
  ``sonolake gateway``, waits until ``/healthz`` answers.
- ``python``: executed in one namespace per document; top-level ``await`` is allowed.
- ``sql``: run through ``sonolake sql``.

The documented gateway port (8765) is replaced by a free one, in the text and in
``SONOLAKE_GATEWAY_PORT``, so a developer's own gateway does not collide with the test.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import os
import re
import signal
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOC_PORT = 8765
RUNNABLE = frozenset({"bash", "sh", "shell", "python", "sql"})
FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ ]*$", re.S | re.M
)
SKIP = re.compile(r"<!--\s*doc-test:\s*skip\s*[:—-]\s*(?P<reason>\S.*?)\s*-->")
EXPECTED_EXIT = re.compile(r"#.*\bexit (\d+)\b")
LINE_TIMEOUT_S = 300
READY_TIMEOUT_S = 120


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text, and why it is skipped (if so)."""

    path: Path
    line: int
    lang: str
    body: str
    skip: str | None

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file in a runnable language, in order."""
    text = path.read_text()
    found: list[Block] = []
    previous_end = 0
    for match in FENCE.finditer(text):
        before = text[previous_end : match.start()].strip().splitlines()
        previous_end = match.end()
        lang = match.group("lang").lower()
        if lang not in RUNNABLE:
            continue
        mark = SKIP.search(before[-1]) if before else None
        found.append(
            Block(
                path=path,
                line=text.count("\n", 0, match.start()) + 1,
                lang=lang,
                body=textwrap.dedent(match.group("body")),
                skip=mark.group("reason") if mark else None,
            )
        )
    return found


def shell_lines(body: str) -> list[str]:
    """Logical lines of a shell block: continuations joined, blank and comment lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [
        line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


@dataclass
class Sandbox:
    """A fresh-clone look-alike with its own state, where documented commands run."""

    root: Path
    port: int
    env: dict[str, str]
    background: list[subprocess.Popen[bytes]] = field(default_factory=list)
    namespaces: dict[Path, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def create(cls, base: Path, repo: Path, shared: Path, port: int) -> Sandbox:
        clone = base / "clone"
        clone.mkdir(parents=True)
        tracked = subprocess.run(
            ["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.split()
        for top in sorted({name.split("/")[0] for name in tracked}):
            (clone / top).symlink_to(repo / top)
        (clone / ".venv").symlink_to(repo / ".venv")
        (base / "shared").symlink_to(shared)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SONOLAKE_")}
        env["PATH"] = f"{clone / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(clone / ".venv")
        env["SONOLAKE_GATEWAY_PORT"] = str(port)
        env.pop("PYTHONPATH", None)
        return cls(root=clone, port=port, env=env)

    def localise(self, text: str) -> str:
        return text.replace(str(DOC_PORT), str(self.port))

    def run(self, block: Block) -> None:
        """Run one block; raise :class:`DocFailure` with what the reader would have seen."""
        if block.lang == "python":
            self._python(block)
        elif block.lang == "sql":
            self._line(block, f'sonolake sql "{block.body.strip().rstrip(";")}"')
        else:
            for line in shell_lines(block.body):
                self._line(block, line)

    def _line(self, block: Block, line: str) -> None:
        command = self.localise(line)
        stripped = command.rstrip()
        if stripped.endswith("&") and not stripped.endswith("&&"):
            self._start(block, stripped[:-1])
            return
        try:
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", command],
                cwd=self.root,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=LINE_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise DocFailure(block, line, f"still running after {LINE_TIMEOUT_S} s") from exc
        documented = EXPECTED_EXIT.search(line)
        expected = int(documented.group(1)) if documented else 0
        if done.returncode != expected:
            output = _tail(done.stdout + done.stderr)
            raise DocFailure(block, line, f"exit {done.returncode}, not {expected}\n{output}")

    def _start(self, block: Block, command: str) -> None:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.background.append(process)
        if "sonolake gateway" not in command:
            raise DocFailure(block, command, "a background command the doc test cannot wait for")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                err = process.stderr.read().decode() if process.stderr else ""
                raise DocFailure(block, command, f"exited {process.returncode}\n{_tail(err)}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise DocFailure(block, command, f"no /healthz after {READY_TIMEOUT_S} s")

    def _python(self, block: Block) -> None:
        namespace = self.namespaces.setdefault(block.path, {"__name__": "__doc__"})
        code = compile(
            self.localise(block.body), block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        saved_env, saved_cwd = dict(os.environ), Path.cwd()
        os.environ.clear()
        os.environ.update(self.env)
        os.chdir(self.root)
        try:
            result = eval(code, namespace)  # the documentation's own code
            if inspect.iscoroutine(result):
                asyncio.run(result)
        except Exception as exc:
            raise DocFailure(block, block.body, f"{type(exc).__name__}: {exc}") from exc
        finally:
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)

    def close(self) -> None:
        """Stop what the docs started in the background: Ctrl-C first, as a reader would."""
        for process in self.background:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
        for process in self.background:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class DocFailure(AssertionError):
    """A documented command failed as written."""

    def __init__(self, block: Block, line: str, detail: str) -> None:
        super().__init__(f"{block.where}: `{line.strip()}` failed: {detail}")


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def documents(repo: Path) -> Iterator[Path]:
    """README first (the newcomer's start), then docs/ in name order."""
    yield repo / "README.md"
    yield from sorted((repo / "docs").glob("*.md"))
