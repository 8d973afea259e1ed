//! A fake Kubernetes API server: serves a [`Fixture`] as real Kubernetes JSON (discovery, list
//! with pagination and selectors, get, watch, create, replace, patch, delete) on a loopback port
//! so the unmodified kube-rs client can talk to it.
//!
//! Objects live per resource type in a `BTreeMap` keyed by `(namespace, name)`, so listing a page
//! only touches (and serializes) that page, even for a fixture of 100,000 objects. Every change
//! bumps one global, monotonically increasing `resourceVersion` and lands in a bounded event
//! history that watches replay from.

mod patch;
mod resources;
mod selector;

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fixture::Fixture;
use patch::PatchKind;
use resources::{GIT_VERSION, Registry, ResourceType};
use selector::{FieldSelector, LabelSelector};

/// How many change events the server keeps for watches that resume from a `resourceVersion`.
const HISTORY: usize = 10_000;
/// Capacity of the live event channel; a watch that falls further behind gets `410 Gone`.
const CHANNEL: usize = 16_384;
/// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

/// Options for [`FakeKube::start_with`].
#[derive(Clone, Debug)]
pub struct FakeKubeOptions {
    /// Where to listen; `None` picks a free port on 127.0.0.1.
    pub addr: Option<SocketAddr>,
    /// The `gitVersion` reported at `/version` (e.g. `v1.34.1`).
    pub version: String,
}

impl Default for FakeKubeOptions {
    fn default() -> Self {
        Self {
            addr: None,
            version: GIT_VERSION.to_string(),
        }
    }
}

/// One request the server received, in arrival order.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RecordedRequest {
    /// The HTTP method, upper case (`GET`, `PATCH`, ...).
    pub method: String,
    /// The path without the query (`/api/v1/namespaces/dev/pods/web-0`).
    pub path: String,
    /// The raw query string, if any (`limit=2&continue=...`).
    pub query: Option<String>,
    /// The body parsed as JSON (or YAML); a body that is neither is kept as a string.
    pub body: Option<Value>,
}

/// A running fake API server; stops on [`FakeKube::stop`] or drop.
pub struct FakeKube {
    addr: SocketAddr,
    /// The fixture's name, used for the kubeconfig's cluster and context.
    name: String,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for FakeKube {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeKube")
            .field("url", &self.url())
            .field("fixture", &self.name)
            .field("stopped", &self.shared.cancel.is_cancelled())
            .finish()
    }
}

impl FakeKube {
    /// Serves `fixture` on a free port of 127.0.0.1.
    ///
    /// # Errors
    /// When the fixture holds an object the server cannot store or the port cannot be bound.
    pub async fn start(fixture: Fixture) -> anyhow::Result<Self> {
        Self::start_with(fixture, FakeKubeOptions::default()).await
    }

    /// Serves `fixture` with explicit options.
    ///
    /// # Errors
    /// When the fixture holds an object the server cannot store or the address cannot be bound.
    pub async fn start_with(fixture: Fixture, options: FakeKubeOptions) -> anyhow::Result<Self> {
        let (events, _) = broadcast::channel(CHANNEL);
        let mut store = Store::new(events);
        let name = fixture.name().to_string();
        for object in fixture.into_objects() {
            store.insert_initial(object).with_context(|| {
                format!("fixture {name:?} holds an object the fake server cannot store")
            })?;
        }
        let addr = options
            .addr
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("failed to bind {addr}"))?;
        let addr = listener
            .local_addr()
            .context("listener has no local address")?;
        let shared = Arc::new(Shared {
            store: RwLock::new(store),
            requests: Mutex::new(Vec::new()),
            refused: Mutex::new(Vec::new()),
            version: options.version,
            cancel: CancellationToken::new(),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let shutdown = shared.cancel.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "fake kube server failed");
            }
        });
        tracing::debug!(%addr, fixture = %name, "fake kube server listening");
        Ok(Self {
            addr,
            name,
            shared,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Creates or replaces an object (bumping `resourceVersion`, emitting ADDED or MODIFIED).
    ///
    /// # Errors
    /// When `obj` lacks `apiVersion`, `kind` or `metadata.name`.
    pub fn apply(&self, obj: Value) -> anyhow::Result<()> {
        let mut store = self.shared.write();
        let (type_id, key) = store.locate(&obj).map_err(anyhow::Error::msg)?;
        store.upsert(type_id, key, obj);
        Ok(())
    }

    /// Deletes an object (emitting DELETED); false when there was none.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        let mut store = self.shared.write();
        let Some(type_id) = store.registry.by_kind(api_version, kind) else {
            return false;
        };
        let key = store.key(type_id, namespace, name);
        store.remove(type_id, &key).is_some()
    }

    /// The stored object, if any.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let store = self.shared.read();
        let type_id = store.registry.by_kind(api_version, kind)?;
        let key = store.key(type_id, namespace, name);
        store.objects.get(type_id)?.get(&key).cloned()
    }

    /// How many objects of each kind are stored.
    pub fn count_by_kind(&self) -> BTreeMap<String, usize> {
        let store = self.shared.read();
        let mut counts = BTreeMap::new();
        for (type_id, map) in store.objects.iter().enumerate() {
            if let (false, Some(t)) = (map.is_empty(), store.registry.get(type_id)) {
                *counts.entry(t.kind.clone()).or_insert(0) += map.len();
            }
        }
        counts
    }

    /// The current global `resourceVersion`.
    pub fn resource_version(&self) -> u64 {
        self.shared.read().rv
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The recorded requests with `method` (any case) whose path starts with `path_prefix`, in
    /// order; e.g. `requests_matching("PATCH", "/apis/apps/v1/namespaces/shop/deployments/")`.
    pub fn requests_matching(&self, method: &str, path_prefix: &str) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }

    /// Writes a kubeconfig for this server (plain http, no credentials; cluster, user and
    /// context named after the fixture) to `dir/<fixture>-<port>.kubeconfig` and returns its
    /// path, for processes that read `KUBECONFIG`.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn kubeconfig(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let name = &self.name;
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": {"server": self.url()}}],
            "users": [{"name": name, "user": {}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "current-context": name,
            "preferences": {},
        });
        let yaml = serde_yaml::to_string(&config).context("failed to render the kubeconfig")?;
        let path = dir.join(format!("{name}-{}.kubeconfig", self.addr.port()));
        std::fs::write(&path, yaml)
            .with_context(|| format!("failed to write kubeconfig {}", path.display()))?;
        Ok(path)
    }

    /// From now on answers requests with `method` (any case) whose path starts with
    /// `path_prefix` with `403 Forbidden`, as an API server whose RBAC does not allow them would
    /// (they are still recorded). E.g. `refuse("PATCH", "/apis/apps/v1/namespaces/shop/")`.
    pub fn refuse(&self, method: &str, path_prefix: &str) {
        self.shared
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((method.to_ascii_uppercase(), path_prefix.to_owned()));
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Stops serving: ends open watches and closes the listener.
    pub fn stop(&self) {
        self.shared.cancel.cancel();
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// === state ===

struct Shared {
    store: RwLock<Store>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// (method, path prefix) answered `403 Forbidden` (see [`FakeKube::refuse`]).
    refused: Mutex<Vec<(String, String)>>,
    version: String,
    cancel: CancellationToken,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.store
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

type Key = (String, String);

#[derive(Debug)]
struct WatchEvent {
    rv: u64,
    type_id: usize,
    kind: &'static str,
    object: Value,
}

struct Store {
    registry: Registry,
    objects: Vec<BTreeMap<Key, Value>>,
    /// The latest `resourceVersion` handed out.
    rv: u64,
    history: VecDeque<Arc<WatchEvent>>,
    /// Every event with `rv > floor` is still in `history`.
    floor: u64,
    events: broadcast::Sender<Arc<WatchEvent>>,
    next_uid: u64,
}

impl Store {
    fn new(events: broadcast::Sender<Arc<WatchEvent>>) -> Self {
        let registry = Registry::builtin();
        let objects = (0..registry.len()).map(|_| BTreeMap::new()).collect();
        Self {
            registry,
            objects,
            rv: 1,
            history: VecDeque::new(),
            floor: 1,
            events,
            next_uid: 0,
        }
    }

    fn key(&self, type_id: usize, namespace: Option<&str>, name: &str) -> Key {
        let namespaced = self.registry.get(type_id).is_some_and(|t| t.namespaced);
        let ns = if namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        (ns.to_string(), name.to_string())
    }

    /// The type and key of `obj`, registering an unknown kind.
    fn locate(&mut self, obj: &Value) -> Result<(usize, Key), String> {
        let field = |pointer: &str| {
            obj.pointer(pointer)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let api_version = field("/apiVersion").ok_or("object has no apiVersion")?;
        let kind = field("/kind").ok_or("object has no kind")?;
        let name = field("/metadata/name").ok_or("object has no metadata.name")?;
        let namespace = field("/metadata/namespace");
        let type_id = self.registry.ensure(api_version, kind, namespace.is_some());
        while self.objects.len() < self.registry.len() {
            self.objects.push(BTreeMap::new());
        }
        Ok((type_id, self.key(type_id, namespace, name)))
    }

    fn insert_initial(&mut self, obj: Value) -> anyhow::Result<()> {
        let (type_id, key) = self.locate(&obj).map_err(anyhow::Error::msg)?;
        self.rv += 1;
        let obj = self.normalize(type_id, &key, obj, None);
        if let Some(map) = self.objects.get_mut(type_id) {
            map.insert(key, obj);
        }
        self.floor = self.rv;
        Ok(())
    }

    /// Fills in what the API server would: apiVersion/kind, namespace, uid, creationTimestamp
    /// (kept from `previous`), and the current resourceVersion.
    fn normalize(
        &mut self,
        type_id: usize,
        key: &Key,
        mut obj: Value,
        previous: Option<&Value>,
    ) -> Value {
        if !obj.is_object() {
            obj = json!({});
        }
        if let Some(t) = self.registry.get(type_id) {
            obj["apiVersion"] = json!(t.api_version());
            obj["kind"] = json!(t.kind);
        }
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        let meta = &mut obj["metadata"];
        meta["name"] = json!(key.1);
        if key.0.is_empty() {
            if let Some(m) = meta.as_object_mut() {
                m.remove("namespace");
            }
        } else {
            meta["namespace"] = json!(key.0);
        }
        for field in ["uid", "creationTimestamp"] {
            let missing = meta
                .get(field)
                .is_none_or(|v| v.as_str().is_none_or(str::is_empty));
            if missing {
                let value = match previous.and_then(|p| p.pointer(&format!("/metadata/{field}"))) {
                    Some(v) => v.clone(),
                    None if field == "uid" => {
                        self.next_uid += 1;
                        json!(format!("00000000-0000-4000-8000-{:012x}", self.next_uid))
                    }
                    None => json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                };
                meta[field] = value;
            }
        }
        meta["resourceVersion"] = json!(self.rv.to_string());
        obj
    }

    /// Creates or replaces; returns the stored object and whether it was created.
    fn upsert(&mut self, type_id: usize, key: Key, obj: Value) -> (Value, bool) {
        self.rv += 1;
        let previous = self.objects.get(type_id).and_then(|m| m.get(&key)).cloned();
        let obj = self.normalize(type_id, &key, obj, previous.as_ref());
        if let Some(map) = self.objects.get_mut(type_id) {
            map.insert(key, obj.clone());
        }
        let created = previous.is_none();
        self.emit(
            type_id,
            if created { "ADDED" } else { "MODIFIED" },
            obj.clone(),
        );
        (obj, created)
    }

    fn remove(&mut self, type_id: usize, key: &Key) -> Option<Value> {
        let mut obj = self.objects.get_mut(type_id)?.remove(key)?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit(type_id, "DELETED", obj.clone());
        Some(obj)
    }

    fn emit(&mut self, type_id: usize, kind: &'static str, object: Value) {
        let event = Arc::new(WatchEvent {
            rv: self.rv,
            type_id,
            kind,
            object,
        });
        self.history.push_back(Arc::clone(&event));
        while self.history.len() > HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.floor = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
    }
}

// === errors ===

#[derive(Debug)]
struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    fn not_found_path() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    fn not_found(t: &ResourceType, name: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(t)),
        );
        e.details = Some(details(t, name));
        e
    }

    fn method_not_allowed(method: &Method) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code.as_u16(),
        });
        if let Some(d) = &self.details {
            status["details"] = d.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.code, &self.status())
    }
}

fn qualified(t: &ResourceType) -> String {
    if t.group.is_empty() {
        t.plural.clone()
    } else {
        format!("{}.{}", t.plural, t.group)
    }
}

fn details(t: &ResourceType, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": t.plural});
    if !t.group.is_empty() {
        d["group"] = json!(t.group);
    }
    d
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

type ApiResult = Result<Response, ApiError>;

// === routing ===

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = parse_body(&body);
    shared
        .requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            body: body.clone(),
        });
    let refused = shared
        .refused
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .any(|(m, prefix)| method.as_str() == m && uri.path().starts_with(prefix.as_str()));
    if refused {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{method} {} is forbidden: the caller may not do this",
                uri.path()
            ),
        )
        .into_response();
    }
    let request = Request {
        method,
        headers,
        body,
    };
    match route(&shared, &request, &uri) {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

struct Request {
    method: Method,
    headers: HeaderMap,
    body: Option<Value>,
}

fn parse_body(body: &Bytes) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    if let Ok(v) = serde_json::from_slice(body) {
        return Some(v);
    }
    let text = String::from_utf8_lossy(body);
    Some(serde_yaml::from_str(&text).unwrap_or_else(|_| Value::String(text.into_owned())))
}

fn route(shared: &Arc<Shared>, req: &Request, uri: &Uri) -> ApiResult {
    let query = Query::<BTreeMap<String, String>>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let aggregated = req
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=APIGroupDiscoveryList"));
    let read_only = |resp: Value| {
        if req.method == Method::GET {
            Ok(json_response(StatusCode::OK, &resp))
        } else {
            Err(ApiError::method_not_allowed(&req.method))
        }
    };
    match segments.as_slice() {
        ["version"] => read_only(version_json(&shared.version)),
        ["healthz" | "livez" | "readyz"] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] if aggregated => Ok(aggregated_response(shared.read().registry.aggregated(true))),
        ["apis"] if aggregated => Ok(aggregated_response(
            shared.read().registry.aggregated(false),
        )),
        ["api"] => read_only(shared.read().registry.core_versions()),
        ["apis"] => read_only(shared.read().registry.group_list()),
        ["apis", group] => {
            let doc = shared
                .read()
                .registry
                .group(group)
                .ok_or_else(ApiError::not_found_path)?;
            read_only(doc)
        }
        ["api", "v1", rest @ ..] => resource(shared, req, &query, "", "v1", rest),
        ["apis", group, version, rest @ ..] => resource(shared, req, &query, group, version, rest),
        _ => Err(ApiError::not_found_path()),
    }
}

fn aggregated_response(doc: Value) -> Response {
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    let content_type = HeaderValue::from_static(
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
    );
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn version_json(git_version: &str) -> Value {
    let mut parts = git_version.trim_start_matches('v').split(['.', '-', '+']);
    let major = parts.next().unwrap_or("1").to_string();
    let minor = parts.next().unwrap_or("0").to_string();
    json!({
        "major": major, "minor": minor, "emulationMajor": major, "emulationMinor": minor,
        "gitVersion": git_version, "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-09-09T00:00:00Z", "goVersion": "go1.24.6", "compiler": "gc", "platform": "linux/amd64",
    })
}

/// What a resource path points at.
struct Target {
    type_id: usize,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn resolve(
    registry: &Registry,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let namespaced_plural = match rest {
        ["namespaces", _, plural, ..] => registry.by_plural(group, version, plural),
        _ => None,
    };
    let (type_id, namespace, tail) = match (namespaced_plural, rest) {
        (Some(id), ["namespaces", ns, _, tail @ ..]) => (id, Some((*ns).to_string()), tail),
        (_, [plural, tail @ ..]) => (
            registry
                .by_plural(group, version, plural)
                .ok_or_else(ApiError::not_found_path)?,
            None,
            tail,
        ),
        _ => return Err(ApiError::not_found_path()),
    };
    let t = registry.get(type_id).ok_or_else(ApiError::not_found_path)?;
    let (name, subresource) = match tail {
        [] => (None, None),
        [name] => (Some((*name).to_string()), None),
        [name, sub] => (Some((*name).to_string()), Some((*sub).to_string())),
        _ => return Err(ApiError::not_found_path()),
    };
    // A namespaced object needs its namespace in the path; a cluster-scoped type has none.
    if (namespace.is_some() && !t.namespaced)
        || (t.namespaced && namespace.is_none() && name.is_some())
    {
        return Err(ApiError::not_found_path());
    }
    Ok(Target {
        type_id,
        namespace,
        name,
        subresource,
    })
}

fn resource(
    shared: &Arc<Shared>,
    req: &Request,
    query: &BTreeMap<String, String>,
    group: &str,
    version: &str,
    rest: &[&str],
) -> ApiResult {
    if rest.is_empty() {
        let doc = shared
            .read()
            .registry
            .resource_list(group, version)
            .ok_or_else(ApiError::not_found_path)?;
        return if req.method == Method::GET {
            Ok(json_response(StatusCode::OK, &doc))
        } else {
            Err(ApiError::method_not_allowed(&req.method))
        };
    }
    let target = resolve(&shared.read().registry, group, version, rest)?;
    if let (Some(name), Some("scale")) = (&target.name, target.subresource.as_deref()) {
        return scale(shared, &target, name, req);
    }
    if let Some(sub) = &target.subresource
        && sub != "status"
    {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the fake server does not serve the {sub} subresource"),
        ));
    }
    let is_true = |key: &str| query.get(key).is_some_and(|v| v == "true" || v == "1");
    match (&target.name, &req.method) {
        (None, &Method::GET) if is_true("watch") => watch(shared, &target, query),
        (None, &Method::GET) => list(shared, &target, query),
        (None, &Method::POST) => create(shared, &target, req),
        (Some(name), &Method::GET) => {
            let store = shared.read();
            let t = store
                .registry
                .get(target.type_id)
                .ok_or_else(ApiError::not_found_path)?;
            let key = store.key(target.type_id, target.namespace.as_deref(), name);
            let obj = store
                .objects
                .get(target.type_id)
                .and_then(|m| m.get(&key))
                .ok_or_else(|| ApiError::not_found(t, name))?;
            Ok(json_response(StatusCode::OK, obj))
        }
        (Some(name), &Method::PUT) => replace(shared, &target, name, req),
        (Some(name), &Method::PATCH) => patch_object(shared, &target, name, req),
        (Some(name), &Method::DELETE) => {
            let mut store = shared.write();
            let key = store.key(target.type_id, target.namespace.as_deref(), name);
            match store.remove(target.type_id, &key) {
                Some(obj) => Ok(json_response(StatusCode::OK, &obj)),
                None => Err(store
                    .registry
                    .get(target.type_id)
                    .map_or_else(ApiError::not_found_path, |t| ApiError::not_found(t, name))),
            }
        }
        (_, method) => Err(ApiError::method_not_allowed(method)),
    }
}

// === list ===

struct Selectors {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selectors {
    fn parse(query: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
        Ok(Self { labels, fields })
    }

    fn matches(&self, obj: &Value) -> bool {
        (self.labels.is_empty() || self.labels.matches(obj))
            && (self.fields.is_empty() || self.fields.matches(obj))
    }
}

/// Continue tokens: hex of `{"rv":N,"ns":..,"name":..}` (opaque to clients).
fn encode_continue(rv: u64, key: &Key) -> String {
    let raw = json!({"rv": rv, "ns": key.0, "name": key.1}).to_string();
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<Key, ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    match (
        value.get("ns").and_then(Value::as_str),
        value.get("name").and_then(Value::as_str),
    ) {
        (Some(ns), Some(name)) => Ok((ns.to_string(), name.to_string())),
        _ => Err(bad()),
    }
}

fn list(shared: &Arc<Shared>, target: &Target, query: &BTreeMap<String, String>) -> ApiResult {
    let selectors = Selectors::parse(query)?;
    let limit = match query.get("limit").map(String::as_str) {
        None | Some("") => 0,
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
    };
    let after = match query.get("continue").map(String::as_str) {
        None | Some("") => None,
        Some(token) => Some(decode_continue(token)?),
    };
    let store = shared.read();
    let t = store
        .registry
        .get(target.type_id)
        .ok_or_else(ApiError::not_found_path)?;
    let empty = BTreeMap::new();
    let map = store.objects.get(target.type_id).unwrap_or(&empty);
    let start = match (after, &target.namespace) {
        (Some(key), _) => Bound::Excluded(key),
        (None, Some(ns)) => Bound::Included((ns.clone(), String::new())),
        (None, None) => Bound::Unbounded,
    };
    let ns = target.namespace.as_deref();
    let mut matching = map
        .range::<Key, _>((start, Bound::Unbounded))
        .take_while(|((key_ns, _), _)| ns.is_none_or(|n| n == key_ns))
        .filter(|(_, obj)| selectors.matches(obj));
    let mut items = Vec::new();
    let mut last = None;
    for (key, obj) in matching.by_ref() {
        items.push(obj.clone());
        last = Some(key);
        if limit > 0 && items.len() >= limit {
            break;
        }
    }
    let mut metadata = json!({"resourceVersion": store.rv.to_string()});
    if limit > 0 && items.len() >= limit {
        let remaining = matching.count();
        if let (true, Some(key)) = (remaining > 0, last) {
            metadata["continue"] = json!(encode_continue(store.rv, key));
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let list = json!({"kind": format!("{}List", t.kind), "apiVersion": t.api_version(), "metadata": metadata, "items": items});
    Ok(json_response(StatusCode::OK, &list))
}

// === writes ===

fn body_object(req: &Request) -> Result<Value, ApiError> {
    match &req.body {
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        _ => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
    }
}

fn check_identity(t: &ResourceType, obj: &Value, namespace: Option<&str>) -> Result<(), ApiError> {
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != t.kind
    {
        return Err(ApiError::bad_request(format!(
            "the body kind {kind:?} does not match {:?}",
            t.kind
        )));
    }
    if let (Some(body_ns), Some(path_ns)) = (
        obj.pointer("/metadata/namespace").and_then(Value::as_str),
        namespace,
    ) && !body_ns.is_empty()
        && body_ns != path_ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

fn create(shared: &Arc<Shared>, target: &Target, req: &Request) -> ApiResult {
    let mut obj = body_object(req)?;
    let mut store = shared.write();
    let t = store
        .registry
        .get(target.type_id)
        .cloned()
        .ok_or_else(ApiError::not_found_path)?;
    check_identity(&t, &obj, target.namespace.as_deref())?;
    let name = match (
        obj.pointer("/metadata/name").and_then(Value::as_str),
        obj.pointer("/metadata/generateName")
            .and_then(Value::as_str),
    ) {
        (Some(name), _) if !name.is_empty() => name.to_string(),
        (_, Some(prefix)) if !prefix.is_empty() => {
            format!("{prefix}{:05x}", (store.rv * 2_654_435_761) & 0xf_ffff)
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
    };
    let key = store.key(target.type_id, target.namespace.as_deref(), &name);
    if store
        .objects
        .get(target.type_id)
        .is_some_and(|m| m.contains_key(&key))
    {
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(&t)),
        );
        e.details = Some(details(&t, &name));
        return Err(e);
    }
    obj["metadata"]["name"] = json!(name);
    let (stored, _) = store.upsert(target.type_id, key, obj);
    Ok(json_response(StatusCode::CREATED, &stored))
}

fn replace(shared: &Arc<Shared>, target: &Target, name: &str, req: &Request) -> ApiResult {
    let obj = body_object(req)?;
    let mut store = shared.write();
    let t = store
        .registry
        .get(target.type_id)
        .cloned()
        .ok_or_else(ApiError::not_found_path)?;
    check_identity(&t, &obj, target.namespace.as_deref())?;
    let key = store.key(target.type_id, target.namespace.as_deref(), name);
    let current = store
        .objects
        .get(target.type_id)
        .and_then(|m| m.get(&key))
        .ok_or_else(|| ApiError::not_found(&t, name))?;
    let current_rv = current
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    if let Some(wanted) = obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && !wanted.is_empty()
        && Some(wanted) != current_rv
    {
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(&t)
            ),
        );
        e.details = Some(details(&t, name));
        return Err(e);
    }
    let (stored, _) = store.upsert(target.type_id, key, obj);
    Ok(json_response(StatusCode::OK, &stored))
}

fn patch_object(shared: &Arc<Shared>, target: &Target, name: &str, req: &Request) -> ApiResult {
    let content_type = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let kind = PatchKind::from_content_type(content_type).ok_or_else(|| {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"))
    })?;
    let body = req
        .body
        .clone()
        .ok_or_else(|| ApiError::bad_request("the PATCH body is empty"))?;
    let mut store = shared.write();
    let t = store
        .registry
        .get(target.type_id)
        .cloned()
        .ok_or_else(ApiError::not_found_path)?;
    let key = store.key(target.type_id, target.namespace.as_deref(), name);
    let current = store
        .objects
        .get(target.type_id)
        .and_then(|m| m.get(&key))
        .cloned();
    let mut obj = match (current, kind) {
        (Some(obj), _) => obj,
        (None, PatchKind::Apply) => {
            json!({"apiVersion": t.api_version(), "kind": t.kind, "metadata": {"name": name}})
        }
        (None, _) => return Err(ApiError::not_found(&t, name)),
    };
    match kind {
        PatchKind::Merge | PatchKind::Apply => {
            check_identity(&t, &body, target.namespace.as_deref())?;
            patch::merge(&mut obj, &body);
        }
        PatchKind::Json => patch::json_patch(&mut obj, &body)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e))?,
    }
    // Identity fields are the server's; a merge patch carrying a stale resourceVersion must not win.
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    let (stored, _) = store.upsert(target.type_id, key, obj);
    Ok(json_response(StatusCode::OK, &stored))
}

// === scale ===

/// The `scale` subresource of a workload with `spec.replicas`: GET reads it as an
/// `autoscaling/v1` `Scale`; PATCH (merge or apply) and PUT set `spec.replicas` of the object.
fn scale(shared: &Arc<Shared>, target: &Target, name: &str, req: &Request) -> ApiResult {
    let mut store = shared.write();
    let t = store
        .registry
        .get(target.type_id)
        .cloned()
        .ok_or_else(ApiError::not_found_path)?;
    if !t.subresources.iter().any(|s| s == "scale") {
        return Err(ApiError::not_found_path());
    }
    let key = store.key(target.type_id, target.namespace.as_deref(), name);
    let mut obj = store
        .objects
        .get(target.type_id)
        .and_then(|m| m.get(&key))
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t, name))?;
    if req.method == Method::PATCH || req.method == Method::PUT {
        let replicas = req
            .body
            .as_ref()
            .and_then(|b| b.pointer("/spec/replicas"))
            .and_then(Value::as_u64)
            .ok_or_else(|| ApiError::bad_request("the Scale body has no spec.replicas"))?;
        obj["spec"]["replicas"] = json!(replicas);
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        obj = store.upsert(target.type_id, key, obj).0;
    } else if req.method != Method::GET {
        return Err(ApiError::method_not_allowed(&req.method));
    }
    let scale = json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": name,
            "namespace": target.namespace,
            "resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0))},
    });
    Ok(json_response(StatusCode::OK, &scale))
}

// === watch ===

fn watch(shared: &Arc<Shared>, target: &Target, query: &BTreeMap<String, String>) -> ApiResult {
    let selectors = Selectors::parse(query)?;
    let timeout = match query.get("timeoutSeconds").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(Duration::from_secs(s.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid timeoutSeconds {s:?}"))
        })?)),
    };
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    let send_initial = query
        .get("sendInitialEvents")
        .is_some_and(|v| v == "true" || v == "1");
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let namespace = target.namespace.clone();
    let type_id = target.type_id;
    let wanted = move |event_type: usize, obj: &Value| {
        event_type == type_id
            && namespace.as_deref().is_none_or(|ns| {
                obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
            })
            && selectors.matches(obj)
    };

    let store = shared.read();
    let t = store
        .registry
        .get(type_id)
        .cloned()
        .ok_or_else(ApiError::not_found_path)?;
    let mut lines: Vec<Bytes> = Vec::new();
    let cursor;
    let mut expired = false;
    match from {
        Some(rv) if rv < store.floor => {
            expired = true;
            cursor = rv;
        }
        Some(rv) if !send_initial => {
            for event in store
                .history
                .iter()
                .filter(|e| e.rv > rv && wanted(e.type_id, &e.object))
            {
                lines.push(event_line(event.kind, &event.object));
            }
            cursor = store.rv.max(rv);
        }
        _ => {
            let map = store.objects.get(type_id);
            for obj in map
                .into_iter()
                .flat_map(BTreeMap::values)
                .filter(|o| wanted(type_id, o))
            {
                lines.push(event_line("ADDED", obj));
            }
            cursor = store.rv;
            if send_initial && bookmarks {
                let mut mark = bookmark(&t, cursor);
                mark["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                lines.push(event_line("BOOKMARK", &mark));
            }
        }
    }
    // Subscribed under the read lock: every event after `cursor` reaches this receiver.
    let mut rx = store.events.subscribe();
    drop(store);

    let (tx, body_rx) = mpsc::channel::<Bytes>(256);
    let cancel = shared.cancel.clone();
    tokio::spawn(async move {
        if expired {
            let gone = ApiError::new(
                StatusCode::GONE,
                "Expired",
                format!("too old resource version: {cursor}"),
            );
            let _ = tx.send(event_line("ERROR", &gone.status())).await;
            return;
        }
        for line in lines {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let mut cursor = cursor;
        let deadline = timeout.map(|d| tokio::time::Instant::now() + d);
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            let until_deadline = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let line = tokio::select! {
                () = cancel.cancelled() => return,
                () = tx.closed() => return,
                () = until_deadline => return,
                _ = ticker.tick(), if bookmarks => event_line("BOOKMARK", &bookmark(&t, cursor)),
                received = rx.recv() => match received {
                    Ok(event) if event.rv <= cursor => continue,
                    Ok(event) => {
                        cursor = event.rv;
                        if !wanted(event.type_id, &event.object) {
                            continue;
                        }
                        event_line(event.kind, &event.object)
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let gone = ApiError::new(StatusCode::GONE, "Expired", "the watch fell too far behind");
                        let _ = tx.send(event_line("ERROR", &gone.status())).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let body = Body::from_stream(stream);
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

fn bookmark(t: &ResourceType, rv: u64) -> Value {
    json!({"kind": t.kind, "apiVersion": t.api_version(), "metadata": {"resourceVersion": rv.to_string()}})
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let key = ("team-a".to_string(), "api-0".to_string());
        assert_eq!(decode_continue(&encode_continue(7, &key)).unwrap(), key);
        assert!(decode_continue("zz").is_err());
        assert!(decode_continue("abc").is_err());
    }

    #[test]
    fn version_parts() {
        let v = version_json("v1.34.1");
        assert_eq!(v["major"], "1");
        assert_eq!(v["minor"], "34");
    }
}
