//! Faults that drills apply on purpose: a server killed, hung or slowed down, a WAL receiver
//! held, a port or a whole region gone silent, regions cut apart, a file system filled (and
//! the scratch directory of a side server, cleaned up like a fault). A [`Fault`] is built with
//! everything its undo needs (processes by PID *and* start time, so a reused PID is never
//! signalled; the nftables table and cgroups by name; the fill file) and recorded before it is
//! applied, so whoever finds it recorded can undo it: the runner, or the next start after the
//! runner was killed. Applying and undoing are idempotent and bounded, and answer [`Answer`].
//!
//! Processes are found from the listening socket: the process that listens on the node's
//! port on this machine, and every process it started. So a fault reaches only servers that
//! run where Lifeboat runs, and says so otherwise.

use super::Answer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A process as the kernel knows it: PID and start time (clock ticks since boot), which
/// together name one process for its whole life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    pub pid: i32,
    pub start: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL to a server and its processes. Undone by bringing the node back (a rejoin),
    /// which is the drill's rollback, not a signal.
    Kill {
        target: String,
        procs: Vec<Proc>,
        #[serde(default)]
        port: u16,
    },
    /// SIGSTOP; undone by SIGCONT.
    Pause {
        target: String,
        procs: Vec<Proc>,
        #[serde(default)]
        port: u16,
    },
    /// Stopped and continued in turns by the drill (latency that rises in steps); undone by
    /// SIGCONT.
    Throttle {
        target: String,
        procs: Vec<Proc>,
        #[serde(default)]
        port: u16,
    },
    /// Every TCP packet to and from `ports` on this machine dropped, by an nftables table of
    /// its own; undone by deleting the table.
    Silence {
        target: String,
        ports: Vec<u16>,
        table: String,
    },
    /// The servers of two groups of regions cut off from each other, and from nobody else:
    /// each side's processes are moved into a cgroup of their own, and nftables drops every
    /// TCP packet a socket of one side sends to, or receives from, a port of the other.
    /// Undone by deleting the table and moving every process back.
    Partition {
        target: String,
        table: String,
        sides: Vec<Side>,
    },
    /// The file system holding `file` filled up by allocating `file`; undone by removing it.
    FillDisk { target: String, file: PathBuf },
    /// A scratch directory a drill restores a side server into. Applying it changes
    /// nothing; undoing it stops the server there, if one runs, and removes the directory.
    Scratch {
        target: String,
        dir: PathBuf,
        os_user: Option<String>,
    },
}

/// One side of a partition: its servers' ports and processes, the cgroup they are moved
/// into (relative to the cgroup v2 root) and the one they came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Side {
    pub ports: Vec<u16>,
    pub procs: Vec<Proc>,
    pub cgroup: String,
    pub home: String,
}

/// Where the cgroup v2 hierarchy is mounted.
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

/// The cgroup v2 path of a process, relative to the hierarchy's root (`/` for the root).
fn cgroup_of(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

impl Fault {
    /// Cuts the servers listening on `a` off from those listening on `b` (each a list of
    /// node names and addresses on this machine).
    pub fn partition(
        target: String,
        a: &[(String, SocketAddr)],
        b: &[(String, SocketAddr)],
        tag: &str,
    ) -> Result<Fault, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err(format!(
                "a partition ({target}) moves servers into cgroups and drops their packets with nftables, which needs root, and Lifeboat runs as uid {}; run the daemon as root",
                nix::unistd::geteuid()
            ));
        }
        if cgroup2_root().is_none() {
            return Err("a partition needs a cgroup v2 hierarchy, and none is mounted".into());
        }
        let side = |nodes: &[(String, SocketAddr)], name: &str| -> Result<Side, String> {
            let mut procs = Vec::new();
            for (n, addr) in nodes {
                procs.extend(server_processes(n, *addr)?);
            }
            let home = procs
                .first()
                .and_then(|p| cgroup_of(p.pid))
                .ok_or_else(|| format!("cannot read the cgroup of {}", nodes[0].0))?;
            Ok(Side {
                ports: nodes.iter().map(|(_, a)| a.port()).collect(),
                procs,
                cgroup: format!("lifeboat-drill-{tag}-{name}"),
                home,
            })
        };
        Ok(Fault::Partition {
            target,
            table: format!("lifeboat_drill_{tag}"),
            sides: vec![side(a, "a")?, side(b, "b")?],
        })
    }

    /// SIGKILL to the server listening on `addr` and every process it started.
    pub fn kill(node: &str, addr: SocketAddr) -> Result<Fault, String> {
        Ok(Fault::Kill {
            target: format!("node {node}"),
            procs: server_processes(node, addr)?,
            port: addr.port(),
        })
    }

    /// SIGSTOP to the server listening on `addr` and every process it started: a hang.
    pub fn pause(node: &str, addr: SocketAddr) -> Result<Fault, String> {
        Ok(Fault::Pause {
            target: format!("node {node}"),
            procs: server_processes(node, addr)?,
            port: addr.port(),
        })
    }

    /// The server listening on `addr` and its processes, for the drill to stop and continue
    /// in turns ([`Fault::stall`]).
    pub fn throttle(node: &str, addr: SocketAddr) -> Result<Fault, String> {
        Ok(Fault::Throttle {
            target: format!("node {node}"),
            procs: server_processes(node, addr)?,
            port: addr.port(),
        })
    }

    /// Stops (`true`) or continues the processes of a throttle.
    pub fn stall(&self, stopped: bool) -> Answer {
        match self {
            Fault::Throttle { procs, port, .. } => signal_all(
                &now_or(procs, *port),
                if stopped {
                    Signal::SIGSTOP
                } else {
                    Signal::SIGCONT
                },
            ),
            other => Answer::Failed(format!("{} is not a throttle", other.describe())),
        }
    }

    /// SIGSTOP to the WAL receiver of the PostgreSQL standby listening on `addr`: the standby
    /// keeps answering, and falls behind.
    pub fn hold_wal_receiver(node: &str, addr: SocketAddr) -> Result<Fault, String> {
        let procs: Vec<Proc> = server_processes(node, addr)?
            .into_iter()
            .filter(|p| cmdline(p.pid).contains("walreceiver"))
            .collect();
        if procs.is_empty() {
            return Err(format!(
                "node {node} has no WAL receiver process: is it a streaming standby?"
            ));
        }
        // Port 0: only these processes, not the whole server.
        Ok(Fault::Pause {
            target: format!("the WAL receiver of {node}"),
            procs,
            port: 0,
        })
    }

    /// Drops every TCP packet to and from `ports`. `tag` makes the nftables table's name
    /// unique (the drill run and fault).
    pub fn silence(target: String, ports: Vec<u16>, tag: &str) -> Result<Fault, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err(format!(
                "a silent network ({target}) is made by dropping packets with nftables, which needs root, and Lifeboat runs as uid {}; run the daemon as root, or drill a primary failure with fault = \"pause\" (a hung server, no root needed)",
                nix::unistd::geteuid()
            ));
        }
        if ports.is_empty() {
            return Err(format!("{target}: no ports to silence"));
        }
        Ok(Fault::Silence {
            target,
            ports,
            table: format!("lifeboat_drill_{tag}"),
        })
    }

    /// What this fault does, in one line.
    pub fn describe(&self) -> String {
        match self {
            Fault::Kill { target, procs, .. } => {
                format!("kill {target} ({} processes)", procs.len())
            }
            Fault::Pause { target, procs, .. } => {
                format!("pause {target} ({} processes)", procs.len())
            }
            Fault::Throttle { target, procs, .. } => {
                format!("slow {target} down ({} processes)", procs.len())
            }
            Fault::Scratch { target, dir, .. } => format!("{target} in {}", dir.display()),
            Fault::Partition { target, .. } => format!("partition {target}"),
            Fault::FillDisk { target, file } => {
                format!("fill {target} (with {})", file.display())
            }
            Fault::Silence { target, ports, .. } => format!(
                "silence {target} (ports {})",
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    pub async fn apply(&self, budget: Duration) -> Answer {
        match self {
            Fault::Kill { procs, port, .. } => signal_all(&now_or(procs, *port), Signal::SIGKILL),
            Fault::Pause { procs, port, .. } => signal_all(&now_or(procs, *port), Signal::SIGSTOP),
            Fault::Throttle { .. } => {
                Answer::Ok("the drill stops and continues them in turns".into())
            }
            Fault::Silence { ports, table, .. } => {
                let drops: String = ports
                    .iter()
                    .map(|p| format!("    tcp dport {p} drop\n    tcp sport {p} drop\n"))
                    .collect();
                let rules = format!(
                    "table inet {table} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n{drops}  }}\n}}\n"
                );
                match nft(&["-f", "-"], Some(rules), budget).await {
                    Ok(()) => Answer::Ok(format!("nftables table {table} drops them")),
                    Err(e) => Answer::Failed(e),
                }
            }
            Fault::Scratch { dir, .. } => {
                Answer::Ok(format!("{} is removed by the rollback", dir.display()))
            }
            Fault::FillDisk { file, .. } => match fill(file) {
                Ok(said) => Answer::Ok(said),
                Err(e) => Answer::Failed(e),
            },
            Fault::Partition { table, sides, .. } => match partition(table, sides, budget).await {
                Ok(said) => Answer::Ok(said),
                Err(e) => Answer::Failed(e),
            },
        }
    }

    pub async fn undo(&self, budget: Duration) -> Answer {
        match self {
            Fault::Kill { .. } => {
                Answer::Ok("a killed server is brought back by the rejoin of the rollback".into())
            }
            Fault::Pause { procs, port, .. } | Fault::Throttle { procs, port, .. } => {
                signal_all(&now_or(procs, *port), Signal::SIGCONT)
            }
            Fault::Silence { table, .. } => {
                match nft(&["delete", "table", "inet", table], None, budget).await {
                    Ok(()) => Answer::Ok(format!("nftables table {table} deleted")),
                    Err(e) if e.contains("No such file") => {
                        Answer::Ok(format!("nftables table {table} was already gone"))
                    }
                    Err(e) => Answer::Failed(e),
                }
            }
            Fault::Scratch { dir, os_user, .. } => {
                remove_scratch(dir, os_user.clone(), budget).await
            }
            Fault::FillDisk { file, .. } => match std::fs::remove_file(file) {
                Ok(()) => Answer::Ok(format!("{} removed", file.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Answer::Ok(format!("{} was already gone", file.display()))
                }
                Err(e) => Answer::Failed(format!("removing {}: {e}", file.display())),
            },
            Fault::Partition { table, sides, .. } => {
                let mut errors = Vec::new();
                match nft(&["delete", "table", "inet", table], None, budget).await {
                    Err(e) if !e.contains("No such file") => errors.push(e),
                    _ => {}
                }
                for side in sides {
                    if let Err(e) = move_home(side) {
                        errors.push(e);
                    }
                }
                if errors.is_empty() {
                    Answer::Ok(format!(
                        "nftables table {table} deleted, every process back in its cgroup"
                    ))
                } else {
                    Answer::Failed(errors.join("; "))
                }
            }
        }
    }
}

/// Allocates every free byte of the file system holding `file` to it (what an unprivileged
/// server may use; the file is created with room to spare for metadata).
fn fill(file: &std::path::Path) -> Result<String, String> {
    use std::os::fd::AsRawFd;
    let dir = file.parent().unwrap_or(file);
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(file)
        .map_err(|e| format!("creating {}: {e}", file.display()))?;
    // A little less at each try: the allocation needs some metadata of its own.
    let mut len = free;
    for _ in 0..64 {
        match nix::fcntl::fallocate(
            f.as_raw_fd(),
            nix::fcntl::FallocateFlags::empty(),
            0,
            len as i64,
        ) {
            Ok(()) => {
                return Ok(format!(
                    "{} of {} allocated to {}",
                    lifeboat_core::time::format_bytes(len),
                    dir.display(),
                    file.display()
                ))
            }
            Err(nix::errno::Errno::ENOSPC) if len > 1 << 20 => len -= (len / 64).max(1 << 20),
            Err(e) => {
                let _ = std::fs::remove_file(file);
                return Err(format!("allocating {len} bytes to {}: {e}", file.display()));
            }
        }
    }
    let _ = std::fs::remove_file(file);
    Err(format!("could not fill {}", dir.display()))
}

/// Moves each side's processes into its cgroup, then drops the packets between the sides.
async fn partition(table: &str, sides: &[Side], budget: Duration) -> Result<String, String> {
    let root = cgroup2_root().ok_or("no cgroup v2 hierarchy")?;
    // The servers' processes as they are now (backends come and go).
    let now: Vec<Vec<Proc>> = sides
        .iter()
        .map(|s| s.ports.iter().flat_map(|p| listening_on(*p)).collect())
        .collect();
    for (side, procs) in sides.iter().zip(&now) {
        let dir = root.join(&side.cgroup);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for p in procs {
            match std::fs::write(dir.join("cgroup.procs"), p.pid.to_string()) {
                Err(e) if e.raw_os_error() != Some(nix::libc::ESRCH) => {
                    return Err(format!("moving pid {} into {}: {e}", p.pid, dir.display()))
                }
                _ => {}
            }
        }
    }
    // nft names a cgroup by its path below /sys/fs/cgroup; `level` is its depth in the v2 tree.
    let rel = |side: &Side| {
        let full = root.join(&side.cgroup);
        full.strip_prefix("/sys/fs/cgroup")
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| side.cgroup.clone())
    };
    let ports = |side: &Side| {
        side.ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (a, b) = (&sides[0], &sides[1]);
    // New connections: a socket keeps the cgroup it was created in, so the cgroup rules
    // catch the sockets made after the move. Connections that exist already (a standby's
    // stream) are cut by their port pairs, both ways.
    let mut pairs = String::new();
    for (procs, other) in [(&now[0], b), (&now[1], a)] {
        for (local, remote) in established_to(procs, &other.ports) {
            pairs.push_str(&format!(
                "    tcp sport {local} tcp dport {remote} drop\n    tcp sport {remote} tcp dport {local} drop\n"
            ));
        }
    }
    let rules = format!(
        "table inet {table} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    socket cgroupv2 level 1 \"{ra}\" tcp dport {{ {pb} }} drop\n    socket cgroupv2 level 1 \"{rb}\" tcp dport {{ {pa} }} drop\n{pairs}  }}\n}}\n",
        ra = rel(a),
        rb = rel(b),
        pa = ports(a),
        pb = ports(b),
    );
    nft(&["-f", "-"], Some(rules), budget).await?;
    Ok(format!(
        "ports {} and {} cut off from each other (nftables table {table})",
        ports(a),
        ports(b)
    ))
}

/// (local port, remote port) of the established TCP connections of `procs` to one of `ports`.
fn established_to(procs: &[Proc], ports: &[u16]) -> Vec<(u16, u16)> {
    let inodes: BTreeSet<u64> = procs.iter().flat_map(|p| socket_inodes(p.pid)).collect();
    tcp_sockets()
        .into_iter()
        .filter(|t| {
            t.state == ESTABLISHED && inodes.contains(&t.inode) && ports.contains(&t.remote)
        })
        .map(|t| (t.local, t.remote))
        .collect()
}

/// Moves every process of the side's cgroup (those it started since, too) back home, and
/// removes the cgroup.
fn move_home(side: &Side) -> Result<(), String> {
    let Some(root) = cgroup2_root() else {
        return Ok(());
    };
    let dir = root.join(&side.cgroup);
    if !dir.exists() {
        return Ok(());
    }
    let home = root.join(side.home.trim_start_matches('/'));
    // Processes come and go meanwhile (a server forks, a backend exits): move what is
    // there until the cgroup is empty and can be removed; bounded.
    let mut last = String::new();
    for _ in 0..50 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            match std::fs::write(home.join("cgroup.procs"), pid) {
                Err(e) if e.raw_os_error() != Some(nix::libc::ESRCH) => {
                    return Err(format!("moving pid {pid} back to {}: {e}", home.display()))
                }
                _ => {}
            }
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("removing {}: {last}", dir.display()))
}

/// Stops the PostgreSQL server of `dir` if one runs there, then removes `dir` and its log.
async fn remove_scratch(
    dir: &std::path::Path,
    os_user: Option<String>,
    budget: Duration,
) -> Answer {
    let mut said = String::new();
    if dir.join("postmaster.pid").exists() {
        let server = lifeboat_postgres::LocalServer::find_bin_dir().map(|bin_dir| {
            lifeboat_postgres::LocalServer {
                bin_dir,
                data_dir: dir.to_path_buf(),
                os_user,
                port: 0,
            }
        });
        match server {
            Ok(s) => match s.stop(lifeboat_postgres::StopMode::Fast, budget).await {
                Ok(()) => said.push_str("its server stopped; "),
                Err(e) => {
                    return Answer::Failed(format!("stopping the server in {}: {e}", dir.display()))
                }
            },
            Err(e) => return Answer::Failed(e.to_string()),
        }
    }
    // The server's log sits beside its data directory (`LocalServer::log_file`).
    let mut log = dir.as_os_str().to_owned();
    log.push(".log");
    let _ = std::fs::remove_file(log);
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Answer::Ok(format!("{said}{} removed", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Answer::Ok(format!("{said}{} was already gone", dir.display()))
        }
        Err(e) => Answer::Failed(format!("removing {}: {e}", dir.display())),
    }
}

/// The recorded processes and, when the fault names its server's port, every process of that
/// server now: a server starts processes after the fault was prepared (a backend for each new
/// client), and they are part of the server as much as the ones recorded.
fn now_or(recorded: &[Proc], port: u16) -> Vec<Proc> {
    let mut all: Vec<Proc> = recorded.to_vec();
    if port != 0 {
        for p in listening_on(port) {
            if !all.contains(&p) {
                all.push(p);
            }
        }
    }
    all
}

/// Signals every process that is still the one recorded (same PID, same start time).
fn signal_all(procs: &[Proc], sig: Signal) -> Answer {
    let mut sent = 0;
    let mut errors = Vec::new();
    for p in procs {
        if start_time(p.pid) != Some(p.start) {
            continue; // gone (or its PID reused): nothing to do
        }
        match kill(Pid::from_raw(p.pid), sig) {
            Ok(()) => sent += 1,
            Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => errors.push(format!("pid {}: {e}", p.pid)),
        }
    }
    if errors.is_empty() {
        Answer::Ok(format!("{sig} sent to {sent} of {} processes", procs.len()))
    } else {
        Answer::Failed(format!("{sig}: {}", errors.join("; ")))
    }
}

async fn nft(args: &[&str], stdin: Option<String>, budget: Duration) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run nft (Debian package nftables): {e}"))?;
    let mut input = child.stdin.take();
    let run = async {
        if let (Some(i), Some(text)) = (input.as_mut(), stdin) {
            i.write_all(text.as_bytes())
                .await
                .map_err(|e| format!("nft: {e}"))?;
        }
        drop(input);
        child
            .wait_with_output()
            .await
            .map_err(|e| format!("nft: {e}"))
    };
    let out = tokio::time::timeout(budget, run)
        .await
        .map_err(|_| format!("nft did not finish within {budget:?}"))??;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The process listening on `addr`'s port on this machine and every process it started.
pub fn server_processes(node: &str, addr: SocketAddr) -> Result<Vec<Proc>, String> {
    let procs = listening_on(addr.port());
    if procs.is_empty() {
        return Err(format!(
            "no process on this machine listens on {addr} (node {node}): this fault reaches only servers on the machine Lifeboat runs on"
        ));
    }
    Ok(procs)
}

/// The process listening on `port` on this machine and every process it started, now.
fn listening_on(port: u16) -> Vec<Proc> {
    let listeners: BTreeSet<i32> = pids_with_sockets(&listening_inodes(port));
    let children = parents();
    let mut all = BTreeSet::new();
    let mut todo: Vec<i32> = listeners.into_iter().collect();
    while let Some(pid) = todo.pop() {
        if all.insert(pid) {
            todo.extend(children.get(&pid).into_iter().flatten());
        }
    }
    all.into_iter()
        .filter_map(|pid| start_time(pid).map(|start| Proc { pid, start }))
        .collect()
}

const ESTABLISHED: u8 = 0x01;
const LISTEN: u8 = 0x0A;

/// A TCP socket of this machine, as `/proc/net/tcp` and `tcp6` list it.
struct TcpSocket {
    state: u8,
    local: u16,
    remote: u16,
    inode: u64,
}

fn tcp_sockets() -> Vec<TcpSocket> {
    let port = |field: &str| {
        field
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let mut all = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            if let (Some(local), Some(remote), Ok(state), Ok(inode)) = (
                port(f[1]),
                port(f[2]),
                u8::from_str_radix(f[3], 16),
                f[9].parse(),
            ) {
                all.push(TcpSocket {
                    state,
                    local,
                    remote,
                    inode,
                });
            }
        }
    }
    all
}

/// Inodes of TCP sockets listening on `port` (IPv4 and IPv6).
fn listening_inodes(port: u16) -> BTreeSet<u64> {
    tcp_sockets()
        .into_iter()
        .filter(|t| t.state == LISTEN && t.local == port)
        .map(|t| t.inode)
        .collect()
}

/// Inodes of the sockets `pid` holds open.
fn socket_inodes(pid: i32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| {
            let link = std::fs::read_link(fd.path()).ok()?;
            link.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn pids_with_sockets(inodes: &BTreeSet<u64>) -> BTreeSet<i32> {
    if inodes.is_empty() {
        return BTreeSet::new();
    }
    pids()
        .into_iter()
        .filter(|pid| socket_inodes(*pid).iter().any(|i| inodes.contains(i)))
        .collect()
}

/// `/proc/PID/stat` fields after the command name (which may hold spaces and parentheses).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Children of every process, by parent PID (field 4).
fn parents() -> BTreeMap<i32, Vec<i32>> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for pid in pids() {
        if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1)?.parse().ok()) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    children
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SELF: &str =
        "providers::fault::tests::a_silent_network_without_root_is_refused_naming_the_alternative";

    /// Without root the silence fault is refused, naming what works without root. Run as
    /// root (CI), the test runs itself again as `nobody`.
    #[test]
    fn a_silent_network_without_root_is_refused_naming_the_alternative() {
        if !nix::unistd::geteuid().is_root() {
            let e = Fault::silence("node pg-a".into(), vec![5432], "t").unwrap_err();
            assert!(e.contains("needs root"), "{e}");
            assert!(e.contains("fault = \"pause\""), "{e}");
            println!("refused as uid {}: {e}", nix::unistd::geteuid());
            return;
        }
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&exe)
            .args(["--exact", SELF, "--nocapture"])
            .output()
            .expect("setpriv (util-linux)");
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("Permission denied")
        {
            eprintln!(
                "skipped: nobody cannot run {}: {}",
                exe.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("refused as uid 65534"), "{text}");
    }
}
