//! The cluster history log: changes recorded per generation, replayed on
//! reopen, a torn tail cut off, foreign files refused, past states rebuilt.

use flowgate_collector::cluster::ClusterInputs;
use flowgate_collector::cluster::history::{ChangeKind, History, HistoryError, ObjectChange};
use flowgate_policy::ClusterObjects;

fn inputs(yaml: &str) -> ClusterInputs {
    let mut o = ClusterObjects::default();
    o.parse_yaml("test", yaml).expect("yaml");
    o.into()
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: prod, labels: {app: web}}\nstatus: {podIP: 10.244.1.5}\n";

fn policy(port: u16) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: prod, resourceVersion: \"{port}\"}}\nspec:\n  podSelector: {{}}\n  ingress: [{{ports: [{{port: {port}}}]}}]\n"
    )
}

#[test]
fn changes_are_recorded_replayed_and_rebuilt_at_any_time() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, cut) = History::open(dir.path()).unwrap();
    assert_eq!((cut, h.last_generation()), (0, 0));
    let v1 = inputs(&format!("{POD}---\n{}", policy(80)));
    assert_eq!(h.observe(&v1, 1, 100).unwrap(), 2);
    // Same objects again (a pod status update, a resync): nothing recorded.
    assert_eq!(h.observe(&v1, 2, 200).unwrap(), 0);
    let relabeled = POD.replace("app: web", "app: api");
    let v3 = inputs(&format!("{relabeled}---\n{}", policy(81)));
    assert_eq!(h.observe(&v3, 3, 300).unwrap(), 2);
    let v4 = inputs(&relabeled);
    assert_eq!(h.observe(&v4, 4, 400).unwrap(), 1);
    let kinds: Vec<ChangeKind> = h.changes().iter().map(|c| c.object.change()).collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::Created,
            ChangeKind::Created,
            ChangeKind::Modified,
            ChangeKind::Modified,
            ChangeKind::Deleted
        ]
    );
    assert_eq!(h.generations(), vec![(1, 100), (3, 300), (4, 400)]);
    let recorded = h.changes().to_vec();
    drop(h);

    let (h, cut) = History::open(dir.path()).unwrap();
    assert_eq!(cut, 0);
    assert_eq!(h.changes(), &recorded[..]);
    assert_eq!(h.last_generation(), 4);
    // At 250 the first state stood: the policy on port 80, the pod as web.
    let (at, generation) = h.inputs_at(250).unwrap();
    assert_eq!(generation, 1);
    assert_eq!(at.policies.len(), 1);
    let spec = serde_json::to_value(&at.policies[0].spec).unwrap();
    assert_eq!(spec["ingress"][0]["ports"][0]["port"], 80);
    // Server bookkeeping is not kept: before/after show what was written.
    assert!(at.policies[0].metadata.resource_version.is_none());
    assert_eq!(at.pods[0].metadata.labels.as_ref().unwrap()["app"], "web");
    let (at, generation) = h.inputs_at_generation(4).unwrap();
    assert_eq!((generation, at.policies.len()), (4, 0));
    assert!(h.inputs_at(99).is_none());
    let ObjectChange::NetworkPolicy { before, after, .. } = &recorded[2].object else {
        panic!("{:?}", recorded[2]);
    };
    assert!(before.is_some() && after.is_some());
}

#[test]
fn a_torn_tail_is_cut_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = History::open(dir.path()).unwrap();
    h.observe(&inputs(POD), 1, 100).unwrap();
    h.observe(&inputs(&policy(80)), 2, 200).unwrap();
    drop(h);
    let path = dir.path().join("cluster-history.log");
    let len = std::fs::metadata(&path).unwrap().len();
    // Every cut inside the last record loses only that record.
    for keep in [len - 1, len - 10, len - 30] {
        let data = std::fs::read(&path).unwrap();
        let torn = dir.path().join("torn");
        std::fs::create_dir_all(&torn).unwrap();
        std::fs::write(torn.join("cluster-history.log"), &data[..keep as usize]).unwrap();
        let (h, cut) = History::open(&torn).unwrap();
        assert!(cut > 0, "keep {keep}");
        assert_eq!(
            h.last_generation(),
            2,
            "the pod deletion and policy creation share generation 2"
        );
        assert!(
            h.changes().len() < 3,
            "keep {keep}: {:?}",
            h.changes().len()
        );
        // The file was truncated to the whole records: reopening cuts nothing.
        drop(h);
        assert_eq!(History::open(&torn).unwrap().1, 0);
    }
}

#[test]
fn a_foreign_file_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster-history.log"),
        b"not a history file",
    )
    .unwrap();
    let err = History::open(dir.path()).unwrap_err();
    assert!(matches!(err, HistoryError::BadMagic { .. }), "{err}");
    assert!(
        err.to_string().contains("not a flowgate cluster history"),
        "{err}"
    );
}
