//! What a test needs from outside the workspace, checked before it starts anything: a test
//! that lacks a program fails at once with one line naming it and what installs it, rather
//! than deep inside with a timeout.

use std::path::Path;
use std::process::{Command, Stdio};

/// Fails the test unless `program` is on `PATH` (or is a path that exists).
///
/// # Panics
/// `program` is not there: `needs PROGRAM, which scripts/test.sh installs (INSTALL)`.
pub fn program(program: &str, install: &str) {
    let found = if program.contains('/') {
        Path::new(program).exists()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
    };
    assert!(found, "this test needs {program}, which scripts/test.sh installs ({install})");
}

/// Fails the test unless `python3` can import every module of `modules`.
///
/// # Panics
/// `python3` is missing or cannot import one of them, named in the message.
pub fn python_modules(modules: &[&str]) {
    program("python3", "the machine's Python 3");
    let missing: Vec<&str> = modules
        .iter()
        .copied()
        .filter(|module| {
            !Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "this test needs the Python modules {}, which scripts/test.sh installs \
         (pip install -r scripts/requirements.txt)",
        missing.join(", ")
    );
}

/// Fails the test unless Debian's Chromium and Playwright for Python are there: the web
/// console's browser tests drive the one through the other.
///
/// # Panics
/// Either is missing, named in the message.
pub fn browser() {
    program("/usr/bin/chromium", "apt-get install chromium");
    python_modules(&["playwright"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_on_the_path_is_found_and_a_missing_one_named() {
        program("sh", "every machine has it");
        let missing = std::panic::catch_unwind(|| program("no-such-program-here", "nothing"));
        let message = *missing.expect_err("missing").downcast::<String>().expect("a message");
        assert_eq!(
            message,
            "this test needs no-such-program-here, which scripts/test.sh installs (nothing)"
        );
    }
}
