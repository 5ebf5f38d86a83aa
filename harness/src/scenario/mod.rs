//! scenario YAML ──> steps ──> observations ──> verdict.

mod artifacts;
mod discover;
pub mod follow;
pub mod format;
mod header;
mod judge;
mod load;
mod observe;
mod pool;
mod record;
mod run;
mod session;
pub mod step;
mod steps;
mod verdict;

pub use artifacts::rerun_command;
pub use discover::{local_fixtures_dir, scenario_files, scenario_name};
pub use header::{EXPECTED_TAINT, RULES, TAINT_FLAGS};
pub use load::{load, parse, Scenario};
pub use observe::{EndObservation, Observation};
pub use pool::{default_jobs, execute_many};
pub use record::{rejudge, RunRecord};
pub use run::{run_steps, Settings};
pub use session::{execute, shell, testbed_request};
pub use step::{Action, Kind};
pub use verdict::{
    applicability, artifacts_dir, FailedStep, Failure, KnownBug, Mismatch, Outcome, StepError,
    Verdict,
};

/// The JSON Schema of scenario files, as kept in schema/scenario.schema.json
/// for editors (e.g. yaml-language-server).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(format::ScenarioFile);
    serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::KernelSpec;
    use crate::project::Project;
    use std::path::Path;

    fn profile(version: &str) -> crate::kernel::behaviour::Profile {
        let version = crate::kernel::version::parse_version(version).unwrap();
        crate::kernel::behaviour::Profile::from_version(&version)
    }

    fn kernel() -> KernelSpec {
        let project = Project::at(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        crate::kernel::find(&project, "src-6.12").unwrap()
    }

    fn scenario(requires: &str) -> Scenario {
        let project = Project::at(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        let text = format!(
            "description: d\nrequires: {requires}\nfixtures: []\nsteps:\n  - run: 'true'\n"
        );
        parse(&project, Path::new("s.yaml"), &text).unwrap()
    }

    #[test]
    fn the_kept_json_schema_is_current() {
        let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/scenario.schema.json");
        let kept = std::fs::read_to_string(&kept).unwrap_or_default();
        assert!(
            kept == json_schema(),
            "schema/scenario.schema.json is out of date; regenerate it with \
             `cargo run -- schema > schema/scenario.schema.json`"
        );
    }

    #[test]
    fn missing_sysfs_attribute_is_not_applicable_with_reason() {
        let s = scenario("{sysfs: [stack_order]}");
        assert_eq!(
            applicability(&s, &kernel(), Some(&profile("6.12.117"))).as_deref(),
            Some("stack_order: kernel 6.12.117 < 6.14")
        );
        assert_eq!(applicability(&s, &kernel(), Some(&profile("7.2.1"))), None);
    }

    #[test]
    fn old_kernel_is_not_applicable_with_reason() {
        let s = scenario("{min_version: '6.1'}");
        assert_eq!(
            applicability(&s, &kernel(), Some(&profile("5.10.240"))).as_deref(),
            Some("kernel 5.10.240 < 6.1")
        );
        assert_eq!(applicability(&s, &kernel(), Some(&profile("6.1.0"))), None);
    }

    #[test]
    fn kernel_tree_modules_do_not_apply_to_prebuilt_kernels() {
        let project = Project::at(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        let text = "description: d\nfixtures: []\nexternal:\n  - {dir: 'kernel:samples/livepatch', modules: [livepatch-sample]}\nsteps:\n  - load: livepatch-sample\n";
        let s = parse(&project, Path::new("s.yaml"), text).unwrap();
        let prebuilt = crate::kernel::find(&project, "debian-6.12").unwrap();
        let built = crate::kernel::find(&project, "src-6.12").unwrap();
        assert_eq!(
            applicability(&s, &prebuilt, Some(&profile("6.12"))).as_deref(),
            Some("needs the kernel source tree; this kernel is prebuilt")
        );
        assert_eq!(applicability(&s, &built, Some(&profile("6.12"))), None);
    }
}
