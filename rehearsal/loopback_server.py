"""What the tests' own HTTP servers share (the Bitbucket and search simulators, the redirect target): a
ThreadingHTTPServer on 127.0.0.0/8, served from a daemon thread, started and stopped (or used as a context manager),
and its URL; and the simulators' server and handler, which hand every request to the simulator."""

from __future__ import annotations

import contextlib
import socket
import threading
from abc import ABC, abstractmethod
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar, cast


class LoopbackServer(ABC):
    # What the errors and the serving thread call it.
    name = "server"

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @abstractmethod
    def _make_server(self) -> ThreadingHTTPServer:
        """A new server bound to its address (port 0: any free one)."""

    def _after_shutdown(self) -> None:
        """Between the end of serving and the closing of the socket (the simulator ends keep-alive connections)."""
        return None

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{self.name} already started")
        self._server = self._make_server()
        # A short poll interval keeps stop() fast: shutdown() waits for one select() round.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"{self.name}-{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        self._after_shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{self.name} not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"


class Dispatcher(Protocol):
    """A simulator behind a SimulatorServer: it answers every request and keeps track of its connections."""

    def _track(self, conn: socket.socket, *, add: bool) -> None: ...

    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None: ...


class SimulatorHandler(BaseHTTPRequestHandler):
    """Hands every request to the server's simulator, quietly, over keep-alive connections as real servers keep."""

    protocol_version = "HTTP/1.1"  # keep-alive like the real servers, so client connection reuse is exercised
    # Without it, Nagle's algorithm and delayed ACKs add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    server_version = "Simulator/1.0"

    def version_string(self) -> str:
        return self.server_version  # no "Python/3.x" suffix: the client must not care what serves it

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no per-request line on stderr

    @property
    def sim(self) -> Dispatcher:
        return cast(SimulatorServer, self.server).sim

    def setup(self) -> None:
        super().setup()
        self.sim._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.sim._track(self.connection, add=False)

    def do_GET(self) -> None:
        self.sim._dispatch(self, "GET")

    def do_HEAD(self) -> None:
        self.sim._dispatch(self, "HEAD")

    def do_POST(self) -> None:
        self.sim._dispatch(self, "POST")

    def do_PUT(self) -> None:
        self.sim._dispatch(self, "PUT")

    def do_DELETE(self) -> None:
        self.sim._dispatch(self, "DELETE")

    def do_PATCH(self) -> None:
        self.sim._dispatch(self, "PATCH")

    def do_OPTIONS(self) -> None:
        self.sim._dispatch(self, "OPTIONS")


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler stuck in an injected delay must not block interpreter exit

    def __init__(self, address: tuple[str, int], sim: Dispatcher, handler: type[SimulatorHandler]) -> None:
        self.sim = sim
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out or disconnect are expected here; never spray tracebacks on stderr


class QueuedFault(Protocol):
    times: int | None  # the requests it still applies to; None: until reset_faults()


FaultT = TypeVar("FaultT", bound=QueuedFault)


class Simulator(LoopbackServer, Generic[FaultT]):
    """What both simulators keep the same way: faults queued per endpoint, and the keep-alive connections they end
    when they stop. The subclass creates the lock, the queues and the set in its __init__."""

    _lock: threading.RLock  # the subclass's, guarding its state too
    handler: type[SimulatorHandler]  # the subclass's (its server_version)

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self._host, self._port = host, port
        self._faults: dict[str, list[FaultT]] = {}
        self._stopping = threading.Event()  # set while stopping: wakes handlers sleeping in an injected delay
        self._connections: set[socket.socket] = set()

    @abstractmethod
    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        """Answers one request (the subclass's API)."""

    def _make_server(self) -> SimulatorServer:
        self._stopping.clear()
        return SimulatorServer((self._host, self._port), self, self.handler)

    def stop(self) -> None:
        self._stopping.set()
        super().stop()

    def _queue_fault(self, endpoint: str, fault: FaultT) -> None:
        with self._lock:
            self._faults.setdefault(endpoint, []).append(fault)

    def reset_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, endpoint: str) -> FaultT | None:
        """The fault the next request to `endpoint` gets (faults on one endpoint apply in the order queued)."""
        with self._lock:
            queue = self._faults.get(endpoint)
            if not queue:
                return None
            fault = queue[0]
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    queue.pop(0)
            return fault

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _after_shutdown(self) -> None:
        # Keep-alive connections would otherwise hold their handler threads until the client hangs up.
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
