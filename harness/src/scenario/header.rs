//! The part of a scenario before its steps: which kernels and rules, what
//! a kernel must offer, the fixtures, and what the kernel may log.

use super::discover::local_fixtures_dir;
use super::format::{Allow, ScenarioFile};
use crate::fixture::{self, ExternalDir, Fixture, FixtureSource};
use crate::kernel::behaviour::{self, Behaviour};
use crate::kernel::version;
use crate::project::Project;
use crate::settings::ClockChoice;
use crate::yaml::Position;
use anyhow::{bail, Result};
use std::path::Path;

/// A scenario's checked header.
#[derive(Debug)]
pub struct Header {
    /// Coverage rules it checks, e.g. ["R2", "R4"].
    pub rules: Vec<String>,
    pub kernels: Option<Vec<String>>,
    pub requires: Requirements,
    pub fixtures: Vec<Fixture>,
    /// Some fixture is built from the kernel's own source tree.
    pub needs_kernel_source: bool,
    pub allow: Allowances,
    /// The upstream fix it checks.
    pub fix: Option<&'static Behaviour>,
    /// Guest CPUs.
    pub cpus: u32,
    /// The clock the scenario asks for, if any.
    pub clock: Option<ClockChoice>,
}

/// Kernel log lines and taint flags a scenario tolerates.
#[derive(Debug, Default)]
pub struct Allowances {
    pub taint: Vec<char>,
    pub log: Vec<String>,
}

/// Taint flags any livepatch test sets: K (livepatch), O (built outside
/// the kernel tree: every fixture is), E (unsigned module).
pub const EXPECTED_TAINT: &[char] = &['K', 'O', 'E'];

/// Rules of the coverage suite, R1 to R18 (docs/scenarios.md, "Coverage:
/// the rules, kernel by kernel").
pub const RULES: u32 = 18;

/// A scenario's checked `requires`.
#[derive(Debug, Default)]
pub struct Requirements {
    pub min_version: Option<String>,
    pub sysfs: Vec<String>,
    pub behaviours: Vec<&'static str>,
}

pub fn check(project: &Project, file: &Path, raw: &ScenarioFile) -> Result<Header> {
    let at = |spanned_location: &crate::yaml::Location| Position::new(file, spanned_location);

    let kernels = match &raw.kernels {
        None => None,
        Some(names) => {
            let known: Vec<String> = crate::kernel::list(project)?
                .into_iter()
                .map(|spec| spec.name)
                .collect();
            for name in names {
                if !known.contains(&name.value) {
                    bail!(
                        "{}: unknown kernel {:?}; expected one of: {}",
                        at(&name.referenced),
                        name.value,
                        known.join(", ")
                    );
                }
            }
            Some(names.iter().map(|name| name.value.clone()).collect())
        }
    };

    let mut rules = Vec::new();
    for rule in &raw.rules {
        let number: Option<u32> = rule.value.strip_prefix('R').and_then(|n| n.parse().ok());
        if !number.is_some_and(|n| (1..=RULES).contains(&n)) {
            bail!(
                "{}: unknown rule {:?}; expected R1 to R{RULES}",
                at(&rule.referenced),
                rule.value
            );
        }
        rules.push(rule.value.clone());
    }

    let cpus = match &raw.cpus {
        None => crate::vm::DEFAULT_CPUS,
        Some(cpus) if (1..=crate::vm::MAX_CPUS).contains(&cpus.value) => cpus.value,
        Some(cpus) => bail!(
            "{}: cpus: {} is out of range; expected 1 to {}",
            at(&cpus.referenced),
            cpus.value,
            crate::vm::MAX_CPUS
        ),
    };

    let clock = raw.clock.as_ref().map(|clock| clock.value);
    if let Some(counted) = raw
        .clock
        .as_ref()
        .filter(|clock| clock.value == ClockChoice::Counted && cpus > 1)
    {
        bail!(
            "{}: clock: counted needs one CPU ({}); expected `clock: real` or no `clock:` with cpus: {cpus}",
            at(&counted.referenced),
            crate::vm::clock::MANY_CPUS
        );
    }

    let mut requires = Requirements::default();
    if let Some(version) = &raw.requires.min_version {
        if let Err(err) = version::parse_version(&version.value) {
            bail!("{}: {err}", at(&version.referenced));
        }
        requires.min_version = Some(version.value.clone());
    }
    for attribute in &raw.requires.sysfs {
        if !behaviour::attributes().contains(&attribute.value.as_str()) {
            let known = behaviour::attributes();
            bail!(
                "{}: unknown livepatch sysfs attribute {:?}; expected one of: {}",
                at(&attribute.referenced),
                attribute.value,
                known.join(", ")
            );
        }
        requires.sysfs.push(attribute.value.clone());
    }
    for row in &raw.requires.behaviours {
        let Some(found) = behaviour::find(&row.value) else {
            let known: Vec<&str> = behaviour::BEHAVIOURS.iter().map(|b| b.id).collect();
            bail!(
                "{}: unknown behaviour {:?}; expected one of: {}",
                at(&row.referenced),
                row.value,
                known.join(", ")
            );
        };
        requires.behaviours.push(found.id);
    }

    // A scenario may carry fixture specs of its own in a fixtures/
    // directory beside it (as `explore` writes them); they come first.
    let local_dir = local_fixtures_dir(file);
    let local = match local_dir.is_dir() {
        true => fixture::names_in(&local_dir)?,
        false => Vec::new(),
    };
    let mut available = fixture::names(project)?;
    available.extend(local.iter().cloned());
    let mut fixtures = Vec::new();
    for name in &raw.fixtures {
        if !available.contains(&name.value) {
            bail!(
                "{}: unknown fixture {:?}; expected one of: {}",
                at(&name.referenced),
                name.value,
                available.join(", ")
            );
        }
        fixtures.push(match local.contains(&name.value) {
            true => fixture::find_in(&local_dir, &name.value)?,
            false => fixture::find(project, &name.value)?,
        });
    }
    let mut needs_kernel_source = false;
    for external in &raw.external {
        let position = at(&external.referenced);
        let external = &external.value;
        let dir = match external.dir.strip_prefix("kernel:") {
            Some(inside) => {
                needs_kernel_source = true;
                ExternalDir::InKernel(inside.into())
            }
            None => {
                let dir = file.parent().unwrap_or(Path::new(".")).join(&external.dir);
                if !dir.is_dir() {
                    bail!("{position}: external dir {} does not exist", dir.display());
                }
                ExternalDir::Path(dir)
            }
        };
        if external.modules.is_empty() {
            bail!("{position}: external {:?} lists no modules; expected the .ko names its build makes", external.dir);
        }
        for module in &external.modules {
            if fixtures.iter().any(|f: &Fixture| f.name == *module) {
                bail!("{position}: module {module:?} is already a fixture of this scenario");
            }
            fixtures.push(Fixture {
                name: module.clone(),
                source: FixtureSource::External {
                    dir: dir.clone(),
                    make: external.make.clone(),
                },
            });
        }
    }
    let allow = check_allow(file, &raw.allow)?;
    let fix = match &raw.fix {
        None => None,
        Some(id) => Some(check_fix(&at(&id.referenced), &id.value)?),
    };
    Ok(Header {
        fix,
        rules,
        kernels,
        requires,
        fixtures,
        needs_kernel_source,
        allow,
        cpus,
        clock,
    })
}

/// A `fix:` names a behaviour row with an upstream commit, or one that no
/// release has fixed yet (not a change only a series brings).
fn check_fix(at: &Position, id: &str) -> Result<&'static Behaviour> {
    let is_fix =
        |b: &Behaviour| b.proposed.is_none() && (!b.commits.is_empty() || b.since.is_none());
    let fixes: Vec<&str> = behaviour::BEHAVIOURS
        .iter()
        .filter(|b| is_fix(b))
        .map(|b| b.id)
        .collect();
    match behaviour::find(id) {
        Some(found) if is_fix(found) => Ok(found),
        Some(_) => bail!(
            "{at}: {id:?} names no upstream commit; expected one of: {}",
            fixes.join(", ")
        ),
        None => bail!(
            "{at}: unknown fix {id:?}; expected one of: {}",
            fixes.join(", ")
        ),
    }
}

fn check_allow(file: &Path, allow: &Allow) -> Result<Allowances> {
    let mut taint = Vec::new();
    for flag in &allow.taint {
        match flag.value.chars().collect::<Vec<_>>().as_slice() {
            [letter] if TAINT_FLAGS.contains(letter) => taint.push(*letter),
            _ => bail!(
                "{}: unknown taint flag {:?}; expected one letter of {}",
                Position::new(file, &flag.referenced),
                flag.value,
                TAINT_FLAGS.iter().collect::<String>()
            ),
        }
    }
    Ok(Allowances {
        taint,
        log: allow.log.iter().map(|line| line.value.clone()).collect(),
    })
}

/// Taint flags by bit (Documentation/admin-guide/tainted-kernels.rst).
pub const TAINT_FLAGS: &[char] = &[
    'P', 'F', 'S', 'R', 'M', 'B', 'U', 'D', 'A', 'W', 'C', 'I', 'O', 'E', 'L', 'K', 'X', 'T', 'N',
    'J',
];
