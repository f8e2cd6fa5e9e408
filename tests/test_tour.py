"""The README's 60-second tour, run as written, in order, in a copy of the repository.

Every line of a ```sh block in the tour that starts with `$ ` is a command (a trailing `\\`
continues it); the lines under it are what it must print, where `...` stands for anything.
The only change made to the commands is the port: this machine may already serve 8765, so
the copy's config.toml and every `8765` in the tour use a free one instead.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
COMMAND_TIMEOUT_S = 60


@dataclass
class Step:
    """One command of the tour and the lines it claims to print."""

    command: str
    expected: list[str] = field(default_factory=list)

    @property
    def background(self) -> bool:
        """Whether the command runs in the background (`make run &`)."""
        code = self.command.split(" #", 1)[0].rstrip()
        return code.endswith("&") and not code.endswith("&&")


def tour_steps(readme: str) -> list[Step]:
    """The tour's commands, in order, each with the output it claims."""
    section = readme.split("## A 60-second tour", 1)[1].split("\n## ", 1)[0]
    steps: list[Step] = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("$ "):
                command = line[2:]
                while command.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command += "\n" + lines[i]
                steps.append(Step(command))
            elif steps:
                steps[-1].expected.append(line)
            else:
                raise AssertionError(f"tour: output before any command: {line!r}")
            i += 1
    return steps


def matches(expected: str, actual: str) -> bool:
    """Whether an actual line is the claimed one, `...` standing for anything."""
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual) is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def repository_files() -> list[Path]:
    """What a fresh clone holds (and files not yet committed), relative to the root."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
        return [Path(name.decode()) for name in listed if name]
    except (OSError, subprocess.CalledProcessError):  # an unpacked archive, not a checkout
        skip = {".git", ".venv", "var", "inbox", "__pycache__", ".pytest_cache", ".ruff_cache"}
        return [
            p.relative_to(ROOT)
            for p in ROOT.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(ROOT).parts)
        ]


def copy_repository(into: Path) -> None:
    """The files a fresh clone has, and the test run's own environment as its .venv."""
    for name in repository_files():
        if (ROOT / name).is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, into / name)
    (into / "inbox").mkdir(exist_ok=True)
    # `make run` reuses this environment (its stamp is newer than pyproject.toml) rather than
    # installing a new one: the tour is about the daemon, not about pip.
    venv = into / ".venv"
    venv.mkdir()
    (venv / "bin").symlink_to(Path(sys.prefix) / "bin")
    (venv / ".installed").touch()


def test_the_readme_tour_runs_as_written(tmp_path):
    for tool in ("make", "curl", "python3"):
        assert shutil.which(tool), f"the tour needs {tool} on PATH"
    steps = tour_steps(README.read_text(encoding="utf-8"))
    assert steps and steps[0].background, "the tour starts the daemon first"
    repo = tmp_path / "lakehoused"
    copy_repository(repo)
    port = str(free_port())
    config = repo / "config.toml"
    config.write_text(config.read_text().replace("port = 8765", f"port = {port}"))
    env = {k: v for k, v in os.environ.items() if k != "LAKEHOUSED_CONFIG"}
    daemons: list[subprocess.Popen] = []
    log = (tmp_path / "daemon.log").open("w")
    try:
        for step in steps:
            command = step.command.replace("8765", port)
            if step.background:
                # Its own session, so the daemon it leaves running can be stopped afterwards.
                daemons.append(
                    subprocess.Popen(
                        ["bash", "-c", command],
                        cwd=repo,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
                assert not step.expected, "output claimed for a background command"
                continue
            started = time.monotonic()
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=repo,
                env=env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
            )
            context = (
                f"\n$ {step.command}\nexit {done.returncode} after "
                f"{time.monotonic() - started:.1f} s\nstdout:\n{done.stdout}\n"
                f"stderr:\n{done.stderr}\ndaemon:\n{(tmp_path / 'daemon.log').read_text()[-3000:]}"
            )
            assert done.returncode == 0, context
            actual = done.stdout.splitlines()
            expected = [line.replace("8765", port) for line in step.expected]
            assert len(actual) == len(expected), context
            for want, got in zip(expected, actual, strict=True):
                assert matches(want, got), f"claimed: {want}\nprinted: {got}{context}"
    finally:
        for daemon in daemons:
            os.killpg(daemon.pid, signal.SIGTERM)
        for daemon in daemons:
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
        log.close()


def test_the_tour_parser_reads_commands_continuations_and_claims():
    readme = (
        "## A 60-second tour\n```sh\n$ a &\n$ b \\\n    c\nout 1\nout ...\n```\n"
        "text\n```sh\n$ d\n```\n## Next\n```sh\n$ e\n```\n"
    )
    steps = tour_steps(readme)
    assert [s.command for s in steps] == ["a &", "b \\\n    c", "d"]
    assert steps[0].background and not steps[1].background
    assert steps[1].expected == ["out 1", "out ..."]
    assert matches("out ...", "out 42") and not matches("out 1", "out 12")
    assert not Step("a && b").background


@pytest.mark.parametrize("name", ["sales/2026-11-01.csv", "sales/2026-11-02.csv", "bad.csv"])
def test_the_tour_ships_its_sample_files(name):
    assert (ROOT / "examples" / name).is_file()
