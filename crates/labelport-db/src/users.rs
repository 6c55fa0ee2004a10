//! Users and their API tokens. Tokens are stored as SHA-256 digests and
//! passwords as Argon2 hashes, so a copy of the database leaks neither.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::Rng;
use sha2::{Digest, Sha256};

use labelport_domain::access::Role;

use crate::{now, on_read, on_write, Db, DbError, DbResult};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub is_superuser: bool,
    /// `admin` | `manager` | `annotator` ([`UserRow::role`] parses it).
    #[sqlx(rename = "role")]
    pub role_name: String,
    pub created_at: String,
}

impl UserRow {
    /// The user's role; an unknown stored value counts as the weakest.
    pub fn role(&self) -> Role {
        Role::parse(&self.role_name).unwrap_or(Role::Annotator)
    }
}

/// Fields of a user an admin sets (`POST/PATCH /api/users`).
#[derive(Debug, Clone, Default)]
pub struct UserFields {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub role: Option<Role>,
}

const USER_COLUMNS: &str = "id, username, email, first_name, last_name, is_superuser, role, created_at";

pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random API token: 40 hex characters, like Label Studio's.
pub fn generate_token() -> String {
    let bytes: [u8; 20] = rand::thread_rng().gen();
    hex::encode(bytes)
}

/// Argon2 runs at most this many at once in a process: each takes 19 MiB
/// and a core for tens of milliseconds, so a burst of logins queues here
/// instead of taking the machine's memory.
const PARALLEL_HASHES: usize = 2;

fn hashing_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| tokio::sync::Semaphore::new(PARALLEL_HASHES))
}

/// Argon2id with its defaults (19 MiB, 2 passes): tens of milliseconds of
/// CPU, so it runs on the blocking pool, never on the async executor.
async fn hash_password(password: &str) -> DbResult<String> {
    let password = password.to_owned();
    let _permit = hashing_permits()
        .acquire()
        .await
        .map_err(|e| DbError::Corrupt(format!("password hashing: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| DbError::Corrupt(format!("password hashing failed: {e}")))
    })
    .await
    .map_err(|e| DbError::Corrupt(format!("password hashing task failed: {e}")))?
}

/// A hash of no one's password: an unknown user's login is checked against
/// it, so it costs the same time and answers the same as a wrong password.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2BQLAD8itTNhBeanTTTmLUkXtPWLlyNY51S0w9m4xTU";

/// Checks `password` against `hash` on the blocking pool.
async fn verify_password(password: &str, hash: String) -> bool {
    let password = password.to_owned();
    let Ok(_permit) = hashing_permits().acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
    .await
    .unwrap_or(false)
}

impl Db {
    pub async fn user_by_token(&self, token: &str) -> DbResult<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE token_sha256 = $1");
        let digest = token_digest(token);
        Ok(on_read!(self, p => sqlx::query_as::<_, UserRow>(&sql).bind(&digest).fetch_optional(p).await)?)
    }

    pub async fn user_by_id(&self, id: i64) -> DbResult<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        Ok(on_read!(self, p => sqlx::query_as::<_, UserRow>(&sql).bind(id).fetch_optional(p).await)?)
    }

    pub async fn list_users(&self) -> DbResult<Vec<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY id");
        Ok(on_read!(self, p => sqlx::query_as::<_, UserRow>(&sql).fetch_all(p).await)?)
    }

    /// A page of users in id order.
    pub async fn user_page(&self, offset: i64, limit: i64) -> DbResult<Vec<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY id LIMIT $1 OFFSET $2");
        Ok(on_read!(self, p => sqlx::query_as::<_, UserRow>(&sql).bind(limit).bind(offset).fetch_all(p).await)?)
    }

    pub async fn count_users(&self) -> DbResult<i64> {
        Ok(on_read!(self, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users").fetch_one(p).await)?)
    }

    /// Makes sure `username` exists with exactly this password and token,
    /// and `role` when given (a new user without one is an annotator; an
    /// existing one keeps theirs); returns the user. A changed password or
    /// token ends the user's browser sessions. The last admin cannot lose
    /// the role here.
    pub async fn ensure_user(
        &self,
        username: &str,
        password: &str,
        token: &str,
        role: Option<Role>,
    ) -> DbResult<UserRow> {
        let digest = token_digest(token);
        let before = self.credentials_of(username).await?;
        if let (Some((_, _, old_role)), Some(new)) = (&before, role) {
            if old_role == "admin" && new != Role::Admin && self.count_admins().await? <= 1 {
                return Err(DbError::Invalid(format!(
                    "{username} is the last admin; make another admin first"
                )));
            }
        }
        let changed = match &before {
            Some((old_hash, old_digest, _)) => {
                *old_digest != digest || !verify_password(password, old_hash.clone()).await
            }
            None => false,
        };
        let hash = hash_password(password).await?;
        let email = if username.contains('@') { username } else { "" };
        let sql = format!(
            "INSERT INTO users (username, email, password_hash, token_sha256, is_superuser, role, created_at)
             VALUES ($1, $2, $3, $4, COALESCE($5, FALSE), COALESCE($6, 'annotator'), $7)
             ON CONFLICT (username) DO UPDATE SET password_hash = $3, token_sha256 = $4,
                 is_superuser = COALESCE($5, users.is_superuser), role = COALESCE($6, users.role)
             RETURNING {USER_COLUMNS}"
        );
        let created_at = now();
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            let user = sqlx::query_as::<_, UserRow>(&sql)
                .bind(username).bind(email).bind(&hash).bind(&digest).bind(role.map(|r| r == Role::Admin))
                .bind(role.map(Role::as_str)).bind(&created_at)
                .fetch_one(&mut *tx).await?;
            if changed {
                sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user.id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(user)
        })
    }

    /// (password hash, token digest, role) of a user, by username.
    async fn credentials_of(&self, username: &str) -> DbResult<Option<(String, String, String)>> {
        let sql = "SELECT password_hash, token_sha256, role FROM users WHERE username = $1";
        Ok(
            on_read!(self, p => sqlx::query_as::<_, (String, String, String)>(sql).bind(username).fetch_optional(p).await)?,
        )
    }

    /// Creates a user (`POST /api/users`); None when the username is taken.
    pub async fn create_user(
        &self,
        username: &str,
        password: &str,
        token: &str,
        fields: &UserFields,
    ) -> DbResult<Option<UserRow>> {
        let hash = hash_password(password).await?;
        let role = fields.role.unwrap_or(Role::Annotator);
        let sql = format!(
            "INSERT INTO users (username, email, first_name, last_name, password_hash, token_sha256, is_superuser, role, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (username) DO NOTHING RETURNING {USER_COLUMNS}"
        );
        Ok(on_write!(self, p => sqlx::query_as::<_, UserRow>(&sql)
            .bind(username).bind(&fields.email).bind(&fields.first_name).bind(&fields.last_name)
            .bind(&hash).bind(token_digest(token)).bind(role == Role::Admin).bind(role.as_str()).bind(now())
            .fetch_optional(p).await)?)
    }

    /// Saves a user's names, e-mail and (when given) role.
    pub async fn update_user(&self, id: i64, fields: &UserFields) -> DbResult<UserRow> {
        let sql = format!(
            "UPDATE users SET email = $1, first_name = $2, last_name = $3,
             role = COALESCE($4, role), is_superuser = COALESCE($4 = 'admin', is_superuser)
             WHERE id = $5 RETURNING {USER_COLUMNS}"
        );
        let role = fields.role.map(Role::as_str);
        crate::not_found_if_none(on_write!(self, p => sqlx::query_as::<_, UserRow>(&sql)
            .bind(&fields.email).bind(&fields.first_name).bind(&fields.last_name).bind(role).bind(id)
            .fetch_optional(p).await)?)
    }

    /// Deletes a user (their sessions and memberships go with them; their
    /// annotations stay, as Label Studio's).
    pub async fn delete_user(&self, id: i64) -> DbResult<()> {
        let n = on_write!(self, p => sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(p).await
            .map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    }

    /// How many admins there are (the last one may not be demoted or deleted).
    pub async fn count_admins(&self) -> DbResult<i64> {
        Ok(
            on_read!(self, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users WHERE role = 'admin'")
            .fetch_one(p).await)?,
        )
    }

    /// The user with this username (or email) and password, if they match.
    pub async fn user_by_login(&self, login: &str, password: &str) -> DbResult<Option<UserRow>> {
        let sql = format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE username = $1 OR email = $1 ORDER BY id LIMIT 1"
        );
        let row = on_read!(self, p => sqlx::query(&sql).bind(login).fetch_optional(p).await.map(|r| r.map(|r| {
            use sqlx::Row;
            (UserRow {
                id: r.get("id"), username: r.get("username"), email: r.get("email"), first_name: r.get("first_name"),
                last_name: r.get("last_name"), is_superuser: r.get("is_superuser"), role_name: r.get("role"),
                created_at: r.get("created_at"),
            }, r.get::<String, _>("password_hash"))
        })))?;
        // An unknown user costs the same work as a wrong password.
        let (user, hash) = match row {
            Some((user, hash)) => (Some(user), hash),
            None => (None, DUMMY_HASH.to_owned()),
        };
        let ok = verify_password(password, hash).await;
        Ok(user.filter(|_| ok))
    }

    /// Starts a browser session; returns the cookie value (shown once).
    pub async fn create_session(&self, user_id: i64, lifetime: chrono::Duration) -> DbResult<String> {
        let token = generate_token();
        let expires = (chrono::Utc::now() + lifetime)
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let sql = "INSERT INTO sessions (token_sha256, user_id, expires_at, created_at) VALUES ($1, $2, $3, $4)";
        on_write!(self, p => sqlx::query(sql).bind(token_digest(&token)).bind(user_id).bind(&expires).bind(now())
            .execute(p).await.map(|_| ()))?;
        Ok(token)
    }

    /// The user of an unexpired session.
    pub async fn user_by_session(&self, token: &str) -> DbResult<Option<UserRow>> {
        let sql = format!(
            "SELECT {} FROM users u JOIN sessions s ON s.user_id = u.id WHERE s.token_sha256 = $1 AND s.expires_at > $2",
            USER_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ")
        );
        Ok(
            on_read!(self, p => sqlx::query_as::<_, UserRow>(&sql).bind(token_digest(token)).bind(now()).fetch_optional(p).await)?,
        )
    }

    pub async fn delete_session(&self, token: &str) -> DbResult<()> {
        on_write!(self, p => sqlx::query("DELETE FROM sessions WHERE token_sha256 = $1").bind(token_digest(token))
            .execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Replaces a user's token and ends their browser sessions; returns
    /// false when there is no such user.
    pub async fn set_user_token(&self, username: &str, token: &str) -> DbResult<bool> {
        let digest = token_digest(token);
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            let done = sqlx::query("UPDATE users SET token_sha256 = $1 WHERE username = $2")
                .bind(&digest).bind(username).execute(&mut *tx).await?.rows_affected();
            sqlx::query("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE username = $1)")
                .bind(username).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(done == 1)
        })
    }

    /// Sets a user's password and ends their browser sessions.
    pub async fn set_password(&self, id: i64, password: &str) -> DbResult<()> {
        let hash = hash_password(password).await?;
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2").bind(&hash).bind(id)
                .execute(&mut *tx).await?;
            sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// Deletes expired sessions; returns how many.
    pub async fn prune_sessions(&self) -> DbResult<u64> {
        Ok(
            on_write!(self, p => sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now())
            .execute(p).await.map(|r| r.rows_affected()))?,
        )
    }
}
