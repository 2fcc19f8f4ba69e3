"""Scripted faults: whatever happens to a run, the last good report stays and no process is left.

Each case runs `msme-eval run` as a user would (a subprocess), with a tiny template, against an
output root that already holds a good published cycle, then checks that cycle is byte-identical
and that no papermill or kernel process of the run survives (found through an environment marker
every child inherits).
"""
from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import template_from

from msme_eval.report import publish as publish_mod

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and signals")


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _marked_processes(mark: str) -> list[int]:
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"MSME_FAULT_MARK={mark}".encode() in env.read_bytes():
                found.append(int(env.parent.name))
        except OSError:
            continue
    return found


def _wait_gone(mark: str, seconds: float = 15) -> list[int]:
    end = time.time() + seconds
    while time.time() < end:
        left = _marked_processes(mark)
        if not left:
            return []
        time.sleep(0.2)
    return _marked_processes(mark)


class Runner:
    """`msme-eval run` of one region notebook (``body``) on the small sample."""

    def __init__(self, sample: dict[str, Path], root: Path, tmp: Path) -> None:
        self.sample, self.root, self.tmp = sample, root, tmp
        self.mark = uuid.uuid4().hex

    def cmd(self, cycle: str, body: str, name: str = "10_page") -> list[str]:
        tpl = self.tmp / f"tpl-{uuid.uuid4().hex[:6]}"
        template_from(tpl, name, body)
        return [sys.executable, "-m", "msme_eval.cli", "run", "--cycle", cycle,
                "--panel", str(self.sample["panel"]), "--macro", str(self.sample["macro"]),
                "--targets", str(self.sample["targets"]), "--countries", "ASEAN",
                "--templates-dir", str(tpl), "--output-root", str(self.root), "--timeout", "120",
                "--workers", "1"]

    def start(self, cycle: str, body: str, **kw) -> subprocess.Popen:
        env = dict(os.environ, MSME_FAULT_MARK=self.mark)
        return subprocess.Popen(self.cmd(cycle, body), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kw)

    def run(self, cycle: str, body: str, **kw) -> subprocess.CompletedProcess:
        p = self.start(cycle, body, **kw)
        out, err = p.communicate(timeout=300)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.fixture()
def runner(small_sample, tmp_path: Path) -> Runner:
    r = Runner(small_sample, tmp_path / "reports", tmp_path)
    good = r.run("C", 'display(md("good **{v}**", v="report"))')
    assert good.returncode == 0, good.stdout + good.stderr
    return r


def _wait_for_notebook_start(root: Path, cycle: str, seconds: float = 60) -> None:
    end = time.time() + seconds
    while time.time() < end:
        if any(root.glob(f".tmp-{cycle}.*/_work/logs/*/*.log")):
            time.sleep(3)  # papermill has started its kernel
            return
        time.sleep(0.2)
    raise AssertionError("the notebook never started")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_kill_during_execution_keeps_the_report_and_leaves_no_process(runner: Runner, sig) -> None:
    before = _digest(runner.root / "C")
    t0 = time.time()
    p = runner.start("C", "import time; time.sleep(100)")
    _wait_for_notebook_start(runner.root, "C")
    assert _marked_processes(runner.mark), "the kernel should be running"
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert time.time() - t0 < 60, "the run stopped promptly, not at the notebook's time limit"
    assert _wait_gone(runner.mark) == [], "papermill or its kernel survived the runner"
    assert _digest(runner.root / "C") == before
    if sig != signal.SIGKILL:
        assert p.returncode == 130 and "nothing was published" in err and "Traceback" not in err
    else:  # the next run cleans the orphaned build folder
        assert runner.run("C", 'display(md("again"))').returncode == 0
        assert not list(runner.root.glob(".tmp-C.*"))


@pytest.mark.slow
def test_failing_rerun_keeps_the_published_cycle(runner: Runner) -> None:
    before = _digest(runner.root / "C")
    res = runner.run("C", "1 / 0")
    assert res.returncode == 1 and "ZeroDivisionError" in res.stdout
    assert _digest(runner.root / "C") == before
    failed = runner.root / "_failed" / "C" / "index.html"
    assert failed.exists() and "was left as it was" in res.stdout
    index = (runner.root / "index.html").read_text(encoding="utf-8")
    assert "_failed" not in index  # the failed run is not listed as a published cycle


@pytest.mark.slow
def test_full_disk_keeps_the_report_with_one_clear_message(runner: Runner) -> None:
    """RLIMIT_FSIZE makes every write past 200 kB fail (EFBIG), as a full disk would."""
    before = _digest(runner.root / "C")

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    res = runner.run("C", "import numpy as np\nnp.zeros(10_000_000).tofile('big.bin')",
                     preexec_fn=limit)
    assert res.returncode != 0
    assert _digest(runner.root / "C") == before
    assert "Traceback" not in res.stderr, res.stderr


@pytest.mark.slow
def test_concurrent_runs_lock_per_cycle_without_touching_others(runner: Runner) -> None:
    before = _digest(runner.root / "C")
    slow = 'import time; time.sleep(8); display(md("x"))'
    a = runner.start("F", slow)
    b = runner.start("F-x", slow)
    _wait_for_notebook_start(runner.root, "F")
    same = runner.run("F", 'display(md("y"))')
    assert same.returncode == 2 and "already being run" in same.stderr
    assert a.wait(120) == 0 and b.wait(120) == 0, (a.stderr.read(), b.stderr.read())
    assert (runner.root / "F" / "index.html").exists() and (runner.root / "F-x" / "index.html").exists()
    assert _digest(runner.root / "C") == before


def test_interrupted_non_atomic_publish_is_restored(tmp_path: Path, monkeypatch) -> None:
    """Without an atomic folder swap (vfat, network drives) the old cycle is moved aside first;
    a crash before the new one is in place is repaired at the next run's start."""
    root = tmp_path
    (root / "C").mkdir()
    (root / "C" / "index.html").write_text("good", encoding="utf-8")
    build = root / ".tmp-C.abc"
    build.mkdir()
    (build / "index.html").write_text("new", encoding="utf-8")
    monkeypatch.setattr(publish_mod, "_renameat2_exchange", lambda a, b: False)
    real_rename = os.rename

    def crash_on_second(src, dst):
        if Path(src) == build:
            raise KeyboardInterrupt("killed during publish")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        publish_mod.publish(build, root / "C")
    monkeypatch.setattr(os, "rename", real_rename)
    # the rollback already put it back; simulate a SIGKILL that prevented the rollback too:
    assert (root / "C" / "index.html").read_text() == "good"
    os.rename(root / "C", root / ".old-C.dead")
    publish_mod.restore_interrupted_publish(root, "C")
    assert (root / "C" / "index.html").read_text() == "good"
    assert not list(root.glob(".old-C.*"))


def test_published_files_are_readable_and_own_index_is_kept(tmp_path: Path) -> None:
    from msme_eval import cycle
    from msme_eval.report import site

    folder = tmp_path / "b"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "x.html").write_text("x")
    os.chmod(folder / "sub" / "x.html", 0o600)
    os.chmod(folder, 0o700)
    cycle.make_readable(folder)
    assert (folder / "sub" / "x.html").stat().st_mode & 0o044 == 0o044
    assert folder.stat().st_mode & 0o055 == 0o055
    (tmp_path / "index.html").write_text("<html>my own page</html>")
    assert site.write_root_index(tmp_path) is False
    assert (tmp_path / "index.html").read_text() == "<html>my own page</html>"
