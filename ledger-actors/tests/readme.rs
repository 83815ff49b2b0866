//! The README's embedding example is `examples/embed.rs` verbatim (which `cargo test` builds).

/// The README shows the example that CI compiles, so the README's code cannot rot.
#[test]
fn readme_embeds_the_compiled_example() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../examples/embed.rs");
    assert!(
        readme.contains(example.trim()),
        "README.md must contain ledger-actors/examples/embed.rs verbatim"
    );
}
