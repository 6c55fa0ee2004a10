"""End-to-end tests of GCS import storages: the official `label-studio-sdk==2.1.2`
(`client.import_storage.gcs.*`) against a real `labelport serve` that talks to
the real GCS emulator (fake-gcs-server, the `fake_gcs` fixture in conftest.py).

Behaviour pinned here (reference/sdk-requests.md, label-studio-storage-spec.md
§1.3, §2.2, §3.2, §6, §7):
  * validate answers 200 with an empty body, or 400 naming the bucket when it
    does not exist;
  * create answers 201 and starts no sync; list/get/update/delete round-trip;
  * `POST .../sync` answers at once with the storage (status queued,
    in_progress or completed) and the sync finishes with status `completed`;
  * "Files" import (`use_blob_urls=true`): one task per matching object with
    `{"image": "gs://<bucket>/<key>"}`; `recursive_scan=false` skips objects
    below a sub-folder; `regex_filter` is matched against the full key;
  * a re-sync creates no duplicates; new objects are picked up by the next sync;
  * `google_application_credentials` never appears in a response;
  * deleting a storage keeps its tasks;
  * invalid `presign_ttl`, `regex_filter` and credentials give 400 validation
    errors (credentials are not echoed back).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from label_studio_sdk.core.api_error import ApiError

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<Choices name="c" toName="image"><Choice value="a"/></Choices></View>'
)
N_IMAGES = 30
SYNC_TIMEOUT_S = 60.0
SYNC_POLL_S = 0.1
SYNC_RUNNING = ("queued", "in_progress", "completed")
CREDENTIALS_KEY = "google_application_credentials"


# --------------------------------------------------------------------------- helpers



def gs_uri(value):
    """Task reads show media of a connected bucket as resolve URLs
    (`/tasks/<id>/resolve/?fileuri=<url-safe base64>`); decode them back."""
    import base64
    assert isinstance(value, str) and "/resolve/?fileuri=" in value, value
    return base64.urlsafe_b64decode(value.split("fileuri=", 1)[1]).decode()

def unique_bucket(tag: str) -> str:
    # GCS bucket names: 3-63 chars, lowercase letters, digits, '-', '_', '.'.
    return f"e2e-{tag}-{uuid.uuid4().hex[:12]}"


def image_key(i: int) -> str:
    return f"imgs/img_{i:03d}.jpg"


def assert_ls_error(resp, status: int) -> dict:
    """Status code and Label Studio's error body shape."""
    assert resp.status_code == status, (
        f"{resp.request.method} {resp.request.url}: expected {status}, got {resp.status_code}: {resp.text[:500]}"
    )
    ctype = resp.headers.get("content-type", "")
    assert ctype.startswith("application/json"), f"error body is not JSON (content-type {ctype!r}): {resp.text[:300]}"
    body = resp.json()
    assert isinstance(body, dict), f"error body is not an object: {body!r}"
    missing = {"id", "status_code", "version", "detail", "exc_info"} - set(body)
    assert not missing, f"error body lacks {sorted(missing)}: {body!r}"
    assert body["status_code"] == status, body
    return body


def assert_validation_error(resp, field: str) -> dict:
    """A 400 whose `validation_errors` names `field` with at least one message."""
    body = assert_ls_error(resp, 400)
    errors = body.get("validation_errors")
    assert isinstance(errors, dict), f"400 without a validation_errors dict: {body!r}"
    assert field in errors, f"validation_errors does not mention {field!r}: {errors!r}"
    msgs = errors[field]
    assert isinstance(msgs, list) and msgs, f"validation_errors[{field!r}] should be a non-empty list: {errors!r}"
    assert body["detail"] == "Validation error", body
    return body


def expect_api_error(status: int, fn, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kwargs)
    assert info.value.status_code == status, f"expected ApiError {status}, got {info.value}"
    return info.value


def body_text(err: ApiError) -> str:
    body = err.body
    return body if isinstance(body, str) else json.dumps(body)


def assert_no_credentials(obj, where: str) -> None:
    """`google_application_credentials` is write-only: never a key in a response."""
    if isinstance(obj, dict):
        assert CREDENTIALS_KEY not in obj, f"{where}: response contains {CREDENTIALS_KEY!r}: {obj!r}"
        for v in obj.values():
            assert_no_credentials(v, where)
    elif isinstance(obj, list):
        for v in obj:
            assert_no_credentials(v, where)


def sync_and_wait(client, storage_id: int):
    """`sync` answers at once with a running (or already finished) storage;
    poll `get` until the sync completes and return the final storage."""
    t0 = time.monotonic()
    started = client.import_storage.gcs.sync(storage_id)
    elapsed = time.monotonic() - t0
    assert started.id == storage_id, started
    assert started.status in SYNC_RUNNING, f"sync answered status {started.status!r}: {started!r}"
    assert elapsed < 10.0, f"POST sync took {elapsed:.1f} s: it should answer at once"
    if started.status == "completed":
        # The sync finished inside the POST (as in Label Studio without Redis):
        # the response is the final state.
        storage = started
    else:
        deadline = time.monotonic() + SYNC_TIMEOUT_S
        while True:
            storage = client.import_storage.gcs.get(storage_id)
            if storage.status == "completed":
                break
            assert storage.status in ("queued", "in_progress"), (
                f"sync ended with status {storage.status!r}; traceback: {storage.traceback!r}; meta: {storage.meta!r}"
            )
            assert time.monotonic() < deadline, (
                f"sync did not complete within {SYNC_TIMEOUT_S:.0f} s; last: {storage!r}"
            )
            time.sleep(SYNC_POLL_S)
    assert storage.last_sync is not None, f"completed sync without last_sync: {storage!r}"
    return storage


def all_tasks(client, project_id: int, expected_max: int = 1000):
    out = []
    for task in client.tasks.list(project=project_id, page_size=100):
        out.append(task)
        assert len(out) <= expected_max + 100, "SDK task pager did not stop"
    return out


@pytest.fixture
def make_project(client, http):
    ids: list[int] = []

    def make(label_config: str = CONFIG):
        title = f"e2e storage {uuid.uuid4().hex[:8]}"
        project = client.projects.create(title=title, label_config=label_config)
        assert isinstance(project.id, int), project
        ids.append(project.id)
        return project

    yield make
    for pid in ids:
        http.delete(f"/api/projects/{pid}/")


@pytest.fixture
def image_bucket(fake_gcs):
    """A fresh bucket with 30 `imgs/img_NNN.jpg`, plus `imgs/sub/x.jpg` (below a
    sub-folder) and `imgs/notes.txt` (not matching `.*\\.jpg`)."""
    bucket = unique_bucket("imgs")
    fake_gcs.create_bucket(bucket)
    for i in range(N_IMAGES):
        fake_gcs.upload(bucket, image_key(i), b"\xff\xd8\xff\xe0 fake jpeg %d" % i, "image/jpeg")
    fake_gcs.upload(bucket, "imgs/sub/x.jpg", b"\xff\xd8\xff\xe0 nested", "image/jpeg")
    fake_gcs.upload(bucket, "imgs/notes.txt", b"not an image", "text/plain")
    return bucket


# --------------------------------------------------------------------------- SDK flow


def test_gcs_import_storage_sdk_flow(client, http, fake_gcs, make_project, image_bucket):
    gcs = client.import_storage.gcs
    bucket = image_bucket
    pid = make_project().id
    params = dict(
        bucket=bucket,
        prefix="imgs",
        regex_filter=r".*\.jpg",
        use_blob_urls=True,
        presign=False,
        presign_ttl=1,
        recursive_scan=False,
    )

    # ---- validate: OK, then a missing bucket
    assert gcs.validate(project=pid, title="e2e import", **params) is None
    missing = unique_bucket("missing")
    err = expect_api_error(400, gcs.validate, project=pid, **{**params, "bucket": missing})
    assert missing in body_text(err), f"400 body does not name the missing bucket {missing!r}: {err.body!r}"
    # create checks the connection too and creates nothing
    err = expect_api_error(400, gcs.create, project=pid, **{**params, "bucket": missing})
    assert missing in body_text(err), f"400 body does not name the missing bucket {missing!r}: {err.body!r}"
    assert gcs.list(project=pid) == []

    # ---- create: 201, no sync started
    raw = gcs.with_raw_response.create(project=pid, title="e2e import", description="thirty images", **params)
    assert raw.status_code == 201, raw.status_code
    storage = raw.data
    sid = storage.id
    assert isinstance(sid, int), storage
    assert storage.project == pid
    assert storage.bucket == bucket
    assert storage.prefix == "imgs"
    assert storage.regex_filter == r".*\.jpg"
    assert storage.use_blob_urls is True
    assert storage.presign is False
    assert storage.presign_ttl == 1
    assert storage.recursive_scan is False
    assert storage.title == "e2e import"
    assert storage.description == "thirty images"
    assert storage.type == "gcs"
    assert storage.status == "initialized", storage
    assert storage.last_sync is None and storage.last_sync_count is None, storage
    assert storage.google_application_credentials is None, storage
    assert client.projects.get(pid).task_number == 0, "create must not start a sync"

    # ---- list / get / update
    listed = gcs.list(project=pid)
    assert [s.id for s in listed] == [sid], listed
    got = gcs.get(sid)
    assert got.id == sid and got.bucket == bucket and got.title == "e2e import", got
    updated = gcs.update(sid, title="e2e import renamed", presign=False)
    assert updated.id == sid, updated
    assert updated.title == "e2e import renamed", updated
    assert updated.bucket == bucket and updated.prefix == "imgs", updated
    assert gcs.get(sid).title == "e2e import renamed"

    # ---- first sync: 30 tasks (no sub/ object, no notes.txt)
    done = sync_and_wait(client, sid)
    assert done.last_sync_count == N_IMAGES, done
    assert client.projects.get(pid).task_number == N_IMAGES
    tasks = all_tasks(client, pid)
    expected = {f"gs://{bucket}/{image_key(i)}" for i in range(N_IMAGES)}
    images = [gs_uri(t.data.get("image")) for t in tasks]
    assert len(images) == N_IMAGES, images
    assert set(images) == expected, sorted(set(images) ^ expected)

    # ---- re-sync: idempotent
    again = sync_and_wait(client, sid)
    assert again.last_sync_count == 0, again
    assert client.projects.get(pid).task_number == N_IMAGES

    # ---- two new objects: picked up by the next sync
    for i in (N_IMAGES, N_IMAGES + 1):
        fake_gcs.upload(bucket, image_key(i), b"\xff\xd8\xff\xe0 new %d" % i, "image/jpeg")
    more = sync_and_wait(client, sid)
    assert more.last_sync_count == 2, more
    assert client.projects.get(pid).task_number == N_IMAGES + 2
    images = [gs_uri(t.data.get("image")) for t in all_tasks(client, pid)]
    expected |= {f"gs://{bucket}/{image_key(i)}" for i in (N_IMAGES, N_IMAGES + 1)}
    assert len(images) == N_IMAGES + 2 and set(images) == expected, sorted(set(images) ^ expected)

    # ---- credentials never come back (raw JSON)
    for path, params_ in (
        (f"/api/storages/gcs/{sid}", None),
        ("/api/storages/gcs/", {"project": pid}),
        ("/api/storages/", {"project": pid}),
    ):
        r = http.get(path, params=params_)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:300]}"
        assert_no_credentials(r.json(), f"GET {path}")
        assert CREDENTIALS_KEY not in r.text, f"GET {path}: {r.text[:500]}"

    # ---- delete: storage gone, tasks kept
    raw_del = gcs.with_raw_response.delete(sid)
    assert raw_del.status_code == 204, raw_del.status_code
    expect_api_error(404, gcs.get, sid)
    assert gcs.list(project=pid) == []
    assert client.projects.get(pid).task_number == N_IMAGES + 2


def test_gcs_import_storage_recursive_and_credentials_not_echoed(client, http, fake_gcs, make_project, image_bucket):
    """recursive_scan=true also imports `imgs/sub/x.jpg`; credentials given as
    an empty string (what the SDK's capture script sends) mean "anonymous /
    default" and are not returned."""
    pid = make_project().id
    storage = client.import_storage.gcs.create(
        project=pid,
        bucket=image_bucket,
        prefix="imgs/",
        regex_filter=r".*\.jpg",
        use_blob_urls=True,
        presign=False,
        presign_ttl=1,
        recursive_scan=True,
        google_application_credentials="",
        google_project_id="",
        title="recursive",
    )
    assert storage.google_application_credentials is None, storage
    done = sync_and_wait(client, storage.id)
    assert done.last_sync_count == N_IMAGES + 1, done
    images = {gs_uri(t.data.get("image")) for t in all_tasks(client, pid)}
    assert f"gs://{image_bucket}/imgs/sub/x.jpg" in images, sorted(images)
    assert f"gs://{image_bucket}/imgs/notes.txt" not in images, sorted(images)


# --------------------------------------------------------------------------- raw validation errors


def test_gcs_import_storage_validation_errors(http, fake_gcs, make_project):
    bucket = unique_bucket("val")
    fake_gcs.create_bucket(bucket)
    fake_gcs.upload(bucket, "imgs/a.jpg", b"\xff\xd8", "image/jpeg")
    pid = make_project().id
    base = {
        "project": pid,
        "bucket": bucket,
        "prefix": "imgs",
        "regex_filter": r".*\.jpg",
        "use_blob_urls": True,
        "presign": False,
        "presign_ttl": 1,
        "recursive_scan": False,
        "title": "invalid",
    }

    r = http.post("/api/storages/gcs/", json={**base, "presign_ttl": 0})
    assert_validation_error(r, "presign_ttl")

    r = http.post("/api/storages/gcs/", json={**base, "regex_filter": "("})
    assert_validation_error(r, "regex_filter")

    marker = f"secret-{uuid.uuid4().hex}"
    for value in ("not json", f"not json {marker}"):
        r = http.post("/api/storages/gcs/", json={**base, CREDENTIALS_KEY: value})
        body = assert_ls_error(r, 400)
        assert isinstance(body.get("validation_errors"), dict) and body["validation_errors"], body
        assert body["detail"] == "Validation error", body
        # The value may only appear as a field name, never echoed back.
        assert value not in r.text, f"400 echoes the credentials value back: {r.text[:500]}"
        assert marker not in r.text, f"400 echoes the credentials value back: {r.text[:500]}"

    # none of the above created a storage
    r = http.get("/api/storages/gcs/", params={"project": pid})
    assert r.status_code == 200, r.text[:300]
    assert r.json() == [], r.json()

    # the valid body itself is accepted (the errors above came from the field)
    r = http.post("/api/storages/gcs/", json=base)
    assert r.status_code == 201, r.text[:500]
    assert_no_credentials(r.json(), "POST /api/storages/gcs/")
