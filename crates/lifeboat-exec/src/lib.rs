//! Everything Lifeboat does to the world: the controller loop that feeds observations to the
//! pure core, the one executor that carries out plans (fence, promote, route, rejoin), the
//! built-in endpoint router, health checks and the metrics they export.
//!
//! It does not decide: every choice comes from `lifeboat-core`. It does not speak HTTP to
//! users: that is `lifeboat-api`.

pub mod checks;
pub mod controller;
pub mod drill;
pub mod executor;
pub mod metrics;
pub mod notify;
pub mod providers;
pub mod router;
pub mod service;
pub mod status;
pub mod text;

pub use controller::{Controller, Event, Handle, Reply, Request};
pub use drill::{Drilled, Drills};
pub use metrics::Metrics;
pub use router::{Route, Router};
pub use service::{Node, Service, SetupError};
pub use status::Status;
