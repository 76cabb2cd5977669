"""A throwaway PostgreSQL cluster for the catalog tests: `initdb` + `pg_ctl`, a Unix socket only.

Started once per test session (`pg_cluster`), one fresh database per test (`pg_url`), stopped
and removed at the end. The server binaries come from Debian's `postgresql` package (installed
by scripts/setup.sh); when they are missing the tests fail with that hint, they never skip.
As root the server runs as the `postgres` user (initdb refuses root), as anyone else as that user.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL_HINT = (
    "the PostgreSQL server binaries (initdb, pg_ctl) are needed for the PostgreSQL catalog tests: "
    "run `bash scripts/setup.sh` (it installs Debian's `postgresql` package), or "
    "`apt-get install postgresql`, or set MMSEARCH_PG_BIN to the folder holding them"
)


@dataclass(frozen=True)
class Cluster:
    socket_dir: str
    user: str = "postgres"

    def url(self, database: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@/{database}?host={self.socket_dir}"

    def admin(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE) as the superuser."""
        import psycopg

        with psycopg.connect(host=self.socket_dir, user=self.user, dbname="postgres", autocommit=True) as conn:
            conn.execute(sql)


def pg_bin_dir() -> Path:
    candidates = [os.environ.get("MMSEARCH_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.append(str(Path(found).parent))
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    pytest.fail(INSTALL_HINT, pytrace=False)


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return 0


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser") is None:
        pytest.fail("running the tests as root needs `runuser` to start PostgreSQL as `postgres`")
    return ["runuser", "-u", "postgres", "--", *cmd]


def _locale() -> list[str]:
    try:
        names = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False).stdout
    except OSError:
        names = ""
    for name in ("C.UTF-8", "C.utf8"):
        if name.lower() in names.lower().split():
            return [f"--locale={name}", "--encoding=UTF8"]
    return ["--no-locale", "--encoding=UTF8"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server for this session, reachable only through a socket in a temp folder."""
    bindir = pg_bin_dir()
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(f"no `postgres` user to run the server as; {INSTALL_HINT}", pytrace=False)
    root = tempfile.mkdtemp(prefix="mmsearch-pg-")
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, log = os.path.join(root, "data"), os.path.join(root, "server.log")
    try:
        subprocess.run(
            _as_server_user(
                [str(bindir / "initdb"), "-D", data, "-U", "postgres", "--auth=trust", *_locale()]
            ),
            check=True, capture_output=True, text=True, cwd=root,
        )  # fmt: skip
        options = (
            f"-k {root} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=60"
        )
        subprocess.run(
            _as_server_user([str(bindir / "pg_ctl"), "-D", data, "-l", log, "-o", options, "-w", "start"]),
            check=True, capture_output=True, text=True, cwd=root, timeout=60,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        text = (exc.stdout or "") + (exc.stderr or "")
        if os.path.exists(log):
            text += Path(log).read_text(errors="replace")
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start a PostgreSQL test cluster: {text.strip()}", pytrace=False)
    try:
        yield Cluster(root)
    finally:
        subprocess.run(
            _as_server_user([str(bindir / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"]),
            capture_output=True, cwd=root, timeout=60, check=False,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh, empty database on the session's cluster (dropped afterwards): its URL."""
    name = "t_" + uuid.uuid4().hex[:16]
    pg_cluster.admin(f"CREATE DATABASE {name}")
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
