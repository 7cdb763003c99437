//! Bearer tokens for the admin API. `GET`s need a `read` or `admin` token;
//! everything else an `admin` one. Tokens are kept as SHA-256 digests and
//! compared in constant time.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AdminTokenConfig, Scope, check_token};

/// The file a generated token is written to, inside the data directory.
pub const TOKEN_FILE: &str = "admin-token";

#[derive(Clone)]
pub struct AdminTokens {
    tokens: Arc<[([u8; 32], Scope)]>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl AdminTokens {
    pub fn new(tokens: &[AdminTokenConfig]) -> Self {
        AdminTokens {
            tokens: tokens.iter().map(|t| (digest(&t.token), t.scope)).collect(),
        }
    }

    /// The configured tokens; with none, the one in `<data_dir>/admin-token`,
    /// generated (mode 0600) on first start. Its path is logged, never the token.
    pub fn load(configured: &[AdminTokenConfig], data_dir: &Path) -> anyhow::Result<Self> {
        if !configured.is_empty() {
            return Ok(Self::new(configured));
        }
        let path = data_dir.join(TOKEN_FILE);
        let token = read_or_generate(&path)?;
        Ok(Self::new(&[AdminTokenConfig {
            token,
            scope: Scope::Admin,
        }]))
    }

    /// The scope of `presented`, if it is a known token.
    pub fn scope_of(&self, presented: &str) -> Option<Scope> {
        let d = digest(presented);
        // Look at every token, so the time taken tells nothing.
        let mut found = None;
        for (known, scope) in self.tokens.iter() {
            if bool::from(known.ct_eq(&d)) {
                found = found.max(Some(*scope));
            }
        }
        found
    }
}

/// Who made an admin request, as the audit log names it: `token:` and the
/// first 8 hex digits of the token's SHA-256 (never the token). Put in the
/// request's extensions by [`require`] and [`require_admin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub Arc<str>);

impl Actor {
    pub fn of_token(token: &str) -> Actor {
        Actor(format!("token:{}", hex::encode(&digest(token)[..4])).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn read_or_generate(path: &PathBuf) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_owned();
            check_token(&token).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "admin API token read");
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = hex::encode(rand::random::<[u8; 32]>());
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
            writeln!(f, "{token}")?;
            f.sync_all()?;
            tracing::info!(path = %path.display(), "admin API token generated");
            Ok(token)
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

fn refuse(status: StatusCode, reason: &'static str, message: &str) -> Response {
    metrics::counter!("tagent_hub_admin_auth_failures_total", "reason" => reason).increment(1);
    let mut resp = super::api_error(status, message);
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"tagent-hub\""),
        );
    }
    resp
}

/// Middleware in front of every admin route.
pub async fn require(State(tokens): State<AdminTokens>, req: Request, next: Next) -> Response {
    let needed = match *req.method() {
        Method::GET | Method::HEAD => Scope::Read,
        _ => Scope::Admin,
    };
    check(&tokens, needed, req, next).await
}

/// An admin token for every method: the operations over a tagent's
/// listener, which reach into the tagent even to read.
pub async fn require_admin(
    State(tokens): State<AdminTokens>,
    req: Request,
    next: Next,
) -> Response {
    check(&tokens, Scope::Admin, req, next).await
}

async fn check(tokens: &AdminTokens, needed: Scope, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(presented) = presented else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing",
            "the admin API needs an Authorization: Bearer <token> header",
        );
    };
    match tokens.scope_of(presented) {
        None => refuse(StatusCode::UNAUTHORIZED, "invalid", "unknown token"),
        Some(scope) if scope < needed => refuse(
            StatusCode::FORBIDDEN,
            "scope",
            "this token is read-only; the request needs an admin token",
        ),
        Some(_) => {
            let actor = Actor::of_token(presented);
            req.extensions_mut().insert(actor);
            next.run(req).await.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_found_by_token_and_the_highest_wins() {
        let t = |token: &str, scope| AdminTokenConfig {
            token: token.into(),
            scope,
        };
        let tokens = AdminTokens::new(&[
            t("read-token-0123456789", Scope::Read),
            t("admin-token-0123456789", Scope::Admin),
            t("both-token-0123456789", Scope::Read),
            t("both-token-0123456789", Scope::Admin),
        ]);
        assert_eq!(tokens.scope_of("read-token-0123456789"), Some(Scope::Read));
        assert_eq!(
            tokens.scope_of("admin-token-0123456789"),
            Some(Scope::Admin)
        );
        assert_eq!(tokens.scope_of("both-token-0123456789"), Some(Scope::Admin));
        assert_eq!(tokens.scope_of("admin-token-012345678"), None);
        assert_eq!(tokens.scope_of(""), None);
    }

    #[test]
    fn a_generated_token_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = AdminTokens::load(&[], dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(TOKEN_FILE)).unwrap();
        assert_eq!(a.scope_of(text.trim()), Some(Scope::Admin));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = AdminTokens::load(&[], dir.path()).unwrap();
        assert_eq!(b.scope_of(text.trim()), Some(Scope::Admin));
    }
}
