//! The architecture's invariants (ARCHITECTURE.md, "Invariants"), checked over the source: imports
//! run one way (no cycle between files, each module on its stair), kernels are a leaf, only the
//! command line knows clap, only the device module names a device, and no code outside `cell/`
//! matches on the kind of cell. Read from the `use` lines and `crate::` paths of `src/`, with
//! comments and string literals blanked out first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The stairs, bottom first: a file may import from its own stair or a lower one, never a higher
/// one (and the import graph between files has no cycle). A module not listed fails the test, so
/// a new module must be given its place.
const STAIRS: &[&[&str]] = &[
    // Hot loops and the instruction-set dispatch: know nothing of models.
    &["kernels"],
    // What a network is: its cells, their kinds and forms, its shapes and parameters; and what
    // training draws at random.
    &["cell", "config", "stochastic"],
    // Text in and out, independent of any network.
    &["words", "vocab", "corpus", "tokens", "progress"],
    // The device, and the three forms of the network: candle's graph, the fused CPU window, the
    // batch-1 stream.
    &["runtime"],
    &["model", "fused", "infer"],
    // Optimizer, checkpoints, scoring, generation.
    &["optim"],
    &["checkpoint", "plot"],
    &["eval", "generate"],
    // Training.
    &["train"],
    // The subcommands and the server.
    &[
        "report", "demo", "info", "bench", "gradflow", "heatmap", "repl",
    ],
    &["serve"],
    // The command line: the only module that knows clap.
    &["cli"],
    &["lib", "main"],
];

struct File {
    /// Module path (`["fused", "window"]`; `mod.rs` is its folder's module).
    module: Vec<String>,
    /// The text with comments and string literals blanked out.
    code: String,
}

fn sources() -> BTreeMap<PathBuf, File> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    walk(&root, &mut paths);
    paths
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            let code = blank(&std::fs::read_to_string(&p).unwrap());
            (
                p.strip_prefix(root.parent().unwrap())
                    .unwrap()
                    .to_path_buf(),
                File { module, code },
            )
        })
        .collect()
}

/// Comments, string and char literals replaced by spaces (newlines kept), so that only code is
/// searched. Raw strings (`r"…"`, `r#"…"#`) included; lifetimes left alone.
fn blank(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let keep = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(keep(c[i]));
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (c.get(i + 1) == Some(&'"') || c.get(i + 1) == Some(&'#'))
            && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
        {
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.extend(c[i..j.min(c.len())].iter().map(|&ch| keep(ch)));
            i = j;
        } else if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    out.push(keep(c[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' && (c.get(i + 2) == Some(&'\'') || (c.get(i + 1) == Some(&'\\'))) {
            // A char literal ('a', '\n', '\u{..}'), not a lifetime.
            let mut j = i + 1;
            if c[j] == '\\' {
                j += 2;
            }
            while j < c.len() && c[j] != '\'' {
                j += 1;
            }
            out.extend(c[i..=j.min(c.len() - 1)].iter().map(|&ch| keep(ch)));
            i = j + 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Paths named in `code` relative to `crate::`, `super::` or `self::`, and `use x::…` of a
/// child module, as absolute module paths (possibly running past the module into an item).
/// Inline modules (`mod tests { use super::*; }`) move `self` and `super` down with them.
fn named_paths(file: &File, modules: &BTreeSet<Vec<String>>) -> Vec<Vec<String>> {
    let code: Vec<char> = file.code.chars().collect();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    // The inline modules we are in: (name, the brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut pending_mod: Option<String> = None;
    let mut i = 0;
    while i < code.len() {
        let ch = code[i];
        if ch == '{' {
            depth += 1;
            if let Some(name) = pending_mod.take() {
                inline.push((name, depth));
            }
            i += 1;
            continue;
        }
        if ch == '}' {
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
            depth = depth.saturating_sub(1);
            i += 1;
            continue;
        }
        if ch == ';' {
            pending_mod = None;
        }
        if !(ch.is_alphabetic() || ch == '_') || (i > 0 && is_word(code[i - 1])) {
            i += 1;
            continue;
        }
        // A word, or a path of words (`crate::a::b`, `super::*`).
        let mut j = i;
        while j < code.len() && (is_word(code[j]) || code[j] == ':' || code[j] == '*') {
            j += 1;
        }
        let token: String = code[i..j].iter().collect();
        let mut me = file.module.clone();
        me.extend(inline.iter().map(|(n, _)| n.clone()));
        if token == "mod" {
            // `mod name {` opens an inline module; `mod name;` declares a file.
            let rest: String = code[j..].iter().take(200).collect();
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|&c| is_word(c))
                .collect();
            pending_mod = Some(name);
            i = j;
            continue;
        }
        if token == "use" {
            let end = code[j..]
                .iter()
                .position(|&c| c == ';')
                .map_or(code.len(), |k| j + k);
            let tree: String = code[j..end].iter().collect();
            let mut paths = Vec::new();
            expand_use(tree.trim(), "", &mut |p| paths.push(p));
            for p in paths {
                if let Some(abs) = resolve(&p, &me, modules) {
                    out.push(abs);
                }
            }
            i = end;
            continue;
        }
        if token.contains("::") {
            if let Some(abs) = resolve(&token, &me, modules) {
                out.push(abs);
            }
        }
        i = j;
    }
    out
}

/// `path` (`crate::a::b`, `super::x`, `self::y`, or `child::z` of a child module of `me`) as an
/// absolute module path; `None` for anything else (an outside crate, a local name).
fn resolve(path: &str, me: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let segs: Vec<String> = path
        .split("::")
        .map(|x| x.trim().to_string())
        .take_while(|x| !x.is_empty() && x.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .collect();
    let (head, rest) = segs.split_first()?;
    let up = |n: usize, rest: &[String]| -> Vec<String> {
        let mut b = me[..me.len().saturating_sub(n)].to_vec();
        b.extend(rest.iter().cloned());
        b
    };
    match head.as_str() {
        "crate" => Some(rest.to_vec()),
        "super" => {
            let ups = 1 + rest.iter().take_while(|s| *s == "super").count();
            Some(up(ups, &rest[ups - 1..]))
        }
        "self" => Some(up(0, rest)),
        _ => {
            let mut child = me.to_vec();
            child.push(head.clone());
            modules.contains(&child).then(|| {
                child.extend(rest.iter().cloned());
                child
            })
        }
    }
}

/// Calls `f` with every whole path a `use` tree names (`a::{b, c::*}` gives `a::b`, `a::c::*`).
fn expand_use(tree: &str, prefix: &str, f: &mut dyn FnMut(String)) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim_end_matches("::").trim();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let p = join(prefix, head);
        let mut depth = 0;
        let mut last = 0;
        for (i, ch) in inner.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_use(&inner[last..i], &p, f);
                    last = i + 1;
                }
                _ => {}
            }
        }
        expand_use(&inner[last..], &p, f);
    } else if !tree.is_empty() {
        let item = tree.split(" as ").next().unwrap().trim();
        if item == "self" {
            f(prefix.to_string());
        } else {
            f(join(prefix, item));
        }
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}::{b}"),
    }
}

/// The import graph between files: file → the files whose items it names.
fn graph() -> (
    BTreeMap<PathBuf, File>,
    BTreeMap<PathBuf, BTreeSet<PathBuf>>,
) {
    let files = sources();
    let by_module: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .filter(|(p, _)| !p.ends_with("main.rs"))
        .map(|(p, f)| (f.module.clone(), p.clone()))
        .collect();
    let modules: BTreeSet<Vec<String>> = by_module.keys().cloned().collect();
    let mut edges = BTreeMap::new();
    for (p, f) in &files {
        let mut to = BTreeSet::new();
        for path in named_paths(f, &modules) {
            // The longest prefix that is a module is the file named.
            let target = (1..=path.len())
                .rev()
                .find_map(|k| by_module.get(&path[..k]))
                .or_else(|| by_module.get(&Vec::new()).filter(|_| path.is_empty()));
            if let Some(t) = target {
                if t != p {
                    to.insert(t.clone());
                }
            }
        }
        edges.insert(p.clone(), to);
    }
    (files, edges)
}

fn stair(module: &[String]) -> Option<usize> {
    let top = module.first().map_or("lib", |m| m.as_str());
    STAIRS.iter().position(|s| s.contains(&top))
}

#[test]
fn imports_between_files_have_no_cycle() {
    let (_, edges) = graph();
    // Depth-first search; a grey node reached again closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        White,
        Grey,
        Black,
    }
    let mut mark: BTreeMap<&PathBuf, Mark> = edges.keys().map(|k| (k, Mark::White)).collect();
    let mut cycles = Vec::new();
    fn visit<'a>(
        v: &'a PathBuf,
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        mark: &mut BTreeMap<&'a PathBuf, Mark>,
        stack: &mut Vec<&'a PathBuf>,
        cycles: &mut Vec<String>,
    ) {
        mark.insert(v, Mark::Grey);
        stack.push(v);
        for w in &edges[v] {
            match mark[w] {
                Mark::White => visit(w, edges, mark, stack, cycles),
                Mark::Grey => {
                    let from = stack.iter().position(|s| *s == w).unwrap();
                    let names: Vec<String> = stack[from..]
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect();
                    cycles.push(format!("{} → {}", names.join(" → "), w.display()));
                }
                Mark::Black => {}
            }
        }
        stack.pop();
        mark.insert(v, Mark::Black);
    }
    for v in edges.keys() {
        if mark[v] == Mark::White {
            visit(v, &edges, &mut mark, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn every_import_goes_down_the_stairs() {
    let (files, edges) = graph();
    let mut wrong = Vec::new();
    for (p, to) in &edges {
        let Some(mine) = stair(&files[p].module) else {
            wrong.push(format!(
                "{}: its module has no stair in tests/layers.rs",
                p.display()
            ));
            continue;
        };
        for t in to {
            let theirs = stair(&files[t].module).unwrap_or(usize::MAX);
            if theirs > mine {
                wrong.push(format!(
                    "{} imports {} from a higher stair",
                    p.display(),
                    t.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Files of `src/` (outside `allowed`) whose code (comments and strings aside) contains `needle`.
fn files_naming(needle: &str, allowed: &[&str]) -> Vec<String> {
    sources()
        .iter()
        .filter(|(p, _)| !allowed.iter().any(|a| p.starts_with(a)))
        .filter(|(_, f)| f.code.contains(needle))
        .map(|(p, _)| p.display().to_string())
        .collect()
}

#[test]
fn kernels_know_nothing_of_models() {
    let (files, edges) = graph();
    let leaky: Vec<String> = edges
        .iter()
        .filter(|(p, _)| p.starts_with("src/kernels"))
        .flat_map(|(p, to)| {
            to.iter()
                .filter(|t| !t.starts_with("src/kernels"))
                .map(move |t| format!("{} imports {}", p.display(), t.display()))
        })
        .collect();
    assert!(files.len() > 10 && leaky.is_empty(), "{leaky:?}");
}

#[test]
fn only_the_command_line_knows_clap() {
    let found = files_naming("clap", &["src/cli"]);
    assert!(found.is_empty(), "clap outside src/cli/: {found:?}");
}

#[test]
fn only_the_device_module_names_a_device() {
    for needle in [
        "Device::Cpu",
        "Device::Cuda",
        "CpuStorage",
        "Device::new_cuda",
    ] {
        let found = files_naming(needle, &["src/runtime/"]);
        assert!(found.is_empty(), "{needle} outside src/runtime/: {found:?}");
    }
}

#[test]
fn no_code_outside_cell_matches_on_the_kind_of_cell() {
    let mut found = Vec::new();
    for (p, f) in sources() {
        if p.starts_with("src/cell") {
            continue;
        }
        let code = f.code.replace(char::is_whitespace, "");
        for bad in ["CellKind::Elman=>", "CellKind::Lstm=>", "CellKind::Gru=>"]
            .iter()
            .chain(&["==CellKind::", "!=CellKind::", "==crate::cell::CellKind::"])
        {
            if code.contains(bad) {
                found.push(format!("{}: {bad}", p.display()));
            }
        }
        if code.contains("matchself.cell{") || code.contains(".cell{CellKind") {
            found.push(format!("{}: a match on a cell kind", p.display()));
        }
    }
    assert!(found.is_empty(), "{found:?}");
}

/// The checks above read real code: a cycle, a stair broken and a word in a comment, each as the
/// parser must see it.
#[test]
fn the_source_reader_sees_what_it_must() {
    let f = File {
        module: vec!["fused".into(), "window".into()],
        code: blank("use super::{Shared, decoder::X};\nuse crate::kernels::{gemm::mm, packed::*};\n// crate::train\nlet s = \"crate::serve\";\nlet t = crate::cell::of(k, a);\nmod tests {\n    use super::*;\n    fn f() { let x = 1; }\n}\nuse super::window::Y;"),
    };
    let modules: BTreeSet<Vec<String>> = [
        vec!["fused".to_string()],
        vec!["fused".into(), "decoder".into()],
        vec!["kernels".into()],
        vec!["kernels".into(), "gemm".into()],
        vec!["cell".into()],
    ]
    .into_iter()
    .collect();
    let paths: Vec<String> = named_paths(&f, &modules)
        .iter()
        .map(|p| p.join("::"))
        .collect();
    for want in [
        "fused::Shared",
        "fused::decoder::X",
        "kernels::gemm::mm",
        "cell::of",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} not in {paths:?}");
    }
    assert!(
        paths.iter().any(|p| p.starts_with("kernels::packed")),
        "{paths:?}"
    );
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("train") || p.starts_with("serve")),
        "{paths:?}"
    );
    // Inside `mod tests`, `super` is the file's own module; after it, the parent again.
    assert!(paths.iter().any(|p| p == "fused::window"), "{paths:?}");
    assert!(paths.iter().any(|p| p == "fused::window::Y"), "{paths:?}");
    assert!(!paths.iter().any(|p| p == "fused"), "{paths:?}");
}
