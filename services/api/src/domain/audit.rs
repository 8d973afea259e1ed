//! Pure rules of the api's audit area: validation of policies and derogations, the findings
//! query (filters, total order, page tokens), posture scopes and the posture score. No I/O here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use canopy_kit::subject::ClusterId;

/// Requests of the audit area the api turns down, and conflicts.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum AuditError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// SetPolicy's expected_version is not the current version.
    #[error("the policy is at version {current}, not {expected}; read it again and retry")]
    VersionConflict { current: u64, expected: u64 },
    /// Another change was stored between our read and our write.
    #[error("the policy changed concurrently (now past version {read}); read it again and retry")]
    Raced { read: u64 },
    #[error("derogation {0:?} not found")]
    DerogationNotFound(String),
    #[error("derogation {0:?} is already revoked")]
    AlreadyRevoked(String),
    #[error("audit {audit:?} of cluster {cluster:?} not found")]
    AuditNotFound { cluster: String, audit: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AuditError {
    AuditError::Invalid {
        field,
        reason: reason.into(),
    }
}

// === names ===

/// Severities, most severe first, with their listing rank and score weight.
pub const SEVERITIES: [(&str, i16, u64); 4] = [
    ("critical", 4, 10),
    ("high", 3, 5),
    ("medium", 2, 2),
    ("low", 1, 1),
];

pub fn severity_rank(name: &str) -> Option<i16> {
    SEVERITIES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, r, _)| *r)
}

/// The finding states a caller filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FindingState {
    Open,
    Exempted,
    Resolved,
}

// === policies and derogations ===

/// A DNS-1123 label (namespace, container name): lowercase letters, digits and `-`, at most 63.
fn dns_label(field: &'static str, v: &str) -> Result<(), AuditError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{v:?} is not a DNS label (lowercase letters, digits and '-', at most 63)"),
        ))
    }
}

/// A DNS-1123 subdomain (object names): labels joined by `.`, at most 253.
fn dns_subdomain(field: &'static str, v: &str) -> Result<(), AuditError> {
    let ok = !v.is_empty() && v.len() <= 253 && v.split('.').all(|l| dns_label(field, l).is_ok());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{v:?} is not a Kubernetes object name"),
        ))
    }
}

/// A check id of the catalogue, in its canonical spelling.
pub fn check_id(field: &'static str, v: &str) -> Result<&'static str, AuditError> {
    canopy_audit::CheckId::parse(v)
        .map(canopy_audit::CheckId::as_str)
        .ok_or_else(|| {
            invalid(
                field,
                format!("unknown check {v:?}; `canopyctl audit --help` lists the catalogue"),
            )
        })
}

/// A fleet policy as SetPolicy gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyInput {
    pub disabled_checks: Vec<String>,
    /// Check id → severity name.
    pub severity_overrides: BTreeMap<String, String>,
    pub registry_allow_list: Vec<String>,
    pub honour_ignore_annotations: bool,
    pub level: String,
}

/// Validates a policy and returns it with canonical check ids, sorted and without duplicates.
pub fn validate_policy(p: PolicyInput) -> Result<PolicyInput, AuditError> {
    let mut disabled = Vec::new();
    for c in &p.disabled_checks {
        disabled.push(check_id("policy.disabled_checks", c)?.to_owned());
    }
    disabled.sort();
    disabled.dedup();
    let mut overrides = BTreeMap::new();
    for (c, s) in &p.severity_overrides {
        let c = check_id("policy.severity_overrides", c)?;
        if severity_rank(s).is_none() {
            return Err(invalid(
                "policy.severity_overrides",
                format!("{c}: severity must be critical, high, medium or low"),
            ));
        }
        overrides.insert(c.to_owned(), s.clone());
    }
    let mut registries = Vec::new();
    for r in &p.registry_allow_list {
        let r = r.trim().trim_end_matches('/');
        if r.is_empty() || r.contains(char::is_whitespace) {
            return Err(invalid(
                "policy.registry_allow_list",
                format!("{r:?} is not a registry or repository prefix"),
            ));
        }
        registries.push(r.to_ascii_lowercase());
    }
    if !matches!(p.level.as_str(), "" | "baseline" | "restricted" | "all") {
        return Err(invalid(
            "policy.level",
            format!("{:?}: must be baseline, restricted or all", p.level),
        ));
    }
    Ok(PolicyInput {
        disabled_checks: disabled,
        severity_overrides: overrides,
        registry_allow_list: registries,
        honour_ignore_annotations: p.honour_ignore_annotations,
        level: if p.level.is_empty() {
            "all".to_owned()
        } else {
            p.level
        },
    })
}

/// SetPolicy's concurrency rule: the new version follows the current one, and a caller that
/// names the version it read must have read the current one.
pub fn next_version(current: u64, expected: Option<u64>) -> Result<u64, AuditError> {
    match expected {
        Some(expected) if expected != current => {
            Err(AuditError::VersionConflict { current, expected })
        }
        _ => Ok(current + 1),
    }
}

/// A derogation scope as GrantDerogation gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeInput {
    pub cluster_labels: BTreeMap<String, String>,
    pub cluster_id: String,
    pub namespace: String,
    pub workload_kind: String,
    pub workload_name: String,
    pub container: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantInput {
    pub check: String,
    pub scope: ScopeInput,
    pub reason: String,
    pub approver: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Validates a grant at `now`; returns it with the canonical check id.
pub fn validate_grant(g: GrantInput, now: DateTime<Utc>) -> Result<GrantInput, AuditError> {
    let check = check_id("check", &g.check)?.to_owned();
    let s = &g.scope;
    canopy_kit::labels::validate_all(&s.cluster_labels)
        .map_err(|e| invalid("scope.cluster_labels", e.to_string()))?;
    if !s.cluster_id.is_empty() {
        ClusterId::parse(&s.cluster_id).map_err(|e| invalid("scope.cluster_id", e.to_string()))?;
    }
    if !s.namespace.is_empty() {
        dns_label("scope.namespace", &s.namespace)?;
    }
    if !s.workload_kind.is_empty() {
        let kind = &s.workload_kind;
        let ok = kind.len() <= 63
            && kind.starts_with(|c: char| c.is_ascii_uppercase())
            && kind.chars().all(|c| c.is_ascii_alphanumeric());
        if !ok {
            return Err(invalid(
                "scope.workload_kind",
                format!("{kind:?} is not a Kubernetes kind (e.g. Deployment)"),
            ));
        }
    }
    if !s.workload_name.is_empty() {
        dns_subdomain("scope.workload_name", &s.workload_name)?;
    }
    if !s.container.is_empty() {
        dns_label("scope.container", &s.container)?;
    }
    for (field, v) in [("reason", &g.reason), ("approver", &g.approver)] {
        if v.trim().is_empty() {
            return Err(invalid(field, "is required"));
        }
        if v.len() > 1024 {
            return Err(invalid(field, "is longer than 1024 characters"));
        }
    }
    match g.expires_at {
        None => return Err(invalid("expires_at", "is required")),
        Some(t) if t <= now => {
            return Err(invalid(
                "expires_at",
                format!("{} is not in the future", t.to_rfc3339()),
            ));
        }
        Some(_) => {}
    }
    Ok(GrantInput { check, ..g })
}

pub fn derogation_id(field: &'static str, v: &str) -> Result<uuid::Uuid, AuditError> {
    uuid::Uuid::parse_str(v).map_err(|_| invalid(field, format!("{v:?} is not a derogation id")))
}

// === pages ===

/// Findings per page when the caller does not say, and at most.
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;

pub fn page_size(n: u32) -> u32 {
    match n {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// A page token: where the previous page ended, bound to the filters it was issued for.
fn token(kind: &str, filters: &str, key: &[String]) -> String {
    let body = serde_json::json!({"k": kind, "f": digest(filters), "after": key});
    hex::encode(body.to_string())
}

fn untoken(kind: &str, filters: &str, t: &str) -> Result<Vec<String>, AuditError> {
    let bad = || {
        invalid(
            "page_token",
            "not a token of this query; pass next_page_token of the previous page with the same filters",
        )
    };
    let bytes = hex::decode(t).map_err(|_| bad())?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if v["k"] != kind || v["f"] != digest(filters).as_str() {
        return Err(bad());
    }
    v["after"]
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|s| s.as_str().map(str::to_owned).ok_or_else(bad))
        .collect()
}

fn digest(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..8])
}

/// One page of rows and the token of the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

// === findings ===

/// A validated ListFindings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FindingsQuery {
    pub cluster_id: Option<String>,
    pub namespace: Option<String>,
    pub application: Option<String>,
    pub check: Option<String>,
    /// Severity ranks admitted (empty: any).
    pub ranks: Vec<i16>,
    pub standard_prefix: Option<String>,
    /// Empty: open and exempted.
    pub states: Vec<FindingState>,
    pub size: u32,
    /// The sort key of the last row of the previous page: (rank, cluster, namespace, kind,
    /// name, check, fingerprint).
    pub after: Option<FindingKey>,
}

/// The total order of findings: most severe first, then by cluster, namespace, kind, name,
/// check and fingerprint (unique per cluster).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FindingKey {
    pub rank: i16,
    pub cluster_id: String,
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub check: String,
    pub fingerprint: String,
}

impl FindingKey {
    fn to_vec(&self) -> Vec<String> {
        vec![
            self.rank.to_string(),
            self.cluster_id.clone(),
            self.namespace.clone(),
            self.kind.clone(),
            self.name.clone(),
            self.check.clone(),
            self.fingerprint.clone(),
        ]
    }

    fn from_vec(v: Vec<String>) -> Option<Self> {
        let [rank, cluster_id, namespace, kind, name, check, fingerprint]: [String; 7] =
            v.try_into().ok()?;
        Some(Self {
            rank: rank.parse().ok()?,
            cluster_id,
            namespace,
            kind,
            name,
            check,
            fingerprint,
        })
    }
}

/// ListFindings as the caller gave it.
#[derive(Debug, Clone, Default)]
pub struct FindingsRequest {
    pub cluster_id: String,
    pub namespace: String,
    pub application: String,
    pub check: String,
    /// Minimum severity name ("" for none).
    pub min_severity: String,
    /// Exact severity names.
    pub severities: Vec<String>,
    pub standard: String,
    pub states: Vec<FindingState>,
    pub page_size: u32,
    pub page_token: String,
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

impl FindingsQuery {
    pub fn new(r: FindingsRequest) -> Result<Self, AuditError> {
        if !r.cluster_id.is_empty() {
            ClusterId::parse(&r.cluster_id).map_err(|e| invalid("cluster_id", e.to_string()))?;
        }
        let check = match opt(&r.check) {
            Some(c) => Some(check_id("check", &c)?.to_owned()),
            None => None,
        };
        let mut ranks: Vec<i16> = SEVERITIES.iter().map(|(_, r, _)| *r).collect();
        if let Some(min) = opt(&r.min_severity) {
            let m = severity_rank(&min).ok_or_else(|| invalid("min_severity", "unknown"))?;
            ranks.retain(|r| *r >= m);
        }
        if !r.severities.is_empty() {
            let mut set = Vec::new();
            for s in &r.severities {
                set.push(severity_rank(s).ok_or_else(|| invalid("severities", format!("{s:?}")))?);
            }
            ranks.retain(|r| set.contains(r));
        }
        if ranks.len() == SEVERITIES.len() {
            ranks.clear();
        } else if ranks.is_empty() {
            // Filters that admit nothing: a rank no finding has.
            ranks.push(-1);
        }
        let mut states = r.states.clone();
        states.sort();
        states.dedup();
        let mut q = Self {
            cluster_id: opt(&r.cluster_id),
            namespace: opt(&r.namespace),
            application: opt(&r.application),
            check,
            ranks,
            standard_prefix: opt(&r.standard),
            states,
            size: page_size(r.page_size),
            after: None,
        };
        if !r.page_token.is_empty() {
            let key = untoken("findings", &q.filters(), &r.page_token)?;
            q.after = Some(
                FindingKey::from_vec(key)
                    .ok_or_else(|| invalid("page_token", "not a findings token of this api"))?,
            );
        }
        Ok(q)
    }

    /// The filters in one string, to bind tokens to them.
    fn filters(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.cluster_id,
            self.namespace,
            self.application,
            self.check,
            self.ranks,
            self.standard_prefix,
            self.states
        )
    }

    /// Builds the page from up to `size + 1` rows read in order.
    pub fn page<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> FindingKey) -> Page<T> {
        let size = usize::try_from(self.size).unwrap_or(usize::MAX);
        let more = rows.len() > size;
        rows.truncate(size);
        let next_page_token = match rows.last() {
            Some(last) if more => Some(token("findings", &self.filters(), &key(last).to_vec())),
            _ => None,
        };
        Page {
            items: rows,
            next_page_token,
        }
    }
}

/// How a stored finding reads now: an exempted finding whose exemption has expired is open.
pub fn read_state(
    stored: &str,
    exempted_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> FindingState {
    match stored {
        "resolved" => FindingState::Resolved,
        "exempted" if exempted_until.is_none_or(|t| t > now) => FindingState::Exempted,
        _ => FindingState::Open,
    }
}

// === audits ===

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditsQuery {
    pub cluster_id: Option<String>,
    pub size: u32,
    /// first_seq of the last audit of the previous page.
    pub before_seq: Option<i64>,
}

impl AuditsQuery {
    pub fn new(cluster_id: &str, page_size: u32, page_token: &str) -> Result<Self, AuditError> {
        if !cluster_id.is_empty() {
            ClusterId::parse(cluster_id).map_err(|e| invalid("cluster_id", e.to_string()))?;
        }
        let mut q = Self {
            cluster_id: opt(cluster_id),
            size: self::page_size(page_size),
            before_seq: None,
        };
        if !page_token.is_empty() {
            let key = untoken("audits", &format!("{:?}", q.cluster_id), page_token)?;
            q.before_seq = key.first().and_then(|s| s.parse().ok());
            if q.before_seq.is_none() {
                return Err(invalid("page_token", "not an audits token of this api"));
            }
        }
        Ok(q)
    }

    pub fn page<T>(&self, mut rows: Vec<T>, seq: impl Fn(&T) -> i64) -> Page<T> {
        let size = usize::try_from(self.size).unwrap_or(usize::MAX);
        let more = rows.len() > size;
        rows.truncate(size);
        let next_page_token = match rows.last() {
            Some(last) if more => Some(token(
                "audits",
                &format!("{:?}", self.cluster_id),
                &[seq(last).to_string()],
            )),
            _ => None,
        };
        Page {
            items: rows,
            next_page_token,
        }
    }
}

// === derogations ===

/// Derogation states a caller filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DerogationState {
    Active,
    Expired,
    Revoked,
}

/// A validated ListDerogations, newest grant first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerogationsQuery {
    pub states: Vec<DerogationState>,
    pub check: Option<String>,
    pub cluster_id: Option<String>,
    pub size: u32,
    /// (granted_seq, derogation_id) of the last row of the previous page.
    pub after: Option<(i64, String)>,
}

impl DerogationsQuery {
    pub fn new(
        mut states: Vec<DerogationState>,
        check: &str,
        cluster_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<Self, AuditError> {
        states.sort();
        states.dedup();
        let check = match opt(check) {
            Some(c) => Some(check_id("check", &c)?.to_owned()),
            None => None,
        };
        if !cluster_id.is_empty() {
            ClusterId::parse(cluster_id).map_err(|e| invalid("cluster_id", e.to_string()))?;
        }
        let mut q = Self {
            states,
            check,
            cluster_id: opt(cluster_id),
            size: self::page_size(page_size),
            after: None,
        };
        if !page_token.is_empty() {
            let key = untoken("derogations", &q.filters(), page_token)?;
            let after = match key.as_slice() {
                [seq, id] => seq.parse().ok().map(|s| (s, id.clone())),
                _ => None,
            };
            q.after = Some(after.ok_or_else(|| invalid("page_token", "not a derogations token"))?);
        }
        Ok(q)
    }

    fn filters(&self) -> String {
        format!("{:?}|{:?}|{:?}", self.states, self.check, self.cluster_id)
    }

    pub fn page<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> (i64, String)) -> Page<T> {
        let size = usize::try_from(self.size).unwrap_or(usize::MAX);
        let more = rows.len() > size;
        rows.truncate(size);
        let next_page_token = match rows.last() {
            Some(last) if more => {
                let (seq, id) = key(last);
                Some(token(
                    "derogations",
                    &self.filters(),
                    &[seq.to_string(), id],
                ))
            }
            _ => None,
        };
        Page {
            items: rows,
            next_page_token,
        }
    }
}

/// How a derogation reads now.
pub fn derogation_state(
    revoked: bool,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DerogationState {
    if revoked {
        DerogationState::Revoked
    } else if expires_at.is_none_or(|t| t <= now) {
        DerogationState::Expired
    } else {
        DerogationState::Active
    }
}

// === posture ===

/// Where a posture is taken.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostureScope {
    pub cluster_id: Option<String>,
    pub namespace: Option<String>,
    pub application: Option<String>,
    pub history: u32,
}

impl PostureScope {
    pub fn new(
        cluster_id: &str,
        namespace: &str,
        application: &str,
        history: u32,
    ) -> Result<Self, AuditError> {
        if !cluster_id.is_empty() {
            ClusterId::parse(cluster_id).map_err(|e| invalid("cluster_id", e.to_string()))?;
        }
        Ok(Self {
            cluster_id: opt(cluster_id),
            namespace: opt(namespace),
            application: opt(application),
            history: match history {
                0 => 30,
                n => n.min(500),
            },
        })
    }

    /// The narrowest filter given.
    pub fn name(&self) -> &'static str {
        if self.application.is_some() {
            "application"
        } else if self.namespace.is_some() {
            "namespace"
        } else if self.cluster_id.is_some() {
            "cluster"
        } else {
            "fleet"
        }
    }
}

/// Open and exempted findings by severity name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub open: BTreeMap<String, u64>,
    pub exempted: BTreeMap<String, u64>,
}

/// The posture score, 0-100: `round(100 * N / (N + W))` where N is the number of objects
/// audited in scope and W the open findings weighted by severity (critical 10, high 5,
/// medium 2, low 1). Exempted findings do not count. Nothing open scores 100; W = N scores 50;
/// open findings with no audited object in scope score 0.
pub fn score(objects: u64, open: &BTreeMap<String, u64>) -> u32 {
    // u128: no overflow whatever the counts.
    let weighted: u128 = SEVERITIES
        .iter()
        .map(|(name, _, w)| u128::from(open.get(*name).copied().unwrap_or(0)) * u128::from(*w))
        .sum();
    if weighted == 0 {
        return 100;
    }
    let n = u128::from(objects);
    let total = n + weighted;
    u32::try_from((200 * n + total) / (2 * total)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).single().unwrap()
    }

    fn counts(c: u64, h: u64, m: u64, l: u64) -> BTreeMap<String, u64> {
        [("critical", c), ("high", h), ("medium", m), ("low", l)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[test]
    fn given_findings_when_scored_then_severity_weighs_against_objects() {
        assert_eq!(score(100, &BTreeMap::new()), 100);
        assert_eq!(score(0, &BTreeMap::new()), 100);
        assert_eq!(score(10, &counts(1, 0, 0, 0)), 50);
        assert_eq!(score(10, &counts(0, 0, 0, 10)), 50);
        assert_eq!(score(90, &counts(0, 0, 0, 10)), 90);
        assert_eq!(score(0, &counts(0, 0, 0, 1)), 0);
        // More severe findings cost more; more objects dilute them.
        assert!(score(40, &counts(1, 0, 0, 0)) < score(40, &counts(0, 1, 0, 0)));
        assert!(score(400, &counts(1, 0, 0, 0)) > score(40, &counts(1, 0, 0, 0)));
        assert_eq!(score(u64::MAX, &counts(u64::MAX, 0, 0, 0)), 9);
    }

    #[test]
    fn given_a_policy_when_validated_then_ids_are_canonical_and_bad_fields_named() {
        let p = validate_policy(PolicyInput {
            disabled_checks: vec!["pull-policy".into(), "PULL-POLICY".into()],
            severity_overrides: [("privileged".to_owned(), "low".to_owned())].into(),
            registry_allow_list: vec!["GHCR.io/Acme/".into()],
            ..PolicyInput::default()
        })
        .unwrap();
        assert_eq!(p.disabled_checks, ["PULL-POLICY"]);
        assert_eq!(p.severity_overrides["PRIVILEGED"], "low");
        assert_eq!(p.registry_allow_list, ["ghcr.io/acme"]);
        assert_eq!(p.level, "all");
        let field = |p: PolicyInput| match validate_policy(p) {
            Err(AuditError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(PolicyInput {
                disabled_checks: vec!["NOPE".into()],
                ..PolicyInput::default()
            }),
            "policy.disabled_checks"
        );
        assert_eq!(
            field(PolicyInput {
                severity_overrides: [("HOST-PID".to_owned(), "urgent".to_owned())].into(),
                ..PolicyInput::default()
            }),
            "policy.severity_overrides"
        );
        assert_eq!(
            field(PolicyInput {
                registry_allow_list: vec![" ".into()],
                ..PolicyInput::default()
            }),
            "policy.registry_allow_list"
        );
        assert_eq!(
            field(PolicyInput {
                level: "strict".into(),
                ..PolicyInput::default()
            }),
            "policy.level"
        );
    }

    #[test]
    fn given_versions_when_setting_then_conflicts_are_refused() {
        assert_eq!(next_version(0, None), Ok(1));
        assert_eq!(next_version(3, Some(3)), Ok(4));
        assert_eq!(
            next_version(3, Some(2)),
            Err(AuditError::VersionConflict {
                current: 3,
                expected: 2
            })
        );
    }

    fn grant() -> GrantInput {
        GrantInput {
            check: "host-net".into(),
            scope: ScopeInput {
                cluster_labels: [("env".to_owned(), "prod".to_owned())].into(),
                cluster_id: "prod-eu".into(),
                namespace: "ingress".into(),
                workload_kind: "DaemonSet".into(),
                workload_name: "ingress-nginx".into(),
                container: "controller".into(),
            },
            reason: "needs the host network".into(),
            approver: "bob".into(),
            expires_at: Some(t(3600)),
        }
    }

    #[test]
    fn given_a_grant_when_validated_then_every_rule_names_its_field() {
        assert_eq!(validate_grant(grant(), t(0)).unwrap().check, "HOST-NET");
        let cases: Vec<(&str, GrantInput)> = vec![
            (
                "check",
                GrantInput {
                    check: "NOPE".into(),
                    ..grant()
                },
            ),
            (
                "reason",
                GrantInput {
                    reason: " ".into(),
                    ..grant()
                },
            ),
            (
                "approver",
                GrantInput {
                    approver: String::new(),
                    ..grant()
                },
            ),
            (
                "expires_at",
                GrantInput {
                    expires_at: None,
                    ..grant()
                },
            ),
            (
                "expires_at",
                GrantInput {
                    expires_at: Some(t(-1)),
                    ..grant()
                },
            ),
            (
                "scope.cluster_id",
                GrantInput {
                    scope: ScopeInput {
                        cluster_id: "a.b".into(),
                        ..grant().scope
                    },
                    ..grant()
                },
            ),
            (
                "scope.cluster_labels",
                GrantInput {
                    scope: ScopeInput {
                        cluster_labels: [("env".to_owned(), "a b".to_owned())].into(),
                        ..grant().scope
                    },
                    ..grant()
                },
            ),
            (
                "scope.namespace",
                GrantInput {
                    scope: ScopeInput {
                        namespace: "Ingress".into(),
                        ..grant().scope
                    },
                    ..grant()
                },
            ),
            (
                "scope.workload_kind",
                GrantInput {
                    scope: ScopeInput {
                        workload_kind: "daemon set".into(),
                        ..grant().scope
                    },
                    ..grant()
                },
            ),
            (
                "scope.workload_name",
                GrantInput {
                    scope: ScopeInput {
                        workload_name: "x*".into(),
                        ..grant().scope
                    },
                    ..grant()
                },
            ),
            (
                "scope.container",
                GrantInput {
                    scope: ScopeInput {
                        container: "a_b".into(),
                        ..grant().scope
                    },
                    ..grant()
                },
            ),
        ];
        for (want, g) in cases {
            match validate_grant(g, t(0)) {
                Err(AuditError::Invalid { field, .. }) => assert_eq!(field, want),
                other => panic!("{want}: {other:?}"),
            }
        }
    }

    #[test]
    fn given_findings_filters_then_tokens_are_bound_to_them() {
        let q = FindingsQuery::new(FindingsRequest {
            min_severity: "high".into(),
            check: "privileged".into(),
            page_size: 2,
            ..FindingsRequest::default()
        })
        .unwrap();
        assert_eq!(q.ranks, [4, 3]);
        assert_eq!(q.check.as_deref(), Some("PRIVILEGED"));
        let key = |i: &i32| FindingKey {
            rank: 4,
            fingerprint: format!("f{i}"),
            ..FindingKey::default()
        };
        let page = q.page(vec![1, 2, 3], key);
        assert_eq!(page.items, [1, 2]);
        let token = page.next_page_token.unwrap();
        let next = FindingsQuery::new(FindingsRequest {
            min_severity: "high".into(),
            check: "PRIVILEGED".into(),
            page_size: 2,
            page_token: token.clone(),
            ..FindingsRequest::default()
        })
        .unwrap();
        assert_eq!(next.after.unwrap().fingerprint, "f2");
        let other = FindingsQuery::new(FindingsRequest {
            page_token: token,
            ..FindingsRequest::default()
        });
        assert!(matches!(
            other,
            Err(AuditError::Invalid {
                field: "page_token",
                ..
            })
        ));
        let none = FindingsQuery::new(FindingsRequest {
            min_severity: "critical".into(),
            severities: vec!["low".into()],
            ..FindingsRequest::default()
        })
        .unwrap();
        assert_eq!(none.ranks, [-1]);
        assert!(
            FindingsQuery::new(FindingsRequest {
                min_severity: "urgent".into(),
                ..FindingsRequest::default()
            })
            .is_err()
        );
    }

    #[test]
    fn an_expired_exemption_reads_as_open() {
        assert_eq!(
            read_state("exempted", Some(t(10)), t(0)),
            FindingState::Exempted
        );
        assert_eq!(
            read_state("exempted", Some(t(10)), t(10)),
            FindingState::Open
        );
        assert_eq!(read_state("open", None, t(0)), FindingState::Open);
        assert_eq!(read_state("resolved", None, t(0)), FindingState::Resolved);
    }

    #[test]
    fn posture_scope_is_the_narrowest_filter() {
        assert_eq!(PostureScope::new("", "", "", 0).unwrap().name(), "fleet");
        assert_eq!(PostureScope::new("a", "", "", 0).unwrap().name(), "cluster");
        assert_eq!(
            PostureScope::new("a", "ns", "", 0).unwrap().name(),
            "namespace"
        );
        assert_eq!(
            PostureScope::new("", "", "app", 0).unwrap().name(),
            "application"
        );
        assert_eq!(PostureScope::new("", "", "", 9999).unwrap().history, 500);
        assert!(PostureScope::new("A!", "", "", 0).is_err());
    }
}
