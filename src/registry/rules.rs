//! The registration rules of SPEC §2.3, as one pure function over an
//! [`IndexView`]: no sockets, no disk. The writer applies what it returns.

use std::net::IpAddr;

use smallvec::SmallVec;

use super::Liveness;
use super::error::RegisterError;
use super::index::IndexView;
use super::request::RegisterRequest;
use crate::model::credential::may_change;
use crate::model::intern::{Interner, Sym};
use crate::model::{
    CredentialPrint, DisconnectReason, MAX_TAGENT_ID, RunnerGroups, Status, Tagent, TagentId,
};

/// What a registration does, once decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The tagent's record after the registration.
    pub tagent: Tagent,
    pub created: bool,
    /// Ips whose account (tenant, ip, port) gets this registration's credential.
    pub accounts_put: Vec<IpAddr>,
    /// Ips whose account goes away: dropped by this tagent, listed by no other.
    pub accounts_delete: Vec<IpAddr>,
}

/// What a registration brings about its credential.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Proof {
    /// The fingerprint of the request's credential, if it brings one.
    pub print: Option<CredentialPrint>,
    /// It carries a token or an operator's approval, so it may change the
    /// credential of the tagent it finds.
    pub authorized: bool,
}

impl Proof {
    pub fn of(print: Option<CredentialPrint>) -> Proof {
        Proof {
            print,
            authorized: false,
        }
    }
}

/// `ip:port(name)` for each tagent, as the original names them in errors.
fn describe(view: &impl IndexView, ids: &[TagentId]) -> String {
    ids.iter()
        .filter_map(|id| view.get(*id))
        .map(|t| format!("{}:{}({}, id {})", t.ip, t.port, t.name, t.id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Tagents other than `me` whose *primary* ip is `ip` on `port`.
fn primary_owners(
    view: &impl IndexView,
    tenant: Sym,
    port: u16,
    ip: IpAddr,
    me: Option<TagentId>,
) -> SmallVec<[TagentId; 2]> {
    view.lookup(tenant, port, ip)
        .into_iter()
        .filter(|id| Some(*id) != me && view.get(*id).is_some_and(|t| t.ip == ip))
        .collect()
}

/// Rule 2: which existing tagent, if any, this registration is.
pub fn choose_tagent(
    view: &impl IndexView,
    tenant: Sym,
    req: &RegisterRequest,
) -> Result<Option<TagentId>, RegisterError> {
    let by_id = req
        .tagent_id
        .and_then(|id| view.get(id))
        .filter(|t| t.tenant == tenant);
    if let Some(t) = by_id
        && t.port == req.port
        && t.answers_for(req.ip)
    {
        return Ok(Some(t.id));
    }
    let found = view.lookup(tenant, req.port, req.ip);
    match found.as_slice() {
        [] => Ok(None),
        [id] => Ok(Some(*id)),
        ids => Err(RegisterError::MultipleTagents {
            ip: req.ip,
            port: req.port,
            tagents: describe(view, ids),
        }),
    }
}

/// Decide a registration against `view`: rules 2 to 8 (rule 1 is
/// [`RegisterRequest::parse`]), and SPEC §6's guard of a known tagent's
/// credential, given what the request brings of it (`proof`).
/// Interns the request's strings only once it is accepted, so refusals
/// cannot grow the interner.
pub fn decide(
    view: &impl IndexView,
    interner: &Interner,
    groups: &RunnerGroups,
    live: &dyn Liveness,
    req: &RegisterRequest,
    proof: Proof,
    now: u64,
) -> Result<Decision, RegisterError> {
    let print = proof.print;
    // A tenant the interner has never seen holds no tagent yet.
    let known_tenant = interner.get(&req.tenant);
    let chosen = match known_tenant {
        Some(tenant) => choose_tagent(view, tenant, req)?,
        None => None,
    };
    let old = chosen.and_then(|id| view.get(id));

    // Rule 3: a tagent with a live session cannot be registered over.
    if let Some(t) = old
        && live.is_live(t.id)
    {
        return Err(RegisterError::IpConflict {
            id: t.id,
            ip: t.ip,
            port: t.port,
        });
    }

    // SPEC §6: an unauthenticated request neither replaces a known
    // tagent's credential nor moves its primary ip.
    if let Some(t) = old
        && !proof.authorized
        && !may_change(
            t.credential,
            print,
            t.ip != req.ip,
            t.credential_change_until,
            now,
        )
    {
        return Err(RegisterError::CredentialChange {
            id: t.id,
            ip: t.ip,
            port: t.port,
        });
    }

    // Rule 4: the first network, in configured order, that contains the primary ip.
    let group = groups
        .match_ip(req.ip)
        .ok_or(RegisterError::NoRunnerGroup(req.ip))?;

    // Rule 5: contained ips must not be another tagent's primary ip on this port.
    let mut others: SmallVec<[TagentId; 2]> = SmallVec::new();
    if let Some(tenant) = known_tenant {
        for ip in &req.ips {
            for id in primary_owners(view, tenant, req.port, *ip, chosen) {
                if !others.contains(&id) {
                    others.push(id);
                }
            }
        }
    }
    if !others.is_empty() {
        return Err(RegisterError::ContainsOtherPrimary {
            port: req.port,
            tagents: describe(view, &others),
        });
    }

    // Rule 6: a primary (ip, port) belongs to at most one tagent.
    let owners = known_tenant
        .map(|tenant| primary_owners(view, tenant, req.port, req.ip, chosen))
        .unwrap_or_default();
    if !owners.is_empty() {
        return Err(RegisterError::PrimaryTaken {
            ip: req.ip,
            port: req.port,
            tagents: describe(view, &owners),
        });
    }

    let id = match chosen {
        Some(id) => id,
        None if view.next_id() <= MAX_TAGENT_ID => view.next_id(),
        None => return Err(RegisterError::IdsExhausted),
    };
    let tenant = known_tenant.unwrap_or_else(|| interner.intern(&req.tenant));
    // A new credential uses up the window that let it in.
    let credential = print.or(old.and_then(|t| t.credential));
    let credential_changed = old.is_some_and(|t| t.credential != credential);
    // Rule 8: the record (and with it the primary ip) may move.
    let tagent = Tagent {
        id,
        tenant,
        port: req.port,
        ip: req.ip,
        ips: req.ips.clone().into_boxed_slice(),
        name: req.name.as_str().into(),
        host: req.host.map(|v| interner.intern(v)),
        status: old.map_or(
            Status::Disconnected(DisconnectReason::NeverConnected),
            |t| t.status,
        ),
        runner_group: group.id,
        runner: old.and_then(|t| t.runner),
        first_registered: old.map_or(now, |t| t.first_registered),
        last_registered: now,
        last_status_change: old.map_or(now, |t| t.last_status_change),
        credential,
        credential_change_until: match old {
            Some(t) if !credential_changed => t.credential_change_until,
            _ => 0,
        },
    };

    // Rule 7: one account per (ip, port); dropped ips lose theirs unless
    // another tagent still lists them.
    let accounts_put: Vec<IpAddr> = tagent.all_ips().map(|(_, ip)| ip).collect();
    let accounts_delete = old
        .map(|old| {
            old.all_ips()
                .map(|(_, ip)| ip)
                .filter(|ip| !accounts_put.contains(ip))
                .filter(|ip| {
                    view.lookup(tenant, req.port, *ip)
                        .iter()
                        .all(|other| *other == id)
                })
                .collect()
        })
        .unwrap_or_default();

    Ok(Decision {
        tagent,
        created: old.is_none(),
        accounts_put,
        accounts_delete,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    //! One table per rule of SPEC §2.3. Each row starts from the tagents its
    //! `given` registrations create (ids 1, 2, ... in order of creation).

    use std::net::IpAddr;

    use super::*;
    use crate::model::{HostFacts, Runner, RunnerGroup};
    use crate::registry::index::Index;
    use crate::registry::request::{Origin, parse_ip_list};

    const P: u16 = 3939;
    const Q: u16 = 4040;
    /// The clock of every decision (Unix ms).
    const NOW: u64 = 1000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ips(list: &str) -> Vec<IpAddr> {
        let mut v = parse_ip_list(list).unwrap();
        v.sort();
        v
    }

    /// A registration of `tenant` from `primary` on `port` listing `contained` ("a,b").
    pub(crate) fn reg(
        tenant: &str,
        id: Option<TagentId>,
        primary: &str,
        port: u16,
        contained: &str,
    ) -> RegisterRequest {
        RegisterRequest {
            tenant: tenant.into(),
            tagent_id: id,
            ip: ip(primary),
            port,
            ips: parse_ip_list(contained).unwrap(),
            name: format!("host-{primary}"),
            host: HostFacts {
                user: "root".into(),
                version: "1.0".into(),
                os_type: "Linux".into(),
                os_version: "9".into(),
                osbit: "x86_64".into(),
                pcpu: None,
                mem: None,
            },
            credential: None,
            token: None,
            source: ip(primary),
        }
    }

    fn group(id: u32, networks: &[&str], with_runner: bool) -> RunnerGroup {
        RunnerGroup {
            id,
            name: format!("g{id}"),
            networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
            runners: if with_runner {
                vec![Runner {
                    id,
                    name: format!("r{id}"),
                    host: "10.255.0.1".into(),
                    port: 8888,
                    this_hub: false,
                }]
            } else {
                Vec::new()
            },
        }
    }

    fn default_groups() -> RunnerGroups {
        RunnerGroups {
            groups: vec![group(
                1,
                &["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"],
                true,
            )],
        }
    }

    struct Live(Vec<TagentId>);

    impl Liveness for Live {
        fn is_live(&self, id: TagentId) -> bool {
            self.0.contains(&id)
        }
    }

    struct World {
        index: Index,
        interner: Interner,
        groups: RunnerGroups,
        live: Live,
    }

    impl World {
        fn new(groups: RunnerGroups) -> Self {
            World {
                index: Index::new(),
                interner: Interner::default(),
                groups,
                live: Live(Vec::new()),
            }
        }

        /// The world after `given`, each of which must succeed.
        fn with(given: &[RegisterRequest]) -> Self {
            let mut w = World::new(default_groups());
            for (i, r) in given.iter().enumerate() {
                if let Err(e) = w.register(r) {
                    panic!("given registration {i} ({r:?}) failed: {e}");
                }
            }
            w
        }

        fn decide(&self, req: &RegisterRequest) -> Result<Decision, RegisterError> {
            self.decide_at(req, NOW)
        }

        fn decide_at(&self, req: &RegisterRequest, now: u64) -> Result<Decision, RegisterError> {
            let cipher = crate::store::CredentialCipher::from_hex(&"00".repeat(32)).unwrap();
            let print = req.credential.as_ref().map(|c| cipher.print(&c.0));
            decide(
                &self.index,
                &self.interner,
                &self.groups,
                &self.live,
                req,
                Proof::of(print),
                now,
            )
        }

        fn register(&mut self, req: &RegisterRequest) -> Result<Decision, RegisterError> {
            let d = self.decide(req)?;
            self.index.put(d.tagent.clone());
            Ok(d)
        }

        fn lookup(&self, tenant: &str, port: u16, at: &str) -> Vec<TagentId> {
            let tenant = self.interner.intern(tenant);
            self.index.lookup(tenant, port, ip(at)).to_vec()
        }
    }

    #[derive(Debug)]
    enum Expect {
        /// The error kind and substrings its message must contain.
        Err(&'static str, &'static [&'static str]),
        /// The chosen id, whether it is new, and the accounts put and deleted.
        Ok {
            id: TagentId,
            created: bool,
            put: &'static str,
            delete: &'static str,
        },
    }

    fn err(kind: &'static str, mentions: &'static [&'static str]) -> Expect {
        Expect::Err(kind, mentions)
    }

    /// Chosen `id`, with accounts put and deleted left unchecked ("*").
    fn chose(id: TagentId, created: bool) -> Expect {
        Expect::Ok {
            id,
            created,
            put: "*",
            delete: "*",
        }
    }

    struct Case {
        name: &'static str,
        given: Vec<RegisterRequest>,
        live: &'static [TagentId],
        req: RegisterRequest,
        expect: Expect,
    }

    fn case(
        name: &'static str,
        given: Vec<RegisterRequest>,
        req: RegisterRequest,
        expect: Expect,
    ) -> Case {
        Case {
            name,
            given,
            live: &[],
            req,
            expect,
        }
    }

    fn run(cases: Vec<Case>) {
        for c in cases {
            let mut w = World::with(&c.given);
            w.live = Live(c.live.to_vec());
            let got = w.decide(&c.req);
            match (&c.expect, got) {
                (Expect::Err(kind, mentions), Err(e)) => {
                    assert_eq!(e.kind(), *kind, "{}: wrong error: {e}", c.name);
                    let msg = e.to_string();
                    for m in *mentions {
                        assert!(
                            msg.contains(m),
                            "{}: {msg:?} does not mention {m:?}",
                            c.name
                        );
                    }
                }
                (
                    Expect::Ok {
                        id,
                        created,
                        put,
                        delete,
                    },
                    Ok(d),
                ) => {
                    assert_eq!(d.tagent.id, *id, "{}: chosen id", c.name);
                    assert_eq!(d.created, *created, "{}: created", c.name);
                    assert_eq!(d.tagent.ip, c.req.ip, "{}: primary ip", c.name);
                    assert_eq!(&*d.tagent.ips, c.req.ips.as_slice(), "{}: ips", c.name);
                    assert_eq!(d.tagent.port, c.req.port, "{}: port", c.name);
                    let sorted = |v: &[IpAddr]| {
                        let mut v = v.to_vec();
                        v.sort();
                        v
                    };
                    if *put != "*" {
                        assert_eq!(
                            sorted(&d.accounts_put),
                            ips(put),
                            "{}: accounts_put",
                            c.name
                        );
                    }
                    if *delete != "*" {
                        assert_eq!(
                            sorted(&d.accounts_delete),
                            ips(delete),
                            "{}: accounts_delete",
                            c.name
                        );
                    }
                    // Applying the decision keeps the index answering for it.
                    w.index.put(d.tagent.clone());
                    let tenant = w.interner.intern(&c.req.tenant);
                    for (_, at) in d.tagent.all_ips() {
                        assert!(
                            w.index.lookup(tenant, d.tagent.port, at).contains(id),
                            "{}: index does not answer {at} for {id}",
                            c.name
                        );
                    }
                }
                (expect, got) => panic!("{}: expected {expect:?}, got {got:?}", c.name),
            }
        }
    }

    // Rule 1 ---------------------------------------------------------------

    const CLIENT: &str = "10.9.9.9";

    fn parse_with(
        body: &str,
        header: Option<&str>,
        query: Option<&str>,
    ) -> Result<RegisterRequest, RegisterError> {
        RegisterRequest::parse(
            body.as_bytes(),
            Origin {
                tenant_header: header,
                tenant_query: query,
                client_ip: ip(CLIENT),
                token: None,
            },
        )
    }

    fn parse(body: &str) -> Result<RegisterRequest, RegisterError> {
        parse_with(body, None, None)
    }

    /// Each row: a body and either a value read from the request or the
    /// substring the `invalid` error must mention.
    fn check_parse<T: PartialEq + std::fmt::Debug>(
        rows: &[(&str, Result<T, &str>)],
        read: impl Fn(&RegisterRequest) -> T,
    ) {
        for (body, expect) in rows {
            match (parse(body), expect) {
                (Ok(r), Ok(want)) => assert_eq!(&read(&r), want, "{body}"),
                (Err(e), Err(mention)) => {
                    assert_eq!(e.kind(), "invalid", "{body}: {e}");
                    assert!(
                        e.to_string().contains(mention),
                        "{body}: {e} lacks {mention:?}"
                    );
                }
                (got, want) => panic!("{body}: expected {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn rule1_port_may_be_a_string_or_a_number() {
        check_parse(
            &[
                (r#"{"tenant":"t","port":"3939"}"#, Ok(3939)),
                (r#"{"tenant":"t","port":3939}"#, Ok(3939)),
                (r#"{"tenant":"t","port":" 4040 "}"#, Ok(4040)),
                (r#"{"tenant":"t","port":"65535"}"#, Ok(65535)),
                (r#"{"tenant":"t","port":"39a9"}"#, Err("port")),
                (r#"{"tenant":"t","port":"-1"}"#, Err("port")),
                (r#"{"tenant":"t","port":-1}"#, Err("port")),
                (r#"{"tenant":"t","port":3939.5}"#, Err("port")),
                (r#"{"tenant":"t","port":0}"#, Err("port")),
                (r#"{"tenant":"t","port":"65536"}"#, Err("port")),
                (
                    r#"{"tenant":"t","port":99999999999999999999999}"#,
                    Err("port"),
                ),
            ],
            |r| r.port,
        );
    }

    #[test]
    fn rule1_missing_port_is_named_in_the_error() {
        check_parse(
            &[
                (r#"{"tenant":"t"}"#, Err("missing required field 'port'")),
                (
                    r#"{"tenant":"t","port":""}"#,
                    Err("missing required field 'port'"),
                ),
                (
                    r#"{"tenant":"t","port":null}"#,
                    Err("missing required field 'port'"),
                ),
            ],
            |r| r.port,
        );
    }

    #[test]
    fn rule1_empty_or_absent_tagent_id_is_a_first_registration() {
        check_parse(
            &[
                (r#"{"tenant":"t","port":1,"tagentId":""}"#, Ok(None)),
                (r#"{"tenant":"t","port":1,"tagentId":" "}"#, Ok(None)),
                (r#"{"tenant":"t","port":1,"tagentId":null}"#, Ok(None)),
                (r#"{"tenant":"t","port":1}"#, Ok(None)),
                (r#"{"tenant":"t","port":1,"tagentId":0}"#, Ok(None)),
                (r#"{"tenant":"t","port":1,"tagentId":"12"}"#, Ok(Some(12))),
                (r#"{"tenant":"t","port":1,"tagentId":12}"#, Ok(Some(12))),
                // Above every id we hand out: unknown, so rule 2 looks it up by ip.
                (
                    r#"{"tenant":"t","port":1,"tagentId":9007199254740993}"#,
                    Ok(None),
                ),
                (
                    r#"{"tenant":"t","port":1,"tagentId":"x12"}"#,
                    Err("tagentId"),
                ),
            ],
            |r| r.tagent_id,
        );
    }

    #[test]
    fn rule1_malformed_ips_are_refused() {
        check_parse(
            &[
                (
                    r#"{"tenant":"t","port":1,"ipString":"10.0.0.1,10.0.0.256"}"#,
                    Err("10.0.0.256"),
                ),
                (
                    r#"{"tenant":"t","port":1,"ipString":"10.0.0.1;10.0.0.2"}"#,
                    Err("ipString"),
                ),
                (
                    r#"{"tenant":"t","port":1,"ipString":"host.example"}"#,
                    Err("host.example"),
                ),
                (
                    r#"{"tenant":"t","port":1,"mgmtIp":"10.0.0"}"#,
                    Err("mgmtIp"),
                ),
                (
                    r#"{"tenant":"t","port":1,"mgmtIp":"fd00::1::2"}"#,
                    Err("mgmtIp"),
                ),
            ],
            |r| r.ip,
        );
        // Well-formed lists: empty items and duplicates dropped, mapped IPv6 folded.
        check_parse(
            &[
                (
                    r#"{"tenant":"t","port":1,"ipString":"10.0.0.2, 10.0.0.1,,10.0.0.2,"}"#,
                    Ok(vec![ip("10.0.0.2"), ip("10.0.0.1")]),
                ),
                (
                    r#"{"tenant":"t","port":1,"ipString":"::ffff:10.0.0.3,fd00::1"}"#,
                    Ok(vec![ip("10.0.0.3"), ip("fd00::1")]),
                ),
                (r#"{"tenant":"t","port":1,"ipString":""}"#, Ok(vec![])),
                (r#"{"tenant":"t","port":1}"#, Ok(vec![])),
            ],
            |r| r.ips.clone(),
        );
    }

    #[test]
    fn rule1_empty_primary_ip_is_refused() {
        check_parse(
            &[
                // No mgmtIp: the peer address is the primary ip.
                (r#"{"tenant":"t","port":1}"#, Ok(ip(CLIENT))),
                (r#"{"tenant":"t","port":1,"mgmtIp":""}"#, Ok(ip(CLIENT))),
                (
                    r#"{"tenant":"t","port":1,"mgmtIp":" 10.0.0.7 "}"#,
                    Ok(ip("10.0.0.7")),
                ),
                (
                    r#"{"tenant":"t","port":1,"mgmtIp":"::ffff:10.0.0.8"}"#,
                    Ok(ip("10.0.0.8")),
                ),
                (
                    r#"{"tenant":"t","port":1,"mgmtIp":"0.0.0.0"}"#,
                    Err("primary ip"),
                ),
                (
                    r#"{"tenant":"t","port":1,"mgmtIp":"::"}"#,
                    Err("primary ip"),
                ),
            ],
            |r| r.ip,
        );
        let unspecified = Origin {
            tenant_header: None,
            tenant_query: None,
            client_ip: ip("0.0.0.0"),
            token: None,
        };
        let e = RegisterRequest::parse(br#"{"tenant":"t","port":1}"#, unspecified).unwrap_err();
        assert_eq!(e.kind(), "invalid");
    }

    #[test]
    fn rule1_bad_tenant_is_refused() {
        let long = format!(r#"{{"tenant":"{}","port":1}}"#, "t".repeat(65));
        let max = format!(r#"{{"tenant":"{}","port":1}}"#, "t".repeat(64));
        let max_tenant = "t".repeat(64);
        check_parse(
            &[
                (r#"{"port":1}"#, Err("tenant is missing")),
                (r#"{"tenant":"","port":1}"#, Err("tenant is missing")),
                (r#"{"tenant":"  ","port":1}"#, Err("tenant is missing")),
                (r#"{"tenant":"a b","port":1}"#, Err("tenant must be")),
                (r#"{"tenant":"t/1","port":1}"#, Err("tenant must be")),
                (r#"{"tenant":"té","port":1}"#, Err("tenant must be")),
                (long.as_str(), Err("tenant")),
                (max.as_str(), Ok(max_tenant.clone())),
                (
                    r#"{"tenant":"Dev_1.a-b","port":1}"#,
                    Ok("Dev_1.a-b".to_owned()),
                ),
            ],
            |r| r.tenant.clone(),
        );
    }

    #[test]
    fn rule1_tenant_precedence_is_header_then_body_then_query() {
        let with_body = r#"{"tenant":"b","port":1}"#;
        let no_body = r#"{"port":1}"#;
        let bad_body = r#"{"tenant":"b b","port":1}"#;
        // The last column is the tenant, or `None` for an error.
        let rows = [
            (with_body, Some("h"), Some("q"), Some("h")),
            (with_body, None, Some("q"), Some("b")),
            (no_body, None, Some("q"), Some("q")),
            (no_body, Some("h"), None, Some("h")),
            // An empty value counts as absent.
            (with_body, Some(""), Some("q"), Some("b")),
            (r#"{"tenant":"","port":1}"#, None, Some("q"), Some("q")),
            // The first present one is the tenant, valid or not.
            (bad_body, Some("h"), None, Some("h")),
            (bad_body, None, Some("q"), None),
            // With a header, the body's tenant is not read at all.
            (r#"{"tenant":5,"port":1}"#, Some("h"), None, Some("h")),
            (r#"{"tenant":5,"port":1}"#, None, Some("q"), None),
            (with_body, Some("h h"), None, None),
            (no_body, None, None, None),
        ];
        for (body, header, query, want) in rows {
            let got = parse_with(body, header, query);
            match (got, want) {
                (Ok(r), Some(t)) => assert_eq!(r.tenant, t, "{body} {header:?} {query:?}"),
                (Err(e), None) => assert_eq!(e.kind(), "invalid"),
                (got, want) => panic!("{body} {header:?} {query:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn rule1_wrong_types_are_refused() {
        check_parse(
            &[
                (r#"{"tenant":5,"port":1}"#, Err("'tenant' must be a string")),
                (r#"{"tenant":"t","port":[1]}"#, Err("'port'")),
                (r#"{"tenant":"t","port":true}"#, Err("'port'")),
                (
                    r#"{"tenant":"t","port":1,"tagentId":{}}"#,
                    Err("'tagentId'"),
                ),
                (
                    r#"{"tenant":"t","port":1,"ipString":["10.0.0.1"]}"#,
                    Err("'ipString'"),
                ),
                (
                    r#"{"tenant":"t","port":1,"mgmtIp":167772161}"#,
                    Err("'mgmtIp'"),
                ),
                (r#"{"tenant":"t","port":1,"name":5}"#, Err("'name'")),
                (
                    r#"{"tenant":"t","port":1,"credential":false}"#,
                    Err("'credential'"),
                ),
                (r#"{"tenant":"t","port":1,"pcpu":"many"}"#, Err("'pcpu'")),
                (r#"{"tenant":"t","port":1,"mem":[]}"#, Err("'mem'")),
                (r#"[1,2]"#, Err("JSON object")),
                (r#""tenant""#, Err("JSON object")),
                (r#"{"tenant":"t","port":1"#, Err("invalid JSON")),
                // Numbers sent as strings are fine.
                (
                    r#"{"tenant":"t","port":"1","pcpu":"2.5","mem":"  "}"#,
                    Ok(()),
                ),
            ],
            |_| (),
        );
    }

    // Rules 2 to 8 --------------------------------------------------------

    #[test]
    fn rule2_tagent_id_with_same_port_and_contained_ip_keeps_that_tagent() {
        // Tagents 1 and 2 both list 10.0.0.9: only the id tells them apart.
        let shared = || {
            vec![
                reg("t", None, "10.0.0.1", P, "10.0.0.9"),
                reg("t", None, "10.0.0.2", P, "10.0.0.9"),
            ]
        };
        run(vec![
            case(
                "id 1 and a contained ip",
                shared(),
                reg("t", Some(1), "10.0.0.9", P, "10.0.0.9"),
                chose(1, false),
            ),
            case(
                "id 2 and a contained ip",
                shared(),
                reg("t", Some(2), "10.0.0.9", P, "10.0.0.9"),
                chose(2, false),
            ),
            case(
                "id and its primary ip",
                shared(),
                reg("t", Some(2), "10.0.0.2", P, ""),
                chose(2, false),
            ),
            case(
                "id, but the ip is another tagent's: lookup finds that one",
                shared(),
                reg("t", Some(1), "10.0.0.2", P, ""),
                chose(2, false),
            ),
            case(
                "id, but another port: lookup on that port finds none",
                shared(),
                reg("t", Some(1), "10.0.0.1", Q, ""),
                chose(3, true),
            ),
            case(
                "id of another tenant's tagent: unknown here",
                vec![reg("u", None, "10.0.0.1", P, "")],
                reg("t", Some(1), "10.0.0.1", P, ""),
                chose(2, true),
            ),
            case(
                "unknown id: lookup finds the one tagent listing the ip",
                shared(),
                reg("t", Some(99), "10.0.0.1", P, ""),
                chose(1, false),
            ),
            case(
                "no id: lookup by a contained ip",
                vec![reg("t", None, "10.0.0.1", P, "10.0.0.5")],
                reg("t", None, "10.0.0.5", P, "10.0.0.5"),
                chose(1, false),
            ),
            case(
                "no id, nothing found: a new id",
                shared(),
                reg("t", None, "10.0.0.3", P, ""),
                chose(3, true),
            ),
        ]);
    }

    #[test]
    fn rule2_multiple_tagents_is_an_error() {
        let shared = || {
            vec![
                reg("t", None, "10.0.0.1", P, "10.0.0.9"),
                reg("t", None, "10.0.0.2", P, "10.0.0.9"),
                reg("t", None, "10.0.0.3", P, ""),
            ]
        };
        run(vec![
            case(
                "no id",
                shared(),
                reg("t", None, "10.0.0.9", P, ""),
                err(
                    "multiple_tagents",
                    &["multiple tagents", "id 1", "id 2", "10.0.0.9"],
                ),
            ),
            case(
                "unknown id",
                shared(),
                reg("t", Some(77), "10.0.0.9", P, ""),
                err("multiple_tagents", &["id 1", "id 2"]),
            ),
            case(
                "known id that does not list the ip",
                shared(),
                reg("t", Some(3), "10.0.0.9", P, ""),
                err("multiple_tagents", &["id 1", "id 2"]),
            ),
            case(
                "the other holder is on another port: not multiple",
                vec![
                    reg("t", None, "10.0.0.1", P, "10.0.0.9"),
                    reg("t", None, "10.0.0.2", Q, "10.0.0.9"),
                ],
                reg("t", None, "10.0.0.9", Q, ""),
                chose(2, false),
            ),
            case(
                "the other holder is in another tenant: not multiple",
                vec![
                    reg("t", None, "10.0.0.1", P, "10.0.0.9"),
                    reg("u", None, "10.0.0.2", P, "10.0.0.9"),
                ],
                reg("t", None, "10.0.0.9", P, ""),
                chose(1, false),
            ),
        ]);
    }

    #[test]
    fn rule3_live_session_is_ip_conflict() {
        let two = || {
            vec![
                reg("t", None, "10.0.0.1", P, "172.16.0.1"),
                reg("t", None, "10.0.0.2", P, ""),
            ]
        };
        let live = |name, live, req, expect| Case {
            name,
            given: two(),
            live,
            req,
            expect,
        };
        run(vec![
            live(
                "found by lookup, live",
                &[1],
                reg("t", None, "10.0.0.1", P, ""),
                err("ip_conflict", &["IP conflict", "tagent 1"]),
            ),
            live(
                "found by id, live",
                &[1],
                reg("t", Some(1), "10.0.0.1", P, ""),
                err("ip_conflict", &["IP conflict"]),
            ),
            live(
                "found, not live",
                &[2],
                reg("t", None, "10.0.0.1", P, ""),
                chose(1, false),
            ),
            live(
                "new tagent while others are live",
                &[1, 2],
                reg("t", None, "10.0.0.3", P, ""),
                chose(3, true),
            ),
            live(
                "same ip on another port is another tagent",
                &[1],
                reg("t", None, "10.0.0.1", Q, ""),
                chose(3, true),
            ),
            // Rule 3 comes before rule 4: the live tagent is the answer even
            // though no runner group matches 172.16.0.1.
            live(
                "live before runner group",
                &[1],
                reg("t", None, "172.16.0.1", P, ""),
                err("ip_conflict", &[]),
            ),
            live(
                "not live: then no runner group",
                &[],
                reg("t", None, "172.16.0.1", P, ""),
                err("no_runner_group", &["172.16.0.1"]),
            ),
        ]);
    }

    /// Rule 4 rows: groups, primary ip, contained ips, and the group id or error kind.
    fn check_groups(groups: &RunnerGroups, rows: &[(&str, &str, Result<u32, &str>)]) {
        for (primary, contained, want) in rows {
            let mut w = World::new(groups.clone());
            let got = w.register(&reg("t", None, primary, P, contained));
            match (got, want) {
                (Ok(d), Ok(g)) => assert_eq!(d.tagent.runner_group, *g, "{primary}"),
                (Err(e), Err(kind)) => {
                    assert_eq!(e.kind(), *kind, "{primary}: {e}");
                    assert!(
                        e.to_string().contains(primary),
                        "{e} does not name {primary}"
                    );
                }
                (got, want) => panic!("{primary}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn rule4_first_matching_network_with_runners_wins() {
        let groups = RunnerGroups {
            groups: vec![
                group(1, &["10.1.0.0/16"], false),
                group(2, &["10.0.0.0/8", "192.168.0.0/16"], true),
                group(3, &["10.1.2.0/24", "0.0.0.0/0"], true),
            ],
        };
        check_groups(
            &groups,
            &[
                // Group 1 matches first but has no runner; group 2's /8 comes
                // before group 3's more specific /24: first match, not longest.
                ("10.1.2.3", "", Ok(2)),
                ("192.168.1.1", "", Ok(2)),
                ("172.16.0.1", "", Ok(3)),
                // Only the primary ip is matched.
                ("172.16.0.2", "10.1.2.3", Ok(3)),
                ("fd00::1", "", Err("no_runner_group")),
            ],
        );
        let no_catch_all = RunnerGroups {
            groups: vec![
                group(1, &["172.16.0.0/12"], false),
                group(2, &["10.0.0.0/8"], true),
            ],
        };
        check_groups(
            &no_catch_all,
            &[
                ("10.2.3.4", "", Ok(2)),
                // Matched only by a group without runners.
                ("172.16.0.1", "10.2.3.4", Err("no_runner_group")),
                ("192.168.0.1", "", Err("no_runner_group")),
            ],
        );
        check_groups(
            &RunnerGroups::default(),
            &[("10.0.0.1", "", Err("no_runner_group"))],
        );
        check_groups(
            &RunnerGroups {
                groups: vec![group(1, &[], true)],
            },
            &[("10.0.0.1", "", Err("no_runner_group"))],
        );
    }

    #[test]
    fn rule4_ipv4_slash0_does_not_match_ipv6() {
        let v4_only = RunnerGroups {
            groups: vec![group(1, &["0.0.0.0/0"], true)],
        };
        check_groups(
            &v4_only,
            &[
                ("10.0.0.1", "", Ok(1)),
                ("255.255.255.255", "", Ok(1)),
                ("fd00::1", "", Err("no_runner_group")),
                ("2001:db8::1", "10.0.0.1", Err("no_runner_group")),
            ],
        );
        let v6_only = RunnerGroups {
            groups: vec![group(1, &["::/0"], true)],
        };
        check_groups(
            &v6_only,
            &[
                ("fd00::1", "", Ok(1)),
                ("10.0.0.1", "", Err("no_runner_group")),
            ],
        );
        let both = RunnerGroups {
            groups: vec![
                group(1, &["0.0.0.0/0"], true),
                group(2, &["::/0"], true),
                group(3, &["0.0.0.0/0", "::/0"], true),
            ],
        };
        check_groups(
            &both,
            &[("10.0.0.1", "", Ok(1)), ("fd00::1", "fd00::2", Ok(2))],
        );
    }

    #[test]
    fn rule5_contained_ip_may_not_be_another_primary() {
        let a = || vec![reg("t", None, "10.0.0.1", P, "10.0.0.9")];
        run(vec![
            case(
                "new tagent lists another's primary",
                a(),
                reg("t", None, "10.0.0.2", P, "10.0.0.2,10.0.0.1"),
                err(
                    "contains_other_primary",
                    &[
                        "contains the primary IP of other tagents",
                        "10.0.0.1:3939",
                        "id 1",
                    ],
                ),
            ),
            case(
                "re-registration lists another's primary",
                vec![
                    reg("t", None, "10.0.0.1", P, ""),
                    reg("t", None, "10.0.0.2", P, ""),
                    reg("t", None, "10.0.0.3", P, ""),
                ],
                reg("t", Some(2), "10.0.0.2", P, "10.0.0.3,10.0.0.1"),
                err("contains_other_primary", &["id 1", "id 3"]),
            ),
            case(
                "another's primary on another port is fine",
                a(),
                reg("t", None, "10.0.0.2", Q, "10.0.0.1"),
                chose(2, true),
            ),
            case(
                "another tenant's primary is fine",
                a(),
                reg("u", None, "10.0.0.2", P, "10.0.0.1"),
                chose(2, true),
            ),
            case(
                "contained ips may overlap",
                a(),
                reg("t", None, "10.0.0.2", P, "10.0.0.9"),
                chose(2, true),
            ),
            case(
                "listing one's own primary is fine",
                a(),
                reg("t", Some(1), "10.0.0.1", P, "10.0.0.1,10.0.0.9"),
                chose(1, false),
            ),
        ]);
    }

    #[test]
    fn rule6_contained_ip_on_same_port_is_the_same_tagent_other_port_another() {
        let a = || vec![reg("t", None, "10.0.0.1", P, "10.0.0.5,10.0.0.6")];
        run(vec![
            case(
                "same port, contained ip",
                a(),
                reg("t", None, "10.0.0.6", P, "10.0.0.6"),
                chose(1, false),
            ),
            case(
                "other port, contained ip",
                a(),
                reg("t", None, "10.0.0.6", Q, "10.0.0.6"),
                chose(2, true),
            ),
            case(
                "other port, same primary",
                a(),
                reg("t", None, "10.0.0.1", Q, ""),
                chose(2, true),
            ),
        ]);
    }

    #[test]
    fn rule6_primary_ip_belongs_to_one_tagent_per_port() {
        // Tagents 1 and 2 share 10.0.0.9; then 2 moves its primary there.
        let moved = || {
            vec![
                reg("t", None, "10.0.0.1", P, "10.0.0.9"),
                reg("t", None, "10.0.0.2", P, "10.0.0.9"),
                reg("t", Some(2), "10.0.0.9", P, "10.0.0.9"),
            ]
        };
        run(vec![
            case(
                "tagent 1 by id takes tagent 2's primary",
                moved(),
                reg("t", Some(1), "10.0.0.9", P, ""),
                err("primary_taken", &["10.0.0.9", "id 2"]),
            ),
            case(
                "tagent 2 keeps its own primary",
                moved(),
                reg("t", Some(2), "10.0.0.9", P, ""),
                chose(2, false),
            ),
            case(
                "tagent 1 takes it on another port",
                moved(),
                reg("t", Some(1), "10.0.0.9", Q, ""),
                chose(3, true),
            ),
            case(
                "without an id the ip is in both",
                moved(),
                reg("t", None, "10.0.0.9", P, ""),
                err("multiple_tagents", &["id 1", "id 2"]),
            ),
        ]);
    }

    #[test]
    fn rule7_accounts_are_shared_and_dropped_ips_lose_theirs_unless_listed_elsewhere() {
        // Tagent 1: 10.0.0.1 + {.5, .6}; tagent 2: 10.0.0.2 + {.5}.
        let two = || {
            vec![
                reg("t", None, "10.0.0.1", P, "10.0.0.5,10.0.0.6"),
                reg("t", None, "10.0.0.2", P, "10.0.0.5"),
            ]
        };
        let ok = |id, created, put, delete| Expect::Ok {
            id,
            created,
            put,
            delete,
        };
        run(vec![
            case(
                "a new tagent: one account per distinct ip",
                vec![],
                reg("t", None, "10.0.0.1", P, "10.0.0.5,10.0.0.1,10.0.0.6"),
                ok(1, true, "10.0.0.1,10.0.0.5,10.0.0.6", ""),
            ),
            case(
                "a shared ip is put again by its other holder",
                two(),
                reg("t", None, "10.0.0.2", P, "10.0.0.5"),
                ok(2, false, "10.0.0.2,10.0.0.5", ""),
            ),
            case(
                "dropping a shared ip keeps its account",
                two(),
                reg("t", Some(1), "10.0.0.1", P, "10.0.0.6"),
                ok(1, false, "10.0.0.1,10.0.0.6", ""),
            ),
            case(
                "dropping an ip nobody else lists deletes its account",
                two(),
                reg("t", Some(1), "10.0.0.1", P, "10.0.0.5"),
                ok(1, false, "10.0.0.1,10.0.0.5", "10.0.0.6"),
            ),
            case(
                "dropping everything but the primary",
                two(),
                reg("t", Some(1), "10.0.0.1", P, ""),
                ok(1, false, "10.0.0.1", "10.0.0.6"),
            ),
            case(
                "a holder on another port does not keep it",
                vec![
                    reg("t", None, "10.0.0.1", P, "10.0.0.6"),
                    reg("t", None, "10.0.0.2", Q, "10.0.0.6"),
                ],
                reg("t", Some(1), "10.0.0.1", P, ""),
                ok(1, false, "10.0.0.1", "10.0.0.6"),
            ),
            case(
                "a holder in another tenant does not keep it",
                vec![
                    reg("t", None, "10.0.0.1", P, "10.0.0.6"),
                    reg("u", None, "10.0.0.2", P, "10.0.0.6"),
                ],
                reg("t", Some(1), "10.0.0.1", P, ""),
                ok(1, false, "10.0.0.1", "10.0.0.6"),
            ),
            case(
                "a moved primary is dropped like any ip",
                two(),
                reg("t", Some(1), "10.0.0.6", P, "10.0.0.5"),
                ok(1, false, "10.0.0.5,10.0.0.6", "10.0.0.1"),
            ),
            case(
                "a moved primary still listed by another keeps its account",
                vec![
                    reg("t", None, "10.0.0.1", P, "10.0.0.5,10.0.0.6"),
                    reg("t", None, "10.0.0.2", P, "10.0.0.5,10.0.0.6"),
                    reg("t", Some(2), "10.0.0.6", P, "10.0.0.5"),
                ],
                reg("t", Some(2), "10.0.0.5", P, ""),
                ok(2, false, "10.0.0.5", ""),
            ),
        ]);
    }

    #[test]
    fn rule8_primary_ip_moves() {
        let a = || vec![reg("t", None, "10.0.0.1", P, "10.0.0.5")];
        run(vec![
            case(
                "by id to a contained ip",
                a(),
                reg("t", Some(1), "10.0.0.5", P, "10.0.0.5"),
                chose(1, false),
            ),
            case(
                "by lookup to a contained ip",
                a(),
                reg("t", None, "10.0.0.5", P, ""),
                chose(1, false),
            ),
            // The id alone does not carry a tagent to an ip it never listed.
            case(
                "by id to an unrelated ip: another tagent",
                a(),
                reg("t", Some(1), "10.0.0.7", P, ""),
                chose(2, true),
            ),
        ]);

        let mut w = World::with(&a());
        let d = w
            .register(&reg("t", Some(1), "10.0.0.5", P, "10.0.0.5"))
            .unwrap();
        assert_eq!((d.tagent.id, d.tagent.ip), (1, ip("10.0.0.5")));
        assert_eq!(w.index.len(), 1);
        assert_eq!(w.index.get(1).map(|t| t.ip), Some(ip("10.0.0.5")));
        assert_eq!(w.lookup("t", P, "10.0.0.1"), Vec::<TagentId>::new());
        assert_eq!(w.lookup("t", P, "10.0.0.5"), vec![1]);
        // The old primary is free: a registration there is a new tagent.
        let d = w.register(&reg("t", None, "10.0.0.1", P, "")).unwrap();
        assert_eq!((d.tagent.id, d.created), (2, true));
        // And the record kept what it had before the move.
        assert_eq!(w.index.get(1).map(|t| t.first_registered), Some(1000));
    }

    #[test]
    fn rule1_what_one_registration_may_store_is_bounded() {
        let body = |cred: usize, ips: usize| {
            let list: Vec<String> = (0..ips)
                .map(|i| format!("10.1.{}.{}", i / 250, i % 250 + 1))
                .collect();
            format!(
                r#"{{"tenant":"t","port":1,"mgmtIp":"10.1.0.1","ipString":"{}","credential":"{}"}}"#,
                list.join(","),
                "a".repeat(cred)
            )
        };
        use crate::registry::request::{MAX_CREDENTIAL_LEN, MAX_IPS};
        assert!(parse(&body(MAX_CREDENTIAL_LEN, MAX_IPS)).is_ok());
        let e = parse(&body(MAX_CREDENTIAL_LEN + 1, 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("'credential' is longer than 512 bytes"), "{e}");
        let e = parse(&body(1, MAX_IPS + 1)).unwrap_err().to_string();
        assert!(e.contains("more than 256 ips"), "{e}");
    }

    fn with_credential(mut r: RegisterRequest, c: &str) -> RegisterRequest {
        r.credential = Some(crate::registry::Secret(c.into()));
        r
    }

    #[test]
    fn a_known_tagents_credential_is_not_replaced_without_a_window() {
        let mut w = World::new(default_groups());
        let first = with_credential(reg("t", None, "10.0.0.1", P, "10.0.0.1,10.0.0.2"), "a");
        w.register(&first).unwrap();
        // A restart: same credential, same id.
        let restart = with_credential(reg("t", Some(1), "10.0.0.1", P, "10.0.0.1,10.0.0.2"), "a");
        assert_eq!(w.register(&restart).unwrap().tagent.id, 1);
        // An impostor: another credential, with the id or without.
        for id in [Some(1), None] {
            let impostor = with_credential(reg("t", id, "10.0.0.1", P, "10.0.0.1"), "evil");
            assert_eq!(
                w.decide(&impostor).unwrap_err().kind(),
                "credential_change",
                "{id:?}"
            );
        }
        // Without a credential: may not move the primary ip to a contained
        // one, nor change the host facts in place (it proves nothing).
        let moves = reg("t", Some(1), "10.0.0.2", P, "10.0.0.2");
        assert_eq!(w.decide(&moves).unwrap_err().kind(), "credential_change");
        let facts = reg("t", Some(1), "10.0.0.1", P, "10.0.0.1,10.0.0.2");
        assert_eq!(w.decide(&facts).unwrap_err().kind(), "credential_change");
        // With the credential it may (rule 8).
        let moves = with_credential(reg("t", Some(1), "10.0.0.2", P, "10.0.0.1,10.0.0.2"), "a");
        assert_eq!(w.register(&moves).unwrap().tagent.ip, ip("10.0.0.2"));
        assert_eq!(
            w.index.get(1).unwrap().credential,
            w.decide(&moves).unwrap().tagent.credential
        );
    }

    #[test]
    fn an_open_window_lets_one_new_credential_in() {
        let mut w = World::new(default_groups());
        w.register(&with_credential(reg("t", None, "10.0.0.1", P, ""), "a"))
            .unwrap();
        let mut t = w.index.get(1).unwrap().clone();
        t.credential_change_until = NOW + 10;
        w.index.put(t);
        let reinstall = with_credential(reg("t", None, "10.0.0.1", P, ""), "b");
        // Past the window: refused.
        assert_eq!(
            w.decide_at(&reinstall, NOW + 11).unwrap_err().kind(),
            "credential_change"
        );
        // Within it: accepted, and the window closes behind it.
        let d = w.register(&reinstall).unwrap();
        assert_eq!(d.tagent.credential_change_until, 0);
        assert_ne!(d.tagent.credential, None);
        let again = with_credential(reg("t", None, "10.0.0.1", P, ""), "c");
        assert_eq!(w.decide(&again).unwrap_err().kind(), "credential_change");
        // Its own restart (credential "b") goes on working.
        w.register(&with_credential(reg("t", Some(1), "10.0.0.1", P, ""), "b"))
            .unwrap();
    }

    #[test]
    fn a_refused_registration_interns_nothing() {
        let w = World::new(RunnerGroups::default());
        let before = w.interner.len();
        for n in 0..100 {
            let r = reg(&format!("tenant-{n}"), None, "10.0.0.1", P, "");
            assert_eq!(w.decide(&r).unwrap_err().kind(), "no_runner_group");
        }
        assert_eq!(w.interner.len(), before);
    }
}
