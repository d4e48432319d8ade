//! The images a bottle runs on, built by `bottle` itself on first use: no source tree,
//! no developer task.
//!
//! - [`BASE`] ([`base`]): Debian bookworm with what the sidecars need (git and ssh for
//!   the git gate, ca-certificates) plus curl and python3 (the demo's scripted agent
//!   and stand-in upstream, e2e's test agent) and openssh-server (e2e's fake upstream;
//!   it never runs in a bottle). From a registry where one answers, else from
//!   `debootstrap` (as root), through a cached rootfs tarball.
//! - The sidecar image ([`sidecar`]): the running `bottle` executable itself, copied
//!   onto the base with the C runtime it was loaded with ([`runtime`]), tagged
//!   `bot-bottle/sidecar:<version>-<hash of the executable>`
//!   ([`compose_render::sidecar_image_tag`]): a sidecar never runs another build than
//!   the CLI that wrote its config.
//!
//! [`list`] and [`prune`] are `bottle images` and `bottle images prune`.

pub mod base;
mod rootfs;
pub mod runtime;
pub mod sidecar;

use std::path::PathBuf;

use crate::engine::{Engine, ImageInfo};
use crate::error::Result;
use crate::launch::DERIVED_IMAGE_REPO;

pub use base::{BASE, ensure_base};
pub use sidecar::{OwnBinary, ensure_sidecar};

/// Every bot-bottle image lives under this repository prefix.
pub const REPOSITORIES: &str = "bot-bottle/*";
/// The label naming which bot-bottle image an image is (`base`, `sidecar`).
pub const IMAGE_LABEL: &str = "dev.bot-bottle.image";

/// Where images come from on this machine: the CLI reads these from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources {
    /// Where the debootstrap rootfs tarball and build contexts are kept
    /// (`~/.cache/bot-bottle` for a user, `target/bot-bottle` for xtask).
    pub cache_dir: PathBuf,
    /// The Debian mirror debootstrap uses (None: debootstrap's default).
    pub debian_mirror: Option<String>,
    /// Whether to try a registry for the base at all (`BOT_BOTTLE_REGISTRY=off`: no,
    /// so nothing asks DNS for a registry's name, as in CI).
    pub try_registry: bool,
}

/// What one image is to bot-bottle, for `bottle images`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The Debian base every other image starts from.
    Base,
    /// The sidecar image of the running `bottle`.
    Sidecar,
    /// The sidecar image of another build of `bottle` (prunable).
    OtherSidecar,
    /// An agent image with the project directory added, made by `bottle start`
    /// (rebuilt in a second when missing).
    Derived,
    /// Anything else under `bot-bottle/` (the e2e suite's images).
    Other,
}

impl Role {
    /// How `bottle images` names it.
    pub fn describe(&self) -> &'static str {
        match self {
            Role::Base => "base",
            Role::Sidecar => "sidecar (this bottle)",
            Role::OtherSidecar => "sidecar (another build)",
            Role::Derived => "agent (derived)",
            Role::Other => "other",
        }
    }

    fn prunable(&self) -> bool {
        matches!(self, Role::OtherSidecar | Role::Derived)
    }
}

/// One line of `bottle images`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// What the engine says.
    pub image: ImageInfo,
    /// What it is to bot-bottle.
    pub role: Role,
}

/// The role of `reference` when the running `bottle`'s sidecar is `own_sidecar`.
pub fn role_of(reference: &str, own_sidecar: &str) -> Role {
    let repository = reference.rsplit_once(':').map_or(reference, |(r, _)| r);
    if reference == BASE {
        Role::Base
    } else if reference == own_sidecar {
        Role::Sidecar
    } else if repository == compose_render::SIDECAR_REPO && is_build_tag(reference) {
        Role::OtherSidecar
    } else if repository == DERIVED_IMAGE_REPO {
        Role::Derived
    } else {
        Role::Other
    }
}

/// Whether `reference`'s tag is a build's (`<version>-<12 hex>`, as
/// [`compose_render::sidecar_image_tag`] makes them): only those are another build's
/// sidecar; `:dev` or a tag a user gave one is left alone.
fn is_build_tag(reference: &str) -> bool {
    let tag = reference.rsplit_once(':').map_or("", |(_, t)| t);
    tag.rsplit_once('-').is_some_and(|(version, hash)| {
        hash.len() == 12
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
            && !version.is_empty()
            && version
                .split('.')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Every bot-bottle image on the engine, with its role.
pub fn list(backend: &dyn Engine, own_sidecar: &str) -> Result<Vec<Listed>> {
    Ok(backend
        .list_images(REPOSITORIES)?
        .into_iter()
        .map(|image| Listed {
            role: role_of(&image.reference, own_sidecar),
            image,
        })
        .collect())
}

/// What [`prune`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Tags removed.
    pub removed: Vec<String>,
    /// Prunable tags kept because a container (running or stopped) uses them.
    pub in_use: Vec<String>,
}

/// Removes the sidecar images of other `bottle` builds and the derived agent images
/// no container uses; the base, this build's sidecar and foreign images stay.
pub fn prune(backend: &dyn Engine, own_sidecar: &str) -> Result<Pruned> {
    let used = backend.images_in_use()?;
    let mut pruned = Pruned::default();
    for listed in list(backend, own_sidecar)? {
        if !listed.role.prunable() {
            continue;
        }
        let reference = listed.image.reference;
        let short_id = listed.image.id.trim_start_matches("sha256:");
        let in_use = used.iter().any(|u| {
            u == &reference
                || u.trim_start_matches("sha256:")
                    .starts_with(short_id.get(..12).unwrap_or(short_id))
        });
        if in_use {
            pruned.in_use.push(reference);
        } else {
            backend.remove_image(&reference)?;
            pruned.removed.push(reference);
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeEngine;

    const OWN: &str = "bot-bottle/sidecar:0.1.0-aaaaaaaaaaaa";

    #[test]
    fn roles_follow_the_repository_and_this_builds_tag() {
        assert_eq!(role_of(BASE, OWN), Role::Base);
        assert_eq!(role_of(OWN, OWN), Role::Sidecar);
        assert_eq!(
            role_of("bot-bottle/sidecar:0.1.0-bbbbbbbbbbbb", OWN),
            Role::OtherSidecar
        );
        assert_eq!(role_of("bot-bottle/derived:0123", OWN), Role::Derived);
        assert_eq!(role_of("bot-bottle/test-agent:dev", OWN), Role::Other);
        // Not a build's tag: a development tag or one a user gave.
        assert_eq!(role_of("bot-bottle/sidecar:dev", OWN), Role::Other);
        assert_eq!(role_of("bot-bottle/sidecar:mine", OWN), Role::Other);
        assert_eq!(
            role_of("bot-bottle/sidecar:0.1.0-bbbbbbbbbbbz", OWN),
            Role::Other
        );
    }

    #[test]
    fn prune_removes_other_builds_and_derived_images_only() {
        let other = "bot-bottle/sidecar:0.1.0-bbbbbbbbbbbb";
        let derived = "bot-bottle/derived:0123456789abcdef";
        let e2e = "bot-bottle/test-agent:dev";
        let fake = FakeEngine::new(&[BASE, OWN, other, derived, e2e, "debian:bookworm"]);
        let pruned = prune(&fake, OWN).unwrap();
        assert_eq!(pruned.removed, vec![derived.to_owned(), other.to_owned()]);
        let mut left = fake.images();
        left.sort();
        assert_eq!(left, vec![BASE, OWN, e2e, "debian:bookworm"]);
    }
}
