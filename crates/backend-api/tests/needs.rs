//! The pure needs layer over every valid fixture: what both backends hand the
//! sidecars.

// Tests are the caller: the fixtures crate reads files.
#![allow(clippy::disallowed_methods)]

use backend_api::needs::{self, EgressExtras};
use fixtures::{ENV_FILE_SECRET, SENTINELS, valid_plans};
use sidecar_contract::egress::EgressConfig;

#[test]
fn sidecar_configs_carry_names_of_secrets_never_their_values() {
    let mut gates = 0;
    for (name, plans) in valid_plans() {
        for plan in plans {
            let egress =
                needs::egress_config(&plan, &["10.9.0.0/24".into()], &EgressExtras::default());
            let mut text = String::from_utf8(needs::policy_bytes(&egress)).unwrap();
            if let Some(gate) = needs::git_gate(&plan) {
                gates += 1;
                text.push_str(&serde_json::to_string(&gate.config).unwrap());
            }
            if let Some(supervise) = needs::supervise_config(&plan) {
                text.push_str(&serde_json::to_string(&supervise).unwrap());
            }
            for (_, secret) in SENTINELS {
                assert!(
                    !text.contains(secret),
                    "{name}: a secret value in a sidecar config"
                );
            }
            assert!(!text.contains(ENV_FILE_SECRET), "{name}");
            for (index, route) in egress.routes.iter().enumerate() {
                assert_eq!(route.secret_env, format!("BOT_BOTTLE_ROUTE_{index}"));
            }
        }
    }
    assert!(gates > 0, "no fixture has a git gate");
}

#[test]
fn the_backends_internal_cidrs_are_exempt_from_ssrf_blocking_and_nothing_else_is_added() {
    for (_, plans) in valid_plans() {
        for plan in plans {
            let egress =
                needs::egress_config(&plan, &["10.9.0.0/24".into()], &EgressExtras::default());
            let mut expected = plan.egress.ssrf.exempt.clone();
            expected.push("10.9.0.0/24".into());
            assert_eq!(egress.ssrf.exempt_cidrs, expected);
            assert_eq!(egress.bottle_slug, plan.slug.to_string());
        }
    }
}

#[test]
fn keys_are_secret_0600_copies_and_known_hosts_are_not() {
    let gate = valid_plans()
        .into_iter()
        .flat_map(|(_, plans)| plans)
        .find_map(|plan| needs::git_gate(&plan))
        .expect("a fixture with a git gate");
    for file in &gate.files {
        if file.name.ends_with(".key") {
            assert!(file.secret && file.mode == 0o600, "{file:?}");
        } else {
            assert!(
                file.name.ends_with(".known_hosts") && !file.secret,
                "{file:?}"
            );
        }
    }
    for upstream in &gate.config.upstreams {
        assert!(
            upstream
                .key_path
                .starts_with(sidecar_contract::layout::SIDECAR_CONFIG_DIR)
        );
    }
}

#[test]
fn the_policy_file_round_trips_and_its_version_is_its_sha256() {
    let (_, plans) = valid_plans().into_iter().next().unwrap();
    let egress = needs::egress_config(&plans[0], &[], &EgressExtras::default());
    let bytes = needs::policy_bytes(&egress);
    assert_eq!(EgressConfig::from_json(&bytes).unwrap(), egress);
    let version = needs::policy_version(&bytes);
    assert_eq!(version.len(), 64);
    assert_eq!(
        needs::policy_version(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let view = needs::policy_view(&egress, version.clone());
    assert_eq!(view.version, version);
    assert_eq!(view.allow.len(), egress.allow.len());
    assert_eq!(view.credentials.len(), egress.routes.len());
}

#[test]
fn the_sidecar_passwd_names_the_state_owner() {
    assert!(needs::sidecar_passwd("1000:1001").contains("bottle:x:1000:1001:"));
    assert!(needs::sidecar_passwd("1000").contains("bottle:x:1000:0:"));
}

#[test]
fn the_upstream_proxy_reaches_the_sidecar_with_the_name_of_its_credential() {
    let plan = valid_plans()
        .into_iter()
        .flat_map(|(_, plans)| plans)
        .find(|plan| plan.egress.upstream_proxy.is_some())
        .expect("a fixture with an upstream proxy");
    let egress = needs::egress_config(&plan, &["10.9.0.0/24".into()], &EgressExtras::default());
    let proxy = egress.upstream_proxy.as_ref().unwrap();
    assert_eq!(proxy.host, "proxy.corp.example");
    assert_eq!(proxy.port, 3128);
    assert_eq!(
        proxy.credential_env.as_deref(),
        Some(sidecar_contract::egress::UPSTREAM_PROXY_SECRET_ENV)
    );
    assert_eq!(
        proxy.no_proxy,
        [".internal.example", "10.0.0.0/8", "localhost"]
    );
    let text = String::from_utf8(needs::policy_bytes(&egress)).unwrap();
    let credential = plan
        .egress
        .upstream_proxy
        .as_ref()
        .unwrap()
        .credentials
        .as_ref()
        .unwrap();
    assert!(!text.contains(credential.expose()));
    // Without a proxy, the policy file has no `upstream_proxy` key at all.
    let direct = valid_plans()
        .into_iter()
        .flat_map(|(_, plans)| plans)
        .find(|plan| plan.egress.upstream_proxy.is_none())
        .unwrap();
    let bytes = needs::policy_bytes(&needs::egress_config(
        &direct,
        &[],
        &EgressExtras::default(),
    ));
    assert!(!String::from_utf8(bytes).unwrap().contains("upstream_proxy"));
}
