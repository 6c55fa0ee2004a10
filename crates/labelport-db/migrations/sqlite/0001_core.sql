-- Core labeling schema (SQLite). Times are RFC 3339 UTC text, JSON is text.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL DEFAULT '',
    first_name    TEXT NOT NULL DEFAULT '',
    last_name     TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL,
    token_sha256  TEXT NOT NULL UNIQUE,
    is_superuser  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TEXT NOT NULL
);

CREATE TABLE projects (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    title               TEXT NOT NULL DEFAULT '',
    description         TEXT NOT NULL DEFAULT '',
    label_config        TEXT NOT NULL,
    maximum_annotations BIGINT NOT NULL DEFAULT 1,
    settings            TEXT NOT NULL DEFAULT '{}',
    -- Counters kept in step by every task/annotation/prediction write, so
    -- a task page never aggregates over the whole project.
    task_number                BIGINT NOT NULL DEFAULT 0,
    finished_task_number       BIGINT NOT NULL DEFAULT 0,
    total_annotations_number   BIGINT NOT NULL DEFAULT 0,
    skipped_annotations_number BIGINT NOT NULL DEFAULT 0,
    total_predictions_number   BIGINT NOT NULL DEFAULT 0,
    num_tasks_with_annotations BIGINT NOT NULL DEFAULT 0,
    -- The last inner id handed out (tasks are numbered 1, 2, … per project).
    max_inner_id               BIGINT NOT NULL DEFAULT 0,
    created_by          BIGINT REFERENCES users(id) ON DELETE SET NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

CREATE TABLE tasks (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id            BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    data                  TEXT NOT NULL,
    meta                  TEXT NOT NULL DEFAULT '{}',
    inner_id              BIGINT NOT NULL,
    overlap               BIGINT NOT NULL DEFAULT 1,
    is_labeled            BOOLEAN NOT NULL DEFAULT FALSE,
    allow_skip            BOOLEAN NOT NULL DEFAULT TRUE,
    total_annotations     BIGINT NOT NULL DEFAULT 0,
    cancelled_annotations BIGINT NOT NULL DEFAULT 0,
    total_predictions     BIGINT NOT NULL DEFAULT 0,
    updated_by            BIGINT,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL
);
CREATE INDEX tasks_project_id ON tasks (project_id, id);

CREATE TABLE annotations (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id       BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    project_id    BIGINT NOT NULL,
    result        TEXT NOT NULL,
    completed_by  BIGINT,
    updated_by    BIGINT,
    was_cancelled BOOLEAN NOT NULL DEFAULT FALSE,
    ground_truth  BOOLEAN NOT NULL DEFAULT FALSE,
    lead_time     DOUBLE PRECISION,
    last_action   TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX annotations_task_id ON annotations (task_id);
CREATE INDEX annotations_project_id ON annotations (project_id);

CREATE TABLE predictions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id       BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    project_id    BIGINT NOT NULL,
    result        TEXT NOT NULL,
    score         DOUBLE PRECISION,
    model_version TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX predictions_task_id ON predictions (task_id);
CREATE INDEX predictions_project_id ON predictions (project_id);
