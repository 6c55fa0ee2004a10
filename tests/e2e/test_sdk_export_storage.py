"""End-to-end test of GCS export storages: the official `label-studio-sdk==2.1.2`
(`client.export_storage.gcs.*`) against a real `labelport serve` that talks to
the real GCS emulator.

Pinned here (reference/sdk-requests.md, label-studio-storage-spec.md §1.4,
§2.3, §4): validate answers 200 with no body, or 400 naming a missing bucket;
create answers 201 at once and exports the project's existing annotations in
the background, one object `<prefix>/<annotation id>` each, JSON holding the
annotation with its task nested; a save made while the storage exists is
exported without a sync; list/get/update/sync/delete round-trip; a sync with
nothing new writes nothing; the key is never returned.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid

import pytest
from label_studio_sdk.core.api_error import ApiError

CONFIG = (
    '<View><Text name="text" value="$text"/>'
    '<Choices name="c" toName="text"><Choice value="a"/><Choice value="b"/></Choices></View>'
)
TIMEOUT_S = 60.0


def result(choice: str) -> list:
    return [{"from_name": "c", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}]


def download(fake_gcs, bucket: str, key: str):
    url = (
        f"{fake_gcs.endpoint}/storage/v1/b/{urllib.parse.quote(bucket, safe='')}"
        f"/o/{urllib.parse.quote(key, safe='')}"
    )
    r = fake_gcs.session.get(url, params={"alt": "media"}, timeout=30)
    if r.status_code != 200:
        return None
    return json.loads(r.content)


def wait_until(what: str, check):
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def wait_for_sync(gcs, storage_id: int):
    def done():
        s = gcs.get(storage_id)
        assert s.status in ("initialized", "queued", "in_progress", "completed"), (
            f"export sync ended {s.status!r}: {s.traceback!r}"
        )
        return s if s.status == "completed" else None

    return wait_until(f"export storage {storage_id} to complete", done)


def test_gcs_export_storage_sdk_flow(client, http, fake_gcs):
    gcs = client.export_storage.gcs
    bucket = f"e2e-export-{uuid.uuid4().hex[:12]}"
    fake_gcs.create_bucket(bucket)
    project = client.projects.create(title="e2e export", label_config=CONFIG)
    pid = project.id
    try:
        client.projects.import_tasks(id=pid, request=[{"text": f"t{i}"} for i in range(3)])
        tasks = list(client.tasks.list(project=pid, page_size=100))
        assert len(tasks) == 3
        before = [
            client.annotations.create(id=t.id, result=result("a"), was_cancelled=False, ground_truth=False, lead_time=1.0)
            for t in tasks[:2]
        ]
        params = dict(
            bucket=bucket,
            can_delete_objects=False,
            description="desc",
            google_application_credentials="",
            google_project_id="",
            prefix="calls/export",
            regex_filter="",
            title="calls-export",
            use_blob_urls=False,
        )

        # ---- validate: OK, then a missing bucket
        assert gcs.validate(project=pid, **params) is None
        missing = f"e2e-missing-{uuid.uuid4().hex[:8]}"
        with pytest.raises(ApiError) as info:
            gcs.validate(project=pid, **{**params, "bucket": missing})
        assert info.value.status_code == 400
        assert missing in json.dumps(info.value.body)

        # ---- create: answers at once, then exports what exists
        t0 = time.monotonic()
        storage = gcs.create(project=pid, **params)
        assert time.monotonic() - t0 < 10
        assert storage.id and storage.project == pid
        assert storage.status in ("queued", "in_progress", "completed"), storage
        assert storage.can_delete_objects is False
        raw = http.get(f"/api/storages/export/gcs/{storage.id}").json()
        assert "google_application_credentials" not in raw
        done = wait_for_sync(gcs, storage.id)
        assert done.last_sync_count == 2, done
        assert done.meta.get("total_annotations") == 2, done.meta
        keys = sorted(fake_gcs.list_keys(bucket, "calls/export/"))
        assert keys == sorted(f"calls/export/{a.id}" for a in before), keys
        obj = download(fake_gcs, bucket, f"calls/export/{before[0].id}")
        assert obj["id"] == before[0].id
        assert obj["result"] == result("a")
        assert obj["task"]["id"] == tasks[0].id and obj["task"]["data"] == {"text": "t0"}

        # ---- a save while the storage exists is exported without a sync
        new = client.annotations.create(id=tasks[2].id, result=result("b"), was_cancelled=False, ground_truth=False, lead_time=2.0)
        wait_until("the new annotation's object", lambda: download(fake_gcs, bucket, f"calls/export/{new.id}"))
        client.annotations.update(id=before[1].id, result=result("b"))
        wait_until(
            "the updated annotation's object",
            lambda: (download(fake_gcs, bucket, f"calls/export/{before[1].id}") or {}).get("result") == result("b"),
        )

        # ---- list / get / update
        listed = gcs.list(project=pid)
        assert [s.id for s in listed] == [storage.id]
        got = gcs.get(storage.id)
        assert got.bucket == bucket and got.prefix == "calls/export"
        updated = gcs.update(id=storage.id, title="calls-export-2")
        assert updated.title == "calls-export-2"
        assert gcs.get(storage.id).title == "calls-export-2"

        # ---- sync: nothing new, nothing written
        synced = gcs.sync(id=storage.id)
        assert synced.id == storage.id
        final = wait_for_sync(gcs, storage.id)
        assert final.last_sync_count == 0, final
        assert len(fake_gcs.list_keys(bucket, "calls/export/")) == 3

        # ---- delete: the storage goes, its objects stay
        gcs.delete(id=storage.id)
        with pytest.raises(ApiError) as info:
            gcs.get(storage.id)
        assert info.value.status_code == 404
        assert len(fake_gcs.list_keys(bucket, "calls/export/")) == 3
    finally:
        http.delete(f"/api/projects/{pid}/")
