//! The hub's HTTP API as the operation benches use it: registrations (as a
//! tagent sends them) and admin calls with a bearer token, loopback only,
//! every request bounded in time.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// A request's longest wait unless the call names another.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Hub {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// What one simulated tagent registers (SPEC §2.1).
pub struct Registration<'a> {
    pub tenant: &'a str,
    pub port: u16,
    pub name: &'a str,
    pub version: &'a str,
    pub credential: &'a str,
}

impl Hub {
    /// `base` must be `http://` to a loopback address.
    pub fn new(base: &str, token: &str) -> anyhow::Result<Hub> {
        let url = reqwest::Url::parse(base).with_context(|| format!("--hub {base}"))?;
        let host = url.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|a| a.is_loopback());
        if url.scheme() != "http" || !loopback {
            bail!("--hub must be http:// to a loopback address, not {base}");
        }
        if token.is_empty() {
            bail!("--token (or TAGENT_HUB_ADMIN_TOKEN) is needed");
        }
        // reqwest is built without a provider of its own; plain http never
        // uses it, but a client cannot be built without one (ring: the
        // crate's one provider).
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(256)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Hub {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /register?tenant=`: the tagent id the hub gave, or why not.
    pub async fn register(&self, r: &Registration<'_>) -> anyhow::Result<u64> {
        let body = json!({"tagentId":"","port":r.port.to_string(),"ipString":"127.0.0.1",
            "mgmtIp":"127.0.0.1","name":r.name,"osType":"Linux","osbit":"x86_64",
            "version":r.version,"credential":r.credential});
        let reply: Value = self
            .http
            .post(self.url("/register"))
            .query(&[("tenant", r.tenant)])
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await?
            .json()
            .await?;
        match reply["Data"]["tagentId"].as_u64() {
            Some(id) if reply["Status"] == "OK" => Ok(id),
            _ => bail!("registration refused: {reply}"),
        }
    }

    /// Register with a few bounded retries (a transient refusal or reset).
    pub async fn register_retrying(&self, r: &Registration<'_>) -> anyhow::Result<u64> {
        let mut last = None;
        for attempt in 0..3u64 {
            match self.register(r).await {
                Ok(id) => return Ok(id),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
        }
        Err(last.expect("three attempts"))
    }

    /// An admin call: (status, JSON body or `null`).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
            .timeout(timeout.unwrap_or(REQUEST_TIMEOUT));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| path.to_owned())?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Upload `tar` as the package of `version` for Linux (arch `default`),
    /// or find the one kept already: its SHA-256, and whether it was uploaded
    /// now.
    pub async fn ensure_package(
        &self,
        version: &str,
        tar: Vec<u8>,
    ) -> anyhow::Result<(String, bool)> {
        let resp = self
            .http
            .post(self.url("/api/v1/packages"))
            .query(&[
                ("version", version),
                ("os_type", "Linux"),
                ("arch", "default"),
            ])
            .bearer_auth(&self.token)
            .header("content-type", "application/x-tar")
            .body(tar)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let reply: Value = resp.json().await.unwrap_or(Value::Null);
        match status {
            201 => reply["sha256"]
                .as_str()
                .map(|s| (s.to_owned(), true))
                .context("the package reply has no sha256"),
            409 => {
                let (s, list) = self
                    .call(reqwest::Method::GET, "/api/v1/packages", None, None)
                    .await?;
                if s != 200 {
                    bail!("GET /api/v1/packages: {s} {list}");
                }
                list.as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| {
                        p["version"] == version
                            && p["os_type"]
                                .as_str()
                                .is_some_and(|o| o.eq_ignore_ascii_case("linux"))
                            && p["arch"] == "default"
                    })
                    .and_then(|p| p["sha256"].as_str())
                    .map(|s| (s.to_owned(), false))
                    .context("409 on upload, but no such package listed")
            }
            _ => bail!("POST /api/v1/packages: {status} {reply}"),
        }
    }
}

/// A one-file ustar archive, as `tar cf` writes it (header, data, padding
/// and the two zero blocks that end it).
pub fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    // The checksum: the header's bytes summed with the field as spaces.
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}
