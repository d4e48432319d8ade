//! The transport: an HTTP/1.1 forward proxy. Absolute-form `http://`
//! requests are checked and forwarded; `CONNECT host:port` is checked against
//! the allowlist BEFORE any TLS, then intercepted with a leaf from the
//! bottle CA, and every inner request gets the full per-request policy
//! (method, path, Host consistency, DLP, routes, SSRF at connect time).
//! Origin-form `GET /healthz` and `GET /status` are answered locally.
//!
//! Placeholders never leave: whatever the DLP setting, the request line is
//! checked for the bottle's placeholders before DLP, the headers after the
//! route (if any) has set its header, and the body as it streams
//! ([`crate::placeholder`]); a hit is a 403 naming the agent's variable,
//! where it was and why the route did not replace it.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::audit::{AuditLog, AuditRecord, loggable_path};
use crate::body::{BodyFinding, BoxError, ScannedBody, UNSCANNABLE_BODY_RULE};
use crate::ca::LeafMinter;
use crate::config::Limits;
use crate::decode::{Coding, DecodeBound};
use crate::dlp::{Action, Finding};
use crate::live::{LivePolicy, SecretSource, policy_from_bytes, policy_version, read_policy};
use crate::path::NormalizedTarget;
use crate::placeholder::{Location, RequestContext, Unreplaced};
use crate::policy::{Decision, Denial, DenyKind, RequestTarget, normalize_host};
use crate::scrub::{ScrubAudit, UNSCANNABLE_RULE, prepare_route_request, scrub_response};
use crate::shard;
use crate::upstream::ConnectError;

/// The response body type the proxy hands to clients.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Shared by every connection of one proxy.
pub struct ProxyState {
    /// The config directory (for reloads).
    pub config_dir: PathBuf,
    /// The live policy; swapped atomically on reload.
    pub policy: ArcSwap<LivePolicy>,
    /// Leaf certificates for interception.
    pub minter: LeafMinter,
    /// The audit log (shared with the DNS sink).
    pub audit: Arc<AuditLog>,
    /// Limits fixed at start.
    pub limits: Limits,
    /// Where route secrets come from on reload.
    pub secrets: SecretSource,
    /// How many shards serve ([`crate::shard`]): each policy version gets a
    /// pooled upstream client per shard.
    pub shards: usize,
    /// Free client-connection slots (`limits.max_connections`), shared by
    /// every shard's accept loop.
    pub connection_slots: Arc<Semaphore>,
    /// Held while a reload reads, compiles and swaps, so SIGHUP and the file
    /// watch never interleave; holds the version last refused, so the watch
    /// reports a bad file once ([`crate::policy_watch`]).
    pub reloads: Mutex<Option<String>>,
}

impl ProxyState {
    /// Re-reads and swaps in the policy; on failure the old one stays.
    pub fn reload(&self) -> Result<String, crate::Error> {
        let mut refused = self.reloads.lock().unwrap_or_else(PoisonError::into_inner);
        match read_policy(&self.config_dir) {
            Ok(bytes) => self.swap_in(&bytes, &mut refused),
            Err(e) => Err(self.refuse(e)),
        }
    }

    /// Compiles `bytes` (the policy file's content) and swaps it in, with its
    /// audit line; on failure the old policy stays and `refused` records the
    /// version. The caller holds [`ProxyState::reloads`].
    pub(crate) fn swap_in(
        &self,
        bytes: &[u8],
        refused: &mut Option<String>,
    ) -> Result<String, crate::Error> {
        match policy_from_bytes(&self.config_dir, bytes, &self.secrets, self.shards) {
            Ok(policy) => {
                let version = policy.version.clone();
                self.policy.store(Arc::new(policy));
                *refused = None;
                let mut record = AuditRecord::now("reload", "reload");
                record.reason = format!("policy version {version}");
                self.audit.write(&record);
                Ok(version)
            }
            Err(e) => {
                *refused = Some(policy_version(bytes));
                Err(self.refuse(e))
            }
        }
    }

    fn refuse(&self, e: crate::Error) -> crate::Error {
        let mut record = AuditRecord::now("reload", "reload-failed");
        record.reason = format!("{e}; keeping policy version {}", self.policy.load().version);
        self.audit.write(&record);
        e
    }
}

fn text_response(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Held for as long as a client connection, or the tunnel it became, lives:
/// its slot under `limits.max_connections`, and its place in its shard's
/// count of live connections ([`crate::shard`]).
pub struct ConnectionGuard {
    _slot: OwnedSemaphorePermit,
    _live: Option<shard::Live>,
}

/// Serves proxy clients until `shutdown` flips to true: on this runtime when
/// `shards` is empty, else each accepted connection goes to the shard with
/// the fewest live connections, which serves it from then on.
pub async fn accept_loop(
    state: Arc<ProxyState>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    shards: Vec<shard::Inbox>,
) {
    let slots = state.connection_slots.clone();
    let mut turn = 0;
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                if shards.is_empty() {
                    let guard = ConnectionGuard {
                        _slot: permit,
                        _live: None,
                    };
                    tokio::spawn(serve_client(state.clone(), stream, Arc::new(guard)));
                    continue;
                }
                let inbox = shard::least_loaded(&shards, &mut turn);
                match stream.into_std() {
                    Ok(stream) => inbox.hand_over(stream, |live| ConnectionGuard {
                        _slot: permit,
                        _live: Some(live),
                    }),
                    Err(e) => eprintln!("egress: cannot hand a connection to a shard: {e}"),
                }
            }
            Err(e) => {
                eprintln!("egress: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_timeout_secs))
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
}

/// Serves one client connection (its requests, and the tunnels it opens).
pub(crate) async fn serve_client(
    state: Arc<ProxyState>,
    stream: TcpStream,
    permit: Arc<ConnectionGuard>,
) {
    let _ = stream.set_nodelay(true);
    let builder = http1_builder(&state.limits);
    let service_state = state.clone();
    let service = service_fn(move |req| {
        let state = service_state.clone();
        let permit = permit.clone();
        async move { Ok::<_, Infallible>(handle_client_request(state, permit, req).await) }
    });
    let _ = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

async fn handle_client_request(
    state: Arc<ProxyState>,
    permit: Arc<ConnectionGuard>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    if req.method() == Method::CONNECT {
        return handle_connect(state, permit, req).await;
    }
    let Some(authority) = req.uri().authority().cloned() else {
        return local_endpoint(&state, &req);
    };
    if req.uri().scheme_str() != Some("http") {
        return text_response(
            StatusCode::BAD_REQUEST,
            "bot-bottle egress: absolute-form requests must be http://; use CONNECT for https\n"
                .to_owned(),
        );
    }
    let host = normalize_host(authority.host());
    let port = authority.port_u16().unwrap_or(80);
    forward(&state, "http", host, port, req).await
}

fn local_endpoint(state: &ProxyState, req: &Request<Incoming>) -> Response<ProxyBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text_response(StatusCode::OK, "ok\n".to_owned()),
        (&Method::GET, "/status") => {
            let policy = state.policy.load();
            let body = serde_json::json!({
                "policy_version": policy.version,
                "loaded_at": policy.loaded_at,
            });
            let mut response = text_response(StatusCode::OK, format!("{body}\n"));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        _ => text_response(
            StatusCode::BAD_REQUEST,
            "bot-bottle egress: this is a forward proxy; send absolute-form requests or CONNECT \
             (local endpoints: GET /healthz, GET /status)\n"
                .to_owned(),
        ),
    }
}

fn authority_for_url(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn deny(
    state: &ProxyState,
    policy: &LivePolicy,
    mut record: AuditRecord,
    denial: &Denial,
    what: &str,
) -> Response<ProxyBody> {
    record.action = "deny";
    record.rule = denial.rule.clone();
    record.reason = denial.reason.clone();
    if denial.kind == DenyKind::Dlp {
        record.dlp = Some(denial.rule.clone());
    }
    state.audit.write(&record);
    let status = if denial.kind == DenyKind::BadRequest {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::FORBIDDEN
    };
    text_response(
        status,
        denial.response_body(policy.allow.bottle_slug(), what),
    )
}

async fn handle_connect(
    state: Arc<ProxyState>,
    permit: Arc<ConnectionGuard>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(authority) = req.uri().authority().cloned() else {
        return text_response(
            StatusCode::BAD_REQUEST,
            "bot-bottle egress: CONNECT needs host:port\n".to_owned(),
        );
    };
    let host = normalize_host(authority.host());
    let port = authority.port_u16().unwrap_or(443);
    let policy = state.policy.load_full();
    let mut record = AuditRecord::now("http", "allow");
    record.method = "CONNECT".to_owned();
    record.host = host.clone();
    record.port = port;
    let what = format!("CONNECT {}", authority_for_url(&host, port));
    match policy.allow.check_connect(&host, port) {
        Decision::Deny(denial) => {
            // A refused tunnel ends the client connection: nothing else can
            // follow a CONNECT on it.
            let mut response = deny(&state, &policy, record, &denial, &what);
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return response;
        }
        Decision::Allow { rule } => record.rule = rule,
    }
    // Data in the host name is refused before the tunnel opens (and before
    // any certificate is minted for the name).
    if policy.dlp.enabled()
        && let Some(finding) = policy.dlp.scan_host(&host)
        && finding.action == Action::Block
    {
        let denial = host_denial(&mut record, finding, &host, port);
        let mut response = deny(&state, &policy, record, &denial, "CONNECT [withheld]");
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return response;
    }
    let tls_config = match state.minter.server_config_for(&host) {
        Ok(config) => config,
        Err(e) => {
            record.action = "deny";
            record.reason = e.to_string();
            state.audit.write(&record);
            return text_response(StatusCode::BAD_GATEWAY, format!("bot-bottle egress: {e}\n"));
        }
    };
    record.reason = "tunnel opened for interception".to_owned();
    state.audit.write(&record);
    tokio::spawn(async move {
        let _permit = permit;
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(upgraded) => upgraded,
            Err(_) => return,
        };
        let handshake = TlsAcceptor::from(tls_config).accept(TokioIo::new(upgraded));
        let tls = match tokio::time::timeout(
            Duration::from_secs(state.limits.header_timeout_secs),
            handshake,
        )
        .await
        {
            Ok(Ok(tls)) => tls,
            _ => return,
        };
        let builder = http1_builder(&state.limits);
        let service_state = state.clone();
        let service = service_fn(move |req| {
            let state = service_state.clone();
            let host = host.clone();
            async move { Ok::<_, Infallible>(handle_intercepted(state, host, port, req).await) }
        });
        let _ = builder.serve_connection(TokioIo::new(tls), service).await;
    });
    Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    )
}

/// Parses a Host header or URI authority into (normalized host, port).
fn split_host_port(value: &str, default_port: u16) -> Option<(String, u16)> {
    let authority: hyper::http::uri::Authority = value.parse().ok()?;
    Some((
        normalize_host(authority.host()),
        authority.port_u16().unwrap_or(default_port),
    ))
}

async fn handle_intercepted(
    state: Arc<ProxyState>,
    host: String,
    port: u16,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let mut claimed = Vec::new();
    if let Some(value) = req.headers().get(header::HOST) {
        claimed.push(value.to_str().ok().and_then(|v| split_host_port(v, 443)));
    }
    if let Some(authority) = req.uri().authority() {
        claimed.push(split_host_port(authority.as_str(), 443));
    }
    if claimed
        .iter()
        .any(|c| c.as_ref() != Some(&(host.clone(), port)))
    {
        let policy = state.policy.load_full();
        let mut record = AuditRecord::now("http", "deny");
        record.method = req.method().to_string();
        record.host = host.clone();
        record.port = port;
        let denial = Denial::new(
            DenyKind::BadRequest,
            "host-mismatch",
            format!("the request's Host does not match the CONNECT target {host}:{port}"),
            &host,
            port,
        );
        return deny(
            &state,
            &policy,
            record,
            &denial,
            &format!("{} in tunnel to {host}", req.method()),
        );
    }
    forward(&state, "https", host, port, req).await
}

/// Headers that describe one hop and must not be forwarded.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
    headers.remove("keep-alive");
}

fn find_connect_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a ConnectError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<ConnectError>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut current = error.source();
    while let Some(e) = current {
        parts.push(e.to_string());
        current = e.source();
    }
    parts.join(": ")
}

async fn forward(
    state: &ProxyState,
    scheme: &str,
    host: String,
    port: u16,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let policy = state.policy.load_full();
    let method = req.method().clone();
    let authority = authority_for_url(&host, port);
    // One spelling per path (`crate::path`): the allowlist, the routes, the
    // placeholder guard, DLP and the upstream all see the normalised target;
    // a path servers could read in more than one way is refused here (400).
    let raw_target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let path_and_query = match NormalizedTarget::parse(raw_target) {
        Ok(target) => target,
        Err(refusal) => {
            let mut record = AuditRecord::now("http", "deny");
            record.method = method.to_string();
            record.host = host.clone();
            record.port = port;
            record.path = loggable_path(raw_target);
            let raw_path = raw_target.split('?').next().unwrap_or("");
            let what = format!("{method} {scheme}://{authority}{raw_path}");
            let denial = Denial::refused_path(&refusal, &host, port);
            return deny(state, &policy, record, &denial, &what);
        }
    };
    let path_only = path_and_query.path().to_owned();
    let mut what = format!("{method} {scheme}://{authority}{path_only}");
    let mut record = AuditRecord::now("http", "allow");
    record.method = method.to_string();
    record.host = host.clone();
    record.port = port;
    record.path = loggable_path(&path_and_query);

    let target = RequestTarget {
        host: &host,
        port,
        method: method.as_str(),
        path: &path_and_query,
    };
    match policy.allow.check_request(&target) {
        Decision::Deny(denial) => return deny(state, &policy, record, &denial, &what),
        Decision::Allow { rule } => record.rule = rule,
    }
    // TRACE echoes the request, injected credentials included, back to the agent.
    if matches!(method.as_str(), "TRACE" | "TRACK") {
        let denial = Denial::new(
            DenyKind::BadRequest,
            "trace-refused",
            "TRACE would echo the request (and any injected credential) back to the client",
            &host,
            port,
        );
        return deny(state, &policy, record, &denial, &what);
    }
    // Upgraded connections (WebSocket) would carry frames this proxy does not scan
    // for secrets: refuse them plainly rather than pass them unscanned.
    if req.headers().contains_key(header::UPGRADE) {
        let denial = Denial::new(
            DenyKind::BadRequest,
            "upgrade-unsupported",
            "protocol upgrades (WebSocket) are not supported: their frames could not be scanned for secrets",
            &host,
            port,
        );
        return deny(state, &policy, record, &denial, &what);
    }
    // Credentials are only ever injected into TLS-protected requests.
    let route_index = policy
        .routes
        .iter()
        .position(|r| scheme == "https" && r.applies_to(&host, &path_only));
    let route = route_index.map(|i| &policy.routes[i]);
    let placeholder_ctx = RequestContext {
        host: &host,
        https: scheme == "https",
        applied_route: route_index,
    };

    // Placeholders never leave, DLP or not: the request line first.
    if let Some(unreplaced) = policy
        .placeholders
        .check_url(&placeholder_ctx, &path_and_query)
    {
        if unreplaced.location == Location::Host {
            record.host = "[withheld: placeholder in host]".to_owned();
            what = format!("{method} {scheme}://[withheld]");
        } else {
            what = format!("{method} {scheme}://{authority}/[withheld]");
        }
        record.path = "[withheld: placeholder in url]".to_owned();
        return deny_placeholder(state, &policy, record, &unreplaced, &host, port, &what);
    }

    // DLP findings on a host in `audit` mode: logged with the request, which goes on.
    let mut audited: Option<Finding> = None;
    if policy.dlp.enabled() {
        if let Some(finding) = policy.dlp.scan_host(&host) {
            if finding.action == Action::Block {
                let denial = host_denial(&mut record, finding, &host, port);
                record.path = "[withheld]".to_owned();
                what = format!("{method} {scheme}://[withheld]");
                return deny(state, &policy, record, &denial, &what);
            }
            audited.get_or_insert(finding);
        }
        if let Some(finding) = policy.dlp.scan_url(&path_and_query, &host) {
            record.path = "[withheld: dlp finding in url]".to_owned();
            if finding.action == Action::Block {
                what = format!("{method} {scheme}://{authority}/[withheld]");
                let denial = Denial::new(
                    DenyKind::Dlp,
                    finding.rule,
                    "the URL carries a credential or encoded data",
                    &host,
                    port,
                );
                return deny(state, &policy, record, &denial, &what);
            }
            audited.get_or_insert(finding);
        }
        for (name, value) in req.headers() {
            if route.is_some_and(|r| r.header == *name) || is_hop_by_hop(name) {
                continue;
            }
            if let Some(finding) = policy
                .dlp
                .scan_header(name.as_str(), value.as_bytes(), &host)
            {
                if finding.action == Action::Audit {
                    audited.get_or_insert(finding);
                    continue;
                }
                let denial = Denial::new(
                    DenyKind::Dlp,
                    finding.rule,
                    format!("header {name} carries a credential"),
                    &host,
                    port,
                );
                return deny(state, &policy, record, &denial, &what);
            }
        }
        // A body DLP cannot decode is refused before any of it is sent.
        if let Coding::Unsupported(coding) = Coding::of(req.headers())
            && !req.body().is_end_stream()
        {
            let why = format!("the request body is encoded with `{coding}`");
            return deny(
                state,
                &policy,
                record,
                &unscannable_body(&host, port, &why),
                &what,
            );
        }
    }

    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    // Only whole answers, in codings the response scrubber can decode, may come
    // back from a route host.
    if policy.scrub.covers(&host) {
        prepare_route_request(&mut parts.headers);
    }
    let mut injected = None;
    if let Some(route) = route
        && let Some(value) = route.header_value()
    {
        parts.headers.insert(route.header.clone(), value);
        injected = Some(&route.header);
        record.reason = format!("credential injected into {}", route.header);
    }
    // The headers exactly as they would leave: no placeholder may remain.
    if let Some(unreplaced) =
        policy
            .placeholders
            .check_headers(&placeholder_ctx, &parts.headers, injected)
    {
        return deny_placeholder(state, &policy, record, &unreplaced, &host, port, &what);
    }
    parts.version = Version::HTTP_11;
    parts.uri = match format!("{scheme}://{authority}{path_and_query}").parse::<Uri>() {
        Ok(uri) => uri,
        Err(_) => {
            let denial = Denial::new(
                DenyKind::BadRequest,
                "bad-uri",
                "the request target is not a valid URI",
                &host,
                port,
            );
            return deny(state, &policy, record, &denial, &what);
        }
    };
    let coding = Coding::of(&parts.headers);
    let (body, finding_slot) = ScannedBody::new(body, policy.clone(), &host);
    let mut body = body.decoding(&coding);
    let timeout = Duration::from_secs(state.limits.response_timeout_secs);
    // The body's first scanned bytes (a body within the hold-back window: all
    // of it) before the upstream hears of the request: a body refused there
    // costs the upstream nothing, not even the request's head.
    let outcome = match tokio::time::timeout(timeout, body.scan_ahead()).await {
        Ok(Ok(())) => {
            let upstream_request = Request::from_parts(parts, body);
            match tokio::time::timeout(timeout, policy.client().request(upstream_request)).await {
                Ok(Ok(response)) => Outcome::Answered(response),
                Ok(Err(error)) => Outcome::Failed(Failure::Upstream(error)),
                Err(_) => Outcome::TimedOut,
            }
        }
        Ok(Err(error)) => Outcome::Failed(Failure::Body(error)),
        Err(_) => Outcome::TimedOut,
    };
    let mut body_finding = finding_slot.lock().ok().and_then(|mut slot| slot.take());
    if let Some(BodyFinding::Audited(finding)) = &body_finding {
        audited.get_or_insert(finding.clone());
        body_finding = None;
    }
    if let Some(finding) = &audited {
        note_audited(&mut record, finding);
    }
    match outcome {
        Outcome::Answered(mut response) => {
            strip_hop_by_hop(response.headers_mut());
            if policy.scrub.covers(&host) {
                return scrubbed_response(state, &policy, record, response, &method, &what);
            }
            state.audit.write(&record);
            response.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed())
        }
        Outcome::Failed(failure) => {
            let fate = match failure {
                Failure::Upstream(_) => "the upstream request was aborted",
                Failure::Body(_) => "nothing was sent upstream",
            };
            match body_finding {
                Some(BodyFinding::Dlp(finding)) => {
                    let denial = Denial::new(
                        DenyKind::Dlp,
                        finding.rule,
                        format!("the request body carries a credential; {fate}"),
                        &host,
                        port,
                    );
                    return deny(state, &policy, record, &denial, &what);
                }
                Some(BodyFinding::Unscannable(why)) => {
                    return deny(
                        state,
                        &policy,
                        record,
                        &unscannable_body(&host, port, &why),
                        &what,
                    );
                }
                Some(BodyFinding::Placeholder(id, location)) => {
                    let mut unreplaced =
                        policy.placeholders.explain(id, location, &placeholder_ctx);
                    unreplaced.why.push_str("; ");
                    unreplaced.why.push_str(fate);
                    return deny_placeholder(
                        state,
                        &policy,
                        record,
                        &unreplaced,
                        &host,
                        port,
                        &what,
                    );
                }
                Some(BodyFinding::Audited(_)) | None => {}
            }
            let error = match failure {
                Failure::Upstream(error) => error,
                // The client's body failed (not a finding): nothing was sent.
                Failure::Body(error) => {
                    record.action = "deny";
                    record.rule = "client-body-error".to_owned();
                    record.reason = error.to_string();
                    state.audit.write(&record);
                    return text_response(
                        StatusCode::BAD_REQUEST,
                        format!("bot-bottle egress: {what}: the request body failed: {error}\n"),
                    );
                }
            };
            if let Some(ConnectError::Ssrf { block, .. }) = find_connect_error(&error) {
                let denial = Denial::new(
                    DenyKind::Ssrf,
                    format!("ssrf:{}", block.class),
                    format!(
                        "{host} resolves to {} ({}), an internal address",
                        block.address, block.class
                    ),
                    &host,
                    port,
                );
                return deny(state, &policy, record, &denial, &what);
            }
            let reason = error_chain(&error);
            record.action = "deny";
            record.rule = "upstream-error".to_owned();
            record.reason = reason.clone();
            state.audit.write(&record);
            text_response(
                StatusCode::BAD_GATEWAY,
                format!("bot-bottle egress: upstream error: {reason}\n"),
            )
        }
        Outcome::TimedOut => {
            record.action = "deny";
            record.rule = "upstream-timeout".to_owned();
            record.reason = format!("no response within {}s", timeout.as_secs());
            state.audit.write(&record);
            text_response(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "bot-bottle egress: {what}: no response within {}s\n",
                    timeout.as_secs()
                ),
            )
        }
    }
}

/// How a forwarded request ended.
enum Outcome {
    /// The upstream answered.
    Answered(Response<Incoming>),
    /// The request failed.
    Failed(Failure),
    /// The body or the answer did not come within the response timeout.
    TimedOut,
}

/// Where a forwarded request failed.
enum Failure {
    /// At the upstream, or midway (a body stopped while streaming aborts it).
    Upstream(hyper_util::client::legacy::Error),
    /// While the body was read ahead, before the upstream heard of the request:
    /// a finding (left in the slot) or the client's own body error.
    Body(BoxError),
}

/// The refusal of a host name that carries data: the audit record withholds the
/// name (it is what would leak).
fn host_denial(record: &mut AuditRecord, finding: Finding, host: &str, port: u16) -> Denial {
    record.host = "[withheld: dlp finding in host]".to_owned();
    Denial::new(
        DenyKind::Dlp,
        finding.rule,
        "the host name carries encoded or random data",
        host,
        port,
    )
}

/// Writes an audit-mode DLP finding into the request's audit line (the
/// rule and its severity, never the matched bytes).
fn note_audited(record: &mut AuditRecord, finding: &Finding) {
    record.dlp = Some(finding.rule.clone());
    let note = format!(
        "dlp audit mode: rule {} ({}) let through",
        finding.rule,
        finding.severity.as_str()
    );
    if record.reason.is_empty() {
        record.reason = note;
    } else {
        record.reason = format!("{}; {note}", record.reason);
    }
}

/// The refusal of a request body DLP cannot decode to scan.
fn unscannable_body(host: &str, port: u16, why: &str) -> Denial {
    Denial::new(
        DenyKind::BadRequest,
        UNSCANNABLE_BODY_RULE,
        format!(
            "{why}; DLP scans request bodies sent as is, gzip or deflate (decoded up to {}), and \
             refuses what it cannot scan: send the body uncompressed",
            DecodeBound::REQUEST.describe()
        ),
        host,
        port,
    )
}

/// A response from a credential route's host: scrubbed of the routes' real
/// secrets as it streams ([`crate::scrub`]), or refused with a 502 when it
/// cannot be scanned (a coding the proxy cannot decode).
fn scrubbed_response(
    state: &ProxyState,
    policy: &LivePolicy,
    mut record: AuditRecord,
    response: Response<Incoming>,
    method: &Method,
    what: &str,
) -> Response<ProxyBody> {
    let status = response.status();
    let bodiless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let audit = ScrubAudit {
        log: state.audit.clone(),
        record: record.clone(),
    };
    match scrub_response(&policy.scrub, response, bodiless, Some(audit)) {
        Ok(response) => {
            state.audit.write(&record);
            response.map(|b| b.boxed())
        }
        Err(unscannable) => {
            record.action = "deny";
            record.rule = UNSCANNABLE_RULE.to_owned();
            record.reason = format!("{unscannable}; the response was refused");
            state.audit.write(&record);
            text_response(StatusCode::BAD_GATEWAY, unscannable.response_body(what))
        }
    }
}

/// Refuses a request that would have carried a placeholder out.
fn deny_placeholder(
    state: &ProxyState,
    policy: &LivePolicy,
    record: AuditRecord,
    unreplaced: &Unreplaced,
    host: &str,
    port: u16,
    what: &str,
) -> Response<ProxyBody> {
    let denial = Denial::new(
        DenyKind::Placeholder,
        unreplaced.rule(),
        unreplaced.reason(),
        host,
        port,
    );
    deny(state, policy, record, &denial, what)
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "proxy-connection"
            | "keep-alive"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}
