//! The `lifeboat` binary: parse arguments, load the config, hand over to a subsystem.

mod cli;
mod client;
mod daemon;
mod demo;
mod drill;
mod monitoring;
mod notify;

use clap::Parser;
use std::process::ExitCode;

/// jemalloc, configured in .cargo/config.toml to return freed memory at once: backups and
/// restores free pack-sized buffers (up to 16 MiB) on many threads, which glibc's allocator
/// kept, doubling peak memory.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(cli::dispatch(args))
}
