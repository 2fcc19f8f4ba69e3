"""A Spark session from the environment, for the Spark engine (``engine: spark`` of a cycle).

Where Spark runs is configuration of the machine, not a parameter of a cycle, so it comes from
environment variables only (credentials included; they are never parameters, never logged and
never written into a report):

``MSME_EVAL_SPARK_MASTER``
    The master URL; default ``local[2]`` (Spark inside this process's JVM on 2 cores).
    Examples: ``local[*]``, ``spark://host:7077`` (standalone cluster), ``yarn``,
    ``k8s://https://host:6443``, or ``sc://host:15002`` (Spark Connect, no local JVM).
``SPARK_REMOTE``
    Spark's own variable for a Spark Connect server (``sc://host:15002``, optionally with
    ``/;token=...``); when set it wins over ``MSME_EVAL_SPARK_MASTER``.
``MSME_EVAL_SPARK_CONF``
    Extra Spark settings as ``key=value;key=value``, e.g.
    ``spark.executor.memory=4g;spark.sql.shuffle.partitions=64``. Values may contain ``=``.

In local mode the web UI and console progress bars are off and the log level is ERROR, so a
notebook or a test shows only results. ``available()`` says why Spark cannot run here
(pyspark not installed, no Java 17+) instead of failing deep inside py4j.

References: Spark "Submitting Applications" (master URLs), "Spark Connect Overview"
(``SparkSession.builder.remote``, ``SPARK_REMOTE``), "Spark Configuration".
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ENV_MASTER", "ENV_CONF", "ENV_REMOTE", "DEFAULT_MASTER", "SparkUnavailable",
           "Settings", "settings", "parse_conf", "available", "session", "scoped_session",
           "describe", "read_parquet"]

ENV_MASTER = "MSME_EVAL_SPARK_MASTER"
ENV_CONF = "MSME_EVAL_SPARK_CONF"
ENV_REMOTE = "SPARK_REMOTE"
DEFAULT_MASTER = "local[2]"
MIN_JAVA = 17  # Spark 4 runs on Java 17 and 21
APP_NAME = "msme-eval"

# quiet, small-data defaults for local mode (user settings in MSME_EVAL_SPARK_CONF win)
_LOCAL_DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
}
_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")


class SparkUnavailable(RuntimeError):
    """Spark cannot run here (pyspark or Java missing, or a bad setting); the message says why
    and how to fix it."""


@dataclass(frozen=True)
class Settings:
    """Where and how to run Spark, read from the environment (see the module docstring)."""

    master: str = DEFAULT_MASTER
    remote: str | None = None  # Spark Connect URL (may hold a token: never show it)
    conf: dict[str, str] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return self.remote is None and self.master.startswith("local")


def parse_conf(text: str | None) -> dict[str, str]:
    """``"k=v;k2=v2"`` -> ``{"k": "v", "k2": "v2"}`` (blank items are skipped).

    Raises ``ValueError`` naming the bad item by position, never echoing a value (a value
    may be a credential, e.g. an object-store secret key).
    """
    out: dict[str, str] = {}
    if not text:
        return out
    for i, item in enumerate(text.split(";"), start=1):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{ENV_CONF}: item {i} is not key=value (expected "
                             "'spark.key=value;spark.other=value')")
        if not _KEY.match(key):
            raise ValueError(f"{ENV_CONF}: item {i} has an invalid key (letters, digits, "
                             "'.', '_' and '-' only)")
        if key in out:
            raise ValueError(f"{ENV_CONF}: key {key!r} is given twice")
        out[key] = value.strip()
    return out


def settings(env: Mapping[str, str] | None = None) -> Settings:
    """The Spark settings from ``env`` (default ``os.environ``); raises ``SparkUnavailable``
    for a malformed ``MSME_EVAL_SPARK_CONF``."""
    env = os.environ if env is None else env
    master = (env.get(ENV_MASTER) or "").strip() or DEFAULT_MASTER
    remote = (env.get(ENV_REMOTE) or "").strip() or None
    if remote is None and master.startswith("sc://"):
        remote = master
    try:
        conf = parse_conf(env.get(ENV_CONF))
    except ValueError as exc:
        raise SparkUnavailable(str(exc)) from None
    return Settings(master=master, remote=remote, conf=conf)


def describe(s: Settings | None = None) -> str:
    """A description safe to log: the master URL without user info, path or token."""
    s = settings() if s is None else s
    url = s.remote or s.master
    m = re.match(r"^([a-z0-9]+://)(?:[^@/]*@)?([^/;?]*)", url)
    shown = f"{m.group(1)}{m.group(2)}" if m else url.split(";")[0]
    return f"Spark Connect {shown}" if s.remote else f"Spark master {shown}"


def _java_version(java: str) -> int | None:
    try:
        res = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', res.stderr + res.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and os.path.exists(os.path.join(home, "bin", "java")):
        return os.path.join(home, "bin", "java")
    return shutil.which("java")


def available(env: Mapping[str, str] | None = None) -> str | None:
    """``None`` when a Spark session can be built here, else the reason and the fix."""
    if importlib.util.find_spec("pyspark") is None:
        return ("pyspark is not installed. Fix: pip install 'msme-eval[spark]' (pyspark 4, "
                "needs Java 17+)")
    try:
        s = settings(env)
    except SparkUnavailable as exc:
        return str(exc)
    if s.remote is not None:  # Spark Connect: no local JVM, but the gRPC client libraries
        missing = [m for m in ("grpc", "google.protobuf", "pyarrow")
                   if importlib.util.find_spec(m) is None]
        if missing:
            return (f"Spark Connect needs {', '.join(missing)}. Fix: pip install "
                    "'pyspark[connect]'")
        return None
    java = _java()
    if java is None:
        return (f"Java ({MIN_JAVA}+) is not on PATH or JAVA_HOME; pyspark needs a JVM. Fix: "
                "install a JDK/JRE 17 or 21 (Debian: apt-get install openjdk-17-jre-headless)")
    version = _java_version(java)
    if version is not None and version < MIN_JAVA:
        return (f"{java} is Java {version}; Spark 4 needs Java {MIN_JAVA}+. Fix: install Java "
                f"17 or 21 and point JAVA_HOME at it")
    return None


def session(*, app_name: str = APP_NAME, env: Mapping[str, str] | None = None) -> Any:
    """A ``pyspark.sql.SparkSession`` for the environment's master (or Spark Connect server).

    An already running session of this process is returned as it is (Spark allows one per
    JVM; its static settings cannot change). Raises ``SparkUnavailable`` with the fix when
    Spark cannot run here.
    """
    reason = available(env)
    if reason is not None:
        raise SparkUnavailable(f"Spark is not available: {reason}")
    s = settings(env)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if s.remote is not None:
        builder = builder.remote(s.remote)
    else:
        builder = builder.master(s.master)
    conf = {**(_LOCAL_DEFAULTS if s.local else {}), **s.conf}
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - py4j/gRPC errors are long; say where it failed
        raise SparkUnavailable(f"could not start a Spark session on {describe(s)}: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                               ) from exc
    if s.remote is None:
        spark.sparkContext.setLogLevel("ERROR" if s.local else "WARN")
    return spark


def _active() -> Any:
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()


@contextmanager
def scoped_session(**kw: Any) -> Iterator[Any]:
    """``session()`` that is stopped on exit if this call started it (a session that was
    already running, e.g. the user's, is left alone)."""
    before = _active()
    spark = session(**kw)
    try:
        yield spark
    finally:
        if before is None:
            spark.stop()


def read_parquet(spark: Any, path: str | os.PathLike[str]) -> Any:
    """``spark.read.parquet`` of a local path as a ``file://`` URI (so a cluster whose default
    file system is HDFS reads the same shared path); URIs (``s3a://``, ``hdfs://``) pass as
    they are. Hive partition folders (``country=VNM/``) become columns."""
    from pathlib import Path

    text = os.fspath(path)
    if "://" not in text:
        text = Path(text).resolve().as_uri()
    return spark.read.parquet(text)
