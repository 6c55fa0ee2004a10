//! Users and their API tokens. Tokens are stored as SHA-256 digests and
//! passwords as Argon2 hashes, so a copy of the database leaks neither.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::{now, on_read, on_write, Db, DbError, DbResult};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub is_superuser: bool,
    pub created_at: String,
}

const USER_COLUMNS: &str = "id, username, email, first_name, last_name, is_superuser, created_at";

pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random API token: 40 hex characters, like Label Studio's.
pub fn generate_token() -> String {
    let bytes: [u8; 20] = rand::thread_rng().gen();
    hex::encode(bytes)
}

fn hash_password(password: &str) -> DbResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DbError::Corrupt(format!("password hashing failed: {e}")))
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

    pub async fn count_users(&self) -> DbResult<i64> {
        Ok(on_read!(self, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users").fetch_one(p).await)?)
    }

    /// Makes sure `username` exists with exactly this password and token
    /// (creating or updating it); returns the user.
    pub async fn ensure_user(&self, username: &str, password: &str, token: &str) -> DbResult<UserRow> {
        let hash = hash_password(password)?;
        let digest = token_digest(token);
        let email = if username.contains('@') { username } else { "" };
        let sql = format!(
            "INSERT INTO users (username, email, password_hash, token_sha256, is_superuser, created_at)
             VALUES ($1, $2, $3, $4, TRUE, $5)
             ON CONFLICT (username) DO UPDATE SET password_hash = $3, token_sha256 = $4
             RETURNING {USER_COLUMNS}"
        );
        let created_at = now();
        Ok(on_write!(self, p => sqlx::query_as::<_, UserRow>(&sql)
            .bind(username).bind(email).bind(&hash).bind(&digest).bind(&created_at)
            .fetch_one(p).await)?)
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
                last_name: r.get("last_name"), is_superuser: r.get("is_superuser"), created_at: r.get("created_at"),
            }, r.get::<String, _>("password_hash"))
        })))?;
        let Some((user, hash)) = row else { return Ok(None) };
        let ok =
            PasswordHash::new(&hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok());
        Ok(ok.then_some(user))
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

    /// Replaces a user's token; returns false when there is no such user.
    pub async fn set_user_token(&self, username: &str, token: &str) -> DbResult<bool> {
        let digest = token_digest(token);
        let done = on_write!(self, p => sqlx::query("UPDATE users SET token_sha256 = $1 WHERE username = $2")
            .bind(&digest).bind(username).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }
}
