//! Authentication and authorization of every gRPC call, in front of all services.
//!
//! A call carries `authorization: Bearer <JWT>`; the token is checked by
//! [`canopy_auth::token::Verifier`] (issuer, audience, expiry, not-before, one of the configured
//! keys). The method must be in [`METHODS`] and the token's role at least the method's role;
//! unknown methods are denied. Tokens scoped by cluster labels may only call the methods marked
//! scope-aware, whose handlers limit what they return or touch to the matching clusters.
//! Refusals are `UNAUTHENTICATED` (no or bad token) or `PERMISSION_DENIED` (role or scope), with
//! a fixed message that reveals nothing about the request's target.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use canopy_auth::token::{Role, TokenClaims, TokenError, Verifier};
use futures::future::BoxFuture;
use tonic::Status;
use tonic::codegen::http;
use tracing::warn;

/// Who is calling: put into each request's extensions by [`AuthLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub role: Role,
    pub scope: BTreeMap<String, String>,
}

impl Identity {
    fn from_claims(c: TokenClaims) -> Self {
        Self {
            subject: c.sub,
            role: c.role,
            scope: c.scope,
        }
    }

    /// Whether a cluster with `labels` is within this identity's scope.
    pub fn sees(&self, labels: &std::collections::HashMap<String, String>) -> bool {
        self.scope
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
    }
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (health checks for probes).
    Public,
    /// At least this role; `scoped` when its handler applies cluster-label scopes.
    Role { role: Role, scoped: bool },
}

const fn role(role: Role) -> Access {
    Access::Role {
        role,
        scoped: false,
    }
}

const fn scoped(role: Role) -> Access {
    Access::Role { role, scoped: true }
}

/// Method → access. Anything not listed is denied. README "API authorization" shows it.
pub const METHODS: &[(&str, Access)] = &[
    ("/grpc.health.v1.Health/Check", Access::Public),
    ("/grpc.health.v1.Health/Watch", Access::Public),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        role(Role::Viewer),
    ),
    (
        "/canopy.api.v1.FleetService/ListClusters",
        scoped(Role::Viewer),
    ),
    (
        "/canopy.api.v1.FleetService/GetCluster",
        scoped(Role::Viewer),
    ),
    ("/canopy.api.v1.EventService/Watch", role(Role::Viewer)),
    (
        "/canopy.api.v1.FindingsService/ListFindings",
        role(Role::Viewer),
    ),
    (
        "/canopy.api.v1.FindingsService/GetPosture",
        role(Role::Viewer),
    ),
    (
        "/canopy.api.v1.FindingsService/ListAudits",
        role(Role::Viewer),
    ),
    (
        "/canopy.api.v1.FindingsService/GetAudit",
        role(Role::Viewer),
    ),
    ("/canopy.api.v1.PolicyService/GetPolicy", role(Role::Viewer)),
    (
        "/canopy.api.v1.PolicyService/ListDerogations",
        role(Role::Viewer),
    ),
    (
        "/canopy.api.v1.PolicyService/GrantDerogation",
        role(Role::Operator),
    ),
    (
        "/canopy.api.v1.PolicyService/RevokeDerogation",
        role(Role::Operator),
    ),
    ("/canopy.api.v1.PolicyService/SetPolicy", role(Role::Admin)),
    (
        "/canopy.api.v1.CommandService/GetCommand",
        role(Role::Viewer),
    ),
    (
        "/canopy.api.v1.CommandService/ListCommands",
        role(Role::Viewer),
    ),
    (
        "/canopy.api.v1.CommandService/WatchCommand",
        role(Role::Viewer),
    ),
    (
        "/canopy.api.v1.CommandService/RunAudit",
        role(Role::Operator),
    ),
    (
        "/canopy.api.v1.CommandService/RefreshInventory",
        role(Role::Operator),
    ),
    (
        "/canopy.api.v1.CommandService/CheckLiveness",
        role(Role::Operator),
    ),
    (
        "/canopy.api.v1.ScheduleService/ListSchedules",
        role(Role::Viewer),
    ),
    (
        "/canopy.api.v1.ScheduleService/CreateSchedule",
        role(Role::Operator),
    ),
    (
        "/canopy.api.v1.ScheduleService/DeleteSchedule",
        role(Role::Operator),
    ),
    (
        "/canopy.api.v1.HealthService/GetFleetHealth",
        role(Role::Viewer),
    ),
    (
        "/canopy.api.v1.HealthService/ListDiagnoses",
        role(Role::Viewer),
    ),
    (
        "/canopy.api.v1.HealthService/ListRemediations",
        role(Role::Viewer),
    ),
    (
        "/canopy.api.v1.HealthService/ListRecommendations",
        role(Role::Viewer),
    ),
    (
        "/canopy.api.v1.HealthService/ApproveRemediation",
        role(Role::Operator),
    ),
    (
        "/canopy.api.v1.HealthService/RejectRemediation",
        role(Role::Operator),
    ),
    (
        "/canopy.api.v1.InterconnectService/ListInterconnects",
        role(Role::Operator),
    ),
    (
        "/canopy.api.v1.InterconnectService/ApproveInterconnect",
        role(Role::Admin),
    ),
    (
        "/canopy.api.v1.InterconnectService/RejectInterconnect",
        role(Role::Admin),
    ),
    (
        "/canopy.api.v1.InterconnectService/RevokeCluster",
        role(Role::Admin),
    ),
];

/// The access rule of `method`, if it has one.
pub fn access(method: &str) -> Option<Access> {
    METHODS.iter().find(|(m, _)| *m == method).map(|(_, a)| *a)
}

/// Fixed, non-revealing refusal messages.
pub const UNAUTHENTICATED_MESSAGE: &str = "authentication required: a valid bearer token";
pub const DENIED_MESSAGE: &str = "permission denied";

/// A refusal and why (the reason is logged and recorded, never returned).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: tonic::Code,
    pub reason: String,
    /// The caller, when the token was valid.
    pub identity: Option<Identity>,
}

/// Checks `method` with the `authorization` header value.
///
/// # Errors
/// A [`Refusal`] for a missing or bad token, an unknown method, a role too low, or a scoped
/// token on a method that does not apply scopes.
pub fn authorize(
    verifier: &Verifier,
    method: &str,
    authorization: Option<&[u8]>,
) -> Result<Option<Identity>, Refusal> {
    let rule = access(method);
    if rule == Some(Access::Public) {
        return Ok(None);
    }
    let token = match authorization {
        None => Err(TokenError::Missing),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(TokenError::Malformed),
    };
    let identity = match token.and_then(|t| verifier.verify(t)) {
        Ok(claims) => Identity::from_claims(claims),
        Err(e) => {
            return Err(Refusal {
                status: tonic::Code::Unauthenticated,
                reason: e.to_string(),
                identity: None,
            });
        }
    };
    let deny = |reason: String, identity: Identity| Refusal {
        status: tonic::Code::PermissionDenied,
        reason,
        identity: Some(identity),
    };
    match rule {
        None => Err(deny(format!("unknown method {method}"), identity)),
        Some(Access::Public) => Ok(Some(identity)),
        Some(Access::Role { role, scoped }) => {
            if identity.role < role {
                return Err(deny(
                    format!("{} needs role {}", method, role.as_str()),
                    identity,
                ));
            }
            if !identity.scope.is_empty() && !scoped {
                return Err(deny(
                    format!("{method} does not apply cluster scopes"),
                    identity,
                ));
            }
            Ok(Some(identity))
        }
    }
}

/// Called for every refused call (the audit trail records them).
pub trait OnRefusal: Send + Sync + 'static {
    fn refused(&self, method: &str, refusal: &Refusal, request_digest: String);
}

impl OnRefusal for () {
    fn refused(&self, _method: &str, _refusal: &Refusal, _request_digest: String) {}
}

/// The tower layer that runs [`authorize`] before every call.
#[derive(Clone)]
pub struct AuthLayer {
    /// `None`: authentication is off (`--insecure-no-auth`), every call passes.
    verifier: Option<Arc<Verifier>>,
    on_refusal: Arc<dyn OnRefusal>,
}

impl AuthLayer {
    pub fn new(verifier: Option<Verifier>, on_refusal: Arc<dyn OnRefusal>) -> Self {
        Self {
            verifier: verifier.map(Arc::new),
            on_refusal,
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(verifier) = self.layer.verifier.clone() else {
            return Box::pin(self.inner.call(req));
        };
        let method = req.uri().path().to_owned();
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        match authorize(&verifier, &method, header.as_deref()) {
            Ok(identity) => {
                if let Some(identity) = identity {
                    req.extensions_mut().insert(identity);
                }
                Box::pin(self.inner.call(req))
            }
            Err(refusal) => {
                warn!(
                    %method,
                    reason = %refusal.reason,
                    actor = refusal.identity.as_ref().map_or("anonymous", |i| i.subject.as_str()),
                    "call refused"
                );
                metrics::counter!("canopy_api_refused_calls_total", "code" => format!("{:?}", refusal.status)).increment(1);
                // The body is not read: the digest covers the method and the caller only.
                let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                    format!(
                        "{method}\n{}",
                        refusal
                            .identity
                            .as_ref()
                            .map_or("anonymous", |i| i.subject.as_str())
                    )
                    .as_bytes(),
                ));
                self.layer.on_refusal.refused(&method, &refusal, digest);
                let message = match refusal.status {
                    tonic::Code::Unauthenticated => UNAUTHENTICATED_MESSAGE,
                    _ => DENIED_MESSAGE,
                };
                let response = Status::new(refusal.status, message).into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

/// The caller of a request that passed [`AuthLayer`] (`None` when auth is off or public).
pub fn identity<T>(request: &tonic::Request<T>) -> Option<&Identity> {
    request.extensions().get::<Identity>()
}

/// The actor name recorded in events: the token's subject, or `anonymous`.
pub fn actor<T>(request: &tonic::Request<T>) -> String {
    identity(request).map_or_else(|| "anonymous".to_owned(), |i| i.subject.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_auth::token::{TokenConfig, issue};
    use std::time::Duration;

    fn setup() -> (TokenConfig, Verifier) {
        let cfg = TokenConfig::generate_hs256("canopy", "canopy-api", "k1");
        let v = Verifier::new(&cfg).unwrap();
        (cfg, v)
    }

    fn bearer(cfg: &TokenConfig, role: Role, scope: &[(&str, &str)]) -> Vec<u8> {
        let scope = scope
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        format!(
            "Bearer {}",
            issue(cfg, None, "someone", role, scope, Duration::from_secs(60)).unwrap()
        )
        .into_bytes()
    }

    #[test]
    fn roles_follow_the_table_and_unknown_methods_are_denied() {
        let (cfg, v) = setup();
        let viewer = bearer(&cfg, Role::Viewer, &[]);
        let admin = bearer(&cfg, Role::Admin, &[]);
        let set = "/canopy.api.v1.PolicyService/SetPolicy";
        let list = "/canopy.api.v1.FleetService/ListClusters";
        assert!(authorize(&v, list, Some(&viewer)).is_ok());
        let r = authorize(&v, set, Some(&viewer)).unwrap_err();
        assert_eq!(r.status, tonic::Code::PermissionDenied);
        assert!(authorize(&v, set, Some(&admin)).is_ok());
        let r = authorize(&v, "/canopy.api.v1.Secret/Dump", Some(&admin)).unwrap_err();
        assert_eq!(r.status, tonic::Code::PermissionDenied);
        let r = authorize(&v, list, None).unwrap_err();
        assert_eq!(r.status, tonic::Code::Unauthenticated);
        assert!(authorize(&v, "/grpc.health.v1.Health/Check", None).is_ok());
    }

    #[test]
    fn scoped_tokens_only_reach_scope_aware_methods() {
        let (cfg, v) = setup();
        let scoped = bearer(&cfg, Role::Admin, &[("env", "prod")]);
        assert!(
            authorize(
                &v,
                "/canopy.api.v1.FleetService/ListClusters",
                Some(&scoped)
            )
            .is_ok()
        );
        let r = authorize(&v, "/canopy.api.v1.EventService/Watch", Some(&scoped)).unwrap_err();
        assert_eq!(r.status, tonic::Code::PermissionDenied);
    }

    #[test]
    fn every_method_of_every_service_has_a_rule() {
        use prost::Message as _;
        let set =
            prost_types::FileDescriptorSet::decode(canopy_kit::proto::FILE_DESCRIPTOR_SET).unwrap();
        for file in set.file {
            for service in &file.service {
                for m in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), m.name());
                    if path.starts_with("/canopy.api.") {
                        assert!(access(&path).is_some(), "{path} has no access rule");
                    }
                }
            }
        }
    }
}
