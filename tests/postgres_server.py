"""A real PostgreSQL server (Debian's ``postgresql``) on a loopback port, for end-to-end tests.

    with PostgresServer() as pg:
        with psycopg.connect(pg.dsn) as conn:
            conn.execute("select 1")
        pg.stop()      # a database outage ...
        pg.start()     # ... and it is back: same port, same data directory, same data

As a pytest fixture::

    @pytest.fixture
    def postgres():
        with PostgresServer() as pg:
            yield pg

    def test_writes(postgres):
        with psycopg.connect(postgres.dsn) as conn:
            conn.execute("create table t (x int)")

PostgreSQL refuses to run as root. When the tests run as root (they do in CI), the server
binaries run through ``runuser -u postgres --`` (the ``postgres`` user comes with the Debian
package; without it a system user ``nexustest`` is created). The cluster lives in a private
``mkdtemp`` directory under ``/tmp`` owned by that user, uses ``trust`` authentication, listens
only on 127.0.0.1 (plus a Unix socket inside that directory), runs without fsync, and is always
stopped and removed on :meth:`PostgresServer.close`.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .ports import free_port

LOOPBACK = "127.0.0.1"
SUPERUSER = "nexus"
DATABASE = "nexus"
FALLBACK_OS_USER = "nexustest"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found in "
    "/usr/lib/postgresql/*/bin nor on PATH: run the suite with scripts/test.sh, "
    "which installs Debian's postgresql package"
)
SERVER_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def _version_key(path: str) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>/bin``: the numeric version parts."""
    version = Path(path).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def postgres_bin_dir() -> Path:
    """The directory with ``initdb``/``pg_ctl``/``postgres``: newest Debian version, else PATH; or a clear error."""
    candidates = [d for d in glob.glob("/usr/lib/postgresql/*/bin")
                  if all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres"))]
    if candidates:
        return Path(max(candidates, key=_version_key))
    found = [shutil.which(b) for b in ("initdb", "pg_ctl", "postgres")]
    if all(found):
        return Path(found[0]).parent  # type: ignore[arg-type]
    raise RuntimeError(INSTALL_HINT)


def server_os_user() -> pwd.struct_passwd | None:
    """The OS user the server runs as: ``None`` (the current user), or ``postgres``/``nexustest`` as root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_OS_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise RuntimeError(f"running as root, no `postgres` user and no `useradd` to create "
                           f"`{FALLBACK_OS_USER}`; run the suite with scripts/test.sh")
    subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    FALLBACK_OS_USER], check=True, capture_output=True, timeout=30)
    return pwd.getpwnam(FALLBACK_OS_USER)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (PID 1 in some sandboxes never reaps)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class PostgresServer:
    """One throw-away PostgreSQL cluster with superuser ``nexus`` and database ``nexus`` on 127.0.0.1."""

    def __init__(self, *, port: int | None = None, settings: tuple[str, ...] = SERVER_SETTINGS) -> None:
        """Prepare (but do not start) a server; ``port`` defaults to a free loopback port."""
        self.bin_dir = postgres_bin_dir()
        self.os_user = server_os_user()
        self.settings = settings
        self.host = LOOPBACK
        self.port = port or free_port()
        self._fixed_port = port is not None
        self.base_dir: Path | None = None
        self._initialized = False
        self._closed = False

    # --- paths & properties ---------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (``PGDATA``)."""
        return self._base() / "data"

    @property
    def socket_dir(self) -> Path:
        """Where the server puts its Unix socket (private to this server)."""
        return self._base() / "run"

    @property
    def log_path(self) -> Path:
        """The server log written by ``pg_ctl -l``."""
        return self._base() / "run" / "postgres.log"

    @property
    def dsn(self) -> str:
        """``postgresql://nexus@127.0.0.1:PORT/nexus`` (trust auth, no password)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{DATABASE}"

    def dsn_for(self, dbname: str) -> str:
        """The DSN of another database on this server (e.g. ``postgres``)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def log(self) -> str:
        """What the server has written to its log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _base(self) -> Path:
        """The temp directory, created on first use."""
        if self.base_dir is None:
            self.base_dir = self._make_base_dir()
        return self.base_dir

    def _make_base_dir(self) -> Path:
        """A fresh ``/tmp`` dir (0755, ours) with ``data`` (0700) and ``run`` (0755) owned by the server user."""
        base = Path(tempfile.mkdtemp(prefix="nexus-pg-", dir="/tmp"))
        os.chmod(base, 0o755)
        for sub, mode in (("data", 0o700), ("run", 0o755)):
            path = base / sub
            path.mkdir(mode=mode)
            os.chmod(path, mode)
            if self.os_user is not None:
                os.chown(path, self.os_user.pw_uid, self.os_user.pw_gid)
        return base

    # --- running the binaries -------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        """The environment for server tools: no stray ``PG*`` settings, C messages."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_MESSAGES"] = "C"
        return env

    def _run(self, binary: str, *args: str, as_server_user: bool = True, check: bool = True,
             timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``bin_dir/binary args`` (as the server user when root); raise with its output on failure."""
        cmd = [str(self.bin_dir / binary), *args]
        if as_server_user and self.os_user is not None:
            cmd = ["runuser", "-u", self.os_user.pw_name, "--", *cmd]
        result = subprocess.run(cmd, cwd=self._base(), env=self._env(), stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}"
                               f"{result.stderr}\n--- server log ---\n{self.log()}")
        return result

    def _initdb(self) -> None:
        """Create the cluster: superuser ``nexus``, trust auth, UTF8, no locale."""
        self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        # Trust only on loopback and the private Unix socket: nothing else may connect.
        hba = ("local all all trust\n"
               "host all all 127.0.0.1/32 trust\n")
        hba_path = self.data_dir / "pg_hba.conf"
        hba_path.write_text(hba)
        if self.os_user is not None:
            os.chown(hba_path, self.os_user.pw_uid, self.os_user.pw_gid)
        self._initialized = True

    def _pg_ctl_start(self, timeout: float) -> None:
        """``pg_ctl start -w`` on ``self.port``."""
        options = f"-h {self.host} -p {self.port} -k {self.socket_dir}"
        for setting in self.settings:
            options += f" -c {setting}"
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", str(self.log_path),
                  "-w", "-t", str(int(timeout)), "start", timeout=timeout + 15)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """Start the server (initdb + ``createdb nexus`` the first time); same port and data on restarts."""
        if self._closed:
            raise RuntimeError("this PostgresServer was closed; make a new one")
        if self.is_running():
            return self
        first_time = not self._initialized
        if first_time:
            atexit.register(self.close)
            self._initdb()
        attempts = 3 if first_time and not self._fixed_port else 1
        for attempt in range(attempts):
            try:
                self._pg_ctl_start(timeout)
                break
            except RuntimeError:
                # Another process may have taken the port between free_port() and start.
                if attempt == attempts - 1 or "already in use" not in self.log():
                    raise
                self.port = free_port()
        if first_time:
            self._run("createdb", "-h", self.host, "-p", str(self.port), "-U", SUPERUSER, DATABASE,
                      as_server_user=False)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (``pg_ctl stop -m fast -w``); the data directory and port are kept for :meth:`start`."""
        if not self._initialized or not self.is_running():
            return
        result = self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t",
                           str(int(timeout)), "stop", check=False, timeout=timeout + 15)
        if result.returncode != 0 and self.is_running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop",
                      check=False, timeout=timeout + 15)
        if self.is_running():
            self._kill_postmaster()

    def is_running(self) -> bool:
        """Whether the postmaster of this data directory is up (``pg_ctl status``)."""
        if not self._initialized or not self.data_dir.is_dir():
            return False
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False,
                         timeout=15).returncode == 0

    def _kill_postmaster(self) -> None:
        """Last resort: SIGKILL the pid in ``postmaster.pid`` and wait briefly for it to go."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the server (whatever it takes) and remove the temp directory; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            atexit.unregister(self.close)
            if self._initialized:
                try:
                    self.stop()
                except Exception:
                    self._kill_postmaster()
        finally:
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def connect(self, dbname: str = DATABASE, **kwargs: Any) -> Any:
        """A ``psycopg`` (v3) connection to ``dbname`` (``autocommit`` unless told otherwise)."""
        import psycopg

        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 5)
        return psycopg.connect(self.dsn_for(dbname), **kwargs)

    def __enter__(self) -> PostgresServer:
        """Start the server; on failure clean up before raising."""
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        """Stop the server and remove its files."""
        self.close()
