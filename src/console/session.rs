//! Console sign-ins: a random session id in a cookie, mapped here to the
//! token's scope, the name its actions are audited under (a fingerprint,
//! as the API's), a CSRF token and an expiry. The token itself is not kept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::Scope;
use crate::http::auth::Actor;

/// The session cookie's name.
pub const COOKIE: &str = "tagent_hub_console";
/// How long a sign-in lasts.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Most sign-ins held at once; the oldest expired ones go first, then a
/// new sign-in is refused.
pub const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub scope: Scope,
    /// Who the audit log says did what this session does.
    pub actor: Actor,
    /// The value every form must send back as `csrf`.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    pub fn is_admin(&self) -> bool {
        self.scope == Scope::Admin
    }
}

/// The sign-ins, shared by every console handler.
#[derive(Clone, Default)]
pub struct Sessions {
    by_id: Arc<DashMap<String, Session>>,
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    /// Start a session; `None` when [`MAX_SESSIONS`] live ones are held.
    pub fn create(&self, scope: Scope, actor: Actor) -> Option<String> {
        if self.by_id.len() >= MAX_SESSIONS {
            let now = Instant::now();
            self.by_id.retain(|_, s| s.expires > now);
            if self.by_id.len() >= MAX_SESSIONS {
                metrics::counter!("tagent_hub_console_signins_total", "result" => "full")
                    .increment(1);
                return None;
            }
        }
        let id = random_hex();
        self.by_id.insert(
            id.clone(),
            Session {
                scope,
                actor,
                csrf: random_hex(),
                expires: Instant::now() + LIFETIME,
            },
        );
        metrics::counter!("tagent_hub_console_signins_total", "result" => "ok").increment(1);
        Some(id)
    }

    /// The live session `id` names; an expired one is dropped.
    pub fn get(&self, id: &str) -> Option<Session> {
        let s = self.by_id.get(id)?.clone();
        if s.expires <= Instant::now() {
            self.by_id.remove(id);
            return None;
        }
        Some(s)
    }

    pub fn remove(&self, id: &str) {
        self.by_id.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_keeps_its_scope_until_removed() {
        let sessions = Sessions::default();
        let read = sessions.create(Scope::Read, Actor::of_token("r")).unwrap();
        let admin = sessions.create(Scope::Admin, Actor::of_token("a")).unwrap();
        assert_ne!(read, admin);
        assert!(!sessions.get(&read).unwrap().is_admin());
        assert!(sessions.get(&admin).unwrap().is_admin());
        assert_ne!(
            sessions.get(&read).unwrap().csrf,
            sessions.get(&admin).unwrap().csrf
        );
        sessions.remove(&read);
        assert!(sessions.get(&read).is_none());
        assert!(sessions.get("not-a-session").is_none());
    }
}
