//! What every console handler gets: the API's state, the sign-ins and the
//! tokens they are checked against.

use crate::http::HttpState;
use crate::http::auth::AdminTokens;

use super::Sessions;
use super::batch::Batches;

#[derive(Clone)]
pub struct Console {
    pub http: HttpState,
    pub sessions: Sessions,
    pub tokens: AdminTokens,
    /// Recent batch results, for their CSV.
    pub batches: Batches,
    /// The port serves TLS: the session cookie is marked `Secure`.
    pub secure_cookie: bool,
}
