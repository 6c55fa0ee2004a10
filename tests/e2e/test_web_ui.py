"""The web UI in a real headless Chromium (Debian's `chromium`, driven by
Playwright for Python with `executable_path`), against the real server, the
GCS emulator and Label Studio's editor 1.4.0 as the server ships it.

Covered: sign in (and a wrong password), the projects list with counts,
creating a project from a template, a wrong labeling config shown at its
field, importing tasks by file upload (JSON, JSONL, CSV), the data manager's
keyset pages, filters and sort, deleting selected tasks, labeling an image
task with a rectangle and a choice (Submit; the stored result is read back
through the API), updating it, skipping a task, images arriving both through
the streaming proxy and through a 303 to a V4-signed emulator URL, and the
pages an annotator may and may not open. Every page is checked for console
errors, and each test leaves screenshots in docs/screenshots/.

Environment: LABELPORT_CHROMIUM (default /usr/bin/chromium);
LABELPORT_SCREENSHOTS_DIR: where screenshots go (the docs' are made with
`LABELPORT_SCREENSHOTS_DIR=docs/screenshots`); unset, a temporary directory.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import tempfile
import time
import urllib.parse
import zlib
from pathlib import Path

import pytest
import requests

from conftest import ADMIN_PASSWORD, ADMIN_USERNAME

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("LABELPORT_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("LABELPORT_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="labelport-shots-"))

BOX_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Car" background="green"/>
    <Label value="Person" background="blue"/>
  </RectangleLabels>
  <Choices name="quality" toName="image">
    <Choice value="Clear"/>
    <Choice value="Blurry"/>
  </Choices>
</View>"""


def png(width: int, height: int, rgb=(200, 80, 40)) -> bytes:
    """A solid-colour PNG (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    raw = row * height
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def service_account_json(tmp_path: Path) -> str:
    """A service-account key of a fresh RSA key (the emulator checks no
    signature; the server signs V4 URLs with it)."""
    pem = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "labelport-test",
            "private_key_id": "0123456789abcdef",
            "private_key": pem,
            "client_email": "signer@labelport-test.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test does)", pytrace=False)
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A browser page with its console errors, failed requests and media
    responses recorded."""

    def __init__(self, page):
        self.page = page
        # (message, URL it is about)
        self.errors: list[tuple[str, str]] = []
        self.responses: list = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append((f"page error: {e}", "")))
        page.on("response", lambda r: self.responses.append(r))

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append((f"console error: {message.text}", (message.location or {}).get("url", "")))

    def expect_refusal(self, url_part: str, status: int) -> None:
        """Takes back the console's report of one refusal the test asked for
        (browsers log every 4xx answer): that URL and that status only."""
        for i, (text, url) in enumerate(self.errors):
            if url_part in url and f"status of {status}" in text:
                del self.errors[i]
                return
        raise AssertionError(f"no console report of {status} for {url_part}: {self.errors}")

    def goto_refused(self, base_url: str, path: str, status: int):
        response = self.page.goto(base_url + path)
        assert response.status == status, path
        self.expect_refusal(path.split("?")[0], status)
        return response

    def follow(self, selector: str) -> None:
        """Clicks a link or button that loads another page, and waits for it."""
        with self.page.expect_navigation(wait_until="load"):
            self.page.click(selector)

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def assert_clean(self) -> None:
        assert not self.errors, "errors in the browser:\n" + "\n".join(f"{t} ({u})" for t, u in self.errors)


@pytest.fixture
def watched(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(20_000)
    w = Watched(page)
    yield w
    context.close()
    w.assert_clean()


def sign_in(w: Watched, base_url: str, username: str = ADMIN_USERNAME, password: str = ADMIN_PASSWORD, then: str = "/projects"):
    w.page.goto(base_url + then)
    w.page.wait_for_url("**/user/login**")
    w.page.fill("#login-email", username)
    w.page.fill("#login-password", password)
    w.page.click("#login-form button[type=submit]")
    w.page.wait_for_url(f"**{then}")


def make_project(http, title: str, config: str = BOX_CONFIG) -> int:
    r = http.post("/api/projects", json={"title": title, "label_config": config})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_sign_in_create_project_from_template_and_config_error(server, watched, http):
    page = watched.page
    page.goto(server.base_url + "/projects")
    page.wait_for_url("**/user/login?next=%2Fprojects")
    watched.shot("01-sign-in")
    page.fill("#login-email", ADMIN_USERNAME)
    page.fill("#login-password", "not the password")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "Wrong email or password" in page.inner_text("#login-error")
    watched.expect_refusal("/api/auth/login", 400)
    page.fill("#login-password", ADMIN_PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url("**/projects")

    # Create a project from the "Bounding boxes" template.
    page.click("#create-project")
    page.wait_for_url("**/projects/new")
    page.fill("#project-title", "UI boxes")
    page.fill("#project-description", "Made in the browser")
    page.click("button[data-template='1']")
    assert "RectangleLabels" in page.input_value("#project-config")
    watched.shot("03-create-project")
    page.click("#save-project")
    page.wait_for_url("**/projects/*/data")
    pid = int(page.url.split("/projects/")[1].split("/")[0])
    stored = http.get(f"/api/projects/{pid}").json()
    assert stored["title"] == "UI boxes"
    assert stored["description"] == "Made in the browser"
    assert "<RectangleLabels" in stored["label_config"]

    # A wrong config is refused, with the reason at the field; nothing changes.
    page.goto(f"{server.base_url}/projects/{pid}/settings")
    page.fill("#project-config", '<View><Image name="image" value="$image"/><Choices name="c" toName="nowhere"><Choice value="A"/></Choices></View>')
    page.click("#save-project")
    page.wait_for_selector("#label-config-error:not([hidden])")
    message = page.inner_text("#label-config-error")
    assert "nowhere" in message, message
    watched.shot("04-config-error")
    watched.expect_refusal(f"/api/projects/{pid}", 400)
    assert http.get(f"/api/projects/{pid}").json()["label_config"] == stored["label_config"]
    # A good edit is saved.
    page.fill("#project-title", "UI boxes renamed")
    page.click("button[data-template='1']")
    page.click("#save-project")
    page.wait_for_url(f"**/projects/{pid}/data")
    assert http.get(f"/api/projects/{pid}").json()["title"] == "UI boxes renamed"

    # The projects list shows it with its counts.
    http.post(f"/api/projects/{pid}/import", json=[{"image": "https://example.invalid/a.png"}, {"image": "https://example.invalid/b.png"}])
    page.goto(server.base_url + "/projects")
    card = page.locator(f".project-card[data-project='{pid}']")
    assert card.locator(".project-title").inner_text() == "UI boxes renamed"
    assert card.locator(".tasks").inner_text() == "2"
    assert card.locator(".completed").inner_text() == "0 (0%)"
    watched.shot("02-projects")


def test_import_upload_pages_filters_sort_and_delete(server, watched, http):
    page = watched.page
    pid = make_project(http, "UI data manager", '<View><Text name="text" value="$text"/><Choices name="s" toName="text"><Choice value="A"/></Choices></View>')
    sign_in(watched, server.base_url, then=f"/projects/{pid}/data")
    assert "No tasks" in page.inner_text("#task-table tbody")

    jsonl = "\n".join(json.dumps({"text": f"line {i}"}) for i in range(60)).encode()
    csv = ("text,extra\n" + "".join(f"row {i},{i}\n" for i in range(50))).encode()
    listing = json.dumps([{"data": {"text": f"json {i}"}} for i in range(10)]).encode()
    with page.expect_navigation(wait_until="load"):
        page.set_input_files(
            "#import-file",
            files=[
                {"name": "a.jsonl", "mimeType": "application/jsonl", "buffer": jsonl},
                {"name": "b.csv", "mimeType": "text/csv", "buffer": csv},
                {"name": "c.json", "mimeType": "application/json", "buffer": listing},
            ],
        )
    assert page.inner_text("#data-notice") == "Imported 120 tasks."
    assert page.locator("#task-table tbody tr[data-task]").count() == 50
    tasks = http.get(f"/api/projects/{pid}/tasks", params={"page_size": 200}).json()
    assert len(tasks) == 120
    texts = sorted(t["data"]["text"] for t in tasks)
    assert texts == sorted([f"line {i}" for i in range(60)] + [f"row {i}" for i in range(50)] + [f"json {i}" for i in range(10)])
    csv_task = next(t for t in tasks if t["data"]["text"] == "row 7")
    assert csv_task["data"]["extra"] == "7"
    ids = sorted(t["id"] for t in tasks)

    # A bad file is refused with its name and line; nothing is imported.
    page.set_input_files("#import-file", files=[{"name": "bad.jsonl", "mimeType": "application/jsonl", "buffer": b'{"text": "ok"}\n{"nope": 1}\n'}])
    page.wait_for_selector("#data-error:not([hidden])")
    assert "bad.jsonl:line 2" in page.inner_text("#data-error")
    watched.expect_refusal(f"/api/projects/{pid}/import", 400)
    assert len(http.get(f"/api/projects/{pid}/tasks", params={"page_size": 200}).json()) == 120

    def shown_ids():
        return [int(x) for x in page.eval_on_selector_all("#task-table tbody tr[data-task]", "rows => rows.map(r => r.dataset.task)")]

    page.goto(f"{server.base_url}/projects/{pid}/data")
    assert shown_ids() == ids[:50]
    watched.shot("05-data-manager")
    watched.follow("#page-next")
    assert shown_ids() == ids[50:100]
    watched.follow("#page-next")
    assert shown_ids() == ids[100:]
    assert page.locator("#page-next").count() == 0
    watched.follow("#page-previous")
    assert shown_ids() == ids[50:100]
    watched.follow("#page-previous")
    assert shown_ids() == ids[:50]
    assert page.locator("#page-previous").count() == 0

    # Sort by id, newest first.
    watched.follow("#sort-id")
    assert shown_ids() == ids[::-1][:50]
    watched.follow("#page-next")
    assert shown_ids() == ids[::-1][50:100]

    # Filters: label two tasks through the API.
    for tid in (ids[3], ids[70]):
        r = http.post(f"/api/tasks/{tid}/annotations", json={"result": [{"from_name": "s", "to_name": "text", "type": "choices", "value": {"choices": ["A"]}}]})
        assert r.status_code == 201, r.text
    watched.follow("#filter-labeled")
    assert sorted(shown_ids()) == [ids[3], ids[70]]
    watched.follow("#filter-unlabeled")
    assert ids[3] not in shown_ids() and len(shown_ids()) == 50
    watched.follow("#filter-all")
    assert len(shown_ids()) == 50

    # Select two tasks and delete them.
    page.goto(f"{server.base_url}/projects/{pid}/data")
    page.check(f"input.select-task[value='{ids[0]}']")
    page.check(f"input.select-task[value='{ids[1]}']")
    assert page.inner_text("#delete-selected") == "Delete 2 tasks"
    page.once("dialog", lambda d: d.accept())
    watched.follow("#delete-selected")
    assert shown_ids()[:2] == ids[2:4]
    assert http.get(f"/api/tasks/{ids[0]}").status_code == 404
    assert len(http.get(f"/api/projects/{pid}/tasks", params={"page_size": 200}).json()) == 118

    # Export downloads the project as JSON.
    with page.expect_download() as download:
        page.click("#export-button")
    exported = json.loads(Path(download.value.path()).read_text())
    assert len(exported) == 118


@pytest.fixture(scope="module")
def media_project(server, fake_gcs, tmp_path_factory):
    """A box project whose images live in two buckets: one served through
    the proxy, one by 303 to a signed URL."""
    http = requests.Session()
    http.headers["Authorization"] = f"Token {server.token}"
    base = server.base_url
    pid = requests.post(base + "/api/projects", json={"title": "UI labeling", "label_config": BOX_CONFIG}, headers=http.headers, timeout=30).json()["id"]
    proxied, signed = f"ui-proxy-{pid}", f"ui-signed-{pid}"
    for bucket, colour in ((proxied, (30, 144, 255)), (signed, (34, 139, 34))):
        fake_gcs.create_bucket(bucket)
        for i in range(3):
            fake_gcs.upload(bucket, f"img/{i}.png", png(320, 240, colour), "image/png")
    key = service_account_json(tmp_path_factory.mktemp("key"))
    for bucket, presign, extra in ((proxied, False, {}), (signed, True, {"google_application_credentials": key})):
        r = http.post(
            base + "/api/storages/gcs",
            json={"project": pid, "bucket": bucket, "prefix": "img/", "use_blob_urls": True, "presign": presign, "presign_ttl": 15, "title": bucket, **extra},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        assert http.post(f"{base}/api/storages/gcs/{sid}/sync", timeout=30).status_code == 200
        for _ in range(300):
            s = http.get(f"{base}/api/storages/gcs/{sid}", timeout=30).json()
            if s["status"] in ("completed", "failed", "completed_with_errors"):
                break
            time.sleep(0.1)
        assert s["status"] == "completed", s
    tasks = http.get(f"{base}/api/projects/{pid}/tasks", params={"page_size": 100}, timeout=30).json()
    assert len(tasks) == 6
    def stored_uri(task) -> str:
        # The API shows /tasks/<id>/resolve/?fileuri=<base64 of the gs:// URI>.
        fileuri = urllib.parse.parse_qs(urllib.parse.urlsplit(task["data"]["image"]).query)["fileuri"][0]
        return base64.b64decode(fileuri).decode()

    by_bucket = {b: sorted(t["id"] for t in tasks if stored_uri(t).startswith(f"gs://{b}/")) for b in (proxied, signed)}
    assert all(len(ids) == 3 for ids in by_bucket.values()), by_bucket
    return {"id": pid, "proxied": proxied, "signed": signed, "tasks": sorted(t["id"] for t in tasks), "by_bucket": by_bucket}


def images_loaded(page, selector: str) -> list:
    return page.eval_on_selector_all(selector, "imgs => imgs.map(i => i.complete && i.naturalWidth)")


def test_media_through_proxy_and_signed_urls(server, watched, fake_gcs, media_project):
    page = watched.page
    sign_in(watched, server.base_url, then=f"/projects/{media_project['id']}/data")
    page.wait_for_function("() => Array.from(document.querySelectorAll('img.thumb')).every(i => i.complete && i.naturalWidth > 0)")
    assert images_loaded(page, "img.thumb") == [320] * 6
    resolves = [r for r in watched.responses if "/resolve" in r.url]
    statuses = sorted(r.status for r in resolves)
    # Three thumbnails streamed by the proxy, three redirected to signed URLs.
    assert statuses == [200, 200, 200, 303, 303, 303], [(r.url, r.status) for r in resolves]
    for r in resolves:
        if r.status == 303:
            location = r.headers["location"]
            assert location.startswith(f"{fake_gcs.endpoint}/{media_project['signed']}/img/"), location
            assert "X-Goog-Algorithm=GOOG4-RSA-SHA256" in location and "X-Goog-Signature=" in location
        else:
            assert r.headers["content-type"] == "image/png"
    signed_loads = [r for r in watched.responses if r.url.startswith(fake_gcs.endpoint) and r.status == 200]
    assert len(signed_loads) == 3
    watched.shot("06-data-manager-images")
    # A tablet: the page fits its width (a wide table scrolls inside its box).
    page.set_viewport_size({"width": 820, "height": 1100})
    page.reload()
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    watched.shot("10-tablet-data-manager")


# The task's image in the editor (the editor also shows user pictures).
TASK_IMAGE = "#label-studio img[src*='/tasks/']"


def draw_box(page, frac=(0.2, 0.2, 0.6, 0.7)):
    """Drags a rectangle over the editor's image (fractions of its size)."""
    image = page.locator(TASK_IMAGE).first
    image.wait_for(state="visible")
    page.wait_for_function("() => { const i = document.querySelector(\"" + TASK_IMAGE + "\"); return i && i.complete && i.naturalWidth > 0; }")
    box = image.bounding_box()
    x0, y0 = box["x"] + box["width"] * frac[0], box["y"] + box["height"] * frac[1]
    x1, y1 = box["x"] + box["width"] * frac[2], box["y"] + box["height"] * frac[3]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()


def test_label_submit_update_and_skip(server, watched, http, media_project):
    page = watched.page
    pid = media_project["id"]
    first = media_project["tasks"][0]
    sign_in(watched, server.base_url, then=f"/projects/{pid}/data")
    page.click("#label-all")
    page.wait_for_selector("body[data-editor-ready='true']")
    assert int(page.inner_text("#task-id")) == first
    # The editor shows the task's image (through its resolve URL).
    page.wait_for_function("() => { const i = document.querySelector(\"" + TASK_IMAGE + "\"); return i && i.complete && i.naturalWidth === 320; }")
    watched.shot("07-labeling")

    # A rectangle labelled "Car" and the choice "Clear", then Submit.
    page.get_by_text("Car", exact=True).first.click()
    draw_box(page)
    page.locator("label", has_text="Clear").first.click()
    watched.shot("08-labeling-drawn")
    page.locator("button", has_text="Submit").click()
    # "Label all tasks" moves on to the next task.
    page.wait_for_function(f"() => document.querySelector('#task-id') && document.querySelector('#task-id').textContent.trim() !== '{first}'")
    page.wait_for_selector("body[data-editor-ready='true']")
    second = int(page.inner_text("#task-id"))
    assert second == media_project["tasks"][1]

    annotations = http.get(f"/api/tasks/{first}/annotations").json()
    assert len(annotations) == 1
    stored = annotations[0]
    assert stored["was_cancelled"] is False
    by_type = {r["type"]: r for r in stored["result"]}
    assert set(by_type) == {"rectanglelabels", "choices"}, stored["result"]
    rect = by_type["rectanglelabels"]["value"]
    assert rect["rectanglelabels"] == ["Car"]
    # The drawn box: from about 20 % to 60 % across and 20 % to 70 % down.
    assert abs(rect["x"] - 20) < 4 and abs(rect["y"] - 20) < 4, rect
    assert abs(rect["width"] - 40) < 5 and abs(rect["height"] - 50) < 5, rect
    assert by_type["choices"]["value"]["choices"] == ["Clear"]
    assert http.get(f"/api/tasks/{first}").json()["is_labeled"] is True

    # Skip the second task: stored as a cancelled annotation, and on to the third.
    page.locator("button", has_text="Skip").click()
    page.wait_for_function(f"() => document.querySelector('#task-id') && document.querySelector('#task-id').textContent.trim() !== '{second}'")
    skipped = http.get(f"/api/tasks/{second}/annotations").json()
    assert len(skipped) == 1 and skipped[0]["was_cancelled"] is True

    # Open the first task from the table: its annotation is there; Update it.
    page.goto(f"{server.base_url}/projects/{pid}/data")
    page.click(f"a.task-link[href$='task={first}']")
    page.wait_for_selector("body[data-editor-ready='true']")
    page.locator("label", has_text="Blurry").first.click()
    page.locator("button", has_text="Update").click()
    page.wait_for_selector("body[data-saved='Updated']")
    updated = http.get(f"/api/tasks/{first}/annotations").json()
    assert len(updated) == 1 and updated[0]["id"] == stored["id"]
    choices = [r for r in updated[0]["result"] if r["type"] == "choices"][0]["value"]["choices"]
    assert choices == ["Blurry"]
    assert any(r["type"] == "rectanglelabels" for r in updated[0]["result"])

    # A task whose image is presigned, with a prediction: the editor loads
    # the image through the 303 to the signed URL and shows the prediction.
    signed_task = media_project["by_bucket"][media_project["signed"]][0]
    r = http.post("/api/predictions", json={"task": signed_task, "model_version": "m1", "score": 0.9, "result": [
        {"from_name": "quality", "to_name": "image", "type": "choices", "value": {"choices": ["Blurry"]}}]})
    assert r.status_code == 201, r.text
    page.goto(f"{server.base_url}/projects/{pid}/label?task={signed_task}")
    page.wait_for_selector("body[data-editor-ready='true']")
    page.wait_for_function("() => { const i = document.querySelector(\"" + TASK_IMAGE + "\"); return i && i.complete && i.naturalWidth === 320; }")
    redirects = [x for x in watched.responses if f"/tasks/{signed_task}/resolve" in x.url and x.status == 303]
    assert redirects, "the editor's image came through a 303 to the signed URL"
    assert page.evaluate("() => window.Htx.annotationStore.predictions.length") == 1
    # The new annotation starts from the prediction: "Blurry" is ticked; Submit stores it.
    assert page.locator("label", has_text="Blurry").locator("input[type=checkbox]").is_checked()
    page.locator("button", has_text="Submit").click()
    page.wait_for_selector("body[data-saved='Submitted']")
    saved = http.get(f"/api/tasks/{signed_task}/annotations").json()
    assert [r["value"] for r in saved[0]["result"]] == [{"choices": ["Blurry"]}], saved
    watched.shot("11-labeling-signed-with-prediction")


def test_annotator_sees_only_what_the_role_allows(server, watched, http, media_project):
    r = http.post("/api/users", json={"email": "ui-annotator@example.com", "username": "ui-annotator", "password": "annotator-pass", "role": "annotator"})
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    pid = media_project["id"]
    assert http.post(f"/api/projects/{pid}/members", json={"user": uid}).status_code in (200, 201)
    other = make_project(http, "UI hidden")
    page = watched.page
    sign_in(watched, server.base_url, "ui-annotator@example.com", "annotator-pass")
    assert page.locator("#create-project").count() == 0
    titles = page.eval_on_selector_all(".project-title", "els => els.map(e => e.textContent)")
    assert "UI labeling" in titles and "UI hidden" not in titles
    page.goto(f"{server.base_url}/projects/{pid}/data")
    assert page.locator("#import-button").count() == 0 and page.locator("#delete-selected").count() == 0
    for path, status in ((f"/projects/{pid}/settings", 403), ("/projects/new", 403), (f"/projects/{other}/data", 404), (f"/projects/{other}/label", 404)):
        watched.goto_refused(server.base_url, path, status)
        if path == "/projects/new":
            watched.shot("09-not-allowed")
    # "Label all tasks" opens the task the admin skipped: the annotator gets
    # a new annotation of their own, not the admin's.
    page.goto(f"{server.base_url}/projects/{pid}/label")
    page.wait_for_selector("body[data-editor-ready='true']")
    skipped_by_admin = media_project["tasks"][1]
    assert int(page.inner_text("#task-id")) == skipped_by_admin
    store = page.evaluate("() => window.Htx.annotationStore.annotations.map(a => a.pk || null)")
    assert store == [None], store
    page.locator("label", has_text="Clear").first.click()
    page.locator("button", has_text="Submit").click()
    page.wait_for_function(f"() => document.querySelector('#task-id') && document.querySelector('#task-id').textContent.trim() !== '{skipped_by_admin}'")
    mine = [a for a in http.get(f"/api/tasks/{skipped_by_admin}/annotations").json() if a["completed_by"] == uid]
    assert len(mine) == 1 and mine[0]["was_cancelled"] is False
    # Signing out ends the session: pages send the browser to sign in.
    page.click("#sign-out")
    page.wait_for_url("**/user/login")
    page.goto(f"{server.base_url}/projects")
    page.wait_for_url("**/user/login?next=%2Fprojects")


def test_cloud_storage_page_shows_sync_progress_errors_and_deletes(server, watched, http, fake_gcs):
    page = watched.page
    pid = make_project(http, "UI storage")
    bucket = f"ui-storage-{pid}"
    fake_gcs.create_bucket(bucket)
    for i in range(400):
        fake_gcs.upload(bucket, f"imgs/{i:04}.png", png(8, 8), "image/png")
    r = http.post("/api/storages/gcs", json={"project": pid, "bucket": bucket, "prefix": "imgs", "use_blob_urls": True, "presign": False, "title": "Photos"})
    assert r.status_code == 201, r.text
    source = r.json()["id"]
    r = http.post("/api/storages/export/gcs", json={"project": pid, "bucket": bucket, "prefix": "out", "title": "Annotations out", "can_delete_objects": True})
    assert r.status_code == 201, r.text
    target = r.json()["id"]

    sign_in(watched, server.base_url, then=f"/projects/{pid}/settings")
    watched.follow("#storage-tab")
    card = page.locator(f".storage-card[data-storage='{source}'][data-direction='source']")
    assert card.locator(".storage-title").inner_text() == "Photos"
    assert card.locator(".status").inner_text() == "Initialized"
    assert "gs://" + bucket + "/imgs" in card.inner_text()
    assert card.locator(".last-sync").inner_text() == "Not synced yet"
    target_card = page.locator(f".storage-card[data-storage='{target}'][data-direction='target']")
    assert "Yes, with their annotations" in target_card.inner_text()
    watched.shot("12-cloud-storage")

    # Sync: the badge moves from queued / in progress to completed with no reload.
    page.evaluate("() => { window.__same_page = true; }")
    card.locator(".sync-button").click()
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = card.locator(".status").inner_text()
        if not seen or seen[-1] != status:
            seen.append(status)
            if status == "In progress" and card.locator(".sync-progress").is_visible():
                watched.shot("13-cloud-storage-syncing")
        if status in ("Completed", "Failed", "Completed with errors"):
            break
        time.sleep(0.05)
    assert seen[-1] == "Completed", seen
    assert any(s in ("Queued", "In progress") for s in seen[:-1]), seen
    assert page.evaluate("() => window.__same_page === true"), "the page was not reloaded"
    assert card.locator(".sync-count").inner_text() == "400"
    assert card.locator(".last-sync").inner_text() != "Not synced yet"
    assert not card.locator(".sync-progress").is_visible()
    assert http.get(f"/api/projects/{pid}").json()["task_number"] == 400

    # A sync that fails shows its errors on demand.
    for key in fake_gcs.list_keys(bucket):
        fake_gcs.delete(bucket, key)
    requests.delete(f"{fake_gcs.endpoint}/storage/v1/b/{bucket}", timeout=30)
    page.reload()
    card.locator(".sync-button").click()
    page.wait_for_function(
        f"() => ['Failed', 'Completed with errors'].includes(document.querySelector(\"[data-storage='{source}'][data-direction='source'] .status\").textContent)"
    )
    assert card.locator(".sync-errors").is_visible()
    card.locator(".sync-errors summary").click()
    assert bucket in card.locator(".traceback").inner_text()
    watched.shot("14-cloud-storage-errors")

    # Delete asks first, then removes the storage (its tasks stay).
    messages = []
    page.once("dialog", lambda d: (messages.append(d.message), d.accept()))
    card.locator(".delete-storage").click()
    page.wait_for_function(f"() => !document.querySelector(\"[data-storage='{source}'][data-direction='source']\")")
    assert "Tasks it imported stay" in messages[0]
    assert http.get(f"/api/storages/gcs/{source}").status_code == 404
    assert http.get(f"/api/projects/{pid}").json()["task_number"] == 400


def test_add_source_and_target_storage_wizards(server, watched, http, fake_gcs):
    page = watched.page
    pid = make_project(http, "UI wizard")
    bucket = f"ui-wizard-{pid}"
    fake_gcs.create_bucket(bucket)
    for i in range(3):
        fake_gcs.upload(bucket, f"imgs/{i}.png", png(8, 8), "image/png")
    fake_gcs.upload(bucket, "other/skip.png", png(8, 8), "image/png")
    sign_in(watched, server.base_url, then=f"/projects/{pid}/settings/storage")

    # Source: provider, then connection (a wrong bucket is named at its field).
    page.click("#add-source-storage")
    page.wait_for_selector("#storage-wizard[open]")
    watched.shot("15-wizard-provider")
    assert not page.is_visible("#wizard-save") and not page.is_visible("#wizard-save-sync")
    page.click("#wizard-next")
    assert page.is_disabled("#wizard-next"), "Next waits for Test Connection"
    page.click("#test-connection")
    assert "Storage title is required" in page.inner_text("[data-error-for='title']")
    page.fill("#w-title", "Wizard photos")
    # A bad key is named at the key's field.
    page.fill("#w-bucket", bucket)
    page.fill("#w-credentials", '{"type": "authorized_user", "client_id": "x"}')
    page.click("#test-connection")
    said = page.wait_for_selector("[data-error-for='google_application_credentials']:not([hidden])").inner_text()
    assert "must be a service-account key" in said and "authorized_user" in said, said
    assert page.is_hidden("#wizard-error") and page.is_disabled("#wizard-next")
    watched.expect_refusal("/validate", 400)
    watched.shot("20-wizard-bad-key")
    page.fill("#w-credentials", "")
    # A wrong bucket is named at the bucket's field, with the next step.
    page.fill("#w-bucket", bucket + "-missing")
    page.uncheck("input[name=presign]")
    page.click("#test-connection")
    said = page.wait_for_selector("[data-error-for='bucket']:not([hidden])").inner_text()
    assert f'"{bucket}-missing" does not exist' in said and "Next step" in said, said
    assert page.is_hidden("[data-error-for='google_application_credentials']"), "old messages go"
    watched.expect_refusal("/validate", 400)
    watched.shot("16-wizard-connection-error")
    page.fill("#w-bucket", bucket)
    page.click("#test-connection")
    page.wait_for_selector("#connection-ok:not([hidden])")
    assert not page.is_disabled("#wizard-next")
    page.click("#wizard-next")
    # Import settings and preview. A prefix with nothing under it is named
    # at its field when leaving the step, and the wizard stays there.
    page.fill("#w-prefix", "nothing-here")
    page.click("#wizard-next")
    said = page.wait_for_selector("[data-error-for='prefix']:not([hidden])").inner_text()
    assert f"No objects found in gs://{bucket}/nothing-here/" in said and "Next step" in said, said
    assert page.is_visible("#load-preview"), "still at Import Settings"
    watched.expect_refusal("/validate", 400)
    watched.shot("21-wizard-missing-prefix")
    page.fill("#w-prefix", "imgs")
    # Interval sync: a negative interval is named at its field.
    page.fill("#w-interval", "-5")
    page.click("#wizard-next")
    said = page.wait_for_selector("[data-error-for='sync_interval']:not([hidden])").inner_text()
    assert "minutes from 1 to 525600" in said, said
    watched.expect_refusal("/validate", 400)
    page.fill("#w-interval", "30")
    page.select_option("#w-method", "true")
    page.click("#load-preview")
    page.wait_for_selector("#preview-list .preview-key")
    keys = page.eval_on_selector_all("#preview-list .preview-key", "els => els.map(e => e.textContent)")
    assert keys == ["imgs/0.png", "imgs/1.png", "imgs/2.png"], keys
    watched.shot("17-wizard-preview")
    assert not page.is_visible("#wizard-save-sync"), "saving comes at Review & Confirm"
    # Back and Next keep what was typed.
    page.click("#wizard-back")
    assert page.input_value("#w-title") == "Wizard photos"
    page.click("#wizard-next")
    assert page.input_value("#w-prefix") == "imgs"
    page.click("#wizard-next")
    page.wait_for_selector("#review-list div")  # after the import settings' check
    review = page.inner_text("#review-list")
    assert f"gs://{bucket}/imgs" in review and "Proxied" in review and "Every 30 min" in review, review
    watched.shot("18-wizard-review")
    with page.expect_navigation(wait_until="load"):
        page.click("#wizard-save-sync")
    card = page.locator(".storage-card[data-direction='source']", has_text="Wizard photos")
    page.wait_for_function(
        "() => [...document.querySelectorAll(\".storage-card[data-direction='source'] .status\")].some(s => s.textContent === 'Completed')"
    )
    assert card.locator(".sync-count").inner_text() == "3"
    assert card.locator(".interval").inner_text().startswith("Every 30 min · next "), card.locator(".interval").inner_text()
    storages = http.get("/api/storages/gcs", params={"project": pid}).json()
    assert len(storages) == 1 and storages[0]["presign"] is False and storages[0]["prefix"] == "imgs"
    assert storages[0]["sync_interval"] == 30 and storages[0]["next_sync"], storages[0]
    assert http.get(f"/api/projects/{pid}").json()["task_number"] == 3

    # Target: provider, connection with prefix and deletion, Test, Save.
    page.click("#add-target-storage")
    page.wait_for_selector("#storage-wizard[open]")
    page.click("#wizard-next")
    page.fill("#w-title", "Wizard annotations")
    page.fill("#w-bucket", bucket)
    page.fill("#w-prefix-target", "labels")
    page.check("input[name=can_delete_objects]")
    assert page.is_disabled("#wizard-save")
    page.click("#test-connection")
    page.wait_for_selector("#connection-ok:not([hidden])")
    with page.expect_navigation(wait_until="load"):
        page.click("#wizard-save")
    targets = http.get("/api/storages/export/gcs", params={"project": pid}).json()
    assert len(targets) == 1 and targets[0]["prefix"] == "labels" and targets[0]["can_delete_objects"] is True
    assert page.locator(".storage-card[data-direction='target']", has_text="Wizard annotations").count() == 1

    # The target storage receives an annotation submitted in the labeling page.
    task_ids = [t["id"] for t in http.get("/api/tasks", params={"project": pid, "page_size": 10}).json()["tasks"]]
    page.goto(f"{server.base_url}/projects/{pid}/label?task={task_ids[0]}")
    page.wait_for_selector("body[data-editor-ready='true']")
    page.locator("label", has_text="Clear").first.click()
    page.locator("button", has_text="Submit").click()
    page.wait_for_selector("body[data-saved='Submitted']")
    annotation = http.get(f"/api/tasks/{task_ids[0]}/annotations").json()[0]
    key = f"labels/{annotation['id']}"
    deadline = time.monotonic() + 30
    while key not in fake_gcs.list_keys(bucket, "labels/"):
        assert time.monotonic() < deadline, f"{key} never reached the bucket: {fake_gcs.list_keys(bucket, 'labels/')}"
        time.sleep(0.2)
    exported = json.loads(fake_gcs.read(bucket, key))
    assert exported["id"] == annotation["id"] and exported["task"]["id"] == task_ids[0], exported
    assert [r["value"]["choices"] for r in exported["result"] if r["type"] == "choices"] == [["Clear"]], exported
    page.goto(f"{server.base_url}/projects/{pid}/settings/storage")

    # Edit: the same wizard, filled; a stored key is kept when left empty.
    key = service_account_json(Path(tempfile.mkdtemp()))
    signed_bucket = bucket + "-signed"
    fake_gcs.create_bucket(signed_bucket)
    fake_gcs.upload(signed_bucket, "imgs/0.png", png(8, 8), "image/png")
    r = http.post("/api/storages/gcs", json={"project": pid, "bucket": signed_bucket, "prefix": "imgs", "use_blob_urls": True,
                                             "presign": True, "title": "Signed photos", "google_application_credentials": key})
    assert r.status_code == 201, r.text
    signed = r.json()["id"]
    task = http.post("/api/tasks", json={"project": pid, "data": {"image": f"gs://{signed_bucket}/imgs/0.png"}}).json()["id"]
    page.reload()
    card = page.locator(f".storage-card[data-storage='{signed}'][data-direction='source']")
    # Fix CORS is offered where media go by signed URL only.
    assert card.locator(".fix-cors").count() == 1
    assert page.locator(".storage-card[data-direction='source']", has_text="Wizard photos").locator(".fix-cors").count() == 0
    card.locator(".edit-storage").click()
    page.wait_for_selector("#storage-wizard[open]")
    assert page.inner_text("#wizard-title") == "Edit Source Storage"
    assert page.input_value("#w-title") == "Signed photos"
    assert page.input_value("#w-credentials") == "", "a stored key is never shown"
    assert page.is_checked("input[name=presign]")
    page.fill("#w-title", "Signed photos, renamed")
    # Checks while editing name the storage, so the stored key is used.
    with page.expect_request(lambda r: r.url.endswith("/validate")) as asked:
        page.click("#test-connection")
    assert json.loads(asked.value.post_data)["id"] == signed
    page.wait_for_selector("#connection-ok:not([hidden])")
    page.click("#wizard-next")
    assert page.input_value("#w-prefix") == "imgs"
    page.click("#wizard-next")
    page.wait_for_selector("#review-list div")
    watched.shot("19-wizard-edit-review")
    with page.expect_navigation(wait_until="load"):
        page.click("#wizard-save")
    stored = http.get(f"/api/storages/gcs/{signed}").json()
    assert stored["title"] == "Signed photos, renamed" and stored["prefix"] == "imgs" and stored["presign"] is True
    # The key is still there: media of the storage are still signed with it.
    r = http.get(f"/tasks/{task}/resolve/", params={"fileuri": base64.b64encode(f"gs://{signed_bucket}/imgs/0.png".encode()).decode()}, allow_redirects=False)
    assert r.status_code == 303 and "X-Goog-Signature=" in r.headers["location"], (r.status_code, r.text[:300])


TEXT_CONFIG = (
    '<View><Text name="text" value="$text"/>'
    '<Choices name="sentiment" toName="text"><Choice value="Positive"/><Choice value="Negative"/></Choices></View>'
)


def wait_for_card(page, title: str, direction: str = "source"):
    """The storage card titled `title` once its sync has ended."""
    card = page.locator(f".storage-card[data-direction='{direction}']", has_text=title)
    card.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.storage-card')].some(c => c.textContent.includes("
        + json.dumps(title)
        + ") && ['completed', 'completed_with_errors', 'failed'].includes(c.dataset.status))"
    )
    return card


def test_source_wizard_in_tasks_mode_previews_the_first_tasks(server, watched, http, fake_gcs):
    page = watched.page
    pid = make_project(http, "UI task files", TEXT_CONFIG)
    bucket = f"ui-task-files-{pid}"
    fake_gcs.create_bucket(bucket)
    rows = [{"text": "Great service"}, {"data": {"text": "Slow delivery"}}, "not a task", {"text": "Would buy again"}]
    fake_gcs.upload(bucket, "batches/2026-11.jsonl", "\n".join(json.dumps(r) for r in rows).encode(), "application/x-ndjson")
    fake_gcs.upload(bucket, "batches/README.txt", b"how these files are made", "text/plain")
    sign_in(watched, server.base_url, then=f"/projects/{pid}/settings/storage")
    page.click("#add-source-storage")
    page.click("#wizard-next")
    page.fill("#w-title", "Review batches")
    page.fill("#w-bucket", bucket)
    page.click("#test-connection")
    page.wait_for_selector("#connection-ok:not([hidden])")
    page.click("#wizard-next")
    page.fill("#w-prefix", "batches")
    page.select_option("#w-method", "false")
    page.click("#load-preview")
    page.wait_for_selector("#preview-tasks:not([hidden]) li")
    keys = page.eval_on_selector_all("#preview-list .preview-key", "els => els.map(e => e.textContent)")
    assert keys == ["batches/2026-11.jsonl", "batches/README.txt"], keys
    # The first tasks, as a sync will make them: data, a refused row with
    # its line, and the file a sync cannot read.
    items = page.eval_on_selector_all("#preview-tasks li", "els => els.map(e => e.textContent)")
    assert len(items) == 5, items
    assert "line 1" in items[0] and '{"text":"Great service"}' in items[0], items
    assert "line 2" in items[1] and '{"text":"Slow delivery"}' in items[1], items
    assert "line 3" in items[2] and page.locator("#preview-tasks li code.error").count() == 2, items
    assert "Would buy again" in items[3], items
    assert "batches/README.txt" in items[4] and "not a JSON, JSONL or Parquet file" in items[4], items
    watched.shot("22-wizard-tasks-preview")
    # A filter leaves the text file out, as the preview shows at once.
    page.fill("#w-filter", r".*\.jsonl$")
    page.click("#load-preview")
    page.wait_for_function("() => document.querySelectorAll('#preview-list .preview-key').length === 1")
    page.wait_for_function("() => document.querySelectorAll('#preview-tasks li').length === 4")
    page.click("#wizard-next")
    page.wait_for_selector("#review-list div")  # after the import settings' check
    review = page.inner_text("#review-list")
    assert "Tasks: JSON, JSONL or Parquet task files" in review and r".*\.jsonl$" in review, review
    # Save without sync: the storage waits, initialized, until Sync Storage.
    with page.expect_navigation(wait_until="load"):
        page.click("#wizard-save")
    card = page.locator(".storage-card[data-direction='source']", has_text="Review batches")
    assert card.get_attribute("data-status") == "initialized"
    assert card.locator(".status").inner_text() == "Initialized"
    assert http.get(f"/api/projects/{pid}").json()["task_number"] == 0
    # Every state the card goes through, with whether its bar showed.
    page.evaluate(
        """() => {
            const card = document.querySelector(".storage-card[data-direction='source']");
            window.seenStates = [];
            new MutationObserver(() => window.seenStates.push(
                card.dataset.status + (card.querySelector(".sync-progress").hidden ? "" : "+bar")
            )).observe(card, { attributes: true, attributeFilter: ["data-status"] });
        }"""
    )
    card.locator(".sync-button").click()
    card = wait_for_card(page, "Review batches")
    states = page.evaluate("() => window.seenStates")
    # The POST's answer shows the sync queued (or, if a worker took it
    # before the answer was read, running), with the bar; then it ends.
    assert states[0] in ("queued+bar", "in_progress+bar") and states[-1] == "completed_with_errors", states
    assert card.get_attribute("data-status") == "completed_with_errors", "the bad row is reported"
    assert card.locator(".sync-count").inner_text() == "3"
    card.locator(".sync-errors summary").click()
    assert "2026-11.jsonl:line 3" in card.locator(".traceback").inner_text()
    # The tasks are in the data manager.
    watched.follow("a[href$='/data']")
    texts = page.eval_on_selector_all("tbody tr[data-task]", "els => els.map(e => e.textContent)")
    assert len(texts) == 3 and any("Slow delivery" in t for t in texts), texts


def test_source_wizard_with_workload_identity_federation(wif_server, fakes, watched, fake_gcs):
    """The WIF type, end to end in the browser, against a server that reaches
    GCS only through the WIF fakes (see conftest's `wif_server`)."""
    from conftest import EMAIL, NUMBER, POOL, PROVIDER, WIF_ADMIN_PASSWORD, WIF_ADMIN_USERNAME, ApiSession, report

    base_url, token, _log = wif_server
    http = ApiSession(base_url, token)
    page = watched.page
    pid = make_project(http, "UI WIF")
    bucket = f"ui-wif-{pid}-{int(time.time())}"
    fake_gcs.create_bucket(bucket)
    for i in range(3):
        fake_gcs.upload(bucket, f"imgs/{i}.png", png(40, 30), "image/png")
    sign_in(watched, base_url, WIF_ADMIN_USERNAME, WIF_ADMIN_PASSWORD, then=f"/projects/{pid}/settings/storage")
    page.click("#add-source-storage")
    page.check("input[name=provider][value=gcswif]")
    page.click("#wizard-next")
    assert page.inner_text("#connection-heading") == "Google Cloud Storage (WIF Auth)"
    assert page.is_hidden("#w-credentials") and page.is_visible("#w-pool")
    page.fill("#w-title", "Photos through WIF")
    page.fill("#w-bucket", bucket)
    page.fill("#w-pool", POOL)
    page.fill("#w-provider", PROVIDER)
    page.fill("#w-email", EMAIL)
    page.fill("#w-number", "999999999999")
    page.fill("#w-project-id", "dummy-project-id")
    # STS refuses a pool in another project: named at the provider's field.
    page.click("#test-connection")
    said = page.wait_for_selector("[data-error-for='google_wif_provider_id']:not([hidden])").inner_text()
    assert "Google STS refused" in said and "google_project_number" in said, said
    watched.expect_refusal("/validate", 400)
    watched.shot("23-wizard-wif-refused")
    page.fill("#w-number", NUMBER)
    # IAM refuses signBlob (the account lacks Token Creator on itself):
    # Test Connection names the missing permission, its role and the
    # command that grants it, as a list (issue 17, item 1).
    requests.post(fakes["report"] + "/sign-blob", json={"refuse": True}, timeout=10).raise_for_status()
    page.click("#test-connection")
    listed = page.wait_for_selector("#missing-permissions:not([hidden])").inner_text()
    assert "iam.serviceAccounts.signBlob" in listed and "roles/iam.serviceAccountTokenCreator" in listed, listed
    assert f"gcloud iam service-accounts add-iam-policy-binding {EMAIL}" in listed, listed
    said = page.inner_text("[data-error-for='presign']")
    assert "lacks iam.serviceAccounts.signBlob" in said, said
    watched.expect_refusal("/validate", 400)
    page.locator("#missing-permissions").scroll_into_view_if_needed()
    watched.shot("27-wizard-missing-permission")
    requests.post(fakes["report"] + "/sign-blob", json={"refuse": False}, timeout=10).raise_for_status()
    page.click("#test-connection")
    page.wait_for_selector("#connection-ok:not([hidden])")
    assert page.is_hidden("#missing-permissions")
    # Presign is on: Test Connection also reads the bucket's CORS policy
    # (empty here) and says what that means for browsers; Fix CORS adds
    # the rule for this page's origin (issue 17, item 2).
    advice = page.wait_for_selector("#cors-advice:not([hidden])").inner_text()
    assert f"gs://{bucket} has no CORS policy" in advice and "Fix CORS" in advice, advice
    with page.expect_response(lambda r: r.url.endswith("/api/storages/gcswif/cors")) as fixed:
        page.click("#wizard-fix-cors")
    assert fixed.value.status == 200 and fixed.value.json()["changed"] is True, fixed.value.text()
    page.wait_for_function("() => document.getElementById('cors-advice').textContent.startsWith('A CORS rule was added')")
    assert "CORS policy lets pages on" in page.inner_text("#cors-advice")
    assert page.is_hidden("#wizard-fix-cors")
    watched.shot("28-wizard-cors-fixed")
    page.click("#wizard-next")
    page.fill("#w-prefix", "imgs")
    page.click("#load-preview")
    page.wait_for_selector("#preview-list .preview-key")
    keys = page.eval_on_selector_all("#preview-list .preview-key", "els => els.map(e => e.textContent)")
    assert keys == ["imgs/0.png", "imgs/1.png", "imgs/2.png"], keys
    page.click("#wizard-next")
    page.wait_for_selector("#review-list div")  # after the import settings' check
    review = page.inner_text("#review-list")
    assert "Google Cloud Storage (WIF Auth)" in review and f"gs://{bucket}/imgs" in review and "Pre-signed" in review
    watched.shot("24-wizard-wif-review")
    with page.expect_navigation(wait_until="load"):
        page.click("#wizard-save-sync")
    card = wait_for_card(page, "Photos through WIF")
    assert card.get_attribute("data-status") == "completed"
    assert card.locator(".sync-count").inner_text() == "3"
    stored = http.get("/api/storages/gcswif", params={"project": pid}).json()
    assert len(stored) == 1 and stored[0]["google_wif_pool_id"] == POOL and stored[0]["presign"] is True
    # The tasks are in the data manager, their images signed through IAM.
    watched.follow("a[href$='/data']")
    assert page.locator("tbody tr[data-task]").count() == 3
    page.wait_for_function(
        "() => { const i = [...document.querySelectorAll('tbody img')]; return i.length === 3 && i.every(x => x.complete && x.naturalWidth === 40); }"
    )
    redirects = [r for r in watched.responses if "/resolve/" in r.url and r.status == 303]
    assert redirects and all("X-Goog-Signature=" in r.headers["location"] for r in redirects)
    seen = report(fakes)
    assert seen["violations"] == [] and seen["unauthorized"] == [], seen
    assert "signBlob" in seen["seen"], seen


def test_media_that_fail_to_load_lead_to_the_storage_check(server, watched, http, fake_gcs, tmp_path):
    """A task whose image does not load (here the object is not in the
    bucket, so its signed URL answers 404) shows a notice on the labeling
    page. For a manager, the notice links to the storage check: the project's
    storages that use signed URLs run Test connection again, with the CORS
    reading (issue 17, item 2)."""
    page = watched.page
    pid = make_project(http, "Broken media")
    bucket = f"ui-broken-{pid}-{int(time.time())}"
    fake_gcs.create_bucket(bucket)
    fake_gcs.upload(bucket, "img/0.png", png(40, 30), "image/png")
    r = http.post(
        "/api/storages/gcs",
        json={"project": pid, "bucket": bucket, "prefix": "img/", "use_blob_urls": True, "presign": True,
              "title": "Signed photos", "google_application_credentials": service_account_json(tmp_path)},
    )
    assert r.status_code == 201, r.text
    r = http.post(f"/api/projects/{pid}/import", json=[{"image": f"gs://{bucket}/img/missing.png"}])
    assert r.status_code == 201, r.text
    sign_in(watched, server.base_url, then=f"/projects/{pid}/label")
    notice = page.wait_for_selector("#media-error:not([hidden])").inner_text()
    assert "did not load" in notice and "Check this project's storages" in notice, notice
    watched.shot("25-label-media-failed")
    # The browser and the editor report the failed load: asked for.
    expected = lambda e: "missing.png" in e[0] + e[1] or "issue loading URL" in e[0]  # noqa: E731
    assert any(expected(e) for e in watched.errors), watched.errors
    watched.errors = [e for e in watched.errors if not expected(e)]
    watched.follow("#media-check-link")
    assert page.url.endswith(f"/projects/{pid}/settings/storage?check=media")
    card = page.wait_for_selector(".storage-card[data-media-checked]")
    assert card.get_attribute("data-media-checked") == "problem"
    said = card.query_selector(".cors-result").inner_text()
    # The emulator keeps no CORS policy: that is what the check finds.
    assert f"gs://{bucket} has no CORS policy" in said, said
    assert page.inner_text("#media-check").startswith("Media did not load on the labeling page")
    watched.shot("26-storage-media-check")
    watched.errors = [e for e in watched.errors if not expected(e)]


def test_an_annotator_is_told_to_ask_a_manager(server, watched, http, fake_gcs):
    """Annotators get the notice without the link (the settings page is a
    manager's)."""
    page = watched.page
    pid = make_project(http, "Broken media, annotator")
    r = http.post(f"/api/projects/{pid}/import", json=[{"image": "https://127.0.0.1:9/nothing-here.png"}])
    assert r.status_code == 201, r.text
    email = f"ann-broken-{pid}@example.com"
    user = http.post("/api/users", json={"email": email, "username": f"ann-broken-{pid}", "role": "annotator", "password": "annotator-pass-1"})
    assert user.status_code == 201, user.text
    assert http.post(f"/api/projects/{pid}/members", json={"user": user.json()["id"]}).status_code == 201
    sign_in(watched, server.base_url, email, "annotator-pass-1", then=f"/projects/{pid}/label")
    notice = page.wait_for_selector("#media-error:not([hidden])").inner_text()
    assert "Tell a project manager" in notice and page.query_selector("#media-check-link") is None, notice
    watched.errors = [
        e for e in watched.errors if "nothing-here.png" not in e[1] + e[0] and "issue loading URL" not in e[0]
    ]
