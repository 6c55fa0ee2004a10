-- Roles and project membership. Every user before roles existed could do
-- everything, so existing users become admins; new users default to the
-- weakest role. A project's creator is its first member.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'annotator';
UPDATE users SET role = 'admin';

CREATE TABLE project_members (
    project_id  BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_user ON project_members (user_id);
INSERT INTO project_members (project_id, user_id, created_at)
    SELECT id, created_by, created_at FROM projects WHERE created_by IS NOT NULL;
