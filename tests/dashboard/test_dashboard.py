"""The dashboard: its page, its JSON snapshot, its answers to bad requests, its command line."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from titan.client.testing import FakeMaster, worker_info
from titan.config import ClientSettings
from titan.dashboard import Dashboard, DashboardSettings, parse_args


async def http(port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def get(port: int, path: str) -> tuple[int, bytes]:
    return await http(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


async def test_page_and_snapshot_show_the_cluster(fake_master: FakeMaster) -> None:
    reserving = dataclasses.replace(worker_info(8080, load=1, services=["DASH"]), memory_mb=4096, memory_used_mb=512)
    fake_master.workers = [reserving, worker_info(8081, parent="w-8080")]
    fake_master.add_job("DASH", "DEPLOY", "server_dashboard.py", state="RUNNING")
    dashboard = Dashboard(DashboardSettings(port=0), ClientSettings(port=fake_master.port))
    await dashboard.start()
    try:
        status, page = await get(dashboard.port, "/")
        assert status == 200 and b"TITAN CLUSTER" in page and b"/api/cluster" in page
        status, body = await get(dashboard.port, "/api/cluster")
        data = json.loads(body)
        assert status == 200 and data["connected"]
        assert [w["port"] for w in data["stats"]["workers"]] == [8080, 8081]
        assert data["stats"]["workers"][1]["parent"] == "w-8080"
        assert (data["stats"]["workers"][0]["memory_used_mb"], data["stats"]["workers"][0]["memory_mb"]) == (512, 4096)
        assert b"memory_used_mb" in page  # the page shows a worker's reservations
        assert [job["id"] for job in data["jobs"]] == ["DASH"]
        assert await get(dashboard.port, "/healthz") == (200, b"ok\n")
    finally:
        await dashboard.aclose()


async def test_snapshots_are_cached_for_the_refresh_period(fake_master: FakeMaster) -> None:
    dashboard = Dashboard(DashboardSettings(port=0, refresh_s=60), ClientSettings(port=fake_master.port))
    await dashboard.start()
    try:
        for _ in range(3):
            await get(dashboard.port, "/api/cluster")
        assert sum(1 for request in fake_master.received if type(request).__name__ == "Stats") == 1
    finally:
        await dashboard.aclose()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /nope HTTP/1.1\r\n\r\n", 404),
        (b"POST / HTTP/1.1\r\n\r\n", 405),
        (b"garbage\r\n\r\n", 400),
    ],
)
async def test_bad_requests_get_an_http_error(fake_master: FakeMaster, request_bytes: bytes, status: int) -> None:
    dashboard = Dashboard(DashboardSettings(port=0), ClientSettings(port=fake_master.port))
    await dashboard.start()
    try:
        assert (await http(dashboard.port, request_bytes))[0] == status
    finally:
        await dashboard.aclose()


async def test_an_unreachable_master_is_reported_not_raised() -> None:
    probe = await FakeMaster().start()
    await probe.aclose()
    dashboard = Dashboard(DashboardSettings(port=0), ClientSettings(port=probe.port, connect_timeout_s=1))
    await dashboard.start()
    try:
        status, body = await get(dashboard.port, "/api/cluster")
        data = json.loads(body)
        assert status == 503 and not data["connected"] and data["error"]
    finally:
        await dashboard.aclose()


async def test_a_busy_port_falls_back_only_when_asked(fake_master: FakeMaster) -> None:
    first = Dashboard(DashboardSettings(port=0), ClientSettings(port=fake_master.port))
    await first.start()
    try:
        taken = DashboardSettings(port=first.port)
        with pytest.raises(OSError):
            await Dashboard(taken, ClientSettings(port=fake_master.port)).start()
        fallback = Dashboard(DashboardSettings(port=first.port, any_port_if_busy=True), ClientSettings())
        await fallback.start()
        assert fallback.port != first.port
        await fallback.aclose()
    finally:
        await first.aclose()


def test_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    settings, client = parse_args(["--port", "0", "--master", "10.0.0.1:9999"], {})
    assert (settings.port, client.host, client.port) == (0, "10.0.0.1", 9999)
    _, client = parse_args([], {"TITAN_MASTER": "127.0.0.2:9191"})
    assert (client.host, client.port) == ("127.0.0.2", 9191)
    with pytest.raises(SystemExit):
        parse_args(["--port", "70000"], {})
    assert capsys.readouterr().err.count("\n") == 1


# the page's script run in node against a stub DOM: what it shows for one /api/cluster answer
_RUN_PAGE = r"""
const fs = require("fs"), vm = require("vm");
const [script, answer] = [fs.readFileSync(process.argv[2], "utf8"), fs.readFileSync(process.argv[3], "utf8")];
function node() {
  return {textContent: "", className: "", children: [],
          appendChild(c) { this.children.push(c); return c; }, replaceChildren() { this.children = []; }};
}
const byId = {};
const document = {createElement: node, getElementById: (id) => byId[id] || (byId[id] = node())};
const text = (n) => n.textContent + n.children.map(text).join(" ");
vm.runInNewContext(script, {document, setTimeout: () => {}, console,
  fetch: async () => ({json: async () => JSON.parse(answer)})});
setImmediate(() => setImmediate(() => console.log(JSON.stringify(
  {status: byId.status.textContent, autoscaler: text(byId.autoscaler), jobs: text(byId.jobs)}))));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
@pytest.mark.parametrize(
    ("autoscaler", "shown"),
    [
        ({"enabled": False}, "off"),  # a master without --autoscale
        (
            {"enabled": True, "pending_spawns": 0, "decisions": [],
             "limits": {"max_workers": 8, "max_children": 4, "max_depth": 2}},
            "limits: 8 workers, 4 children each, depth 2; pending spawns: 0",
        ),
    ],
)  # fmt: skip
async def test_the_page_draws_a_snapshot_with_the_autoscaler_on_or_off(
    fake_master: FakeMaster, tmp_path: Path, autoscaler: dict[str, Any], shown: str
) -> None:
    fake_master.workers = [worker_info(8081)]
    fake_master.stats_extra = {"autoscaler": autoscaler}
    fake_master.add_job("A", "SHELL", "true", state="COMPLETED")
    dashboard = Dashboard(DashboardSettings(port=0), ClientSettings(port=fake_master.port))
    await dashboard.start()
    try:
        _, page = await get(dashboard.port, "/")
        _, answer = await get(dashboard.port, "/api/cluster")
    finally:
        await dashboard.aclose()
    script = page.decode().split("<script>", 1)[1].split("</script>", 1)[0]
    (tmp_path / "page.js").write_text(script)
    (tmp_path / "answer.json").write_bytes(answer)
    (tmp_path / "run.js").write_text(_RUN_PAGE)
    node = await asyncio.create_subprocess_exec(
        "node", str(tmp_path / "run.js"), str(tmp_path / "page.js"), str(tmp_path / "answer.json"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(node.communicate(), 30)
    drawn = json.loads(out.decode().strip().splitlines()[-1])
    assert drawn["status"].startswith("master "), drawn  # not "dashboard unreachable: TypeError ..."
    assert drawn["autoscaler"].strip() == shown
    assert "A" in drawn["jobs"] and "COMPLETED" in drawn["jobs"]
