"""device/http/: one package that imports nothing of device.teach; the Teach API's paths and error statuses
answer only once device/teach/http.py registered them (the daemon does, at start). The routes are checked on a
real daemon (real model, image-folder source) over real loopback sockets."""

import ast
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import device_bundle
import pytest

from device.daemon import Daemon, Options
from device.http.errors import ErrorMap
from device.http.server import Server
from device.teach import http as teach_http
from device.teach.dataset import DatasetError
from device.teach.service import TeachBusy

HTTP_DIR = Path(__file__).resolve().parent.parent / "device" / "http"
DYNAMIC_IMPORTS = {"import_module", "find_spec", "__import__"}


def imported_names(source: str, package: str) -> set:
    """Every module a file names in an import statement (relative ones resolved against PACKAGE), in a call
    such as importlib.import_module("..."), or as a ``device.`` name handed to any call."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call):  # import_module("x"), or a helper handed a module's name
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            for argument in node.args:
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str) and (
                        function in DYNAMIC_IMPORTS or argument.value.startswith("device.")):
                    names.add(argument.value)
    return names


def test_nothing_under_device_http_imports_teach():
    files = sorted(HTTP_DIR.rglob("*.py"))
    assert {path.name for path in files} >= {"server.py", "handler.py", "guard.py", "events.py", "metrics.py",
                                             "errors.py", "web.py", "routes.py"}
    offending = {}
    for path in files:
        names = imported_names(path.read_text(encoding="utf-8"), "device.http")
        teach = sorted(name for name in names if name == "device.teach" or name.startswith("device.teach."))
        if teach:
            offending[path.name] = teach
    assert not offending, f"device/http/ must not import device.teach (teach registers itself): {offending}"


def test_import_walk_sees_every_spelling():
    """The walk above would see an import of teach however it is written."""
    for source in ("import device.teach.service", "from device.teach.dataset import DatasetError",
                   "from device import teach", "from ..teach import http", "importlib.import_module('device.teach.http')",
                   "load_optional('device.teach.http')"):
        assert any(name.startswith("device.teach") for name in imported_names(source, "device.http")), source


def test_error_statuses_come_from_what_teach_registered():
    errors = ErrorMap()
    assert errors.status_for(TeachBusy("teaching already runs"))[0] == 500
    assert errors.status_for(DatasetError("paper/x.jpg does not exist"))[0] == 500
    teach_http.register(type("NoRoutes", (), {"register": lambda *_: None})(), errors)
    assert errors.status_for(TeachBusy("teaching already runs")) == (409, "teaching already runs")
    assert errors.status_for(DatasetError("paper/x.jpg does not exist"))[0] == 404
    assert errors.status_for(DatasetError("a bad name"))[0] == 400
    assert errors.status_for(OSError(28, "No space left on device"))[0] == 507  # the server's own answers stay


def ask(port: int, method: str, path: str, body=None) -> tuple:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def daemon(bundle):
    test_images = device_bundle.heldout(bundle)[0][1].parent.parent
    running = Daemon(Options(bundle=str(bundle), source=f"images:{test_images}", http="127.0.0.1:0", max_fps=200,
                             threads=1, emit="off"))
    running.start()
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while running.frame_number < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    yield running
    running.stopping.set()
    thread.join(3)
    running.shutdown()


def test_teach_routes_answer_only_when_registered(daemon):
    assert ask(daemon.server.port, "GET", "/api/dataset")[0] == 200  # the daemon registered the Teach API
    bare = Server(("127.0.0.1", 0), daemon)  # the same real daemon, nothing registered on this server
    bare.start()
    try:
        code, answer = ask(bare.port, "GET", "/api/dataset")
        assert code == 404 and answer["error"] == "no such endpoint /api/dataset"
        code, answer = ask(bare.port, "POST", "/api/classes", {"name": "cup"})
        assert code == 404 and answer["error"] == "no such endpoint POST /api/classes"
        assert not (daemon.teach.dataset.root / "cup").exists()

        teach_http.register(bare.routes, ErrorMap())  # the paths, but not their error statuses
        code, answer = ask(bare.port, "GET", "/api/dataset")
        assert code == 200 and "classes" in answer
        assert ask(bare.port, "POST", "/api/dataset/delete", {"file": "paper/none.jpg"})[0] == 500

        teach_http.register(bare.routes, bare.errors)
        code, answer = ask(bare.port, "POST", "/api/dataset/delete", {"file": "paper/none.jpg"})
        assert code == 404 and "does not exist" in answer["error"]
    finally:
        bare.shutdown()  # not bare.stop(): that would close the daemon's /events hub too
        bare.server_close()
