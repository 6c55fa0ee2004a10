"""End-to-end tests: the official `label-studio-sdk==2.1.2` against a real
`labelport serve` (see conftest.py), plus raw `requests` for error shapes.

Label Studio conventions checked here (spec §1.0-1.1, reference/sdk-requests.md):
  * `Authorization: Token <key>`; both `/path` and `/path/` accepted;
  * error bodies `{"id", "status_code", "version", "detail", "exc_info": null}`
    plus a `validation_errors` dict on validation 400s;
  * `GET /api/tasks/` answers `{"tasks": [...], "total": N, ...}` and the SDK
    pager asks for page+1 until a page is empty (or 404);
  * `GET /api/projects/{id}/export` exports annotated tasks only unless
    `download_all_tasks=true`.
"""

from __future__ import annotations

import json
import uuid

import pytest
from label_studio_sdk.core.api_error import ApiError

IMAGE_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="Cat"/></RectangleLabels></View>'
)
UNDEFINED_CONFIG = (
    '<View><Image name="img" value="$image_url"/>'
    '<Choices name="c" toName="img"><Choice value="a"/></Choices></View>'
)
N_TASKS = 1000


# --------------------------------------------------------------------------- helpers


def rect_result(x: float = 10.0, label: str = "Cat") -> dict:
    """A rectanglelabels result item as the SDK/editor sends it."""
    return {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": {
            "x": x,
            "y": 20.0,
            "width": 30.0,
            "height": 40.0,
            "rotation": 0,
            "rectanglelabels": [label],
        },
        "original_width": 640,
        "original_height": 480,
    }


def assert_result_matches(actual, expected) -> None:
    """`actual` holds the same result items as `expected`; the server may add
    keys to an item (e.g. an `id`) but must keep every key it was given."""
    assert isinstance(actual, list), f"result is not a list: {actual!r}"
    assert len(actual) == len(expected), f"result length {len(actual)} != {len(expected)}: {actual!r}"
    for got, want in zip(actual, expected):
        assert isinstance(got, dict), f"result item is not an object: {got!r}"
        for key, value in want.items():
            assert got.get(key) == value, f"result item key {key!r}: {got.get(key)!r} != {value!r}"


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
    assert body["id"], body
    assert isinstance(body["version"], str), body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert body["exc_info"] is None, body
    if "validation_errors" in body:
        assert isinstance(body["validation_errors"], dict), body
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


def export_json(client, project_id: int, **kwargs):
    chunks = client.projects.exports.download_sync(project_id, export_type="JSON", **kwargs)
    raw = b"".join(chunks)
    try:
        return json.loads(raw)
    except ValueError:
        pytest.fail(f"export is not JSON: {raw[:300]!r}")


def list_all_tasks(client, project_id: int, page_size: int = 100, expected_max: int = N_TASKS):
    """Iterate the SDK pager, failing instead of looping forever when the
    server keeps returning tasks past the last page."""
    out = []
    for task in client.tasks.list(project=project_id, page_size=page_size):
        out.append(task)
        seen = len(out)
        assert seen <= expected_max + page_size, (
            "SDK pager did not stop: the server keeps returning tasks for pages past the end "
            "(a page past the end must have no tasks, or be a 404)"
        )
    return out


@pytest.fixture
def created_projects(http):
    """Project ids to delete at the end of the test (404 ignored)."""
    ids: list[int] = []
    yield ids
    for pid in ids:
        http.delete(f"/api/projects/{pid}/")


@pytest.fixture
def make_project(client, created_projects):
    def make(title: str | None = None, label_config: str = IMAGE_CONFIG):
        title = title or f"e2e {uuid.uuid4().hex[:8]}"
        raw = client.projects.with_raw_response.create(title=title, label_config=label_config)
        assert raw.status_code == 201, raw.status_code
        project = raw.data
        assert isinstance(project.id, int), project
        created_projects.append(project.id)
        assert project.title == title
        assert project.label_config == label_config
        return project

    return make


# --------------------------------------------------------------------------- 1. full SDK flow


def test_full_sdk_flow(client, http, make_project):
    project = make_project(title=f"e2e full flow {uuid.uuid4().hex[:8]}")
    pid = project.id

    # ---- import 1,000 tasks in one call: bare data dicts and wrapped tasks with a prediction
    expected_data = {}
    payload = []
    with_prediction = set()
    for i in range(N_TASKS):
        data = {"image": f"https://example.com/img/{i}.jpg", "n": i}
        expected_data[i] = data
        if i % 10 == 3:
            with_prediction.add(i)
            payload.append(
                {
                    "data": data,
                    "predictions": [{"result": [rect_result(x=float(i % 50))], "score": 0.5, "model_version": "m1"}],
                }
            )
        else:
            payload.append(data)
    raw = client.projects.with_raw_response.import_tasks(pid, request=payload)
    assert raw.status_code == 201, raw.status_code
    assert raw.data.task_count == N_TASKS, raw.data

    got = client.projects.get(pid)
    assert got.id == pid
    assert got.task_number == N_TASKS
    assert got.total_predictions_number == len(with_prediction)
    assert got.total_annotations_number == 0

    # ---- raw shape of one page (fields the SDK's PaginatedRoleBasedTaskList declares)
    r = http.get("/api/tasks/", params={"project": pid, "page": 1, "page_size": 100, "fields": "all"})
    assert r.status_code == 200, r.text[:500]
    page = r.json()
    assert isinstance(page, dict) and isinstance(page.get("tasks"), list), str(page)[:300]
    assert len(page["tasks"]) == 100
    assert page.get("total") == N_TASKS, {k: v for k, v in page.items() if k != "tasks"}

    # ---- page through everything with the SDK pager
    tasks = list_all_tasks(client, pid)
    ids = [t.id for t in tasks]
    assert len(ids) == N_TASKS, f"pager yielded {len(ids)} tasks"
    assert len(set(ids)) == N_TASKS, "pager yielded duplicate task ids"
    id_by_n = {}
    for t in tasks:
        n = t.data["n"]
        assert t.data == expected_data[n], (t.id, t.data)
        id_by_n[n] = t.id
    assert sorted(id_by_n) == list(range(N_TASKS))

    # ---- one task, and the imported prediction of another
    task_id = id_by_n[7]
    task = client.tasks.get(task_id)
    assert task.id == task_id
    assert task.data == expected_data[7]
    assert task.project == pid

    pred_task_id = id_by_n[3]
    preds = client.predictions.list(task=pred_task_id)
    assert len(preds) == 1, preds
    assert preds[0].model_version == "m1"
    assert preds[0].score == pytest.approx(0.5)
    assert_result_matches(preds[0].result, [rect_result(x=3.0)])
    assert client.predictions.list(task=task_id) == []

    # ---- annotation: create, list, update, get
    result = [rect_result(x=12.5)]
    raw = client.annotations.with_raw_response.create(
        id=task_id, result=result, ground_truth=False, lead_time=1.0, was_cancelled=False
    )
    assert raw.status_code == 201, raw.status_code
    ann = raw.data
    ann_id = ann.id
    assert isinstance(ann_id, int), ann
    assert ann.task == task_id
    assert ann.was_cancelled is False
    assert ann.ground_truth is False
    assert ann.lead_time == pytest.approx(1.0)
    assert_result_matches(ann.result, result)

    listed = client.annotations.list(id=task_id)
    assert [a.id for a in listed] == [ann_id]
    assert_result_matches(listed[0].result, result)
    assert client.annotations.list(id=pred_task_id) == []

    changed = [rect_result(x=55.5), rect_result(x=70.0)]
    updated = client.annotations.update(id=ann_id, result=changed)
    assert updated.id == ann_id
    assert_result_matches(updated.result, changed)
    fetched = client.annotations.get(ann_id)
    assert fetched.id == ann_id
    assert fetched.task == task_id
    assert_result_matches(fetched.result, changed)
    assert [a.id for a in client.annotations.list(id=task_id)] == [ann_id], "update must not add an annotation"

    task = client.tasks.get(task_id)
    assert task.total_annotations == 1
    assert task.is_labeled is True

    got = client.projects.get(pid)
    assert got.task_number == N_TASKS
    assert got.total_annotations_number == 1
    assert got.num_tasks_with_annotations == 1
    assert got.finished_task_number == 1

    # ---- JSON export, all tasks
    exported = export_json(client, pid, download_all_tasks=True)
    assert isinstance(exported, list), str(exported)[:300]
    assert len(exported) == N_TASKS
    by_id = {t["id"]: t for t in exported}
    assert set(by_id) == set(ids)
    for t in exported:
        assert t["data"] == expected_data[t["data"]["n"]], t
    annotated = by_id[task_id]
    assert [a["id"] for a in annotated["annotations"]] == [ann_id]
    assert_result_matches(annotated["annotations"][0]["result"], changed)
    assert all(not t.get("annotations") for t in exported if t["id"] != task_id)
    exported_preds = by_id[pred_task_id].get("predictions")
    assert isinstance(exported_preds, list) and len(exported_preds) == 1, by_id[pred_task_id]
    assert_result_matches(exported_preds[0]["result"], [rect_result(x=3.0)])

    # ---- JSON export without download_all_tasks: annotated tasks only (Label Studio behaviour)
    exported = export_json(client, pid)
    assert [t["id"] for t in exported] == [task_id]
    assert [a["id"] for a in exported[0]["annotations"]] == [ann_id]

    # ---- delete the annotation
    raw = client.annotations.with_raw_response.delete(ann_id)
    assert raw.status_code == 204, raw.status_code
    expect_api_error(404, client.annotations.get, ann_id)
    assert client.annotations.list(id=task_id) == []
    got = client.projects.get(pid)
    assert got.total_annotations_number == 0
    assert got.num_tasks_with_annotations == 0
    assert export_json(client, pid) == []

    # ---- delete the project: it and its tasks are gone
    raw = client.projects.with_raw_response.delete(pid)
    assert raw.status_code == 204, raw.status_code
    expect_api_error(404, client.projects.get, pid)
    expect_api_error(404, client.tasks.get, task_id)


# --------------------------------------------------------------------------- 2. project list


def test_projects_list_pages(client, http, make_project):
    tag = uuid.uuid4().hex[:8]
    created = {make_project(title=f"e2e list {tag} #{k}").id: f"e2e list {tag} #{k}" for k in range(3)}

    # raw page shape (the SDK reads `results`; Label Studio also sends count/next/previous)
    r = http.get("/api/projects/", params={"page": 1, "page_size": 2})
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("results"), list), str(body)[:300]
    assert len(body["results"]) == 2
    assert body.get("count", 0) >= 3, {k: v for k, v in body.items() if k != "results"}

    # SDK pager with a page size that forces several pages
    seen = []
    for p in client.projects.list(page_size=2):
        seen.append(p)
        assert len(seen) < 10_000, "projects pager does not stop"
    ids = [p.id for p in seen]
    assert len(ids) == len(set(ids)), "projects pager yielded duplicates"
    titles = {p.id: p.title for p in seen}
    for pid, title in created.items():
        assert pid in titles, f"project {pid} missing from projects.list()"
        assert titles[pid] == title


# --------------------------------------------------------------------------- 3. tasks and predictions CRUD


def test_tasks_and_predictions_crud(client, make_project):
    pid = make_project().id

    data = {"image": "https://example.com/a.jpg", "n": 1}
    raw = client.tasks.with_raw_response.create(project=pid, data=data)
    assert raw.status_code == 201, raw.status_code
    task = raw.data
    tid = task.id
    assert isinstance(tid, int), task
    assert task.data == data
    assert task.project == pid
    assert client.projects.get(pid).task_number == 1

    new_data = {"image": "https://example.com/b.jpg", "n": 2, "extra": {"nested": [1, 2, 3]}}
    updated = client.tasks.update(tid, data=new_data)
    assert updated.id == tid
    assert updated.data == new_data
    assert client.tasks.get(tid).data == new_data

    # predictions
    result = [rect_result(x=5.0)]
    pred = client.predictions.create(task=tid, result=result, score=0.9, model_version="v2")
    assert isinstance(pred.id, int), pred
    assert pred.task == tid
    assert pred.score == pytest.approx(0.9)
    assert pred.model_version == "v2"
    assert_result_matches(pred.result, result)

    assert [p.id for p in client.predictions.list(task=tid)] == [pred.id]
    assert [p.id for p in client.predictions.list(project=pid)] == [pred.id]
    got = client.predictions.get(pred.id)
    assert got.id == pred.id and got.task == tid
    assert_result_matches(got.result, result)
    assert client.projects.get(pid).total_predictions_number == 1

    raw = client.predictions.with_raw_response.delete(pred.id)
    assert raw.status_code == 204, raw.status_code
    assert client.predictions.list(task=tid) == []
    expect_api_error(404, client.predictions.get, pred.id)
    assert client.projects.get(pid).total_predictions_number == 0

    # delete the task
    raw = client.tasks.with_raw_response.delete(tid)
    assert raw.status_code == 204, raw.status_code
    expect_api_error(404, client.tasks.get, tid)
    assert client.projects.get(pid).task_number == 0
    assert list_all_tasks(client, pid) == []


# --------------------------------------------------------------------------- 4. $undefined$


def test_undefined_key_maps_to_first_data_key(client, http, make_project):
    pid = make_project(label_config=UNDEFINED_CONFIG).id
    resp = client.projects.import_tasks(pid, request=[{"$undefined$": "gs://b/k.jpg"}])
    assert resp.task_count == 1, resp

    tasks = list_all_tasks(client, pid)
    assert len(tasks) == 1
    assert tasks[0].data == {"image_url": "gs://b/k.jpg"}

    task = client.tasks.get(tasks[0].id)
    assert task.data == {"image_url": "gs://b/k.jpg"}

    r = http.get(f"/api/tasks/{tasks[0].id}/")
    assert r.status_code == 200, r.text[:500]
    assert r.json()["data"] == {"image_url": "gs://b/k.jpg"}


# --------------------------------------------------------------------------- 5. errors and conventions (raw HTTP)


def test_auth_required(anon_http, server):
    r = anon_http.get("/api/projects/")
    assert_ls_error(r, 401)

    r = anon_http.get("/api/projects/", headers={"Authorization": "Token " + "0" * 40})
    assert_ls_error(r, 401)

    r = anon_http.get("/api/projects/", headers={"Authorization": "Token " + server.token[:-1] + "x"})
    assert_ls_error(r, 401)

    # a write without credentials is refused too
    r = anon_http.post("/api/projects/", json={"title": "nope", "label_config": IMAGE_CONFIG})
    assert_ls_error(r, 401)

    # the SDK sees the 401 as an ApiError
    from label_studio_sdk import LabelStudio

    bad = LabelStudio(base_url=server.base_url, api_key="f" * 40, max_retries=0)
    expect_api_error(401, lambda: list(bad.projects.list()))


def _project_ids(client) -> set:
    ids = set()
    for p in client.projects.list(page_size=100):
        ids.add(p.id)
        assert len(ids) < 100_000
    return ids


def test_invalid_label_config_is_400(client, http, created_projects):
    before = _project_ids(client)

    r = http.post("/api/projects/", json={"title": "bad xml", "label_config": '<View><Image name="image" value="$image"'})
    if r.status_code < 300:
        created_projects.append(r.json().get("id"))
    assert_validation_error(r, "label_config")

    r = http.post("/api/projects/", json={"title": "no tags", "label_config": "<View></View>"})
    if r.status_code < 300:
        created_projects.append(r.json().get("id"))
    assert_validation_error(r, "label_config")

    assert _project_ids(client) == before, "a rejected project create must not create a project"

    # the same through the SDK: an ApiError with status 400
    expect_api_error(400, client.projects.create, title="bad xml sdk", label_config="<View><Image")


def test_import_malformed_json_is_400_and_changes_nothing(client, http, make_project):
    pid = make_project().id
    assert client.projects.import_tasks(pid, request=[{"image": "https://example.com/x.jpg"}]).task_count == 1

    r = http.post(
        f"/api/projects/{pid}/import",
        data=b'[{"a": 1},',
        headers={"Content-Type": "application/json"},
    )
    assert_ls_error(r, 400)
    assert client.projects.get(pid).task_number == 1

    r = http.post(f"/api/projects/{pid}/import", data=b"not json at all", headers={"Content-Type": "application/json"})
    assert_ls_error(r, 400)
    assert client.projects.get(pid).task_number == 1


def test_import_task_without_config_data_key_is_400(client, http, make_project):
    """Label Studio checks every imported task holds the label config's data keys
    (`$image` here); a batch with one bad task imports nothing."""
    pid = make_project().id
    r = http.post(
        f"/api/projects/{pid}/import",
        json=[{"image": "https://example.com/ok.jpg"}, {"a": 1}],
    )
    assert_ls_error(r, 400)
    assert client.projects.get(pid).task_number == 0


def test_annotation_with_bad_result_is_400(client, http, make_project):
    pid = make_project().id
    tid = client.tasks.create(project=pid, data={"image": "https://example.com/a.jpg"}).id

    for bad in ("nope", [1, 2], {"from_name": "label"}, [["x"]]):
        r = http.post(
            f"/api/tasks/{tid}/annotations/",
            json={"result": bad, "ground_truth": False, "lead_time": 1.0, "was_cancelled": False},
        )
        assert_validation_error(r, "result")

    assert client.annotations.list(id=tid) == []
    assert client.projects.get(pid).total_annotations_number == 0


def test_not_found_is_json(client, http):
    body = assert_ls_error(http.get("/api/projects/999999"), 404)
    assert "validation_errors" not in body
    assert_ls_error(http.get("/api/projects/999999/"), 404)
    assert_ls_error(http.get("/api/tasks/999999/"), 404)
    assert_ls_error(http.get("/api/annotations/999999/"), 404)
    assert_ls_error(http.get("/api/nope"), 404)
    assert_ls_error(http.get("/api/nope/"), 404)
    expect_api_error(404, client.projects.get, 999999)


def test_trailing_slash_both_forms(http, created_projects):
    # create without the slash
    r = http.post("/api/projects", json={"title": "slashless", "label_config": IMAGE_CONFIG})
    assert r.status_code == 201, r.text[:500]
    pid = r.json()["id"]
    created_projects.append(pid)

    for path in (f"/api/projects/{pid}", f"/api/projects/{pid}/"):
        r = http.get(path)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:300]}"
        assert r.json()["id"] == pid

    r = http.patch(f"/api/projects/{pid}", json={"title": "renamed"})
    assert r.status_code == 200, r.text[:500]
    assert r.json()["title"] == "renamed"
    r = http.patch(f"/api/projects/{pid}/", json={"description": "d"})
    assert r.status_code == 200, r.text[:500]
    assert r.json()["title"] == "renamed" and r.json()["description"] == "d"

    for path in ("/api/projects", "/api/projects/"):
        r = http.get(path)
        assert r.status_code == 200, f"GET {path}: {r.status_code}"

    # import is sent by the SDK without the slash; accept it with one too
    for path in (f"/api/projects/{pid}/import", f"/api/projects/{pid}/import/"):
        r = http.post(path, json=[{"image": "https://example.com/s.jpg"}])
        assert r.status_code == 201, f"POST {path}: {r.status_code} {r.text[:300]}"
    for path in ("/api/tasks", "/api/tasks/"):
        r = http.get(path, params={"project": pid})
        assert r.status_code == 200, f"GET {path}: {r.status_code}"
        assert len(r.json()["tasks"]) == 2


def test_health_without_auth(anon_http):
    r = anon_http.get("/health")
    assert r.status_code == 200, r.text[:300]


def test_openapi_document(http):
    r = http.get("/api/openapi.json")
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    assert isinstance(doc, dict)
    assert "openapi" in doc, list(doc)
    assert isinstance(doc.get("paths"), dict), list(doc)
    # Paths are documented without the trailing slash; both forms are served.
    assert "post" in doc["paths"]["/api/projects"], sorted(doc["paths"])[:50]
    assert "/api/tasks/{id}/annotations" in doc["paths"], sorted(doc["paths"])[:50]
