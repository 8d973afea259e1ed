//! Token authentication and role authorization of the api, against real NATS and Postgres:
//! every bad token is UNAUTHENTICATED, every forbidden call PERMISSION_DENIED, neither leaks
//! data nor writes anything.

use std::collections::BTreeMap;
use std::time::Duration;

use canopy_auth::token::{KeySpec, Role, TokenConfig, issue};
use canopy_kit::proto::api::v1::{
    GetClusterRequest, GetPolicyRequest, ListClustersRequest, SetPolicyRequest,
    fleet_service_client::FleetServiceClient, policy_service_client::PolicyServiceClient,
};
use canopy_kit::proto::event::v1::Policy;
use data_encoding::BASE64URL_NOPAD;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::stack::Stack;

const HOUR: Duration = Duration::from_secs(3600);

pub struct Auth {
    pub stack: Stack,
    pub keys: TokenConfig,
    _dir: tempfile::TempDir,
}

/// A stack whose api trusts two keys (rotation): `k1` and `k2`.
pub async fn auth_stack() -> anyhow::Result<Auth> {
    let dir = tempfile::tempdir()?;
    let mut keys = TokenConfig::generate_hs256("canopy", "canopy-api", "k1");
    keys.keys
        .extend(TokenConfig::generate_hs256("canopy", "canopy-api", "k2").keys);
    let path = dir.path().join("keys.json");
    std::fs::write(&path, serde_json::to_string(&keys)?)?;
    let stack = Stack::start_with_auth(Some(path)).await?;
    Ok(Auth {
        stack,
        keys,
        _dir: dir,
    })
}

pub fn token(keys: &TokenConfig, role: Role, scope: &[(&str, &str)]) -> String {
    let scope: BTreeMap<String, String> = scope
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    issue(keys, None, "alice", role, scope, HOUR).unwrap()
}

pub fn with_header<T>(msg: T, value: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", MetadataValue::try_from(value).unwrap());
    r
}

pub fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    with_header(msg, &format!("Bearer {token}"))
}

fn list() -> ListClustersRequest {
    ListClustersRequest {
        page_size: 100,
        ..Default::default()
    }
}

/// A JWT with the given header and claims, signed with HS256 under `secret` (or unsigned).
pub fn raw_jwt(header: &str, claims: &serde_json::Value, secret: Option<&str>) -> String {
    let input = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    let sig = match secret {
        Some(s) => {
            use hmac::Mac as _;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(s.as_bytes()).unwrap();
            mac.update(input.as_bytes());
            BASE64URL_NOPAD.encode(&mac.finalize().into_bytes())
        }
        None => String::new(),
    };
    format!("{input}.{sig}")
}

pub fn claims(iss: &str, aud: &str, nbf_offset: i64, exp_offset: i64) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    serde_json::json!({
        "sub": "mallory", "iss": iss, "aud": aud, "iat": now,
        "nbf": now + nbf_offset, "exp": now + exp_offset, "role": "admin"
    })
}

pub async fn seeded(a: &Auth) -> anyhow::Result<Channel> {
    let mut last = 0;
    for (cluster, env) in [("prod-eu", "prod"), ("dev-ap", "dev")] {
        let env_ = crate::stack::started_as(cluster, "i1", &[("env", env)]);
        last = a.stack.publish(&env_).await?;
    }
    a.stack.projected(last).await?;
    a.stack.channel().await
}

/// Authorization headers the api must refuse as UNAUTHENTICATED, with what is wrong.
pub fn bad_headers(keys: &TokenConfig) -> Vec<(&'static str, Option<String>)> {
    let secret = keys.keys[0].secret.clone().unwrap_or_default();
    let other = TokenConfig::generate_hs256("canopy", "canopy-api", "k1");
    vec![
        ("no header", None),
        ("not a bearer", Some("Basic YWxpY2U6c2VjcmV0".into())),
        ("malformed", Some("Bearer not.a.jwt".into())),
        ("garbage", Some("Bearer %%%%".into())),
        (
            "alg none",
            Some(format!(
                "Bearer {}",
                raw_jwt(
                    r#"{"alg":"none","typ":"JWT"}"#,
                    &claims("canopy", "canopy-api", 0, 3600),
                    None
                )
            )),
        ),
        (
            "signed by an unknown key",
            Some(format!("Bearer {}", token(&other, Role::Admin, &[]))),
        ),
        (
            "wrong issuer",
            Some(format!(
                "Bearer {}",
                raw_jwt(
                    r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#,
                    &claims("evil", "canopy-api", 0, 3600),
                    Some(&secret)
                )
            )),
        ),
        (
            "wrong audience",
            Some(format!(
                "Bearer {}",
                raw_jwt(
                    r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#,
                    &claims("canopy", "other-api", 0, 3600),
                    Some(&secret)
                )
            )),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                raw_jwt(
                    r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#,
                    &claims("canopy", "canopy-api", -7200, -3600),
                    Some(&secret)
                )
            )),
        ),
        (
            "not valid yet",
            Some(format!(
                "Bearer {}",
                raw_jwt(
                    r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#,
                    &claims("canopy", "canopy-api", 3600, 7200),
                    Some(&secret)
                )
            )),
        ),
        (
            "oversized",
            Some(format!("Bearer {}", "a".repeat(9 * 1024))),
        ),
    ]
}

#[tokio::test]
async fn missing_and_bad_tokens_are_unauthenticated_and_reveal_nothing() -> anyhow::Result<()> {
    let a = auth_stack().await?;
    let channel = seeded(&a).await?;
    let mut fleet = FleetServiceClient::new(channel);
    let cases = bad_headers(&a.keys);
    for (what, header) in cases {
        let request = match &header {
            Some(h) => with_header(list(), h),
            None => tonic::Request::new(list()),
        };
        let err = fleet.list_clusters(request).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
        assert_eq!(
            err.message(),
            canopy_api::auth::UNAUTHENTICATED_MESSAGE,
            "{what}"
        );
        assert!(!err.message().contains("prod-eu"), "{what}");
    }
    // Both rotation keys are accepted.
    for kid in ["k1", "k2"] {
        let t = issue(
            &a.keys,
            Some(kid),
            "alice",
            Role::Viewer,
            BTreeMap::new(),
            HOUR,
        )?;
        let page = fleet.list_clusters(bearer(list(), &t)).await?.into_inner();
        assert_eq!(page.clusters.len(), 2, "{kid}");
    }
    // A key that is no longer configured is refused.
    let retired = TokenConfig {
        keys: vec![KeySpec {
            kid: "k0".into(),
            ..a.keys.keys[0].clone()
        }],
        ..a.keys.clone()
    };
    let t = issue(&retired, None, "alice", Role::Viewer, BTreeMap::new(), HOUR)?;
    let err = fleet.list_clusters(bearer(list(), &t)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    Ok(())
}

#[tokio::test]
async fn roles_are_enforced_and_a_denied_change_writes_nothing() -> anyhow::Result<()> {
    let a = auth_stack().await?;
    let mut policy = PolicyServiceClient::new(a.stack.channel().await?);
    let set = || SetPolicyRequest {
        policy: Some(Policy {
            disabled_checks: vec!["PROBES".into()],
            ..Default::default()
        }),
        expected_version: Some(0),
        reason: "test".into(),
    };
    let viewer = token(&a.keys, Role::Viewer, &[]);
    let operator = token(&a.keys, Role::Operator, &[]);
    let admin = token(&a.keys, Role::Admin, &[]);
    for t in [&viewer, &operator] {
        let err = policy.set_policy(bearer(set(), t)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert_eq!(err.message(), canopy_api::auth::DENIED_MESSAGE);
    }
    let state = policy
        .get_policy(bearer(GetPolicyRequest {}, &viewer))
        .await?
        .into_inner();
    assert_eq!(state.version, 0, "a denied change was applied");
    let state = policy.set_policy(bearer(set(), &admin)).await?.into_inner();
    assert_eq!(state.version, 1);
    assert_eq!(state.changed_by, "alice", "the actor comes from the token");

    // Oversized requests are refused before any handler runs; nothing changes.
    let huge = SetPolicyRequest {
        reason: "x".repeat(5 * 1024 * 1024),
        expected_version: Some(1),
        ..set()
    };
    let err = policy.set_policy(bearer(huge, &admin)).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument
        ),
        "{err:?}"
    );
    let state = policy
        .get_policy(bearer(GetPolicyRequest {}, &viewer))
        .await?
        .into_inner();
    assert_eq!(state.version, 1);
    Ok(())
}

#[tokio::test]
async fn a_scoped_token_sees_and_reaches_only_its_clusters() -> anyhow::Result<()> {
    let a = auth_stack().await?;
    let mut fleet = FleetServiceClient::new(seeded(&a).await?);
    let mut policy = PolicyServiceClient::new(a.stack.channel().await?);
    let prod = token(&a.keys, Role::Admin, &[("env", "prod")]);
    let page = fleet
        .list_clusters(bearer(list(), &prod))
        .await?
        .into_inner();
    let ids: Vec<&str> = page.clusters.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["prod-eu"]);
    // Asking for other labels does not widen the scope.
    let mut other = list();
    other.match_labels.insert("env".into(), "dev".into());
    let page = fleet
        .list_clusters(bearer(other, &prod))
        .await?
        .into_inner();
    assert!(page.clusters.is_empty());
    let got = fleet
        .get_cluster(bearer(
            GetClusterRequest {
                cluster_id: "prod-eu".into(),
            },
            &prod,
        ))
        .await?;
    assert_eq!(got.into_inner().id, "prod-eu");
    let err = fleet
        .get_cluster(bearer(
            GetClusterRequest {
                cluster_id: "dev-ap".into(),
            },
            &prod,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "out of scope looks like missing"
    );
    // The fleet-wide policy is readable, changing it is closed to scoped tokens.
    policy
        .get_policy(bearer(GetPolicyRequest {}, &prod))
        .await?;
    let err = policy
        .set_policy(bearer(
            SetPolicyRequest {
                policy: Some(Policy::default()),
                ..Default::default()
            },
            &prod,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    Ok(())
}

#[tokio::test]
async fn cluster_ids_and_labels_that_inject_subject_tokens_are_refused() -> anyhow::Result<()> {
    let a = auth_stack().await?;
    let mut fleet = FleetServiceClient::new(seeded(&a).await?);
    let admin = token(&a.keys, Role::Admin, &[]);
    for bad in ["prod-eu.x", "*", ">", "prod eu", "prod-eu.>", ""] {
        let err = fleet
            .get_cluster(bearer(
                GetClusterRequest {
                    cluster_id: bad.into(),
                },
                &admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
    }
    for (k, v) in [
        ("env", "a*"),
        ("e>v", "prod"),
        ("env", "p rod"),
        ("env ", "prod"),
        ("*", "x"),
    ] {
        let mut r = list();
        r.match_labels.insert(k.into(), v.into());
        let err = fleet.list_clusters(bearer(r, &admin)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{k}={v}: {err:?}");
    }
    Ok(())
}

#[tokio::test]
async fn commands_schedules_and_remediations_follow_the_role_table() -> anyhow::Result<()> {
    use canopy_kit::proto::api::v1::{
        ApproveRemediationRequest, CreateScheduleRequest, GetCommandRequest, ListCommandsRequest,
        RejectRemediationRequest, RunCommandRequest, command_service_client::CommandServiceClient,
        health_service_client::HealthServiceClient, schedule_service_client::ScheduleServiceClient,
    };
    use canopy_kit::proto::event::v1::{CommandKind, CommandTarget, command_target::Target};

    let a = auth_stack().await?;
    let channel = a.stack.channel().await?;
    let mut commands = CommandServiceClient::new(channel.clone());
    let mut schedules = ScheduleServiceClient::new(channel.clone());
    let mut health = HealthServiceClient::new(channel);
    let viewer = token(&a.keys, Role::Viewer, &[]);
    let operator = token(&a.keys, Role::Operator, &[]);
    let scoped = token(&a.keys, Role::Admin, &[("env", "prod")]);
    let run = || RunCommandRequest {
        target: Some(CommandTarget {
            target: Some(Target::ClusterId("prod-eu".into())),
        }),
        ..Default::default()
    };

    // Viewers neither run, schedule nor decide. A scoped token runs, schedules and decides only
    // on clusters in its scope (there is none here). Nothing is requested.
    for t in [&viewer, &scoped] {
        let err = commands.run_audit(bearer(run(), t)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        let err = schedules
            .create_schedule(bearer(
                CreateScheduleRequest {
                    name: "nightly".into(),
                    cron: "0 3 * * *".into(),
                    kind: CommandKind::RunAudit as i32,
                    target: run().target,
                    ..Default::default()
                },
                t,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        let err = health
            .approve_remediation(bearer(
                ApproveRemediationRequest {
                    remediation_id: "r1".into(),
                },
                t,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        let err = health
            .reject_remediation(bearer(
                RejectRemediationRequest {
                    remediation_id: "r1".into(),
                    reason: "no".into(),
                },
                t,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    }
    let listed = commands
        .list_commands(bearer(ListCommandsRequest::default(), &viewer))
        .await?
        .into_inner();
    assert!(listed.commands.is_empty(), "a denied run was requested");

    // An operator runs it; the command is requested by the token's subject.
    let id = commands
        .run_audit(bearer(run(), &operator))
        .await?
        .into_inner()
        .command_id;
    let view = canopy_testkit::eventually(Duration::from_secs(20), "the command's view", || {
        let mut commands = commands.clone();
        let (id, viewer) = (id.clone(), viewer.clone());
        async move {
            match commands
                .get_command(bearer(GetCommandRequest { command_id: id }, &viewer))
                .await
            {
                Ok(v) => Ok(Some(v.into_inner())),
                Err(e) if e.code() == Code::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    })
    .await?;
    assert_eq!(view.requested_by, "alice");
    Ok(())
}
