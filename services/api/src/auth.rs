//! Authentication and authorization of every gRPC call, in front of all services.
//!
//! A call carries `authorization: Bearer <JWT>`; the token is checked by
//! [`canopy_auth::token::Verifier`] (issuer, audience, expiry, not-before, one of the configured
//! keys). The method must be in [`METHODS`] and the token's role at least the method's role;
//! unknown methods are denied. Tokens scoped by cluster labels may only call the methods marked
//! scope-aware, whose handlers limit what they return or touch to the matching clusters
//! ([`crate::domain::scope`]). Refusals here are `UNAUTHENTICATED` (no or bad token) or
//! `PERMISSION_DENIED` (role or scope), with a fixed message that reveals nothing about the
//! request's target; a scope-aware handler refusing an action out of scope names only what the
//! caller asked for.
//!
//! The same layer feeds the audit trail ([`Trail`]): every call to a method whose row says
//! `mutating`, every refused call and every invalid one becomes one record (see [`AuthLayer`]
//! for the order of checks and writes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use canopy_auth::token::{Role, TokenClaims, TokenError, Verifier};
use canopy_kit::proto::event::v1::ActionOutcome;
use futures::future::BoxFuture;
use tonic::Status;
use tonic::codegen::http;
use tracing::{error, warn};

use crate::domain::scope::Scope;

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

    /// The clusters this identity may see and act on.
    pub fn scope(&self) -> Scope {
        Scope::new(self.scope.clone())
    }
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (health checks for probes).
    Public,
    /// At least this role; `scoped` when its handler applies cluster-label scopes; `mutating`
    /// when the call changes something (the audit trail records every such call, whatever its
    /// outcome, and it runs only while the trail can be written).
    Role {
        role: Role,
        scoped: bool,
        mutating: bool,
    },
}

const fn role(role: Role) -> Access {
    Access::Role {
        role,
        scoped: false,
        mutating: false,
    }
}

const fn scoped(role: Role) -> Access {
    Access::Role {
        role,
        scoped: true,
        mutating: false,
    }
}

/// A method that changes something: recorded on the audit trail whatever its outcome.
const fn mutating(role: Role) -> Access {
    Access::Role {
        role,
        scoped: false,
        mutating: true,
    }
}

/// A method that changes something on clusters in the caller's scope only.
const fn scoped_mutating(role: Role) -> Access {
    Access::Role {
        role,
        scoped: true,
        mutating: true,
    }
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
    ("/canopy.api.v1.EventService/Watch", scoped(Role::Viewer)),
    (
        "/canopy.api.v1.FindingsService/ListFindings",
        scoped(Role::Viewer),
    ),
    (
        "/canopy.api.v1.FindingsService/GetPosture",
        scoped(Role::Viewer),
    ),
    (
        "/canopy.api.v1.FindingsService/ListAudits",
        scoped(Role::Viewer),
    ),
    (
        "/canopy.api.v1.FindingsService/GetAudit",
        scoped(Role::Viewer),
    ),
    (
        "/canopy.api.v1.PolicyService/GetPolicy",
        scoped(Role::Viewer),
    ),
    (
        "/canopy.api.v1.PolicyService/ListDerogations",
        scoped(Role::Viewer),
    ),
    (
        "/canopy.api.v1.PolicyService/GrantDerogation",
        scoped_mutating(Role::Operator),
    ),
    (
        "/canopy.api.v1.PolicyService/RevokeDerogation",
        scoped_mutating(Role::Operator),
    ),
    (
        "/canopy.api.v1.PolicyService/SetPolicy",
        mutating(Role::Admin),
    ),
    (
        "/canopy.api.v1.CommandService/GetCommand",
        scoped(Role::Viewer),
    ),
    (
        "/canopy.api.v1.CommandService/ListCommands",
        scoped(Role::Viewer),
    ),
    (
        "/canopy.api.v1.CommandService/WatchCommand",
        scoped(Role::Viewer),
    ),
    (
        "/canopy.api.v1.CommandService/RunAudit",
        scoped_mutating(Role::Operator),
    ),
    (
        "/canopy.api.v1.CommandService/RefreshInventory",
        scoped_mutating(Role::Operator),
    ),
    (
        "/canopy.api.v1.CommandService/CheckLiveness",
        scoped_mutating(Role::Operator),
    ),
    (
        "/canopy.api.v1.ScheduleService/ListSchedules",
        scoped(Role::Viewer),
    ),
    (
        "/canopy.api.v1.ScheduleService/CreateSchedule",
        scoped_mutating(Role::Operator),
    ),
    (
        "/canopy.api.v1.ScheduleService/DeleteSchedule",
        scoped_mutating(Role::Operator),
    ),
    (
        "/canopy.api.v1.HealthService/GetFleetHealth",
        scoped(Role::Viewer),
    ),
    (
        "/canopy.api.v1.HealthService/ListDiagnoses",
        scoped(Role::Viewer),
    ),
    (
        "/canopy.api.v1.HealthService/ListRemediations",
        scoped(Role::Viewer),
    ),
    (
        "/canopy.api.v1.HealthService/ListRecommendations",
        scoped(Role::Viewer),
    ),
    (
        "/canopy.api.v1.HealthService/ApproveRemediation",
        scoped_mutating(Role::Operator),
    ),
    (
        "/canopy.api.v1.HealthService/RejectRemediation",
        scoped_mutating(Role::Operator),
    ),
    ("/canopy.api.v1.AuditTrailService/List", role(Role::Admin)),
    ("/canopy.api.v1.AuditTrailService/Verify", role(Role::Admin)),
    (
        "/canopy.api.v1.InterconnectService/ListInterconnects",
        role(Role::Operator),
    ),
    (
        "/canopy.api.v1.InterconnectService/ApproveInterconnect",
        mutating(Role::Admin),
    ),
    (
        "/canopy.api.v1.InterconnectService/RejectInterconnect",
        mutating(Role::Admin),
    ),
    (
        "/canopy.api.v1.InterconnectService/RevokeCluster",
        mutating(Role::Admin),
    ),
];

/// The access rule of `method`, if it has one.
pub fn access(method: &str) -> Option<Access> {
    METHODS.iter().find(|(m, _)| *m == method).map(|(_, a)| *a)
}

/// Whether `method` changes something (its row says `mutating`).
pub fn is_mutating(method: &str) -> bool {
    matches!(access(method), Some(Access::Role { mutating: true, .. }))
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
        Some(Access::Role { role, scoped, .. }) => {
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

/// What the audit trail records of one call (the layer fills it in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// The token's subject, or `anonymous`.
    pub actor: String,
    pub roles: Vec<String>,
    /// The full gRPC method.
    pub method: String,
    /// What the call was about (cluster id, command id, ...), when the request names it.
    pub target: String,
    pub outcome: ActionOutcome,
    pub detail: String,
    /// Hex SHA-256 of the request message (empty when the request was not read).
    pub request_digest: String,
}

/// The audit trail, as the layer uses it.
pub trait Trail: Send + Sync + 'static {
    /// Succeeds when the trail can be written now; a mutating call runs only after this.
    fn ready(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Appends one record.
    fn record(&self, action: Action) -> BoxFuture<'_, Result<(), String>>;
}

/// No trail (unit tests of the layer).
impl Trail for () {
    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn record(&self, _action: Action) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// The message the caller gets when a mutating call is refused because the trail cannot be
/// written.
pub const TRAIL_UNAVAILABLE_MESSAGE: &str =
    "the audit trail cannot be written: nothing was changed; retry later";

/// The tower layer that runs [`authorize`] before every call and records on the audit trail
/// every mutating call (whatever its outcome), every refused call and every invalid one.
///
/// Order for a mutating call: authorize; read the request (at most `max_request_bytes`);
/// check that the trail can be written (read its last record) and refuse with `UNAVAILABLE`,
/// before the handler runs, when it cannot; run the handler; append the record with the
/// handler's outcome before the reply leaves. Should that append still fail (NATS lost between
/// the two), the reply is `UNAVAILABLE` and the error log holds the whole record.
#[derive(Clone)]
pub struct AuthLayer {
    /// `None`: authentication is off (`--insecure-no-auth`), every call passes.
    verifier: Option<Arc<Verifier>>,
    trail: Arc<dyn Trail>,
    max_request_bytes: usize,
}

impl AuthLayer {
    pub fn new(
        verifier: Option<Verifier>,
        trail: Arc<dyn Trail>,
        max_request_bytes: usize,
    ) -> Self {
        Self {
            verifier: verifier.map(Arc::new),
            trail,
            max_request_bytes,
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

/// How a call ended, from its status.
pub fn outcome_of(code: tonic::Code) -> ActionOutcome {
    match code {
        tonic::Code::Ok => ActionOutcome::Succeeded,
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => ActionOutcome::Denied,
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => {
            ActionOutcome::Invalid
        }
        _ => ActionOutcome::Failed,
    }
}

enum ReadError {
    TooLarge,
    Broken(String),
}

/// Reads a whole request body of at most `limit` bytes.
async fn read_body(body: tonic::body::Body, limit: usize) -> Result<bytes::Bytes, ReadError> {
    use http_body_util::BodyExt as _;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ReadError::TooLarge),
        Err(e) => Err(ReadError::Broken(e.to_string())),
    }
}

/// The messages of a gRPC body (5-byte frame headers removed); the raw bytes when it is not
/// framed.
fn messages(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let Some(msg) = rest.get(5..5 + len) else {
            return body.to_vec();
        };
        out.extend_from_slice(msg);
        rest = &rest[5 + len..];
    }
    if rest.is_empty() { out } else { body.to_vec() }
}

impl<S> tower_service::Service<http::Request<tonic::body::Body>> for AuthService<S>
where
    S: tower_service::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let method = req.uri().path().to_owned();
        if access(&method) == Some(Access::Public) {
            return Box::pin(self.inner.call(req));
        }
        // The ready inner service goes into the future; a clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let authorized = match &layer.verifier {
                None => Ok(None),
                Some(verifier) => {
                    let header = req.headers().get(http::header::AUTHORIZATION);
                    authorize(verifier, &method, header.map(http::HeaderValue::as_bytes))
                }
            };
            let identity = match &authorized {
                Ok(i) => i.clone(),
                Err(r) => r.identity.clone(),
            };
            let mut action = Action {
                actor: identity
                    .as_ref()
                    .map_or_else(|| "anonymous".to_owned(), |i| i.subject.clone()),
                roles: identity
                    .as_ref()
                    .map(|i| vec![i.role.as_str().to_owned()])
                    .unwrap_or_default(),
                method: method.clone(),
                target: String::new(),
                outcome: ActionOutcome::Succeeded,
                detail: String::new(),
                request_digest: String::new(),
            };
            // Single-message requests are read whole (bounded) for the digest and the target.
            let (mut parts, body) = req.into_parts();
            let body = if crate::target::single_request(&method) {
                match read_body(body, layer.max_request_bytes.saturating_add(5)).await {
                    Ok(bytes) => {
                        let message = messages(&bytes);
                        action.request_digest = crate::domain::trail::digest(&message);
                        action.target = crate::target::of(&method, &message);
                        tonic::body::Body::new(http_body_util::Full::new(bytes))
                    }
                    Err(e) => {
                        let status = match e {
                            ReadError::TooLarge => Status::resource_exhausted(format!(
                                "the request is larger than the limit of {} bytes",
                                layer.max_request_bytes
                            )),
                            ReadError::Broken(e) => Status::invalid_argument(format!(
                                "the request could not be read: {e}"
                            )),
                        };
                        action.outcome = ActionOutcome::Invalid;
                        action.detail = status.message().to_owned();
                        if let Err(e) = layer.trail.record(action).await {
                            error!(%method, error = %e, "a refused request could not be recorded on the audit trail");
                        }
                        return Ok(status.into_http());
                    }
                }
            } else {
                body
            };
            let identity = match authorized {
                Ok(identity) => identity,
                Err(refusal) => {
                    warn!(%method, reason = %refusal.reason, actor = %action.actor, "call refused");
                    metrics::counter!("canopy_api_refused_calls_total", "code" => format!("{:?}", refusal.status)).increment(1);
                    action.outcome = ActionOutcome::Denied;
                    action.detail = refusal.reason;
                    if let Err(e) = layer.trail.record(action).await {
                        error!(%method, error = %e, "a refused call could not be recorded on the audit trail");
                    }
                    let message = match refusal.status {
                        tonic::Code::Unauthenticated => UNAUTHENTICATED_MESSAGE,
                        _ => DENIED_MESSAGE,
                    };
                    return Ok(Status::new(refusal.status, message).into_http());
                }
            };
            let mutating = is_mutating(&method);
            if mutating && let Err(e) = layer.trail.ready().await {
                error!(%method, actor = %action.actor, error = %e, "the audit trail cannot be written: refusing a change");
                metrics::counter!("canopy_api_trail_unavailable_total").increment(1);
                return Ok(Status::unavailable(TRAIL_UNAVAILABLE_MESSAGE).into_http());
            }
            if let Some(identity) = identity {
                parts.extensions.insert(identity);
            }
            let response = inner.call(http::Request::from_parts(parts, body)).await?;
            let status = Status::from_header_map(response.headers());
            let code = status.as_ref().map_or(tonic::Code::Ok, Status::code);
            action.outcome = outcome_of(code);
            if !mutating
                && !matches!(
                    action.outcome,
                    ActionOutcome::Denied | ActionOutcome::Invalid
                )
            {
                return Ok(response);
            }
            if let Some(status) = &status {
                action.detail = status.message().chars().take(1024).collect();
            }
            if let Err(e) = layer.trail.record(action.clone()).await {
                error!(?action, error = %e, "a call could not be recorded on the audit trail");
                metrics::counter!("canopy_api_trail_unrecorded_total").increment(1);
                if mutating {
                    return Ok(Status::unavailable(
                        "the audit trail could not record this call; it may have taken effect: check before retrying",
                    )
                    .into_http());
                }
            }
            Ok(response)
        })
    }
}

/// The scope of the caller of a request: the whole fleet when the token is unscoped or
/// authentication is off.
pub fn scope<T>(request: &tonic::Request<T>) -> Scope {
    identity(request).map_or_else(Scope::fleet, Identity::scope)
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
        for fleet_wide in [
            "/canopy.api.v1.PolicyService/SetPolicy",
            "/canopy.api.v1.AuditTrailService/List",
            "/canopy.api.v1.InterconnectService/ListInterconnects",
        ] {
            let r = authorize(&v, fleet_wide, Some(&scoped)).unwrap_err();
            assert_eq!(r.status, tonic::Code::PermissionDenied, "{fleet_wide}");
        }
        for scope_aware in [
            "/canopy.api.v1.EventService/Watch",
            "/canopy.api.v1.PolicyService/GetPolicy",
            "/canopy.api.v1.PolicyService/ListDerogations",
            "/canopy.api.v1.PolicyService/GrantDerogation",
        ] {
            assert!(
                authorize(&v, scope_aware, Some(&scoped)).is_ok(),
                "{scope_aware}"
            );
        }
        // Scope-aware changes stay on the audit trail.
        let run = "/canopy.api.v1.CommandService/RunAudit";
        assert!(authorize(&v, run, Some(&scoped)).is_ok());
        assert!(is_mutating(run));
        let scoped_viewer = bearer(&cfg, Role::Viewer, &[("env", "prod")]);
        let r = authorize(&v, run, Some(&scoped_viewer)).unwrap_err();
        assert_eq!(
            r.status,
            tonic::Code::PermissionDenied,
            "the role still applies"
        );
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
