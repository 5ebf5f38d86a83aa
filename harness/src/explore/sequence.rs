//! Random operation sequences the model can follow, their replay through
//! the model, and their text as a scenario file.

use crate::fixture::target::{self, MODULE as TARGET};
use crate::model::{Model, Op, Response};
use crate::scenario::step::{Action, CheckedStep, Kind};
use crate::yaml::Position;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;

/// An operation with what the model says about it.
#[derive(Clone, Debug)]
pub struct Move {
    pub op: Op,
    /// Whether the step waits for the transition it starts.
    pub wait: bool,
    pub outcome: Response,
}

/// A load or disable waits for its transition unless the parked thread
/// holds it (the wait could never end).
fn waits(model: &Model, op: &Op) -> bool {
    match op {
        Op::Load(_) | Op::Disable(_) => {
            let mut probe = model.clone();
            probe
                .step(op, true)
                .map_or(true, |p| p.outcome != Response::StillRunning)
        }
        _ => true,
    }
}

/// The moves of `ops` from `start`, or None when the sequence is not one a
/// scenario can run: a step the model cannot predict, or a wait that
/// cannot end.
pub fn replay(start: &Model, ops: &[Op]) -> Option<Vec<Move>> {
    let mut model = start.clone();
    let mut moves = Vec::new();
    for op in ops {
        let wait = waits(&model, op);
        let prediction = model.step(op, wait).ok()?;
        if prediction.outcome == Response::StillRunning {
            return None;
        }
        moves.push(Move {
            op: op.clone(),
            wait,
            outcome: prediction.outcome,
        });
    }
    Some(moves)
}

/// How often a sequence sets out to force or reverse a held transition and
/// then take the patches involved away: the rare flows, where kernels have
/// differed (force marking, pinned modules, reversal to lower versions).
const EPISODE_RATE: f64 = 0.4;

/// A random sequence of about `steps` operations over the pool's patches.
/// Every step that leaves a transition free to end is followed by a wait.
/// Some sequences carry out an episode (see `EPISODE_RATE`) at a random
/// point in their first half.
pub fn generate(rng: &mut impl Rng, start: &Model, pool: &[String], steps: usize) -> Vec<Op> {
    let mut model = start.clone();
    let mut ops = Vec::new();
    let mut plan: VecDeque<Op> = VecDeque::new();
    let mut episode_at = rng
        .random_bool(EPISODE_RATE)
        .then(|| rng.random_range(0..=steps / 2));
    loop {
        if episode_at.is_some_and(|at| ops.len() >= at) {
            plan = episode(rng, &model, pool).unwrap_or_default();
            episode_at = None;
        }
        let op = match plan.pop_front() {
            Some(op) => op,
            None if ops.len() < steps => {
                let candidates = candidates(&model, pool);
                candidates
                    .choose_weighted(rng, |(_, weight)| *weight)
                    .expect("there is always a load or unload to choose")
                    .0
                    .clone()
            }
            None => break,
        };
        let wait = waits(&model, &op);
        let mut next = model.clone();
        let Ok(prediction) = next.step(&op, wait) else {
            // The plan met a state it did not foresee: drop the rest.
            plan.clear();
            continue;
        };
        let wait = match prediction.settled {
            true => None,
            false => {
                let (module, _) = next.in_transition().expect("an unsettled transition");
                let wait = Op::Wait(module.to_string());
                if next.step(&wait, true).is_err() {
                    // The callbacks that end it are not predictable (a
                    // shadow variable allocated twice): try another step.
                    plan.clear();
                    continue;
                }
                Some(wait)
            }
        };
        model = next;
        ops.push(op);
        ops.extend(wait);
    }
    ops
}

/// Park the busy thread, start a transition it holds open (a load, or a
/// disable), force or reverse it, release the thread, then disable and
/// unload the patches involved. None when no transition can be held now.
fn episode(rng: &mut impl Rng, model: &Model, pool: &[String]) -> Option<VecDeque<Op>> {
    let mut parked = model.clone();
    let park = (!parked.is_parked()).then_some(Op::Park);
    if let Some(op) = &park {
        parked.step(op, true).ok()?;
    }
    let listed = parked.stack();
    let starters: Vec<(Op, &String)> = pool
        .iter()
        .flat_map(|module| {
            let op = match (parked.is_loaded(module), listed.contains(module)) {
                (false, _) => Some(Op::Load(module.clone())),
                (true, true) => Some(Op::Disable(module.clone())),
                (true, false) => None,
            };
            op.map(|op| (op, module))
        })
        .filter(|(op, module)| {
            let mut probe = parked.clone();
            probe
                .step(op, false)
                .is_ok_and(|p| p.outcome == Response::Done)
                && probe.in_transition() == Some((module.as_str(), true))
        })
        .collect();
    let (start, module) = starters.choose(rng)?;
    let end = if rng.random_bool(0.5) {
        Op::Force(module.to_string())
    } else {
        Op::Reverse(module.to_string())
    };
    let mut involved: Vec<&String> = listed.iter().chain([*module]).collect();
    involved.dedup();
    involved.shuffle(rng);
    let mut plan: VecDeque<Op> = park.into_iter().collect();
    plan.extend([start.clone(), end, Op::Release]);
    for module in involved.into_iter().take(2) {
        plan.push_back(Op::Disable(module.clone()));
        plan.push_back(Op::Unload(module.clone()));
    }
    Some(plan)
}

/// Whether a sequence forces or reverses a transition and later disables
/// or unloads a patch that was listed then (or was the one in transition):
/// "force" or "reverse", the first such.
pub fn rare_flow(start: &Model, moves: &[Move]) -> Option<&'static str> {
    let mut model = start.clone();
    let mut involved: Option<(&'static str, Vec<String>)> = None;
    for m in moves {
        if let (Some((kind, modules)), Op::Disable(x) | Op::Unload(x)) = (&involved, &m.op) {
            if modules.contains(x) {
                return Some(kind);
            }
        }
        if m.outcome == Response::Done {
            if let Op::Force(x) | Op::Reverse(x) = &m.op {
                let kind = if matches!(m.op, Op::Force(_)) {
                    "force"
                } else {
                    "reverse"
                };
                let mut modules = model.stack();
                modules.push(x.clone());
                involved.get_or_insert((kind, modules));
            }
        }
        model.step(&m.op, m.wait).ok()?;
    }
    None
}

/// Operations worth trying next, with weights.
fn candidates(model: &Model, pool: &[String]) -> Vec<(Op, f64)> {
    let mut candidates = Vec::new();
    let listed = model.stack();
    for module in pool {
        if model.is_loaded(module) {
            candidates.push((Op::Unload(module.clone()), 1.5));
        } else {
            candidates.push((Op::Load(module.clone()), 4.0));
        }
        if listed.contains(module) {
            candidates.push((Op::Disable(module.clone()), 2.0));
        }
    }
    match model.in_transition() {
        Some((module, true)) => {
            candidates.push((Op::Reverse(module.to_string()), 2.0));
            candidates.push((Op::Force(module.to_string()), 0.7));
            candidates.push((Op::Release, 3.0));
        }
        _ if model.is_parked() => candidates.push((Op::Release, 1.0)),
        _ => candidates.push((Op::Park, 1.5)),
    }
    candidates
}

/// How often each operation ran, by outcome: "load" ──> "EINVAL" ──> 12.
pub type Tally =
    std::collections::BTreeMap<&'static str, std::collections::BTreeMap<&'static str, usize>>;

pub fn tally(into: &mut Tally, moves: &[Move]) {
    for m in moves {
        let outcome = match m.outcome {
            Response::Done if !m.wait => "held open",
            Response::Done => "ok",
            Response::Refused(errno) => errno,
            Response::StillRunning => "still running",
        };
        *into
            .entry(op_name(&m.op))
            .or_default()
            .entry(outcome)
            .or_default() += 1;
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Load(_) => "load",
        Op::Disable(_) => "disable",
        Op::Unload(_) => "unload",
        Op::Wait(_) => "wait",
        Op::Reverse(_) => "reverse",
        Op::Force(_) => "force",
        Op::Park => "park",
        Op::Release => "release",
        Op::Spin => "spin",
        Op::StopSpin => "stop spin",
        Op::WritePatchEnabled { .. } => "write enabled",
        Op::WriteFeatureEnabled { .. } => "write feature",
    }
}

/// The pool fixtures a sequence uses, in pool order.
pub fn fixtures_used(pool: &[String], moves: &[Move]) -> Vec<String> {
    pool.iter()
        .filter(|name| {
            moves
                .iter()
                .any(|m| op_module(&m.op) == Some(name.as_str()))
        })
        .cloned()
        .collect()
}

fn op_module(op: &Op) -> Option<&str> {
    match op {
        Op::Load(m)
        | Op::Disable(m)
        | Op::Unload(m)
        | Op::Wait(m)
        | Op::Reverse(m)
        | Op::Force(m) => Some(m),
        Op::WritePatchEnabled { module, .. } => Some(module),
        Op::Park | Op::Release | Op::Spin | Op::StopSpin | Op::WriteFeatureEnabled { .. } => None,
    }
}

/// The scenario file: `header` as comments, klp_target loaded first, then
/// each move with the errno the model predicts.
pub fn scenario_yaml(
    header: &str,
    description: &str,
    fixtures: &[String],
    moves: &[Move],
    cpus: u32,
) -> String {
    let mut text = String::new();
    for line in header.lines() {
        let _ = writeln!(text, "# {line}");
    }
    let _ = writeln!(text, "description: {description}");
    if cpus != crate::vm::DEFAULT_CPUS {
        let _ = writeln!(text, "cpus: {cpus}");
    }
    let _ = writeln!(text, "follow_model: true");
    let mut all = vec![target::MODULE.to_string()];
    all.extend(fixtures.iter().cloned());
    let _ = writeln!(text, "fixtures: [{}]", all.join(", "));
    let _ = writeln!(text, "steps:\n  - load: {TARGET}");
    for m in moves {
        let step = match &m.op {
            Op::Load(x) => format!("load: {x}"),
            Op::Disable(x) => format!("disable: {x}"),
            Op::Unload(x) => format!("unload: {x}"),
            Op::Wait(x) => format!("wait: {x}"),
            Op::Reverse(x) => format!("reverse: {x}"),
            Op::Force(x) => format!("force: {x}"),
            Op::Park => format!("park: {TARGET}"),
            Op::Release => format!("release: {TARGET}"),
            Op::Spin => format!("spin: {TARGET}"),
            Op::StopSpin => format!("stop_spin: {TARGET}"),
            Op::WritePatchEnabled { module, value } => format!(
                "write: /sys/kernel/livepatch/{module}/enabled\n    value: \"{}\"",
                u8::from(*value)
            ),
            Op::WriteFeatureEnabled { id, value } => format!(
                "write: /sys/kernel/klp_features/{id}/enabled\n    value: \"{}\"",
                u8::from(*value)
            ),
        };
        let _ = writeln!(text, "  - {step}");
        if !m.wait && matches!(m.op, Op::Load(_) | Op::Disable(_)) {
            text.push_str("    wait_transition: false\n");
        }
        push_outcome(&mut text, m);
    }
    text
}

/// The steps of the scenario `scenario_yaml` writes for `moves` (its
/// `text`), made from the model's operations directly: each at its line
/// of the text, so that a failure points into the file once it is saved.
pub fn checked_steps(file: &Path, text: &str, moves: &[Move]) -> Vec<CheckedStep> {
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.starts_with("  - "))
        .map(|(index, _)| index as u64 + 1);
    let load_target = (Op::Load(TARGET.to_string()), true, None);
    let steps = moves.iter().map(|m| {
        let refused = match m.outcome {
            Response::Refused(errno) => Some(errno.to_string()),
            _ => None,
        };
        (m.op.clone(), m.wait, refused)
    });
    std::iter::once(load_target)
        .chain(steps)
        .zip(lines)
        .enumerate()
        .map(|(index, ((op, wait, refused), line))| CheckedStep {
            label: (index + 1).to_string(),
            position: Position {
                file: file.to_path_buf(),
                line,
                column: 5,
            },
            action: action(&op),
            wait_transition: wait || !matches!(op, Op::Load(_) | Op::Disable(_)),
            expected_errno: refused,
            within: None,
            follow_model: true,
            shows_bug: false,
            expect: Default::default(),
            op: Some(op),
        })
        .collect()
}

/// The scenario action that performs a model operation.
fn action(op: &Op) -> Action {
    let (kind, operand, value) = match op {
        Op::Load(x) => (Kind::Load, x.clone(), None),
        Op::Disable(x) => (Kind::Disable, x.clone(), None),
        Op::Unload(x) => (Kind::Unload, x.clone(), None),
        Op::Wait(x) => (Kind::Wait, x.clone(), None),
        Op::Reverse(x) => (Kind::Reverse, x.clone(), None),
        Op::Force(x) => (Kind::Force, x.clone(), None),
        Op::Park => (Kind::Park, TARGET.to_string(), None),
        Op::Release => (Kind::Release, TARGET.to_string(), None),
        Op::Spin => (Kind::Spin, TARGET.to_string(), None),
        Op::StopSpin => (Kind::StopSpin, TARGET.to_string(), None),
        Op::WritePatchEnabled { module, value } => (
            Kind::Write,
            format!("/sys/kernel/livepatch/{module}/enabled"),
            Some(u8::from(*value).to_string()),
        ),
        Op::WriteFeatureEnabled { id, value } => (
            Kind::Write,
            format!("/sys/kernel/klp_features/{id}/enabled"),
            Some(u8::from(*value).to_string()),
        ),
    };
    Action {
        kind,
        operand,
        value,
    }
}

fn push_outcome(text: &mut String, m: &Move) {
    if let Response::Refused(errno) = m.outcome {
        let _ = writeln!(text, "    error: {errno}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::pool;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn start(seed: u64) -> (Model, Vec<String>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let fixtures = pool::generate(&mut rng, seed, 6, Default::default());
        let defs = fixtures.iter().map(|f| (f.name.clone(), f.def())).collect();
        let mut model = Model::new(
            defs,
            &crate::kernel::behaviour::Profile::from_version(&[7, 2]),
        );
        model.step(&Op::Load(target::MODULE.into()), true).unwrap();
        (model, fixtures.into_iter().map(|f| f.name).collect())
    }

    /// The steps made from the model's operations are the ones the
    /// scenario loader makes of the saved text: one vocabulary.
    #[test]
    fn steps_made_from_operations_match_the_saved_scenario() {
        let project = crate::project::Project::at(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fixtures_dir = crate::scenario::local_fixtures_dir(&dir.path().join("s.yaml"));
        std::fs::create_dir_all(&fixtures_dir).unwrap();
        let mut compared = 0;
        for seed in 0..40 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let fixtures = pool::generate(&mut rng, seed, 6, Default::default());
            for fixture in &fixtures {
                let file = fixtures_dir.join(format!("{}.yaml", fixture.name));
                std::fs::write(file, fixture.yaml(seed)).unwrap();
            }
            let (model, pool) = start(seed);
            let ops = generate(&mut rng, &model, &pool, 12);
            let moves = replay(&model, &ops).unwrap();
            let file = dir.path().join(format!("seed{seed}.yaml"));
            let text = scenario_yaml("h", "d", &fixtures_used(&pool, &moves), &moves, 1);
            let parsed = crate::scenario::parse(&project, &file, &text).unwrap();
            let made = checked_steps(&file, &text, &moves);
            assert_eq!(made.len(), parsed.steps.len(), "{text}");
            for (made, parsed) in made.iter().zip(&parsed.steps) {
                let shown = |s: &CheckedStep| {
                    format!(
                        "{} {} {} {:?} {} {:?} {}",
                        s.label,
                        s.position,
                        s.action,
                        s.expected_errno,
                        s.wait_transition,
                        s.op,
                        s.follow_model
                    )
                };
                assert_eq!(shown(made), shown(parsed), "{text}");
                compared += 1;
            }
        }
        assert!(compared > 200, "{compared}");
    }

    #[test]
    fn a_fifth_of_sequences_force_or_reverse_then_remove_what_was_involved() {
        let runs = 300;
        let mut rare = std::collections::BTreeMap::new();
        for seed in 0..runs {
            let (model, pool) = start(seed);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let ops = generate(&mut rng, &model, &pool, 10);
            let moves = replay(&model, &ops).expect("a generated sequence replays");
            if let Some(kind) = rare_flow(&model, &moves) {
                *rare.entry(kind).or_insert(0) += 1;
            }
        }
        let total: u64 = rare.values().sum();
        assert!(total * 5 >= runs, "{total} of {runs}: {rare:?}");
        assert!(
            rare.contains_key("force") && rare.contains_key("reverse"),
            "{rare:?}"
        );
    }

    #[test]
    fn generated_sequences_replay_and_render_as_valid_scenarios() {
        let project = crate::project::Project::at(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        for seed in 0..20 {
            let (model, pool) = start(seed);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let ops = generate(&mut rng, &model, &pool, 12);
            let moves = replay(&model, &ops).expect("a generated sequence replays");
            let fixtures = fixtures_used(&pool, &moves);
            let cpus = 1 + (seed % 2) as u32;
            let text = scenario_yaml("seed", "d", &fixtures, &moves, cpus);
            // The fixtures must exist beside the scenario for it to load.
            let local = dir.path().join(format!("s{seed}"));
            std::fs::create_dir_all(local.join("fixtures")).unwrap();
            let mut prng = ChaCha8Rng::seed_from_u64(seed);
            for f in pool::generate(&mut prng, seed, 6, Default::default()) {
                std::fs::write(
                    local.join("fixtures").join(format!("{}.yaml", f.name)),
                    f.yaml(seed),
                )
                .unwrap();
            }
            let file = local.join("found.yaml");
            let scenario = crate::scenario::parse(&project, &file, &text)
                .unwrap_or_else(|err| panic!("{err:#}\n{text}"));
            assert_eq!(scenario.steps.len(), moves.len() + 1);
            assert!(scenario.steps.iter().all(|s| s.follow_model));
            assert_eq!(scenario.cpus, cpus);
        }
    }
}
