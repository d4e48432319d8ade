//! A stand-in Kubernetes API server for the lifecycle tests: kube-rs talks to it
//! through tower-test's mock service, so every request the backend makes is seen,
//! answered from an in-memory object store, logged in order, and can be made to fail.
//! It does what the real server does for the calls the backend makes (create with
//! 409 on a taken name, get, list by label, replace with resourceVersion checks, JSON
//! merge patch, namespace delete taking its objects along, the service proxy to the
//! egress proxy's `/status`, pod logs), and nothing else: an unexpected call is a 405.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

/// How the stand-in kubelet treats pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pods {
    /// Every pod runs and is ready at once.
    Ready,
    /// Pods stay Pending.
    NeverReady,
    /// The pod of this role fails (the others are ready).
    Fails(&'static str),
}

/// What the stand-in proxy's `/status` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proxy {
    /// The version of the policy ConfigMap as it is now (the proxy reloaded).
    Follows,
    /// The version it started with, forever (the proxy never notices).
    Stuck,
}

/// The server's state, shared with the test.
pub struct State {
    /// Objects by their API path (`/api/v1/namespaces/NS/pods/NAME`).
    pub objects: BTreeMap<String, Value>,
    /// `METHOD path` of every request, in order.
    pub log: Vec<String>,
    /// Answer requests whose method and path contain these with this status.
    pub fail: Option<(Method, &'static str, u16)>,
    pub pods: Pods,
    pub proxy: Proxy,
    /// Policy version the proxy started with (for [`Proxy::Stuck`]).
    pub started_version: BTreeMap<String, String>,
    /// `creationTimestamp` given to new namespaces.
    pub now: &'static str,
    /// What every pod's log holds, when set.
    pub log_text: Option<String>,
    next_ip: u8,
    next_version: u64,
}

/// A client on a fresh stand-in server, and the server's state.
pub fn start(pods: Pods, proxy: Proxy) -> (kube::Client, Arc<Mutex<State>>) {
    let state = Arc::new(Mutex::new(State {
        objects: BTreeMap::new(),
        log: Vec::new(),
        fail: None,
        pods,
        proxy,
        started_version: BTreeMap::new(),
        now: "2026-12-01T10:00:00Z",
        log_text: None,
        next_ip: 20,
        next_version: 1,
    }));
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let shared = state.clone();
    tokio::spawn(async move {
        while let Some((request, reply)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let (status, text) = shared
                .lock()
                .unwrap()
                .answer(&parts.method, &parts.uri, &bytes);
            reply.send_response(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(text.into_bytes()))
                    .unwrap(),
            );
        }
    });
    (kube::Client::new(service, "default"), state)
}

fn status(code: u16, reason: &str, message: &str) -> (u16, String) {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": reason, "message": message, "code": code});
    (code, body.to_string())
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// An object as text, with a Secret's base64 `data` decoded: what a reader of the
/// object (or of the API server's storage) learns from it.
pub fn readable(object: &Value) -> String {
    use base64::Engine as _;
    let mut text = object.to_string();
    if object["kind"] == "Secret" {
        for value in object["data"]
            .as_object()
            .into_iter()
            .flat_map(|d| d.values())
        {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.as_str().unwrap_or_default())
                .unwrap();
            text.push('\n');
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    text
}

/// The SHA-256 the proxy reports for a policy file's text.
pub fn version_of(text: &str) -> String {
    backend_api::needs::policy_version(text.as_bytes())
}

impl State {
    /// The namespace of an object path, if it is namespaced.
    fn namespace_of(path: &str) -> Option<&str> {
        path.split("/namespaces/")
            .nth(1)
            .map(|rest| rest.split('/').next().unwrap_or(rest))
    }

    fn answer(&mut self, method: &Method, uri: &http::Uri, body: &[u8]) -> (u16, String) {
        let path = uri.path().to_owned();
        let query = uri.query().unwrap_or_default().to_owned();
        self.log.push(format!("{method} {path}"));
        if let Some((fail_method, fragment, code)) = &self.fail
            && fail_method == method
            && path.contains(fragment)
        {
            return status(*code, "InternalError", "injected failure");
        }
        if path.contains("/proxy/") {
            return self.proxy_status(&path);
        }
        if let Some(pod) = path.strip_suffix("/log") {
            return match self.objects.get(pod) {
                Some(_) if self.log_text.is_some() => (200, self.log_text.clone().unwrap()),
                Some(_) => (
                    200,
                    format!("{{\"event\":\"started\",\"pod\":\"{pod}\"}}\nsecond line\n"),
                ),
                None => status(404, "NotFound", "no such pod"),
            };
        }
        match *method {
            Method::POST => self.create(&path, body),
            Method::GET if self.objects.contains_key(&path) => {
                (200, self.objects[&path].to_string())
            }
            Method::GET if Self::is_collection(&path) => self.list(&path, &query),
            Method::GET => status(404, "NotFound", &format!("{path} not found")),
            Method::PUT => self.replace(&path, body),
            Method::PATCH => self.patch(&path, body),
            Method::DELETE => self.delete(&path),
            _ => status(405, "MethodNotAllowed", "not served by the stand-in"),
        }
    }

    fn is_collection(path: &str) -> bool {
        let last = path.rsplit('/').next().unwrap_or_default();
        [
            "namespaces",
            "pods",
            "services",
            "configmaps",
            "secrets",
            "networkpolicies",
        ]
        .contains(&last)
    }

    fn create(&mut self, collection: &str, body: &[u8]) -> (u16, String) {
        let mut object: Value = match serde_json::from_slice(body) {
            Ok(object) => object,
            Err(e) => return status(400, "BadRequest", &e.to_string()),
        };
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
            return status(422, "Invalid", "metadata.name is required");
        };
        if collection != "/api/v1/namespaces" {
            let ns = Self::namespace_of(collection).unwrap_or_default();
            if !self
                .objects
                .contains_key(&format!("/api/v1/namespaces/{ns}"))
            {
                return status(404, "NotFound", &format!("namespace {ns} not found"));
            }
        }
        let path = format!("{collection}/{name}");
        if self.objects.contains_key(&path) {
            return status(409, "AlreadyExists", &format!("{path} already exists"));
        }
        object["metadata"]["resourceVersion"] = json!(self.next_version.to_string());
        self.next_version += 1;
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "Namespace" => {
                object["metadata"]["creationTimestamp"] = json!(self.now);
                object["status"] = json!({"phase": "Active"});
            }
            "Service" => {
                object["spec"]["clusterIP"] = json!(format!("10.96.7.{}", self.next_ip));
                self.next_ip += 1;
            }
            "Pod" => {
                let role = name.as_str();
                object["status"] = match &self.pods {
                    Pods::Fails(failing) if *failing == role => json!({"phase": "Failed"}),
                    Pods::NeverReady => json!({"phase": "Pending"}),
                    _ => json!({"phase": "Running",
                        "conditions": [{"type": "Ready", "status": "True"}]}),
                };
            }
            "Secret" => {
                // The API server keeps Secrets as base64 `data`; `stringData` is
                // write-only.
                use base64::Engine as _;
                if let Some(Value::Object(text)) =
                    object.as_object_mut().unwrap().remove("stringData")
                {
                    let data = object["data"].as_object().cloned().unwrap_or_default();
                    let mut data = data;
                    for (key, value) in text {
                        let encoded = base64::engine::general_purpose::STANDARD
                            .encode(value.as_str().unwrap_or_default());
                        data.insert(key, json!(encoded));
                    }
                    object["data"] = Value::Object(data);
                }
            }
            "ConfigMap" if name == "egress-policy" => {
                let ns = Self::namespace_of(collection)
                    .unwrap_or_default()
                    .to_owned();
                let text = object["data"]["policy.json"].as_str().unwrap_or_default();
                self.started_version.insert(ns, version_of(text));
            }
            _ => {}
        }
        self.objects.insert(path, object.clone());
        (201, object.to_string())
    }

    fn list(&self, collection: &str, query: &str) -> (u16, String) {
        let selector = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("labelSelector="))
            .map(|s| s.replace("%3D", "=").replace("%2F", "/"));
        let items: Vec<&Value> = self
            .objects
            .iter()
            .filter(|(path, _)| {
                path.strip_prefix(collection)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|name| !name.contains('/'))
            })
            .map(|(_, object)| object)
            .filter(|object| match &selector {
                None => true,
                Some(selector) => selector.split(',').all(|term| {
                    let (key, value) = term.split_once('=').unwrap_or((term, ""));
                    object["metadata"]["labels"][key].as_str() == Some(value)
                }),
            })
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"},
            "items": items});
        (200, list.to_string())
    }

    fn replace(&mut self, path: &str, body: &[u8]) -> (u16, String) {
        let Some(current) = self.objects.get(path) else {
            return status(404, "NotFound", &format!("{path} not found"));
        };
        let mut object: Value = serde_json::from_slice(body).unwrap();
        let sent = object["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        if sent.is_some() && sent.as_deref() != current["metadata"]["resourceVersion"].as_str() {
            return status(409, "Conflict", "the object has been modified");
        }
        object["metadata"]["resourceVersion"] = json!(self.next_version.to_string());
        self.next_version += 1;
        self.objects.insert(path.to_owned(), object.clone());
        (200, object.to_string())
    }

    fn patch(&mut self, path: &str, body: &[u8]) -> (u16, String) {
        let Some(current) = self.objects.get_mut(path) else {
            return status(404, "NotFound", &format!("{path} not found"));
        };
        let patch: Value = serde_json::from_slice(body).unwrap();
        merge(current, &patch);
        (200, current.to_string())
    }

    fn delete(&mut self, path: &str) -> (u16, String) {
        let Some(object) = self.objects.remove(path) else {
            return status(404, "NotFound", &format!("{path} not found"));
        };
        if let Some(ns) = path.strip_prefix("/api/v1/namespaces/") {
            let inside = format!("/namespaces/{ns}/");
            self.objects.retain(|key, _| !key.contains(&inside));
        }
        (200, object.to_string())
    }

    fn proxy_status(&self, path: &str) -> (u16, String) {
        let ns = Self::namespace_of(path).unwrap_or_default();
        if !path.ends_with("/services/egress:3128/proxy/status") {
            return status(404, "NotFound", "no such service port");
        }
        let version = match self.proxy {
            Proxy::Follows => {
                let key = format!("/api/v1/namespaces/{ns}/configmaps/egress-policy");
                match self.objects.get(&key) {
                    Some(map) => {
                        version_of(map["data"]["policy.json"].as_str().unwrap_or_default())
                    }
                    None => return status(503, "ServiceUnavailable", "no endpoints"),
                }
            }
            Proxy::Stuck => self.started_version.get(ns).cloned().unwrap_or_default(),
        };
        (200, json!({"policy_version": version}).to_string())
    }

    /// The request log without the polling GETs of pods, for order checks.
    pub fn writes(&self) -> Vec<String> {
        self.log
            .iter()
            .filter(|line| !line.starts_with("GET "))
            .cloned()
            .collect()
    }
}
