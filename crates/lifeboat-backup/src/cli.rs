//! The `lifeboat backup|restore|wal` commands. The binary parses them with clap and calls the
//! functions here; each prints its own output and returns the process exit code.

use lifeboat_config::Config;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct BackupArgs {}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {}

#[derive(Debug, clap::Args)]
pub struct WalArgs {}

pub async fn backup(_args: BackupArgs, _config: Option<&Config>) -> ExitCode {
    eprintln!("lifeboat backup: not available yet");
    ExitCode::from(2)
}

pub async fn restore(_args: RestoreArgs, _config: Option<&Config>) -> ExitCode {
    eprintln!("lifeboat restore: not available yet");
    ExitCode::from(2)
}

pub async fn wal(_args: WalArgs, _config: Option<&Config>) -> ExitCode {
    eprintln!("lifeboat wal: not available yet");
    ExitCode::from(2)
}
