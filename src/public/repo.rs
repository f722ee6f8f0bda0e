//! The one query public serving makes. System scope: no user is signed in.

use std::collections::HashMap;

use uuid::Uuid;

use crate::db::{self, SystemTx};
use crate::tier::Tier;

/// A version of a live page: what serving any of its files needs.
#[derive(Debug, Clone)]
pub struct LivePage {
    pub aide_id: Uuid,
    pub title: String,
    pub tier: Tier,
    /// Where the version's files are stored (see `storage::keys::published_file`).
    pub r2_key: String,
    pub files: HashMap<String, LiveFile>,
}

/// One file of a live page.
#[derive(Debug, Clone)]
pub struct LiveFile {
    pub content_type: String,
    pub sha256: Vec<u8>,
    pub size_bytes: i64,
}

struct Row {
    aide_id: Uuid,
    title: String,
    tier: Tier,
    r2_key: String,
    path: String,
    content_type: String,
    sha256: Vec<u8>,
    size_bytes: i64,
}

impl db::FromRow for Row {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(Row {
            aide_id: row.try_get("aide_id")?,
            title: row.try_get("title")?,
            tier: row.try_get("tier")?,
            r2_key: row.try_get("r2_key")?,
            path: row.try_get("path")?,
            content_type: row.try_get("content_type")?,
            sha256: row.try_get("sha256")?,
            size_bytes: row.try_get("size_bytes")?,
        })
    }
}

crate::statement! {
    /// Version `$2` (null: the latest) of the published aide with slug `$1`, a row per file.
    LIVE_PAGE: System = "select a.id as aide_id, a.title, u.tier, v.r2_key,
                f.path, f.content_type, f.sha256, f.size_bytes
         from aides a
         join users u on u.id = a.user_id
         join published_versions v on v.aide_id = a.id and v.user_id = a.user_id
         join published_files f
           on f.aide_id = v.aide_id and f.user_id = v.user_id and f.version = v.version
         where a.slug = $1 and a.status = 'published' and u.deletion_requested_at is null
           and v.version = coalesce($2::int4, (select max(l.version) from published_versions l
                                               where l.aide_id = a.id and l.user_id = a.user_id))";
}

/// Version `version` (None: the latest) of the published aide `slug`, with all its files. None
/// when the aide is not published or has no such version.
pub async fn live_page(
    tx: &SystemTx,
    slug: &str,
    version: Option<i32>,
) -> Result<Option<LivePage>, db::Error> {
    let rows: Vec<Row> = tx.rows(&LIVE_PAGE, &[&slug, &version]).await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut page = LivePage {
        aide_id: first.aide_id,
        title: first.title.clone(),
        tier: first.tier,
        r2_key: first.r2_key.clone(),
        files: HashMap::with_capacity(rows.len()),
    };
    for row in rows {
        page.files.insert(
            row.path,
            LiveFile {
                content_type: row.content_type,
                sha256: row.sha256,
                size_bytes: row.size_bytes,
            },
        );
    }
    Ok(Some(page))
}
