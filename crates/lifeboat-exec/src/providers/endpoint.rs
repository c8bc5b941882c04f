//! The built-in endpoint as a traffic switch: a TCP proxy in this process, so a move takes
//! effect at once and cannot fail.

use super::{Answer, TrafficSwitch};
use crate::router::Router;
use async_trait::async_trait;
use std::net::SocketAddr;

#[async_trait]
impl TrafficSwitch for Router {
    async fn block(&self, node: &str) -> Answer {
        Router::block(self, node);
        Answer::Ok(format!("endpoint no longer routes to {node}"))
    }

    async fn route(&self, node: &str, addr: SocketAddr, epoch: u64) -> Answer {
        self.route_to(node, addr, epoch);
        Answer::Ok(format!(
            "endpoint routes to {node} at {addr} (epoch {epoch})"
        ))
    }
}
