//! The one query public serving makes. System scope: no user is signed in.

use uuid::Uuid;

use crate::db::SystemTx;

/// A file of a live page.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LiveFile {
    pub aide_id: Uuid,
    pub title: String,
    pub tier: String,
    pub version: i32,
    pub content_type: String,
}

/// The file at `path` of the published aide `slug`, in `version` (None: the latest). None when
/// the aide is not published, or has no such version or file.
pub async fn live_file(
    tx: &mut SystemTx,
    slug: &str,
    version: Option<i32>,
    path: &str,
) -> Result<Option<LiveFile>, sqlx::Error> {
    sqlx::query_as(
        "select a.id as aide_id, a.title, u.tier, f.version, f.content_type
         from aides a
         join users u on u.id = a.user_id
         join published_files f on f.aide_id = a.id and f.user_id = a.user_id
         where a.slug = $1 and a.status = 'published' and f.path = $3
           and f.version = coalesce($2, (select max(v.version) from published_versions v
                                          where v.aide_id = a.id and v.user_id = a.user_id))",
    )
    .bind(slug)
    .bind(version)
    .bind(path)
    .fetch_optional(tx.conn())
    .await
}
