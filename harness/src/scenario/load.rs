//! Reading and checking a scenario before any VM starts: every mistake is
//! reported with file:line:column and what was expected.

use super::discover::scenario_name;
use super::format::ScenarioFile;
use super::header::{self, Allowances, Requirements};
use super::step::CheckedStep;
use super::steps::{check_order, check_steps, BlockContext};
use crate::fixture::Fixture;
use crate::kernel::behaviour::Behaviour;
use crate::project::Project;
use crate::settings::ClockChoice;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// A checked scenario.
#[derive(Debug)]
pub struct Scenario {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    /// Coverage rules it checks, e.g. ["R2", "R4"].
    pub rules: Vec<String>,
    pub kernels: Option<Vec<String>>,
    pub requires: Requirements,
    pub fixtures: Vec<Fixture>,
    /// Some fixture is built from the kernel's own source tree.
    pub needs_kernel_source: bool,
    /// Steps in the order they run, repeat blocks unrolled.
    pub steps: Vec<CheckedStep>,
    pub allow: Allowances,
    /// The fixtures as the reference model knows them, when some step
    /// follows the model.
    pub model: Option<crate::model::Defs>,
    /// Boot rather than start from a saved guest state.
    pub fresh_boot: bool,
    /// The upstream fix it checks; its `shows_bug` steps fail without it.
    pub fix: Option<&'static Behaviour>,
    /// Guest CPUs.
    pub cpus: u32,
    /// The clock the scenario asks for, if any (`vm::clock::choose`).
    pub clock: Option<ClockChoice>,
}

pub fn load(project: &Project, file: &Path) -> Result<Scenario> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", file.display()))?;
    parse(project, file, &text)
}

pub fn parse(project: &Project, file: &Path, text: &str) -> Result<Scenario> {
    let raw: ScenarioFile = crate::yaml::parse_str(file, text)?;
    let header = header::check(project, file, &raw)?;
    if raw.steps.is_empty() {
        bail!("{}: a scenario needs at least one step", file.display());
    }
    let mut steps = Vec::new();
    let context = BlockContext {
        file,
        fixtures: &header.fixtures,
        follow_model: raw.follow_model,
        cpus: header.cpus,
    };
    check_steps(&context, raw.steps, "", &mut steps)?;
    check_order(&steps)?;
    check_shows_bug(file, header.fix, &steps)?;
    let model = if steps.iter().any(|step| step.follow_model) {
        Some(super::follow::model_defs(&header.fixtures, &steps)?)
    } else {
        None
    };
    if model.is_some() {
        // The one place a step's YAML becomes the model's operation.
        for step in &mut steps {
            step.op = super::follow::op(&step.action).expect("model_defs checked every step");
        }
    }
    Ok(Scenario {
        name: scenario_name(project, file),
        file: file.to_path_buf(),
        description: raw.description,
        rules: header.rules,
        kernels: header.kernels,
        requires: header.requires,
        fixtures: header.fixtures,
        needs_kernel_source: header.needs_kernel_source,
        steps,
        allow: header.allow,
        model,
        fresh_boot: raw.fresh_boot,
        fix: header.fix,
        cpus: header.cpus,
        clock: header.clock,
    })
}

impl Scenario {
    /// A scenario made in code from the model's operations (`explore`):
    /// every step followed by the model, nothing allowed beyond the usual.
    pub fn generated(
        name: String,
        file: PathBuf,
        fixtures: Vec<Fixture>,
        steps: Vec<CheckedStep>,
        cpus: u32,
    ) -> Result<Scenario> {
        let model = super::follow::model_defs(&fixtures, &steps)?;
        Ok(Scenario {
            name,
            file,
            description: String::new(),
            rules: Vec::new(),
            kernels: None,
            requires: Default::default(),
            fixtures,
            needs_kernel_source: false,
            steps,
            allow: Default::default(),
            model: Some(model),
            fresh_boot: false,
            fix: None,
            cpus,
            clock: None,
        })
    }
}

/// `shows_bug` marks where a scenario's `fix` shows, so one needs the other.
fn check_shows_bug(file: &Path, fix: Option<&Behaviour>, steps: &[CheckedStep]) -> Result<()> {
    let marked = steps.iter().find(|step| step.shows_bug);
    match (fix, marked) {
        (Some(fix), None) => bail!(
            "{}: `fix: {}` needs a step marked `shows_bug: true`, where the bug shows \
             on a kernel without the fix",
            file.display(),
            fix.id
        ),
        (None, Some(step)) => bail!(
            "{}: step {} is marked `shows_bug`, but the scenario names no `fix`; \
             expected `fix: <behaviour id>` at the top",
            step.position,
            step.label
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::discover::scenario_files;

    fn project() -> Project {
        Project::at(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap()
    }

    /// The error for `text`, which must be rejected.
    fn error_of(text: &str) -> String {
        let err = parse(&project(), Path::new("s.yaml"), text).expect_err("must be rejected");
        format!("{err:#}")
    }

    const HEAD: &str = "description: d\nfixtures: [klp_target, klp_cumul_v1]\nsteps:\n";

    #[test]
    fn unknown_step_key() {
        let err = error_of(&format!("{HEAD}  - load: klp_target\n    bogus: 1\n"));
        assert!(
            err.starts_with("s.yaml:5:5: unknown field `bogus`, expected one of load, disable"),
            "{err}"
        );
    }

    #[test]
    fn misspelt_top_level_key() {
        let err = error_of("description: d\nfixture: [klp_target]\nsteps: []\n");
        assert_eq!(err, "s.yaml:2:1: unknown field `fixture`, expected one of description, rules, kernels, requires, fixtures, external, steps, fresh_boot, cpus, clock, follow_model, allow, fix");
    }

    #[test]
    fn cpus_out_of_range() {
        let err = error_of(&format!("cpus: 0\n{HEAD}  - load: klp_target\n"));
        assert_eq!(err, "s.yaml:1:7: cpus: 0 is out of range; expected 1 to 8");
        let err = error_of(&format!("cpus: 9\n{HEAD}  - load: klp_target\n"));
        assert_eq!(err, "s.yaml:1:7: cpus: 9 is out of range; expected 1 to 8");
    }

    #[test]
    fn spin_needs_a_second_cpu() {
        let steps = "  - load: klp_target\n  - spin: klp_target\n";
        let err = error_of(&format!("{HEAD}{steps}"));
        assert_eq!(err, "s.yaml:5:5: `spin` needs a CPU beside the guest's shell; expected `cpus: 2` or more in the scenario (it has 1)");
        let text = format!("cpus: 2\n{HEAD}{steps}");
        assert!(parse(&project(), Path::new("s.yaml"), &text).is_ok());
    }

    #[test]
    fn within_bounds_only_a_transition_wait() {
        let err = error_of(&format!("{HEAD}  - run: 'true'\n    within: 5\n"));
        assert_eq!(err, "s.yaml:5:13: `within` bounds a transition wait, and this step waits for none; expected it on a `wait` step, or a `load` or `disable` that waits");
        let steps = "  - load: klp_cumul_v1\n    wait_transition: false\n  - wait: klp_cumul_v1\n    within: 0\n";
        let err = error_of(&format!("{HEAD}{steps}"));
        assert_eq!(
            err,
            "s.yaml:7:13: `within: 0` leaves no time; expected whole seconds, 1 or more"
        );
        let steps = steps.replace("within: 0", "within: 4");
        let scenario = parse(&project(), Path::new("s.yaml"), &format!("{HEAD}{steps}")).unwrap();
        assert_eq!(
            scenario.steps[1].within,
            Some(std::time::Duration::from_secs(4))
        );
    }

    #[test]
    fn a_clock_is_counted_or_real() {
        let text = format!("clock: real\n{HEAD}  - load: klp_target\n");
        let scenario = parse(&project(), Path::new("s.yaml"), &text).unwrap();
        assert_eq!(scenario.clock, Some(ClockChoice::Real));
        let text = format!("{HEAD}  - load: klp_target\n");
        let scenario = parse(&project(), Path::new("s.yaml"), &text).unwrap();
        assert_eq!(scenario.clock, None);
        let err = error_of(&format!("clock: fast\n{HEAD}  - load: klp_target\n"));
        assert!(
            err.starts_with("s.yaml:1:8: unknown variant `fast`, expected one of counted, real"),
            "{err}"
        );
        let err = error_of(&format!(
            "cpus: 2\nclock: counted\n{HEAD}  - load: klp_target\n"
        ));
        assert!(
            err.starts_with("s.yaml:2:8: clock: counted needs one CPU ("),
            "{err}"
        );
    }

    #[test]
    fn cpus_default_to_one() {
        let text = format!("{HEAD}  - load: klp_target\n");
        let scenario = parse(&project(), Path::new("s.yaml"), &text).unwrap();
        assert_eq!(scenario.cpus, crate::vm::DEFAULT_CPUS);
        let text = format!("cpus: 2\n{HEAD}  - load: klp_target\n");
        let scenario = parse(&project(), Path::new("s.yaml"), &text).unwrap();
        assert_eq!(scenario.cpus, 2);
    }

    #[test]
    fn wrong_type() {
        let err = error_of("description: d\nfixtures: klp_target\nsteps: []\n");
        assert_eq!(err, "s.yaml:2:11: expected a list");
    }

    #[test]
    fn undefined_fixture() {
        let err = error_of("description: d\nfixtures: [klp_target, klp_nope]\nsteps: []\n");
        assert!(
            err.starts_with("s.yaml:2:24: unknown fixture \"klp_nope\"; expected one of: "),
            "{err}"
        );
        assert!(err.contains("klp_cumul_v1"), "{err}");
    }

    #[test]
    fn step_uses_fixture_not_declared() {
        let err = error_of(&format!("{HEAD}  - load: klp_cumul_v2\n"));
        assert!(
            err.starts_with("s.yaml:4:11: \"klp_cumul_v2\" is not among this scenario's fixtures"),
            "{err}"
        );
    }

    #[test]
    fn unknown_kernel() {
        let err = error_of("description: d\nkernels: [linux-0.01]\nfixtures: []\nsteps: []\n");
        assert!(
            err.starts_with("s.yaml:2:11: unknown kernel \"linux-0.01\"; expected one of: "),
            "{err}"
        );
    }

    #[test]
    fn unknown_errno() {
        let err = error_of(&format!(
            "{HEAD}  - load: klp_cumul_v1\n    error: EWHATEVER\n"
        ));
        assert!(
            err.starts_with("s.yaml:5:12: unknown errno \"EWHATEVER\"; expected one of: EPERM"),
            "{err}"
        );
    }

    #[test]
    fn two_actions_in_one_step() {
        let err = error_of(&format!(
            "{HEAD}  - load: klp_target\n    unload: klp_target\n"
        ));
        assert!(
            err.starts_with("s.yaml:5:13: step has more than one action"),
            "{err}"
        );
    }

    #[test]
    fn step_without_action() {
        let err = error_of(&format!("{HEAD}  - error: EINVAL\n"));
        assert!(err.starts_with("s.yaml:4:5: step has no action"), "{err}");
    }

    #[test]
    fn disabling_a_plain_module() {
        let err = error_of(&format!("{HEAD}  - disable: klp_target\n"));
        assert!(
            err.starts_with("s.yaml:4:14: \"klp_target\" is a plain module, not a livepatch"),
            "{err}"
        );
    }

    #[test]
    fn unknown_patch_attribute() {
        let text = format!("{HEAD}  - load: klp_cumul_v1\n    expect:\n      patch:\n        klp_cumul_v1: {{enabeld: 1}}\n");
        let err = error_of(&text);
        assert!(
            err.starts_with(
                "s.yaml:7:24: unknown field `enabeld`, expected one of enabled, transition"
            ),
            "{err}"
        );
    }

    #[test]
    fn expected_modules_must_be_ones_it_sees() {
        let text = format!(
            "{HEAD}  - load: klp_target\n    expect:\n      modules: [klp_target, virtio_blk]\n"
        );
        let err = error_of(&text);
        assert_eq!(err, "s.yaml:6:16: `modules` lists \"virtio_blk\", which it never sees; expected names starting with klp_ or livepatch");
        let text = text.replace("virtio_blk", "livepatch_sample");
        assert!(parse(&project(), Path::new("s.yaml"), &text).is_ok());
    }

    #[test]
    fn unknown_sysfs_requirement() {
        let text = "description: d\nrequires: {sysfs: [stack_ordre]}\nfixtures: []\nsteps: []\n";
        let err = error_of(text);
        assert!(
            err.starts_with("s.yaml:2:20: unknown livepatch sysfs attribute \"stack_ordre\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_behaviour_requirement() {
        let text =
            "description: d\nrequires: {behaviours: [state-versions]}\nfixtures: []\nsteps: []\n";
        let err = error_of(text);
        assert!(
            err.starts_with("s.yaml:2:25: unknown behaviour \"state-versions\"; expected one of:"),
            "{err}"
        );
    }

    #[test]
    fn malformed_min_version() {
        let err =
            error_of("description: d\nrequires: {min_version: six}\nfixtures: []\nsteps: []\n");
        assert!(
            err.starts_with("s.yaml:2:25: \"six\" is not a kernel version"),
            "{err}"
        );
    }

    #[test]
    fn external_dir_must_exist() {
        let text = "description: d\nfixtures: []\nexternal:\n  - {dir: no/such/dir, modules: [m]}\nsteps:\n  - load: m\n";
        let err = error_of(text);
        assert!(
            err.starts_with("s.yaml:4:5: external dir no/such/dir does not exist"),
            "{err}"
        );
    }

    #[test]
    fn external_needs_modules() {
        let text = "description: d\nfixtures: []\nexternal:\n  - {dir: 'kernel:samples/livepatch', modules: []}\nsteps:\n  - run: 'true'\n";
        let err = error_of(text);
        assert!(
            err.starts_with("s.yaml:4:5: external \"kernel:samples/livepatch\" lists no modules"),
            "{err}"
        );
    }

    #[test]
    fn no_steps() {
        assert_eq!(
            error_of("description: d\nfixtures: []\nsteps: []\n"),
            "s.yaml: a scenario needs at least one step"
        );
    }

    #[test]
    fn repeat_zero_times() {
        let err = error_of(&format!(
            "{HEAD}  - repeat: 0\n    steps:\n      - load: klp_target\n"
        ));
        assert!(
            err.starts_with("s.yaml:4:13: `repeat: 0` runs nothing; expected a count of 1 or more"),
            "{err}"
        );
    }

    #[test]
    fn repeat_without_steps() {
        let err = error_of(&format!("{HEAD}  - repeat: 2\n"));
        assert_eq!(
            err,
            "s.yaml:4:13: `repeat` needs `steps`, the block to repeat"
        );
    }

    #[test]
    fn repeat_with_an_action_of_its_own() {
        let err = error_of(&format!(
            "{HEAD}  - repeat: 2\n    load: klp_target\n    steps:\n      - unload: klp_target\n"
        ));
        assert!(
            err.starts_with("s.yaml:4:5: a `repeat` step cannot also load"),
            "{err}"
        );
    }

    #[test]
    fn repeated_load_without_unload_is_caught_in_round_two() {
        let err = error_of(&format!(
            "{HEAD}  - repeat: 3\n    steps:\n      - load: klp_target\n"
        ));
        assert!(
            err.starts_with(
                "s.yaml:6:9: step 1[2].1 loads klp_target, which step at s.yaml:6:9 already loaded"
            ),
            "{err}"
        );
    }

    #[test]
    fn repeat_unrolls_with_labels() {
        let text = format!(
            "{HEAD}  - load: klp_target\n  - repeat: 2\n    steps:\n      - load: klp_cumul_v1\n      - disable: klp_cumul_v1\n      - unload: klp_cumul_v1\n"
        );
        let scenario = parse(&project(), Path::new("s.yaml"), &text).unwrap();
        let labels: Vec<&str> = scenario.steps.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            ["1", "2[1].1", "2[1].2", "2[1].3", "2[2].1", "2[2].2", "2[2].3"]
        );
    }

    #[test]
    fn unloading_what_was_never_loaded() {
        let err = error_of(&format!("{HEAD}  - unload: klp_cumul_v1\n"));
        assert!(
            err.starts_with("s.yaml:4:5: step 1 `unload klp_cumul_v1` needs klp_cumul_v1 loaded, but no earlier step loads it"),
            "{err}"
        );
    }

    #[test]
    fn disabling_after_unload() {
        let err = error_of(&format!(
            "{HEAD}  - load: klp_cumul_v1\n  - unload: klp_cumul_v1\n  - disable: klp_cumul_v1\n"
        ));
        assert!(
            err.starts_with("s.yaml:6:5: step 3 `disable klp_cumul_v1` needs klp_cumul_v1 loaded, but step at s.yaml:5:5 unloaded it"),
            "{err}"
        );
    }

    #[test]
    fn a_load_expected_to_fail_loads_nothing() {
        let text =
            format!("{HEAD}  - load: klp_cumul_v1\n    error: EINVAL\n  - unload: klp_cumul_v1\n");
        let err = error_of(&text);
        assert!(
            err.starts_with("s.yaml:6:5: step 2 `unload klp_cumul_v1` needs"),
            "{err}"
        );
    }

    #[test]
    fn parking_a_module_without_a_busy_thread() {
        let err = error_of(&format!(
            "{HEAD}  - load: klp_cumul_v1\n  - park: klp_cumul_v1\n"
        ));
        assert!(
            err.starts_with(
                "s.yaml:5:11: \"klp_cumul_v1\" has no busy thread to park; expected klp_target"
            ),
            "{err}"
        );
    }

    #[test]
    fn parking_before_the_target_is_loaded() {
        let err = error_of(&format!("{HEAD}  - park: klp_target\n"));
        assert!(
            err.starts_with("s.yaml:4:5: step 1 `park klp_target` needs klp_target loaded"),
            "{err}"
        );
    }

    #[test]
    fn unknown_taint_flag() {
        let err = error_of(
            "description: d\nallow: {taint: [WX]}\nfixtures: []\nsteps:\n  - run: 'true'\n",
        );
        assert!(
            err.starts_with("s.yaml:2:17: unknown taint flag \"WX\"; expected one letter of PFSRMBUDAWCIOELKXTNJ"),
            "{err}"
        );
    }

    #[test]
    fn unknown_rule() {
        let err = error_of("description: d\nrules: [R2, R19]\nfixtures: []\nsteps: []\n");
        assert_eq!(err, "s.yaml:2:13: unknown rule \"R19\"; expected R1 to R18");
    }

    #[test]
    fn a_fix_must_be_a_known_upstream_change() {
        let err = error_of(&format!("fix: faster-coffee\n{HEAD}  - load: klp_target\n"));
        assert!(
            err.starts_with("s.yaml:1:6: unknown fix \"faster-coffee\"; expected one of: "),
            "{err}"
        );
        assert!(
            err.contains("force-pins-only-the-transition-patch"),
            "{err}"
        );
        let err = error_of(&format!("fix: sysfs-enabled\n{HEAD}  - load: klp_target\n"));
        assert!(err.contains("names no upstream commit"), "{err}");
    }

    #[test]
    fn a_fix_and_the_step_that_shows_it_go_together() {
        let fix = "fix: force-pins-only-the-transition-patch\n";
        let err = error_of(&format!("{fix}{HEAD}  - load: klp_target\n"));
        assert!(
            err.contains("needs a step marked `shows_bug: true`"),
            "{err}"
        );
        let err = error_of(&format!(
            "{HEAD}  - load: klp_target\n    shows_bug: true\n"
        ));
        assert!(
            err.starts_with(
                "s.yaml:4:5: step 1 is marked `shows_bug`, but the scenario names no `fix`"
            ),
            "{err}"
        );
        let text = format!("{fix}{HEAD}  - load: klp_target\n    shows_bug: true\n");
        let scenario = parse(&project(), Path::new("s.yaml"), &text).unwrap();
        assert_eq!(scenario.fix.map(|f| f.commits), Some(&["2957308343fa"][..]));
        assert!(scenario.steps[0].shows_bug);
    }

    #[test]
    fn write_without_value() {
        let err = error_of(&format!("{HEAD}  - write: /proc/sys/kernel/printk\n"));
        assert_eq!(err, "s.yaml:4:5: `write` needs a `value` to write");
    }

    #[test]
    fn the_shipped_scenarios_are_valid() {
        let project = project();
        for file in scenario_files(&project).unwrap() {
            load(&project, &file).unwrap_or_else(|err| panic!("{err:#}"));
        }
    }
}
