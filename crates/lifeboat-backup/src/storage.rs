//! Where a repository lives: a local directory or an S3-compatible bucket, both through
//! `object_store`. Writes are whole-object and atomic (a local write goes to a temporary file
//! that is renamed; an S3 PUT is atomic), so a killed backup never leaves a torn object.

use crate::error::{Error, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// How the user named it (`/srv/backups` or `s3://bucket/prefix`), for messages.
    pub location: String,
}

pub struct Listed {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

impl Storage {
    /// Opens `PATH` (created when `create`) or `s3://bucket[/prefix]`. S3 settings come from the
    /// usual `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ALLOW_HTTP`).
    pub fn open(location: &str, create: bool) -> Result<Storage> {
        let bad = |reason: String| Error::Location {
            location: location.into(),
            reason,
        };
        let store: Arc<dyn ObjectStore> = if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("expected s3://BUCKET[/PREFIX]".into()));
            }
            let mut builder = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(object_store::RetryConfig {
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(20),
                    ..Default::default()
                })
                .with_client_options(
                    object_store::ClientOptions::new()
                        .with_connect_timeout(Duration::from_secs(5))
                        .with_timeout(Duration::from_secs(120))
                        .with_allow_http(
                            std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true"),
                        ),
                );
            if std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            {
                builder = builder.with_region("us-east-1");
            }
            let s3 = builder.build().map_err(|e| bad(e.to_string()))?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            }
        } else if location.contains("://") {
            return Err(bad(
                "expected a directory path or s3://BUCKET[/PREFIX]".into()
            ));
        } else {
            if create {
                std::fs::create_dir_all(location).map_err(|e| bad(e.to_string()))?;
            }
            let local = object_store::local::LocalFileSystem::new_with_prefix(location)
                .map_err(|e| bad(e.to_string()))?;
            Arc::new(local.with_automatic_cleanup(true))
        };
        Ok(Storage {
            store,
            location: location.into(),
        })
    }

    fn err(&self, op: &'static str, key: &str) -> impl FnOnce(object_store::Error) -> Error {
        let (key, repo) = (key.to_string(), self.location.clone());
        move |source| Error::Storage {
            hint: if source.to_string().contains("No space left on device") {
                "; free space where the repository lives (`lifeboat backup prune` also removes what failed backups left), then run the backup again"
            } else {
                ""
            },
            op,
            key,
            repo,
            source: Box::new(source),
        }
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(&Key::from(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(self.err("writing", key))
    }

    /// `None` when the object does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.store.get(&Key::from(key)).await {
            Ok(r) => r.bytes().await.map(Some).map_err(self.err("reading", key)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("reading", key)(e)),
        }
    }

    /// The object, which must exist.
    pub async fn get_required(&self, key: &str) -> Result<Bytes> {
        self.get(key)
            .await?
            .ok_or_else(|| Error::corrupt(format!("{key} is missing")))
    }

    pub async fn get_range(&self, key: &str, range: std::ops::Range<usize>) -> Result<Bytes> {
        self.store
            .get_range(&Key::from(key), range)
            .await
            .map_err(self.err("reading", key))
    }

    pub async fn size(&self, key: &str) -> Result<Option<u64>> {
        match self.store.head(&Key::from(key)).await {
            Ok(m) => Ok(Some(m.size as u64)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("reading", key)(e)),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let p = Key::from(prefix);
        self.store
            .list(Some(&p))
            .map_ok(|m| Listed {
                key: m.location.to_string(),
                size: m.size as u64,
                modified: m.last_modified.into(),
            })
            .try_collect()
            .await
            .map_err(self.err("listing", prefix))
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&Key::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("deleting", key)(e)),
        }
    }
}
