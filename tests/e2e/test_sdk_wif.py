"""End-to-end test of Workload Identity Federation storages (`gcswif`): the
official `label-studio-sdk==2.1.2` (`client.import_storage.gcswif.*`,
`client.export_storage.gcswif.*`) against a real `labelport serve` whose
whole credential chain runs against local fakes.

The server runs as on AWS with credentials in its environment
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
`AWS_REGION`); `LABELPORT_GCP_STS_ENDPOINT` and `LABELPORT_IAM_ENDPOINT` point
at the test kit's fakes (`labelport-fakes`, built with the workspace), which
verify the SigV4 signature of the subject token, the token exchange and each
bearer token; `LABELPORT_GCS_ENDPOINT` points at a proxy in front of the real
emulator that lets through only the impersonated service account's tokens.
"""

from __future__ import annotations

import time
import uuid

import requests

import conftest
from conftest import EMAIL, NUMBER, POOL, PROVIDER, report, wif_fields

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<Choices name="c" toName="image"><Choice value="a"/></Choices></View>'
)
TIMEOUT_S = 60.0


def wait_until(what: str, check):
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_gcswif_import_and_export_storages_with_the_sdk(wif_server, fakes, fake_gcs):
    from label_studio_sdk import LabelStudio

    base_url, token, log_path = wif_server
    client = LabelStudio(base_url=base_url, api_key=token, timeout=60, max_retries=0)
    http = conftest.ApiSession(base_url, token)
    bucket = f"e2e-wif-{uuid.uuid4().hex[:10]}"
    fake_gcs.create_bucket(bucket)
    for name in ("imgs/a.jpg", "imgs/b.jpg", "imgs/c.jpg"):
        fake_gcs.upload(bucket, name, f"pixels of {name}".encode(), "image/jpeg")
    project = client.projects.create(title="e2e wif", label_config=CONFIG)

    # Import storage: validate, create, sync, as the SDK sends them.
    gcswif = client.import_storage.gcswif
    gcswif.validate(project=project.id, bucket=bucket, prefix="imgs", use_blob_urls=True, presign=True, **wif_fields())
    storage = gcswif.create(
        project=project.id, bucket=bucket, prefix="imgs", use_blob_urls=True, presign=True, presign_ttl=5,
        title="WIF source", **wif_fields(),
    )
    assert storage.google_wif_pool_id == POOL
    assert storage.google_service_account_email == EMAIL
    assert storage.google_project_number == NUMBER
    gcswif.sync(id=storage.id)

    def synced():
        s = gcswif.get(id=storage.id)
        assert s.status in ("queued", "in_progress", "completed"), f"{s.status}: {s.traceback}"
        return s if s.status == "completed" else None

    done = wait_until("the import sync", synced)
    assert done.last_sync_count == 3
    assert [s.id for s in gcswif.list(project=project.id)] == [storage.id]
    types = http.get("/api/storages/types").json()
    assert {"name": "gcswif", "title": "Google Cloud Storage (WIF Auth)"} in types

    # Presigned media: a 303 to a URL signed through IAM as the account.
    tasks = list(client.tasks.list(project=project.id, page_size=100))
    assert len(tasks) == 3
    task = tasks[0]
    resolve = task.data["image"]  # task data shows the object as its resolve URL
    assert resolve.startswith(f"/tasks/{task.id}/resolve/?fileuri="), resolve
    r = http.get(resolve, allow_redirects=False)
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    assert location.startswith(fakes["gcs"]) and "X-Goog-Signature=" in location
    assert EMAIL.split("@")[0] in location
    got = requests.get(location, timeout=30)
    assert got.status_code == 200 and got.content.startswith(b"pixels of imgs/")

    # Export storage: an annotation saved becomes an object.
    export = client.export_storage.gcswif.create(project=project.id, bucket=bucket, prefix="out", **wif_fields())
    assert export.google_wif_provider_id == PROVIDER
    annotation = client.annotations.create(
        id=task.id,
        result=[{"from_name": "c", "to_name": "image", "type": "choices", "value": {"choices": ["a"]}}],
        was_cancelled=False,
        ground_truth=False,
        lead_time=1.0,
    )
    wait_until("the exported object", lambda: f"out/{annotation.id}" in fake_gcs.list_keys(bucket, "out/"))
    client.export_storage.gcswif.sync(id=export.id)

    # A bad field is a 400 naming it.
    r = http.post(
        "/api/storages/gcswif/validate",
        json={"project": project.id, "bucket": bucket, **wif_fields(), "google_project_number": "my-project"},
    )
    assert r.status_code == 400 and "google_project_number" in r.json()["validation_errors"], r.text

    # The chain ran as Google and AWS require, from the environment's
    # credentials (no metadata-service call), with one exchange for all.
    seen = report(fakes)
    assert seen["violations"] == [], seen
    assert seen["unauthorized"] == [], seen
    assert seen["authorized"] > 3, seen
    assert not any(s.startswith("imds") for s in seen["seen"]), seen
    assert seen["seen"].count("sts") == 1, seen
    assert seen["seen"].count("generateAccessToken") == 1, seen
    assert "signBlob" in seen["seen"], seen
    # No token reaches the log.
    log = log_path.read_text(errors="replace")
    assert "sa-token-" not in log and "federated-" not in log and "fake/secret" not in log
