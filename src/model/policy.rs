//! Registration policy (SPEC §6), set per tenant: who may register a tagent
//! the hub does not know yet.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a first registration needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Accepted as it comes (the original's behaviour, the default).
    #[default]
    Open,
    /// A valid enrollment token in the registration URL.
    Token,
    /// An operator's approval of the pending registration, or a token.
    Approve,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Open => "open",
            Policy::Token => "token",
            Policy::Approve => "approve",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(Policy::Open),
            "token" => Ok(Policy::Token),
            "approve" => Ok(Policy::Approve),
            other => Err(format!(
                "unknown registration policy {other:?}: open, token or approve"
            )),
        }
    }
}

/// The policy of every tenant: a default and the tenants that differ.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    pub default: Policy,
    pub tenants: HashMap<String, Policy>,
}

impl Policies {
    /// The policy `tenant` registers under.
    pub fn of(&self, tenant: &str) -> Policy {
        self.tenants.get(tenant).copied().unwrap_or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_without_its_own_policy_gets_the_default() {
        let p = Policies {
            default: Policy::Token,
            tenants: [("lab".to_owned(), Policy::Open)].into(),
        };
        assert_eq!(p.of("lab"), Policy::Open);
        assert_eq!(p.of("bank"), Policy::Token);
        assert_eq!("approve".parse::<Policy>(), Ok(Policy::Approve));
        assert!("Open".parse::<Policy>().is_err());
    }
}
