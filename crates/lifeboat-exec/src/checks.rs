//! Region health checks beside the PostgreSQL probes: a TCP connect or an HTTP GET. A region
//! whose check is down is not a promotion target.

use crate::controller::{overlapping, Event};
use lifeboat_config::{CheckConfig, CheckKind};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Runs one check every `interval` until cancelled, sending each result as an event.
/// Checks overlap like node probes: a check that hangs never delays the next.
pub async fn checker(
    region: String,
    check: CheckConfig,
    interval: Duration,
    timeout: Duration,
    tx: mpsc::Sender<Event>,
    cancel: CancellationToken,
) {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"));
    let name = check.name.clone();
    overlapping(
        interval,
        timeout,
        cancel,
        tx,
        move || {
            let (check, client) = (check.clone(), client.clone());
            async move {
                match check.kind {
                    CheckKind::Tcp => {
                        tcp(check.address.as_deref().unwrap_or_default(), timeout).await
                    }
                    CheckKind::Http => {
                        let url = check.url.as_deref().unwrap_or_default();
                        http(&client?, url, check.expect_status).await
                    }
                }
            }
        },
        move |started, at, result| Event::Check {
            region: region.clone(),
            check: name.clone(),
            started,
            at,
            result,
        },
    )
    .await
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
