//! MCP over JSON-RPC 2.0: `initialize`, `ping`, `tools/list`, `tools/call`
//! and the three tools.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::Error;
use crate::config::PolicyView;
use crate::request::{
    MAX_QUESTION_CHARS, MAX_REASON_CHARS, Outcome, Request, RequestKind, validate_host,
    validate_methods, validate_text,
};
use crate::supervisor::{Supervisor, Waited};

/// Protocol versions this server speaks, newest first.
pub const SUPPORTED_PROTOCOL_VERSIONS: [&str; 2] = ["2025-06-18", "2025-03-26"];
/// The server name in `initialize`.
pub const SERVER_NAME: &str = "bot-bottle-supervise";

/// JSON-RPC error codes.
pub(crate) const PARSE_ERROR: i64 = -32700;
pub(crate) const INVALID_REQUEST: i64 = -32600;
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
pub(crate) const INVALID_PARAMS: i64 = -32602;

const INSTRUCTIONS: &str = "This server is the approval channel of your sandbox (a bot-bottle). \
Your network access goes through an egress proxy with an allowlist. Call `policy` to see what is \
allowed; when a host you need is blocked, call `request_egress` with a short reason and wait for \
the human's decision. Use `ask_human` for questions only the human can answer. Ask sparingly: \
only a few requests may be pending at once and only a few new ones a minute; asking again for \
something pending joins it.";

/// A JSON-RPC error.
#[derive(Debug)]
pub(crate) struct RpcError {
    code: i64,
    message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A JSON-RPC error response.
pub(crate) fn error_response(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// Handles one JSON-RPC message: `Some(response)` for a request, `None`
/// for a notification or a response from the client.
pub(crate) async fn handle_message(supervisor: &Supervisor, message: Value) -> Option<Value> {
    let Value::Object(object) = message else {
        return Some(error_response(
            Value::Null,
            INVALID_REQUEST,
            "a JSON-RPC message is an object",
        ));
    };
    let id = object.get("id").cloned();
    let id_ok = matches!(id, Some(Value::String(_) | Value::Number(_)));
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        let id = if id_ok {
            id.unwrap_or_default()
        } else {
            Value::Null
        };
        return Some(error_response(
            id,
            INVALID_REQUEST,
            "`jsonrpc` must be \"2.0\"",
        ));
    }
    let Some(method) = object.get("method") else {
        if object.contains_key("result") || object.contains_key("error") {
            // A response to a server request; this server sends none.
            return None;
        }
        let id = if id_ok {
            id.unwrap_or_default()
        } else {
            Value::Null
        };
        return Some(error_response(id, INVALID_REQUEST, "no `method`"));
    };
    let Some(id) = id else {
        // Notifications (`notifications/initialized`, `…/cancelled`) need no answer.
        return None;
    };
    if !id_ok {
        return Some(error_response(
            Value::Null,
            INVALID_REQUEST,
            "`id` must be a string or a number",
        ));
    }
    let Some(method) = method.as_str() else {
        return Some(error_response(
            id,
            INVALID_REQUEST,
            "`method` must be a string",
        ));
    };
    let params = object.get("params").cloned().unwrap_or(Value::Null);
    Some(match dispatch(supervisor, method, params).await {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => error_response(id, error.code, &error.message),
    })
}

async fn dispatch(supervisor: &Supervisor, method: &str, params: Value) -> Result<Value, RpcError> {
    match method {
        "initialize" => Ok(initialize(&params)),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": tools()})),
        "tools/call" => call_tool(supervisor, params).await,
        other => Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("method not found: {other}"),
        )),
    }
}

fn initialize(params: &Value) -> Value {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = asked
        .and_then(|v| SUPPORTED_PROTOCOL_VERSIONS.iter().find(|s| **s == v))
        .copied()
        .unwrap_or(SUPPORTED_PROTOCOL_VERSIONS[0]);
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {}},
        "serverInfo": {"name": SERVER_NAME, "version": env!("CARGO_PKG_VERSION")},
        "instructions": INSTRUCTIONS,
    })
}

/// The tool list with input schemas.
pub(crate) fn tools() -> Value {
    let timeout = json!({
        "type": "integer",
        "minimum": 0,
        "description": "Wait at most this many seconds for the decision (the sidecar caps it). \
                        0 only checks whether the human has decided."
    });
    json!([
        {
            "name": "request_egress",
            "title": "Ask the human to allow a host",
            "description": "Ask the human to allow network access to a host the bottle's egress \
                policy blocks, and wait for the decision. On approval the policy has been changed: \
                retry your request. Asking again for a host already pending joins that request. \
                New requests are limited (a few pending at once, a few a minute): ask for what \
                the task needs, not for every host you can think of.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "host": {"type": "string", "description": "Host name (`docs.rs`) or `*.example.com` for all subdomains; no scheme, port or path."},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "TCP port, if one is needed (HTTPS is 443)."},
                    "methods": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "HTTP methods needed, e.g. [\"GET\"]; omit for any."},
                    "reason": {"type": "string", "maxLength": MAX_REASON_CHARS, "description": "Why the task needs this host; the human reads it."},
                    "timeout_secs": timeout,
                },
                "required": ["host", "reason"],
                "additionalProperties": false,
            },
        },
        {
            "name": "ask_human",
            "title": "Ask the human a question",
            "description": "Ask the human a question and wait for the answer.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "question": {"type": "string", "maxLength": MAX_QUESTION_CHARS, "description": "The question, self-contained."},
                    "timeout_secs": timeout,
                },
                "required": ["question"],
                "additionalProperties": false,
            },
        },
        {
            "name": "policy",
            "title": "Show the egress policy",
            "description": "Show the bottle's current egress policy: allowed hosts, ports, methods \
                and paths, which hosts get a credential added by the proxy (never the credential), \
                and whether DLP and SSRF protection are on.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false},
        },
    ])
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressArgs {
    host: String,
    port: Option<u16>,
    methods: Option<Vec<String>>,
    reason: String,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AskArgs {
    question: String,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

fn tool_result(text: String, structured: Option<Value>, is_error: bool) -> Value {
    let mut result = json!({
        "content": [{"type": "text", "text": text}],
        "isError": is_error,
    });
    if let Some(structured) = structured {
        result["structuredContent"] = structured;
    }
    result
}

fn tool_error(text: impl Into<String>) -> Value {
    tool_result(text.into(), None, true)
}

async fn call_tool(supervisor: &Supervisor, params: Value) -> Result<Value, RpcError> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::new(INVALID_PARAMS, "tools/call needs `name`"))?
        .to_owned();
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(args @ Value::Object(_)) => args.clone(),
        Some(_) => {
            return Err(RpcError::new(
                INVALID_PARAMS,
                "`arguments` must be an object",
            ));
        }
    };
    let parse_error = |e: serde_json::Error| tool_error(format!("{name}: invalid arguments: {e}"));
    Ok(match name.as_str() {
        "request_egress" => match serde_json::from_value::<EgressArgs>(arguments) {
            Ok(args) => request_egress(supervisor, args).await,
            Err(e) => parse_error(e),
        },
        "ask_human" => match serde_json::from_value::<AskArgs>(arguments) {
            Ok(args) => ask_human(supervisor, args).await,
            Err(e) => parse_error(e),
        },
        "policy" => match serde_json::from_value::<NoArgs>(arguments) {
            Ok(NoArgs {}) => policy(supervisor),
            Err(e) => parse_error(e),
        },
        other => {
            return Err(RpcError::new(
                INVALID_PARAMS,
                format!("unknown tool: {other}"),
            ));
        }
    })
}

fn wait_for(supervisor: &Supervisor, asked: Option<u64>) -> Duration {
    let cap = supervisor.config.decision_timeout_secs;
    Duration::from_secs(asked.map_or(cap, |secs| secs.min(cap)))
}

async fn request_egress(supervisor: &Supervisor, args: EgressArgs) -> Value {
    let host = match validate_host(&args.host) {
        Ok(host) => host,
        Err(reason) => {
            return tool_error(format!("request_egress: host `{}`: {reason}", args.host));
        }
    };
    if args.port == Some(0) {
        return tool_error("request_egress: port must be between 1 and 65535");
    }
    let methods = match args.methods.as_deref().map(validate_methods).transpose() {
        Ok(methods) => methods,
        Err(reason) => return tool_error(format!("request_egress: {reason}")),
    };
    if let Err(reason) = validate_text("reason", &args.reason, MAX_REASON_CHARS) {
        return tool_error(format!("request_egress: {reason}"));
    }
    let ask = Request {
        id: String::new(),
        bottle_slug: String::new(),
        created: 0,
        kind: RequestKind::Egress,
        host: Some(host),
        port: args.port,
        methods,
        reason: Some(args.reason),
        question: None,
    };
    let timeout = wait_for(supervisor, args.timeout_secs);
    match supervisor.ask(ask, timeout).await {
        Ok((request, waited)) => outcome_result(supervisor, &request, waited, timeout),
        Err(error) => queue_error("request_egress", "the request", &error),
    }
}

async fn ask_human(supervisor: &Supervisor, args: AskArgs) -> Value {
    if let Err(reason) = validate_text("question", &args.question, MAX_QUESTION_CHARS) {
        return tool_error(format!("ask_human: {reason}"));
    }
    let ask = Request {
        id: String::new(),
        bottle_slug: String::new(),
        created: 0,
        kind: RequestKind::Question,
        host: None,
        port: None,
        methods: None,
        reason: None,
        question: Some(args.question),
    };
    let timeout = wait_for(supervisor, args.timeout_secs);
    match supervisor.ask(ask, timeout).await {
        Ok((request, waited)) => outcome_result(supervisor, &request, waited, timeout),
        Err(error) => queue_error("ask_human", "the question", &error),
    }
}

/// The tool error for an ask that was not queued: a limit says so plainly
/// (with `structuredContent.outcome` `refused`), anything else is a failure.
fn queue_error(tool: &str, what: &str, error: &Error) -> Value {
    match error {
        Error::TooManyPending { pending, max } => tool_result(
            format!("{tool}: {error}"),
            Some(
                json!({"outcome": "refused", "limit": "max_pending", "pending": pending, "max": max}),
            ),
            true,
        ),
        Error::TooManyRequests {
            count,
            max,
            retry_after_secs,
        } => tool_result(
            format!("{tool}: {error}"),
            Some(json!({
                "outcome": "refused", "limit": "max_requests_per_minute",
                "count": count, "max": max, "retry_after_secs": retry_after_secs,
            })),
            true,
        ),
        other => tool_error(format!("{tool}: {what} could not be queued: {other}")),
    }
}

fn target(request: &Request) -> String {
    let mut out = request.host.clone().unwrap_or_default();
    if let Some(port) = request.port {
        out.push_str(&format!(":{port}"));
    }
    if let Some(methods) = &request.methods {
        out.push_str(&format!(" ({})", methods.join(", ")));
    }
    out
}

fn outcome_result(
    supervisor: &Supervisor,
    request: &Request,
    waited: Waited,
    timeout: Duration,
) -> Value {
    let id = &request.id;
    let decision = match waited {
        Waited::Decided(decision) => decision,
        Waited::Pending | Waited::ShuttingDown => {
            let text = if matches!(waited, Waited::Pending) {
                format!(
                    "No decision within {} s (request {id} is still pending; ask again later: \
                     it expires if nobody asks about it for {} s).",
                    timeout.as_secs(),
                    supervisor.abandon_after().as_secs()
                )
            } else {
                format!(
                    "No decision: the supervise sidecar is shutting down (request {id} is still pending; ask again later)."
                )
            };
            let structured = json!({"outcome": "pending", "note": null, "request_id": id});
            return tool_result(text, Some(structured), false);
        }
    };
    let note = decision.note.as_deref();
    let note_part = note
        .map(|n| format!(" Note from the human: {n}"))
        .unwrap_or_default();
    let text = match (request.kind, decision.outcome) {
        (RequestKind::Egress, Outcome::Approved) => {
            let policy = match &decision.policy_version {
                Some(version) => format!(
                    " The bottle's egress policy now allows it (policy version {version}); retry your request."
                ),
                None => " Retry your request; call `policy` to see the current rules.".to_owned(),
            };
            format!(
                "Approved: the human allowed egress to {}.{note_part}{policy}",
                target(request)
            )
        }
        (RequestKind::Egress, _) => format!(
            "Denied: the human refused egress to {}.{note_part}",
            target(request)
        ),
        (RequestKind::Question, Outcome::Answered) => {
            format!("The human answered: {}", note.unwrap_or_default())
        }
        (RequestKind::Question, _) => format!("Denied: the human declined to answer.{note_part}"),
    };
    let mut structured = json!({
        "outcome": decision.outcome.as_str(),
        "note": note,
        "request_id": id,
    });
    if let Some(version) = &decision.policy_version {
        structured["policy_version"] = json!(version);
    }
    tool_result(text, Some(structured), false)
}

fn policy(supervisor: &Supervisor) -> Value {
    match PolicyView::load(&supervisor.config.policy_view) {
        Ok(view) => {
            let structured = serde_json::to_value(&view).unwrap_or_default();
            tool_result(view.to_text(), Some(structured), false)
        }
        Err(error) => tool_error(format!("policy: the policy view is unavailable: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialize_echoes_supported_versions() {
        for version in SUPPORTED_PROTOCOL_VERSIONS {
            let result = initialize(&json!({"protocolVersion": version}));
            assert_eq!(result["protocolVersion"], version);
        }
        let result = initialize(&json!({"protocolVersion": "2024-11-05"}));
        assert_eq!(result["protocolVersion"], "2025-06-18");
        assert_eq!(result["capabilities"], json!({"tools": {}}));
        assert_eq!(result["serverInfo"]["name"], "bot-bottle-supervise");
    }

    #[test]
    fn tool_schemas() {
        let tools = tools();
        let names: Vec<_> = tools
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["request_egress", "ask_human", "policy"]);
        for tool in tools.as_array().unwrap() {
            assert_eq!(tool["inputSchema"]["type"], "object");
            assert_eq!(tool["inputSchema"]["additionalProperties"], false);
        }
        assert_eq!(
            tools[0]["inputSchema"]["required"],
            json!(["host", "reason"])
        );
    }
}
