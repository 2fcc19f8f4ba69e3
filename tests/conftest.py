"""Shared fixtures: one small synthetic sample, generated once per test session.

`small_data` is `synth.generate(n_firms=1000, years=2016..2021, seed=3)` (planted effects and
truth included); `small_sample` is the same written to files as a ministry would deliver it
(panel.parquet, macro.csv, targets.csv, truth.csv, ...). Tests that need other sizes or seeds
generate their own.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

import msme_eval as me


@pytest.fixture(scope="session")
def small_data() -> me.synth.SyntheticData:
    return me.synth.generate(n_firms=1000, years=range(2016, 2022), seed=3)


@pytest.fixture(scope="session")
def small_sample(small_data, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return me.synth.write_sample(tmp_path_factory.mktemp("small-sample"), small_data)


ROOT = Path(__file__).resolve().parents[1]


def template_from(folder: Path, name: str, body: str, scope: tuple[str, ...] = ("region",),
                  title: str | None = None) -> Path:
    """A template as a user would add one: the standard preamble of a shipped template (imports,
    the `parameters` cell, `notebook_context`) followed by one code cell ``body``."""
    import nbformat
    from nbformat.v4 import new_code_cell

    nb = nbformat.read(ROOT / "notebooks" / "10_data_quality.ipynb", as_version=4)
    params_at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells = nb.cells[: params_at + 2] + [new_code_cell(body)]
    nb.metadata["msme_eval"] = {"title": title or name, "scope": list(scope), "phase": 1, "cost": 1.0}
    for i, c in enumerate(nb.cells):
        c["id"] = f"{name}-{i}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.asynccontextmanager
async def devtools(on_event: Callable[[dict], None] = lambda msg: None):
    """Headless Chromium (no network, fresh profile) and a DevTools-protocol ``send(method,
    **params) -> result`` bound to its first page; other messages go to ``on_event``."""
    from tornado.websocket import websocket_connect

    profile = tempfile.mkdtemp(prefix="me-chromium-")
    proc = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                             "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             "--window-size=1200,1600", "--no-first-run",
                             "--disable-background-networking", "--disable-sync",
                             "--disable-component-update", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().count("\n") >= 1:
                break
            await asyncio.sleep(0.1)
        port = port_file.read_text().splitlines()[0]
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json").read())
        ws = await websocket_connect(next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"),
                                     max_message_size=64 << 20)
        counter = 0

        async def send(method: str, **params: object) -> dict:
            nonlocal counter
            counter += 1
            my = counter
            ws.write_message(json.dumps({"id": my, "method": method, "params": params}))
            while True:
                msg = json.loads(await ws.read_message())
                if msg.get("id") == my:
                    return msg.get("result", {})
                on_event(msg)

        send.ws = ws  # type: ignore[attr-defined]  # for callers that wait for events themselves
        yield send
        ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
