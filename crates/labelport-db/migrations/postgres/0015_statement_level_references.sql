-- Bulk imports at the speed of the indexes (issue 18, item 4).
--
-- PostgreSQL checks a FOREIGN KEY with a row-level trigger: for every row
-- inserted it runs `SELECT 1 FROM parent WHERE id = $1 FOR KEY SHARE`.
-- A task-file import writes a task and a storage link per row, three such
-- checks (tasks -> projects, links -> tasks, links -> import_storages),
-- and on this machine they took two thirds of the server's time (1,000,000
-- rows: 41 s with the three constraints, 13 s without; see
-- docs/benchmarks.md). These three constraints become statement-level
-- triggers with transition tables (PostgreSQL 10+, "CREATE TRIGGER ...
-- REFERENCING NEW TABLE"), which check and lock each statement's parents
-- in one set-based query, and the ON DELETE CASCADE they carried becomes
-- statement-level AFTER DELETE triggers on the parents.
--
-- The guarantee is the foreign key's: a child row names an existing parent,
-- and the parent stays until the child's transaction ends (FOR KEY SHARE,
-- the lock a foreign key takes). One exception, safe by construction:
-- tasks written by the inserting transaction itself (xmin = its own
-- transaction id) are not locked, since no other transaction can see them,
-- let alone delete them, before it commits. "Written by this transaction"
-- is xmin = its top-level id AND an id at or above the first task id it
-- inserted (kept transaction-locally in `labelport.first_own_task`): a
-- frozen task 2^32 transactions old can carry the same 32-bit xmin, never
-- a newer id. Rows of a subtransaction have another xmin and are locked
-- like any other. A violation raises SQLSTATE 23503 (foreign_key_violation),
-- as the constraint did.
--
-- Requirements: PostgreSQL 11 or later (EXECUTE FUNCTION, transition
-- tables), checked below; transactions at READ COMMITTED, PostgreSQL's
-- default and what Labelport uses (a cascade at REPEATABLE READ would not
-- see children committed while it waited). TRUNCATE of import_storages is
-- refused, as the constraint refused it; a data-only restore of a dump
-- loads tables in any order, so restore with --disable-triggers.

DO $$
BEGIN
    IF current_setting('server_version_num')::INT < 110000 THEN
        RAISE EXCEPTION 'Labelport needs PostgreSQL 11 or later (this server is %)', current_setting('server_version');
    END IF;
END $$;
--
-- Ids of parents are never updated by Labelport (the constraints' ON UPDATE
-- NO ACTION is not kept); an UPDATE of a child's reference column is
-- checked row by row (nothing updates them today).

ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_project_id_fkey;
ALTER TABLE import_storage_links DROP CONSTRAINT IF EXISTS import_storage_links_task_id_fkey;
ALTER TABLE import_storage_links DROP CONSTRAINT IF EXISTS import_storage_links_storage_id_fkey;

-- Each check names the parents as an array (`id = ANY(ids)`), so the
-- planner probes the primary key for them: a transition table has no
-- statistics, and a join with it may scan the whole parent table instead.

-- tasks.project_id -> projects(id)
CREATE FUNCTION labelport_tasks_check_project() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids BIGINT[];
    present BIGINT;
BEGIN
    SELECT array_agg(DISTINCT project_id) INTO ids FROM new_rows;
    SELECT count(*) INTO present FROM (SELECT 1 FROM projects WHERE id = ANY(ids) FOR KEY SHARE) locked;
    IF present < cardinality(ids) THEN
        RAISE EXCEPTION 'insert or update on table "tasks" violates the reference to projects'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (project_id)=(%s) is not present in table "projects".',
                                  (SELECT m FROM unnest(ids) m WHERE NOT EXISTS (SELECT 1 FROM projects p WHERE p.id = m) LIMIT 1));
    END IF;
    -- The first task id this transaction wrote (see the links' check).
    PERFORM set_config('labelport.first_own_task',
        LEAST((SELECT min(id) FROM new_rows),
              NULLIF(current_setting('labelport.first_own_task', TRUE), '')::BIGINT)::TEXT,
        TRUE);
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_project_exists_on_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION labelport_tasks_check_project();

-- import_storage_links.task_id -> tasks(id), .storage_id -> import_storages(id)
CREATE FUNCTION labelport_links_check_parents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- This transaction's top-level id as the 32-bit xid stored in xmin
    -- (txid_current() is the epoch-extended id).
    mine XID := (txid_current() % 4294967296)::TEXT::XID;
    -- The first task id it inserted, if any (see the tasks' check).
    first_own BIGINT := COALESCE(NULLIF(current_setting('labelport.first_own_task', TRUE), '')::BIGINT,
                                 9223372036854775807);
    ids BIGINT[];
    present BIGINT;
    own BIGINT;
BEGIN
    SELECT array_agg(DISTINCT storage_id) INTO ids FROM new_rows;
    SELECT count(*) INTO present FROM (SELECT 1 FROM import_storages WHERE id = ANY(ids) FOR KEY SHARE) locked;
    IF present < cardinality(ids) THEN
        RAISE EXCEPTION 'insert or update on table "import_storage_links" violates the reference to import_storages'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (storage_id)=(%s) is not present in table "import_storages".',
                                  (SELECT m FROM unnest(ids) m WHERE NOT EXISTS (SELECT 1 FROM import_storages s WHERE s.id = m) LIMIT 1));
    END IF;
    SELECT array_agg(DISTINCT task_id) INTO ids FROM new_rows;
    -- Others' tasks are locked and counted in one query; this
    -- transaction's own are counted apart (no one else can commit a row
    -- with its xmin, so nothing slips in between the two).
    SELECT count(*) INTO present FROM (
        SELECT 1 FROM tasks WHERE id = ANY(ids) AND NOT (xmin = mine AND id >= first_own) FOR KEY SHARE
    ) locked;
    SELECT count(*) INTO own FROM tasks WHERE id = ANY(ids) AND xmin = mine AND id >= first_own;
    IF present + own < cardinality(ids) THEN
        RAISE EXCEPTION 'insert or update on table "import_storage_links" violates the reference to tasks'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (task_id)=(%s) is not present in table "tasks".',
                                  (SELECT m FROM unnest(ids) m WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = m) LIMIT 1));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER import_storage_links_parents_exist_on_insert AFTER INSERT ON import_storage_links
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION labelport_links_check_parents();

-- An UPDATE that changes a reference (nothing does today) is checked row by
-- row; the WHEN clause keeps every other update free of any check.
CREATE FUNCTION labelport_check_reference_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'tasks' THEN
        PERFORM 1 FROM projects WHERE id = NEW.project_id FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'update on table "tasks" violates the reference to projects'
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    ELSE
        PERFORM 1 FROM import_storages WHERE id = NEW.storage_id FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'update on table "import_storage_links" violates the reference to import_storages'
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        PERFORM 1 FROM tasks WHERE id = NEW.task_id FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'update on table "import_storage_links" violates the reference to tasks'
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_project_exists_on_update AFTER UPDATE OF project_id ON tasks
    FOR EACH ROW WHEN (OLD.project_id IS DISTINCT FROM NEW.project_id)
    EXECUTE FUNCTION labelport_check_reference_row();
CREATE TRIGGER import_storage_links_parents_exist_on_update AFTER UPDATE OF task_id, storage_id ON import_storage_links
    FOR EACH ROW WHEN (OLD.task_id IS DISTINCT FROM NEW.task_id OR OLD.storage_id IS DISTINCT FROM NEW.storage_id)
    EXECUTE FUNCTION labelport_check_reference_row();

-- ON DELETE CASCADE, per statement (the deleted ids as an array too: one
-- task deleted probes the links' task index, it does not scan the table).
CREATE FUNCTION labelport_projects_delete_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids BIGINT[] := ARRAY(SELECT id FROM old_rows);
BEGIN
    DELETE FROM tasks WHERE project_id = ANY(ids);
    RETURN NULL;
END $$;
CREATE TRIGGER projects_delete_tasks AFTER DELETE ON projects
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION labelport_projects_delete_tasks();

CREATE FUNCTION labelport_tasks_delete_links() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids BIGINT[] := ARRAY(SELECT id FROM old_rows);
BEGIN
    DELETE FROM import_storage_links WHERE task_id = ANY(ids);
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_delete_links AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION labelport_tasks_delete_links();

CREATE FUNCTION labelport_import_storages_delete_links() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids BIGINT[] := ARRAY(SELECT id FROM old_rows);
BEGIN
    DELETE FROM import_storage_links WHERE storage_id = ANY(ids);
    RETURN NULL;
END $$;
CREATE TRIGGER import_storages_delete_links AFTER DELETE ON import_storages
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION labelport_import_storages_delete_links();

CREATE FUNCTION labelport_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'cannot truncate table "%": import_storage_links refers to it (delete its rows instead)', TG_TABLE_NAME
        USING ERRCODE = 'feature_not_supported';
END $$;
CREATE TRIGGER import_storages_no_truncate BEFORE TRUNCATE ON import_storages
    FOR EACH STATEMENT EXECUTE FUNCTION labelport_refuse_truncate();

-- A task file's links are written unread (generation 0) and all marked
-- read by one UPDATE when the file ends; none of the columns it sets is
-- indexed, so with room left in each page the new row versions stay on
-- their page (HOT) and no index is touched: 1,000,000 links 2.7 s
-- instead of 13.5 s here. Applies to pages written from now on. The cost:
-- link pages hold half as many rows (files-mode links, rarely updated,
-- take twice the heap: about 130 MB more per 1,000,000 objects).
ALTER TABLE import_storage_links SET (fillfactor = 50);
