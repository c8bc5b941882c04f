//! Repository locks: `locks/<random>` holds who, why and when. Backups and restores take shared
//! locks; prune takes an exclusive one. A holder refreshes its lock every minute; a lock is
//! expired when its holder is gone: on this host its process no longer exists, elsewhere it has
//! not been refreshed for five minutes. Expired locks are removed by whoever finds them.

use crate::error::{Error, Result};
use crate::repo::host;
use crate::storage::Storage;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

const REFRESH: Duration = Duration::from_secs(60);
const STALE_AFTER: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct LockFile {
    host: String,
    pid: u32,
    exclusive: bool,
    purpose: String,
    created: u64,
    refreshed: u64,
}

impl LockFile {
    fn expired(&self, now: u64) -> bool {
        if self.host == host() {
            let pid = nix::unistd::Pid::from_raw(self.pid as i32);
            return nix::sys::signal::kill(pid, None) == Err(nix::errno::Errno::ESRCH);
        }
        now.saturating_sub(self.refreshed) > STALE_AFTER.as_secs()
    }

    fn describe(&self) -> String {
        format!(
            "{} (pid {} on {}, {})",
            self.purpose,
            self.pid,
            self.host,
            if self.exclusive {
                "exclusive"
            } else {
                "shared"
            }
        )
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct Lock {
    storage: Storage,
    key: String,
    refresher: JoinHandle<()>,
}

impl Lock {
    /// Takes a lock, waiting up to `wait` for conflicting holders to finish.
    pub async fn acquire(
        storage: &Storage,
        exclusive: bool,
        purpose: &str,
        wait: Duration,
    ) -> Result<Lock> {
        let deadline = tokio::time::Instant::now() + wait;
        let key = format!("locks/{}", hex::encode(rand::random::<[u8; 16]>()));
        let mut lf = LockFile {
            host: host(),
            pid: std::process::id(),
            exclusive,
            purpose: purpose.into(),
            created: unix_now(),
            refreshed: unix_now(),
        };
        loop {
            let conflict = match conflicting(storage, exclusive, None).await? {
                Some(c) => Some(c),
                None => {
                    storage
                        .put(&key, serde_json::to_vec(&lf).expect("lock serializes"))
                        .await?;
                    // Two processes may have looked at the same moment: look again with ours
                    // in place, and step back if another now conflicts.
                    let again = conflicting(storage, exclusive, Some(&key)).await?;
                    if again.is_some() {
                        storage.delete(&key).await?;
                    }
                    again
                }
            };
            let Some(holder) = conflict else { break };
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Locked { holder });
            }
            let jitter = Duration::from_millis(200 + rand::random::<u64>() % 800);
            tokio::time::sleep(jitter).await;
        }
        let (s, k) = (storage.clone(), key.clone());
        let refresher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                lf.refreshed = unix_now();
                if let Err(e) = s
                    .put(&k, serde_json::to_vec(&lf).expect("serializes"))
                    .await
                {
                    tracing::warn!(error = %e, lock = %k, "could not refresh the repository lock");
                }
            }
        });
        Ok(Lock {
            storage: storage.clone(),
            key,
            refresher,
        })
    }

    pub async fn release(self) -> Result<()> {
        self.refresher.abort();
        self.storage.delete(&self.key).await
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// The first live lock that conflicts, removing expired ones on the way.
async fn conflicting(
    storage: &Storage,
    exclusive: bool,
    own: Option<&str>,
) -> Result<Option<String>> {
    let now = unix_now();
    for l in storage.list("locks/").await? {
        if Some(l.key.as_str()) == own {
            continue;
        }
        let Some(bytes) = storage.get(&l.key).await? else {
            continue;
        };
        let Ok(other) = serde_json::from_slice::<LockFile>(&bytes) else {
            tracing::warn!(lock = %l.key, "ignoring an unreadable lock file");
            continue;
        };
        if other.expired(now) {
            tracing::info!(lock = %l.key, holder = %other.describe(), "removing an expired lock");
            storage.delete(&l.key).await?;
            continue;
        }
        if exclusive || other.exclusive {
            return Ok(Some(other.describe()));
        }
    }
    Ok(None)
}
