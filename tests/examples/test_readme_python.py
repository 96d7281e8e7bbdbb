"""The README's Python examples, run as written against a real cluster (only the address changed)."""

from __future__ import annotations

import asyncio
import re
import sys

import pytest

from bench.cluster import REPO
from tests.conftest import Cluster

README = (REPO / "README.md").read_text()
SECTION = README[README.index("### From Python") : README.index("## Architecture")]
EXAMPLES = re.findall(r"```python\n(.*?)```", SECTION, re.S)


def test_the_section_has_its_two_examples() -> None:
    assert len(EXAMPLES) == 2 and all("127.0.0.1:9090" in example for example in EXAMPLES)


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (0, [r"TSK-\w+ COMPLETED 0", r"calc-\w{8} COMPLETED 0", r"report-\w{8} COMPLETED 0", r"\[b'hello\\n'\]"]),
        (1, ["stdout step 1", "stdout step 2", "stdout step 3"]),
    ],
)
async def test_an_example_runs_and_prints_what_it_says(cluster: Cluster, index: int, expected: list[str]) -> None:
    code = EXAMPLES[index].replace("127.0.0.1:9090", f"127.0.0.1:{cluster.master.port}")
    for _ in range(2):  # a reader may well run it twice
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-W", "error", "-c", code, cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, stderr.decode()
        lines = stdout.decode().splitlines()
        for line, pattern in zip(lines, expected, strict=True):
            assert re.fullmatch(pattern, line), (line, pattern)
