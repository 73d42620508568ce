//! The README's examples are the example crates' own code: the command of
//! "Writing a command" is `examples/hello-plugin`'s, and its test is one of
//! that crate's tests, so what the README shows is what the suite builds
//! and runs. The doc tests (`ReadmeSnippets` in `src/lib.rs`) compile every
//! Rust snippet, but the body of a `#[test]` function in a doc test is never
//! even type-checked: only this comparison keeps the test snippet true.

const README: &str = include_str!("../../README.md");
const HELLO: &str = include_str!("../../examples/hello-plugin/src/lib.rs");
const HELLO_TESTS: &str = include_str!("../../examples/hello-plugin/tests/hello.rs");

/// The Rust snippets of the README (fences opened by ```` ```rust ````), in
/// order, each without its fences.
fn rust_snippets() -> Vec<String> {
    let mut snippets = Vec::new();
    let mut current: Option<String> = None;
    for line in README.lines() {
        match current.as_mut() {
            None if line.starts_with("```rust") => current = Some(String::new()),
            None => {}
            Some(_) if line == "```" => snippets.extend(current.take()),
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    assert!(current.is_none(), "README.md ends inside a code block");
    snippets
}

/// The one README snippet that contains `needle`.
fn snippet_with(needle: &str) -> String {
    let found: Vec<String> = rust_snippets()
        .into_iter()
        .filter(|s| s.contains(needle))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "README.md has {} Rust snippets containing {needle:?}, not one: {found:#?}",
        found.len()
    );
    found.into_iter().next().unwrap_or_default()
}

#[test]
fn the_readmes_command_is_the_hello_plugins_own_code() {
    let snippet = snippet_with("impl ManageCommand for Hello");
    assert!(
        HELLO.contains(&snippet),
        "README.md's `hello` command is not examples/hello-plugin/src/lib.rs word for word; \
         make them the same:\n{snippet}"
    );
}

#[test]
fn the_readmes_test_is_one_of_the_hello_plugins_own_tests() {
    let snippet = snippet_with("#[test]");
    let (uses, test) = snippet
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("no blank line after the use lines in:\n{snippet}"));
    for line in uses.lines() {
        assert!(
            HELLO_TESTS.lines().any(|l| l == line),
            "examples/hello-plugin/tests/hello.rs has no line {line:?}"
        );
    }
    assert!(
        HELLO_TESTS.contains(test),
        "README.md's test is not one of examples/hello-plugin/tests/hello.rs word for word; \
         make them the same:\n{test}"
    );
}
