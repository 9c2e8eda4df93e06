//! `flowgate explain` as a user runs it: the real binary, fixture files.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn policy_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../policy/tests/fixtures")
        .join(name)
}

fn explain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .arg("explain")
        .args(args)
        .output()
        .expect("run flowgate")
}

fn shop(args: &[&str]) -> Output {
    let cluster = fixture("shop.yaml");
    let mut all = vec!["--cluster", cluster.to_str().unwrap()];
    all.extend_from_slice(args);
    explain(&all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn json_output_has_a_top_level_boolean_verdict_and_the_deciding_rules() {
    let o = shop(&[
        "--from", "shop/web", "--to", "shop/api", "--port", "8080", "--output", "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["allowed"], true);
    assert_eq!(v["ingress"]["allowed_by"][0]["name"], "api-from-web");
    assert_eq!(v["ingress"]["allowed_by"][0]["rule_index"], 0);
    // default-deny has no egress rules and no policyTypes: ingress only.
    assert_eq!(v["egress"]["isolated"], false);
    assert!(
        v["egress"]["reason"]
            .as_str()
            .unwrap()
            .contains("no NetworkPolicy selects shop/web for egress")
    );

    // Same pair, wrong port: denied, with the nearest miss in words.
    let o = shop(&[
        "--from",
        "10.10.0.1",
        "--to",
        "shop/api",
        "--port",
        "9090",
        "--output",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["allowed"], false);
    let reasons = v["ingress"]["misses"].to_string();
    assert!(
        reasons.contains("TCP 9090 is not in [TCP named `http` (= 8080 on shop/api)]"),
        "{reasons}"
    );
    assert!(
        reasons.contains("shop/default-deny has no ingress rules"),
        "{reasons}"
    );
}

#[test]
fn text_output_reads_as_a_verdict_per_direction() {
    let o = shop(&[
        "--from",
        "198.51.100.7",
        "--to",
        "shop/web",
        "--port",
        "443",
        "--protocol",
        "udp",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with(
            "DENIED: 198.51.100.7 (outside the cluster) → shop/web (10.10.0.1) UDP 443"
        ),
        "{out}"
    );
    assert!(
        out.contains("egress   [n/a] 198.51.100.7 is outside the cluster"),
        "{out}"
    );
    assert!(out.contains("ingress  [DENY]"), "{out}");
}

#[test]
fn folders_and_several_cluster_flags_combine() {
    let dir = policy_fixture("semantics");
    let o = explain(&[
        "--cluster",
        fixture("shop.yaml").to_str().unwrap(),
        "--cluster",
        dir.to_str().unwrap(),
        "--from",
        "shop/web",
        "--to",
        "shop/api",
        "--port",
        "8080",
        "--output",
        "json",
    ]);
    // The semantics folder holds FlowgateTest documents (ignored) and
    // valid policies; combined with shop.yaml the verdict is unchanged.
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["allowed"], true);
}

/// Every bad input: non-zero exit, one line on stderr naming the problem, no panic.
#[test]
fn bad_input_gets_a_one_line_error() {
    let shop_yaml = fixture("shop.yaml");
    let shop_yaml = shop_yaml.to_str().unwrap();
    let invalid = |n: &str| {
        policy_fixture(&format!("invalid/{n}.yaml"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--cluster".into(),
                shop_yaml.into(),
                "--from".into(),
                "shop/nope".into(),
                "--to".into(),
                "shop/api".into(),
                "--port".into(),
                "80".into(),
            ],
            "unknown pod `shop/nope` (pods in `shop` include: web, api)",
        ),
        (
            vec![
                "--cluster".into(),
                shop_yaml.into(),
                "--from".into(),
                "ghost/x".into(),
                "--to".into(),
                "shop/api".into(),
                "--port".into(),
                "80".into(),
            ],
            "the cluster has no pods in namespace `ghost`",
        ),
        (
            vec![
                "--cluster".into(),
                shop_yaml.into(),
                "--from".into(),
                "web".into(),
                "--to".into(),
                "shop/api".into(),
                "--port".into(),
                "80".into(),
            ],
            "`web` is neither `namespace/pod` nor an IP address",
        ),
        (
            vec![
                "--cluster".into(),
                invalid("malformed-yaml"),
                "--from".into(),
                "1.1.1.1".into(),
                "--to".into(),
                "2.2.2.2".into(),
                "--port".into(),
                "80".into(),
            ],
            "document 2: invalid YAML",
        ),
        (
            vec![
                "--cluster".into(),
                invalid("bad-operator"),
                "--from".into(),
                "1.1.1.1".into(),
                "--to".into(),
                "2.2.2.2".into(),
                "--port".into(),
                "80".into(),
            ],
            "invalid selector: unknown operator `Equals`",
        ),
        (
            vec![
                "--cluster".into(),
                shop_yaml.into(),
                "--from".into(),
                "shop/web".into(),
                "--to".into(),
                "shop/api".into(),
                "--port".into(),
                "0".into(),
            ],
            "port 0 is out of range 1-65535",
        ),
        (
            vec![
                "--cluster".into(),
                "/nonexistent/cluster.yaml".into(),
                "--from".into(),
                "a/b".into(),
                "--to".into(),
                "c/d".into(),
                "--port".into(),
                "80".into(),
            ],
            "cannot read /nonexistent/cluster.yaml",
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = explain(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(want),
            "{args:?}: stderr {err:?} lacks {want:?}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err:?}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(o.stdout.is_empty());
    }
    // Out-of-range numbers are refused by the argument parser, by name.
    let o = shop(&["--from", "shop/web", "--to", "shop/api", "--port", "70000"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid value '70000' for '--port <PORT>'"),
        "{}",
        stderr(&o)
    );
    let o = shop(&[
        "--from",
        "shop/web",
        "--to",
        "shop/api",
        "--port",
        "80",
        "--protocol",
        "GRE",
    ]);
    assert!(
        stderr(&o).contains("unknown protocol `GRE`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn to_name_judges_domain_names_rules() {
    let base = policy_fixture("semantics/_base.yaml");
    let allowlist = policy_fixture("tiers/domain-names.yaml");
    let run = |name: Option<&str>| {
        let mut args = vec![
            "--cluster",
            base.to_str().unwrap(),
            "--cluster",
            allowlist.to_str().unwrap(),
            "--from",
            "dev/client",
            "--to",
            "203.0.113.7",
            "--port",
            "443",
            "--output",
            "json",
        ];
        if let Some(n) = name {
            args.extend(["--to-name", n]);
        }
        let o = explain(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    let named = run(Some("api.example.com"));
    assert_eq!(named["allowed"], true, "{named:#}");
    assert_eq!(
        named["decided_by"][0],
        "admin/egress-allowlist/egress/allow-apis"
    );
    assert!(
        named["summary"]
            .as_str()
            .unwrap()
            .contains("203.0.113.7 (api.example.com)")
    );
    let apex = run(Some("example.com"));
    assert_eq!(apex["allowed"], false, "{apex:#}");
    let unnamed = run(None);
    assert_eq!(unnamed["allowed"], false);
    assert!(
        unnamed["summary"]
            .as_str()
            .unwrap()
            .contains("could not be evaluated"),
        "{unnamed:#}"
    );
}
