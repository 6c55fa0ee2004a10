-- Task-list pages by seek after deletions (issue 18, item 3). Inner ids are
-- handed out 1, 2, 3… per project; a deleted task leaves its inner id
-- unused. This table holds those unused ids as maximal ranges
-- [first_inner_id, last_inner_id], kept by the code that deletes tasks
-- (adjacent ranges merged), so position k of the task list is found from
-- k and the few ranges before it, then read by one range scan on
-- (project_id, inner_id) instead of an OFFSET.
CREATE TABLE task_gaps (
    project_id     BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    first_inner_id BIGINT NOT NULL,
    last_inner_id  BIGINT NOT NULL,
    PRIMARY KEY (project_id, first_inner_id)
);
CREATE INDEX task_gaps_project_last ON task_gaps (project_id, last_inner_id);

-- The gaps of tasks deleted before this version: between consecutive inner
-- ids (LAG's default 0 also finds the gap before a project's first task)…
INSERT INTO task_gaps (project_id, first_inner_id, last_inner_id)
SELECT project_id, prev + 1, inner_id - 1 FROM (
    SELECT project_id, inner_id,
           LAG(inner_id, 1, 0) OVER (PARTITION BY project_id ORDER BY inner_id) AS prev
    FROM tasks
) t
WHERE inner_id > prev + 1;

-- …and after its last task, up to the last inner id handed out.
INSERT INTO task_gaps (project_id, first_inner_id, last_inner_id)
SELECT p.id, COALESCE(m.top, 0) + 1, p.max_inner_id
FROM projects p
LEFT JOIN (SELECT project_id, MAX(inner_id) AS top FROM tasks GROUP BY project_id) m ON m.project_id = p.id
WHERE p.max_inner_id > COALESCE(m.top, 0);
