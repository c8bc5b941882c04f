//! Region health checks beside the PostgreSQL probes: a TCP connect or an HTTP GET. A region
//! whose check is down is not a promotion target.

use crate::controller::{Event, Every};
use crate::executor::now;
use lifeboat_config::{CheckConfig, CheckKind};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Runs one check every `interval` until cancelled, sending each result as an event.
pub async fn checker(
    region: String,
    check: CheckConfig,
    interval: Duration,
    timeout: Duration,
    tx: mpsc::Sender<Event>,
    cancel: CancellationToken,
) {
    let client = reqwest::Client::builder().timeout(timeout).build();
    let mut every = Every::new(interval, cancel);
    while every.next().await {
        let result = match (&check.kind, &client) {
            (CheckKind::Tcp, _) => tcp(check.address.as_deref().unwrap_or_default(), timeout).await,
            (CheckKind::Http, Ok(c)) => {
                http(
                    c,
                    check.url.as_deref().unwrap_or_default(),
                    check.expect_status,
                )
                .await
            }
            (CheckKind::Http, Err(e)) => Err(format!("cannot build an HTTP client: {e}")),
        };
        let ev = Event::Check {
            region: region.clone(),
            check: check.name.clone(),
            at: now(),
            result,
        };
        if tx.send(ev).await.is_err() {
            return;
        }
    }
}

pub async fn tcp(address: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("tcp {address}: {e}")),
        Err(_) => Err(format!("tcp {address}: no answer within {timeout:?}")),
    }
}

pub async fn http(client: &reqwest::Client, url: &str, expect: Option<u16>) -> Result<(), String> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let ok = match expect {
        Some(code) => status.as_u16() == code,
        None => status.is_success(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "GET {url}: status {status}, expected {}",
            expect.map_or("2xx".into(), |c| c.to_string())
        ))
    }
}
