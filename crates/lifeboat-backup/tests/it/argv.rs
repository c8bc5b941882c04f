//! Passwords never appear in a process's argv, which every user of the machine reads in
//! `/proc/<pid>/cmdline` (`ps`): not while a base backup runs (`pg_basebackup`), nor while WAL
//! is streamed (`pg_receivewal`), nor while a former primary rejoins (`pg_rewind`, and
//! `pg_basebackup` for a fresh clone). Each runs against a server that demands the password,
//! through a loopback proxy that scans every process's argv before it forwards a connection,
//! so the tool is seen for certain, waiting for its server, while a thread scans all along.

use crate::helpers::new_repo;
use anyhow::{ensure, Context, Result};
use lifeboat_backup::archiver::BackupOptions;
use lifeboat_backup::postgres::base_backup;
use lifeboat_backup::progress::Progress;
use lifeboat_backup::walstream::{WalStatus, WalStreamer};
use lifeboat_postgres::{ConnInfo, InitOptions, StopMode};
use lifeboat_testkit::{PgCluster, TestDir};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Found nowhere else: any argv holding it holds the password.
const CANARY: &str = "argv-canary-4f7Q";

fn password() -> String {
    format!("{CANARY} plover")
}

/// Bounds each watched operation (its own bounds are far longer).
const OPERATION: Duration = Duration::from_secs(180);
/// Bounds the scanning thread, whatever happens to the operation.
const SCANNING: Duration = Duration::from_secs(600);

/// What the scans of `/proc` saw while one tool ran.
struct Watch {
    tool: &'static str,
    /// The tool's connection string names the proxy's port: this picks out our process.
    marker: String,
    scans: AtomicU64,
    sightings: AtomicU64,
    /// Each process whose argv held the password, once.
    leaks: Mutex<BTreeSet<String>>,
}

impl Watch {
    /// One pass over every process's argv.
    fn scan(&self) {
        let mut saw = false;
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            // Gone meanwhile, or a kernel thread: nothing to read.
            let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let argv = String::from_utf8_lossy(&raw).replace('\0', " ");
            if argv.contains(CANARY) {
                self.leaks
                    .lock()
                    .unwrap()
                    .insert(format!("pid {pid}: {argv}"));
            }
            saw |= argv.contains(self.tool) && argv.contains(&self.marker);
        }
        self.scans.fetch_add(1, Ordering::Relaxed);
        if saw {
            self.sightings.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A loopback TCP proxy to a server that scans `/proc` before it forwards each connection.
struct Proxy {
    port: u16,
    watch: Arc<Watch>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: u16, tool: &'static str) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let watch = Arc::new(Watch {
            tool,
            marker: format!("port={port} "),
            scans: AtomicU64::new(0),
            sightings: AtomicU64::new(0),
            leaks: Mutex::new(BTreeSet::new()),
        });
        let w = watch.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let w = w.clone();
                tokio::spawn(async move {
                    // The client waits for its server meanwhile: a tool is alive and seen.
                    if tokio::task::spawn_blocking(move || w.scan()).await.is_err() {
                        return;
                    }
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Ok(Proxy {
            port,
            watch,
            accept,
        })
    }

    /// How to reach `server` through this proxy.
    fn conninfo(&self, server: &PgCluster) -> ConnInfo {
        ConnInfo {
            port: self.port,
            ..server.conninfo()
        }
    }

    /// Runs `op` (bounded by [`OPERATION`]) while a thread scans every process's argv, then
    /// asserts that no scan found the password and that the tool was seen.
    async fn watch<T>(&self, op: impl Future<Output = Result<T>>) -> Result<T> {
        let stop = Arc::new(AtomicBool::new(false));
        let scanner = {
            let (stop, watch) = (stop.clone(), self.watch.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + SCANNING;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    watch.scan();
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let out = tokio::time::timeout(OPERATION, op).await;
        stop.store(true, Ordering::Relaxed);
        scanner.join().expect("scanner thread");
        let tool = self.watch.tool;
        let out = out
            .with_context(|| format!("{tool} did not finish within {OPERATION:?}"))?
            .with_context(|| format!("running {tool}"))?;
        let leaks = self.watch.leaks.lock().unwrap().clone();
        ensure!(
            leaks.is_empty(),
            "the password is in the argv of {} process(es) while {tool} ran: {leaks:?}",
            leaks.len()
        );
        let (scans, seen) = (
            self.watch.scans.load(Ordering::Relaxed),
            self.watch.sightings.load(Ordering::Relaxed),
        );
        ensure!(
            seen >= 1,
            "none of {scans} scans saw {tool} with {}: the test proved nothing",
            self.watch.marker
        );
        Ok(out)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

#[tokio::test]
async fn no_password_in_any_argv_during_a_base_backup_a_wal_stream_and_a_rejoin() -> Result<()> {
    let dir = TestDir::new("argv")?;
    let repo = new_repo(dir.path()).await?;
    let opts = InitOptions {
        superuser_password: Some(password()),
        ..InitOptions::default()
    };
    let p = PgCluster::primary(&dir, "p", opts).await?;
    p.client()
        .await?
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .await?;

    // (a) A base backup through the backup subsystem's pg_basebackup.
    let proxy = Proxy::start(p.port(), "pg_basebackup").await?;
    let conninfo = proxy.conninfo(&p).to_libpq(Some("lifeboat-backup"));
    assert!(conninfo.contains(CANARY), "the password is in the string");
    let opts = BackupOptions {
        source: "db".into(),
        tier: "full".into(),
        ..Default::default()
    };
    let (_, snap) = proxy
        .watch(async { Ok(base_backup(&repo, &conninfo, None, opts, &Progress::hidden()).await?) })
        .await?;
    assert!(snap.postgres.is_some());
    assert!(
        snap.roots.iter().all(|r| !r.contains(CANARY)),
        "nor in the snapshot: {:?}",
        snap.roots
    );

    // (b) A WAL stream through the supervised pg_receivewal.
    let proxy = Proxy::start(p.port(), "pg_receivewal").await?;
    let status = Arc::new(WalStatus::default());
    let streamer = WalStreamer {
        repo: repo.clone(),
        server: lifeboat_backup::walstream::fixed(proxy.conninfo(&p).to_libpq(None)),
        spool: dir.path().join("spool"),
        upload_every: Duration::from_millis(200),
        status: status.clone(),
        system: Default::default(),
    };
    proxy
        .watch(async {
            let cancel = CancellationToken::new();
            let task = tokio::spawn(streamer.run(cancel.clone()));
            p.client()
                .await?
                .batch_execute("SELECT pg_switch_wal()")
                .await?;
            // Synced: pg_receivewal ran, connected, and its WAL was stored.
            let deadline = Instant::now() + Duration::from_secs(60);
            while status.last_synced_ms.load(Ordering::Relaxed) == 0 {
                ensure!(
                    Instant::now() < deadline,
                    "the streamer never synced: {:?}",
                    status.last_error.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            cancel.cancel();
            tokio::time::timeout(Duration::from_secs(60), task).await??;
            Ok(())
        })
        .await?;

    // (c) A rejoin: the standby is promoted, the former primary diverges, stops, and is
    // rewound from the new primary; then cloned from it afresh.
    let s = PgCluster::standby_of(&dir, "s", &p).await?;
    let t = Duration::from_secs(60);
    lifeboat_postgres::promote(&s.conninfo(), t).await?;
    p.client()
        .await?
        .batch_execute("INSERT INTO t VALUES (99)")
        .await?;
    p.server.stop(StopMode::Fast, t).await?;
    let proxy = Proxy::start(s.port(), "pg_rewind").await?;
    let source = proxy.conninfo(&s);
    proxy
        .watch(async { Ok(p.server.rewind_from(&source, "p", t).await?) })
        .await?;
    p.server.start(t).await?;
    p.wait_streaming(t).await?;
    let rows = p.client().await?.query("SELECT x FROM t", &[]).await?;
    assert_eq!(rows.len(), 1, "the diverged row is gone after the rewind");

    p.server.stop(StopMode::Fast, t).await?;
    let proxy = Proxy::start(s.port(), "pg_basebackup").await?;
    let source = proxy.conninfo(&s);
    proxy
        .watch(async { Ok(p.server.clone_from(&source, "p", t).await?) })
        .await?;
    p.server.start(t).await?;
    p.wait_streaming(t).await?;
    Ok(())
}
