//! The networks created containers still lack before a plain `docker start`.
//!
//! `bottle start` creates a bottle's containers (`compose up --no-start`) and
//! starts them all at once itself: compose's own start would wait for the
//! sidecars' healthchecks, at their 2 s interval, before it starts the agent.
//! Compose v2 creates each container on all its networks; the legacy v1 on its
//! first one only, and attaches the others at its own start. Those are attached
//! here as v1 would: with the service's name and aliases for Docker's DNS (the
//! agent finds `git-gate` by name) and the fixed address the file gives.

use compose_render::ComposeFile;

use crate::engine::{COMPOSE_SERVICE_LABEL, ContainerInfo, NetworkConnect};

/// Each network a container in `created` is not on though its service in `file`
/// asks for it. Containers of no service in `file` are left alone.
pub fn missing_networks(file: &ComposeFile, created: &[ContainerInfo]) -> Vec<NetworkConnect> {
    let mut connects = Vec::new();
    for container in created {
        let Some(service_name) = container.labels.get(COMPOSE_SERVICE_LABEL) else {
            continue;
        };
        let Some(service) = file.services.get(service_name) else {
            continue;
        };
        for (key, attachment) in &service.networks {
            let network = file
                .networks
                .get(key)
                .map_or(key.as_str(), |n| n.name.as_str());
            if container.networks.iter().any(|n| n == network) {
                continue;
            }
            let mut aliases = vec![service_name.clone()];
            // Compose also gives each container its short id as a name.
            aliases.extend(container.id.get(..12).map(str::to_owned));
            aliases.extend(attachment.aliases.iter().cloned());
            connects.push(NetworkConnect {
                container: container.id.clone(),
                network: network.to_owned(),
                aliases,
                ipv4_address: attachment.ipv4_address.clone(),
            });
        }
    }
    connects
}

#[cfg(test)]
mod tests {
    use super::*;
    use compose_render::compose::{Network, Service, ServiceNetwork};
    use std::collections::BTreeMap;

    fn file() -> ComposeFile {
        let network = |name: &str| Network {
            external: true,
            name: name.to_owned(),
        };
        let mut egress = Service::default();
        egress
            .networks
            .insert("egress".into(), ServiceNetwork::default());
        egress.networks.insert(
            "internal".into(),
            ServiceNetwork {
                ipv4_address: Some("10.213.0.254".into()),
                aliases: vec!["proxy".into()],
            },
        );
        let mut agent = Service::default();
        agent
            .networks
            .insert("internal".into(), ServiceNetwork::default());
        ComposeFile {
            services: BTreeMap::from([("egress".into(), egress), ("agent".into(), agent)]),
            networks: BTreeMap::from([
                ("egress".into(), network("bot-bottle-x-egress")),
                ("internal".into(), network("bot-bottle-x-internal")),
            ]),
        }
    }

    fn created(id: &str, service: &str, networks: &[&str]) -> ContainerInfo {
        ContainerInfo {
            id: id.to_owned(),
            name: format!("x-{service}"),
            state: "created".into(),
            health: None,
            labels: BTreeMap::from([(COMPOSE_SERVICE_LABEL.to_owned(), service.to_owned())]),
            env: Vec::new(),
            networks: networks.iter().map(|n| n.to_string()).collect(),
        }
    }

    /// As compose v1 leaves them: each on its first network only.
    #[test]
    fn the_networks_v1_leaves_for_its_start_are_attached_as_it_would() {
        let connects = missing_networks(
            &file(),
            &[
                created("0123456789abcdef", "egress", &["bot-bottle-x-egress"]),
                created("fedcba9876543210", "agent", &["bot-bottle-x-internal"]),
            ],
        );
        assert_eq!(
            connects,
            vec![NetworkConnect {
                container: "0123456789abcdef".into(),
                network: "bot-bottle-x-internal".into(),
                aliases: vec!["egress".into(), "0123456789ab".into(), "proxy".into()],
                ipv4_address: Some("10.213.0.254".into()),
            }]
        );
    }

    /// As compose v2 leaves them, and containers of no service of the file.
    #[test]
    fn containers_on_all_their_networks_need_nothing() {
        let connects = missing_networks(
            &file(),
            &[
                created(
                    "0123456789abcdef",
                    "egress",
                    &["bot-bottle-x-internal", "bot-bottle-x-egress"],
                ),
                created("fedcba9876543210", "agent", &["bot-bottle-x-internal"]),
                created("aaaaaaaaaaaaaaaa", "stranger", &[]),
            ],
        );
        assert_eq!(connects, Vec::new());
    }
}
