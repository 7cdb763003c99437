use tagent_hub::heartbeat::proto::*;
fn hex(v: &[u8]) -> String {
    v.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
fn main() {
    let mut out = Vec::new();
    encode_frame(
        &ClientMsg::Hello {
            v: 1,
            tenant: "demo".into(),
            agent_id: 1,
            ip: Some("10.0.0.25".into()),
            port: 3939,
            version: None,
        },
        &mut out,
    );
    println!("hello: {}", hex(&out));
    out.clear();
    encode_frame(
        &ServerMsg::Challenge {
            nonce: (&[0x11u8; 32][..]).into(),
        },
        &mut out,
    );
    println!("challenge: {}", hex(&out));
    out.clear();
    let p = proof(b"secret", &[0x11; 32], "demo", 1, 3939);
    println!("proof: {}", hex(&p));
    encode_frame(
        &ClientMsg::Auth {
            proof: (&p[..]).into(),
        },
        &mut out,
    );
    println!("auth: {}", hex(&out));
    out.clear();
    encode_frame(
        &ServerMsg::Welcome {
            tagent_id: 1,
            proxy_group: "10.0.0.21:8888".into(),
            idle_timeout_secs: 300,
        },
        &mut out,
    );
    println!("welcome: {}", hex(&out));
    out.clear();
    encode_frame(
        &ClientMsg::Heartbeat {
            seq: 1,
            pcpu: Some(0.5),
            mem: None,
        },
        &mut out,
    );
    println!("heartbeat: {}", hex(&out));
    out.clear();
    encode_frame(
        &ServerMsg::Ack {
            seq: 1,
            update_group: None,
        },
        &mut out,
    );
    println!("ack: {}", hex(&out));
    out.clear();
    encode_frame(
        &ServerMsg::Command {
            id: 1,
            kind: CommandKind::Reload,
        },
        &mut out,
    );
    println!("command: {}", hex(&out));
    out.clear();
    encode_frame(
        &ClientMsg::CommandResult {
            id: 1,
            ok: true,
            message: None,
        },
        &mut out,
    );
    println!("result: {}", hex(&out));
    out.clear();
    encode_frame(
        &ServerMsg::Error {
            code: "auth-failed".into(),
            message: "x".into(),
        },
        &mut out,
    );
    println!("error: {}", hex(&out));
    out.clear();
    encode_frame(
        &ServerMsg::Goodbye {
            reason: "shutdown".into(),
        },
        &mut out,
    );
    println!("goodbye: {}", hex(&out));
    out.clear();
    encode_frame(&ClientMsg::Bye, &mut out);
    println!("bye: {}", hex(&out));
    out.clear();
}
