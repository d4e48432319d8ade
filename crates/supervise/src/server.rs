//! The HTTP front: `POST /mcp` (streamable HTTP, plain JSON responses),
//! `GET /healthz`, and the accept loop.

use crate::MCP_PATH;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Error;
use crate::config::SuperviseConfig;
use crate::mcp::{INVALID_REQUEST, PARSE_ERROR, error_response, handle_message};
use crate::request::random_hex;
use crate::supervisor::Supervisor;

/// Largest request body accepted on `/mcp`.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// The session header set on `initialize`.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// How long shutdown waits for connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the MCP endpoint on `listener` until `shutdown` completes. Calls
/// waiting for a decision then return "still pending", and connections
/// close (bounded by a short grace period).
pub async fn serve(
    config: SuperviseConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let (stop, stopped) = watch::channel(false);
    let supervisor = Arc::new(Supervisor::new(config, stopped.clone())?);
    let housekeeping = tokio::spawn(housekeeping(Arc::clone(&supervisor), stopped.clone()));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(error) => {
                        eprintln!("supervise: accepting a connection failed: {error}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let supervisor = Arc::clone(&supervisor);
                let mut stopped = stopped.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let supervisor = Arc::clone(&supervisor);
                        async move { Ok::<_, Infallible>(route(&supervisor, request).await) }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(30))
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    let stopping = tokio::select! {
                        _ = connection.as_mut() => false,
                        stop = stopped.wait_for(|stop| *stop) => {
                            drop(stop);
                            true
                        }
                    };
                    if stopping {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                });
            }
        }
    }
    let _ = stop.send(true);
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
    let _ = housekeeping.await;
    Ok(())
}

/// Expires abandoned requests (and audits counted refusals) every quarter of
/// the abandon window, between 100 ms and 10 s, until shutdown.
async fn housekeeping(supervisor: Arc<Supervisor>, mut stopped: watch::Receiver<bool>) {
    let every =
        (supervisor.abandon_after() / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let supervisor = Arc::clone(&supervisor);
        // File work off the async workers.
        let _ = tokio::task::spawn_blocking(move || supervisor.housekeeping()).await;
    }
}

type Body = Full<Bytes>;

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("JSON values serialize");
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn route(supervisor: &Supervisor, request: Request<Incoming>) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => plain(StatusCode::OK, "ok\n"),
        (&Method::POST, MCP_PATH) => {
            if !origin_allowed(request.headers().get(ORIGIN)) {
                return plain(
                    StatusCode::FORBIDDEN,
                    "supervise: cross-origin requests are refused\n",
                );
            }
            post_mcp(supervisor, request).await
        }
        (_, MCP_PATH) => {
            // No server-to-client stream (GET) and no session teardown (DELETE).
            let mut response = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "supervise: POST JSON-RPC messages to /mcp\n",
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            response
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "supervise: not found (the MCP endpoint is /mcp)\n",
        ),
    }
}

/// DNS-rebinding guard: browsers send `Origin`; MCP clients on the bottle's
/// network do not, or name the sidecar itself.
fn origin_allowed(origin: Option<&HeaderValue>) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or(origin);
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    matches!(host, "supervise" | "localhost" | "127.0.0.1" | "[::1]")
}

async fn post_mcp(supervisor: &Supervisor, request: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "supervise: request body larger than 1 MiB\n",
                );
            }
            return plain(
                StatusCode::BAD_REQUEST,
                "supervise: reading the request body failed\n",
            );
        }
    };
    let message: Value = match serde_json::from_slice(&body) {
        Ok(message) => message,
        Err(error) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &error_response(Value::Null, PARSE_ERROR, &format!("parse error: {error}")),
            );
        }
    };
    let initializes = |m: &Value| m.get("method").and_then(Value::as_str) == Some("initialize");
    let (reply, new_session) = match message {
        Value::Array(batch) => {
            if batch.is_empty() {
                let error = error_response(Value::Null, INVALID_REQUEST, "empty batch");
                return json_response(StatusCode::BAD_REQUEST, &error);
            }
            let new_session = batch.iter().any(initializes);
            let mut replies = Vec::new();
            for message in batch {
                replies.extend(handle_message(supervisor, message).await);
            }
            (
                (!replies.is_empty()).then_some(Value::Array(replies)),
                new_session,
            )
        }
        message => {
            let new_session = initializes(&message);
            (handle_message(supervisor, message).await, new_session)
        }
    };
    let Some(reply) = reply else {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::ACCEPTED;
        return response;
    };
    let mut response = json_response(StatusCode::OK, &reply);
    if new_session
        && let Ok(session) = random_hex::<16>()
        && let Ok(value) = HeaderValue::from_str(&session)
    {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(origin_allowed(None));
        for ok in [
            "http://supervise:8765",
            "http://localhost",
            "http://127.0.0.1:8765",
        ] {
            assert!(origin_allowed(Some(&HeaderValue::from_static(ok))), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "null",
            "http://supervise.evil.example",
        ] {
            assert!(
                !origin_allowed(Some(&HeaderValue::from_static(bad))),
                "{bad}"
            );
        }
    }
}
