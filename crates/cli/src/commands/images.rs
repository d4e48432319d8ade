//! `bottle images [ls|build|prune]`: bot-bottle's images, which `bottle` builds
//! itself (the sidecar image from this very executable).

use std::time::Instant;

use backend_docker::images::{self, Role};
use backend_docker::progress::Progress as _;

use crate::args::ImagesCommand;
use crate::progress::TerminalProgress;
use crate::{CliError, engine, output};

/// Runs `bottle images ACTION`.
pub fn run(action: ImagesCommand) -> Result<(), CliError> {
    let backend = engine::engine()?;
    let own = engine::own_binary()?.sidecar_tag();
    match action {
        ImagesCommand::Ls => {
            let listed =
                images::list(backend.as_ref(), &own).map_err(|e| CliError::User(e.to_string()))?;
            output::print(&table(&listed, &own));
            Ok(())
        }
        ImagesCommand::Build => {
            let started = Instant::now();
            let mut progress = TerminalProgress::new();
            let sources = engine::image_sources()?;
            let own_binary = engine::own_binary()?;
            let image =
                images::ensure_sidecar(backend.as_ref(), &own_binary, &sources, &mut progress)
                    .map_err(|e| CliError::User(e.to_string()))?;
            progress.done(
                &format!(
                    "{} and {} {}",
                    images::BASE,
                    image.tag,
                    if image.built {
                        "ready"
                    } else {
                        "already there"
                    }
                ),
                started.elapsed(),
            );
            Ok(())
        }
        ImagesCommand::Prune => {
            let pruned =
                images::prune(backend.as_ref(), &own).map_err(|e| CliError::User(e.to_string()))?;
            for tag in &pruned.removed {
                output::print(&format!("removed {tag}\n"));
            }
            for tag in &pruned.in_use {
                output::print(&format!("kept    {tag} (a container uses it)\n"));
            }
            if pruned.removed.is_empty() && pruned.in_use.is_empty() {
                output::print("nothing to prune\n");
            }
            Ok(())
        }
    }
}

/// The listing: one line per image, and a hint when this build's sidecar is missing.
fn table(listed: &[images::Listed], own: &str) -> String {
    let width = listed
        .iter()
        .map(|l| l.image.reference.len())
        .max()
        .unwrap_or(0)
        .max("IMAGE".len());
    let mut text = format!(
        "{:<width$}  {:<24} {:>9}  CREATED\n",
        "IMAGE", "ROLE", "SIZE"
    );
    for l in listed {
        text.push_str(&format!(
            "{:<width$}  {:<24} {:>9}  {}\n",
            l.image.reference,
            l.role.describe(),
            l.image.size,
            l.image.created
        ));
    }
    if !listed.iter().any(|l| l.role == Role::Sidecar) {
        text.push_str(&format!(
            "\n{own} (this bottle's sidecar image) is not built yet: `bottle images build` \
             builds it, and `bottle start` does on first use\n"
        ));
    }
    text
}
