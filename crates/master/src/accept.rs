//! Accepting HTTP connections so that no client can hold the master: a cap
//! on open connections per port and per address (past it a connection is
//! answered 503 and closed), a deadline for each request's headers (which
//! also closes idle keep-alive connections and slowloris), accepting on
//! after running out of file descriptors, and the caller's address as
//! `ConnectInfo` (through trusted proxies, the address they forward).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use cascade_model::net::{AddressRange, client_address};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

/// What one listener allows.
#[derive(Debug, Clone)]
pub struct Caps {
    /// `HTTP`, `msgpack` or `PB`, for the log.
    pub what: &'static str,
    /// Open connections at most.
    pub connections: usize,
    /// Open connections from one address at most (trusted proxies excepted).
    pub per_address: usize,
    /// Time for a request's headers, and for an idle keep-alive connection.
    pub header_timeout: Duration,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted: Arc<Vec<AddressRange>>,
}

/// Open connections, in all and per address (also used by the PB
/// listener, which is not HTTP).
#[derive(Default)]
pub struct Tally {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    /// Notified when a connection closes.
    closed: Notify,
}

/// A connection's place in the tally, given back when it is dropped.
pub struct Slot {
    tally: Arc<Tally>,
    ip: IpAddr,
}

impl Tally {
    /// A place for a connection from `ip`, or `None` when `caps` are reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, caps: &Caps) -> Option<Slot> {
        let trusted = caps.trusted.iter().any(|r| r.contains(ip));
        let ip = cascade_model::net::client_key(ip);
        let mut open = self.open.lock();
        let mine = open.1.get(&ip).copied().unwrap_or(0);
        if open.0 >= caps.connections || (!trusted && mine >= caps.per_address) {
            return None;
        }
        open.0 += 1;
        open.1.insert(ip, mine + 1);
        Some(Slot { tally: self.clone(), ip })
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.open.lock().0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.tally.open.lock();
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
        drop(open);
        self.tally.closed.notify_waiters();
    }
}

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Retry-After: 5\r\nConnection: close\r\nContent-Length: 21\r\n\r\ntoo many connections\n";

/// Answers a connection over the caps, briefly, and closes it.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(REFUSAL).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Serves `router` on `listener` until `stopping` flips; then open
/// connections finish their requests and close, for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    caps: Caps,
    mut stopping: watch::Receiver<bool>,
    grace: Duration,
) {
    let tally = Arc::new(Tally::default());
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = flipped(&mut stopping) => break,
        };
        match accepted {
            Ok((stream, peer)) => match tally.admit(peer.ip(), &caps) {
                Some(slot) => {
                    let (router, caps, stopping) = (router.clone(), caps.clone(), stopping.clone());
                    tokio::spawn(connection(stream, peer, router, caps, slot, stopping));
                }
                None => {
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(listener = caps.what, address = %peer.ip(), "connection refused: too many open");
                        last_warning = Some(Instant::now());
                    }
                    tokio::spawn(refuse(stream));
                }
            },
            // Out of file descriptors and the like: the timeouts free some; keep serving.
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(listener = caps.what, error = %e, "accept failed; retrying");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let drained = async {
        while tally.count() > 0 {
            let closed = tally.closed.notified();
            let _ = tokio::time::timeout(Duration::from_millis(100), closed).await;
        }
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(listener = caps.what, open = tally.count(), "connections still open after the grace period");
    }
}

/// Every `X-Forwarded-For` line as one list, in order: a proxy may add its
/// own line after the client's, and the hop it saw must be read from the
/// last line, not from a first one the client wrote.
fn forwarded_for(headers: &hyper::HeaderMap) -> Option<String> {
    let lines: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
    (!lines.is_empty()).then(|| lines.join(","))
}

/// Resolves once `stopping` is true (or its sender is gone).
async fn flipped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// One connection: HTTP/1.1 with upgrades (WebSockets), each request told
/// who it comes from.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    caps: Caps,
    slot: Slot,
    mut stopping: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let trusted = caps.trusted.clone();
    let service = tower::service_fn(move |mut req: hyper::Request<Incoming>| {
        let forwarded = forwarded_for(req.headers());
        let client = SocketAddr::new(client_address(peer.ip(), forwarded.as_deref(), &trusted), peer.port());
        req.extensions_mut().insert(ConnectInfo(client));
        let router = router.clone();
        async move { Ok::<_, Infallible>(router.oneshot(req.map(Body::new)).await.unwrap_or_else(|e| match e {})) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(caps.header_timeout).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(e) = served {
                tracing::trace!(error = %e, "connection ended");
            }
        }
        () = flipped(&mut stopping) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(connections: usize, per_address: usize, trusted: &[&str]) -> Caps {
        Caps {
            what: "test",
            connections,
            per_address,
            header_timeout: Duration::from_secs(1),
            trusted: Arc::new(trusted.iter().map(|t| AddressRange::parse(t).expect("range")).collect()),
        }
    }

    #[test]
    fn the_tally_caps_connections_in_all_and_per_address() {
        let tally = Arc::new(Tally::default());
        let c = caps(3, 2, &["10.0.0.1"]);
        let (a, b, proxy): (IpAddr, IpAddr, IpAddr) =
            ("192.0.2.1".parse().expect("ip"), "192.0.2.2".parse().expect("ip"), "10.0.0.1".parse().expect("ip"));
        let first = tally.admit(a, &c).expect("one");
        let _second = tally.admit(a, &c).expect("two");
        assert!(tally.admit(a, &c).is_none(), "two per address");
        let third = tally.admit(b, &c).expect("another address");
        assert!(tally.admit(b, &c).is_none(), "three in all");
        drop(first);
        drop(third);
        let _p1 = tally.admit(proxy, &c).expect("a proxy");
        let _p2 = tally.admit(proxy, &c).expect("a trusted proxy is not capped per address");
        assert_eq!(tally.count(), 3);
    }

    #[test]
    fn every_forwarded_line_is_read_the_proxys_last() {
        let mut headers = hyper::HeaderMap::new();
        headers.append("x-forwarded-for", hyper::header::HeaderValue::from_static("9.9.9.1"));
        headers.append("x-forwarded-for", hyper::header::HeaderValue::from_static("2.2.2.2"));
        let trusted = [AddressRange::parse("127.0.0.1").expect("range")];
        let joined = forwarded_for(&headers);
        let client = client_address("127.0.0.1".parse().expect("ip"), joined.as_deref(), &trusted);
        assert_eq!(client, "2.2.2.2".parse::<IpAddr>().expect("ip"), "what the proxy saw, not what the client wrote");
        assert_eq!(forwarded_for(&hyper::HeaderMap::new()), None);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_address() {
        let tally = Arc::new(Tally::default());
        let c = caps(10, 1, &[]);
        let _one = tally.admit("2001:db8::1".parse().expect("ip"), &c).expect("one");
        assert!(tally.admit("2001:db8::2".parse().expect("ip"), &c).is_none(), "same /64");
        assert!(tally.admit("2001:db8:0:1::1".parse().expect("ip"), &c).is_some(), "another /64");
    }
}
