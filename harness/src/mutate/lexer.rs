//! Just enough of C's lexical structure to mutate code and nothing else:
//! comments, string and character literals and preprocessor lines are
//! whole tokens, so no operator inside them is ever taken for code.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Space,
    Comment,
    /// A preprocessor directive with its continuation lines.
    Directive,
    Str,
    Char,
    Number,
    Ident,
    Punct,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn text<'a>(&self, source: &'a str) -> &'a str {
        &source[self.start..self.end]
    }

    /// Spaces, comments and directives: not code.
    pub fn is_trivia(&self) -> bool {
        matches!(self.kind, Kind::Space | Kind::Comment | Kind::Directive)
    }
}

/// Multi-character punctuators, longest first.
const PUNCTS: &[&str] = &[
    "<<=", ">>=", "...", "->", "++", "--", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "+=",
    "-=", "*=", "/=", "%=", "&=", "|=", "^=", "##",
];

/// Split `source` into tokens that cover it exactly, in order.
pub fn tokens(source: &str) -> Vec<Token> {
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    let mut line_start = true;
    while at < bytes.len() {
        let start = at;
        let c = bytes[at];
        let kind = if c == b'\n' || c.is_ascii_whitespace() {
            while at < bytes.len() && bytes[at].is_ascii_whitespace() {
                line_start |= bytes[at] == b'\n';
                at += 1;
            }
            out.push(Token {
                kind: Kind::Space,
                start,
                end: at,
            });
            continue;
        } else if source[at..].starts_with("/*") {
            at = source[at + 2..]
                .find("*/")
                .map_or(bytes.len(), |i| at + 2 + i + 2);
            Kind::Comment
        } else if source[at..].starts_with("//") {
            at = line_end(bytes, at);
            Kind::Comment
        } else if c == b'#' && line_start {
            at = line_end(bytes, at);
            Kind::Directive
        } else if c == b'"' || c == b'\'' {
            at += 1;
            while at < bytes.len() && bytes[at] != c && bytes[at] != b'\n' {
                at += if bytes[at] == b'\\' { 2 } else { 1 };
            }
            at = (at + 1).min(bytes.len());
            if c == b'"' {
                Kind::Str
            } else {
                Kind::Char
            }
        } else if c.is_ascii_digit() {
            while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'.') {
                at += 1;
            }
            Kind::Number
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
                at += 1;
            }
            Kind::Ident
        } else {
            let len = PUNCTS
                .iter()
                .find(|p| source[at..].starts_with(*p))
                .map_or_else(
                    || source[at..].chars().next().map_or(1, char::len_utf8),
                    |p| p.len(),
                );
            at += len;
            Kind::Punct
        };
        // A token ends on a character boundary, whatever the input.
        while at < bytes.len() && !source.is_char_boundary(at) {
            at += 1;
        }
        // A comment between a line's start and `#` does not happen in
        // kernel code; anything else ends the line's start.
        line_start = false;
        out.push(Token {
            kind,
            start,
            end: at.min(bytes.len()),
        });
    }
    out
}

/// The end of the line at `at`, past backslash continuations (the
/// newline itself is not included).
fn line_end(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() {
        if bytes[at] == b'\n' && (at == 0 || bytes[at - 1] != b'\\') {
            break;
        }
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(source: &str) -> Vec<(Kind, &str)> {
        tokens(source)
            .into_iter()
            .filter(|t| t.kind != Kind::Space)
            .map(|t| (t.kind, t.text(source)))
            .collect()
    }

    #[test]
    fn operators_in_comments_strings_and_directives_are_not_code() {
        let source = "#include <a.h>\n#define X(a) \\\n  (a == 1)\nint f(void) /* a == b */\n{\n\treturn s == \"x==y\" && c != '=';\n}\n";
        assert_eq!(
            kinds(source),
            [
                (Kind::Directive, "#include <a.h>"),
                (Kind::Directive, "#define X(a) \\\n  (a == 1)"),
                (Kind::Ident, "int"),
                (Kind::Ident, "f"),
                (Kind::Punct, "("),
                (Kind::Ident, "void"),
                (Kind::Punct, ")"),
                (Kind::Comment, "/* a == b */"),
                (Kind::Punct, "{"),
                (Kind::Ident, "return"),
                (Kind::Ident, "s"),
                (Kind::Punct, "=="),
                (Kind::Str, "\"x==y\""),
                (Kind::Punct, "&&"),
                (Kind::Ident, "c"),
                (Kind::Punct, "!="),
                (Kind::Char, "'='"),
                (Kind::Punct, ";"),
                (Kind::Punct, "}"),
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn tokens_cover_any_input_exactly(source in "\\PC*") {
            let mut at = 0;
            for token in tokens(&source) {
                proptest::prop_assert_eq!(token.start, at);
                proptest::prop_assert!(token.end > token.start);
                at = token.end;
            }
            proptest::prop_assert_eq!(at, source.len());
        }
    }

    #[test]
    fn escaped_quotes_and_numbers() {
        assert_eq!(
            kinds(r#"x = "a\"b" + 0x1fUL - 'q' -> y;"#),
            [
                (Kind::Ident, "x"),
                (Kind::Punct, "="),
                (Kind::Str, r#""a\"b""#),
                (Kind::Punct, "+"),
                (Kind::Number, "0x1fUL"),
                (Kind::Punct, "-"),
                (Kind::Char, "'q'"),
                (Kind::Punct, "->"),
                (Kind::Ident, "y"),
                (Kind::Punct, ";"),
            ]
        );
    }
}
