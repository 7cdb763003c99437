//! A registration request: parsed from the tagent's JSON body and validated
//! (SPEC §2.1, rule 1). Pure: no sockets, so it can be tested and fuzzed alone.

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

use super::error::RegisterError;
use crate::model::{HostFacts, MAX_TAGENT_ID, TagentId, parse_digits, parse_ip};

/// Longest accepted value of a host fact (name, user, version, ...).
pub const MAX_FIELD_LEN: usize = 255;
/// Longest accepted credential blob. A real tagent's is `{ENCRYPTED}` and
/// the hex of its password (SPEC §5.1): 43 bytes for the 16-character
/// passwords it generates, 411 for a 200-character one set by hand. Each
/// ip of a registration stores the credential sealed in its account, so
/// this bounds what one registration can write (with `MAX_IPS`: about
/// 150 KB, against 1 MB at 4 KiB).
pub const MAX_CREDENTIAL_LEN: usize = 512;
/// Most contained ips one tagent may list: a host's NICs' IPv4 addresses
/// (a Docker or Kubernetes node with many bridges has tens).
pub const MAX_IPS: usize = 256;
/// Longest token text kept (a token is 49 bytes).
const MAX_TOKEN_LEN: usize = 64;
/// Longest accepted tenant name.
pub const MAX_TENANT_LEN: usize = 64;

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A validated registration.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterRequest {
    pub tenant: String,
    pub tagent_id: Option<TagentId>,
    /// The primary ip: `mgmtIp` if given, else the peer address.
    pub ip: IpAddr,
    pub port: u16,
    /// Contained ips from `ipString`, deduplicated, in order.
    pub ips: Vec<IpAddr>,
    pub name: String,
    pub host: HostFacts<String>,
    /// `None` keeps the credential the accounts already hold.
    pub credential: Option<Secret>,
    /// The enrollment token of the registration URL (`?token=`), if any.
    pub token: Option<Secret>,
    /// Where the request came from: the TCP peer, or a trusted proxy's client.
    pub source: IpAddr,
}

/// The body as it arrives: every field loosely typed, unknown fields ignored.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawBody {
    tenant: Option<Value>,
    tagent_id: Option<Value>,
    port: Option<Value>,
    ip_string: Option<Value>,
    mgmt_ip: Option<Value>,
    name: Option<Value>,
    user: Option<Value>,
    version: Option<Value>,
    os_type: Option<Value>,
    os_version: Option<Value>,
    osbit: Option<Value>,
    credential: Option<Value>,
    pcpu: Option<Value>,
    mem: Option<Value>,
}

fn invalid(msg: impl Into<String>) -> RegisterError {
    RegisterError::Invalid(msg.into())
}

/// A string field; `null` counts as absent.
fn string(field: &str, v: Option<Value>, max: usize) -> Result<Option<String>, RegisterError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s)),
        Some(Value::String(_)) => Err(invalid(format!(
            "field '{field}' is longer than {max} bytes"
        ))),
        Some(_) => Err(invalid(format!("field '{field}' must be a string"))),
    }
}

/// A field real tagents send as a string and others as a number.
/// `""` counts as absent.
fn integer(field: &str, v: Option<Value>) -> Result<Option<u64>, RegisterError> {
    let bad = || {
        invalid(format!(
            "field '{field}' must be a non-negative integer or a string of digits"
        ))
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
        Some(Value::String(s)) => parse_digits(&s).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

fn float(field: &str, v: Option<Value>) -> Result<Option<f32>, RegisterError> {
    let bad = || invalid(format!("field '{field}' must be a number"));
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(|f| Some(f as f32)).ok_or_else(bad),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f32>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

/// A tenant name: 1 to 64 of `[A-Za-z0-9_.-]`.
pub fn validate_tenant(t: &str) -> Result<(), RegisterError> {
    if t.is_empty() {
        return Err(invalid(
            "tenant is missing: send it in the Tenant header, the body or the query",
        ));
    }
    if t.len() > MAX_TENANT_LEN
        || !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(invalid(format!(
            "tenant must be 1 to {MAX_TENANT_LEN} letters, digits, '_', '-' or '.'"
        )));
    }
    Ok(())
}

/// Split a comma-joined ip list, skipping empty items and duplicates.
pub fn parse_ip_list(s: &str) -> Result<Vec<IpAddr>, RegisterError> {
    let mut ips = Vec::new();
    for item in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ip =
            parse_ip(item).ok_or_else(|| invalid(format!("malformed ip '{item}' in ipString")))?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
        if ips.len() > MAX_IPS {
            return Err(invalid(format!("ipString lists more than {MAX_IPS} ips")));
        }
    }
    Ok(ips)
}

/// Where the request came from, outside the body.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The `Tenant` header, if any.
    pub tenant_header: Option<&'a str>,
    /// The `tenant` query parameter, if any.
    pub tenant_query: Option<&'a str>,
    /// The client address (the TCP peer, or the forwarded-for address when the
    /// peer is a trusted proxy).
    pub client_ip: IpAddr,
    /// The `token` query parameter, if any.
    pub token: Option<&'a str>,
}

impl RegisterRequest {
    /// Parse and validate a register body (rule 1). Nothing here touches state.
    pub fn parse(body: &[u8], origin: Origin<'_>) -> Result<RegisterRequest, RegisterError> {
        // serde would also fill a struct from an array, and its type errors
        // quote the value (which may be a credential): look at the top level
        // first, then parse with no echo of the body.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    Ok(_) => invalid("the body must be a JSON object"),
                    Err(e) => invalid(format!("invalid JSON: {e}")),
                },
            );
        }
        let raw: RawBody = serde_json::from_slice(body).map_err(|e| {
            if e.is_data() {
                invalid(format!("the body must be a JSON object: {e}"))
            } else {
                invalid(format!("invalid JSON: {e}"))
            }
        })?;
        // The header wins (SPEC §2.1): the body's tenant is read, and must be
        // a string, only when there is no header to take it from.
        let header = origin
            .tenant_header
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let body_tenant = match header {
            Some(_) => None,
            None => string("tenant", raw.tenant, MAX_TENANT_LEN + 1)?,
        };
        let tenant = [header, body_tenant.as_deref(), origin.tenant_query]
            .into_iter()
            .flatten()
            .map(str::trim)
            .find(|t| !t.is_empty())
            .unwrap_or("")
            .to_owned();
        validate_tenant(&tenant)?;

        let port =
            integer("port", raw.port)?.ok_or_else(|| invalid("missing required field 'port'"))?;
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid(format!("port {port} is not between 1 and 65535")))?;

        let tagent_id = match integer("tagentId", raw.tagent_id)? {
            Some(0) | None => None,
            Some(id) if id > MAX_TAGENT_ID => None,
            Some(id) => Some(id),
        };

        let ip = match string("mgmtIp", raw.mgmt_ip, MAX_FIELD_LEN)? {
            Some(s) if !s.trim().is_empty() => {
                parse_ip(&s).ok_or_else(|| invalid(format!("malformed mgmtIp '{}'", s.trim())))?
            }
            _ => origin.client_ip.to_canonical(),
        };
        if ip.is_unspecified() {
            return Err(invalid(format!(
                "the primary ip {ip} is not a host address"
            )));
        }

        let ips = match string("ipString", raw.ip_string, MAX_IPS * 40)? {
            Some(s) => parse_ip_list(&s)?,
            None => Vec::new(),
        };

        let text = |field, v| string(field, v, MAX_FIELD_LEN).map(Option::unwrap_or_default);
        Ok(RegisterRequest {
            tenant,
            tagent_id,
            ip,
            port,
            ips,
            name: text("name", raw.name)?,
            host: HostFacts {
                user: text("user", raw.user)?,
                version: text("version", raw.version)?,
                os_type: text("osType", raw.os_type)?,
                os_version: text("osVersion", raw.os_version)?,
                osbit: text("osbit", raw.osbit)?,
                pcpu: float("pcpu", raw.pcpu)?,
                mem: float("mem", raw.mem)?,
            },
            credential: string("credential", raw.credential, MAX_CREDENTIAL_LEN)?.map(Secret),
            // Longer than any token: kept empty, so it is refused as invalid
            // without holding what an attacker sent.
            token: origin.token.map(|t| {
                Secret(if t.len() <= MAX_TOKEN_LEN {
                    t.to_owned()
                } else {
                    String::new()
                })
            }),
            source: origin.client_ip.to_canonical(),
        })
    }
}
