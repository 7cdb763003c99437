//! The registration body parser (SPEC §2.1, rule 1). The first byte picks
//! where the tenant may also come from; the rest is the body.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use tagent_hub::registry::request::{MAX_TENANT_LEN, Origin, RegisterRequest, validate_tenant};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let origin = Origin {
        tenant_header: (pick & 1 != 0).then_some(" demo "),
        tenant_query: (pick & 2 != 0).then_some("q"),
        client_ip: if pick & 4 != 0 {
            IpAddr::from([10, 0, 0, 1])
        } else {
            "::ffff:10.0.0.2".parse().unwrap()
        },
        token: (pick & 8 != 0).then_some("0123456789abcdef.0123456789abcdef0123456789abcdef"),
    };
    if let Ok(r) = RegisterRequest::parse(body, origin) {
        assert!(validate_tenant(&r.tenant).is_ok(), "{r:?}");
        assert!(r.tenant.len() <= MAX_TENANT_LEN);
        assert_ne!(r.port, 0);
        assert!(!r.ip.is_unspecified(), "{r:?}");
        if pick & 1 != 0 {
            assert_eq!(r.tenant, "demo", "the header wins");
        }
        let mut seen = r.ips.clone();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), r.ips.len(), "ips are deduplicated: {r:?}");
    }
});
