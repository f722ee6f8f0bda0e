//! The storage limits of a tier, and the answers when one is reached: a file's size, an aide's
//! bytes and files, and everything the account stores (workspace and published blobs).

use axum::http::StatusCode;
use uuid::Uuid;

use super::{FilePath, repo};
use crate::config::TierLimits;
use crate::db::UserTx;
use crate::error::AppError;

/// A file about to be stored.
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    pub aide: Uuid,
    pub path: &'a FilePath,
    pub size: i64,
    pub sha256: &'a [u8],
}

/// Refuses an upload that would pass the aide's byte or file limit or the account's.
pub async fn check_upload(
    tx: &UserTx,
    limits: &TierLimits,
    upload: &Upload<'_>,
) -> Result<(), AppError> {
    // Both in one round trip; the aide's limits are checked first.
    let ((used, files), account) = futures_util::future::try_join(
        repo::usage_except(tx, upload.aide, upload.path),
        repo::account_bytes_after(
            tx,
            upload.aide,
            Some((upload.path, upload.sha256, upload.size)),
            &[],
        ),
    )
    .await?;
    if files + 1 > i64::from(limits.max_files_per_aide) {
        return Err(too_large(
            "AIDE_FILE_LIMIT",
            format!(
                "An aide may hold at most {} files on your plan{}. Delete some first.",
                limits.max_files_per_aide,
                upgrade_hint(limits)
            ),
        ));
    }
    if (used + upload.size) as u64 > limits.max_aide_bytes {
        return Err(too_large(
            "AIDE_STORAGE_FULL",
            format!(
                "This aide's files may take at most {} on your plan; it uses {} and this file needs {}.",
                human(limits.max_aide_bytes),
                human(used as u64),
                human(upload.size as u64)
            ),
        ));
    }
    check_account(limits, account)
}

/// Refuses bringing back a revision of `size` bytes in `files` files that the plan no longer
/// allows in one aide (it was within the limits when it was made, perhaps on another plan).
pub fn check_revision(limits: &TierLimits, size: u64, files: u32) -> Result<(), AppError> {
    if files > limits.max_files_per_aide {
        return Err(too_large(
            "AIDE_FILE_LIMIT",
            format!(
                "That revision has {files} files; an aide may hold at most {} on your plan{}.",
                limits.max_files_per_aide,
                upgrade_hint(limits)
            ),
        ));
    }
    if size > limits.max_aide_bytes {
        return Err(too_large(
            "AIDE_STORAGE_FULL",
            format!(
                "That revision's files take {}; an aide's files may take at most {} on your plan{}.",
                human(size),
                human(limits.max_aide_bytes),
                upgrade_hint(limits)
            ),
        ));
    }
    Ok(())
}

/// Refuses a change that would leave the account storing more than its plan allows.
pub fn check_account(limits: &TierLimits, after: i64) -> Result<(), AppError> {
    if after as u64 > limits.max_account_bytes {
        return Err(too_large(
            "ACCOUNT_STORAGE_FULL",
            format!(
                "Your account may store at most {} (files and published versions of all your aides); this would make it {}. Delete aides you no longer need{}.",
                human(limits.max_account_bytes),
                human(after as u64),
                upgrade_hint(limits)
            ),
        ));
    }
    Ok(())
}

/// 413 for a file past the tier's size limit.
pub fn file_too_large(limits: &TierLimits) -> AppError {
    too_large(
        "FILE_TOO_LARGE",
        format!(
            "Files may be at most {} on your plan{}.",
            human(limits.max_file_bytes),
            if limits.pro {
                ""
            } else {
                "; Pro allows larger ones"
            }
        ),
    )
}

fn upgrade_hint(limits: &TierLimits) -> &'static str {
    if limits.pro {
        ""
    } else {
        ", or upgrade to Pro"
    }
}

fn too_large(code: &'static str, detail: String) -> AppError {
    AppError::client(StatusCode::PAYLOAD_TOO_LARGE, code, detail)
}

/// Bytes for people: KiB below a MiB, MiB below a GiB, then GiB.
pub fn human(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KIB * KIB * KIB {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    } else if b >= KIB * KIB {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else {
        format!("{:.1} KiB", b / KIB)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_naturally() {
        assert_eq!(super::human(512), "0.5 KiB");
        assert_eq!(super::human(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(super::human(10 * 1024 * 1024 * 1024), "10.0 GiB");
    }
}
