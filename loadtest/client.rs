//! A keep-alive HTTP/1 connection to a loopback target, over hyper's
//! connection API: one socket per simulated client, no pool, no proxy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where the load goes: an `http://` URL whose host is in 127.0.0.0/8.
#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// The URL's path, without a trailing `/` (usually empty).
    pub base: String,
}

impl Target {
    /// Parse `http://HOST:PORT[/base]`; HOST is `localhost` or an ip in 127.0.0.0/8.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("'{url}': only http:// URLs are supported"))?;
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = authority
            .rsplit_once(':')
            .with_context(|| format!("'{url}': give the port, e.g. http://127.0.0.1:8084"))?;
        let ip: IpAddr = if host == "localhost" {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse()
                .with_context(|| format!("'{url}': the host must be an ip or localhost"))?
        };
        match ip {
            IpAddr::V4(v4) if v4.is_loopback() => {}
            _ => bail!("'{url}': load may only target loopback (127.0.0.0/8)"),
        }
        let port: u16 = port.parse().with_context(|| format!("'{url}': bad port"))?;
        Ok(Target {
            addr: SocketAddr::new(ip, port),
            host: authority.to_owned(),
            base: base.to_owned(),
        })
    }
}

/// Why a request got no HTTP answer.
#[derive(Debug)]
pub enum ClientError {
    Connect(std::io::Error),
    Http(hyper::Error),
}

impl ClientError {
    /// A short label for the report.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                "connect_refused"
            }
            ClientError::Connect(_) => "connect",
            ClientError::Http(e) if e.is_closed() || e.is_incomplete_message() => "closed",
            ClientError::Http(_) => "http",
        }
    }
}

/// One connection, made on first use and again after any failure.
pub struct Conn {
    target: Arc<Target>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(target: Arc<Target>) -> Conn {
        Conn {
            target,
            sender: None,
        }
    }

    /// Drop the connection; the next request opens a new one.
    pub fn reset(&mut self) {
        self.sender = None;
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, ClientError> {
        if self.sender.as_ref().is_some_and(|s| s.is_closed()) {
            self.sender = None;
        }
        if self.sender.is_none() {
            let stream = TcpStream::connect(self.target.addr)
                .await
                .map_err(ClientError::Connect)?;
            stream.set_nodelay(true).map_err(ClientError::Connect)?;
            let (sender, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(ClientError::Http)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("just made");
        sender.ready().await.map_err(ClientError::Http)?;
        Ok(sender)
    }

    /// Send one request (`path_and_query` below the target's base) and read
    /// the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path_and_query: &str,
        json: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let uri = format!("{}{}", self.target.base, path_and_query);
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, self.target.host.as_str())
            .header(USER_AGENT, "Mozilla/5.0 (tagent-load)");
        if json.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(json.unwrap_or_default()))
            .expect("a well-formed request");
        let result = async {
            let resp = self.sender().await?.send_request(req).await;
            let resp = resp.map_err(ClientError::Http)?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(ClientError::Http)?;
            Ok((status, body.to_bytes()))
        }
        .await;
        if result.is_err() {
            self.reset();
        }
        result
    }
}

/// `GET path` on a fresh connection: for side requests such as `/metrics`.
pub async fn get(target: &Arc<Target>, path: &str) -> anyhow::Result<Bytes> {
    get_authorized(target, path, None).await
}

/// `GET path` with `Authorization: Bearer <token>` when a token is given.
pub async fn get_authorized(
    target: &Arc<Target>,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<Bytes> {
    let stream = TcpStream::connect(target.addr).await?;
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req =
        Request::get(format!("{}{}", target.base, path)).header(HOST, target.host.as_str());
    if let Some(token) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req.body(Empty::new())?;
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("GET {path}: HTTP {}", resp.status());
    }
    let body = resp.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok(body)
}
