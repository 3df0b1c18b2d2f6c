"""Running the simulator: embedded in the current event loop (``SimulatorServer``) or blocking (``run``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Iterator

import uvicorn

from .app import SimulatorApp, build_app
from .settings import SimulatorSettings

_STOP_TIMEOUT_S = 10.0


class _Uvicorn(uvicorn.Server):
    """uvicorn, told to end the simulator's hangs and sleeps as soon as shutdown begins (it waits
    for in-flight requests, and a ``hang`` would otherwise hold it for minutes)."""

    def __init__(self, config: uvicorn.Config, app: SimulatorApp, *, own_signals: bool) -> None:
        super().__init__(config)
        self._sim_app = app
        self._own_signals = own_signals

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._sim_app.begin_shutdown()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Embedded in someone else's process: their Ctrl-C handling stays theirs.
        if self._own_signals:
            with super().capture_signals():
                yield
        else:
            yield


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket; binding it ourselves tells us the port when ``port`` is 0."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _server(app: SimulatorApp, *, embedded: bool) -> _Uvicorn:
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        # Embedded: leave the host process's logging configuration alone.
        log_config=None if embedded else uvicorn.config.LOGGING_CONFIG,
        access_log=False,
        # A backstop only: begin_shutdown() already ends hangs and sleeps.
        timeout_graceful_shutdown=5,
    )
    return _Uvicorn(config, app, own_signals=not embedded)


class SimulatorServer:
    """The simulator served by uvicorn as a task in the *current* event loop.

    >>> server = SimulatorServer(SimulatorSettings(port=0))
    >>> port = await server.start()      # listening once this returns
    >>> ...  # http://127.0.0.1:{port}/v1
    >>> await server.stop()
    """

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.app = build_app(settings)
        self.port: int | None = None
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The base URL (without ``/v1``): Anthropic SDKs take it as is, OpenAI SDKs add ``/v1``."""
        if self.port is None:
            raise RuntimeError("SimulatorServer is not started")
        host = self.settings.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    async def start(self) -> int:
        """Bind (port 0 = any free port), start serving, and return the bound port."""
        if self._task is not None:
            raise RuntimeError("SimulatorServer already started")
        sock = _bind(self.settings.host, self.settings.port)
        self.port = sock.getsockname()[1]
        self._server = _server(self.app, embedded=True)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="llmrelay-simulator")
        while not self._server.started:
            if self._task.done():  # failed during startup: surface its exception
                self._task.result()
                raise RuntimeError("simulator exited during startup")
            await asyncio.sleep(0.005)
        return self.port

    async def stop(self) -> None:
        if self._task is None or self._server is None:
            return
        self.app.begin_shutdown()
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), _STOP_TIMEOUT_S)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        finally:
            self._task = None

    async def wait(self) -> None:
        """Until the server stops."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(settings: SimulatorSettings, *, ready: asyncio.Event | None = None) -> None:
    """Serve in the current loop until cancelled; ``ready`` is set once listening."""
    server = SimulatorServer(settings)
    await server.start()
    if ready is not None:
        ready.set()
    try:
        await server.wait()
    finally:
        await server.stop()


def run(settings: SimulatorSettings) -> None:
    """Serve in the foreground until Ctrl-C (uvloop and httptools when installed): the CLI's entry."""
    app = build_app(settings)
    sock = _bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    mode = f"fixed reply {settings.fixed_reply!r}" if settings.fixed_reply is not None else "rules"
    print(f"llmrelay simulator listening on http://{host}:{port} ({mode}); Ctrl-C to stop", file=sys.stderr)
    _server(app, embedded=False).run(sockets=[sock])
