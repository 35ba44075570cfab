//! The command line's shape: what each command parses into, and that every
//! argument says what it is for in `--help`.

use clap::CommandFactory;
use serde_json::json;

use super::*;

/// Parses `args` into the request they make (`null` for the commands that
/// run on their own).
fn parsed(args: &[&str]) -> serde_json::Value {
    let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let op = to_op(&cli.command).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    serde_json::to_value(op).expect("ops serialise")
}

#[test]
fn every_command_parses_into_its_request() {
    let rows: Vec<(Vec<&str>, serde_json::Value)> = vec![
        (vec!["ferry", "init"], json!(null)),
        (vec!["ferry", "--json", "id"], json!({ "op": "id" })),
        (
            vec!["ferry", "org", "create", "District"],
            json!({ "op": "org_create", "name": "District", "authority": null }),
        ),
        (
            vec![
                "ferry",
                "cert",
                "issue",
                "--subject",
                "x",
                "--read",
                "a,b",
                "--write",
                "a",
                "--types",
                "t=ro",
                "--days",
                "3",
                "--can-issue",
                "--out",
                "f",
            ],
            json!({
                "op": "cert_issue", "org": null, "subject": "x", "read": "a,b", "write": "a", "types": "t=ro", "days": 3,
                "can_issue": true, "authority": null, "name": null, "out": "f",
            }),
        ),
        (vec!["ferry", "cert", "list"], json!({ "op": "cert_list" })),
        (vec!["ferry", "cert", "revoke", "00"], json!({ "op": "cert_revoke", "id": "00" })),
        (
            vec!["ferry", "enroll", "token", "--read", "a", "--write", "a", "--ttl", "1h", "--uses", "2"],
            json!({
                "op": "enroll_token", "org": null, "read": "a", "write": "a", "types": "", "ttl_s": 3600, "uses": 2,
                "days": 365, "can_issue": false, "authority": null,
            }),
        ),
        (
            vec!["ferry", "enroll", "ferry-enrol-abc"],
            json!({ "op": "enroll", "token": "ferry-enrol-abc", "name": null }),
        ),
        (
            vec![
                "ferry",
                "put",
                "result",
                "r1",
                "--partition",
                "results",
                "--set",
                "a=1",
                "--set",
                "b=x",
                "--unset",
                "c",
            ],
            json!({
                "op": "put", "org": null, "type": "result", "id": "r1", "partition": "results",
                "set": { "a": 1, "b": "x" }, "unset": ["c"],
            }),
        ),
        (vec!["ferry", "import", "-"], json!({ "op": "import", "org": null, "path": "-" })),
        (
            vec!["ferry", "export", "--type", "result"],
            json!({ "op": "export", "org": null, "type": "result", "partition": null }),
        ),
        (
            vec!["ferry", "get", "result", "r1"],
            json!({ "op": "get", "org": null, "type": "result", "id": "r1", "partition": null }),
        ),
        (
            vec!["ferry", "delete", "result", "r1", "--partition", "p"],
            json!({ "op": "delete", "org": null, "type": "result", "id": "r1", "partition": "p" }),
        ),
        (
            vec!["ferry", "list", "--partition", "results", "--deleted"],
            json!({ "op": "list", "org": null, "type": null, "partition": "results", "deleted": true }),
        ),
        (vec!["ferry", "serve", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"], json!(null)),
        (
            vec!["ferry", "sync", "/ip4/127.0.0.1/tcp/1", "--filter", "results", "--pull-only"],
            json!({
                "op": "sync", "peer": "/ip4/127.0.0.1/tcp/1", "org": null, "filters": ["results"], "pull": true,
                "push": false, "types": [], "skip_types": [],
            }),
        ),
        (
            vec!["ferry", "sync", "p", "--types", "sample,analysis", "--skip-types", "client"],
            json!({
                "op": "sync", "peer": "p", "org": null, "filters": [], "pull": true, "push": true,
                "types": ["sample,analysis"], "skip_types": ["client"],
            }),
        ),
        (vec!["ferry", "peers"], json!({ "op": "peers" })),
        (vec!["ferry", "status"], json!({ "op": "status" })),
        (vec!["ferry", "history"], json!({ "op": "history", "records": false })),
        (vec!["ferry", "history", "--records"], json!({ "op": "history", "records": true })),
        (vec!["ferry", "blob", "list"], json!({ "op": "blob_list" })),
        (vec!["ferry", "blob", "gc"], json!({ "op": "blob_gc" })),
        (vec!["ferry", "blob", "get", "aa", "--out", "f"], json!({ "op": "blob_get", "hash": "aa", "out": "f" })),
        (vec!["ferry", "conflicts"], json!({ "op": "conflicts" })),
        (
            vec!["ferry", "resolve", "result", "r1", "--take", "1"],
            json!({ "op": "resolve", "org": null, "type": "result", "id": "r1", "partition": null, "take": 1, "set": {} }),
        ),
        (
            vec!["ferry", "bundle", "export", "--out", "b", "--for", "p"],
            json!({ "op": "bundle_export", "org": null, "out": "b", "for_peer": "p", "since": null, "filters": [] }),
        ),
        (vec!["ferry", "bundle", "import", "b"], json!({ "op": "bundle_import", "path": "b" })),
        (
            vec!["ferry", "bundle", "frontier", "--out", "f", "--filter", "a"],
            json!({ "op": "bundle_frontier", "org": null, "out": "f", "filters": ["a"] }),
        ),
        (vec!["ferry", "demo"], json!(null)),
    ];
    for (args, expected) in rows {
        assert_eq!(parsed(&args), expected, "{args:?}");
    }
    assert!(Cli::try_parse_from(["ferry", "sync", "p", "--pull-only", "--push-only"]).is_err());
    assert!(
        to_op(
            &Cli::try_parse_from(["ferry", "put", "t", "i", "--partition", "p", "--set", "a"]).expect("parses").command
        )
        .is_err()
    );
    // The local API's older form of history, with no field, still parses.
    let op: crate::ops::Op = serde_json::from_value(json!({ "op": "history" })).expect("history parses");
    assert!(matches!(op, crate::ops::Op::History(crate::ops::History { records: false })));
    let cli = Cli::try_parse_from(["ferry", "--progress", "list"]).expect("parses");
    assert!(cli.progress && !cli.json);
}

/// Every subcommand below `command`, with its path (`ferry cert issue`).
fn walk(command: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
    for sub in command.get_subcommands() {
        let path = format!("{path} {}", sub.get_name());
        out.push((path.clone(), sub.clone()));
        walk(sub, path, out);
    }
}

#[test]
fn every_argument_of_every_command_has_help_text() {
    let root = Cli::command();
    let mut commands = vec![("ferry".to_owned(), root.clone())];
    walk(&root, "ferry".into(), &mut commands);
    let mut missing = Vec::new();
    for (path, command) in &commands {
        if command.get_about().is_none() && path != "ferry help" && !path.starts_with("ferry help ") {
            missing.push(format!("{path} (the command itself)"));
        }
        for arg in command.get_arguments() {
            if arg.get_help().is_none() && !matches!(arg.get_id().as_str(), "help" | "version") {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
    }
    assert!(missing.is_empty(), "arguments without help text: {missing:#?}");
    let paths: Vec<&str> = commands.iter().map(|(p, _)| p.as_str()).collect();
    for deep in ["ferry cert issue", "ferry enroll token", "ferry bundle frontier", "ferry bench"] {
        assert!(paths.contains(&deep), "the walk missed {deep}: {paths:?}");
    }
}
