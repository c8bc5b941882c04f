//! The repository against a real local directory: round trips, dedup, wrong keys, damage,
//! concurrency, locks and prune. S3 and killed processes are covered by the binary's tests.

mod argv;
mod helpers;
mod postgres;
mod repository;
