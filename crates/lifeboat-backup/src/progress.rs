//! Progress bars with throughput and ETA on a terminal; nothing otherwise.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Shown only when stderr is a terminal and `quiet` is false.
    pub fn new(quiet: bool) -> Progress {
        let show = !quiet && std::io::stderr().is_terminal();
        Progress {
            bar: show.then(|| ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())),
        }
    }

    pub fn hidden() -> Progress {
        Progress { bar: None }
    }

    pub fn start(&self, what: &str, total_bytes: u64) {
        if let Some(b) = &self.bar {
            b.reset();
            b.set_length(total_bytes);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            b.set_message(what.to_string());
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
