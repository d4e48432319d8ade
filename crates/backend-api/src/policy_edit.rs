//! Runtime changes to a bottle's egress policy (`bottle egress allow|deny`, an
//! approved request): pure edits of the policy, the same on every backend. A
//! backend applies the result atomically and confirms the version the proxy runs.

use sidecar_contract::egress::EgressConfig;

use crate::error::{Error, Result};
use crate::types::PolicyChange;

/// The policy after `change`, or why the change makes no sense.
pub fn apply_change(mut config: EgressConfig, change: &PolicyChange) -> Result<EgressConfig> {
    match change {
        PolicyChange::Allow {
            host,
            port,
            methods,
        } => {
            // A host the manifest limits to some methods or paths is not widened by a
            // runtime change: a rule without those limits would lift them (and carry
            // the host's credential into any request).
            if config
                .allow
                .iter()
                .any(|r| &r.host == host && (r.methods.is_some() || r.path_prefixes.is_some()))
            {
                return Err(Error::BadPolicyChange(format!(
                    "{host} has method or path limits in the manifest; a runtime allow would lift them: change the manifest and restart instead"
                )));
            }
            if let Some(methods) = methods {
                let methods: Vec<String> = methods.iter().map(|m| m.to_ascii_uppercase()).collect();
                let rule = sidecar_contract::egress::AllowRule {
                    host: host.clone(),
                    ports: port.map(|p| vec![p]),
                    methods: Some(methods),
                    path_prefixes: None,
                };
                if config
                    .allow
                    .iter()
                    .any(|r| r.host == *host && r.methods.is_none())
                    || config.allow.contains(&rule)
                {
                    return Err(Error::AlreadyAllowed {
                        target: host.clone(),
                    });
                }
                config.allow.push(rule);
                return Ok(config);
            }
            let existing = config
                .allow
                .iter_mut()
                .find(|r| &r.host == host && r.methods.is_none() && r.path_prefixes.is_none());
            match (existing, port) {
                (Some(rule), Some(port)) => {
                    let ports = rule
                        .ports
                        .get_or_insert_with(|| sidecar_contract::egress::DEFAULT_PORTS.to_vec());
                    if ports.contains(port) {
                        return Err(Error::AlreadyAllowed {
                            target: format!("{host}:{port}"),
                        });
                    }
                    ports.push(*port);
                }
                (Some(rule), None) if rule.ports.is_none() => {
                    return Err(Error::AlreadyAllowed {
                        target: host.clone(),
                    });
                }
                (Some(rule), None) => rule.ports = None,
                (None, port) => config.allow.push(sidecar_contract::egress::AllowRule {
                    host: host.clone(),
                    ports: port.map(|p| vec![p]),
                    methods: None,
                    path_prefixes: None,
                }),
            }
        }
        PolicyChange::Deny { host, port } => {
            let before = config.allow.clone();
            match port {
                None => config.allow.retain(|r| &r.host != host),
                Some(port) => {
                    for rule in config.allow.iter_mut().filter(|r| &r.host == host) {
                        let ports = rule.ports.get_or_insert_with(|| {
                            sidecar_contract::egress::DEFAULT_PORTS.to_vec()
                        });
                        ports.retain(|p| p != port);
                    }
                    config
                        .allow
                        .retain(|r| r.ports.as_ref().is_none_or(|p| !p.is_empty()));
                }
            }
            if config.allow == before {
                return Err(Error::BadPolicyChange(format!(
                    "{host}{} is not allowed now: nothing to deny",
                    port.map(|p| format!(":{p}")).unwrap_or_default()
                )));
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_host_port;

    fn config(rules: &[(&str, Option<Vec<u16>>)]) -> EgressConfig {
        let json = serde_json::json!({
            "bottle_slug": "t-000000",
            "allow": rules.iter().map(|(h, p)| serde_json::json!({"host": h, "ports": p})).collect::<Vec<_>>(),
        });
        EgressConfig::from_json(json.to_string().as_bytes()).unwrap()
    }

    fn hosts(config: &EgressConfig) -> Vec<(String, Option<Vec<u16>>)> {
        config
            .allow
            .iter()
            .map(|r| (r.host.clone(), r.ports.clone()))
            .collect()
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            parse_host_port("Example.com").unwrap(),
            ("example.com".into(), None)
        );
        assert_eq!(
            parse_host_port("example.com:8443").unwrap(),
            ("example.com".into(), Some(8443))
        );
        assert_eq!(
            parse_host_port("*.example.com:443").unwrap(),
            ("*.example.com".into(), Some(443))
        );
        for bad in ["https://x.com", "x.com:0", "x.com:http", "*.com", "", "a/b"] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_adds_rules_and_ports() {
        let c = apply_change(
            config(&[]),
            &PolicyChange::Allow {
                host: "a.com".into(),
                port: None,
                methods: None,
            },
        )
        .unwrap();
        assert_eq!(hosts(&c), [("a.com".into(), None)]);
        let c = apply_change(
            config(&[("a.com", Some(vec![443]))]),
            &PolicyChange::Allow {
                host: "a.com".into(),
                port: Some(8443),
                methods: None,
            },
        )
        .unwrap();
        assert_eq!(hosts(&c), [("a.com".into(), Some(vec![443, 8443]))]);
        assert!(
            apply_change(
                config(&[("a.com", None)]),
                &PolicyChange::Allow {
                    host: "a.com".into(),
                    port: None,
                    methods: None,
                }
            )
            .is_err()
        );
        assert!(
            apply_change(
                config(&[("a.com", Some(vec![443]))]),
                &PolicyChange::Allow {
                    host: "a.com".into(),
                    port: Some(443),
                    methods: None,
                }
            )
            .is_err()
        );
    }

    #[test]
    fn deny_removes_rules_or_ports() {
        let c = apply_change(
            config(&[("a.com", None), ("b.com", None)]),
            &PolicyChange::Deny {
                host: "a.com".into(),
                port: None,
            },
        )
        .unwrap();
        assert_eq!(hosts(&c), [("b.com".into(), None)]);
        let c = apply_change(
            config(&[("a.com", None)]),
            &PolicyChange::Deny {
                host: "a.com".into(),
                port: Some(80),
            },
        )
        .unwrap();
        assert_eq!(hosts(&c), [("a.com".into(), Some(vec![443]))]);
        let c = apply_change(
            config(&[("a.com", Some(vec![443]))]),
            &PolicyChange::Deny {
                host: "a.com".into(),
                port: Some(443),
            },
        )
        .unwrap();
        assert!(hosts(&c).is_empty());
        assert!(
            apply_change(
                config(&[]),
                &PolicyChange::Deny {
                    host: "a.com".into(),
                    port: None,
                }
            )
            .is_err()
        );
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    fn restricted() -> EgressConfig {
        let json = serde_json::json!({
            "bottle_slug": "t-000000",
            "allow": [{"host": "api.github.com", "methods": ["GET"], "path_prefixes": ["/repos/"]}],
        });
        EgressConfig::from_json(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn runtime_allows_never_lift_manifest_limits() {
        for methods in [
            None,
            Some(vec!["GET".to_owned()]),
            Some(vec!["DELETE".to_owned()]),
        ] {
            let change = PolicyChange::Allow {
                host: "api.github.com".into(),
                port: Some(443),
                methods,
            };
            assert!(
                apply_change(restricted(), &change).is_err(),
                "{change:?} widened a limited host"
            );
        }
    }

    #[test]
    fn requested_methods_are_kept() {
        let change = PolicyChange::Allow {
            host: "docs.rs".into(),
            port: Some(443),
            methods: Some(vec!["get".into()]),
        };
        let config = apply_change(restricted(), &change).unwrap();
        let rule = config.allow.iter().find(|r| r.host == "docs.rs").unwrap();
        assert_eq!(rule.methods.as_deref(), Some(&["GET".to_owned()][..]));
        assert_eq!(rule.ports.as_deref(), Some(&[443][..]));
        assert!(
            apply_change(config, &change).is_err(),
            "the same rule twice"
        );
    }
}
