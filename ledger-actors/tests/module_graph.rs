//! Dependencies between a crate's top-level modules point one way: this test fails on any
//! cycle, naming the modules and the files that close it.
//!
//! A module's dependencies are the `crate::NAME` paths its files use (`use crate::x::…`,
//! `use crate::{x, y}`, and inline `crate::x::f()`), outside comments (doc links are not
//! dependencies) and outside its `#[cfg(test)] mod tests`. `lib.rs`/`main.rs` are the root
//! and may name every module. The parser is deliberately simple; the self-test below keeps it
//! honest on each form it understands.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module → (module it uses → first file that uses it).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The identifier `text` starts with (after whitespace), if any.
fn leading_ident(text: &str) -> Option<String> {
    let name: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The top-level modules a source text uses through `crate::`.
fn uses(text: &str) -> BTreeSet<String> {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        // `crate::` preceded by an identifier character is another path (`$crate::`, or a
        // crate named `foo_crate`).
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: each comma-separated item's first segment (nested
            // groups only name deeper items). The group ends at its matching brace.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.extend(leading_ident(&item));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(leading_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
        } else {
            // Items defined at the root (`crate::Ledger`) start with a capital: not modules.
            out.extend(
                leading_ident(rest).filter(|n| n.starts_with(|c: char| c.is_ascii_lowercase())),
            );
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src").to_path_buf();
        let first = rel.components().next().expect("a file name");
        let top = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source is UTF-8");
        let node = graph.entry(top.clone()).or_default();
        for used in uses(&text) {
            if used != top {
                node.entry(used)
                    .or_insert_with(|| rel.display().to_string());
            }
        }
    }
    graph
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flat_map(|e| e.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn describe(graph: &Graph, component: &[String]) -> String {
    let mut lines = Vec::new();
    for a in component {
        for (b, file) in &graph[a] {
            if component.contains(b) {
                lines.push(format!("  {a} -> {b} (in {file})"));
            }
        }
    }
    lines.join("\n")
}

#[test]
fn no_cycle_between_the_modules_of_any_workspace_crate() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    let mut failures = Vec::new();
    for krate in [
        "ledger-actors",
        "ledger-tlog",
        "ledger-entities",
        "ledger-cli",
        "migration",
    ] {
        let src = root.join(krate).join("src");
        let graph = graph(&src);
        checked += graph.len();
        for component in cycles(&graph) {
            failures.push(format!(
                "{krate}: cycle between {}:\n{}",
                component.join(", "),
                describe(&graph, &component)
            ));
        }
    }
    // The workspace has dozens of modules: an empty walk would pass for the wrong reason.
    assert!(checked > 20, "only {checked} modules found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The parser and the cycle finder on each form they handle.
#[test]
fn the_checker_sees_each_form_of_use_and_finds_a_planted_cycle() {
    let text = "use crate::alpha::X;\n\
                use crate::{beta, gamma::{Y, Z}, delta::W};\n\
                fn f() { crate::epsilon::go(); }\n\
                // crate::commented::out\n\
                /// [`crate::doclink`]\n\
                macro_rules! m { () => { $crate::macro_path } }\n\
                use crate::Root;\n\
                #[cfg(test)]\nmod tests { use crate::only_tests; }\n";
    let found: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(found, ["alpha", "beta", "delta", "epsilon", "gamma"]);

    let mut g = Graph::new();
    let edge = |g: &mut Graph, a: &str, b: &str| {
        g.entry(a.into())
            .or_default()
            .insert(b.into(), format!("{a}.rs"));
        g.entry(b.into()).or_default();
    };
    edge(&mut g, "a", "b");
    edge(&mut g, "b", "c");
    edge(&mut g, "c", "d");
    assert!(cycles(&g).is_empty());
    edge(&mut g, "d", "b");
    assert_eq!(cycles(&g), vec![vec!["b", "c", "d"]]);
    assert!(describe(&g, &cycles(&g)[0]).contains("d -> b (in d.rs)"));
}
