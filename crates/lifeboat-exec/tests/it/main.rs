//! The endpoint router and the region checks over real sockets on loopback, and the executor
//! against a real PostgreSQL.

mod executor;

use lifeboat_exec::{checks, Route, Router};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const HOLD: Duration = Duration::from_millis(300);

/// A server that answers every line with its own name, to tell where a client landed.
async fn named_server(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(name.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn ask(s: &mut TcpStream) -> std::io::Result<String> {
    s.write_all(b"?").await?;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

async fn endpoint(router: &Router, cancel: &CancellationToken) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let tasks = TaskTracker::new();
    tokio::spawn(
        router
            .clone()
            .serve(l, HOLD, Duration::from_secs(1), cancel.clone(), tasks),
    );
    addr
}

#[tokio::test]
async fn routes_to_one_primary_and_cuts_connections_when_the_route_moves() {
    let (a, b) = (named_server("a").await, named_server("b").await);
    let router = Router::new();
    let cancel = CancellationToken::new();
    let ep = endpoint(&router, &cancel).await;

    router.route_to("a", a, 1);
    let mut c1 = TcpStream::connect(ep).await.unwrap();
    assert_eq!(ask(&mut c1).await.unwrap(), "a");
    assert_eq!(router.stats.active.load(Ordering::Relaxed), 1);

    router.route_to("b", b, 2);
    // The old connection is cut: the next read sees the end of the stream or an error.
    let r = ask(&mut c1).await;
    assert!(
        matches!(&r, Ok(s) if s.is_empty()) || r.is_err(),
        "connection to a survived: {r:?}"
    );
    let mut c2 = TcpStream::connect(ep).await.unwrap();
    assert_eq!(ask(&mut c2).await.unwrap(), "b");
    assert_eq!(router.stats.cut.load(Ordering::Relaxed), 1);
    assert_eq!(
        router.current(),
        Route::To {
            node: "b".into(),
            addr: b,
            epoch: 2
        }
    );
    cancel.cancel();
}

#[tokio::test]
async fn a_blocked_endpoint_holds_new_clients_then_lets_them_through() {
    let a = named_server("a").await;
    let router = Router::new();
    let cancel = CancellationToken::new();
    let ep = endpoint(&router, &cancel).await;
    router.route_to("a", a, 1);
    let mut held = TcpStream::connect(ep).await.unwrap();
    assert_eq!(ask(&mut held).await.unwrap(), "a");

    router.block("a");
    assert_eq!(router.current(), Route::Blocked);
    // Blocking cuts the existing connection too.
    let r = ask(&mut held).await;
    assert!(matches!(&r, Ok(s) if s.is_empty()) || r.is_err(), "{r:?}");

    // A client arriving while blocked waits; routing within the hold time lets it through.
    let mut waiting = TcpStream::connect(ep).await.unwrap();
    waiting.write_all(b"?").await.unwrap();
    tokio::time::sleep(HOLD / 3).await;
    router.route_to("a", a, 2);
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), waiting.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"a");

    // Blocking another node leaves the route alone.
    router.block("zzz");
    assert!(matches!(router.current(), Route::To { ref node, .. } if node == "a"));
    cancel.cancel();
}

#[tokio::test]
async fn a_client_held_past_the_hold_timeout_is_closed() {
    let router = Router::new();
    let cancel = CancellationToken::new();
    let ep = endpoint(&router, &cancel).await;
    let mut c = TcpStream::connect(ep).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the held client must be closed");
    assert_eq!(router.stats.held_timeouts.load(Ordering::Relaxed), 1);
    cancel.cancel();
}

/// A one-shot HTTP server answering every request with `status`.
async fn http_server(status: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = s.write_all(body.as_bytes()).await;
        }
    });
    addr
}

#[tokio::test]
async fn tcp_and_http_checks_report_what_they_saw() {
    let t = Duration::from_secs(2);
    let up = named_server("x").await;
    assert_eq!(checks::tcp(&up.to_string(), t).await, Ok(()));
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap(); // dropped: nothing listens
    let err = checks::tcp(&closed.to_string(), t).await.unwrap_err();
    assert!(err.starts_with(&format!("tcp {closed}: ")), "{err}");

    let client = reqwest::Client::builder().timeout(t).build().unwrap();
    let ok = http_server("200 OK").await;
    assert_eq!(
        checks::http(&client, &format!("http://{ok}/healthz"), None).await,
        Ok(())
    );
    let teapot = http_server("418 I'm a teapot").await;
    assert_eq!(
        checks::http(&client, &format!("http://{teapot}/"), Some(418)).await,
        Ok(())
    );
    let down = http_server("503 Service Unavailable").await;
    let err = checks::http(&client, &format!("http://{down}/healthz"), None)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        format!("GET http://{down}/healthz: status 503 Service Unavailable, expected 2xx")
    );
}

/// Reads until the connection ends (end of stream or an error), at most `bound`.
async fn ended_within(s: &mut TcpStream, bound: Duration) -> bool {
    let mut buf = [0u8; 64];
    tokio::time::timeout(bound, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A client connected through an endpoint to server "a", which has answered once and whose
/// network then went silent with the client's next request in flight; `None` (with the
/// reason printed) where a silent network cannot be made.
async fn client_of_a_silenced_upstream(
    upstream_timeout: Duration,
) -> Option<(
    Router,
    CancellationToken,
    TcpStream,
    lifeboat_testkit::SilentPort,
)> {
    if let Some(why) = lifeboat_testkit::SilentPort::unavailable() {
        eprintln!("skipped: a silent network cannot be made here: {why}");
        return None;
    }
    let a = named_server("a").await;
    let router = Router::new().with_upstream_timeout(upstream_timeout);
    let cancel = CancellationToken::new();
    let ep = endpoint(&router, &cancel).await;
    router.route_to("a", a, 1);
    let mut c = TcpStream::connect(ep).await.unwrap();
    assert_eq!(ask(&mut c).await.unwrap(), "a");
    let silent = lifeboat_testkit::SilentPort::start(a.port()).unwrap();
    c.write_all(b"?").await.unwrap();
    Some((router, cancel, c, silent))
}

/// The primary's network goes silent while a client is connected through the endpoint and
/// the route does not move: the proxy's connection to it carries a user timeout, so the
/// client's connection ends instead of hanging half-open forever.
#[tokio::test]
async fn a_silent_upstream_is_closed_after_the_upstream_timeout() {
    let Some((router, cancel, mut c, silent)) =
        client_of_a_silenced_upstream(Duration::from_secs(2)).await
    else {
        return;
    };
    assert!(
        ended_within(&mut c, Duration::from_secs(60)).await,
        "the connection to a silent upstream was held open"
    );
    drop(silent);
    assert_eq!(router.stats.cut.load(Ordering::Relaxed), 0);
    assert!(matches!(router.current(), Route::To { node, .. } if node == "a"));
    cancel.cancel();
}

/// A client stuck on a silent primary (its request sent, no answer) is cut as soon as the
/// route moves away from it, long before any timeout.
#[tokio::test]
async fn a_client_stuck_on_a_silent_primary_is_cut_when_the_route_moves() {
    let Some((router, cancel, mut c, silent)) =
        client_of_a_silenced_upstream(Duration::from_secs(600)).await
    else {
        return;
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    router.block("a");
    assert!(
        ended_within(&mut c, Duration::from_secs(60)).await,
        "the stuck client was not cut"
    );
    drop(silent);
    assert_eq!(router.stats.cut.load(Ordering::Relaxed), 1);
    cancel.cancel();
}

/// A client whose connection through the endpoint is still being made to a silent primary
/// (nothing answers its SYN) is sent to the new primary as soon as the route moves, instead
/// of waiting out the connect timeout: nothing was read from it yet.
#[tokio::test]
async fn a_client_connecting_to_a_silent_primary_follows_the_route_when_it_moves() {
    if let Some(why) = lifeboat_testkit::SilentPort::unavailable() {
        eprintln!("skipped: a silent network cannot be made here: {why}");
        return;
    }
    let (a, b) = (named_server("a").await, named_server("b").await);
    let silent = lifeboat_testkit::SilentPort::start(a.port()).unwrap();
    let router = Router::new();
    let cancel = CancellationToken::new();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = l.local_addr().unwrap();
    // A connect timeout far beyond the test's bound below.
    tokio::spawn(router.clone().serve(
        l,
        HOLD,
        Duration::from_secs(120),
        cancel.clone(),
        TaskTracker::new(),
    ));
    router.route_to("a", a, 1);
    let mut c = TcpStream::connect(ep).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    router.route_to("b", b, 2);
    let answer = tokio::time::timeout(Duration::from_secs(10), ask(&mut c)).await;
    assert_eq!(
        answer
            .expect("still waiting for the silent primary")
            .unwrap(),
        "b"
    );
    drop(silent);
    cancel.cancel();
}

/// A drill's schedule: the next matching minute strictly after now, in UTC; croner's `#` for
/// the n-th weekday of a month.
#[test]
fn a_drill_schedule_names_the_next_matching_minute_in_utc() {
    use lifeboat_core::Millis;
    use lifeboat_exec::drill::next_after;
    // 2026-12-04 is a Friday; 22:13:51 UTC.
    let now = Millis(1_796_422_431_000);
    let at = |m: Millis| lifeboat_exec::drill::report::utc(m.0);
    assert_eq!(
        at(next_after("0 10 * * TUE", now).unwrap()),
        "2026-12-08 10:00:00"
    );
    assert_eq!(
        at(next_after("*/15 * * * *", now).unwrap()),
        "2026-12-04 22:15:00"
    );
    assert_eq!(
        at(next_after("0 10 * 1,4,7,10 TUE#1", now).unwrap()),
        "2027-01-05 10:00:00"
    );
    let exactly = next_after("0 10 * * TUE", now).unwrap();
    assert_eq!(
        next_after("0 10 * * TUE", exactly).map(at).as_deref(),
        Some("2026-12-15 10:00:00"),
        "strictly after: an occurrence does not fire twice"
    );
}

/// A long drill's report keeps every failed write and an even sample of the acknowledged
/// ones, and its chart still counts them all.
#[test]
fn a_long_drills_report_keeps_a_sample_of_its_writes() {
    use lifeboat_core::drill::Write;
    let writes: Vec<Write> = (0..10_000u64)
        .map(|seq| Write {
            seq,
            sent_ms: 1_000 + seq * 20,
            acked_ms: (!(5_000..5_100).contains(&seq)).then_some(1_005 + seq * 20),
        })
        .collect();
    let mut r = lifeboat_exec::drill::Report::default();
    r.keep_writes(writes);
    let failed = r.writes.iter().filter(|w| w.acked_ms.is_none()).count();
    assert_eq!(failed, 100, "every failed write is kept");
    assert!(r.writes.len() <= 4_000, "{} kept", r.writes.len());
    assert_eq!(r.acks_every, 3);
    assert!(
        r.svg().contains("acknowledged writes (9900)"),
        "the chart counts them all"
    );
}

/// A drill report survives the store: the JSON it is kept as reads back the same.
#[test]
fn a_drill_report_reads_back_as_it_was_written() {
    let mut r = lifeboat_exec::drill::Report {
        status: "skipped".into(),
        ..Default::default()
    };
    r.note(lifeboat_core::Millis(5), "failed", "x");
    let text = serde_json::to_string(&r).unwrap();
    let back: lifeboat_exec::drill::Report = serde_json::from_str(&text).expect(&text);
    assert_eq!(back, r);
}
