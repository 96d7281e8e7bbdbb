"""The example jobs in ``perm_files/`` run as real processes and do what they say."""

from __future__ import annotations

import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

PERM_FILES = Path(__file__).resolve().parents[2] / "perm_files"
HANDLERS = PERM_FILES / "handlers"


def run(script: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = ["bash", str(script)] if script.suffix == ".sh" else [sys.executable, str(script)]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TITAN_")}
    environment["TITAN_OUTPUT_DIR"] = str(cwd / "out")
    environment.update(env or {})
    (cwd / "out").mkdir(exist_ok=True)
    return subprocess.run(
        [*command, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=30, check=False
    )


# --------------------------------------------------------------------------- calc.py


@pytest.mark.parametrize(("limit", "primes"), [(0, 0), (2, 0), (3, 1), (10, 4), (100, 25), (10_000, 1229)])
def test_calc_counts_primes(tmp_path: Path, limit: int, primes: int) -> None:
    done = run(PERM_FILES / "calc.py", str(limit), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"primes below {limit}: {primes}\n" in done.stdout
    assert re.search(r"took \d+\.\d{3}s", done.stdout)
    result = json.loads((tmp_path / "out" / "calc_result.json").read_text())
    assert result["limit"] == limit
    assert result["primes"] == primes


def test_calc_creates_the_output_dir(tmp_path: Path) -> None:
    target = tmp_path / "attempt-1" / "outputs"
    done = run(PERM_FILES / "calc.py", "50", cwd=tmp_path, env={"TITAN_OUTPUT_DIR": str(target)})
    assert done.returncode == 0, done.stderr
    assert json.loads((target / "calc_result.json").read_text())["primes"] == 15


def test_calc_without_output_dir_writes_nothing(tmp_path: Path) -> None:
    done = run(PERM_FILES / "calc.py", "1000", cwd=tmp_path, env={"TITAN_OUTPUT_DIR": ""})
    assert done.returncode == 0
    assert "primes below 1000: 168" in done.stdout
    assert not list(tmp_path.rglob("calc_result.json"))


def test_calc_refuses_a_bad_size(tmp_path: Path) -> None:
    done = run(PERM_FILES / "calc.py", "many", cwd=tmp_path)
    assert done.returncode == 2
    assert "usage" in done.stderr


# --------------------------------------------------------------------------- small scripts


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_sysinfo_prints_host_facts(tmp_path: Path) -> None:
    done = run(PERM_FILES / "sysinfo.sh", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    facts = dict(line.split(":", 1) for line in done.stdout.splitlines())
    assert {"kernel", "cpus", "load", "cwd", "disk"} <= set(facts)
    assert int(facts["cpus"]) == os.cpu_count()
    assert facts["cwd"].strip() == str(tmp_path)
    assert os.uname().sysname in facts["kernel"]


@pytest.mark.parametrize(("args", "code"), [((), 3), (("7",), 7), (("0",), 0)])
def test_fail_exits_with_the_given_code(tmp_path: Path, args: tuple[str, ...], code: int) -> None:
    done = run(PERM_FILES / "fail.py", *args, cwd=tmp_path)
    assert done.returncode == code
    assert f"exit code {code}" in done.stderr
    assert done.stdout == ""


def test_sleep_sleeps_and_says_so(tmp_path: Path) -> None:
    done = run(PERM_FILES / "sleep.py", "0.05", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.splitlines() == ["sleeping 0.05s", "done"]
    assert run(PERM_FILES / "sleep.py", "-1", cwd=tmp_path).returncode == 2


def test_burn_uses_cpu_time_and_refuses_bad_input(tmp_path: Path) -> None:
    done = run(PERM_FILES / "burn.py", "0.05", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith("burned 0.05s of CPU in ")
    assert run(PERM_FILES / "burn.py", "x", cwd=tmp_path).returncode == 2
    assert run(PERM_FILES / "burn.py", "-1", cwd=tmp_path).returncode == 2


def test_server_dashboard_refuses_a_bad_port_with_one_line(tmp_path: Path) -> None:
    done = run(PERM_FILES / "server_dashboard.py", "99999", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "out of range" in done.stderr


# --------------------------------------------------------------------------- PDF_CONVERT


def test_pdf_convert_writes_a_valid_pdf(tmp_path: Path) -> None:
    done = run(HANDLERS / "pdf_convert.py", "future_report.pdf", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    pdf_path = tmp_path / "out" / "future_report.pdf"
    data = pdf_path.read_bytes()
    assert f"{pdf_path} ({len(data)} bytes)" in done.stdout
    assert data.startswith(b"%PDF-1.")
    assert data.rstrip().endswith(b"%%EOF")

    startxref = int(re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", data).group(1))  # type: ignore[union-attr]
    assert data[startxref:].startswith(b"xref\n")
    table = re.match(rb"xref\n0 (\d+)\n", data[startxref:])
    assert table
    count = int(table.group(1))
    entries = data[startxref + table.end() :].split(b"\n")[:count]
    assert entries[0] == b"0000000000 65535 f "
    for number, entry in enumerate(entries[1:], start=1):
        assert len(entry) + 1 == 20, "xref entries are exactly 20 bytes"
        offset, generation, kind = entry.split()
        assert (generation, kind) == (b"00000", b"n")
        assert data[int(offset) :].startswith(b"%d 0 obj" % number), f"object {number} is not at {int(offset)}"
    trailer = data[data.index(b"trailer") :]
    assert b"/Size %d" % count in trailer
    assert b"/Root 1 0 R" in trailer

    stream = re.search(rb"/Length (\d+) >>\nstream\n", data)
    assert stream
    content = data[stream.end() : stream.end() + int(stream.group(1))]
    assert b"(future_report) Tj" in content
    assert re.search(rb"at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\) Tj", content)
    assert data[stream.end() + len(content) :].startswith(b"\nendstream")


def test_pdf_convert_escapes_the_title(tmp_path: Path) -> None:
    done = run(HANDLERS / "pdf_convert.py", "q(3)\\x", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert b"(q\\(3\\)\\\\x) Tj" in (tmp_path / "out" / "q(3)\\x.pdf").read_bytes()


@pytest.mark.parametrize("name", ["../escape.pdf", "a/b.pdf", ""])
def test_pdf_convert_refuses_paths(tmp_path: Path, name: str) -> None:
    done = run(HANDLERS / "pdf_convert.py", name, cwd=tmp_path)
    assert done.returncode == 2
    assert not list(tmp_path.rglob("*.pdf"))


# --------------------------------------------------------------------------- EMAIL_ALERT


def test_email_alert_writes_an_eml_without_smtp(tmp_path: Path) -> None:
    done = run(HANDLERS / "email_alert.py", "admin@titan.com", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (eml,) = (tmp_path / "out").glob("*.eml")
    assert str(eml) in done.stdout
    raw = eml.read_bytes()
    assert b"\r\n" in raw
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert message["To"] == "admin@titan.com"
    assert message["Subject"].startswith("[Titan] alert")
    assert message["Date"] and message["Message-ID"] and message["From"]
    assert "Titan alert" in message.get_content()


@pytest.mark.parametrize("address", ["not an address", "admin@", "@titan.com", "admin@titan", "a..b@titan.com", ""])
def test_email_alert_refuses_a_bad_address(tmp_path: Path, address: str) -> None:
    done = run(HANDLERS / "email_alert.py", address, cwd=tmp_path)
    assert done.returncode == 2
    assert "not a valid e-mail address" in done.stderr
    assert not list((tmp_path / "out").iterdir())


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP to accept one message and keep it."""

    received: list[bytes]

    def handle(self) -> None:
        self.wfile.write(b"220 test ESMTP\r\n")
        while line := self.rfile.readline():
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"DATA":
                self.wfile.write(b"354 go on\r\n")
                body = bytearray()
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    body += chunk
                self.received.append(bytes(body))
                self.wfile.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, list[bytes]]]:
    received: list[bytes] = []
    handler = type("Handler", (_SmtpHandler,), {"received": received})
    with socketserver.TCPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()
        yield server.server_address[1], received
        server.shutdown()
        thread.join()


def test_email_alert_sends_through_smtp(tmp_path: Path, smtp_server: tuple[int, list[bytes]]) -> None:
    port, received = smtp_server
    env = {"TITAN_SMTP_HOST": "127.0.0.1", "TITAN_SMTP_PORT": str(port)}
    done = run(HANDLERS / "email_alert.py", "ops@example.org", "disk", "full", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert f"sent to ops@example.org via 127.0.0.1:{port}" in done.stdout
    (data,) = received
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert message["To"] == "ops@example.org"
    assert message.get_content().startswith("disk full")
    assert not list((tmp_path / "out").iterdir())
