//! Ingest throughput through the real gRPC service: records/s with checks,
//! identity join, policy verdict and storage, as probes would send them.
//!
//! Run: `cargo bench -p flowgate-collector --bench ingest`. Prints figures;
//! the client runs on the same machine, so "per core" divides by all cores.

use std::path::PathBuf;
use std::time::Instant;

use flowgate_client::{self as client, replay};
use flowgate_collector::{ClusterSource, Config};
use flowgate_proto::v1::Flow;

const STREAMS: usize = 2;
const BATCHES_PER_STREAM: usize = 100;
const FLOWS_PER_BATCH: usize = 5_000;

fn flows(seed: usize) -> Vec<Flow> {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/e2e-flows.yaml");
    let text = std::fs::read_to_string(&fixture).expect("the flow fixture");
    let base = replay::to_flows(
        "bench",
        &replay::parse("bench", &text).expect("parse"),
        flowgate_collector::now_ns(),
    )
    .expect("flows");
    (0..FLOWS_PER_BATCH)
        .map(|i| {
            let mut f = base[(i + seed) % base.len()].clone();
            // Vary the client port so that rows differ; the verdict cache
            // still sees the few distinct (src, dst, port) keys a real
            // cluster has.
            f.src_port = 30_000 + ((i * 7 + seed) % 20_000) as u32;
            f
        })
        .collect()
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let data = tempfile::tempdir().expect("tempdir");
        let cluster = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster");
        let mut config = Config::new(ClusterSource::Files(vec![cluster]), data.path().to_path_buf());
        config.grpc_listen = "127.0.0.1:0".parse().expect("addr");
        config.http_listen = "127.0.0.1:0".parse().expect("addr");
        let collector = flowgate_collector::run(config).await.expect("collector");
        let url = format!("http://{}", collector.grpc_addr());
        // Warm-up: connections, caches.
        client::send_batches(&url, replay::batches("warm", "n", flows(0), FLOWS_PER_BATCH)).await.expect("warm-up");

        // The batches are made before the clock starts: the figure is the
        // collector's (gRPC decode, checks, identity, verdict, storage) plus
        // the client's encoding, which shares these cores.
        let streams: Vec<Vec<_>> = (0..STREAMS)
            .map(|s| {
                (0..BATCHES_PER_STREAM)
                    .flat_map(|b| replay::batches(&format!("probe-{s}"), "n", flows(b), FLOWS_PER_BATCH))
                    .enumerate()
                    .map(|(i, mut batch)| {
                        batch.sequence = i as u64 + 1;
                        batch
                    })
                    .collect()
            })
            .collect();
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for batches in streams {
            let url = url.clone();
            tasks.spawn(async move { client::send_batches(&url, batches).await.expect("send") });
        }
        let mut stored = 0u64;
        while let Some(acks) = tasks.join_next().await {
            stored += acks.expect("task").iter().map(|a| u64::from(a.flows_stored)).sum::<u64>();
        }
        let elapsed = started.elapsed();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let rate = stored as f64 / elapsed.as_secs_f64();
        println!("ingest: {stored} flows in {:.2?} over {STREAMS} gRPC streams", elapsed);
        println!("ingest: {rate:.0} records/s total, {:.0} records/s per core ({cores} cores, client included)", rate / cores as f64);
        collector.shutdown().await.expect("shutdown");
    });
}
