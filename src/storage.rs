//! Object storage for page files: the workspace bucket (private drafts) and the published bucket
//! (published snapshots). A local folder under AIDE_DATA_DIR by default; any S3-compatible
//! service (Cloudflare R2, AWS S3, MinIO) when R2_ENDPOINT, R2_ACCESS_KEY and R2_SECRET_KEY are
//! set. The S3 client retries transient errors with backoff.

mod cleanup;
pub mod keys;

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, RetryConfig};
use secrecy::ExposeSecret;

use crate::config::Config;

pub use cleanup::{cleanup_due, release_abandoned, run_cleanup};

/// The two buckets.
#[derive(Clone)]
pub struct Storage {
    pub workspace: Arc<dyn ObjectStore>,
    pub published: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("workspace", &self.workspace.to_string())
            .field("published", &self.published.to_string())
            .finish()
    }
}

impl Storage {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let buckets = [
            &config.storage.workspace_bucket,
            &config.storage.published_bucket,
        ];
        let [workspace, published] = match &config.storage.r2 {
            Some(r2) => buckets.map(|bucket| -> anyhow::Result<Arc<dyn ObjectStore>> {
                let store = AmazonS3Builder::new()
                    .with_endpoint(r2.endpoint.as_str().trim_end_matches('/'))
                    .with_allow_http(r2.endpoint.scheme() == "http")
                    .with_bucket_name(bucket.as_str())
                    .with_access_key_id(r2.access_key.as_str())
                    .with_secret_access_key(r2.secret_key.expose_secret())
                    // R2 ignores the region; S3 needs one for signing.
                    .with_region("auto")
                    .with_virtual_hosted_style_request(false)
                    // A request retries transient failures for 10 s at most, then the caller
                    // answers 503: a visitor or an upload should not wait longer on a storage
                    // outage.
                    .with_retry(RetryConfig {
                        max_retries: 4,
                        retry_timeout: Duration::from_secs(10),
                        ..RetryConfig::default()
                    })
                    .build()?;
                Ok(Arc::new(store))
            }),
            None => buckets.map(|bucket| -> anyhow::Result<Arc<dyn ObjectStore>> {
                let dir = config.data_dir.join("storage").join(bucket.as_str());
                std::fs::create_dir_all(&dir)
                    .map_err(|e| anyhow::anyhow!("could not create {}: {e}", dir.display()))?;
                Ok(Arc::new(LocalFileSystem::new_with_prefix(&dir)?))
            }),
        };
        Ok(Storage {
            workspace: workspace?,
            published: published?,
        })
    }
}
