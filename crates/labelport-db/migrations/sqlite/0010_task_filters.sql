-- The data manager's "labeled" / "unlabeled" filters page through a
-- project's tasks by id; this index keeps each page a short range scan at
-- a million tasks whatever the share of labeled ones.
CREATE INDEX tasks_project_labeled ON tasks (project_id, is_labeled, id);
