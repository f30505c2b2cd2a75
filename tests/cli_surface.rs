//! The command line is a scripting interface: its help texts and the keys of every `--json`
//! report are kept in `tests/snapshots/` and a change to either fails here. After a deliberate
//! change, rerun with `WHALEID_BLESS=1` and commit the new snapshot beside the change.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

fn snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name);
    if std::env::var_os("WHALEID_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if expected != actual {
        let first = expected.lines().zip(actual.lines()).position(|(a, b)| a != b);
        panic!(
            "{} differs from the command line's output (first differing line {:?}: expected {:?}, got {:?})",
            path.display(),
            first.map(|i| i + 1),
            first.and_then(|i| expected.lines().nth(i)),
            first.and_then(|i| actual.lines().nth(i)),
        );
    }
}

fn help(args: &[&str]) -> String {
    let out = common::whaleid().args(args).arg("--help").output().expect("whaleid runs");
    assert!(out.status.success(), "whaleid {args:?} --help: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a help text lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn every_help_text_is_unchanged() {
    let mut all = String::new();
    let mut queue = vec![Vec::<String>::new()];
    while let Some(path) = queue.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        all.push_str(&format!("==== whaleid {} --help\n{text}\n", args.join(" ")));
        for sub in subcommands(&text).into_iter().rev() {
            let mut next = path.clone();
            next.push(sub);
            queue.push(next);
        }
    }
    assert!(all.matches("==== whaleid").count() > 20, "every subcommand's help was read");
    snapshot("cli_help.txt", &all);
}

/// Every key path of a JSON value: `a.b`, `list[].c`.
fn key_paths(value: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                out.insert(path.clone());
                key_paths(v, &path, out);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                key_paths(v, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

fn keys_of(name: &str, args: &[&str], home: &Path) -> String {
    let out = common::whaleid().args(args).env("WHALEID_HOME", home).output().expect("whaleid runs");
    assert!(out.status.success(), "whaleid {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("whaleid {args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    let mut keys = BTreeSet::new();
    key_paths(&value, "", &mut keys);
    let mut text = format!("==== {name}\n");
    for k in keys {
        text.push_str(&k);
        text.push('\n');
    }
    text
}

#[test]
fn the_keys_of_every_json_report_are_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dir.path().join("synth");
    let moved = dir.path().join("moved");
    let cat = dir.path().join("c.whaleid");
    let (d, c) = (data.to_str().unwrap(), cat.to_str().unwrap());
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let mut all = String::new();
    let synth = ["synth", "--out", d, "--individuals", "3", "--images-per-individual", "3", "--seed", "2", "--json"];
    all += &keys_of("synth", &synth, &home);
    all += &keys_of("import", &["import", "--catalog", c, d, "--json"], &home);
    all += &keys_of("stats", &["stats", "--catalog", c, "--json"], &home);
    for format in ["csv", "coco", "yolo", "crops", "mark"] {
        let to = out(&format!("export-{format}"));
        all += &keys_of(
            &format!("export {format}"),
            &["export", "--catalog", c, "--format", format, "--out", &to, "--json"],
            &home,
        );
    }
    all += &keys_of("history", &["history", "--catalog", c, "--json"], &home);
    all += &keys_of("undo", &["undo", "--catalog", c, "--json"], &home);
    all += &keys_of("redo", &["redo", "--catalog", c, "--json"], &home);
    std::fs::rename(&data, &moved).unwrap();
    all += &keys_of("relink", &["relink", "--catalog", c, moved.to_str().unwrap(), "--json"], &home);
    let demo = out("demo.whaleid");
    all += &keys_of("demo", &["demo", "--catalog", &demo, "--json"], &home);
    snapshot("json_keys.txt", &all);
}
