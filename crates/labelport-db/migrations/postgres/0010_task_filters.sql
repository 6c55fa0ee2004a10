-- no-transaction
-- The data manager's "labeled" / "unlabeled" filters page through a
-- project's tasks by id; this index keeps each page a short range scan at
-- a million tasks whatever the share of labeled ones. Built CONCURRENTLY
-- (outside a transaction, hence the first line) so an upgrade does not
-- block writes to a large tasks table while it builds. (A build cut short
-- leaves an INVALID index that IF NOT EXISTS would keep: drop it with
-- DROP INDEX CONCURRENTLY tasks_project_labeled and start again.)
CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_project_labeled ON tasks (project_id, is_labeled, id);
