//! Random operation sequences the model can follow, their replay through
//! the model, and their text as a scenario file.

use crate::fixture::target::{self, MODULE as TARGET};
use crate::model::{Model, Op, Response};
use rand::seq::IndexedRandom;
use rand::Rng;
use std::fmt::Write as _;

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

/// A random sequence of about `steps` operations over the pool's patches.
/// Every step that leaves a transition free to end is followed by a wait.
pub fn generate(rng: &mut impl Rng, start: &Model, pool: &[String], steps: usize) -> Vec<Op> {
    let mut model = start.clone();
    let mut ops = Vec::new();
    while ops.len() < steps {
        let candidates = candidates(&model, pool);
        let op = candidates
            .choose_weighted(rng, |(_, weight)| *weight)
            .expect("there is always a load or unload to choose")
            .0
            .clone();
        let wait = waits(&model, &op);
        let prediction = model.step(&op, wait).expect("candidates are predictable");
        ops.push(op);
        if !prediction.settled {
            let (module, _) = model.in_transition().expect("an unsettled transition");
            let wait = Op::Wait(module.to_string());
            model.step(&wait, true).expect("a wait is predictable");
            ops.push(wait);
        }
    }
    ops
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
) -> String {
    let mut text = String::new();
    for line in header.lines() {
        let _ = writeln!(text, "# {line}");
    }
    let _ = writeln!(text, "description: {description}");
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
        let fixtures = pool::generate(&mut rng, seed, 6);
        let defs = fixtures.iter().map(|f| (f.name.clone(), f.def())).collect();
        let mut model = Model::new(
            defs,
            &crate::kernel::behaviour::Profile::from_version(&[7, 2]),
        );
        model.step(&Op::Load(target::MODULE.into()), true).unwrap();
        (model, fixtures.into_iter().map(|f| f.name).collect())
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
            let text = scenario_yaml("seed", "d", &fixtures, &moves);
            // The fixtures must exist beside the scenario for it to load.
            let local = dir.path().join(format!("s{seed}"));
            std::fs::create_dir_all(local.join("fixtures")).unwrap();
            let mut prng = ChaCha8Rng::seed_from_u64(seed);
            for f in pool::generate(&mut prng, seed, 6) {
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
        }
    }
}
