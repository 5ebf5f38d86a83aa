//! The mutation operators, applied to code inside function bodies only:
//!
//! | operator | change |
//! |---|---|
//! | `relational` | `==` ↔ `!=`, `<` ↔ `<=`, `>` ↔ `>=` |
//! | `negate` | `if (c)` / `while (c)` → `if (!(c))` / `while (!(c))` |
//! | `return-zero` | `return -EFOO;` → `return 0;` |
//! | `remove-call` | a statement that is only a call, `f(...);` → `;` |
//! | `logical` | `&&` ↔ `||` |
//! | `off-by-one` | a decimal constant `N` → `N + 1` |
//!
//! `remove-call` leaves out calls that only check or trace (WARN*, BUG*,
//! lockdep_*, might_sleep, pr_debug): without them a correct kernel runs
//! the same way, so such mutants would be equivalent by construction.

use super::lexer::{self, Kind, Token};
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operator {
    Relational,
    Negate,
    ReturnZero,
    RemoveCall,
    Logical,
    OffByOne,
}

impl Operator {
    pub const ALL: [Operator; 6] = [
        Operator::Relational,
        Operator::Negate,
        Operator::ReturnZero,
        Operator::RemoveCall,
        Operator::Logical,
        Operator::OffByOne,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operator::Relational => "relational",
            Operator::Negate => "negate",
            Operator::ReturnZero => "return-zero",
            Operator::RemoveCall => "remove-call",
            Operator::Logical => "logical",
            Operator::OffByOne => "off-by-one",
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Replace `source[start..end]` by `text`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Edit {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mutant {
    /// Relative to the kernel tree's top.
    pub file: PathBuf,
    /// 1-based, of the first edit.
    pub line: usize,
    pub column: usize,
    pub operator: Operator,
    /// The function the code is in.
    pub function: String,
    /// Edits in source order, not overlapping.
    pub edits: Vec<Edit>,
}

impl Mutant {
    /// `core.c:123:9:relational`: unique among the mutants of a tree.
    pub fn id(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.file.file_name().unwrap_or_default().to_string_lossy(),
            self.line,
            self.column,
            self.operator
        )
    }

    pub fn apply(&self, source: &str) -> String {
        let mut out = String::with_capacity(source.len() + 8);
        let mut at = 0;
        for edit in &self.edits {
            out.push_str(&source[at..edit.start]);
            out.push_str(&edit.text);
            at = edit.end;
        }
        out.push_str(&source[at..]);
        out
    }

    /// The changed line(s) before and after, whitespace collapsed.
    pub fn summary(&self, source: &str) -> (String, String) {
        let first = line_start(source, self.edits.first().map_or(0, |e| e.start));
        let last = self.edits.last().map_or(0, |e| e.end);
        let grown: isize = self
            .edits
            .iter()
            .map(|e| e.text.len() as isize - (e.end - e.start) as isize)
            .sum();
        let before = lines_through(source, first, last);
        let after = lines_through(
            &self.apply(source),
            first,
            last.saturating_add_signed(grown),
        );
        (collapse(&before), collapse(&after))
    }

    /// A unified diff (`patch -p1` applies it at the tree's top).
    pub fn diff(&self, source: &str) -> String {
        unified_diff(&self.file, source, &self.apply(source))
    }
}

fn line_start(source: &str, at: usize) -> usize {
    source[..at].rfind('\n').map_or(0, |i| i + 1)
}

/// From `first` to the end of the line holding offset `last`.
fn lines_through(source: &str, first: usize, last: usize) -> String {
    let last = last.min(source.len());
    let end = source[last..].find('\n').map_or(source.len(), |i| last + i);
    source[first..end].to_string()
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Calls whose removal cannot change what a correct kernel does.
fn only_checks(name: &str) -> bool {
    name.starts_with("WARN")
        || name.starts_with("BUG")
        || name.starts_with("lockdep_")
        || name == "might_sleep"
        || name == "pr_debug"
}

const KEYWORDS: &[&str] = &[
    "if",
    "for",
    "while",
    "switch",
    "return",
    "sizeof",
    "do",
    "else",
    "case",
    "goto",
    "break",
    "continue",
    "default",
    "typeof",
    "__typeof__",
    "asm",
];

/// Every mutant of `source` (the file at `file`, relative to the tree), in
/// source order.
pub fn mutants(file: &Path, source: &str) -> Vec<Mutant> {
    let all = lexer::tokens(source);
    let code: Vec<Token> = all.iter().copied().filter(|t| !t.is_trivia()).collect();
    let bodies = function_bodies(source, &code);
    let mut out = Vec::new();
    for body in &bodies {
        for index in body.first..body.last {
            let token = code[index];
            let text = token.text(source);
            let mut push = |operator, edits: Vec<Edit>| {
                let (line, column) = position(source, edits[0].start);
                out.push(Mutant {
                    file: file.to_path_buf(),
                    line,
                    column,
                    operator,
                    function: body.name.clone(),
                    edits,
                })
            };
            let replace = |token: &Token, text: &str| Edit {
                start: token.start,
                end: token.end,
                text: text.to_string(),
            };
            match (token.kind, text) {
                (Kind::Punct, "==" | "!=" | "<" | "<=" | ">" | ">=") => {
                    let flipped = match text {
                        "==" => "!=",
                        "!=" => "==",
                        "<" => "<=",
                        "<=" => "<",
                        ">" => ">=",
                        _ => ">",
                    };
                    push(Operator::Relational, vec![replace(&token, flipped)]);
                }
                (Kind::Punct, "&&") => push(Operator::Logical, vec![replace(&token, "||")]),
                (Kind::Punct, "||") => push(Operator::Logical, vec![replace(&token, "&&")]),
                (Kind::Ident, "if" | "while") => {
                    if let Some(close) = code
                        .get(index + 1)
                        .filter(|t| t.text(source) == "(")
                        .and_then(|_| matching(source, &code, index + 1))
                    {
                        let open = code[index + 1];
                        let close = code[close];
                        push(
                            Operator::Negate,
                            vec![
                                Edit {
                                    start: open.end,
                                    end: open.end,
                                    text: "!(".into(),
                                },
                                Edit {
                                    start: close.start,
                                    end: close.start,
                                    text: ")".into(),
                                },
                            ],
                        );
                    }
                }
                (Kind::Ident, "return") => {
                    let next = |k: usize| code.get(index + k).map(|t| t.text(source));
                    if next(1) == Some("-") && next(2).is_some_and(is_errno) && next(3) == Some(";")
                    {
                        push(
                            Operator::ReturnZero,
                            vec![Edit {
                                start: code[index + 1].start,
                                end: code[index + 2].end,
                                text: "0".into(),
                            }],
                        );
                    }
                }
                (Kind::Ident, name) if !KEYWORDS.contains(&name) && !only_checks(name) => {
                    if let Some(end) = call_statement(source, &code, index) {
                        push(
                            Operator::RemoveCall,
                            vec![Edit {
                                start: token.start,
                                end: code[end].end,
                                text: ";".into(),
                            }],
                        );
                    }
                }
                (Kind::Number, digits) => {
                    let value = digits.trim_end_matches(['u', 'U', 'l', 'L']);
                    let plain = value.bytes().all(|b| b.is_ascii_digit())
                        && (value == "0" || !value.starts_with('0'));
                    if let Some(n) = value.parse::<u64>().ok().filter(|_| plain) {
                        let suffix = &digits[value.len()..];
                        push(
                            Operator::OffByOne,
                            vec![replace(&token, &format!("{}{suffix}", n + 1))],
                        );
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn is_errno(name: &str) -> bool {
    name.len() > 1
        && name.starts_with('E')
        && name[1..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// If `code[index]` starts a statement that is only a call, `name(...);`,
/// the index of its `;`.
fn call_statement(source: &str, code: &[Token], index: usize) -> Option<usize> {
    let before = index.checked_sub(1).map(|i| code[i].text(source));
    let starts = matches!(before, Some(";" | "{" | "}" | ")" | "else" | ":"));
    if !starts || code.get(index + 1)?.text(source) != "(" {
        return None;
    }
    // `x ? a : b(...)` and `case X: f()` both put a `:` first; only a
    // label or case is a statement start, and that is what kernel code has.
    let close = matching(source, code, index + 1)?;
    (code.get(close + 1)?.text(source) == ";").then_some(close + 1)
}

/// The index of the bracket closing the one at `open`.
fn matching(source: &str, code: &[Token], open: usize) -> Option<usize> {
    let (left, right) = match code[open].text(source) {
        "(" => ("(", ")"),
        "{" => ("{", "}"),
        "[" => ("[", "]"),
        _ => return None,
    };
    let mut depth = 0usize;
    for (index, token) in code.iter().enumerate().skip(open) {
        let text = token.text(source);
        if text == left {
            depth += 1;
        } else if text == right {
            depth -= 1;
            if depth == 0 {
                return Some(index);
            }
        }
    }
    None
}

struct Body {
    name: String,
    /// Code token indices strictly inside the braces.
    first: usize,
    last: usize,
}

/// Top-level `{ ... }` that follow a `)`: function definitions.
fn function_bodies(source: &str, code: &[Token]) -> Vec<Body> {
    let mut bodies = Vec::new();
    let mut index = 0;
    while index < code.len() {
        let text = code[index].text(source);
        if text == "{" {
            let Some(close) = matching(source, code, index) else {
                break;
            };
            let is_function = index > 0 && code[index - 1].text(source) == ")";
            if is_function {
                let name = function_name(source, code, index - 1).unwrap_or_default();
                bodies.push(Body {
                    name,
                    first: index + 1,
                    last: close,
                });
            }
            index = close + 1;
        } else {
            index += 1;
        }
    }
    bodies
}

/// The identifier before the parameter list that ends at `close`.
fn function_name(source: &str, code: &[Token], close: usize) -> Option<String> {
    let mut depth = 0usize;
    for index in (0..=close).rev() {
        match code[index].text(source) {
            ")" => depth += 1,
            "(" => {
                depth -= 1;
                if depth == 0 {
                    let name = code.get(index.checked_sub(1)?)?;
                    return (name.kind == Kind::Ident).then(|| name.text(source).to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// 1-based line and column of a byte offset.
fn position(source: &str, at: usize) -> (usize, usize) {
    let line = source[..at].matches('\n').count() + 1;
    let column = at - line_start(source, at) + 1;
    (line, column)
}

/// One hunk around the changed lines, three lines of context.
pub fn unified_diff(file: &Path, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let start = prefix.saturating_sub(3);
    let (a_end, b_end) = (a.len() - suffix, b.len() - suffix);
    let a_stop = (a_end + 3).min(a.len());
    let b_stop = b_end + (a_stop - a_end);
    let mut out = format!(
        "--- a/{path}\n+++ b/{path}\n@@ -{},{} +{},{} @@\n",
        start + 1,
        a_stop - start,
        start + 1,
        b_stop - start,
        path = file.display()
    );
    let mut line = |mark: char, text: &str| {
        out.push(mark);
        out.push_str(text);
        if !text.ends_with('\n') {
            out.push_str("\n\\ No newline at end of file\n");
        }
    };
    for text in &a[start..prefix] {
        line(' ', text);
    }
    for text in &a[prefix..a_end] {
        line('-', text);
    }
    for text in &b[prefix..b_end] {
        line('+', text);
    }
    for text in &a[a_end..a_stop] {
        line(' ', text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "\
#include <linux/kernel.h>
/* if (a == b) return -EINVAL; */
static const char *s = \"x < y && z\";
static int tab[3] = { 1, 2, 3 };

static int klp_check(struct klp_patch *patch, int n)
{
\tif (!patch || n >= 2)
\t\treturn -EINVAL;
\tklp_free(patch);
\tWARN_ON(n == 0);
\tret = klp_do(patch);
\treturn 0;
}
";

    fn found(source: &str) -> Vec<(String, String)> {
        mutants(Path::new("kernel/livepatch/x.c"), source)
            .iter()
            .map(|m| (m.id(), m.summary(source).1))
            .collect()
    }

    #[test]
    fn each_operator_finds_its_sites_inside_functions_only() {
        assert_eq!(
            found(SOURCE),
            [
                ("x.c:8:6:negate", "if (!(!patch || n >= 2))"),
                ("x.c:8:13:logical", "if (!patch && n >= 2)"),
                ("x.c:8:18:relational", "if (!patch || n > 2)"),
                ("x.c:8:21:off-by-one", "if (!patch || n >= 3)"),
                ("x.c:9:10:return-zero", "return 0;"),
                ("x.c:10:2:remove-call", ";"),
                ("x.c:11:12:relational", "WARN_ON(n != 0);"),
                ("x.c:11:15:off-by-one", "WARN_ON(n == 1);"),
                ("x.c:13:9:off-by-one", "return 1;"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn the_diff_applies_with_patch() {
        let dir = tempfile::tempdir().unwrap();
        let file = Path::new("kernel/livepatch/x.c");
        std::fs::create_dir_all(dir.path().join("kernel/livepatch")).unwrap();
        for mutant in mutants(file, SOURCE) {
            std::fs::write(dir.path().join(file), SOURCE).unwrap();
            let output = std::process::Command::new("patch")
                .args(["-p1", "--batch", "--silent"])
                .current_dir(dir.path())
                .stdin(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write;
                    child
                        .stdin
                        .take()
                        .unwrap()
                        .write_all(mutant.diff(SOURCE).as_bytes())?;
                    child.wait_with_output()
                })
                .unwrap();
            assert!(output.status.success(), "{}", mutant.diff(SOURCE));
            assert_eq!(
                std::fs::read_to_string(dir.path().join(file)).unwrap(),
                mutant.apply(SOURCE)
            );
        }
    }

    /// Pieces of C: (text, whether it is code a mutant may touch).
    fn piece() -> impl proptest::strategy::Strategy<Value = (String, bool)> {
        use proptest::prelude::*;
        prop_oneof![
            Just((
                "\tif (a == b && c < 2)\n\t\treturn -EINVAL;\n".to_string(),
                true
            )),
            Just(("\twhile (n >= 0 || !x)\n\t\tn--;\n".to_string(), true)),
            Just(("\tklp_call(a, b);\n".to_string(), true)),
            Just(("\tret = f(1) != 3;\n".to_string(), true)),
            Just((
                "/* if (a == b) return -EINVAL; f(); 1 < 2 */".to_string(),
                false
            )),
            Just(("\t// x && y || z > 1 g();\n".to_string(), false)),
            Just(("\ts = \"a == b && f(); return -EIO;\";\n".to_string(), true)),
            Just(("\tc = '<';\n".to_string(), true)),
        ]
    }

    proptest::proptest! {
        #[test]
        fn mutants_touch_code_only_and_change_it(
            bodies in proptest::collection::vec(proptest::collection::vec(piece(), 0..6), 1..4),
        ) {
            use proptest::{prop_assert, prop_assert_eq};
            // Build a file, remembering where comments and strings are.
            let mut source = String::from("#include <linux/x.h> /* a == b */\n#define M(a) ((a) == 1 && f())\nstatic int t = 1 < 2;\n");
            let mut protected = vec![(0, source.len())];
            for (n, body) in bodies.iter().enumerate() {
                source += &format!("static int f{n}(int a)\n{{\n");
                for (text, _) in body {
                    let start = source.len();
                    source += text;
                    for quote in ["/*", "//", "\"", "'"] {
                        if let Some(at) = text.find(quote) {
                            let end = match quote {
                                "/*" => text.find("*/").unwrap() + 2,
                                "//" => text.len() - 1,
                                _ => at + 1 + text[at + 1..].find(quote).unwrap() + 1,
                            };
                            protected.push((start + at, start + end));
                        }
                    }
                }
                source += "\treturn 0;\n}\n";
            }
            let found = mutants(Path::new("k/x.c"), &source);
            let mut ids = std::collections::BTreeSet::new();
            for mutant in &found {
                prop_assert!(ids.insert(mutant.id()), "duplicate {}", mutant.id());
                for edit in &mutant.edits {
                    prop_assert!(
                        protected.iter().all(|(s, e)| edit.end <= *s || edit.start >= *e),
                        "{} edits protected text", mutant.id()
                    );
                }
                let mutated = mutant.apply(&source);
                prop_assert!(mutated != source);
                // Lines before the first edit and after the last are untouched.
                let first = source[..mutant.edits[0].start].matches('\n').count();
                let after = source[mutant.edits.last().unwrap().end..].matches('\n').count().saturating_sub(1);
                let (a, b): (Vec<&str>, Vec<&str>) = (source.lines().collect(), mutated.lines().collect());
                prop_assert_eq!(&a[..first], &b[..first]);
                prop_assert_eq!(&a[a.len() - after..], &b[b.len() - after..]);
            }
            // Every function has at least its `return 0;` to change.
            prop_assert!(found.len() >= bodies.len());
        }
    }

    #[test]
    fn diff_shows_the_change_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\n";
        let new = "a\nb\nc\nD\ne\nf\ng\n";
        assert_eq!(
            unified_diff(Path::new("k/x.c"), old, new),
            "--- a/k/x.c\n+++ b/k/x.c\n@@ -1,7 +1,7 @@\n a\n b\n c\n-d\n+D\n e\n f\n g\n"
        );
    }
}
