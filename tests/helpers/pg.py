"""A throwaway PostgreSQL server for tests, started from Debian's package binaries.

The server is private to the test session: its data folder, socket folder and log live in one temporary
folder, it listens on 127.0.0.1 on a free port, password authentication (scram-sha-256) is enforced with
a generated password, and durability is switched off (``fsync=off``) because nothing in it must outlive
the session. Starting takes well under two seconds.

PostgreSQL refuses to run as root, so when the tests run as root the folder is given to the ``postgres``
user and ``initdb`` / ``pg_ctl`` run through ``runuser -u postgres --``.

Example:
    >>> server = PostgresServer.start()  # doctest: +SKIP
    >>> url = server.create_database()  # 'postgresql+psycopg://tfg_test:...@127.0.0.1:PORT/t_...'
    >>> server.stop()  # also deletes the folder
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bindir", "postgres_required"]

_REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "postgres")
_SERVER_SETTINGS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c max_connections=200 -c shared_buffers=32MB"
)


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started here; the message says what is missing and how to install it."""


def postgres_required() -> bool:
    """True when the environment demands the PostgreSQL tests run (``TFG_REQUIRE_POSTGRES=1``)."""
    return os.environ.get("TFG_REQUIRE_POSTGRES", "").strip() not in ("", "0", "false", "no")


def _has_programs(folder: Path) -> bool:
    return all((folder / name).is_file() and os.access(folder / name, os.X_OK) for name in _REQUIRED_PROGRAMS)


def find_bindir() -> Path | None:
    """The folder of the PostgreSQL server programs, or None.

    Preference: ``$TFG_PG_BINDIR``, then ``pg_config --bindir`` (Debian's ``/usr/lib/postgresql/N/bin``),
    then the newest ``/usr/lib/postgresql/*/bin``, then the folder of the ``pg_ctl`` found on ``PATH``
    (resolved through symlinks, so ``/usr/local/bin/initdb -> /usr/lib/...`` leads to the Debian folder).
    """
    candidates: list[Path] = []
    if env := os.environ.get("TFG_PG_BINDIR"):
        candidates.append(Path(env))
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit()) or (0,)

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    if pg_ctl := shutil.which("pg_ctl"):
        candidates.append(Path(pg_ctl).resolve().parent)
    return next((c for c in candidates if _has_programs(c)), None)


def find_runuser() -> Path | None:
    """``runuser`` on PATH, else in /usr/sbin or /sbin (CI's PATH may lack them)."""
    found = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reap_stale(bindir: Path, as_postgres: bool) -> None:
    """Stop and delete servers left behind by test sessions that were killed (their owner is gone)."""
    for pid_file in Path(tempfile.gettempdir()).glob("tfg-pg-*/owner.pid"):
        try:
            os.kill(int(pid_file.read_text()), 0)
            continue  # its session is still running
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue
        PostgresServer(bindir, pid_file.parent, 0, "", "", _as_postgres=as_postgres).stop()


@dataclass
class PostgresServer:
    """A running private PostgreSQL server; build it with :meth:`start`, end it with :meth:`stop`.

    Attributes:
        bindir: folder of the server programs used.
        root: the temporary folder holding ``data/``, ``sock/`` and ``server.log``.
        port: TCP port on ``host``.
        user: superuser role name (password-authenticated over TCP).
        password: the generated password; tests may assert it never appears in output.
        database: the database created at start (``tfg``).
    """

    bindir: Path
    root: Path
    port: int
    user: str
    password: str
    database: str = "tfg"
    host: str = "127.0.0.1"
    _as_postgres: bool = field(default=False, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def __repr__(self) -> str:  # never show the password
        return f"PostgresServer(host={self.host!r}, port={self.port}, user={self.user!r}, root={self.root!r})"

    @classmethod
    def start(cls, user: str = "tfg_test", database: str = "tfg", attempts: int = 3) -> PostgresServer:
        """Initialise and start a server in a new temporary folder, and create ``database``.

        Raises:
            PostgresUnavailable: no server binaries, no ``postgres`` user while running as root, or the
                server did not start (the message carries the tail of the server log).
        """
        bindir = find_bindir()
        if bindir is None:
            raise PostgresUnavailable(
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found via pg_config --bindir, "
                "/usr/lib/postgresql/*/bin or PATH; install them with "
                "`apt-get install -y postgresql` (or set TFG_PG_BINDIR)."
            )
        as_postgres = os.geteuid() == 0
        if as_postgres:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root, and PostgreSQL refuses root; no `postgres` user exists to run it as "
                    "(Debian's postgresql package creates it)."
                ) from None
            if find_runuser() is None:
                raise PostgresUnavailable("running as root but `runuser` (util-linux) is missing.")
        _reap_stale(bindir, as_postgres)
        # Directly under the system temp folder (world-traversable), not under pytest's 0700 tmp tree,
        # and short, because a Unix socket path must stay under 108 bytes.
        root = Path(tempfile.mkdtemp(prefix="tfg-pg-"))
        server = cls(bindir, root, 0, user, secrets.token_hex(16), database, _as_postgres=as_postgres)
        try:
            if as_postgres:
                os.chown(root, owner.pw_uid, owner.pw_gid)
            (root / "owner.pid").write_text(str(os.getpid()))
            server._initdb()
            for attempt in range(attempts):
                server.port = _free_port()
                try:
                    log = str(root / "server.log")
                    server._pg_ctl("start", "-w", "-t", "30", "-l", log, "-o", server._options())
                    break
                except PostgresUnavailable:
                    if attempt == attempts - 1:
                        raise
            server._admin(f'CREATE DATABASE "{database}"')
        except BaseException:
            server.stop()
            raise
        atexit.register(server.stop)  # a safety net when the session is interrupted hard
        return server

    # -- URLs and databases ------------------------------------------------------------------------

    def url(self, database: str | None = None) -> str:
        """SQLAlchemy URL of ``database`` (default: the one created at start)."""
        where = f"{self.host}:{self.port}/{database or self.database}"
        return f"postgresql+psycopg://{self.user}:{self.password}@{where}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a fresh random name by default) and return its SQLAlchemy URL."""
        name = name or f"t_{secrets.token_hex(6)}"
        self._admin(f'CREATE DATABASE "{name}" STRATEGY WAL_LOG')
        return self.url(name)

    def drop_database(self, name: str, wait: bool = True) -> None:
        """Drop ``name``, disconnecting whatever still uses it.

        With ``wait=False`` the drop runs in a background thread and errors are ignored: PostgreSQL polls
        terminated backends every 100 ms, so a test that left connections open would otherwise pay that.
        """
        if wait:
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return

        def drop() -> None:
            with contextlib.suppress(Exception):
                self.drop_database(name)

        threading.Thread(target=drop, name=f"drop-{name}", daemon=True).start()

    def stop(self) -> None:
        """Stop the server (immediate shutdown) and delete its folder; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if (self.root / "data" / "postmaster.pid").exists():
            with contextlib.suppress(PostgresUnavailable, OSError, subprocess.SubprocessError):
                self._pg_ctl("stop", "-m", "immediate", "-w", "-t", "30")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- internals ---------------------------------------------------------------------------------

    def _options(self) -> str:
        return f"-c listen_addresses={self.host} -p {self.port} -k {self.root / 'sock'} {_SERVER_SETTINGS}"

    def _run(self, program: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / program), *args]
        if self._as_postgres:
            cmd = [str(find_runuser()), "-u", "postgres", "--", *cmd]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGPASSWORD", None)
        result = subprocess.run(cmd, cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(
                f"`{program}` failed (exit {result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}\n{tail}".rstrip()
            )
        return result

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run("pg_ctl", action, "-D", str(self.root / "data"), *args)

    def _initdb(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        pwfile.chmod(0o600)
        (self.root / "sock").mkdir()
        if self._as_postgres:
            os.chown(self.root / "sock", owner.pw_uid, owner.pw_gid)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.root / "data"),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _admin(self, sql: str) -> None:
        """Run one statement on the ``postgres`` database in autocommit mode (CREATE/DROP DATABASE)."""
        try:
            import psycopg
        except ImportError as err:
            raise PostgresUnavailable("psycopg is not installed: `pip install -e '.[dev]'`.") from err
        with psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # admin DDL built from safe names
