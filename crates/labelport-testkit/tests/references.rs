//! The references between tasks, projects, import storages and storage
//! links hold on both backends: a row naming a missing parent is refused
//! as a foreign-key violation, and deleting a parent deletes its children.
//! On PostgreSQL these are statement-level triggers since migration 0015
//! (issue 18, item 4), not constraints; on SQLite they stay constraints.
//! PostgreSQL also keeps the constraint's lock: a task linked by an open
//! transaction cannot be deleted until that transaction ends.

use labelport_db::projects::ProjectFields;
use labelport_db::sqlx_reexport as sqlx;
use labelport_db::tasks::LinkSpec;
use labelport_db::{Db, Pool};
use labelport_domain::access::Role;
use labelport_domain::import::NewTask;
use labelport_domain::storage::{Direction, StorageKind, StorageSettings};
use labelport_testkit::{backends, Backend, TestDb};
use serde_json::json;

/// A project with one import storage and `n` tasks linked to it:
/// (project id, storage id, task ids).
async fn project_with_linked_tasks(db: &Db, title: &str, n: usize) -> (i64, i64, Vec<i64>) {
    db.ensure_user(
        "refs",
        "refs-password",
        &labelport_db::users::generate_token(),
        Some(Role::Admin),
    )
    .await
    .unwrap();
    let user = db
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.username == "refs")
        .unwrap();
    let project = db
        .create_project(
            &ProjectFields {
                title: title.into(),
                description: String::new(),
                label_config: "<View><Image name=\"image\" value=\"$image\"/></View>".into(),
                maximum_annotations: 1,
                settings: "{}".into(),
            },
            user.id,
        )
        .await
        .unwrap();
    let settings = StorageSettings {
        title: title.into(),
        bucket: "refs".into(),
        ..StorageSettings::defaults(Direction::Import)
    };
    let storage = db
        .create_storage(project.id, StorageKind::Gcs, &settings)
        .await
        .unwrap();
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| NewTask {
            data: json!({"image": format!("gs://refs/{title}/{i}.jpg")}),
            meta: json!({}),
            allow_skip: true,
            annotations: vec![],
            predictions: vec![],
        })
        .collect();
    let links: Vec<LinkSpec> = (0..n)
        .map(|i| LinkSpec {
            key: format!("{title}/{i}.jpg"),
            row_index: -1,
            generation: 1,
            etag: String::new(),
        })
        .collect();
    let outcome = db
        .import_linked_tasks(project.id, 1, &tasks, user.id, Some((storage.id, &links)))
        .await
        .unwrap();
    assert_eq!(outcome.created, n);
    (project.id, storage.id, outcome.task_ids)
}

/// Runs `sql` (binding `binds` in order) and answers whether the database
/// refused it as a foreign-key violation; panics on any other error.
async fn refused_as_missing_parent(db: &Db, sql: &str, binds: &[i64]) -> bool {
    macro_rules! run {
        ($pool:expr) => {{
            let mut q = sqlx::query(sql);
            for b in binds {
                q = q.bind(*b);
            }
            q.execute($pool).await
        }};
    }
    let result = match &db.pool {
        Pool::Sqlite { write, .. } => run!(write).map(|_| ()),
        Pool::Postgres(p) => run!(p).map(|_| ()),
    };
    match result {
        Ok(()) => false,
        Err(sqlx::Error::Database(e)) if e.kind() == sqlx::error::ErrorKind::ForeignKeyViolation => true,
        Err(e) => panic!("{sql}: {e}"),
    }
}

const LINKS_OF_TASK: &str = "SELECT COUNT(*) FROM import_storage_links WHERE task_id = $1";
const LINKS_OF_STORAGE: &str = "SELECT COUNT(*) FROM import_storage_links WHERE storage_id = $1";
const TASKS_OF_PROJECT: &str = "SELECT COUNT(*) FROM tasks WHERE project_id = $1";

/// Runs a statement that must succeed (a deletion of a parent).
async fn run(db: &Db, sql: &str, id: i64) {
    assert!(!refused_as_missing_parent(db, sql, &[id]).await, "{sql} was refused");
}

async fn count(db: &Db, sql: &str, bind: i64) -> i64 {
    match &db.pool {
        Pool::Sqlite { write, .. } => sqlx::query_scalar(sql).bind(bind).fetch_one(write).await.unwrap(),
        Pool::Postgres(p) => sqlx::query_scalar(sql).bind(bind).fetch_one(p).await.unwrap(),
    }
}

const TASK_ROW: &str = "INSERT INTO tasks (project_id, data, meta, inner_id, created_at, updated_at)
                        VALUES ($1, '{}', '{}', 999999, 'x', 'x')";
const LINK_ROW: &str =
    "INSERT INTO import_storage_links (storage_id, task_id, object_key, row_index, generation, created_at)
                        VALUES ($1, $2, $3, -1, 1, 'x')";

#[tokio::test]
async fn missing_parents_are_refused_and_deletions_cascade() {
    for backend in backends() {
        let t = TestDb::new(backend).await.unwrap();
        let db = &t.db;
        let (project, storage, tasks) = project_with_linked_tasks(db, "a", 5).await;
        let (other_project, other_storage, other_tasks) = project_with_linked_tasks(db, "b", 3).await;
        let missing = 1_000_000;

        // A row naming a parent that does not exist: refused, nothing written.
        assert!(
            refused_as_missing_parent(db, TASK_ROW, &[missing]).await,
            "{backend:?}: task of no project"
        );
        assert!(
            refused_as_missing_parent(db, &LINK_ROW.replace("$3", "'x1'"), &[storage, missing]).await,
            "{backend:?}: link to no task"
        );
        assert!(
            refused_as_missing_parent(db, &LINK_ROW.replace("$3", "'x2'"), &[missing, tasks[0]]).await,
            "{backend:?}: link of no storage"
        );
        // A multi-row statement with one bad row is refused whole.
        let mixed =
            "INSERT INTO import_storage_links (storage_id, task_id, object_key, row_index, generation, created_at)
                     VALUES ($1, $2, 'm1', -1, 1, 'x'), ($1, $3, 'm2', -1, 1, 'x')";
        assert!(
            refused_as_missing_parent(db, mixed, &[storage, tasks[1], missing]).await,
            "{backend:?}: one bad row in many"
        );
        assert_eq!(
            count(db, LINKS_OF_STORAGE, storage).await,
            5,
            "{backend:?}: nothing of the refused statements was written"
        );
        // Changing a reference to a missing parent is refused too.
        assert!(
            refused_as_missing_parent(
                db,
                "UPDATE import_storage_links SET task_id = $1 WHERE task_id = $2",
                &[missing, tasks[0]]
            )
            .await,
            "{backend:?}: link moved to no task"
        );
        assert!(
            refused_as_missing_parent(
                db,
                "UPDATE tasks SET project_id = $1 WHERE id = $2",
                &[missing, tasks[0]]
            )
            .await,
            "{backend:?}: task moved to no project"
        );
        // A good row is accepted (the checks do not refuse everything).
        assert!(!refused_as_missing_parent(db, &LINK_ROW.replace("$3", "'ok'"), &[storage, tasks[0]]).await);

        // Deleting a task deletes its links; a storage, its links; a
        // project, its tasks (and so their links). Other rows stay.
        run(db, "DELETE FROM tasks WHERE id = $1", tasks[0]).await;
        assert_eq!(count(db, LINKS_OF_TASK, tasks[0]).await, 0);
        assert_eq!(count(db, LINKS_OF_STORAGE, storage).await, 4);
        run(db, "DELETE FROM import_storages WHERE id = $1", storage).await;
        assert_eq!(count(db, LINKS_OF_STORAGE, storage).await, 0);
        assert_eq!(count(db, TASKS_OF_PROJECT, project).await, 4);
        run(db, "DELETE FROM projects WHERE id = $1", project).await;
        assert_eq!(count(db, TASKS_OF_PROJECT, project).await, 0);
        assert_eq!(count(db, TASKS_OF_PROJECT, other_project).await, 3);
        assert_eq!(count(db, LINKS_OF_STORAGE, other_storage).await, 3);
        run(db, "DELETE FROM projects WHERE id = $1", other_project).await;
        for id in other_tasks {
            assert_eq!(count(db, LINKS_OF_TASK, id).await, 0);
        }
        t.drop_database().await;
    }
}

/// The lock a foreign key takes, kept by the triggers: while a transaction
/// that linked an existing task is open, that task cannot be deleted; a
/// task the transaction made itself is invisible to others anyway.
#[tokio::test]
async fn a_linked_task_stays_until_the_linking_transaction_ends() {
    if !backends().contains(&Backend::Postgres) {
        return; // SQLite has one writer: no concurrent deletion to hold off.
    }
    let t = TestDb::new(Backend::Postgres).await.unwrap();
    let Pool::Postgres(p) = &t.db.pool else { unreachable!() };
    let (_, storage, tasks) = project_with_linked_tasks(&t.db, "c", 2).await;
    let mut linking = p.begin().await.unwrap();
    sqlx::query(&LINK_ROW.replace("$3", "'again'"))
        .bind(storage)
        .bind(tasks[0])
        .execute(&mut *linking)
        .await
        .unwrap();
    let mut deleting = p.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '300ms'")
        .execute(&mut *deleting)
        .await
        .unwrap();
    let err = sqlx::query("DELETE FROM tasks WHERE id = $1")
        .bind(tasks[0])
        .execute(&mut *deleting)
        .await
        .expect_err("the linked task is locked");
    assert!(err.to_string().contains("lock timeout"), "{err}");
    deleting.rollback().await.unwrap();
    // The other task is not locked by the linking transaction.
    let mut deleting = p.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '300ms'")
        .execute(&mut *deleting)
        .await
        .unwrap();
    sqlx::query("DELETE FROM tasks WHERE id = $1")
        .bind(tasks[1])
        .execute(&mut *deleting)
        .await
        .unwrap();
    deleting.rollback().await.unwrap();
    // Nor can the storage it links to.
    let mut deleting = p.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '300ms'")
        .execute(&mut *deleting)
        .await
        .unwrap();
    let err = sqlx::query("DELETE FROM import_storages WHERE id = $1")
        .bind(storage)
        .execute(&mut *deleting)
        .await
        .expect_err("the linked storage is locked");
    assert!(err.to_string().contains("lock timeout"), "{err}");
    deleting.rollback().await.unwrap();
    linking.commit().await.unwrap();
    assert_eq!(count(&t.db, LINKS_OF_TASK, tasks[0]).await, 2);

    // The other order: a deletion not yet committed holds the link back,
    // and once it commits the link is refused as naming no task.
    let mut deleting = p.begin().await.unwrap();
    sqlx::query("DELETE FROM tasks WHERE id = $1")
        .bind(tasks[1])
        .execute(&mut *deleting)
        .await
        .unwrap();
    let pool = p.clone();
    let linking = tokio::spawn(async move {
        sqlx::query(&LINK_ROW.replace("$3", "'late'"))
            .bind(storage)
            .bind(tasks[1])
            .execute(&pool)
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!linking.is_finished(), "the link waits for the deletion to end");
    deleting.commit().await.unwrap();
    match linking.await.unwrap() {
        Err(sqlx::Error::Database(e)) => {
            assert_eq!(e.kind(), sqlx::error::ErrorKind::ForeignKeyViolation, "{e}")
        }
        other => panic!("a link to a task deleted meanwhile: {other:?}"),
    }

    // The constraints are gone and the triggers there (migration 0015), so
    // the checks above exercised the triggers; TRUNCATE is refused as the
    // constraint refused it.
    let constraints: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_constraint WHERE contype = 'f'
         AND conrelid IN ('tasks'::regclass, 'import_storage_links'::regclass)
         AND confrelid IN ('projects'::regclass, 'tasks'::regclass, 'import_storages'::regclass)",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(constraints, 0);
    let triggers: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_trigger WHERE NOT tgisinternal AND tgname IN
         ('tasks_project_exists_on_insert', 'import_storage_links_parents_exist_on_insert',
          'projects_delete_tasks', 'tasks_delete_links', 'import_storages_delete_links')",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(triggers, 5);
    let err = sqlx::query("TRUNCATE import_storages")
        .execute(p)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("cannot truncate"), "{err}");
    t.drop_database().await;
}

/// Tasks a transaction inserted itself are linked without a lock, also
/// after a rolled-back savepoint, whose tasks (and record of "own tasks")
/// are undone: a link to such a task is refused.
#[tokio::test]
async fn own_tasks_link_in_one_transaction_with_savepoints() {
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let t = TestDb::new(Backend::Postgres).await.unwrap();
    let Pool::Postgres(p) = &t.db.pool else { unreachable!() };
    let (project, storage, _) = project_with_linked_tasks(&t.db, "d", 1).await;
    let mut tx = p.begin().await.unwrap();
    let insert_task = "INSERT INTO tasks (project_id, data, meta, inner_id, created_at, updated_at)
                       VALUES ($1, '{}', '{}', 500, 'x', 'x') RETURNING id";
    let own: i64 = sqlx::query_scalar(insert_task)
        .bind(project)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SAVEPOINT a").execute(&mut *tx).await.unwrap();
    let in_savepoint: i64 = sqlx::query_scalar(insert_task)
        .bind(project)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query("ROLLBACK TO SAVEPOINT a").execute(&mut *tx).await.unwrap();
    sqlx::query("SAVEPOINT b").execute(&mut *tx).await.unwrap();
    let err = sqlx::query(&LINK_ROW.replace("$3", "'gone'"))
        .bind(storage)
        .bind(in_savepoint)
        .execute(&mut *tx)
        .await
        .expect_err("a link to a rolled-back task");
    assert!(err.to_string().contains("violates the reference to tasks"), "{err}");
    sqlx::query("ROLLBACK TO SAVEPOINT b").execute(&mut *tx).await.unwrap();
    sqlx::query(&LINK_ROW.replace("$3", "'own'"))
        .bind(storage)
        .bind(own)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&t.db, LINKS_OF_TASK, own).await, 1);
    t.drop_database().await;
}
