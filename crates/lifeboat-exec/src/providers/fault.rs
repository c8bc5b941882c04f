//! Faults that drills apply on purpose: a server killed or hung, a WAL receiver held, a port
//! or a whole region gone silent. A [`Fault`] is built with everything its undo needs (the
//! processes by PID *and* start time, so a reused PID is never signalled; the nftables table
//! by name) and recorded before it is applied, so whoever finds it recorded can undo it: the
//! runner, or the next start after the runner was killed. Applying and undoing are
//! idempotent and bounded, and answer [`Answer`].
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
    Kill { target: String, procs: Vec<Proc> },
    /// SIGSTOP; undone by SIGCONT.
    Pause { target: String, procs: Vec<Proc> },
    /// Stopped and continued in turns by the drill (latency that rises in steps); undone by
    /// SIGCONT.
    Throttle { target: String, procs: Vec<Proc> },
    /// Every TCP packet to and from `ports` on this machine dropped, by an nftables table of
    /// its own; undone by deleting the table.
    Silence {
        target: String,
        ports: Vec<u16>,
        table: String,
    },
    /// A scratch directory a drill restores a side server into. Applying it changes
    /// nothing; undoing it stops the server there, if one runs, and removes the directory.
    Scratch {
        target: String,
        dir: PathBuf,
        os_user: Option<String>,
    },
}

impl Fault {
    /// SIGKILL to the server listening on `addr` and every process it started.
    pub fn kill(node: &str, addr: SocketAddr) -> Result<Fault, String> {
        Ok(Fault::Kill {
            target: format!("node {node}"),
            procs: server_processes(node, addr)?,
        })
    }

    /// SIGSTOP to the server listening on `addr` and every process it started: a hang.
    pub fn pause(node: &str, addr: SocketAddr) -> Result<Fault, String> {
        Ok(Fault::Pause {
            target: format!("node {node}"),
            procs: server_processes(node, addr)?,
        })
    }

    /// The server listening on `addr` and its processes, for the drill to stop and continue
    /// in turns ([`Fault::stall`]).
    pub fn throttle(node: &str, addr: SocketAddr) -> Result<Fault, String> {
        Ok(Fault::Throttle {
            target: format!("node {node}"),
            procs: server_processes(node, addr)?,
        })
    }

    /// Stops (`true`) or continues the processes of a throttle.
    pub fn stall(&self, stopped: bool) -> Answer {
        match self {
            Fault::Throttle { procs, .. } => signal_all(
                procs,
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
        Ok(Fault::Pause {
            target: format!("the WAL receiver of {node}"),
            procs,
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
            Fault::Kill { target, procs } => format!("kill {target} ({} processes)", procs.len()),
            Fault::Pause { target, procs } => {
                format!("pause {target} ({} processes)", procs.len())
            }
            Fault::Throttle { target, procs } => {
                format!("slow {target} down ({} processes)", procs.len())
            }
            Fault::Scratch { target, dir, .. } => format!("{target} in {}", dir.display()),
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
            Fault::Kill { procs, .. } => signal_all(procs, Signal::SIGKILL),
            Fault::Pause { procs, .. } => signal_all(procs, Signal::SIGSTOP),
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
        }
    }

    pub async fn undo(&self, budget: Duration) -> Answer {
        match self {
            Fault::Kill { .. } => {
                Answer::Ok("a killed server is brought back by the rejoin of the rollback".into())
            }
            Fault::Pause { procs, .. } | Fault::Throttle { procs, .. } => {
                signal_all(procs, Signal::SIGCONT)
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
        }
    }
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
    let inodes = listening_inodes(addr.port());
    let listeners: BTreeSet<i32> = pids_with_sockets(&inodes);
    if listeners.is_empty() {
        return Err(format!(
            "no process on this machine listens on {addr} (node {node}): this fault reaches only servers on the machine Lifeboat runs on"
        ));
    }
    let children = parents();
    let mut all = BTreeSet::new();
    let mut todo: Vec<i32> = listeners.into_iter().collect();
    while let Some(pid) = todo.pop() {
        if all.insert(pid) {
            todo.extend(children.get(&pid).into_iter().flatten());
        }
    }
    Ok(all
        .into_iter()
        .filter_map(|pid| start_time(pid).map(|start| Proc { pid, start }))
        .collect())
}

/// Inodes of TCP sockets listening on `port` (IPv4 and IPv6).
fn listening_inodes(port: u16) -> BTreeSet<u64> {
    let mut inodes = BTreeSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue; // not LISTEN
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                if let Ok(i) = f[9].parse() {
                    inodes.insert(i);
                }
            }
        }
    }
    inodes
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
    let mut found = BTreeSet::new();
    if inodes.is_empty() {
        return found;
    }
    for pid in pids() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let link = link.to_string_lossy();
            let inode = link
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok());
            if inode.is_some_and(|i| inodes.contains(&i)) {
                found.insert(pid);
                break;
            }
        }
    }
    found
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
