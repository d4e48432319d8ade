//! The agent's own secret values (`secret: true` in the manifest's `env`) are guarded
//! by DLP like route credentials: refused everywhere but the hosts they may go to.

use std::collections::BTreeMap;

use egress::{Proxy, SecretSource};

use crate::support::*;

const APP_SECRET: &str = "app-secret-value-5f3c9a1e7b";
const APP_ENV: &str = "IT_GUARDED_0";

async fn start(may_send_to: &[&str]) -> (EchoUpstream, ProxyDir, Proxy) {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::https(&upstream_ca).await;
    let mut policy = standard_policy(&[upstream.port()], true);
    policy["guarded_env"] = serde_json::json!([
        {"name": "APP_SECRET", "secret_env": APP_ENV, "allowed_hosts": may_send_to}
    ]);
    let dir = ProxyDir::new(&upstream_ca, policy);
    let secrets = SecretSource::Map(BTreeMap::from([
        (TOKEN_ENV.to_owned(), REAL_TOKEN.to_owned()),
        (APP_ENV.to_owned(), APP_SECRET.to_owned()),
    ]));
    let proxy = Proxy::start_with_stdout_audit(dir.path(), secrets, false)
        .await
        .unwrap();
    (upstream, dir, proxy)
}

async fn post(proxy: &Proxy, dir: &ProxyDir, host: &str, port: u16, body: &str) -> RawResponse {
    https_via_proxy(
        proxy.local_addr(),
        host,
        port,
        &dir.bottle_ca.cert_pem,
        &format!(
            "POST /upload HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

#[tokio::test]
async fn a_secret_env_value_is_refused_where_it_may_not_go() {
    let (upstream, dir, proxy) = start(&["other.test"]).await;
    let port = upstream.port();
    for body in [
        format!("v={APP_SECRET}"),
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, APP_SECRET),
    ] {
        let response = post(&proxy, &dir, "upstream.test", port, &body).await;
        assert_eq!(response.status, 403, "{response:?}");
        assert!(
            response.body.contains("bottle-secret:APP_SECRET"),
            "{response:?}"
        );
    }
    assert!(!upstream.received(APP_SECRET.as_bytes()));
    // Where the manifest says it may go, it goes.
    let response = post(&proxy, &dir, "other.test", port, &format!("v={APP_SECRET}")).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(upstream.received(APP_SECRET.as_bytes()));
}

#[tokio::test]
async fn a_secret_env_value_without_hosts_goes_nowhere() {
    let (upstream, dir, proxy) = start(&[]).await;
    let port = upstream.port();
    for host in ["upstream.test", "other.test"] {
        let response = post(&proxy, &dir, host, port, &format!("v={APP_SECRET}")).await;
        assert_eq!(response.status, 403, "{host}: {response:?}");
    }
    assert!(!upstream.received(APP_SECRET.as_bytes()));
}
