//! Every query about published versions. User scope.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::aides::model::{AideRow, Status, aide_columns};
use crate::db::{self, UserTx};
use crate::tier::Tier;

/// The aide's status and its owner's tier.
#[derive(Debug)]
pub struct AideState {
    pub status: Status,
    pub tier: Tier,
}

impl db::FromRow for AideState {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(AideState {
            status: row.try_get("status")?,
            tier: row.try_get("tier")?,
        })
    }
}

/// A file of a version (or of the workspace, being published).
#[derive(Debug, Clone)]
pub struct VersionFile {
    pub path: String,
    pub size_bytes: i64,
    pub content_type: String,
    pub sha256: Vec<u8>,
}

impl db::FromRow for VersionFile {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(VersionFile {
            path: row.try_get("path")?,
            size_bytes: row.try_get("size_bytes")?,
            content_type: row.try_get("content_type")?,
            sha256: row.try_get("sha256")?,
        })
    }
}

/// A file of a workspace revision.
struct RevisionFile {
    file: VersionFile,
    revision: i32,
}

impl db::FromRow for RevisionFile {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(RevisionFile {
            file: VersionFile::from_row(row)?,
            revision: row.try_get("revision")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct VersionRow {
    pub version: i32,
    pub revision: Option<i32>,
    pub notes: Option<String>,
    pub size_bytes: i64,
    pub published_at: DateTime<Utc>,
}

impl db::FromRow for VersionRow {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(VersionRow {
            version: row.try_get("version")?,
            revision: row.try_get("revision")?,
            notes: row.try_get("notes")?,
            size_bytes: row.try_get("size_bytes")?,
            published_at: row.try_get("published_at")?,
        })
    }
}

crate::statement! {
    AIDE_STATE: User = "select a.status, u.tier from aides a join users u on u.id = a.user_id
         where a.id = $1 and a.user_id = $2";
    AIDE_STATE_LOCKED: User = "select a.status, u.tier from aides a join users u on u.id = a.user_id
         where a.id = $1 and a.user_id = $2 for update of a";
    PUBLISHED_HASHES: User = "select distinct f.sha256 from published_files f
         join published_versions v
           on v.aide_id = f.aide_id and v.user_id = f.user_id and v.version = f.version
         where f.aide_id = $1 and f.user_id = $2 and v.r2_key = $3";
    VERSION_R2_KEY: User =
        "select r2_key from published_versions where aide_id = $1 and user_id = $2 and version = $3";
    NEXT_VERSION: User = "select coalesce(max(version), 0) + 1 from published_versions
         where aide_id = $1 and user_id = $2";
    /// Revision `$3`'s files, or the newest revision's (the workspace as it is) when `$3` is null.
    REVISION_FILES: User = "select path, size_bytes, content_type, sha256, revision
         from workspace_revision_files
         where aide_id = $1 and user_id = $2 and revision = coalesce($3::int4,
             (select max(number) from workspace_revisions where aide_id = $1 and user_id = $2))
         order by path";
    VERSION_REVISION: User =
        "select revision from published_versions where aide_id = $1 and user_id = $2 and version = $3";
    VERSION_FILES: User = "select path, size_bytes, content_type, sha256 from published_files
         where aide_id = $1 and user_id = $2 and version = $3 order by path";
    INSERT_VERSION: User = "insert into published_versions (aide_id, user_id, version, r2_key, notes, size_bytes, revision)
         values ($1, $2, $3, $4, $5, $6, $7)
         returning version, revision, notes, size_bytes, published_at";
    INSERT_VERSION_FILES: User = "insert into published_files (aide_id, user_id, version, path, size_bytes, content_type, sha256)
         select $1::uuid, $2::uuid, $3::int4, p, s, t, h
         from unnest($4::text[], $5::int8[], $6::text[], $7::bytea[]) as f(p, s, t, h)";
    LIST_VERSIONS: User = "select version, revision, notes, size_bytes, published_at from published_versions
         where aide_id = $1 and user_id = $2 order by version desc";
    CLAIM_SLUG: User = "update aides set slug = coalesce(slug, requested_slug, $3::text), requested_slug = null
         where id = $1 and user_id = $2 and slug is null";
    MARK_PUBLISHED: User = concat!(
        "update aides set status = 'published'
         where id = $1 and user_id = $2 returning ",
        aide_columns!()
    );
    MARK_DRAFT: User = concat!(
        "update aides set status = 'draft' where id = $1 and user_id = $2 and status = 'published'
         returning ",
        aide_columns!()
    );
}

/// The aide's state, locked for the rest of the transaction when `lock`.
pub async fn aide_state(
    tx: &UserTx,
    aide: Uuid,
    lock: bool,
) -> Result<Option<AideState>, db::Error> {
    let sql = if lock {
        &AIDE_STATE_LOCKED
    } else {
        &AIDE_STATE
    };
    tx.row_opt(sql, &[&aide, &tx.user_id()]).await
}

/// The contents (SHA-256) the aide already has in its blob folder of the published bucket: those
/// of versions stored there (`r2_key` = `blob_folder`), not of versions stored before that layout.
pub async fn published_hashes(
    tx: &UserTx,
    aide: Uuid,
    blob_folder: &str,
) -> Result<Vec<Vec<u8>>, db::Error> {
    tx.values(&PUBLISHED_HASHES, &[&aide, &tx.user_id(), &blob_folder])
        .await
}

/// Where version `version`'s files are stored (its `r2_key`), if it exists.
pub async fn version_r2_key(
    tx: &UserTx,
    aide: Uuid,
    version: i32,
) -> Result<Option<String>, db::Error> {
    tx.value_opt(&VERSION_R2_KEY, &[&aide, &tx.user_id(), &version])
        .await
}

pub async fn next_version(tx: &UserTx, aide: Uuid) -> Result<i32, db::Error> {
    tx.value(&NEXT_VERSION, &[&aide, &tx.user_id()]).await
}

/// The files of a revision of the workspace, and its number; the newest revision's (the
/// workspace as it is) when `revision` is `None`. Empty when there is no such revision (or it
/// holds no files).
pub async fn revision_files(
    tx: &UserTx,
    aide: Uuid,
    revision: Option<i32>,
) -> Result<(Vec<VersionFile>, Option<i32>), db::Error> {
    let rows: Vec<RevisionFile> = tx
        .rows(&REVISION_FILES, &[&aide, &tx.user_id(), &revision])
        .await?;
    let number = rows.first().map(|r| r.revision);
    Ok((rows.into_iter().map(|r| r.file).collect(), number))
}

/// The revision version `version` was published from, if recorded.
pub async fn version_revision(
    tx: &UserTx,
    aide: Uuid,
    version: i32,
) -> Result<Option<i32>, db::Error> {
    let found: Option<Option<i32>> = tx
        .value_opt(&VERSION_REVISION, &[&aide, &tx.user_id(), &version])
        .await?;
    Ok(found.flatten())
}

pub async fn version_files(
    tx: &UserTx,
    aide: Uuid,
    version: i32,
) -> Result<Vec<VersionFile>, db::Error> {
    tx.rows(&VERSION_FILES, &[&aide, &tx.user_id(), &version])
        .await
}

/// Records version `version` and its files (one round trip).
pub async fn insert_version(
    tx: &UserTx,
    aide: Uuid,
    version: i32,
    r2_key: &str,
    notes: Option<&str>,
    revision: Option<i32>,
    files: &[VersionFile],
) -> Result<VersionRow, db::Error> {
    let user = tx.user_id();
    let size: i64 = files.iter().map(|f| f.size_bytes).sum();
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let sizes: Vec<i64> = files.iter().map(|f| f.size_bytes).collect();
    let types: Vec<&str> = files.iter().map(|f| f.content_type.as_str()).collect();
    let hashes: Vec<&[u8]> = files.iter().map(|f| f.sha256.as_slice()).collect();
    // The files' rows refer to the version's: PostgreSQL runs the statements in order.
    let (row, _) = futures_util::future::try_join(
        tx.row::<VersionRow>(
            &INSERT_VERSION,
            &[&aide, &user, &version, &r2_key, &notes, &size, &revision],
        ),
        tx.execute(
            &INSERT_VERSION_FILES,
            &[&aide, &user, &version, &paths, &sizes, &types, &hashes],
        ),
    )
    .await?;
    Ok(row)
}

pub async fn list_versions(tx: &UserTx, aide: Uuid) -> Result<Vec<VersionRow>, db::Error> {
    tx.rows(&LIST_VERSIONS, &[&aide, &tx.user_id()]).await
}

/// Gives the aide the slug it will be published under, unless it holds one: the one its owner
/// asked for, or `random`. Fails with a unique violation on `aides_slug_key` when that slug is
/// held or retired by someone else.
pub async fn claim_slug(tx: &UserTx, aide: Uuid, random: &str) -> Result<(), db::Error> {
    tx.execute(&CLAIM_SLUG, &[&aide, &tx.user_id(), &random])
        .await
        .map(|_| ())
}

/// Marks the aide published.
pub async fn mark_published(tx: &UserTx, aide: Uuid) -> Result<AideRow, db::Error> {
    tx.row(&MARK_PUBLISHED, &[&aide, &tx.user_id()]).await
}

pub async fn mark_draft(tx: &UserTx, aide: Uuid) -> Result<Option<AideRow>, db::Error> {
    tx.row_opt(&MARK_DRAFT, &[&aide, &tx.user_id()]).await
}
