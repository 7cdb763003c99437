//! `ctl tokens ...` and `ctl pending ...`: enrollment tokens and pending
//! registrations (the registration policy of SPEC §6).

use reqwest::Method;

use super::args::{PendingCommand, TokenCommand};
use super::client::{Client, NO_QUERY};
use super::output;
use crate::http::enrollment::{CreatedToken, NewToken, PendingList, PendingView, TokenView};

pub(super) async fn tokens(client: &Client, cmd: &TokenCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::List => {
            let tokens: Vec<TokenView> = client.get("/api/v1/enrollment-tokens", NO_QUERY).await?;
            if json {
                return output::json(&tokens);
            }
            output::tokens(&tokens);
        }
        TokenCommand::Create {
            tenant,
            ttl,
            uses,
            note,
            reinstall,
        } => {
            let body = NewToken {
                tenant: tenant.clone(),
                ttl_secs: Some(ttl.as_secs().max(1)),
                max_uses: Some(*uses),
                note: note.clone(),
                reinstall: *reinstall,
            };
            let created: CreatedToken = client
                .call(
                    Method::POST,
                    "/api/v1/enrollment-tokens",
                    NO_QUERY,
                    Some(&body),
                )
                .await?;
            if json {
                return output::json(&created);
            }
            println!("{}", created.token);
            eprintln!(
                "token {} for tenant {}: {} uses, expires {}; shown once. Register with \
                 ?tenant={}&token={}",
                created.view.id,
                created.view.tenant,
                created.view.max_uses,
                output::rfc3339(created.view.expires_ms),
                created.view.tenant,
                created.token
            );
        }
        TokenCommand::Revoke { id } => {
            let t: TokenView = client
                .call(
                    Method::DELETE,
                    &format!("/api/v1/enrollment-tokens/{id}"),
                    NO_QUERY,
                    None::<&()>,
                )
                .await?;
            if json {
                return output::json(&t);
            }
            println!("token {} revoked ({} uses of {})", t.id, t.uses, t.max_uses);
        }
    }
    Ok(())
}

pub(super) async fn pending(
    client: &Client,
    cmd: &PendingCommand,
    json: bool,
) -> anyhow::Result<()> {
    let (key, approve) = match cmd {
        PendingCommand::List => {
            let list: PendingList = client.get("/api/v1/pending", NO_QUERY).await?;
            if json {
                return output::json(&list);
            }
            output::pending(&list);
            return Ok(());
        }
        PendingCommand::Approve { id } => (id, true),
        PendingCommand::Reject { id } => (id, false),
    };
    let path = format!("/api/v1/pending/{key}");
    let p: PendingView = if approve {
        client
            .call(
                Method::POST,
                &format!("{path}/approve"),
                NO_QUERY,
                None::<&()>,
            )
            .await?
    } else {
        client
            .call(Method::DELETE, &path, NO_QUERY, None::<&()>)
            .await?
    };
    if json {
        return output::json(&p);
    }
    if approve {
        println!(
            "{} ({}:{} of {}) approved: accepted at the tagent's next attempt (it retries \
             every few seconds)",
            p.id, p.ip, p.port, p.tenant
        );
    } else {
        println!("{} ({}:{} of {}) rejected", p.id, p.ip, p.port, p.tenant);
    }
    Ok(())
}
