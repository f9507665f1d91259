"""Kernels forked from the run's kernel server: fresh (nothing shared but imported modules), figures inline, gone with their worker."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from clm_helpers import kernels
from clm_helpers.report import run

pytestmark = pytest.mark.skipif(not kernels.supported(), reason="forked kernels need fork and pidfds (Linux)")

PROBE = """\
import json, os, sys
preloaded = "pandas" in sys.modules  # before this notebook imports anything heavy
left_behind = getattr(json, "_clm_marker", None)  # set by a notebook that ran before this one
json._clm_marker = os.getpid()
import numpy as np
draw = float(np.random.random())
"""


def probe_notebooks(folder, names):
    folder.mkdir()
    for name in names:
        nb = nbformat.v4.new_notebook()
        nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
        nb.cells = [
            nbformat.v4.new_code_cell('dataset = ""', metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(PROBE),
            nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2]);"),
            nbformat.v4.new_code_cell("print(json.dumps({'preloaded': preloaded, 'left_behind': left_behind, 'draw': draw, 'pid': os.getpid()}))"),
        ]
        nbformat.write(nb, folder / f"{name}.ipynb")
    return folder


def probes(run_folder, names):
    out = {}
    for name in names:
        nb = nbformat.read(run_folder / f"{name}.ipynb", as_version=4)
        out[name] = json.loads(nb.cells[-1].outputs[0]["text"])
        out[name]["figure"] = any("image/png" in o.get("data", {}) for o in nb.cells[2].outputs)
    return out


def test_each_notebook_gets_a_fresh_forked_kernel_with_the_libraries_imported(tmp_path):
    folder = probe_notebooks(tmp_path / "nbs", ["p1", "p2", "p3"])
    result = run(folder, tmp_path / "out", jobs=1)  # one after the other: each later kernel could see an earlier one's state
    assert result.ok, [n.error for n in result.notebooks]
    seen = probes(result.folder, ["p1", "p2", "p3"])
    assert all(p["preloaded"] for p in seen.values())
    assert all(p["left_behind"] is None for p in seen.values())  # nothing a notebook did reaches the next kernel
    assert len({p["pid"] for p in seen.values()}) == 3
    assert len({p["draw"] for p in seen.values()}) == 3  # NumPy's global random state is not the server's
    assert all(p["figure"] for p in seen.values())  # the inline backend hooks into each kernel's IPython


def test_without_the_server_kernels_are_stock_ones(tmp_path, monkeypatch):
    monkeypatch.setenv(kernels.PRELOAD_ENV, "0")
    folder = probe_notebooks(tmp_path / "nbs", ["p1"])
    result = run(folder, tmp_path / "out", jobs=1)
    assert result.ok
    seen = probes(result.folder, ["p1"])["p1"]
    assert seen["preloaded"] is False and seen["figure"]


def test_an_unreachable_server_falls_back_to_a_stock_kernel(tmp_path, monkeypatch):
    import papermill

    monkeypatch.setenv(kernels.SERVER_ENV, str(tmp_path / "no-such-socket"))
    folder = probe_notebooks(tmp_path / "nbs", ["p1"])
    papermill.execute_notebook(str(folder / "p1.ipynb"), str(tmp_path / "p1.ipynb"), kernel_name="python3", progress_bar=False,
                               kernel_manager_class=kernels.PreloadedKernelManager)
    seen = probes(tmp_path, ["p1"])["p1"]
    assert seen["preloaded"] is False and seen["figure"]


def test_a_forked_kernel_ends_when_its_worker_does(tmp_path):
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with kernels.server() as server:
            env = server.environment()
            assert env, "the kernel server did not start"
            pid = kernels._request_kernel(env[kernels.SERVER_ENV], ["-f", str(tmp_path / "kernel.json")], {"PATH": "/usr/bin:/bin"},
                                          str(tmp_path), parent=worker.pid)
            kernel = kernels.ForkedKernel(pid)
            assert kernel.poll() is None
            worker.kill()
            assert kernel.wait(timeout=60) == 0  # it noticed its worker was gone and exited (within a second, normally)
    finally:
        worker.kill()
        worker.wait()


def test_a_malformed_request_gets_an_error_and_no_kernel(tmp_path):
    import socket

    with kernels.server() as server:
        env = server.environment()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(env[kernels.SERVER_ENV])
            conn.sendall(b"not json\n")
            reply = json.loads(conn.makefile("rb").readline())
        assert "error" in reply and "JSONDecodeError" in reply["error"]
        with pytest.raises(RuntimeError, match="is not a folder"):
            kernels._request_kernel(env[kernels.SERVER_ENV], [], {}, str(tmp_path / "missing"))


def test_the_server_imports_while_the_caller_works_and_can_be_off(monkeypatch):
    with kernels.server() as server:
        env = server.environment()
        assert env == server.environment()  # the first call waits for the imports, later ones do not
        assert set(env) == {kernels.SERVER_ENV, kernels.CONNECTION_DIR_ENV}
    monkeypatch.setenv(kernels.PRELOAD_ENV, "0")
    with kernels.server() as server:
        assert server.environment() == {kernels.CONNECTION_DIR_ENV: server.folder}  # the private folder, no server


def test_the_runner_s_kernels_use_the_quick_start_client():
    manager = kernels.PreloadedKernelManager()
    client = manager.client()
    assert isinstance(client, kernels.QuickStartClient)
    assert "get_msg" not in vars(client.iopub_channel)  # nothing patched outside wait_for_ready


def test_the_quick_start_client_retries_connections_often_on_its_own_sockets_only():
    import zmq

    manager = kernels.PreloadedKernelManager()
    manager.write_connection_file()
    try:
        client = manager.client()
        sockets = [client.shell_channel.socket, client.iopub_channel.socket, client.stdin_channel.socket]
        assert [s.getsockopt(zmq.RECONNECT_IVL) for s in sockets] == [kernels.QuickStartClient.RECONNECT_MS] * 3
        other = zmq.Context.instance().socket(zmq.DEALER)
        assert other.getsockopt(zmq.RECONNECT_IVL) == 100  # ZeroMQ's default, untouched elsewhere
        other.close()
        client.stop_channels()
    finally:
        manager.cleanup_connection_file()


def test_connection_files_go_where_the_runner_says(tmp_path, monkeypatch):
    monkeypatch.setenv(kernels.CONNECTION_DIR_ENV, str(tmp_path))
    assert kernels.PreloadedKernelManager().connection_file.startswith(str(tmp_path) + "/")
    monkeypatch.delenv(kernels.CONNECTION_DIR_ENV)
    assert kernels.PreloadedKernelManager().connection_file == ""  # jupyter_client's own default then


TRANSPORT = """\
import json, os
from ipykernel.kernelapp import IPKernelApp
app = IPKernelApp.instance()
print(json.dumps({"transport": app.transport, "ip": app.ip, "connection_file": app.connection_file,
                  "sockets": sorted(n for n in os.listdir(os.path.dirname(app.ip)) if n.startswith(os.path.basename(app.ip)))}))
"""


@pytest.mark.parametrize("preload", ["1", "0"])
def test_the_runner_s_kernels_talk_over_unix_sockets_in_a_private_folder(tmp_path, monkeypatch, preload):
    # TCP ports picked by jupyter_client can be taken by any process before the kernel binds them ("Address already in
    # use", a kernel dead before replying); a Unix socket in the run's own private folder cannot
    monkeypatch.setenv(kernels.PRELOAD_ENV, preload)
    folder = tmp_path / "nbs"
    folder.mkdir()
    for name in ("t1", "t2"):
        nb = nbformat.v4.new_notebook()
        nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
        nb.cells = [nbformat.v4.new_code_cell(TRANSPORT)]
        nbformat.write(nb, folder / f"{name}.ipynb")
    result = run(folder, tmp_path / "out", jobs=2)
    assert result.ok, [n.error for n in result.notebooks]
    seen = [json.loads(nbformat.read(result.folder / f"{name}.ipynb", as_version=4).cells[0].outputs[0]["text"])
            for name in ("t1", "t2")]
    assert [s["transport"] for s in seen] == ["ipc", "ipc"]
    folders = {os.path.dirname(s["ip"]) for s in seen}
    assert len(folders) == 1 and {os.path.dirname(s["connection_file"]) for s in seen} == folders
    (private,) = folders
    assert not private.startswith(str(tmp_path)) and not os.path.exists(private)  # a short path of its own, gone after the run
    assert seen[0]["ip"] != seen[1]["ip"]
    assert all(len(s["sockets"]) == 5 for s in seen)  # shell, iopub, stdin, control, heartbeat


@pytest.mark.parametrize("preload", ["1", "0"])
def test_the_run_s_kernel_folder_is_private_short_and_removed(monkeypatch, preload):
    monkeypatch.setenv(kernels.PRELOAD_ENV, preload)
    with kernels.server() as server:
        folder = server.environment()[kernels.CONNECTION_DIR_ENV]
        assert os.stat(folder).st_mode & 0o777 == 0o700 and kernels.ipc_fits(folder)
    assert not os.path.exists(folder)


def test_a_folder_too_deep_for_socket_paths_keeps_tcp(tmp_path, monkeypatch):
    deep = tmp_path / ("d" * 100)
    monkeypatch.setenv(kernels.CONNECTION_DIR_ENV, str(deep))
    assert not kernels.ipc_fits(str(deep))
    assert kernels.PreloadedKernelManager().transport == "tcp"
    monkeypatch.setenv(kernels.CONNECTION_DIR_ENV, "/tmp/clm-run-x")
    assert kernels.PreloadedKernelManager().transport == "ipc"
    monkeypatch.delenv(kernels.CONNECTION_DIR_ENV)
    assert kernels.PreloadedKernelManager().transport == "tcp"  # outside a run: jupyter_client's default


def test_a_killed_runner_s_server_removes_the_kernel_folder_and_ends(tmp_path):
    import signal
    import time

    code = ("import sys, time\nfrom clm_helpers import kernels\nwith kernels.server() as server:\n"
            "    print(server.environment()[kernels.CONNECTION_DIR_ENV], flush=True)\n    time.sleep(120)\n")
    runner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        folder = runner.stdout.readline().strip()  # printed once the server is ready
        assert os.path.isdir(folder)
        os.kill(runner.pid, signal.SIGKILL)  # no chance for the runner to clean up
        runner.wait()
        deadline = time.monotonic() + 30
        while os.path.exists(folder) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(folder)
    finally:
        runner.kill()
        runner.wait()


HOOKS = """\
import json
from clm_helpers import kernels
ip = get_ipython()
print(json.dumps({"trim": kernels._trim_after_cell in ip.events.callbacks["post_run_cell"]}))
"""


def printed_by_one_cell(tmp_path, code):
    """Run a one-cell notebook through the runner; the JSON its cell printed."""
    folder = tmp_path / "nbs"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, folder / "one.ipynb")
    result = run(folder, tmp_path / "out", jobs=1)
    assert result.ok, [n.error for n in result.notebooks]
    return json.loads(nbformat.read(result.folder / "one.ipynb", as_version=4).cells[0].outputs[0]["text"])


@pytest.mark.parametrize("preload", ["1", "0"])
def test_the_runner_s_kernels_give_freed_memory_back_after_each_cell(tmp_path, monkeypatch, preload):
    monkeypatch.setenv(kernels.PRELOAD_ENV, preload)
    assert printed_by_one_cell(tmp_path, HOOKS) == {"trim": True}


COUNT_DRAWS = """\
import json
import matplotlib.figure
from clm_helpers import kernels
draws = []
_draw = matplotlib.figure.Figure.draw
def counted(self, renderer):
    draws.append(1)
    return _draw(self, renderer)
matplotlib.figure.Figure.draw = counted
if not send_first:
    get_ipython().events.unregister("post_execute", kernels.show_figures_once)
"""

FIGURE = """\
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot([1, 3, 2], label="a line")
ax.set_title("a title")
ax.legend()
"""


@pytest.mark.parametrize("preload", ["1", "0"])
def test_the_runner_s_kernels_draw_each_figure_once_less_and_send_the_same_image(tmp_path, monkeypatch, preload):
    """pyplot's redraw after each cell (thrown away by the inline backend) is skipped; the PNG is byte for byte the same."""
    monkeypatch.setenv(kernels.PRELOAD_ENV, preload)
    folder = tmp_path / "nbs"
    folder.mkdir()
    for name, send_first in (("once", True), ("twice", False)):
        nb = nbformat.v4.new_notebook()
        nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
        nb.cells = [nbformat.v4.new_code_cell(f"send_first = {send_first}"), nbformat.v4.new_code_cell(COUNT_DRAWS),
                    nbformat.v4.new_code_cell(FIGURE), nbformat.v4.new_code_cell("print(len(draws))")]
        nbformat.write(nb, folder / f"{name}.ipynb")
    result = run(folder, tmp_path / "out", jobs=2)
    assert result.ok, [n.error for n in result.notebooks]
    seen = {}
    for name in ("once", "twice"):
        cells = nbformat.read(result.folder / f"{name}.ipynb", as_version=4).cells
        pngs = [o["data"]["image/png"] for o in cells[2].outputs if "image/png" in o.get("data", {})]
        seen[name] = (pngs, int(cells[3].outputs[0]["text"]))
    assert len(seen["once"][0]) == 1 and seen["once"][0] == seen["twice"][0]
    assert seen["once"][1] == seen["twice"][1] - 1 >= 1, seen


WARMED = """\
import json
from clm_helpers import catalog, report
warm = [catalog.load_catalog.cache_info().currsize, report._installed_versions.cache_info().currsize]
print(json.dumps({"warm": warm, "versions": report.package_versions().to_dict()["version"],
                  "catalog": len(catalog.load_catalog())}))
"""


@pytest.mark.parametrize("preload", ["1", "0"])
def test_forked_kernels_start_with_the_catalog_and_package_versions_read(tmp_path, monkeypatch, preload):
    from clm_helpers import catalog, report

    monkeypatch.setenv(kernels.PRELOAD_ENV, preload)
    seen = printed_by_one_cell(tmp_path, WARMED)
    assert seen["warm"] == ([1, 1] if preload == "1" else [0, 0])  # a stock kernel reads them itself
    assert seen["versions"] == report.package_versions().to_dict()["version"]
    assert seen["catalog"] == len(catalog.load_catalog())


def test_everything_the_server_preloads_is_installed():
    """The server skips a module that fails to import (the kernel then imports it itself): a misspelt or dropped
    dependency would only make every kernel slower, silently."""
    code = "import importlib, sys\nfrom clm_helpers import kernels\nfor n in kernels.PRELOAD: importlib.import_module(n)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    assert done.returncode == 0, done.stderr[-2000:]


def test_what_the_server_warms_exists_and_takes_no_arguments():
    """The server skips a WARM entry that fails (the kernel then reads it itself): a renamed function would go unnoticed."""
    import importlib

    for name in kernels.WARM:
        module, _, function = name.partition(":")
        getattr(importlib.import_module(module), function)()


def test_trim_memory_returns_what_arrow_s_pool_freed():
    """pyarrow's default pool (mimalloc, jemalloc) keeps freed buffers; trim_memory hands them back too."""
    code = """
import pyarrow as pa
from clm_helpers import kernels
def anon():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon")) * 1024
arrays = [pa.array(range(i * 1000, i * 1000 + 100_000)) for i in range(400)]  # 400 x 0.8 MB in Arrow's pool
del arrays
before = anon()
kernels.trim_memory()
print(pa.default_memory_pool().backend_name, before - anon())
"""
    if not Path("/proc/self/status").exists():
        pytest.skip("reads resident memory from /proc (Linux)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if out[0] == "system":
        pytest.skip("pyarrow built without its own allocator: malloc_trim covers it")
    assert int(out[1]) > 100_000_000, f"{int(out[1]):,} of the 320 MB freed returned ({out[0]})"


def test_trim_memory_returns_the_heap_s_free_pages():
    """After many 1 kB blocks are freed with a few kept in between, glibc keeps the pages; trim_memory returns them."""
    code = """
from clm_helpers import kernels
def anon():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon")) * 1024
blocks = [bytes(1000) + bytes([i % 251]) for i in range(300_000)]  # above pymalloc's 512 bytes: glibc's heap
kept = blocks[::50]
del blocks
before = anon()
print(kernels.trim_memory(), before - anon())
"""
    if not Path("/proc/self/status").exists():
        pytest.skip("reads resident memory from /proc (Linux)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "True"
    assert int(out[1]) > 150_000_000, f"{int(out[1]):,} bytes returned"  # about 290 of the 300 MB freed
