-- Task-list pages by seek (issue 18, item 3): a project's tasks by inner_id,
-- which increases with id inside a project. While a project has no gap in
-- its inner ids (no task ever deleted), page P is the inner-id range
-- ((P-1)*size, P*size]: one range scan at any depth instead of an OFFSET.
CREATE INDEX tasks_project_inner_id ON tasks (project_id, inner_id);
