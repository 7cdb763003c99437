//! The HTTP accept loop: hyper's HTTP/1 server with limits `axum::serve`
//! cannot set.
//!
//! Every connection is hostile until proven otherwise: its request head is
//! bounded in bytes and headers (431 beyond), must arrive within
//! `header_timeout` (slowloris; this also closes idle keep-alive
//! connections), and its body within `body_timeout`. At most
//! `max_connections` are open, at most `max_connections_per_ip` from one
//! source: beyond, a new connection is closed at once, so idle clients
//! cannot take the descriptors heartbeat sessions and the store need. The
//! loop backs off on `EMFILE` like the heartbeat listener. With TLS
//! configured, every connection is a TLS one; its handshake must end within
//! `header_timeout`. Each refusal is
//! counted in `tagent_hub_http_rejected_total{reason}`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::config::HttpConfig;
use crate::net::{AcceptBackoff, ConnLimit};
use crate::shutdown::Shutdown;

/// What the server holds each connection to.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Sources the per-source cap does not apply to.
    pub unlimited: Vec<IpNet>,
}

impl Limits {
    pub fn from_config(c: &HttpConfig) -> Limits {
        Limits {
            max_header_bytes: c.max_header_bytes,
            max_headers: c.max_headers,
            header_timeout: Duration::from_secs(c.header_timeout_secs),
            body_timeout: Duration::from_secs(c.body_timeout_secs),
            max_connections: c.max_connections,
            max_connections_per_ip: c.max_connections_per_ip,
            unlimited: c.unlimited_networks.clone(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&HttpConfig::default())
    }
}

fn rejected(reason: &'static str) {
    metrics::counter!("tagent_hub_http_rejected_total", "reason" => reason).increment(1);
}

/// How long open connections get to finish their request after shutdown.
const DRAIN: Duration = Duration::from_secs(1);

/// Serve `router` on `listener` until shutdown, then let open requests
/// finish (at most [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        // The read buffer: a head fits, and a body streams through it.
        .max_buf_size((limits.max_header_bytes + 8192).max(16 * 1024));
    let connections = TaskTracker::new();
    let limit = ConnLimit::new(
        limits.max_connections,
        limits.max_connections_per_ip,
        &limits.unlimited,
    );
    let mut backoff = AcceptBackoff::new("http");
    while let Some((stream, peer)) = backoff
        .accept(&listener, &shutdown, || connections.len())
        .await
    {
        let permit = match limit.admit(peer.ip()) {
            Ok(p) => p,
            Err(refused) => {
                // Closed before reading a byte: the client sees a reset or
                // an empty reply and retries later.
                rejected(refused.label());
                tracing::debug!(%peer, reason = refused.label(), "HTTP connection refused");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let body_timeout = limits.body_timeout;
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let mut req = req.map(|b| Body::new(Deadline::new(b, body_timeout)));
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().call(req)
        });
        let (builder, shutdown) = (builder.clone(), shutdown.clone());
        let handshake = limits.header_timeout;
        match tls.clone() {
            None => {
                connections.spawn(async move {
                    let _permit = permit;
                    serve_one(&builder, stream, service, &shutdown, peer).await;
                });
            }
            Some(acceptor) => {
                connections.spawn(async move {
                    let _permit = permit;
                    // The handshake gets the head's time: a silent or
                    // plain-text client is cut off like a slow head.
                    let stream =
                        match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                rejected("tls_handshake");
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                rejected("tls_handshake");
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    serve_one(&builder, stream, service, &shutdown, peer).await;
                });
            }
        }
    }
    connections.close();
    let _ = tokio::time::timeout(DRAIN, connections.wait()).await;
    tracing::info!("HTTP listener stopped");
    Ok(())
}

/// Serve one connection (plain or TLS) until it ends or shutdown drains it;
/// count what the server's limits refused.
async fn serve_one<I, S>(
    builder: &http1::Builder,
    io: I,
    service: S,
    shutdown: &Shutdown,
    peer: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.wait() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        let reason = if e.is_parse_too_large() {
            "header_too_large"
        } else if e.is_timeout() {
            "header_timeout"
        } else if e.is_parse() {
            "malformed"
        } else {
            // The client went away mid-request, or the body timed out
            // (counted where it did).
            tracing::debug!(%peer, error = %e, "HTTP connection ended");
            return;
        };
        rejected(reason);
        tracing::debug!(%peer, error = %e, reason, "HTTP connection refused");
    }
}

/// A request body that must arrive whole before a deadline: a client that
/// trickles its body cannot hold a handler (and its memory) for long.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    within: Duration,
    expired: bool,
}

impl Deadline {
    fn new(inner: Incoming, within: Duration) -> Deadline {
        Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep(within)),
            within,
            expired: false,
        }
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(r) => return Poll::Ready(r.map(|f| f.map_err(axum::Error::new))),
            Poll::Pending => {}
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.expired = true;
        rejected("slow_body");
        let message = format!("the body did not arrive within {:?}", self.within);
        Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            message,
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
