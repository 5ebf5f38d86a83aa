//! What kbuild prints: the parts of a failed build's log worth showing.
//! Kernel builds and fixture builds both use it.

/// The diagnostics of a failed build: each `file:line:col: error:` with the
/// lines gcc prints under it, else the tail of the log.
pub fn compiler_messages(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let mut shown = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if line.contains(": error:") || line.contains(": fatal error:") {
            shown.extend(
                lines[index..]
                    .iter()
                    .take(4)
                    .take_while(|l| !l.starts_with("make")),
            );
        }
    }
    if shown.is_empty() {
        shown = lines.iter().rev().take(30).rev().copied().collect();
    }
    shown.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiler_errors_are_shown_with_position() {
        let log = "make: Entering directory\n  CC [M]  /f/x.c\n\
                   /f/x.c:12:9: error: 'foo' undeclared\n   12 |  return foo;\n      |         ^~~\n\
                   make[2]: *** [x.o] Error 1\n";
        let shown = compiler_messages(log);
        assert!(shown.starts_with("/f/x.c:12:9: error: 'foo' undeclared"));
        assert!(shown.contains("^~~"));
        assert!(!shown.contains("make[2]"));
    }
}
