//! The ci/ scripts the GitHub workflow calls, checked here so that they
//! keep working on a developer's machine too.

use klp_harness::kernel;
use klp_harness::project::Project;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn workflow_lints_clean() {
    let output = Command::new(root().join("ci/lint-workflows.sh"))
        .output()
        .expect("ci/lint-workflows.sh runs");
    assert!(
        output.status.success(),
        "actionlint found problems:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn matrix_lists_every_kernel_definition() {
    let output = Command::new(root().join("ci/matrix.sh"))
        .output()
        .expect("ci/matrix.sh runs");
    assert!(output.status.success());
    let project = Project::at(root().to_path_buf()).unwrap();
    let names: Vec<String> = kernel::list(&project)
        .unwrap()
        .into_iter()
        .map(|spec| format!("\"{}\"", spec.name))
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("[{}]", names.join(","))
    );
}
