//! The kernel behaviour table (kernel::behaviour) as Markdown: each row
//! with its commit, which kernels of kernels/ have it, whether the
//! reference model covers it, and which scenarios show it.

use crate::kernel::{self, behaviour};
use crate::project::Project;
use crate::scenario;
use anyhow::Result;

pub fn markdown(project: &Project) -> Result<String> {
    let kernels = kernel::list(project)?;
    let scenarios = scenario::scenario_files(project)?
        .iter()
        .map(|file| scenario::load(project, file))
        .collect::<Result<Vec<_>>>()?;
    let profiles: Vec<_> = kernels.iter().map(|k| k.profile_hint()).collect();
    let mut out = String::from("| behaviour | before | after | upstream (release) |");
    for spec in &kernels {
        out += &format!(" {} |", spec.name);
    }
    out += " model | scenarios |\n|---|---|---|---|";
    out += &"---|".repeat(kernels.len() + 2);
    out.push('\n');
    for row in behaviour::BEHAVIOURS {
        let commits = match (row.commits, row.title) {
            (_, Some(title)) if row.proposed.is_some() => format!(
                "\"{title}\", in the series \"{}\" (not merged)",
                row.proposed.unwrap_or_default()
            ),
            ([], _) => format!("({})", row.fixed_in()),
            (commits, Some(title)) => {
                format!("{} \"{title}\" ({})", commits.join(", "), row.fixed_in())
            }
            (commits, None) => format!("{} ({})", commits.join(", "), row.fixed_in()),
        };
        let commits = match &row.until {
            Some(until) => format!(
                "{commits}; undone by {} \"{}\" ({})",
                until.commit, until.title, until.release
            ),
            None => commits,
        };
        let cells: Vec<&str> = profiles
            .iter()
            .map(|profile| match profile {
                Some(profile) if profile.has(row.id) => "yes",
                Some(_) => "no",
                None => "?",
            })
            .collect();
        let shown_by: Vec<&str> = scenarios
            .iter()
            .filter(|s| {
                s.fix.is_some_and(|fix| fix.id == row.id)
                    || row
                        .sysfs
                        .is_some_and(|a| s.requires.sysfs.iter().any(|r| r == a))
            })
            .map(|s| s.name.as_str())
            .collect();
        out += &format!(
            "| `{}` | {} | {} | {} | {} | {} | {} |\n",
            row.id,
            escape(row.before),
            escape(row.after),
            escape(&commits),
            cells.join(" | "),
            row.modelled.label(),
            shown_by.join(", ")
        );
    }
    Ok(out)
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_kept_behaviour_table_is_current() {
        let project = Project::at(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        let table = markdown(&project).unwrap();
        let kept = std::fs::read_to_string(project.kernels_dir().join("BEHAVIOURS.md"))
            .unwrap_or_default();
        assert!(
            kept.contains(&table),
            "kernels/BEHAVIOURS.md lacks the current table; regenerate it with \
             `cargo run -- kernel behaviours` and paste it in:\n{table}"
        );
    }
}
