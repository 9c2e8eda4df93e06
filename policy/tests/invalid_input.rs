//! Input the Kubernetes API would reject gets an error naming the object and
//! the problem, never a panic. Each fixture in `tests/fixtures/invalid/`
//! states the error text it must produce on its first line (`# error: …`).

use std::path::Path;

use flowgate_policy::{Cluster, ClusterObjects};

#[test]
fn every_invalid_fixture_is_rejected_with_its_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 15);
    let mut failures = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        let want = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# error: "))
            .unwrap_or_else(|| panic!("{name}: first line must be `# error: …`"));
        let mut objects = ClusterObjects::default();
        let err = match objects.parse_yaml(&name, &text) {
            Err(e) => e.to_string(),
            Ok(()) => match Cluster::build(&objects, 1) {
                Err(e) => e.to_string(),
                Ok(_) => {
                    failures.push(format!("{name}: accepted, expected error {want:?}"));
                    continue;
                }
            },
        };
        if !err.contains(want) {
            failures.push(format!("{name}: error {err:?} lacks {want:?}"));
        }
        assert!(!err.contains('\n'), "{name}: errors are one line: {err:?}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lenient_build_keeps_valid_objects_and_reports_the_rest() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut objects = ClusterObjects::default();
    let base = std::fs::read_to_string(dir.join("semantics/_base.yaml")).unwrap();
    objects.parse_yaml("_base.yaml", &base).unwrap();
    let bad = std::fs::read_to_string(dir.join("invalid/endport-smaller.yaml")).unwrap();
    objects.parse_yaml("bad", &bad).unwrap();
    let good = std::fs::read_to_string(dir.join("semantics/ipblock.yaml")).unwrap();
    objects.parse_yaml("good", &good).unwrap();
    let (cluster, errors) =
        Cluster::build_lenient(&objects.namespaces, &objects.pods, &objects.policies, 3);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].to_string().contains("endport-smaller"));
    assert_eq!(cluster.policies().count(), 1);
    assert_eq!(cluster.pod_count(), 5);
    // objects of other kinds are set aside, not lost
    assert_eq!(objects.ignored, vec!["FlowgateTest <unnamed>".to_string()]);
}
