//! The rules a rendered bottle must follow: each test would fail if its rule broke.

use compose_render::compose::Service;
use compose_render::*;
use plan::Runtime;

use crate::{ENV_FILE_SECRET, SENTINELS, rendered};

fn env_value<'a>(service: &'a Service, name: &str) -> Option<&'a str> {
    service
        .environment
        .iter()
        .find_map(|entry| entry.strip_prefix(name)?.strip_prefix('='))
}

#[test]
fn agent_is_only_on_the_internal_network() {
    for (name, _, file) in rendered() {
        let agent = &file.services[AGENT_SERVICE];
        let networks: Vec<_> = agent.networks.keys().collect();
        assert_eq!(networks, [INTERNAL_NETWORK], "{name}");
        assert!(file.networks[INTERNAL_NETWORK].external, "{name}");
        assert!(file.networks[EGRESS_NETWORK].external, "{name}");
    }
}

#[test]
fn sidecars_get_only_the_networks_their_job_needs() {
    for (name, _, file) in rendered() {
        for (service, expected) in [
            (EGRESS_SERVICE, vec![EGRESS_NETWORK, INTERNAL_NETWORK]),
            (GIT_GATE_SERVICE, vec![EGRESS_NETWORK, INTERNAL_NETWORK]),
            (SUPERVISE_SERVICE, vec![INTERNAL_NETWORK]),
        ] {
            if let Some(service) = file.services.get(service) {
                let networks: Vec<_> = service.networks.keys().map(String::as_str).collect();
                assert_eq!(networks, expected, "{name}");
            }
        }
    }
}

#[test]
fn agent_proxy_dns_and_ca_point_at_the_bottle() {
    for (name, plan, file) in rendered() {
        let facts = LaunchFacts::preview(&plan);
        let agent = &file.services[AGENT_SERVICE];
        for var in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
            assert_eq!(
                env_value(agent, var),
                Some("http://egress:3128"),
                "{name} {var}"
            );
        }
        for var in ["NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"] {
            assert_eq!(env_value(agent, var), Some(AGENT_CA_CERT), "{name} {var}");
        }
        let no_proxy = env_value(agent, "NO_PROXY").unwrap();
        for sidecar in [GIT_GATE_SERVICE, SUPERVISE_SERVICE] {
            assert_eq!(
                no_proxy.contains(sidecar),
                file.services.contains_key(sidecar),
                "{name}: {no_proxy}"
            );
        }
        assert!(
            !no_proxy
                .split(',')
                .any(|h| h == EGRESS_SERVICE || h.starts_with('*') || h.starts_with('.'))
        );
        assert_eq!(agent.dns, std::slice::from_ref(&facts.egress_ip), "{name}");
        let egress = &file.services[EGRESS_SERVICE];
        assert_eq!(
            egress.networks[INTERNAL_NETWORK].ipv4_address.as_deref(),
            Some(facts.egress_ip.as_str()),
            "{name}"
        );
    }
}

#[test]
fn no_secret_value_is_ever_rendered() {
    let mut checked = 0;
    for (name, plan, file) in rendered() {
        let yaml = to_yaml(&file);
        for (_, secret) in SENTINELS {
            assert!(
                !yaml.contains(secret),
                "{name}: a secret is in the compose file"
            );
        }
        assert!(
            !yaml.contains(ENV_FILE_SECRET),
            "{name}: an env-file value is in the compose file"
        );
        // Every secret is a bare name, and its value is in the process env list.
        let process_env = compose_process_env(&plan);
        for (secret_name, _) in plan.env.secrets() {
            assert!(
                file.services[AGENT_SERVICE]
                    .environment
                    .contains(&secret_name.to_owned()),
                "{name}"
            );
            assert!(process_env.iter().any(|(n, _)| n == secret_name));
            checked += 1;
        }
        for (index, route) in plan.egress.routes.iter().enumerate() {
            let bare = route_secret_env(index);
            assert!(
                file.services[EGRESS_SERVICE].environment.contains(&bare),
                "{name}"
            );
            assert!(
                !file.services[AGENT_SERVICE]
                    .environment
                    .iter()
                    .any(|e| e.starts_with(&bare))
            );
            assert_eq!(
                env_value(&file.services[AGENT_SERVICE], &route.agent_env),
                Some(route.placeholder.as_str())
            );
            checked += 1;
        }
        // The upstream proxy's credential: the egress sidecar's, never the agent's.
        if let Some(proxy) = &plan.egress.upstream_proxy
            && let Some(credentials) = &proxy.credentials
        {
            let bare = sidecar_contract::egress::UPSTREAM_PROXY_SECRET_ENV.to_owned();
            assert!(
                file.services[EGRESS_SERVICE].environment.contains(&bare),
                "{name}"
            );
            for (service_name, service) in &file.services {
                if service_name != EGRESS_SERVICE {
                    assert!(
                        !service.environment.iter().any(|e| e.starts_with(&bare)),
                        "{name}: {service_name} gets the proxy credential"
                    );
                }
            }
            assert!(
                process_env
                    .iter()
                    .any(|(n, v)| *n == bare && v.expose() == credentials.expose())
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "the fixtures exercise too few secrets ({checked})"
    );
}

#[test]
fn every_service_is_labelled_and_hardened() {
    for (name, plan, file) in rendered() {
        for (service_name, service) in &file.services {
            assert_eq!(
                service.labels[LABEL_SLUG],
                plan.slug.as_str(),
                "{name}/{service_name}"
            );
            assert_eq!(
                service.labels[LABEL_AGENT], plan.agent.name,
                "{name}/{service_name}"
            );
            assert_eq!(
                service.labels[LABEL_ROLE], *service_name,
                "{name}/{service_name}"
            );
            assert_eq!(service.cap_drop, ["ALL"], "{name}/{service_name}");
            assert!(
                service
                    .security_opt
                    .contains(&"no-new-privileges:true".to_owned())
            );
            assert!(service.pids_limit.is_some(), "{name}/{service_name}");
            assert_eq!(service.init, Some(true));
            assert_eq!(
                service.logging,
                Some(bounded_logging()),
                "{name}/{service_name}: unbounded logs"
            );
            if service_name != AGENT_SERVICE {
                assert_eq!(
                    service
                        .sysctls
                        .get("net.ipv4.ip_forward")
                        .map(String::as_str),
                    Some("0"),
                    "{name}/{service_name}: a sidecar must not forward packets"
                );
                assert_eq!(
                    service.read_only,
                    Some(true),
                    "{name}/{service_name}: sidecar root must be read-only"
                );
                assert!(
                    service.cap_add.is_empty(),
                    "{name}/{service_name}: sidecars need no capability"
                );
                assert!(service.mem_limit.is_some() && service.healthcheck.is_some());
            }
        }
        let agent = &file.services[AGENT_SERVICE];
        assert!(
            !agent
                .cap_add
                .iter()
                .any(|c| c.starts_with("NET_") || c == "SYS_ADMIN"),
            "{name}"
        );
        assert_eq!(agent.mem_limit, plan.limits.memory_bytes);
        assert_eq!(agent.cpus, plan.limits.cpus);
        if let Some(pids) = plan.limits.pids {
            assert_eq!(agent.pids_limit, Some(pids));
        }
        match plan.tmp_tmpfs_bytes() {
            Some(bytes) => {
                assert_eq!(
                    agent.tmpfs,
                    [format!("/tmp:rw,exec,nosuid,nodev,size={bytes},mode=1777")],
                    "{name}"
                );
                // A preview engine has no quota; one that has gets the size.
                assert!(agent.storage_opt.is_empty(), "{name}");
                let facts = LaunchFacts {
                    writable_layer_quota: true,
                    ..LaunchFacts::preview(&plan)
                };
                let quota = render(&plan, &facts).services[AGENT_SERVICE]
                    .storage_opt
                    .clone();
                assert_eq!(quota.get("size"), Some(&bytes.to_string()), "{name}");
            }
            None => assert!(agent.tmpfs.is_empty() && agent.storage_opt.is_empty()),
        }
        // A project under /tmp keeps its directory: no tmpfs over it.
        if plan.limits.disk_bytes.is_some() {
            let mut under_tmp = plan.clone();
            under_tmp.agent.workdir = "/tmp/project".into();
            let facts = LaunchFacts::preview(&under_tmp);
            assert!(
                render(&under_tmp, &facts).services[AGENT_SERVICE]
                    .tmpfs
                    .is_empty()
            );
        }
        assert_eq!(
            agent.runtime.as_deref() == Some("runsc"),
            plan.runtime == Runtime::Runsc,
            "{name}"
        );
    }
}

#[test]
fn config_is_mounted_as_read_only_directories() {
    for (name, plan, file) in rendered() {
        let facts = LaunchFacts::preview(&plan);
        for (service_name, service) in &file.services {
            for volume in &service.volumes {
                assert_eq!(volume.kind, "bind");
                // The bottle's own state, or what its agent keeps across bottles.
                let agent_state =
                    compose_render::agent_state_dir(facts.state_root(), &plan.agent.name);
                assert!(
                    volume.source.starts_with(facts.state_dir.to_str().unwrap())
                        || (service_name == compose_render::AGENT_SERVICE
                            && volume.source.starts_with(agent_state.to_str().unwrap())
                            && !volume.read_only),
                    "{name}/{service_name}: {}",
                    volume.source
                );
                // Directories, never single files: a rename must be visible inside.
                assert!(!volume.target.ends_with(".json") && !volume.target.ends_with(".crt"));
                if volume.target.starts_with("/etc/bot-bottle") {
                    assert!(
                        volume.read_only,
                        "{name}/{service_name}: {} must be read-only",
                        volume.target
                    );
                }
            }
        }
        let agent = &file.services[AGENT_SERVICE];
        assert!(
            agent
                .volumes
                .iter()
                .all(|v| !v.source.contains("egress/config")),
            "{name}: the CA key dir must not reach the agent"
        );
    }
}

#[test]
fn dollar_signs_are_escaped_for_compose() {
    let (_, _, file) = rendered()
        .into_iter()
        .find(|(name, _, _)| name == "every-field-implementer")
        .unwrap();
    assert_eq!(
        env_value(&file.services[AGENT_SERVICE], "COST"),
        Some("$$5")
    );
}
