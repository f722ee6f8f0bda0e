//! `aide operator add|remove|list`: who has staff access (see `crate::support`). The operators
//! are kept by the schema's owner, over the administrative connection (DATABASE_ADMIN_URL, or the
//! managed cluster's), never by the server, whose roles cannot write them.

use tokio_postgres::Client;

async fn as_owner(conn: &Client) -> anyhow::Result<()> {
    conn.batch_execute(&format!("set role {}", super::OWNER_ROLE))
        .await?;
    Ok(())
}

/// The address as stored: trimmed, lower case. The command line normalises it as sign-in does
/// first (`EmailAddress`), so it matches the account's.
fn address(raw: &str) -> anyhow::Result<String> {
    let email = raw.trim().to_lowercase();
    if email.len() < 3 || email.len() > 320 || email.matches('@').count() != 1 {
        anyhow::bail!("{raw:?} is not an email address");
    }
    Ok(email)
}

/// Adds `email` as an operator; false when it already was one.
pub async fn add(conn: &Client, email: &str) -> anyhow::Result<bool> {
    let email = address(email)?;
    as_owner(conn).await?;
    let added = conn
        .execute(
            "insert into operators (email) values ($1) on conflict do nothing",
            &[&email],
        )
        .await?;
    Ok(added == 1)
}

/// Removes `email` from the operators, closing their open grants; false when it was not one.
pub async fn remove(conn: &Client, email: &str) -> anyhow::Result<bool> {
    let email = address(email)?;
    as_owner(conn).await?;
    conn.execute(
        "update support_grants set closed_at = now()
         where operator_email = $1 and closed_at is null and expires_at > now()",
        &[&email],
    )
    .await?;
    let removed = conn
        .execute("delete from operators where email = $1", &[&email])
        .await?;
    Ok(removed == 1)
}

/// Every operator: address and when added.
pub async fn list(conn: &Client) -> anyhow::Result<Vec<(String, chrono::DateTime<chrono::Utc>)>> {
    as_owner(conn).await?;
    Ok(conn
        .query("select email, added_at from operators order by email", &[])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}
