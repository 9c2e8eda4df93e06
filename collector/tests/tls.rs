//! Mutual TLS on gRPC ingest with real certificates made by `flowgate certs`
//! code: a probe with a valid client certificate streams; one without, or
//! with a certificate of another CA, is refused at the handshake; one whose
//! batches claim another node gets REJECTED. Also the bounds on what a
//! frame may hold.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flowgate_client::replay;
use flowgate_collector::certs::{CertsFiles, CertsRequest, generate};
use flowgate_collector::tls::{GrpcTls, client_config};
use flowgate_collector::{ClusterSource, Collector, Config};
use flowgate_proto::v1::flow_ingest_client::FlowIngestClient;
use flowgate_proto::v1::{AckStatus, BatchAck, Flow, FlowBatch, SchemaVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn certs(dir: &Path, nodes: &[&str]) -> Result<CertsFiles> {
    Ok(generate(&CertsRequest {
        out: dir.to_path_buf(),
        collector_names: vec!["localhost".into(), "127.0.0.1".into()],
        probe_nodes: nodes.iter().map(|n| n.to_string()).collect(),
        valid_days: 1,
    })?)
}

async fn start(data: &Path, tls: Option<&CertsFiles>) -> Result<Collector> {
    let mut config = Config::new(
        ClusterSource::Files(vec![fixture("cluster")]),
        data.to_path_buf(),
    );
    config.grpc_listen = "127.0.0.1:0".parse()?;
    config.http_listen = "127.0.0.1:0".parse()?;
    config.grpc_tls = tls.map(|f| GrpcTls {
        cert: f.collector_cert.clone(),
        key: f.collector_key.clone(),
        client_ca: f.ca_cert.clone(),
    });
    Ok(flowgate_collector::run(config).await?)
}

/// A TLS channel trusting `ca`, presenting `identity` when given.
async fn channel(
    collector: &Collector,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Channel> {
    let url = format!("https://localhost:{}", collector.grpc_addr().port());
    let endpoint = Endpoint::from_shared(url)?.tls_config(client_config(ca, identity)?)?;
    Ok(endpoint.connect().await?)
}

fn flows() -> Result<Vec<Flow>> {
    let name = "e2e-flows.yaml";
    let text = std::fs::read_to_string(fixture(name))?;
    Ok(replay::to_flows(
        name,
        &replay::parse(name, &text)?,
        flowgate_collector::now_ns(),
    )?)
}

fn batch(probe_id: &str, node: &str, flows: Vec<Flow>) -> FlowBatch {
    FlowBatch {
        schema_version: SchemaVersion::V1 as i32,
        probe_id: probe_id.into(),
        node: node.into(),
        sequence: 1,
        flows,
        losses: None,
    }
}

/// Streams batches and collects the acks, or the status that ended the stream.
async fn stream(channel: Channel, batches: Vec<FlowBatch>) -> Result<Vec<BatchAck>, tonic::Status> {
    let mut client = FlowIngestClient::new(channel).max_encoding_message_size(usize::MAX);
    let n = batches.len();
    let mut acks_in = client
        .stream(tokio_stream::iter(batches))
        .await?
        .into_inner();
    let mut acks = Vec::new();
    while acks.len() < n {
        match acks_in.message().await? {
            Some(ack) => acks.push(ack),
            None => break,
        }
    }
    Ok(acks)
}

/// GET over plain HTTP/1.0: (status, body).
async fn http_get(collector: &Collector, path: &str) -> Result<(u16, String)> {
    let mut tcp = tokio::net::TcpStream::connect(collector.http_addr()).await?;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    Ok((status, body.unwrap_or_default()))
}

async fn metric(collector: &Collector, line_start: &str) -> Result<f64> {
    let (_, text) = http_get(collector, "/metrics").await?;
    let line = text
        .lines()
        .find(|l| l.starts_with(line_start))
        .with_context(|| format!("no metric {line_start} in\n{text}"))?;
    Ok(line.rsplit(' ').next().unwrap_or("").parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_prove_their_node_with_a_client_certificate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ours = certs(&dir.path().join("ours"), &["node-a"])?;
    let theirs = certs(&dir.path().join("theirs"), &["node-a"])?;
    let data = tempfile::tempdir()?;
    let collector = start(data.path(), Some(&ours)).await?;
    let (_, cert_a, key_a) = &ours.probes[0];

    // A probe with a valid certificate for its node streams.
    let good = channel(&collector, &ours.ca_cert, Some((cert_a, key_a))).await?;
    let acks = stream(good.clone(), vec![batch("node-a/p", "node-a", flows()?)]).await?;
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].status(), AckStatus::Stored, "{acks:?}");
    assert!(acks[0].flows_stored > 0);

    // Claiming another node is REJECTED with the reason, and counted.
    let acks = stream(good, vec![batch("node-b/p", "node-b", flows()?)]).await?;
    assert_eq!(acks[0].status(), AckStatus::Rejected, "{acks:?}");
    assert!(
        acks[0].reason.contains("\"node-b\"") && acks[0].reason.contains("client certificate"),
        "the reason names the node and the certificate: {}",
        acks[0].reason
    );
    assert_eq!(
        metric(
            &collector,
            "flowgate_collector_batches_rejected_total{reason=\"identity\"}"
        )
        .await?,
        1.0
    );

    // No client certificate: refused at the handshake, nothing stored.
    let refused = match channel(&collector, &ours.ca_cert, None).await {
        Err(e) => format!("{e:?}"),
        Ok(ch) => match stream(ch, vec![batch("node-a/x", "node-a", flows()?)]).await {
            Ok(acks) => bail!("a probe without a certificate was answered: {acks:?}"),
            Err(status) => format!("{status:?}"),
        },
    };
    // TLS 1.3 finishes the client's side before the server checks its
    // certificate, so the client sees either the alert or a closed
    // connection: both from the transport, never an answer of the service.
    assert!(
        refused.contains("Transport"),
        "the TLS handshake itself refuses it: {refused}"
    );

    // A certificate of another CA: refused too.
    let (_, cert_x, key_x) = &theirs.probes[0];
    let refused = match channel(&collector, &ours.ca_cert, Some((cert_x, key_x))).await {
        Err(e) => format!("{e:?}"),
        Ok(ch) => match stream(ch, vec![batch("node-a/y", "node-a", flows()?)]).await {
            Ok(acks) => bail!("a certificate of another CA was accepted: {acks:?}"),
            Err(status) => format!("{status:?}"),
        },
    };
    assert!(
        refused.contains("Transport"),
        "refused by the transport, not by a gRPC answer: {refused}"
    );

    // A plaintext client cannot talk to the TLS port at all.
    let plain = Endpoint::from_shared(format!("http://{}", collector.grpc_addr()))?
        .connect()
        .await;
    if let Ok(ch) = plain {
        assert!(
            stream(ch, vec![batch("node-a/z", "node-a", flows()?)])
                .await
                .is_err(),
            "plaintext must not reach a TLS ingest port"
        );
    }

    assert_eq!(
        metric(&collector, "flowgate_collector_batches_stored_total").await?,
        1.0,
        "only the good probe's batch was stored"
    );
    collector.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_bounded_and_typed() -> Result<()> {
    let data = tempfile::tempdir()?;
    let collector = start(data.path(), None).await?;
    let url = format!("http://{}", collector.grpc_addr());
    let ch = Endpoint::from_shared(url)?.connect().await?;

    // A 100 kB probe id is refused, not stored.
    let long = "p".repeat(100_000);
    let acks = stream(ch.clone(), vec![batch(&long, "node-a", flows()?)]).await?;
    assert_eq!(acks[0].status(), AckStatus::Rejected);
    assert!(
        acks[0]
            .reason
            .contains("probe_id has 100000 bytes, the limit is 253"),
        "{}",
        acks[0].reason
    );
    let acks = stream(ch.clone(), vec![batch("n/p", &"n".repeat(254), flows()?)]).await?;
    assert_eq!(acks[0].status(), AckStatus::Rejected);
    assert!(
        acks[0].reason.contains("node has 254 bytes"),
        "{}",
        acks[0].reason
    );

    // An interface name longer than Linux allows.
    let mut odd = flows()?;
    odd[0].interface = "i".repeat(16);
    let acks = stream(ch.clone(), vec![batch("n/p", "node-a", odd)]).await?;
    assert_eq!(acks[0].status(), AckStatus::Rejected);
    assert!(
        acks[0].reason.contains("interface name has 16 bytes"),
        "{}",
        acks[0].reason
    );

    // A message larger than the decoding limit: RESOURCE_EXHAUSTED naming it.
    let mut big = flows()?;
    big[0].drop_reason = "x".repeat(flowgate_collector::ingest::MAX_MESSAGE_BYTES + 1);
    let status = stream(ch.clone(), vec![batch("n/p", "node-a", big)])
        .await
        .expect_err("an oversized frame must end the stream");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("limit"), "{status:?}");

    // Bytes that are not a FlowBatch (a Flow sent on the batch stream):
    // INVALID_ARGUMENT, not INTERNAL.
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await?;
    let codec = tonic_prost::ProstCodec::<Flow, BatchAck>::default();
    let not_a_batch = Flow {
        node: "not a batch".into(),
        ..Default::default()
    };
    let path = http::uri::PathAndQuery::from_static("/flowgate.v1.FlowIngest/Stream");
    let status = match grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(vec![not_a_batch])),
            path,
            codec,
        )
        .await
    {
        Err(status) => status,
        Ok(response) => {
            let mut acks = response.into_inner();
            match acks.message().await {
                Err(status) => status,
                Ok(ack) => bail!("a non-batch frame was answered with {ack:?}"),
            }
        }
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("not a flowgate.v1.FlowBatch"),
        "{status:?}"
    );
    collector.shutdown().await?;
    Ok(())
}
