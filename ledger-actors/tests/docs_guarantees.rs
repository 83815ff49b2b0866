//! The docs promise exactly what each durability level gives.

/// README and OPERATIONS.md state the guarantee of each durability level and no longer
/// promise that every acknowledged append is committed or that no record is ever lost.
#[test]
fn docs_state_each_durability_level_exactly() {
    let readme = include_str!("../../README.md");
    let operations = include_str!("../../docs/OPERATIONS.md");
    for (name, doc) in [("README.md", readme), ("OPERATIONS.md", operations)] {
        for phrase in [
            "every acknowledged append is committed",
            "no lost record",
            "never loses an acknowledged",
        ] {
            assert!(
                !doc.to_lowercase().contains(phrase),
                "{name} still promises {phrase:?}"
            );
        }
    }
    for level in ["`Committed`", "`Spooled`", "`Buffered`", "`Volatile`"] {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| {level} |")))
            .unwrap_or_else(|| panic!("README has no guarantee row for {level}"));
        assert_eq!(row.matches('|').count(), 4, "{row}");
    }
    assert!(readme.contains("lost if the process dies before PostgreSQL returns"));
    assert!(operations.contains("`Buffered` (no\nspool: lost if the process dies"));
    // The misconfiguration table exists with its three columns.
    assert!(operations.contains("| Misconfiguration | What the ledger says | Exit |"));
}
