//! The smart-HTTP front the agent talks to: routing, the fetch and push
//! handlers, and the accept loop.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::Error;
use crate::audit::{AuditEntry, AuditLog, Operation};
use crate::config::GateConfig;
use crate::hook::{HOOK_DIR_ENV, HookChannel};
use crate::mirror::Mirror;
use crate::push;
use crate::service::{self, Service, ServiceInput};

/// Response body: small fixed bodies and streamed git output alike.
type GateBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// How long shutdown waits for pushes in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The running gate: its mirrors and audit log.
#[derive(Debug)]
struct Gate {
    mirrors: BTreeMap<String, Arc<Mirror>>,
    audit: AuditLog,
}

impl Gate {
    async fn prepare(config: &GateConfig) -> Result<Self, Error> {
        std::fs::create_dir_all(&config.mirrors_dir).map_err(|source| Error::PrepareMirror {
            path: config.mirrors_dir.clone(),
            source,
        })?;
        let audit = AuditLog::open(config.audit_log.as_deref())?;
        let mut mirrors = BTreeMap::new();
        for upstream in &config.upstreams {
            let mirror = Mirror::prepare(&config.mirrors_dir, upstream.clone()).await?;
            mirrors.insert(upstream.name.clone(), Arc::new(mirror));
        }
        Ok(Self { mirrors, audit })
    }

    fn names(&self) -> String {
        self.mirrors.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Serves the gate on `listener` until `shutdown` completes, then waits
/// (bounded) for pushes in flight so no mirror is left mid-update.
pub async fn serve(
    config: GateConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let gate = Arc::new(Gate::prepare(&config).await?);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(error) => {
                        eprintln!("git-gate: accepting a connection failed: {error}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let gate = Arc::clone(&gate);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let gate = Arc::clone(&gate);
                        async move { Ok::<_, Infallible>(route(gate, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
    for mirror in gate.mirrors.values() {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, mirror.lock()).await;
    }
    Ok(())
}

/// What a request path asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Health,
    InfoRefs(&'a str),
    Rpc(&'a str, Service),
    Unknown,
}

fn repo_name(repo: &str) -> &str {
    repo.strip_suffix(".git").unwrap_or(repo)
}

fn parse_route(path: &str) -> Route<'_> {
    if path == "/healthz" {
        return Route::Health;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Route::Unknown;
    };
    if let Some(repo) = rest.strip_suffix("/info/refs") {
        return Route::InfoRefs(repo_name(repo));
    }
    for service in [Service::UploadPack, Service::ReceivePack] {
        if let Some(repo) = rest
            .strip_suffix(service.name())
            .and_then(|r| r.strip_suffix('/'))
        {
            return Route::Rpc(repo_name(repo), service);
        }
    }
    Route::Unknown
}

async fn route(gate: Arc<Gate>, request: Request<Incoming>) -> Response<GateBody> {
    let path = request.uri().path().to_owned();
    match (request.method(), parse_route(&path)) {
        (&Method::GET, Route::Health) => text(StatusCode::OK, "ok\n"),
        (&Method::GET, Route::InfoRefs(name)) => {
            let Some(mirror) = gate.mirrors.get(name).cloned() else {
                return unknown_upstream(&gate, name);
            };
            let query = request.uri().query().unwrap_or("");
            let service = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("service="))
                .and_then(Service::from_name);
            match service {
                Some(service) => info_refs(&gate, &mirror, service, &request).await,
                None => text(
                    StatusCode::FORBIDDEN,
                    "git-gate: only the smart HTTP protocol is served\n",
                ),
            }
        }
        (&Method::POST, Route::Rpc(name, service)) => {
            let Some(mirror) = gate.mirrors.get(name).cloned() else {
                return unknown_upstream(&gate, name);
            };
            match service {
                Service::UploadPack => upload_pack(&mirror, request),
                Service::ReceivePack => receive_pack(gate, mirror, request).await,
            }
        }
        (_, Route::Unknown) => text(StatusCode::NOT_FOUND, "git-gate: not found\n"),
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "git-gate: method not allowed\n",
        ),
    }
}

/// `GET /NAME.git/info/refs?service=…`: refresh the mirror from the
/// upstream, then advertise the mirror's refs.
async fn info_refs(
    gate: &Gate,
    mirror: &Mirror,
    service: Service,
    request: &Request<Incoming>,
) -> Response<GateBody> {
    let name = &mirror.upstream.name;
    if service == Service::ReceivePack && mirror.upstream.read_only {
        return advertisement_error(
            service,
            &format!("git-gate: upstream {name} is read_only: push refused"),
        );
    }
    let refreshed = {
        let _guard = mirror.lock().await;
        mirror.refresh().await
    };
    let changes = match refreshed {
        Ok(changes) => changes,
        Err(error) => {
            let message = format!("git-gate: fetching from upstream {name} failed: {error}");
            gate.audit.record(
                &AuditEntry::now(name, Operation::Fetch, vec![], "error").with_detail(&message),
            );
            return advertisement_error(service, &message);
        }
    };
    if service == Service::UploadPack {
        gate.audit
            .record(&AuditEntry::now(name, Operation::Fetch, changes, "ok"));
    }
    let protocol = git_protocol(request);
    let mut command = service.command(&mirror.path, true);
    let mut prefix = service::advertisement_header(service);
    if let Some(protocol) = &protocol {
        command.env("GIT_PROTOCOL", protocol);
        // Protocol v2 answers without the v0 service header, as git-http-backend does.
        if protocol.split(':').any(|part| part == "version=2") {
            prefix = Bytes::new();
        }
    }
    match service::spawn(command, prefix, None) {
        Ok((body, _done)) => git_response(
            &format!("application/x-{}-advertisement", service.name()),
            body.boxed_unsync(),
        ),
        Err(error) => internal_error(&error),
    }
}

/// `POST /NAME.git/git-upload-pack`: served straight from the mirror.
fn upload_pack(mirror: &Mirror, request: Request<Incoming>) -> Response<GateBody> {
    let protocol = git_protocol(&request);
    let gzip = is_gzip(&request);
    let mut command = Service::UploadPack.command(&mirror.path, false);
    if let Some(protocol) = &protocol {
        command.env("GIT_PROTOCOL", protocol);
    }
    let input = ServiceInput {
        body: request.into_body(),
        gzip,
    };
    match service::spawn(command, Bytes::new(), Some(input)) {
        Ok((body, _done)) => {
            git_response("application/x-git-upload-pack-result", body.boxed_unsync())
        }
        Err(error) => internal_error(&error),
    }
}

/// `POST /NAME.git/git-receive-pack`: receive into the mirror under the
/// upstream's lock; the pre-receive hook hands the ref updates to the gate,
/// which checks the policy and pushes upstream before the mirror moves.
async fn receive_pack(
    gate: Arc<Gate>,
    mirror: Arc<Mirror>,
    request: Request<Incoming>,
) -> Response<GateBody> {
    if mirror.upstream.read_only {
        return text(
            StatusCode::FORBIDDEN,
            &format!(
                "git-gate: upstream {} is read_only: push refused\n",
                mirror.upstream.name
            ),
        );
    }
    let guard = mirror.lock().await;
    let mut hook = match HookChannel::create().await {
        Ok(hook) => hook,
        Err(error) => return internal_error(&error),
    };
    let gzip = is_gzip(&request);
    let mut command = Service::ReceivePack.command(&mirror.path, false);
    command.env(HOOK_DIR_ENV, hook.dir());
    let input = ServiceInput {
        body: request.into_body(),
        gzip,
    };
    let (body, done) = match service::spawn(command, Bytes::new(), Some(input)) {
        Ok(spawned) => spawned,
        Err(error) => return internal_error(&error),
    };
    tokio::spawn(async move {
        let _guard = guard;
        tokio::pin!(done);
        let (outcome, exit) = tokio::select! {
            exit = &mut done => (None, exit),
            request = hook.receive() => {
                let outcome = match request {
                    Ok(request) => {
                        let outcome = push::decide_and_forward(&mirror, &request).await;
                        // Audited before the agent hears the verdict.
                        gate.audit.record(&outcome.audit);
                        if let Err(error) = hook.reply(&outcome.messages, outcome.accept).await {
                            eprintln!("git-gate: {error}");
                        }
                        Some(outcome)
                    }
                    Err(error) => {
                        eprintln!("git-gate: {error}");
                        None
                    }
                };
                (outcome, (&mut done).await)
            }
        };
        let Some(outcome) = outcome else { return };
        let exit_ok = exit.as_ref().is_ok_and(|exit| exit.success());
        if outcome.upstream_failed || (outcome.accept && !exit_ok) {
            // The upstream and the mirror may disagree now: make the mirror
            // match the upstream again.
            if let Err(error) = mirror.refresh().await {
                eprintln!(
                    "git-gate: resynchronising mirror {}: {error}",
                    mirror.upstream.name
                );
            }
        }
        if outcome.accept && !exit_ok {
            let stderr = exit.map(|exit| exit.stderr).unwrap_or_default();
            let mut entry = outcome.audit;
            entry.result = "error".into();
            entry.detail = Some(format!(
                "pushed upstream, but receive-pack failed afterwards (mirror refreshed): {}",
                stderr.trim()
            ));
            gate.audit.record(&entry);
        }
    });
    git_response("application/x-git-receive-pack-result", body.boxed_unsync())
}

/// The `Git-Protocol` header, if it holds only what git itself sends.
fn git_protocol(request: &Request<Incoming>) -> Option<String> {
    let value = request.headers().get("git-protocol")?.to_str().ok()?;
    let safe = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b':' | b'.' | b'-' | b'_'));
    (safe && !value.is_empty()).then(|| value.to_owned())
}

fn is_gzip(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip"))
}

fn git_response(content_type: &str, body: GateBody) -> Response<GateBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(CONTENT_TYPE, value);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// An advertisement that carries only an error: git prints it as
/// `fatal: remote error: …`, so the agent learns why.
fn advertisement_error(service: Service, message: &str) -> Response<GateBody> {
    let mut body = service::advertisement_header(service).to_vec();
    body.extend_from_slice(&service::error_line(message));
    git_response(
        &format!("application/x-{}-advertisement", service.name()),
        full(Bytes::from(body)),
    )
}

fn unknown_upstream(gate: &Gate, name: &str) -> Response<GateBody> {
    text(
        StatusCode::NOT_FOUND,
        &format!(
            "git-gate: unknown upstream {name:?}; configured upstreams: {}\n",
            gate.names()
        ),
    )
}

fn internal_error(error: &Error) -> Response<GateBody> {
    eprintln!("git-gate: {error}");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("git-gate: {error}\n"),
    )
}

fn text(status: StatusCode, message: &str) -> Response<GateBody> {
    let mut response = Response::new(full(Bytes::from(message.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn full(bytes: Bytes) -> GateBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse_route("/healthz"), Route::Health);
        assert_eq!(parse_route("/p.git/info/refs"), Route::InfoRefs("p"));
        assert_eq!(parse_route("/p/info/refs"), Route::InfoRefs("p"));
        assert_eq!(
            parse_route("/p.git/git-upload-pack"),
            Route::Rpc("p", Service::UploadPack)
        );
        assert_eq!(
            parse_route("/p.git/git-receive-pack"),
            Route::Rpc("p", Service::ReceivePack)
        );
        assert_eq!(parse_route("/p.git/HEAD"), Route::Unknown);
        assert_eq!(parse_route("/p.gitgit-upload-pack"), Route::Unknown);
    }
}
