//! The library's imports follow its map: data flows one way (lib.rs,
//! docs/ARCHITECTURE.md), so every `crate::` and `super::` reference of a
//! module must point down the layer list below, and the submodules of any
//! one module must not import each other in a cycle.
//!
//! The references are read from the source text: `crate::a::b` and
//! `super::x` paths, including grouped `use crate::{a, b}` imports.
//! Test code (from the first `#[cfg(test)]` of a file, and tests.rs
//! files) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The library's top-level modules, lowest first: each may use only the
/// ones before it.
const LAYERS: &[&str] = &[
    // Read by every layer: errors, exit statuses, YAML, events, signals,
    // settings.
    "errno",
    "exit",
    "yaml",
    "event",
    "interrupt",
    "settings",
    // Paths, the cache, host tools, then the data flow itself.
    "project",
    // The guest architectures' records (kernels/arch/).
    "arch",
    "cache",
    "host",
    "kbuild",
    "kernel",
    "fixture",
    "image",
    "vm",
    "guest",
    // A ready guest from a request: kernel, fixtures, image, VM.
    "testbed",
    "model",
    "scenario",
    "peer",
    "report",
    // Scenarios × kernels run as one suite, reported as they end.
    "suite",
    "bundle",
    "explore",
    "mutate",
    "edit_loop",
    "bench",
    "ui",
];

type ModulePath = Vec<String>;

struct Module {
    path: ModulePath,
    /// Code, without test code and comments.
    code: String,
}

fn modules() -> Vec<Module> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = Vec::new();
    for entry in walkdir::WalkDir::new(&src).sort_by_file_name() {
        let entry = entry.unwrap();
        let relative = entry.path().strip_prefix(&src).unwrap();
        if relative.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let mut path: ModulePath = relative
            .with_extension("")
            .iter()
            .map(|part| part.to_string_lossy().into_owned())
            .collect();
        if path.last().is_some_and(|last| last == "mod") {
            path.pop();
        }
        let top = path.first().map(String::as_str);
        // The crate roots are no layer: lib.rs, and the binary (main.rs, or
        // bin/klp-harness/), which uses the library only through its
        // public paths.
        let root = matches!(top, Some("lib" | "main" | "bin"));
        if root || path.last().is_some_and(|l| l == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        let code = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        modules.push(Module { path, code });
    }
    modules
}

/// The paths a module refers to: `crate::a::b` ──> [a, b], and
/// `super::x` ──> the parent's path + [x]. Only identifiers are kept.
fn references(module: &Module) -> Vec<ModulePath> {
    let mut found = Vec::new();
    let code = &module.code;
    let mut rest = code.as_str();
    while let Some(at) = rest.find(['c', 's']) {
        let tail = &rest[at..];
        let boundary = at == 0 || !is_ident(rest[..at].chars().last().unwrap());
        let (base, after) = if !boundary {
            (None, &tail[1..])
        } else if let Some(after) = tail.strip_prefix("crate::") {
            (Some(Vec::new()), after)
        } else if tail.starts_with("super::") {
            let mut base = module.path.clone();
            let mut after = tail;
            while let Some(next) = after.strip_prefix("super::") {
                base.pop();
                after = next;
            }
            (Some(base), after)
        } else {
            (None, &tail[1..])
        };
        if let Some(base) = base {
            for tail_path in paths_after(after) {
                let mut path = base.clone();
                path.extend(tail_path);
                found.push(path);
            }
        }
        rest = after;
    }
    found
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `a::b::C` ──> [[a, b, C]]; `{a, b::{c, d}}` ──> [[a], [b, c], [b, d]].
fn paths_after(text: &str) -> Vec<ModulePath> {
    let mut prefix = Vec::new();
    let mut rest = text;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            return split_group(group)
                .into_iter()
                .flat_map(paths_after)
                .map(|tail| prefix.iter().cloned().chain(tail).collect())
                .filter(|path: &ModulePath| !path.is_empty())
                .collect();
        }
        let ident: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if ident.is_empty() || ident == "self" {
            return vec![prefix];
        }
        rest = &rest[ident.len()..];
        prefix.push(ident);
        match rest.strip_prefix("::") {
            Some(next) => rest = next,
            None => return vec![prefix],
        }
    }
}

/// The items of `a, b::{c, d}} ...` (the text after an opening brace),
/// split at the commas of this level.
fn split_group(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(group[start..at].trim());
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(group[start..at].trim());
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(group[start..].trim());
    items
}

/// The module a path lands in: its longest prefix that is a module.
fn resolve(path: &[String], known: &BTreeSet<ModulePath>) -> Option<ModulePath> {
    (1..=path.len())
        .rev()
        .map(|len| path[..len].to_vec())
        .find(|prefix| known.contains(prefix))
}

/// What each module's `pub use` lines re-export: (module, name) ──> the
/// path the name stands for. `pub use child::X` in `m` makes `m::X`
/// mean `m::child::X`.
fn reexports(modules: &[Module]) -> BTreeMap<(ModulePath, String), ModulePath> {
    let mut found = BTreeMap::new();
    for module in modules {
        for line in module.code.lines() {
            let Some(rest) = line.trim_start().strip_prefix("pub use ") else {
                continue;
            };
            // `crate::` and `super::` paths are absolute already.
            let absolute = Module {
                path: module.path.clone(),
                code: rest.to_string(),
            };
            let mut paths = references(&absolute);
            if paths.is_empty() {
                paths = paths_after(rest.trim_start_matches("self::"))
                    .into_iter()
                    .map(|tail| module.path.iter().cloned().chain(tail).collect())
                    .collect();
            }
            for path in paths {
                if let Some(name) = path.last() {
                    found.insert((module.path.clone(), name.clone()), path);
                }
            }
        }
    }
    found
}

/// The module a reference lands in, following re-exports to where the
/// item is defined.
fn resolve_through(
    reference: &[String],
    known: &BTreeSet<ModulePath>,
    reexports: &BTreeMap<(ModulePath, String), ModulePath>,
) -> Option<ModulePath> {
    let mut path = reference.to_vec();
    for _ in 0..8 {
        let target = resolve(&path, known)?;
        let Some(name) = path.get(target.len()) else {
            return Some(target);
        };
        match reexports.get(&(target.clone(), name.clone())) {
            Some(source) if source != &path[..target.len() + 1] => {
                let mut next = source.clone();
                next.extend(path[target.len() + 1..].iter().cloned());
                path = next;
            }
            _ => return Some(target),
        }
    }
    resolve(&path, known)
}

/// Edges between siblings: (parent, from child, to child); "self" stands
/// for the parent's own code.
fn sibling_edges(modules: &[Module]) -> BTreeSet<(ModulePath, String, String)> {
    let known: BTreeSet<ModulePath> = modules.iter().map(|m| m.path.clone()).collect();
    let reexports = reexports(modules);
    let mut edges = BTreeSet::new();
    for module in modules {
        for reference in references(module) {
            let Some(target) = resolve_through(&reference, &known, &reexports) else {
                continue;
            };
            let common = module
                .path
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            let parent = module.path[..common].to_vec();
            let from = module.path.get(common).cloned();
            let to = target.get(common).cloned();
            match (from, to) {
                (Some(from), Some(to)) => {
                    edges.insert((parent, from, to));
                }
                // A child using its ancestor's own items.
                (Some(from), None) => {
                    edges.insert((parent, from, "self".to_string()));
                }
                // An ancestor using its child: `mod` and `pub use` lines
                // are not code that depends on it.
                (None, Some(to)) if !only_declares(module, &to) => {
                    edges.insert((parent, "self".to_string(), to));
                }
                _ => {}
            }
        }
    }
    edges
}

/// Whether a module refers to its child only in `mod` and `pub use` lines.
fn only_declares(module: &Module, child: &str) -> bool {
    let mentions = |line: &&str| line.contains(&format!("{child}::"));
    module.code.lines().filter(mentions).all(|line| {
        let line = line.trim_start();
        line.starts_with("pub use ") || line.starts_with("mod ") || line.starts_with("pub mod ")
    })
}

fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut found = stack[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, stack, done) {
                return Some(found);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_import_only_lower_layers() {
    let modules = modules();
    let tops: BTreeSet<&str> = modules.iter().map(|m| m.path[0].as_str()).collect();
    for top in &tops {
        assert!(
            LAYERS.contains(top),
            "src/{top} is not in LAYERS; place it in the data flow"
        );
    }
    let layer = |name: &str| LAYERS.iter().position(|l| *l == name);
    let mut wrong = Vec::new();
    for (parent, from, to) in sibling_edges(&modules) {
        if !parent.is_empty() {
            continue;
        }
        if let (Some(a), Some(b)) = (layer(&from), layer(&to)) {
            if b >= a {
                wrong.push(format!("{from} uses {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the data flow:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn submodules_import_each_other_without_cycles() {
    let mut graphs: BTreeMap<ModulePath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (parent, from, to) in sibling_edges(&modules()) {
        if !parent.is_empty() {
            graphs
                .entry(parent)
                .or_default()
                .entry(from)
                .or_default()
                .insert(to);
        }
    }
    let cycles: Vec<String> = graphs
        .iter()
        .filter_map(|(parent, edges)| {
            cycle(edges).map(|c| format!("in {}: {}", parent.join("::"), c.join(" -> ")))
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles:\n  {}",
        cycles.join("\n  ")
    );
}

#[test]
fn the_reader_sees_the_kinds_of_references_it_must() {
    let module = Module {
        path: vec!["scenario".into(), "run".into()],
        code: "use super::step::{Action, Kind};\nuse crate::{fixture, model::Response};\n\
               let x = crate::kernel::features::parse(y);\nlet s = subcrate::x;"
            .into(),
    };
    let found: Vec<String> = references(&module)
        .iter()
        .map(|path| path.join("::"))
        .collect();
    assert_eq!(
        found,
        [
            "scenario::step::Action",
            "scenario::step::Kind",
            "fixture",
            "model::Response",
            "kernel::features::parse"
        ]
    );
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    edges.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        cycle(&edges),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}

/// docs/ARCHITECTURE.md describes every module of the layer list.
#[test]
fn the_architecture_page_names_every_layer() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ARCHITECTURE.md");
    let text = std::fs::read_to_string(&page).unwrap();
    let missing: Vec<&str> = LAYERS
        .iter()
        .copied()
        .filter(|layer| !text.contains(&format!("- `{layer}`:")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md lacks a \"- `MODULE`: ...\" line for: {}",
        missing.join(", ")
    );
}

/// A child reaching a sibling through its parent's `pub use` depends on
/// that sibling: `run` using `super::Timeouts`, re-exported from
/// `session`, while `session` uses `run`, is a cycle.
#[test]
fn a_cycle_through_a_reexport_is_a_cycle() {
    let module = |path: &[&str], code: &str| Module {
        path: path.iter().map(|p| p.to_string()).collect(),
        code: code.to_string(),
    };
    let modules = [
        module(
            &["s"],
            "mod run;\nmod session;\npub use session::{execute, Timeouts};",
        ),
        module(&["s", "run"], "use super::Timeouts;"),
        module(&["s", "session"], "use super::run;\nfn f() { run::go() }"),
    ];
    let edges = sibling_edges(&modules);
    assert!(
        edges.contains(&(vec!["s".into()], "run".into(), "session".into())),
        "{edges:?}"
    );
    let graph: BTreeMap<String, BTreeSet<String>> =
        edges
            .into_iter()
            .fold(BTreeMap::new(), |mut graph, (_, from, to)| {
                graph.entry(from).or_default().insert(to);
                graph
            });
    assert!(cycle(&graph).is_some(), "{graph:?}");
}
