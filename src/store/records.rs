//! The persisted forms of a tagent and an account.

use std::fmt;
use std::net::IpAddr;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::model::host::HostFactsReader;
use crate::model::{Runner, RunnerGroup, RunnerGroups, Tagent, parse_host_port};

/// A tagent as stored: plain strings, no interning. Encoded as a named
/// MessagePack map, the host facts among its own fields (the layout from
/// before they were one struct, so every stored record still decodes).
pub type StoredTagent = Tagent<String>;

/// By hand, for `#[serde(flatten)]`'s decoder buffers every entry of the
/// map first: at a million records on every start, that is 40% more time
/// per record.
impl<'de> Deserialize<'de> for StoredTagent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(StoredTagentVisitor)
    }
}

struct StoredTagentVisitor;

impl<'de> Visitor<'de> for StoredTagentVisitor {
    type Value = StoredTagent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a stored tagent (a map)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StoredTagent, A::Error> {
        let mut id = None;
        let mut tenant = None;
        let mut port = None;
        let mut ip = None;
        let mut ips: Option<Vec<IpAddr>> = None;
        let mut name: Option<String> = None;
        let mut host = HostFactsReader::default();
        let mut status = None;
        let mut runner_group = None;
        let mut runner = None;
        let mut first_registered = None;
        let mut last_registered = None;
        let mut last_status_change = None;
        let mut credential = None;
        let mut credential_change_until = None;
        fn once<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
            slot: &mut Option<T>,
            key: &'static str,
            map: &mut A,
        ) -> Result<(), A::Error> {
            if slot.is_some() {
                return Err(de::Error::duplicate_field(key));
            }
            *slot = Some(map.next_value()?);
            Ok(())
        }
        while let Some(key) = map.next_key::<Key>()? {
            match key.as_str() {
                "id" => once(&mut id, "id", &mut map)?,
                "tenant" => once(&mut tenant, "tenant", &mut map)?,
                "port" => once(&mut port, "port", &mut map)?,
                "ip" => once(&mut ip, "ip", &mut map)?,
                "ips" => once(&mut ips, "ips", &mut map)?,
                "name" => once(&mut name, "name", &mut map)?,
                "status" => once(&mut status, "status", &mut map)?,
                "runner_group" => once(&mut runner_group, "runner_group", &mut map)?,
                "runner" => runner = map.next_value()?,
                "first_registered" => once(&mut first_registered, "first_registered", &mut map)?,
                "last_registered" => once(&mut last_registered, "last_registered", &mut map)?,
                "last_status_change" => {
                    once(&mut last_status_change, "last_status_change", &mut map)?
                }
                "credential" => once(&mut credential, "credential", &mut map)?,
                "credential_change_until" => once(
                    &mut credential_change_until,
                    "credential_change_until",
                    &mut map,
                )?,
                k => {
                    if !host.read(k, &mut map)? {
                        map.next_value::<de::IgnoredAny>()?;
                    }
                }
            }
        }
        fn need<T, E: de::Error>(v: Option<T>, key: &'static str) -> Result<T, E> {
            v.ok_or_else(|| E::missing_field(key))
        }
        Ok(StoredTagent {
            id: need(id, "id")?,
            tenant: need(tenant, "tenant")?,
            port: need(port, "port")?,
            ip: need(ip, "ip")?,
            ips: need(ips, "ips")?.into(),
            name: need(name, "name")?.into(),
            host: host.finish()?,
            status: need(status, "status")?,
            runner_group: need(runner_group, "runner_group")?,
            runner,
            first_registered: need(first_registered, "first_registered")?,
            last_registered: need(last_registered, "last_registered")?,
            last_status_change: need(last_status_change, "last_status_change")?,
            // Records from before fingerprints have neither.
            credential: credential.flatten(),
            credential_change_until: credential_change_until.unwrap_or(0),
        })
    }
}

/// A map key read without allocating: the keys of a record are short (a
/// longer one is no field of ours and matches none).
struct Key {
    buf: [u8; 24],
    len: usize,
}

impl Key {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                let mut key = Key {
                    buf: [0; 24],
                    len: 0,
                };
                if s.len() <= key.buf.len() {
                    key.buf[..s.len()].copy_from_slice(s.as_bytes());
                    key.len = s.len();
                }
                Ok(key)
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// An account: one per (tenant, ip, port). `credential` is sealed
/// (see [`super::CredentialCipher`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAccount {
    pub ip: IpAddr,
    pub port: u16,
    #[serde(with = "serde_bytes")]
    pub credential: Option<Vec<u8>>,
}

/// A runner group as stored: the whole ordered list is one record, so a
/// change to it is one atomic write and the order (first match wins) is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredGroup {
    pub id: u32,
    pub name: String,
    pub networks: Vec<ipnet::IpNet>,
    pub runners: Vec<StoredRunner>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRunner {
    pub id: u32,
    pub name: String,
    /// `host:port`; `None` for "this hub, at whatever address it advertises".
    pub heartbeat: Option<String>,
}

impl StoredGroup {
    pub fn from_groups(groups: &RunnerGroups) -> Vec<StoredGroup> {
        groups
            .groups
            .iter()
            .map(|g| StoredGroup {
                id: g.id,
                name: g.name.clone(),
                networks: g.networks.clone(),
                runners: g
                    .runners
                    .iter()
                    .map(|r| StoredRunner {
                        id: r.id,
                        name: r.name.clone(),
                        heartbeat: (!r.this_hub).then(|| r.heartbeat()),
                    })
                    .collect(),
            })
            .collect()
    }

    /// The groups as the rules use them; this hub's runners get `advertised`.
    pub fn resolve(
        stored: &[StoredGroup],
        advertised: &(String, u16),
    ) -> Result<RunnerGroups, String> {
        let mut groups = Vec::with_capacity(stored.len());
        for g in stored {
            let mut runners = Vec::with_capacity(g.runners.len());
            for r in &g.runners {
                let (host, port) = match &r.heartbeat {
                    Some(hb) => parse_host_port(hb)
                        .map_err(|e| format!("stored runner {} ({}): {e}", r.id, r.name))?,
                    None => advertised.clone(),
                };
                runners.push(Runner {
                    id: r.id,
                    name: r.name.clone(),
                    host,
                    port,
                    this_hub: r.heartbeat.is_none(),
                });
            }
            groups.push(RunnerGroup {
                id: g.id,
                name: g.name.clone(),
                networks: g.networks.clone(),
                runners,
            });
        }
        Ok(RunnerGroups { groups }.sorted_runners())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DisconnectReason, HostFacts, Status};

    /// Records as `write_named` encoded them before the host facts were one
    /// struct (a flat `StoredTagent`, captured from that code): connected
    /// with a `pcpu`, and disconnected without one.
    const BEFORE: [&str; 2] = [
        "de0013a2696407a674656e616e74a464656d6fa4706f7274cd0f63a2697081a25634940a000007a36970739281a25634940a00000781a25636dc0010ccfd000000000000000000000000000007a46e616d65a6686f73742d37a475736572a4726f6f74a776657273696f6ea5312e352e34a76f735f74797065a54c696e7578aa6f735f76657273696f6ea4352e3135a56f73626974a67838365f3634a470637075ca40800000a36d656dc0a673746174757381a6737461747573a9636f6e6e6563746564ac72756e6e65725f67726f757002a672756e6e657201b066697273745f72656769737465726564cf0000018bcfe56800af6c6173745f72656769737465726564cf0000018bcfe56be8b26c6173745f7374617475735f6368616e6765cf0000018bcfe56fd0",
        "de0013a2696407a674656e616e74a464656d6fa4706f7274cd0f63a2697081a25634940a000007a36970739281a25634940a00000781a25636dc0010ccfd000000000000000000000000000007a46e616d65a6686f73742d37a475736572a4726f6f74a776657273696f6ea5312e352e34a76f735f74797065a54c696e7578aa6f735f76657273696f6ea4352e3135a56f73626974a67838365f3634a470637075c0a36d656dc0a673746174757382a6737461747573ac646973636f6e6e6563746564a6726561736f6eac69646c652d74696d656f7574ac72756e6e65725f67726f757002a672756e6e657201b066697273745f72656769737465726564cf0000018bcfe56800af6c6173745f72656769737465726564cf0000018bcfe56be8b26c6173745f7374617475735f6368616e6765cf0000018bcfe56fd0",
    ];

    fn expected(pcpu: Option<f32>, status: Status) -> StoredTagent {
        StoredTagent {
            id: 7,
            tenant: "demo".into(),
            port: 3939,
            ip: "10.0.0.7".parse().unwrap(),
            ips: ["10.0.0.7".parse().unwrap(), "fd00::7".parse().unwrap()].into(),
            name: "host-7".into(),
            host: HostFacts {
                user: "root".into(),
                version: "1.5.4".into(),
                os_type: "Linux".into(),
                os_version: "5.15".into(),
                osbit: "x86_64".into(),
                pcpu,
                mem: None,
            },
            status,
            credential: None,
            credential_change_until: 0,
            runner_group: 2,
            runner: Some(1),
            first_registered: 1_700_000_000_000,
            last_registered: 1_700_000_001_000,
            last_status_change: 1_700_000_002_000,
        }
    }

    #[test]
    fn records_written_before_host_facts_decode_and_encode_the_same() {
        let cases = [
            expected(Some(4.0), Status::Connected),
            expected(None, Status::Disconnected(DisconnectReason::IdleTimeout)),
        ];
        for (hex, want) in BEFORE.iter().zip(cases) {
            let bytes = hex::decode(hex).unwrap();
            let got: StoredTagent = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(got, want);
            let mut again = Vec::new();
            rmp_serde::encode::write_named(&mut again, &got).unwrap();
            assert_eq!(hex::encode(again), *hex, "the same bytes as before");
        }
    }

    #[test]
    fn a_credential_print_and_its_window_round_trip() {
        let mut t = expected(None, Status::Connected);
        t.credential = Some(crate::model::CredentialPrint([9; 16]));
        t.credential_change_until = 1_700_000_003_000;
        let mut bytes = Vec::new();
        rmp_serde::encode::write_named(&mut bytes, &t).unwrap();
        let got: StoredTagent = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(got, t);
    }

    #[test]
    fn an_unknown_field_is_skipped_and_a_missing_fact_is_named() {
        // "user" renamed "uses": one unknown field, and no user.
        let hex = BEFORE[0].replace("a475736572", "a475736573");
        let err = rmp_serde::from_slice::<StoredTagent>(&hex::decode(hex).unwrap()).unwrap_err();
        assert!(err.to_string().contains("missing field `user`"), "{err}");
    }
}
