//! The admin API client: the token, one call, every page of a listing.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::args::CtlArgs;
use crate::http::ErrorBody;
use crate::model::FilterParams;

/// The query of one page of a listing.
#[derive(Serialize)]
pub(super) struct ListQuery<'a> {
    #[serde(flatten)]
    pub(super) filter: &'a FilterParams,
    pub(super) limit: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cursor: Option<&'a str>,
}

/// No query parameters.
pub(super) const NO_QUERY: &[(&str, &str)] = &[];

pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) token: String,
}

impl Client {
    pub(super) fn new(args: &CtlArgs) -> anyhow::Result<Client> {
        let token = match &args.token {
            Some(t) => t.clone(),
            None => {
                let path = args.data_dir.join(crate::http::auth::TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no --token or TAGENT_HUB_ADMIN_TOKEN, and cannot read {}",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned()
            }
        };
        // The one crypto provider of the crate (ring), for https URLs.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .https_only(args.url.starts_with("https://"));
        if let Some(ca) = &args.ca {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} holds no PEM certificate", ca.display()))?;
            if certs.is_empty() {
                anyhow::bail!("{} holds no PEM certificate", ca.display());
            }
            http = http.tls_certs_only(certs);
        }
        Ok(Client {
            http: http.build()?,
            base: args.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Send a request; an API error (`{"error": ...}`) is returned as one.
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &(impl Serialize + ?Sized),
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> anyhow::Result<(StatusCode, String)> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token)
            .query(query);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success()
            && let Ok(e) = serde_json::from_str::<ErrorBody>(&text)
        {
            bail!("{}: {}", status, e.error);
        }
        Ok((status, text))
    }

    /// A request whose reply is one of the API's types.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &(impl Serialize + ?Sized),
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> anyhow::Result<T> {
        let (status, text) = self.send(method.clone(), path, query, body).await?;
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: HTTP {status}, not the API's reply: {text}"))
    }

    pub(super) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &(impl Serialize + ?Sized),
    ) -> anyhow::Result<T> {
        self.call(Method::GET, path, query, None::<&()>).await
    }

    /// A request answered with no body (`204 No Content`).
    pub(super) async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.no_content(Method::DELETE, path, NO_QUERY).await
    }

    /// `method path?query`, answered `204 No Content`.
    pub(super) async fn no_content(
        &self,
        method: Method,
        path: &str,
        query: &(impl Serialize + ?Sized),
    ) -> anyhow::Result<()> {
        let (status, text) = self.send(method.clone(), path, query, None::<&()>).await?;
        if status != StatusCode::NO_CONTENT {
            bail!("{method} {path}: HTTP {status}: {text}");
        }
        Ok(())
    }
}
