"""Fresh kernels without the import bill: each notebook's kernel is forked from a preloaded kernel server.

A report run starts one kernel per notebook, and every stock kernel spends
about 2 s of CPU starting Python and IPython and importing the same
libraries (pandas, SciPy, matplotlib, seaborn, Ibis, DuckDB, the helpers)
before a notebook's first line does any work: a quarter of the suite's CPU
time on the sample. The runner therefore starts one *kernel server* per run
(``python -m clm_helpers.kernels SOCKET READY_FD``) that imports those
modules once and then waits; each notebook's kernel is a ``fork`` of it
that runs IPython's kernel exactly as ``python -m ipykernel_launcher -f
CONNECTION_FILE`` would (Papermill and nbclient talk to it as to any
kernel).

Each kernel is still a new process that has run no notebook code: nothing a
notebook does is visible to another. What the fork shares is modules that
were imported and never used, and two cached reads of files that do not
change during a run (``WARM``: the metric catalog, the installed packages'
versions): the server runs nothing else (no figure, no database connection;
matplotlib's backend is left unresolved so the inline backend hooks into
each kernel's IPython as usual). In the child, NumPy's
global random state is reseeded from the OS (Python's ``random`` reseeds
itself after a fork), signal handlers are reset, and the kernel gets the
environment, working directory and new session that jupyter_client's
launcher would give a stock kernel.

Life cycle: a forked kernel is a child of the server, not of the notebook's
worker process. It watches its worker through a pidfd and exits when the
worker is gone (a stock kernel watches its parent the same way), and the
worker sees the kernel through a pidfd (alive or not, signals). The server
exits when the runner ends it or when the runner's process is gone.

Fallbacks to the stock launch (a new ``python -m ipykernel_launcher``
process): no server for this run (``CLM_KERNEL_SERVER`` unset: the runner's
``preload_kernels=False`` or ``CLM_PRELOAD_KERNELS=0``), a server that
cannot be reached, a kernel spec that is not this Python's ipykernel, or a
platform without ``fork`` and pidfds (Linux 5.3+).

Every runner kernel, forked or stock, also loads this module as an IPython
extension that hands freed C-heap memory back to the system after each
cell (``trim_memory``), so notebooks side by side peak lower together.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import uuid

import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from traitlets import default

#: Environment variable naming the run's kernel server socket (set by the runner for its workers).
SERVER_ENV = "CLM_KERNEL_SERVER"
#: Environment variable that turns the kernel server off when "0" (every kernel is then a stock one).
PRELOAD_ENV = "CLM_PRELOAD_KERNELS"
#: Environment variable naming the folder for kernels' connection files (the runner: the run's temporary folder).
CONNECTION_DIR_ENV = "CLM_KERNEL_CONNECTION_DIR"

#: What the server imports once: what more than one report notebook imports, nothing that runs code on import. The
#: imports hold up the first notebook (about 3 s): a library only one notebook uses (lifelines, 0.25 s, in
#: retention's survival curves) is imported by that notebook's kernel, side by side with the others.
PRELOAD = (
    "numpy", "pandas", "pyarrow", "scipy.special", "scipy.optimize", "scipy.stats", "matplotlib", "matplotlib.pyplot",
    "seaborn", "duckdb", "ibis", "ibis.backends.duckdb", "ibis.backends.duckdb.converter", "ibis.formats.pandas",
    "ibis.formats.pyarrow", "pyarrow.dataset", "pyarrow.parquet", "pyarrow.feather", "threadpoolctl",
    "IPython", "ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.debugger",
    "clm_helpers.acquisition", "clm_helpers.catalog", "clm_helpers.clv", "clm_helpers.clv_plots", "clm_helpers.data",
    "clm_helpers.datasets", "clm_helpers.engagement", "clm_helpers.engine", "clm_helpers.lifecycle",
    "clm_helpers.onboarding", "clm_helpers.overview", "clm_helpers.plots", "clm_helpers.report",
    "clm_helpers.retention", "clm_helpers.segmentation", "clm_helpers.survey",
    # what every kernel imports on its own otherwise: at its start (IPython's history and debugger, ipykernel's
    # launcher), at its first PNG (Pillow's plugins) and at its shutdown (psutil, to find child processes)
    "sqlite3", "pdb", "IPython.core.debugger", "IPython.core.completerlib", "IPython.core.oinspect", "IPython.core.logger",
    "IPython.extensions.storemagic", "IPython.utils.wildcard", "tornado.platform.asyncio", "faulthandler", "runpy", "ipykernel_launcher",
    "PIL.BmpImagePlugin", "PIL.GifImagePlugin", "PIL.JpegImagePlugin", "PIL.PpmImagePlugin", "PIL.PngImagePlugin", "psutil",
)
_INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
#: What the server reads once after the imports, for every kernel: cached functions (``module:function``, no
#: arguments) whose result cannot change during a run: the metric catalog (YAML) and the installed packages' versions.
WARM = ("clm_helpers.catalog:load_catalog", "clm_helpers.report:package_versions")


# ----------------------------------------------------------------------------- memory between cells


def trim_memory() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim(0)``); False where there is no glibc.

    pandas and NumPy allocate their arrays with ``malloc``. glibc returns a
    freed block to the system only from the top of the heap, so after a cell
    that built and dropped large intermediate frames the kernel keeps
    hundreds of MB it no longer uses (at 1,000,000 customers: 0.3-0.6 GB per
    report kernel, carried into every later cell's peak). ``malloc_trim``
    releases the free pages wherever they are; Dask's workers do the same
    for the same reason. Arrow's memory pool (mimalloc) also keeps what it
    freed until asked: it is asked too, when pyarrow is loaded (after a query
    whose scan pyarrow copied, 1 GB stayed in the pool).
    """
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        with contextlib.suppress(Exception):
            arrow.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim`` from the symbols already loaded in this process, or None (musl, macOS, Windows)."""
    import ctypes

    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


def _trim_after_cell(result=None) -> None:
    trim_memory()


def show_figures_once() -> None:
    """After a cell: send the cell's figures with the inline backend now, ahead of pyplot's own redraw of them.

    With the inline backend, two ``post_execute`` callbacks run after every
    cell, in this order: pyplot's ``_draw_all_if_interactive``, which draws
    every open figure (Agg's ``draw_idle`` draws at once), and the backend's
    ``flush_figures``, which renders each figure into its PNG (drawing it
    again, twice with a tight bounding box) and closes it. The first draw
    is thrown away: it costs about a third of the suite's drawing (4 s of
    CPU on the sample). Registered before both, this calls the backend's
    own ``flush_figures`` first; pyplot then finds no open figure and the
    backend's call finds nothing left to send. The images are the same,
    byte for byte (``tests/test_kernels.py``). Does nothing unless the
    inline backend's ``flush_figures`` is registered for this shell (another
    backend, or ``InlineBackend.close_figures = False`` keeps figures open:
    then pyplot's redraw runs as usual, after the figures were sent).
    """
    inline = sys.modules.get("matplotlib_inline.backend_inline")
    if inline is None:
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None and inline.flush_figures in shell.events.callbacks["post_execute"]:
        inline.flush_figures()


def load_ipython_extension(ipython) -> None:
    """``%load_ext clm_helpers.kernels``: after every cell, send figures once (``show_figures_once``) and return freed
    memory to the system (``trim_memory``).

    The runner loads it in every report kernel (``PreloadedKernelManager``),
    at the kernel's start, before a cell can set up matplotlib: its
    ``post_execute`` callback then runs before pyplot's and the inline
    backend's. Trimming memory means a notebook's later cells do not start
    on top of what its earlier cells freed; notebooks run side by side then
    peak lower together.
    """
    if show_figures_once not in ipython.events.callbacks["post_execute"]:
        ipython.events.callbacks["post_execute"].insert(0, show_figures_once)  # ahead of pyplot's, whenever loaded
    if _trim_after_cell not in ipython.events.callbacks["post_run_cell"]:
        ipython.events.register("post_run_cell", _trim_after_cell)


def unload_ipython_extension(ipython) -> None:
    with contextlib.suppress(ValueError):
        ipython.events.unregister("post_execute", show_figures_once)
    with contextlib.suppress(ValueError):
        ipython.events.unregister("post_run_cell", _trim_after_cell)


#: The kernel argument that loads ``load_ipython_extension`` in the runner's kernels.
TRIM_EXTENSION_ARG = "--IPKernelApp.extra_extensions=clm_helpers.kernels"


def supported() -> bool:
    """Whether this platform can fork kernels and watch them (POSIX ``fork`` and Linux pidfds)."""
    return hasattr(os, "fork") and hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")


# ----------------------------------------------------------------------------- the server (its own process)


def serve(address: str, ready_fd: int | None = None) -> None:
    """Import ``PRELOAD``, listen on the Unix socket ``address`` and fork a kernel for each request; never returns normally.

    A request is one JSON line ``{"argv": [...], "env": {...}, "cwd": ...,
    "parent": PID}`` (the kernel command after ``python -m
    ipykernel_launcher``, the kernel's environment and working directory,
    the worker to watch); the reply is ``{"pid": PID}`` or ``{"error": ...}``.
    Only processes of the same user are served (``SO_PEERCRED``; the socket
    also lives in a folder only this user can open). ``ready_fd`` gets one
    line, ``ready``, once the modules are imported and the socket listens.
    """
    _name_process("clm-kernels")
    os.environ.setdefault("MPLBACKEND", _INLINE_BACKEND)  # what ipykernel sets before anything imports matplotlib
    # debugpy (imported by every kernel, 0.2 s) checks at import whether Python runs with frozen modules and warns on
    # stderr; the check is about breakpoints in the debugger, the kernels get their own environment after the fork
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # an optional module missing here is imported (or not) by the notebook as usual
            pass
    for name in WARM:
        module, _, function = name.partition(":")
        try:
            getattr(importlib.import_module(module), function)()
        except Exception:  # the kernel that needs it reads it (and reports any error) as usual
            pass
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # kernels are reaped as they end; workers watch them by pidfd
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the runner's whole group: the runner ends the server
    runner = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    listener.settimeout(1.0)
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    while os.getppid() == runner:  # the runner is gone: so is the reason to serve
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(30)
            try:
                _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
                if uid != os.getuid():
                    raise PermissionError(f"uid {uid} is not this server's user")
                request = _checked(json.loads(conn.makefile("rb").readline()))
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    conn.close()
                    _run_kernel(request)  # never returns
                reply = {"pid": pid}
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\n")
    # the runner was killed and could not remove the run's kernel folder (kernels' keys, sockets): remove it here
    folder = os.path.dirname(address)
    if os.path.basename(folder).startswith(_FOLDER_PREFIX):
        shutil.rmtree(folder, ignore_errors=True)
    raise SystemExit(0)


def _name_process(name: str) -> None:
    """The name ``ps -o comm`` and ``top`` show (Linux; the command line stays the server's)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])


def _checked(request) -> dict:
    """The request if it is well formed (checked before forking: a broken one gets an error reply, not a kernel)."""
    if not isinstance(request, dict):
        raise ValueError("the request must be a JSON object")
    argv, env, cwd, parent = request["argv"], request["env"], request["cwd"], request["parent"]
    if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
        raise ValueError("argv must be a list of strings")
    if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        raise ValueError("env must map names to strings")
    if not os.path.isdir(cwd):
        raise ValueError(f"cwd {cwd!r} is not a folder")
    if not isinstance(parent, int) or parent <= 1:
        raise ValueError(f"parent must be a process id, got {parent!r}")
    return request


def _run_kernel(request: dict) -> None:
    """In the forked child: become the kernel a stock launch would start, run it, and exit (never returns)."""
    code = 1
    try:
        os.setsid()  # a new session, as jupyter_client's launcher gives a stock kernel
        _name_process("clm-kernel")
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        import ipykernel_launcher

        sys.argv = [ipykernel_launcher.__file__, *request["argv"]]
        if os.environ.get("JPY_PARENT_PID"):  # ipykernel reads it when imported (in the server): pass it as a setting
            sys.argv.append(f"--IPKernelApp.parent_handle={os.environ['JPY_PARENT_PID']}")
        sys.path[0] = os.getcwd()  # what `python -m` puts first on the path
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()  # not the server's state: fresh entropy, as a new process has
        _exit_with(int(request["parent"]))
        from ipykernel import kernelapp

        kernelapp.launch_new_instance()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _exit_with(pid: int) -> None:
    """Exit this process when ``pid`` (the notebook's worker) ends: a daemon thread blocked on its pidfd."""
    import threading

    try:
        fd = os.pidfd_open(pid)
    except OSError:  # already gone
        os._exit(1)

    def watch():
        select.select([fd], [], [])
        os._exit(1)

    threading.Thread(target=watch, name="clm-worker-watch", daemon=True).start()


# ----------------------------------------------------------------------------- the runner's side

#: The longest socket path every POSIX platform accepts (sun_path: 108 bytes on Linux, 104 on macOS, with the NUL).
_SOCKET_PATH_MAX = 103


def ipc_fits(folder: str) -> bool:
    """Whether kernels can use IPC sockets in ``folder``: POSIX, ZeroMQ built with IPC, and the sockets' paths short enough."""
    longest = os.path.join(folder, "k-" + "0" * 16 + "-ipc-99999")  # the connection file's stem + "-ipc-" + channel number
    return os.name == "posix" and zmq.has("ipc") and len(os.fsencode(longest)) <= _SOCKET_PATH_MAX


class Server:
    """A run's kernel server as it starts, and the run's private kernel folder: ``environment()`` says how to reach both.

    The folder (``folder``, mode 0700, a short path in the system's temporary
    folder) holds the server's socket and the kernels' connection files and
    IPC sockets; it exists whether or not there is a server.
    """

    def __init__(self, process=None, ready_fd: int | None = None, address: str | None = None, timeout: float = 120.0,
                 folder: str | None = None):
        self._process, self._ready_fd, self._address, self._timeout = process, ready_fd, address, timeout
        self.folder = folder
        self._env: dict | None = None if process is not None else {}

    def environment(self) -> dict:
        """The workers' settings: ``CLM_KERNEL_CONNECTION_DIR`` and, once the server is ready, ``CLM_KERNEL_SERVER``.

        Without a server, or one that did not get ready in time, only the
        folder. The first call waits (up to the server's ``timeout``); the
        server's imports run meanwhile, so the caller does its own start-up
        work first and asks as late as it can.
        """
        if self._env is None:
            fd, self._ready_fd = self._ready_fd, None
            try:
                ready = select.select([fd], [], [], self._timeout)[0] and os.read(fd, 16).startswith(b"ready")
            finally:
                os.close(fd)
            self._env = {SERVER_ENV: self._address} if ready else {}
        return {**({CONNECTION_DIR_ENV: self.folder} if self.folder else {}), **self._env}

    def _close(self) -> None:
        if self._ready_fd is not None:
            os.close(self._ready_fd)
            self._ready_fd = None


#: The name of a run's private kernel folder in the system's temporary folder (``runner.pid`` inside names its runner).
_FOLDER_PREFIX = "clm-kernels-"


def _remove_abandoned() -> None:
    """Remove this user's kernel folders left by runs whose process is gone (killed outright, with their server)."""
    for folder in glob.glob(os.path.join(tempfile.gettempdir(), _FOLDER_PREFIX + "*")):
        try:
            if os.stat(folder).st_uid != os.getuid():
                continue
            with open(os.path.join(folder, "runner.pid")) as f:
                os.kill(int(f.read()), 0)  # still running (or the pid was reused): leave it
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError):  # being created, or not ours to judge
            continue


@contextlib.contextmanager
def server(env: dict | None = None, *, enabled: bool = True, timeout: float = 120.0):
    """Start a kernel server for the block and yield its ``Server`` handle; the run's private kernel folder goes with it.

    The server starts importing at once; ``Server.environment()`` waits for
    it, so the runner loads the dataset meanwhile. ``env`` is added to the
    server's environment (the run's engine settings). A server that does not
    get ready within ``timeout`` seconds is stopped and the run goes on with
    stock kernels. The folder is removed after the block, or by the server
    when the runner was killed.
    """
    _remove_abandoned()
    folder = tempfile.mkdtemp(prefix=_FOLDER_PREFIX)  # mode 0700: only this user can reach the sockets and read the keys
    try:
        with open(os.path.join(folder, "runner.pid"), "w") as f:
            f.write(str(os.getpid()))
        if not enabled or os.environ.get(PRELOAD_ENV, "1") == "0" or not supported():
            yield Server(folder=folder)
        else:
            with _started(folder, env, timeout) as handle:
                yield handle
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _started(folder: str, env: dict | None, timeout: float):
    """The kernel server process for ``server()``, listening in ``folder``; ended after the block."""
    address = os.path.join(folder, "socket")
    read_end, write_end = os.pipe()
    process = handle = None
    try:
        process = subprocess.Popen([sys.executable, "-m", "clm_helpers.kernels", address, str(write_end)],
                                   env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, pass_fds=[write_end])
        os.close(write_end)
        write_end = None
        handle = Server(process, read_end, address, timeout, folder=folder)
        read_end = None  # the handle closes it
        yield handle
    finally:
        for fd in (read_end, write_end):
            if fd is not None:
                os.close(fd)
        if handle is not None:
            handle._close()
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _request_kernel(address: str, argv: list[str], env: dict, cwd: str, *, parent: int | None = None) -> int:
    """Ask the server at ``address`` for a kernel that lives as long as ``parent`` (default: this process); its pid.

    Raises OSError or RuntimeError when the server cannot give one.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(address)
        conn.sendall(json.dumps({"argv": argv, "env": dict(env), "cwd": str(cwd), "parent": parent or os.getpid()}).encode() + b"\n")
        reply = json.loads(conn.makefile("rb").readline() or b"{}")
    if "pid" not in reply:
        raise RuntimeError(reply.get("error", "no reply"))
    return int(reply["pid"])


#: The pids of the kernels this process obtained from a server (for benchmarks that measure a notebook's memory).
launched: list[int] = []


class ForkedKernel:
    """A kernel forked by the server, seen through a pidfd: what jupyter_client's provisioner needs of a ``Popen``.

    Its exit status is not known here (the server reaps it): ``returncode``
    is 0 once it has ended, -9 when this handle killed it.
    """

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode = None
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:  # it ended before we looked
            self._fd, self.returncode = None, 0

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._fd], [], [], 0)[0]:
            self._ended(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._fd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout)
            self._ended(0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                signal.pidfd_send_signal(self._fd, sig)
            except ProcessLookupError:
                self._ended(0)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def _ended(self, code: int) -> None:
        self.returncode = code
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ForkedProvisioner(LocalProvisioner):
    """jupyter_client's local provisioner, except that the kernel process comes from the run's kernel server."""

    async def launch_kernel(self, cmd, **kwargs):
        address = os.environ.get(SERVER_ENV)
        if address and list(cmd[:3]) == [sys.executable, "-m", "ipykernel_launcher"]:
            env, cwd = dict(kwargs.get("env") or os.environ), kwargs.get("cwd") or os.getcwd()
            env["JPY_PARENT_PID"] = str(os.getpid())  # as jupyter_client's launcher sets it (the kernel then prints no banner)
            try:
                pid = _request_kernel(address, list(cmd[3:]), env, cwd)
            except (OSError, RuntimeError, ValueError) as exc:
                self.log.warning("kernel server at %s did not start a kernel (%s): starting a stock kernel", address, exc)
            else:
                launched.append(pid)
                self.process = ForkedKernel(pid)
                self.pid, self.pgid, self.cwd = pid, pid, cwd  # it leads its own session, as a stock kernel does
                return self.connection_info
        return await super().launch_kernel(cmd, **kwargs)


class QuickStartClient(AsyncKernelClient):
    """jupyter_client's client, minus two fixed waits at every kernel start (about 170 ms a notebook).

    - Its sockets retry a connection every 10 ms, not ZeroMQ's default
      100 ms. The client connects as soon as the kernel is launched, before
      the new kernel has bound its sockets; a connection to an IPC socket
      that does not exist yet fails at once and was retried only 100 ms
      later, so the first kernel_info reply came 80-90 ms after the kernel
      was ready (measured: 200 -> 118 ms from launch to reply).
    - ``wait_for_ready`` ends by reading IOPub until nothing arrives for
      0.2 s: a fixed idle wait (the kernel's start-up messages arrive within
      milliseconds on one machine). Here 10 ms. A message that comes later
      answers the readiness check, not a cell, and nbclient ignores it (it
      reads only the messages whose parent is the cell's request).
    """

    #: How soon a client socket tries again to connect (ms; ZeroMQ's default is 100).
    RECONNECT_MS = 10

    @default("context")
    def _context_default(self):
        context = super()._context_default()  # this client's own context: the setting reaches only its sockets
        context.setsockopt(zmq.RECONNECT_IVL, self.RECONNECT_MS)
        return context

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        channel = self.iopub_channel
        get_msg = channel.get_msg

        def quick(timeout: float | None = None):
            return get_msg(timeout=None if timeout is None else min(timeout, 0.01))

        channel.get_msg = quick
        try:
            await AsyncKernelClient.wait_for_ready(self, timeout=timeout)
        finally:
            del channel.get_msg


class PreloadedKernelManager(AsyncKernelManager):
    """The kernel manager the runner hands Papermill (``kernel_manager_class=``): kernels come from ``ForkedProvisioner``.

    Its messages are encrypted (CurveZMQ, jupyter_client's
    ``transport_encryption = "auto"``) where jupyter_client, pyzmq and the
    kernel spec support it: the kernel's ports listen on localhost, and
    without it ipykernel 7.4+ warns on every start that any local user
    could read the notebook's code and outputs.
    """

    def __init__(self, **kw):
        super().__init__(**kw)
        if "transport_encryption" in self.trait_names() and zmq.has("curve"):
            self.transport_encryption = "auto"
        self._graceful = False

    def format_kernel_cmd(self, extra_arguments=None):
        """The kernel spec's command; for this Python's ipykernel, plus the extension that trims memory after each cell."""
        cmd = super().format_kernel_cmd(extra_arguments)
        if list(cmd[:3]) == [sys.executable, "-m", "ipykernel_launcher"] and TRIM_EXTENSION_ARG not in cmd:
            cmd.append(TRIM_EXTENSION_ARG)
        return cmd

    @default("connection_file")
    def _connection_file_in_run(self):
        # jupyter_client's default is a temporary file in /tmp, removed at shutdown; a worker stopped by the runner
        # (time limit, SIGTERM) never shuts down, and the file, with the kernel's keys, would stay behind. The name is
        # short: with IPC the kernel's sockets are named after it, and a socket path has at most 104-108 bytes
        folder = os.environ.get(CONNECTION_DIR_ENV)
        return os.path.join(folder, f"k-{uuid.uuid4().hex[:16]}.json") if folder else ""

    @default("transport")
    def _ipc_in_run(self):
        """IPC (Unix sockets next to the connection file) for the runner's kernels, where the platform has it; else TCP.

        With TCP, jupyter_client picks five free ports, closes them and the
        kernel binds them a moment later; meanwhile any process on the
        machine can take one (an outgoing connection gets a port from the
        same range), and the kernel dies with "Address already in use". Side
        by side notebooks and a Spark JVM make that moment busy. A Unix socket
        in the run's own folder cannot be taken by anyone else, and only this
        user can open it.
        """
        folder = os.environ.get(CONNECTION_DIR_ENV)
        return "ipc" if folder and ipc_fits(folder) else "tcp"

    @default("client_class")
    def _quick_client_name(self):
        return "clm_helpers.kernels.QuickStartClient"

    @default("client_factory")
    def _quick_client(self):
        return QuickStartClient

    async def _shutdown_without_interrupt(self, now: bool = False, restart: bool = False):
        """jupyter_client's shutdown, minus the SIGINT it sends first when the shutdown is graceful.

        nbclient shuts a kernel down gracefully once the notebook has run, so
        there is nothing to interrupt; the signal only races with the
        kernel's last message and ipykernel then logs "ERROR |
        KeyboardInterrupt caught in kernel" in the run's output. A kernel
        that does not end on the shutdown request is still killed by
        jupyter_client after its wait.
        """
        self._graceful = not now
        try:
            return await AsyncKernelManager.shutdown_kernel(self, now=now, restart=restart)
        finally:
            self._graceful = False

    shutdown_kernel = _shutdown_without_interrupt

    async def _async_wait(self, pollinterval: float = 0.1) -> None:
        # after the shutdown request jupyter_client looks every 0.1 s whether the kernel has ended; it ends within
        # milliseconds, so look every 10 ms (0.09 s less idle per notebook)
        return await super()._async_wait(pollinterval=min(pollinterval, 0.01))

    async def _interrupt_unless_shutting_down(self):
        if not self._graceful:
            return await AsyncKernelManager.interrupt_kernel(self)

    _async_interrupt_kernel = _interrupt_unless_shutting_down

    async def _async_pre_start_kernel(self, **kw):
        if self.provisioner is None:  # jupyter_client creates the default (local) provisioner only when none is set
            self.kernel_id = self.kernel_id or kw.pop("kernel_id", str(uuid.uuid4()))
            self.provisioner = ForkedProvisioner(kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self)
        return await super()._async_pre_start_kernel(**kw)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
