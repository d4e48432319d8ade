//! The rules a bottle on Kubernetes must follow.

use backend_k8s::names::*;
use backend_k8s::render::NON_PUBLIC_V4;
use backend_k8s::{ClusterFacts, Materials, Reveal, render};
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use plan::REDACTED;
use sidecar_contract::layout::*;

use crate::{ENV_FILE_SECRET, SENTINELS, rendered};

fn spec(pod: &Pod) -> &PodSpec {
    pod.spec.as_ref().unwrap()
}

fn name_of(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap()
}

/// Every Secret a pod reads, by volume or by environment.
fn secrets_read_by(pod: &Pod) -> Vec<String> {
    let spec = spec(pod);
    let mut names = Vec::new();
    for volume in spec.volumes.iter().flatten() {
        if let Some(secret) = &volume.secret {
            names.extend(secret.secret_name.clone());
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(secret) = &source.secret {
                names.push(secret.name.clone());
            }
        }
    }
    for container in &spec.containers {
        for var in container.env.iter().flatten() {
            if let Some(key) = var
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                names.push(key.name.clone());
            }
        }
        for from in container.env_from.iter().flatten() {
            names.extend(from.secret_ref.as_ref().map(|s| s.name.clone()));
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn printed_objects_hold_no_secret_value() {
    for (name, _, objects) in rendered() {
        let yaml = objects.to_yaml();
        for (var, value) in SENTINELS {
            assert!(!yaml.contains(value), "{name}: the value of {var} printed");
        }
        assert!(
            !yaml.contains(ENV_FILE_SECRET),
            "{name}: an env-file value printed"
        );
        for secret in &objects.secrets {
            for value in secret.string_data.iter().flat_map(|d| d.values()) {
                if secret.metadata.name.as_deref() != Some(EGRESS_CA_SECRET)
                    || value != "(minted per bottle at launch)"
                {
                    assert_eq!(value, REDACTED, "{name}: {:?}", secret.metadata.name);
                }
            }
        }
    }
}

#[test]
fn applied_objects_carry_the_real_credentials_in_secrets_only() {
    let (_, plan, _) = rendered()
        .into_iter()
        .find(|(_, plan, _)| !plan.egress.routes.is_empty())
        .expect("a fixture with a credential route");
    let objects = render(
        &plan,
        &ClusterFacts::preview(&plan),
        &Materials::preview(&plan),
        Reveal::ForApply,
    );
    let token = plan.egress.routes[0].token.expose();
    let credentials = objects
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(EGRESS_CREDENTIALS_SECRET))
        .unwrap();
    assert_eq!(
        credentials.string_data.as_ref().unwrap()[&route_secret_env(0)],
        token
    );
    let mut outside_secrets = objects.clone();
    outside_secrets.secrets.clear();
    assert!(!outside_secrets.to_yaml().contains(token));
}

#[test]
fn the_upstream_proxy_credential_reaches_the_egress_pod_only() {
    let (name, plan, _) = rendered()
        .into_iter()
        .find(|(_, plan, _)| {
            plan.egress
                .upstream_proxy
                .as_ref()
                .is_some_and(|p| p.credentials.is_some())
        })
        .expect("a fixture with an authenticated upstream proxy");
    let objects = render(
        &plan,
        &ClusterFacts::preview(&plan),
        &Materials::preview(&plan),
        Reveal::ForApply,
    );
    let credential = plan
        .egress
        .upstream_proxy
        .as_ref()
        .unwrap()
        .credentials
        .as_ref()
        .unwrap();
    let var = sidecar_contract::egress::UPSTREAM_PROXY_SECRET_ENV;
    let credentials = objects
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(EGRESS_CREDENTIALS_SECRET))
        .unwrap();
    assert_eq!(
        credentials.string_data.as_ref().unwrap()[var],
        credential.expose(),
        "{name}"
    );
    let env_names = |pod: &Pod| -> Vec<String> {
        spec(pod).containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| e.name.clone())
            .collect()
    };
    for pod in &objects.sidecar_pods {
        let has = env_names(pod).iter().any(|n| n == var);
        assert_eq!(
            has,
            name_of(pod).contains(EGRESS_SERVICE),
            "{name}: {}",
            name_of(pod)
        );
    }
    assert!(
        !env_names(&objects.agent).iter().any(|n| n == var),
        "{name}"
    );
    let mut outside_secrets = objects.clone();
    outside_secrets.secrets.clear();
    assert!(!outside_secrets.to_yaml().contains(credential.expose()));
}

#[test]
fn only_sidecars_read_the_sidecars_secrets() {
    for (name, _, objects) in rendered() {
        let agent = secrets_read_by(&objects.agent);
        assert!(
            agent
                .iter()
                .all(|s| s == backend_k8s::render::AGENT_ENV_SECRET),
            "{name}: the agent reads {agent:?}"
        );
        for pod in &objects.sidecar_pods {
            let read = secrets_read_by(pod);
            let allowed: &[&str] = match name_of(pod) {
                EGRESS_SERVICE => &[EGRESS_CA_SECRET, EGRESS_CREDENTIALS_SECRET],
                GIT_GATE_SERVICE => &[GIT_GATE_KEYS_SECRET],
                _ => &[],
            };
            assert!(
                read.iter().all(|s| allowed.contains(&s.as_str())),
                "{name}: {} reads {read:?}",
                name_of(pod)
            );
        }
    }
}

#[test]
fn no_pod_holds_an_api_token_or_gains_privileges() {
    for (name, _, objects) in rendered() {
        for pod in objects.sidecar_pods.iter().chain([&objects.agent]) {
            let spec = spec(pod);
            assert_eq!(spec.automount_service_account_token, Some(false), "{name}");
            assert_eq!(spec.enable_service_links, Some(false), "{name}");
            assert!(
                spec.host_network.is_none() && spec.host_pid.is_none(),
                "{name}"
            );
            let seccomp = spec
                .security_context
                .as_ref()
                .unwrap()
                .seccomp_profile
                .as_ref();
            assert_eq!(seccomp.unwrap().type_, "RuntimeDefault", "{name}");
            for container in &spec.containers {
                let context = container.security_context.as_ref().unwrap();
                assert_eq!(context.allow_privilege_escalation, Some(false), "{name}");
                assert_eq!(context.privileged, None, "{name}");
                let caps = context.capabilities.as_ref().unwrap();
                assert_eq!(
                    caps.drop.as_deref(),
                    Some(&["ALL".to_owned()][..]),
                    "{name}"
                );
            }
            for volume in spec.volumes.iter().flatten() {
                assert!(volume.host_path.is_none(), "{name}: a hostPath volume");
            }
        }
        for pod in &objects.sidecar_pods {
            let container = &spec(pod).containers[0];
            let context = container.security_context.as_ref().unwrap();
            assert_eq!(context.read_only_root_filesystem, Some(true), "{name}");
            assert!(
                context.capabilities.as_ref().unwrap().add.is_none(),
                "{name}"
            );
        }
    }
}

#[test]
fn the_agent_resolves_nothing_and_reaches_its_sidecars_by_pinned_addresses() {
    for (name, plan, objects) in rendered() {
        let facts = ClusterFacts::preview(&plan);
        let spec = spec(&objects.agent);
        assert_eq!(spec.dns_policy.as_deref(), Some("None"), "{name}");
        let dns = spec.dns_config.as_ref().unwrap();
        assert_eq!(
            dns.nameservers.as_deref(),
            Some(&[facts.egress_ip.clone()][..])
        );
        let aliases = spec.host_aliases.as_ref().unwrap();
        assert!(aliases.iter().any(|a| a.ip == facts.egress_ip
            && a.hostnames.as_deref() == Some(&[EGRESS_SERVICE.to_owned()][..])));
        let env = spec.containers[0].env.as_ref().unwrap();
        let proxy = env.iter().find(|v| v.name == "HTTPS_PROXY").unwrap();
        assert_eq!(
            proxy.value.as_deref(),
            Some(format!("http://{EGRESS_SERVICE}:{EGRESS_PROXY_PORT}").as_str())
        );
        assert_eq!(
            spec.runtime_class_name.is_some(),
            plan.runtime == plan::Runtime::Runsc,
            "{name}"
        );
    }
}

fn policy<'a>(objects: &'a backend_k8s::Manifests, name: &str) -> Option<&'a NetworkPolicy> {
    objects
        .network_policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
}

#[test]
fn everything_is_denied_unless_a_policy_allows_it() {
    for (name, _, objects) in rendered() {
        let deny = policy(&objects, DEFAULT_DENY_POLICY).expect("default deny");
        let spec = deny.spec.as_ref().unwrap();
        assert_eq!(
            spec.pod_selector.as_ref().unwrap(),
            &Default::default(),
            "{name}"
        );
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
        );
        assert!(spec.ingress.is_none() && spec.egress.is_none(), "{name}");
        // Created before anything that can run.
        assert_eq!(
            objects.network_policies[0].metadata.name.as_deref(),
            Some(DEFAULT_DENY_POLICY)
        );
    }
}

#[test]
fn the_agent_may_reach_only_its_sidecars() {
    for (name, _, objects) in rendered() {
        let agent = policy(&objects, AGENT_SERVICE)
            .unwrap()
            .spec
            .as_ref()
            .unwrap();
        for rule in agent.egress.iter().flatten() {
            for peer in rule.to.iter().flatten() {
                assert!(
                    peer.ip_block.is_none() && peer.namespace_selector.is_none(),
                    "{name}"
                );
                let role = &peer
                    .pod_selector
                    .as_ref()
                    .unwrap()
                    .match_labels
                    .as_ref()
                    .unwrap()[LABEL_ROLE];
                assert!(
                    [EGRESS_SERVICE, GIT_GATE_SERVICE, SUPERVISE_SERVICE].contains(&role.as_str()),
                    "{name}: the agent may reach {role}"
                );
            }
            assert!(rule.ports.is_some(), "{name}: a rule without ports");
        }
        // No policy other than the agent's own selects the agent for egress.
        for other in &objects.network_policies {
            let spec = other.spec.as_ref().unwrap();
            let selects_agent = spec
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .is_some_and(|labels| {
                    labels.get(LABEL_ROLE).map(String::as_str) == Some(AGENT_SERVICE)
                });
            if selects_agent {
                assert_eq!(
                    other.metadata.name.as_deref(),
                    Some(AGENT_SERVICE),
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn sidecars_reach_out_only_to_public_addresses_and_supervise_not_at_all() {
    for (name, _, objects) in rendered() {
        assert!(
            policy(&objects, &format!("{SUPERVISE_SERVICE}-out")).is_none(),
            "{name}"
        );
        for role in [EGRESS_SERVICE, GIT_GATE_SERVICE] {
            let Some(out) = policy(&objects, &format!("{role}-out")) else {
                continue;
            };
            let spec = out.spec.as_ref().unwrap();
            let all_v4 = spec
                .egress
                .iter()
                .flatten()
                .flat_map(|rule| rule.to.iter().flatten())
                .filter_map(|peer| peer.ip_block.as_ref())
                .find(|block| block.cidr == "0.0.0.0/0")
                .expect("a public IPv4 block");
            let except = all_v4.except.as_ref().unwrap();
            for range in NON_PUBLIC_V4 {
                assert!(
                    except.iter().any(|e| e == range),
                    "{name}: {role} may reach {range}"
                );
            }
            assert!(
                except.iter().any(|e| e == "169.254.0.0/16"),
                "metadata service"
            );
        }
    }
}

#[test]
fn ssh_ports_come_from_the_upstream_url() {
    use backend_k8s::render::ssh_port;
    assert_eq!(ssh_port("git@github.com:org/repo.git"), 22);
    assert_eq!(ssh_port("ssh://git@git.example:2222/org/repo.git"), 2222);
    assert_eq!(ssh_port("ssh://git@[2001:db8::1]:2200/repo"), 2200);
    assert_eq!(ssh_port("ssh://git.example/repo"), 22);
}

#[test]
fn names_round_trip() {
    assert_eq!(namespace("claude-1dcdaf"), "bot-bottle-claude-1dcdaf");
    assert_eq!(
        slug_of_namespace("bot-bottle-claude-1dcdaf"),
        Some("claude-1dcdaf")
    );
    assert_eq!(slug_of_namespace("bot-bottle-"), None);
    assert_eq!(slug_of_namespace("kube-system"), None);
}

#[test]
fn an_upstream_proxy_at_a_private_address_is_reachable_at_its_port_only() {
    let (_, plan, _) = rendered()
        .into_iter()
        .find(|(_, plan, _)| plan.egress.upstream_proxy.is_some())
        .expect("a fixture with an upstream proxy");
    let proxy_rules = |plan: &plan::BottlePlan| {
        let objects = render(
            plan,
            &ClusterFacts::preview(plan),
            &Materials::preview(plan),
            Reveal::Never,
        );
        let out = objects
            .network_policies
            .iter()
            .find(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.ends_with(&format!("{EGRESS_SERVICE}-out")))
            })
            .expect("the egress sidecar's outbound policy")
            .clone();
        out.spec
            .unwrap()
            .egress
            .unwrap()
            .into_iter()
            .filter(|rule| {
                rule.to.iter().flatten().any(|peer| {
                    peer.ip_block
                        .as_ref()
                        .is_some_and(|b| b.cidr.ends_with("/32") || b.cidr.ends_with("/128"))
                })
            })
            .map(|rule| {
                let cidrs: Vec<String> = rule
                    .to
                    .iter()
                    .flatten()
                    .filter_map(|p| p.ip_block.as_ref().map(|b| b.cidr.clone()))
                    .collect();
                let ports: Vec<String> = rule
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| format!("{:?}", p.port))
                    .collect();
                (cidrs, ports)
            })
            .collect::<Vec<_>>()
    };
    // By name: a NetworkPolicy cannot say it, so nothing beyond the public peers.
    assert!(proxy_rules(&plan).is_empty());
    let mut private = plan.clone();
    let proxy = private.egress.upstream_proxy.as_mut().unwrap();
    proxy.host = "10.1.2.3".to_owned();
    proxy.port = 3128;
    let rules = proxy_rules(&private);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].0, ["10.1.2.3/32"]);
    assert_eq!(rules[0].1, ["Some(Int(3128))"]);
}
