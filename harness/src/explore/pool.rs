//! A generated pool of livepatch fixtures: random features and versions,
//! cumulative and not, with functions that several patches replace.

use crate::fixture::shadow::{Callback, ShadowCall, ShadowOp, ShadowVars};
use crate::fixture::spec::{Feature, KernelApi, LivepatchSpec, StateSpec};
use crate::model::{replaceable_functions, PatchDef, BUSY_FUNCTION};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt::Write as _;

/// Feature ids the pool draws from: few, so that patches share them.
const FEATURE_IDS: &[u64] = &[1, 2, 3];
const MAX_VERSION: u32 = 3;
/// How many of the pool's patches use shadow variables.
const SHADOW_RATE: f64 = 0.7;
/// On a kernel with the states series: how many states block disable,
/// and how many tie a shadow variable to the state.
const BLOCK_DISABLE_RATE: f64 = 0.3;
const IS_SHADOW_RATE: f64 = 0.5;
/// Objects and ids they draw from: few, so that patches meet each
/// other's variables.
const SHADOW_OBJECTS: u8 = 2;
const SHADOW_IDS: u8 = 2;
/// Mixed into the seed of the shadow variables' stream.
const SHADOW_STREAM: u64 = 0x5ad0_5ad0;

pub struct PoolFixture {
    pub name: String,
    pub spec: LivepatchSpec,
}

/// `size` fixtures named after the seed, so that pools of different seeds
/// can sit side by side. The first is cumulative, the second not.
///
/// On a kernel with replace sets (`replace_sets`) every patch replaces;
/// the ones drawn non-cumulative go to set 1, the others to set 0, so a
/// seed draws the same features and functions on every kernel. On a
/// kernel with the states series the drawn features become states (no
/// version), with callbacks, some blocking disable, some with shadow
/// variables, and the patches run no shadow operations of their own.
pub fn generate(rng: &mut impl Rng, seed: u64, size: usize, api: KernelApi) -> Vec<PoolFixture> {
    // Shadow variables come from a stream of their own: a seed's features
    // and functions, and so its sequences, stay what they were before
    // the pool had them.
    let mut shadow_rng = ChaCha8Rng::seed_from_u64(seed ^ SHADOW_STREAM);
    (0..size)
        .map(|index| {
            let drawn_cumulative = match index {
                0 => true,
                1 => false,
                _ => rng.random_bool(0.5),
            };
            let (replace, replace_set) = match api.replace_set {
                true => (true, Some(u32::from(!drawn_cumulative))),
                false => (drawn_cumulative, None),
            };
            let count = rng.random_range(0..=2);
            let mut ids: Vec<u64> = FEATURE_IDS.choose_multiple(rng, count).copied().collect();
            ids.sort();
            let features: Vec<Feature> = ids
                .into_iter()
                .map(|id| Feature {
                    id,
                    version: rng.random_range(1..=MAX_VERSION),
                    name: None,
                    opt_in: false,
                    shadow: false,
                })
                .collect();
            // Most patches replace the busy function, so that parking matters.
            let mut functions: Vec<String> = replaceable_functions()
                .into_iter()
                .filter(|f| rng.random_bool(if *f == BUSY_FUNCTION { 0.7 } else { 0.5 }))
                .map(str::to_string)
                .collect();
            if functions.is_empty() {
                functions.push(BUSY_FUNCTION.to_string());
            }
            let (features, states, shadow_vars) = match api.states {
                true => (
                    vec![],
                    Some(states(&features, &mut shadow_rng)),
                    ShadowVars::default(),
                ),
                false => (features, None, shadow_vars(&mut shadow_rng)),
            };
            PoolFixture {
                name: format!("klp_s{seed}_{}", (b'a' + index as u8) as char),
                spec: LivepatchSpec {
                    replace,
                    features,
                    callbacks: Default::default(),
                    functions: Some(functions),
                    reports: None,
                    klp_relocs: false,
                    sympos: None,
                    shadow_vars,
                    replace_set,
                    states,
                },
            }
        })
        .collect()
}

/// The states series' states for the drawn features' ids.
fn states(features: &[Feature], rng: &mut impl Rng) -> Vec<StateSpec> {
    features
        .iter()
        .map(|f| {
            let is_shadow = rng.random_bool(IS_SHADOW_RATE);
            StateSpec {
                id: f.id,
                callbacks: true,
                pre_patch_error: None,
                block_disable: rng.random_bool(BLOCK_DISABLE_RATE),
                is_shadow,
            }
        })
        .collect()
}

/// One to four shadow variable operations in random callbacks, for most
/// of the patches.
fn shadow_vars(rng: &mut impl Rng) -> ShadowVars {
    let mut vars = ShadowVars::default();
    if !rng.random_bool(SHADOW_RATE) {
        return vars;
    }
    for _ in 0..rng.random_range(1..=4) {
        let call = *ShadowCall::ALL.choose(rng).expect("calls");
        let callback = *Callback::ALL.choose(rng).expect("callbacks");
        let (value, ctor_error) = match rng.random_range(0..4) {
            _ if !call.allocates() => (None, None),
            0 => (None, None),
            1 => (None, Some("ENOMEM".to_string())),
            _ => (Some(rng.random_range(1..100)), None),
        };
        vars.at_mut(callback).push(ShadowOp {
            op: call,
            obj: (call != ShadowCall::FreeAll).then(|| rng.random_range(0..SHADOW_OBJECTS)),
            id: rng.random_range(1..=SHADOW_IDS),
            value,
            ctor_error,
            dtor: matches!(call, ShadowCall::Free | ShadowCall::FreeAll) && rng.random_bool(0.5),
        });
    }
    vars
}

impl PoolFixture {
    pub fn def(&self) -> PatchDef {
        PatchDef::from_spec(&self.name, &self.spec)
    }

    /// The fixture spec file (fixtures/*.yaml format).
    pub fn yaml(&self, seed: u64) -> String {
        let mut text = format!(
            "# Generated by `klp-harness explore --seed {seed}`.\nlivepatch:\n  replace: {}\n",
            self.spec.replace
        );
        if let Some(set) = self.spec.replace_set {
            let _ = writeln!(text, "  replace_set: {set}");
        }
        let functions = self.spec.functions.clone().unwrap_or_default();
        let _ = writeln!(text, "  functions: [{}]", functions.join(", "));
        if !self.spec.shadow_vars.is_empty() {
            text.push_str(&self.spec.shadow_vars.yaml(2));
        }
        if self.spec.states.as_ref().is_some_and(Vec::is_empty) {
            text.push_str("  states: []\n");
        } else if let Some(states) = &self.spec.states {
            text.push_str("  states:\n");
            for state in states {
                let _ = writeln!(
                    text,
                    "    - {{id: {}, callbacks: {}, block_disable: {}, is_shadow: {}}}",
                    state.id, state.callbacks, state.block_disable, state.is_shadow
                );
            }
        } else if self.spec.features.is_empty() {
            text.push_str("  features: []\n");
        } else {
            text.push_str("  features:\n");
            for f in &self.spec.features {
                let _ = writeln!(text, "    - {{id: {}, version: {}}}", f.id, f.version);
            }
        }
        text
    }

    /// One line for reports: `klp_s1_a cumulative f1=v2 [status, busy]`.
    pub fn summary(&self) -> String {
        let kind = match (self.spec.replace, self.spec.replace_set) {
            (_, Some(set)) => format!("set {set}"),
            (true, None) => "cumulative".to_string(),
            (false, None) => "non-cumulative".to_string(),
        };
        let states = self.spec.states().iter().map(|s| {
            let block = if s.block_disable { ",block" } else { "" };
            let shadow = if s.is_shadow { ",shadow" } else { "" };
            format!("s{}{block}{shadow}", s.id)
        });
        let features: Vec<String> = self
            .spec
            .features
            .iter()
            .map(|f| format!("f{}=v{}", f.id, f.version))
            .chain(states)
            .collect();
        let vars = &self.spec.shadow_vars;
        let shadow: Vec<String> = Callback::ALL
            .iter()
            .flat_map(|c| {
                vars.at(*c)
                    .iter()
                    .map(move |op| format!("{} {}", c.name(), op.yaml()))
            })
            .collect();
        format!(
            "{} {kind} {} replaces {}{}",
            self.name,
            if features.is_empty() && self.spec.states.is_some() {
                "no states".to_string()
            } else if features.is_empty() {
                "no features".to_string()
            } else {
                features.join(" ")
            },
            self.spec.functions.clone().unwrap_or_default().join(", "),
            if shadow.is_empty() {
                String::new()
            } else {
                format!("; shadow: {}", shadow.join(", "))
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const PLAIN: KernelApi = KernelApi {
        replace_set: false,
        states: false,
    };
    const SETS: KernelApi = KernelApi {
        replace_set: true,
        states: false,
    };

    #[test]
    fn pools_are_reproducible_and_parse_back() {
        let pool = |seed| generate(&mut ChaCha8Rng::seed_from_u64(seed), seed, 6, PLAIN);
        let first: Vec<String> = pool(7).iter().map(|f| f.yaml(7)).collect();
        let again: Vec<String> = pool(7).iter().map(|f| f.yaml(7)).collect();
        assert_eq!(first, again);
        for fixture in pool(7) {
            let text = fixture.yaml(7);
            let parsed: crate::fixture::spec::FixtureFile =
                crate::yaml::parse_str(std::path::Path::new("x.yaml"), &text).unwrap();
            assert_eq!(
                PatchDef::from_spec(&fixture.name, &parsed.livepatch),
                fixture.def()
            );
        }
        let kinds: Vec<bool> = pool(7).iter().map(|f| f.spec.replace).collect();
        assert_eq!(&kinds[..2], [true, false]);
    }

    #[test]
    fn with_replace_sets_the_drawn_kind_picks_the_set() {
        let plain = generate(&mut ChaCha8Rng::seed_from_u64(3), 3, 6, PLAIN);
        let sets = generate(&mut ChaCha8Rng::seed_from_u64(3), 3, 6, SETS);
        for (plain, in_set) in plain.iter().zip(&sets) {
            assert!(in_set.spec.replace);
            assert_eq!(
                in_set.spec.replace_set,
                Some(u32::from(!plain.spec.replace))
            );
            assert_eq!(in_set.spec.features.len(), plain.spec.features.len());
            assert_eq!(in_set.spec.functions, plain.spec.functions);
            let text = in_set.yaml(3);
            let parsed: crate::fixture::spec::FixtureFile =
                crate::yaml::parse_str(std::path::Path::new("x.yaml"), &text).unwrap();
            assert_eq!(parsed.livepatch.replace_set, in_set.spec.replace_set);
        }
        assert!(sets[1].summary().contains("set 1"));
    }

    #[test]
    fn with_the_states_series_features_become_states() {
        let states = KernelApi {
            replace_set: false,
            states: true,
        };
        let plain = generate(&mut ChaCha8Rng::seed_from_u64(5), 5, 8, PLAIN);
        let pool = generate(&mut ChaCha8Rng::seed_from_u64(5), 5, 8, states);
        for (plain, fixture) in plain.iter().zip(&pool) {
            assert!(fixture.spec.features.is_empty() && fixture.spec.shadow_vars.is_empty());
            let ids: Vec<u64> = fixture.spec.states().iter().map(|s| s.id).collect();
            let drawn: Vec<u64> = plain.spec.features.iter().map(|f| f.id).collect();
            assert_eq!(ids, drawn);
            assert_eq!(fixture.spec.functions, plain.spec.functions);
            let text = fixture.yaml(5);
            let parsed: crate::fixture::spec::FixtureFile =
                crate::yaml::parse_str(std::path::Path::new("x.yaml"), &text).unwrap();
            assert_eq!(
                PatchDef::from_spec(&fixture.name, &parsed.livepatch),
                fixture.def()
            );
        }
        let all: Vec<&StateSpec> = pool.iter().flat_map(|f| f.spec.states()).collect();
        assert!(all.iter().any(|s| s.block_disable) && all.iter().any(|s| s.is_shadow));
    }
}
