"""A cluster over TLS: jobs run end to end, and a peer with TLS on one side only gets one clear line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocol import JobSpec
from tests.conftest import FAST_MASTER, FAST_WORKER
from tests.support import PERM_FILES, REPO, wait_until
from titan.cli.main import main as titan_main
from titan.client import TitanClient
from titan.config import ClientSettings, MasterSettings, WorkerSettings
from titan.errors import ConnectError, TlsRefused
from titan.master import Master
from titan.master.__main__ import main as master_main
from titan.net.tls import TlsClient, TlsServer
from titan.worker import Worker

TLS = Path(__file__).parent.parent / "net" / "tls"
TRUSTED = TlsClient(TLS / "ca.pem")


def _tls_master_settings(tmp_path: Path, **overrides: object) -> MasterSettings:
    return MasterSettings(
        **{
            **FAST_MASTER,
            "workspace": tmp_path / "master",
            "perm_files": PERM_FILES,
            "tls_cert": TLS / "master.pem",
            "tls_key": TLS / "master.key",
            **overrides,
        }
    )


@pytest.fixture
async def tls_master(tmp_path: Path) -> AsyncIterator[Master]:
    master = Master(_tls_master_settings(tmp_path))
    await master.start()
    yield master
    await master.aclose()


def _client_settings(master: Master, tls: TlsClient | None, host: str = "127.0.0.1") -> ClientSettings:
    return ClientSettings(host=host, port=master.port, tls=tls, connect_timeout_s=5.0)


async def test_workers_and_clients_over_tls_run_jobs_end_to_end(tls_master: Master, tmp_path: Path) -> None:
    worker = Worker(
        WorkerSettings(
            **FAST_WORKER,
            master_host="127.0.0.1",
            master_port=tls_master.port,
            port=18181,
            capacity=2,
            workspace=tmp_path / "worker",
            tls=TRUSTED,
        )
    )
    await worker.start()
    try:
        await wait_until(worker.registered.is_set, timeout_s=10, what="the TLS worker registered")
        # the certificate names both 127.0.0.1 and localhost; either is checked against it
        for host in ("127.0.0.1", "localhost"):
            async with await TitanClient.connect(_client_settings(tls_master, TRUSTED, host)) as client:
                job_id = await client.submit(JobSpec(type="SHELL", data="echo over tls"))
                (job,) = await client.wait([job_id], timeout_s=30)
                assert (job.state, job.worker) == ("COMPLETED", "[18181]"), job
    finally:
        await worker.aclose()


async def test_a_plain_client_of_a_tls_master_is_told_to_use_tls(
    tls_master: Master, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConnectError, match="closed the connection during the handshake; if the master uses TLS"):
        await TitanClient.connect(_client_settings(tls_master, None))
    # the master says so in its log, and keeps nothing of the connection
    await wait_until(lambda: "TLS handshake failed" in caplog.text, what="the master's line about it")
    assert "WRONG_VERSION_NUMBER: it does not speak TLS (a worker or client without --tls?)" in caplog.text
    # and the master goes on serving everyone else
    async with await TitanClient.connect(_client_settings(tls_master, TRUSTED)) as client:
        assert (await client.stats()).workers == []
        assert len(tls_master._peers) == 1  # this client: no protocol left behind by the refused one


async def test_refused_and_silent_tls_connections_leave_nothing_behind(tmp_path: Path) -> None:
    master = Master(_tls_master_settings(tmp_path, handshake_timeout_s=0.2))
    await master.start()
    try:
        for _ in range(10):  # a scanner, or a plain peer retrying
            reader, writer = await asyncio.open_connection("127.0.0.1", master.port)
            writer.write(b"\x01\x01\x00\x00\x00\x00\x00\x00")
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing answered in clear
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", master.port)  # says nothing at all
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed at the handshake deadline
        writer.close()
        assert isinstance(master._server, TlsServer)
        await wait_until(lambda: not master._server.handshakes, what="no handshake left")
        assert not master._peers
    finally:
        await master.aclose()


def test_a_hello_sent_the_moment_a_connection_opens_is_never_lost(tmp_path: Path) -> None:
    # On uvloop (the master's loop in production; these tests otherwise run on asyncio's), a
    # client's ClientHello could reach a listener that first took the connection in clear and
    # only then handed it to TLS: the hello was lost and the handshake hung until its deadline.
    uvloop = pytest.importorskip("uvloop")

    async def connect_often() -> int:
        master = Master(_tls_master_settings(tmp_path))
        await master.start()
        try:
            context = TRUSTED.context()
            secured = 0
            for _ in range(30):
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", master.port, ssl=context, server_hostname="127.0.0.1"), 5
                )
                secured += writer.get_extra_info("ssl_object") is not None
                writer.close()
            assert isinstance(master._server, TlsServer)
            await wait_until(lambda: not master._server.handshakes, what="no handshake left")
            return secured
        finally:
            await master.aclose()

    assert uvloop.run(connect_often()) == 30


async def test_a_plain_worker_of_a_tls_master_stops_at_start_up_with_the_hint(
    tls_master: Master, tmp_path: Path
) -> None:
    settings = WorkerSettings(**FAST_WORKER, master_port=tls_master.port, port=18183, workspace=tmp_path / "w")
    worker = Worker(settings)
    await worker.start()
    try:
        await wait_until(worker.refused.is_set, timeout_s=10, what="the plain worker to give up")
        assert worker.refusal.startswith(f"handshake with 127.0.0.1:{tls_master.port} failed: ")
        assert worker.refusal.endswith(
            f"if the master uses TLS, connect with --tls or --tls-ca FILE (master 127.0.0.1:{tls_master.port})"
        )
        assert not worker.registered.is_set()
    finally:
        await worker.aclose()


async def test_a_master_certificate_nobody_vouches_for_is_refused(tls_master: Master) -> None:
    with pytest.raises(TlsRefused, match="its TLS certificate was refused .*; pass the CA that signed it"):
        await TitanClient.connect(_client_settings(tls_master, TlsClient(TLS / "stranger.pem")))


async def test_a_trusted_certificate_for_other_names_says_to_dial_a_name_it_lists(tmp_path: Path) -> None:
    # the certificate names 127.0.0.1 and localhost; this master listens on 127.0.0.2 (loopback too)
    master = Master(_tls_master_settings(tmp_path, host="127.0.0.2"))
    await master.start()
    try:
        with pytest.raises(TlsRefused, match="refused .*; dial the master by a name or address its certificate lists"):
            await TitanClient.connect(_client_settings(master, TRUSTED, host="127.0.0.2"))
    finally:
        await master.aclose()


async def test_tls_to_a_plain_master_says_it_does_not_answer_in_tls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plain = Master(MasterSettings(**{**FAST_MASTER, "workspace": tmp_path / "plain", "perm_files": PERM_FILES}))
    await plain.start()
    try:
        with pytest.raises(TlsRefused, match="it does not answer in TLS .*; drop --tls/--tls-ca"):
            await TitanClient.connect(_client_settings(plain, TRUSTED))
        # and the master's log says what came in
        await wait_until(lambda: "this is a TLS handshake" in caplog.text, what="the master's line about it")
    finally:
        await plain.aclose()


async def test_the_titan_command_takes_tls_flags_before_or_after_the_command(
    tls_master: Master, capsys: pytest.CaptureFixture[str]
) -> None:
    address, ca = f"127.0.0.1:{tls_master.port}", str(TLS / "ca.pem")
    # titan's main() runs its own event loop: in a thread, while this one serves the master
    assert await asyncio.to_thread(titan_main, ["--master", address, "--tls-ca", ca, "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["workers"] == []
    assert await asyncio.to_thread(titan_main, ["stats", "--json", "--master", address, "--tls-ca", ca]) == 0
    assert json.loads(capsys.readouterr().out)["queued"] == 0
    assert await asyncio.to_thread(titan_main, ["stats", "--master", address]) == 1
    assert "if the master uses TLS, connect with --tls or --tls-ca FILE" in capsys.readouterr().err


def test_a_master_whose_certificate_cannot_be_used_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--port", "0", "--workspace", str(tmp_path / "m"), "--tls-cert", str(TLS / "master.pem")]
    assert master_main(argv) == 1  # the key is not in the certificate file, and none was given
    err = capsys.readouterr().err
    assert err.startswith("titan master: TLS certificate") and err.count("\n") == 1, err
    assert not (tmp_path / "m" / "wal").exists()  # stopped before it took the workspace


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses the worker's real start-up")
def test_a_worker_that_does_not_trust_the_master_exits_1_with_one_line(tmp_path: Path) -> None:
    master = subprocess.Popen(
        [sys.executable, "-m", "titan.master", "--port", "0", "--workspace", str(tmp_path / "m"),
         "--tls-cert", str(TLS / "master.pem"), "--tls-key", str(TLS / "master.key")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, text=True,
    )  # fmt: skip
    try:
        assert master.stdout is not None
        line = master.stdout.readline()
        assert line.endswith("(TLS)\n"), line
        port = line.split(":")[-1].split()[0]
        worker = subprocess.run(
            [sys.executable, "-m", "titan.worker", "--master", f"127.0.0.1:{port}", "--port", "18182",
             "--workspace", str(tmp_path / "w"), "--tls-ca", str(TLS / "stranger.pem")],
            capture_output=True, cwd=REPO, text=True, timeout=60,
        )  # fmt: skip
        assert worker.returncode == 1
        assert worker.stderr.startswith("titan worker: cannot reach the master"), worker.stderr
        assert "its TLS certificate was refused" in worker.stderr and worker.stderr.count("\n") == 1
    finally:
        master.terminate()
        master.communicate(timeout=30)  # reaped, and its pipe closed
