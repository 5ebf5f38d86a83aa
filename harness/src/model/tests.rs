//! The model's rules on small hand-made fixtures, and its invariants on
//! random operation sequences.

use super::*;
use crate::kernel::behaviour::Profile;
use proptest::prelude::*;

fn def(
    module: &str,
    replace: bool,
    features: &[(u64, u32)],
    functions: &[&'static str],
) -> PatchDef {
    PatchDef {
        module: module.into(),
        replace,
        replace_set: 0,
        features: features
            .iter()
            .map(|&(id, version)| FeatureDef {
                id,
                version,
                name: format!("feature-{id}"),
                opt_in: false,
                shadow: false,
            })
            .collect(),
        functions: functions.to_vec(),
        reports: module.into(),
        pre_patch_error: None,
        target_pre_patch_error_once: None,
        klp_relocs: false,
        missing_symbol: false,
        shadow_vars: Default::default(),
        states: vec![],
    }
}

const ALL: &[&str] = &["cmdline_proc_show", STATUS_FUNCTION, BUSY_FUNCTION];

fn defs() -> Defs {
    [
        def("cumul_v1", true, &[(1, 1)], ALL),
        def("cumul_v2", true, &[(1, 2)], ALL),
        def("cumul_none", true, &[], &[STATUS_FUNCTION]),
        def("noncumul_v2", false, &[(1, 2)], ALL),
        def("noncumul_v1", false, &[(1, 1)], &[STATUS_FUNCTION]),
        def("noncumul_f2", false, &[(2, 1)], &["cmdline_proc_show"]),
        def("noncumul_status", false, &[], &[STATUS_FUNCTION]),
        def("noncumul_busy", false, &[], &[BUSY_FUNCTION]),
    ]
    .into_iter()
    .map(|d| (d.module.clone(), d))
    .collect()
}

fn model() -> Model {
    with_target(defs(), &Profile::from_version(&[7, 2]))
}

/// A model of `defs` on a kernel of `profile`, with klp_target loaded.
fn with_target(defs: Defs, profile: &Profile) -> Model {
    let mut model = Model::new(defs, profile);
    model.step(&Op::Load("klp_target".into()), true).unwrap();
    model
}

fn run(model: &mut Model, op: Op) -> Response {
    model.step(&op, true).unwrap().outcome
}

fn load(name: &str) -> Op {
    Op::Load(name.into())
}

#[test]
fn cumulative_patch_must_carry_every_installed_state() {
    let mut m = model();
    assert_eq!(run(&mut m, load("noncumul_f2")), Response::Done);
    // cumul_v1 lacks feature 2 (R2).
    assert_eq!(run(&mut m, load("cumul_v1")), Response::Refused("EINVAL"));
    assert_eq!(m.stack(), ["noncumul_f2"]);
    assert!(!m.is_loaded("cumul_v1"));
}

#[test]
fn noncumulative_patch_must_not_lower_a_version() {
    let mut m = model();
    run(&mut m, load("noncumul_v2"));
    assert_eq!(
        run(&mut m, load("noncumul_v1")),
        Response::Refused("EINVAL")
    );
    let mut mutated = model().with_mutation(Some(Mutation::NoncumulativeUnchecked));
    run(&mut mutated, load("noncumul_v2"));
    assert_eq!(run(&mut mutated, load("noncumul_v1")), Response::Done);
}

#[test]
fn atomic_replace_takes_the_data_over_and_drops_the_old_patch() {
    let mut m = model();
    run(&mut m, load("cumul_v1"));
    run(&mut m, load("cumul_v2"));
    assert_eq!(m.stack(), ["cumul_v2"]);
    let files = m.predicted_files();
    assert_eq!(files["/sys/kernel/klp_features/1/allocations"], "1");
    assert_eq!(files["/sys/kernel/klp_features/1/owner"], "cumul_v2");
    assert_eq!(files["/sys/kernel/klp_target/status"], "cumul_v2 f1=v2");
    assert_eq!(run(&mut m, Op::Unload("cumul_v1".into())), Response::Done);
    assert_eq!(
        run(&mut m, Op::Unload("cumul_v2".into())),
        Response::Refused("EAGAIN")
    );
}

#[test]
fn disabling_the_top_patch_lowers_the_version() {
    let mut m = model();
    run(&mut m, load("cumul_v1"));
    run(&mut m, load("noncumul_v2"));
    assert_eq!(m.feature_versions()[&1], Some(2));
    run(&mut m, Op::Disable("noncumul_v2".into()));
    assert_eq!(m.feature_versions()[&1], Some(1));
    let files = m.predicted_files();
    assert_eq!(files["/sys/kernel/klp_target/status"], "cumul_v1 f1=v1");
}

#[test]
fn a_parked_thread_holds_the_transition_until_released() {
    let mut m = model();
    run(&mut m, load("cumul_v1"));
    run(&mut m, Op::Park);
    let prediction = m.step(&load("cumul_v2"), false).unwrap();
    assert_eq!(
        prediction,
        Prediction {
            outcome: Response::Done,
            settled: true
        }
    );
    assert_eq!(m.in_transition(), Some(("cumul_v2", true)));
    assert_eq!(
        run(&mut m, Op::Wait("cumul_v2".into())),
        Response::StillRunning
    );
    // One transition at a time (R12); the compatibility check comes first.
    assert_eq!(run(&mut m, load("noncumul_f2")), Response::Refused("EBUSY"));
    assert_eq!(
        run(&mut m, load("noncumul_v1")),
        Response::Refused("EINVAL")
    );
    assert_eq!(
        run(&mut m, Op::Disable("cumul_v1".into())),
        Response::Refused("EBUSY")
    );
    let files = m.predicted_files();
    assert_eq!(files["/sys/kernel/livepatch/cumul_v2/transition"], "1");
    assert_eq!(files["/sys/kernel/klp_features/1/owner"], "cumul_v1");
    let released = m.step(&Op::Release, false).unwrap();
    assert!(!released.settled);
    assert_eq!(run(&mut m, Op::Wait("cumul_v2".into())), Response::Done);
    assert_eq!(m.stack(), ["cumul_v2"]);
}

#[test]
fn a_thread_parked_in_the_original_does_not_hold_an_unrelated_patch() {
    let mut m = model();
    run(&mut m, Op::Park);
    assert_eq!(
        m.step(&load("noncumul_f2"), true).unwrap().outcome,
        Response::Done
    );
    assert_eq!(m.in_transition(), None);
}

#[test]
fn forced_replace_pins_the_replaced_module() {
    let mut m = model();
    run(&mut m, load("cumul_v1"));
    run(&mut m, Op::Park);
    m.step(&load("cumul_v2"), false).unwrap();
    assert_eq!(
        run(&mut m, Op::Force("cumul_v1".into())),
        Response::Refused("EINVAL")
    );
    assert!(
        !m.step(&Op::Force("cumul_v2".into()), false)
            .unwrap()
            .settled
    );
    assert_eq!(run(&mut m, Op::Wait("cumul_v2".into())), Response::Done);
    assert_eq!(
        run(&mut m, Op::Unload("cumul_v1".into())),
        Response::Refused("EAGAIN")
    );
    assert!(m.is_pinned("cumul_v1"));
}

/// A non-cumulative patch forced in over another one, then disabled, and
/// its module removed.
fn force_then_remove(profile: &Profile, mutation: Option<Mutation>) -> Response {
    let mut m = Model::new(defs(), profile).with_mutation(mutation);
    run(&mut m, load("klp_target"));
    run(&mut m, load("noncumul_v1"));
    run(&mut m, Op::Park);
    m.step(&load("noncumul_v2"), false).unwrap();
    m.step(&Op::Force("noncumul_v2".into()), false).unwrap();
    run(&mut m, Op::Wait("noncumul_v2".into()));
    run(&mut m, Op::Release);
    run(&mut m, Op::Disable("noncumul_v2".into()));
    run(&mut m, Op::Unload("noncumul_v2".into()))
}

#[test]
fn before_5_18_forcing_pins_every_installed_patch() {
    // 2957308343fa: 5.10.262 marks every patch forced, 6.1 only the ones leaving.
    let old = Profile::from_version(&[5, 10, 262]);
    assert_eq!(force_then_remove(&old, None), Response::Refused("EAGAIN"));
    let new = Profile::from_version(&[6, 1, 192]);
    assert_eq!(force_then_remove(&new, None), Response::Done);
    // Without the row, the model takes 5.10 for a fixed kernel.
    let forget = Mutation::Forget("force-pins-only-the-transition-patch");
    assert_eq!(force_then_remove(&old, Some(forget)), Response::Done);
}

fn with_reloc_patches() -> Defs {
    let mut defs = defs();
    for (name, relocs, refuse) in [
        ("reloc", true, false),
        ("reloc_refuse_once", true, true),
        ("refuse_once", false, true),
    ] {
        let mut d = def(name, true, &[], &[STATUS_FUNCTION]);
        d.klp_relocs = relocs;
        d.target_pre_patch_error_once = refuse.then(|| "ENODEV".to_string());
        defs.insert(name.into(), d);
    }
    defs
}

/// klp_target reloaded under a patch with klp relocations.
fn reload_target(version: &[u32], first: &str) -> Response {
    let mut m = Model::new(with_reloc_patches(), &Profile::from_version(version));
    for op in [
        load(first),
        load(if first == "reloc" {
            "klp_target"
        } else {
            "reloc"
        }),
    ] {
        assert_eq!(run(&mut m, op), Response::Done);
    }
    assert!(m.predicted_files()["/sys/kernel/klp_target/status"].ends_with(" secret=42"));
    run(&mut m, Op::Unload("klp_target".into()));
    run(&mut m, load("klp_target"))
}

#[test]
fn before_6_3_klp_relocations_stay_written_when_the_target_goes() {
    for first in ["klp_target", "reloc"] {
        assert_eq!(reload_target(&[6, 1], first), Response::Refused("ENOEXEC"));
        assert_eq!(reload_target(&[6, 12], first), Response::Done);
    }
}

#[test]
fn a_refused_target_load_leaves_the_refusing_patch_relocations_written() {
    for version in [&[5, 10][..], &[6, 12], &[7, 2]] {
        let mut m = Model::new(with_reloc_patches(), &Profile::from_version(version));
        run(&mut m, load("reloc_refuse_once"));
        // The first attempt is refused by the callback, busybox's retry
        // finds the relocations still written.
        assert_eq!(
            run(&mut m, load("klp_target")),
            Response::Refused("ENOEXEC")
        );
        assert_eq!(
            run(&mut m, load("klp_target")),
            Response::Refused("ENOEXEC")
        );
        // Without klp relocations the retry loads it.
        let mut m = Model::new(with_reloc_patches(), &Profile::from_version(version));
        run(&mut m, load("refuse_once"));
        assert_eq!(run(&mut m, load("klp_target")), Response::Done);
    }
}

#[test]
fn a_reversed_load_frees_what_it_allocated_and_leaves() {
    let mut m = model();
    run(&mut m, Op::Park);
    m.step(&load("cumul_v1"), false).unwrap();
    assert_eq!(m.in_transition(), Some(("cumul_v1", true)));
    assert_eq!(run(&mut m, Op::Reverse("cumul_v1".into())), Response::Done);
    run(&mut m, Op::Wait("cumul_v1".into()));
    assert!(m.stack().is_empty());
    let files = m.predicted_files();
    assert_eq!(files["/sys/kernel/klp_features/1/allocations"], "1");
    assert_eq!(files["/sys/kernel/klp_features/1/version"], "none");
    assert_eq!(run(&mut m, Op::Unload("cumul_v1".into())), Response::Done);
}

/// Park, load `below` then `above`, and start disabling `below`, held open.
fn disabling_under(below: &str, above: &str, profile: &Profile) -> Model {
    let mut m = Model::new(defs(), profile);
    run(&mut m, load("klp_target"));
    run(&mut m, load(below));
    run(&mut m, load(above));
    run(&mut m, Op::Park);
    m.step(&Op::Disable(below.into()), false).unwrap();
    assert_eq!(m.in_transition(), Some((below, true)));
    m
}

#[test]
fn reversing_the_disable_of_a_bottom_patch_is_not_predicted() {
    let kernel = Profile::from_version(&[7, 2]);
    // noncumul_v2 is the bottom of klp_target_status's stack and
    // noncumul_status is above it: the reversal reads the list head.
    let mut m = disabling_under("noncumul_v2", "noncumul_status", &kernel);
    let err = m
        .step(&Op::Reverse("noncumul_v2".into()), true)
        .unwrap_err();
    assert!(err.0.contains(STATUS_FUNCTION), "{err}");
    // Nothing changed: the transition is still the disable.
    assert_eq!(m.enabled("noncumul_v2"), Some(false));
    // With no patch above it on any of its functions, it is predicted.
    let mut m = disabling_under("noncumul_busy", "noncumul_status", &kernel);
    assert_eq!(
        run(&mut m, Op::Reverse("noncumul_busy".into())),
        Response::Done
    );
    // On a kernel with the fix, it completes.
    let fixed = kernel.with_flipped("reversed-disable-checks-real-function");
    let mut m = disabling_under("noncumul_v2", "noncumul_status", &fixed);
    assert_eq!(
        run(&mut m, Op::Reverse("noncumul_v2".into())),
        Response::Done
    );
    run(&mut m, Op::Release);
    assert_eq!(run(&mut m, Op::Wait("noncumul_v2".into())), Response::Done);
    assert_eq!(m.stack(), ["noncumul_v2", "noncumul_status"]);
}

#[test]
fn a_disabled_patch_cannot_be_enabled_again() {
    let mut m = model();
    run(&mut m, load("cumul_v1"));
    let enable = Op::WritePatchEnabled {
        module: "cumul_v1".into(),
        value: true,
    };
    assert_eq!(run(&mut m, enable.clone()), Response::Refused("EINVAL"));
    run(&mut m, Op::Disable("cumul_v1".into()));
    assert_eq!(run(&mut m, enable), Response::Refused("ENOENT"));
    assert_eq!(run(&mut m, load("cumul_v1")), Response::Refused("EEXIST"));
}

#[test]
fn sysfs_attributes_follow_the_kernel_version() {
    let mut old = Model::new(defs(), &Profile::from_version(&[5, 10, 240]));
    old.step(&load("noncumul_f2"), true).unwrap();
    let files = old.predicted_files();
    assert!(files.contains_key("/sys/kernel/livepatch/noncumul_f2/enabled"));
    assert!(!files
        .keys()
        .any(|k| k.ends_with("/patched") || k.ends_with("/replace")));
    let mut new = Model::new(defs(), &Profile::from_version(&[6, 14]));
    new.step(&load("noncumul_f2"), true).unwrap();
    let files = new.predicted_files();
    assert_eq!(files["/sys/kernel/livepatch/noncumul_f2/stack_order"], "1");
    assert_eq!(
        files["/sys/kernel/livepatch/noncumul_f2/klp_target/patched"],
        "0"
    );
}

fn any_op() -> impl Strategy<Value = Op> {
    let names: Vec<String> = defs().into_keys().collect();
    let name = proptest::sample::select(names);
    prop_oneof![
        name.clone().prop_map(Op::Load),
        name.clone().prop_map(Op::Disable),
        name.clone().prop_map(Op::Unload),
        name.clone().prop_map(Op::Reverse),
        name.prop_map(Op::Force),
        Just(Op::Park),
        Just(Op::Release),
    ]
}

proptest! {
    #[test]
    fn invariants_hold_after_every_operation(ops in proptest::collection::vec(any_op(), 1..40)) {
        let mut m = model();
        for op in ops {
            // Let a running transition end first, as a scenario's wait does.
            if let Some((module, false)) = m.in_transition() {
                let module = module.to_string();
                m.step(&Op::Wait(module), true).unwrap();
            }
            let before = m.clone();
            let prediction = match m.step(&op, true) {
                Ok(prediction) => prediction,
                // The one unpredictable step: the reversal the unfixed
                // upstream bug makes depend on heap contents.
                Err(err) => {
                    prop_assert!(matches!(op, Op::Reverse(_)), "{:?}: {}", op, err);
                    prop_assert!(err.0.contains("reversed-disable-checks-real-function"));
                    continue;
                }
            };
            if let Response::Refused(_) = prediction.outcome {
                prop_assert_eq!(m.predicted_files(), before.predicted_files(), "{:?} was refused", op);
                prop_assert_eq!(&m.loaded, &before.loaded);
            }
            if let (Op::Load(name), Response::Done, true) = (&op, &prediction.outcome, prediction.settled) {
                if m.defs()[name].replace && m.in_transition().is_none() {
                    prop_assert_eq!(m.stack(), vec![name.clone()], "after a cumulative load");
                }
            }
            let files = m.predicted_files();
            let orders: Vec<&String> = files.iter().filter(|(k, _)| k.ends_with("/stack_order")).map(|(_, v)| v).collect();
            let mut sorted: Vec<usize> = orders.iter().map(|v| v.parse().unwrap()).collect();
            sorted.sort();
            prop_assert_eq!(sorted, (1..=m.stack().len()).collect::<Vec<_>>(), "stack order is contiguous");
            let enabled = m.stack().iter().filter(|p| m.enabled(p) == Some(true)).count();
            prop_assert!(enabled + usize::from(m.in_transition().is_some()) >= m.stack().len());
            for module in &m.pinned {
                prop_assert!(m.is_loaded(module), "pinned {} is loaded", module);
            }
            for p in m.stack() {
                prop_assert!(m.is_loaded(&p), "listed {} is loaded", p);
            }
            // Feature data is freed exactly when the last listed patch lets go.
            let held: std::collections::BTreeSet<u64> =
                m.patches.iter().flat_map(|p| p.data.values().flatten().copied()).collect();
            prop_assert_eq!(&held, &m.live_data, "data held by listed patches is what is live");
            for feature in m.features.values() {
                for (owner, _) in &feature.owners {
                    prop_assert!(m.stack().contains(owner), "owner {} is listed", owner);
                }
            }
        }
    }
}

/// A model of `defs()` plus patches whose callbacks run these shadow
/// variable operations (as specs write them).
fn with_shadow(patches: &[(&str, bool, &str)]) -> Model {
    let mut defs = defs();
    for (module, replace, ops) in patches {
        let vars: crate::fixture::shadow::ShadowVars =
            crate::yaml::parse_str(std::path::Path::new("s.yaml"), ops).unwrap();
        crate::fixture::shadow::check(&vars).unwrap();
        let mut patch = def(module, *replace, &[], &[STATUS_FUNCTION]);
        patch.shadow_vars = vars;
        defs.insert(module.to_string(), patch);
    }
    let mut model = Model::new(defs, &Profile::from_version(&[7, 2]));
    model.step(&load("klp_target"), true).unwrap();
    model
}

fn shadow_files(m: &Model) -> (String, String) {
    let files = m.predicted_files();
    (
        files["/sys/kernel/klp_features/shadow/vars"].clone(),
        files["/sys/kernel/klp_features/shadow/dtors"].clone(),
    )
}

#[test]
fn shadow_variables_follow_the_api() {
    let mut m = with_shadow(&[(
        "ops",
        false,
        "pre_patch: [{op: alloc, obj: 0, id: 1, value: 10}, {op: alloc, obj: 1, id: 1}, \
         {op: alloc, obj: 0, id: 2, ctor_error: ENOMEM}, {op: get_or_alloc, obj: 0, id: 1, value: 99}]\n\
         pre_unpatch: [{op: free, obj: 1, id: 1, dtor: true}, {op: alloc, obj: 3, id: 2, value: 7}]\n\
         post_unpatch: [{op: free_all, id: 2}, {op: free_all, id: 1, dtor: true}]",
    )]);
    assert_eq!(shadow_files(&m), ("none".into(), "none".into()));
    run(&mut m, load("ops"));
    // The failed constructor attached nothing; get_or_alloc of an
    // existing variable did not change it.
    assert_eq!(shadow_files(&m), ("0/1=10 1/1=0".into(), "none".into()));
    run(&mut m, Op::Disable("ops".into()));
    assert_eq!(
        shadow_files(&m),
        ("none".into(), "0/1=10(ops) 1/1=0(ops)".into())
    );
}

#[test]
fn allocating_an_existing_shadow_variable_is_not_predicted() {
    // klp_shadow_alloc() warns, which fails a run.
    let mut m = with_shadow(&[(
        "twice",
        false,
        "pre_patch: [{op: alloc, obj: 1, id: 1}, {op: alloc, obj: 1, id: 1, value: 5}]",
    )]);
    let err = m.step(&load("twice"), true).unwrap_err();
    assert!(err.0.contains("Duplicate shadow variable"), "{err}");
}

#[test]
fn shadow_variables_outlive_their_patch() {
    let mut m = with_shadow(&[
        (
            "keep_a",
            true,
            "post_patch: [{op: alloc, obj: 2, id: 3, value: 1}]",
        ),
        (
            "keep_b",
            true,
            "post_unpatch: [{op: free, obj: 2, id: 3, dtor: true}]",
        ),
    ]);
    run(&mut m, load("keep_a"));
    run(&mut m, load("keep_b"));
    run(&mut m, Op::Unload("keep_a".into()));
    assert_eq!(shadow_files(&m).0, "2/3=1");
    run(&mut m, Op::Disable("keep_b".into()));
    assert_eq!(shadow_files(&m), ("none".into(), "2/3=1(keep_b)".into()));
}

#[test]
fn callbacks_see_the_nearest_state_below_the_transition_patch() {
    let mut defs = defs();
    for (module, replace, version) in [("c1", true, 1), ("c2", true, 2), ("c3", true, 3)] {
        defs.insert(module.into(), def(module, replace, &[(6, version)], ALL));
    }
    defs.insert("plain".into(), def("plain", false, &[], ALL));
    let mut m = Model::new(defs, &Profile::from_version(&[7, 2]));
    let prev = |m: &Model, callback: &str| {
        m.predicted_files()[&format!("/sys/kernel/klp_features/6/prev_{callback}")].clone()
    };
    run(&mut m, load("c1"));
    assert_eq!(prev(&m, "pre_patch"), "c1 saw none");
    assert_eq!(prev(&m, "pre_unpatch"), "-");
    run(&mut m, load("c2"));
    assert_eq!(prev(&m, "post_patch"), "c2 saw c1");
    run(&mut m, load("c3"));
    assert_eq!(prev(&m, "pre_patch"), "c3 saw c2");
    assert_eq!(prev(&m, "post_patch"), "c3 saw c2");
    run(&mut m, Op::Disable("c3".into()));
    assert_eq!(prev(&m, "pre_unpatch"), "c3 saw none");
    assert_eq!(prev(&m, "post_unpatch"), "c3 saw none");

    // Non-cumulative: the nearest patch below with the state, passing
    // over one without it.
    let mut m = Model::new(m.defs().clone(), &Profile::from_version(&[7, 2]));
    run(&mut m, load("noncumul_v1"));
    run(&mut m, load("plain"));
    run(&mut m, load("noncumul_v2"));
    let prev1 = |m: &Model, callback: &str| {
        m.predicted_files()[&format!("/sys/kernel/klp_features/1/prev_{callback}")].clone()
    };
    assert_eq!(prev1(&m, "pre_patch"), "noncumul_v2 saw noncumul_v1");
    run(&mut m, Op::Disable("noncumul_v2".into()));
    assert_eq!(prev1(&m, "pre_unpatch"), "noncumul_v2 saw noncumul_v1");
}

/// The replace set series' kernel: set 0 on vmlinux, set 1 on klp_target.
fn replace_set_model() -> Model {
    let in_set = |mut def: PatchDef, set: u32| {
        def.replace_set = set;
        def
    };
    let defs: Defs = [
        in_set(def("set0_a", true, &[(20, 1)], &["cmdline_proc_show"]), 0),
        in_set(def("set0_b", true, &[(20, 2)], &["cmdline_proc_show"]), 0),
        in_set(
            def(
                "set1_target",
                true,
                &[(21, 1)],
                &[STATUS_FUNCTION, BUSY_FUNCTION],
            ),
            1,
        ),
        in_set(
            def("set1_cmdline", true, &[(21, 1)], &["cmdline_proc_show"]),
            1,
        ),
        in_set(def("set1_state20", true, &[(20, 1)], &[STATUS_FUNCTION]), 1),
    ]
    .into_iter()
    .map(|d| (d.module.clone(), d))
    .collect();
    let profile = series_profile("replace-set-v2");
    assert!(profile.has("replace-set"));
    with_target(defs, &profile)
}

#[test]
fn a_patch_replaces_only_its_own_replace_set() {
    let mut m = replace_set_model();
    run(&mut m, load("set0_a"));
    run(&mut m, load("set1_target"));
    assert_eq!(run(&mut m, load("set0_b")), Response::Done);
    assert_eq!(m.stack(), ["set1_target", "set0_b"]);
    let files = m.predicted_files();
    assert_eq!(files["/sys/kernel/livepatch/set1_target/replace_set"], "1");
    assert_eq!(files["/sys/kernel/livepatch/set0_b/replace_set"], "0");
    assert!(!files.contains_key("/sys/kernel/livepatch/set0_b/replace"));
    assert!(!files.contains_key("/sys/kernel/livepatch/set0_b/stack_order"));
    assert_eq!(files["/sys/kernel/klp_target/status"], "set1_target f21=v1");
    // Without the series set1_target would replace set0_a, whose feature
    // it lacks: refused (R2).
    let mut upstream = Model::new(m.defs().clone(), &Profile::from_version(&[7, 2]));
    run(&mut upstream, load("klp_target"));
    run(&mut upstream, load("set0_a"));
    assert_eq!(
        run(&mut upstream, load("set1_target")),
        Response::Refused("EINVAL")
    );
}

#[test]
fn replace_sets_share_no_function_and_no_state() {
    let mut m = replace_set_model();
    run(&mut m, load("set0_a"));
    for other_set in ["set1_cmdline", "set1_state20"] {
        assert_eq!(run(&mut m, load(other_set)), Response::Refused("EINVAL"));
    }
    assert_eq!(m.stack(), ["set0_a"]);
}

#[test]
fn forcing_a_load_pins_only_the_patches_of_its_set() {
    let mut m = replace_set_model();
    run(&mut m, load("set0_a"));
    run(&mut m, Op::Park);
    let outcome = m.step(&load("set1_target"), false).unwrap().outcome;
    assert_eq!(outcome, Response::Done);
    assert_eq!(
        run(&mut m, Op::Wait("set1_target".into())),
        Response::StillRunning
    );
    run(&mut m, Op::Force("set1_target".into()));
    run(&mut m, Op::Wait("set1_target".into()));
    for module in ["set0_a", "set1_target"] {
        run(&mut m, Op::Disable(module.into()));
        assert_eq!(run(&mut m, Op::Unload(module.into())), Response::Done);
    }
}

/// The profile a series' own diffs give 7.2, as kernel definitions do.
fn series_profile(folder: &str) -> Profile {
    let series = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kernels/patches")
        .join(folder);
    let diffs: Vec<String> = crate::kernel::series::read(&series)
        .unwrap()
        .iter()
        .map(|patch| String::from_utf8_lossy(&patch.text).into_owned())
        .collect();
    Profile::from_version(&[7, 2]).with_series(diffs.iter().map(String::as_str))
}

/// The states series' kernel: state 30 blocks disable, state 31 does not.
fn states_model() -> Model {
    let with_states = |mut def: PatchDef, states: &[(u64, bool)]| {
        def.states = states
            .iter()
            .map(|&(id, block_disable)| StateDef { id, block_disable })
            .collect();
        def
    };
    let defs: Defs = [
        with_states(def("sticky", true, &[], ALL), &[(30, true)]),
        with_states(def("keeps_sticky", true, &[], ALL), &[(30, true)]),
        with_states(def("drops_sticky", true, &[], ALL), &[(31, false)]),
        with_states(
            def("stacked", false, &[], &[STATUS_FUNCTION]),
            &[(31, false)],
        ),
        with_states(def("plain", true, &[], ALL), &[(31, false)]),
    ]
    .into_iter()
    .map(|d| (d.module.clone(), d))
    .collect();
    let profile = series_profile("states-v1");
    assert!(profile.has("state-callbacks"));
    assert!(!profile.has("state-version") && !profile.has("object-callbacks"));
    with_target(defs, &profile)
}

#[test]
fn a_block_disable_state_refuses_disable_and_a_replacement_without_it() {
    let mut m = states_model();
    assert_eq!(run(&mut m, load("sticky")), Response::Done);
    assert_eq!(
        run(&mut m, Op::Disable("sticky".into())),
        Response::Refused("EINVAL")
    );
    // A non-cumulative patch replaces nothing, so it may lack the state.
    assert_eq!(run(&mut m, load("stacked")), Response::Done);
    assert_eq!(
        run(&mut m, load("drops_sticky")),
        Response::Refused("EINVAL")
    );
    assert_eq!(run(&mut m, load("keeps_sticky")), Response::Done);
    assert_eq!(m.stack(), ["keeps_sticky"]);
}

#[test]
fn a_block_disable_patch_cannot_reverse_its_own_patching() {
    let mut m = states_model();
    run(&mut m, Op::Park);
    let held = m.step(&load("sticky"), false).unwrap();
    assert_eq!((held.outcome, held.settled), (Response::Done, true));
    assert_eq!(
        run(&mut m, Op::Reverse("sticky".into())),
        Response::Refused("EINVAL")
    );
    // A patch without such a state reverses as before.
    let mut m = states_model();
    run(&mut m, Op::Park);
    assert_eq!(
        m.step(&load("plain"), false).unwrap().outcome,
        Response::Done
    );
    assert_eq!(run(&mut m, Op::Reverse("plain".into())), Response::Done);
}
