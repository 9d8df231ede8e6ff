//! Share links: a secret URL that grants viewer or writer access to one terminal until it
//! expires or its owner revokes it. Only a hash of the secret is stored; checking a link
//! reads the database every time, so a revoked link stops working at once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sqlx::SqlitePool;

use super::Role;

/// Links may live at most this long.
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 86400);
const SECRET_PREFIX: &str = "phl_";

/// What a valid link grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkGrant {
    pub id: String,
    pub terminal_id: String,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
}

/// A link as its owner sees it (never with its secret, which is shown once).
#[derive(Debug, Clone, Serialize)]
pub struct LinkInfo {
    pub id: String,
    pub terminal_id: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn parse_role(s: &str) -> Role {
    if s == "writer" {
        Role::Writer
    } else {
        Role::Viewer
    }
}

/// Creates a link and returns it with its secret.
pub async fn create(
    db: &SqlitePool,
    terminal_id: &str,
    role: Role,
    lifetime: Duration,
    created_by: i64,
) -> Result<(LinkInfo, String), sqlx::Error> {
    let id = random_hex(8);
    let secret = format!("{SECRET_PREFIX}{}", random_hex(32));
    let created_at = Utc::now();
    let expires_at = created_at + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::zero());
    let role_name = if role == Role::Writer { "writer" } else { "viewer" };
    sqlx::query(
        "INSERT INTO share_links (id, terminal_id, secret_hash, role, created_by, created_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(terminal_id)
    .bind(crate::auth::hash(&secret))
    .bind(role_name)
    .bind(created_by)
    .bind(created_at.to_rfc3339())
    .bind(expires_at.to_rfc3339())
    .execute(db)
    .await?;
    let info = LinkInfo { id, terminal_id: terminal_id.to_string(), role, created_at, expires_at, revoked: false };
    Ok((info, secret))
}

/// The grant of a secret, if the link exists, is not revoked and has not expired.
pub async fn verify(db: &SqlitePool, secret: &str) -> Result<Option<LinkGrant>, sqlx::Error> {
    if !secret.starts_with(SECRET_PREFIX) || secret.len() > 128 {
        return Ok(None);
    }
    let row: Option<(String, String, String, String)> = sqlx::query_as(
        "SELECT id, terminal_id, role, expires_at FROM share_links WHERE secret_hash = ? AND revoked_at IS NULL",
    )
    .bind(crate::auth::hash(secret))
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|(id, terminal_id, role, expires_at)| {
        let expires_at = parse_time(&expires_at);
        (expires_at > Utc::now()).then(|| LinkGrant { id, terminal_id, role: parse_role(&role), expires_at })
    }))
}

pub async fn list(db: &SqlitePool, terminal_id: &str) -> Result<Vec<LinkInfo>, sqlx::Error> {
    let rows: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, role, created_at, expires_at, revoked_at FROM share_links WHERE terminal_id = ? ORDER BY created_at",
    )
    .bind(terminal_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, role, created_at, expires_at, revoked_at)| LinkInfo {
            id,
            terminal_id: terminal_id.to_string(),
            role: parse_role(&role),
            created_at: parse_time(&created_at),
            expires_at: parse_time(&expires_at),
            revoked: revoked_at.is_some(),
        })
        .collect())
}

/// Revokes a link of a terminal; `false` when there is no such (unrevoked) link.
pub async fn revoke(db: &SqlitePool, terminal_id: &str, link_id: &str) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE share_links SET revoked_at = ? WHERE id = ? AND terminal_id = ? AND revoked_at IS NULL")
            .bind(Utc::now().to_rfc3339())
            .bind(link_id)
            .bind(terminal_id)
            .execute(db)
            .await?;
    Ok(done.rows_affected() == 1)
}
