//! The decision core of Lifeboat: the domain model and the pure decision engine.
//!
//! Observations and the current time go in; a [`plan::Plan`] or a reasoned "no action" comes
//! out. Nothing here performs IO, reads a clock, spawns a task or draws a random number, so
//! every decision can be replayed, tested exhaustively and simulated. Side effects live in
//! `lifeboat-exec`.

pub mod model;
