//! Shared by the capture test and the flood benchmark: a gRPC receiver that
//! records and acknowledges every batch, and "pods" (network namespaces on
//! a bridge, host-side veths named `fgv<id><pod>`) removed on drop.

#![allow(dead_code, reason = "each user takes what it needs")]

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};

use flowgate_proto::v1::flow_ingest_server::{FlowIngest, FlowIngestServer};
use flowgate_proto::v1::{AckStatus, BatchAck, Flow, FlowBatch};
use tokio_stream::{Stream, StreamExt};

// ---------- the test's collector: records every batch, acknowledges it ----------

#[derive(Clone, Default)]
pub struct Receiver {
    pub flows: Arc<Mutex<Vec<Flow>>>,
    pub batches: Arc<Mutex<Vec<(String, u64)>>>,
}

#[tonic::async_trait]
impl FlowIngest for Receiver {
    type StreamStream = Pin<Box<dyn Stream<Item = Result<BatchAck, tonic::Status>> + Send>>;

    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<FlowBatch>>,
    ) -> Result<tonic::Response<Self::StreamStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(batch)) = inbound.next().await {
                let ack = me.store(batch);
                if tx.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn push(
        &self,
        request: tonic::Request<FlowBatch>,
    ) -> Result<tonic::Response<BatchAck>, tonic::Status> {
        Ok(tonic::Response::new(self.store(request.into_inner())))
    }
}

impl Receiver {
    fn store(&self, batch: FlowBatch) -> BatchAck {
        self.batches
            .lock()
            .unwrap()
            .push((batch.probe_id.clone(), batch.sequence));
        self.flows.lock().unwrap().extend(batch.flows);
        BatchAck {
            probe_id: batch.probe_id,
            sequence: batch.sequence,
            status: AckStatus::Stored as i32,
            ..Default::default()
        }
    }
}

// ---------- "pods": network namespaces on a bridge, removed on drop ----------

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Pods {
    pub id: u32,
}

impl Pods {
    pub fn bridge(&self) -> String {
        format!("fgb{}", self.id)
    }
    pub fn ns(&self, pod: char) -> String {
        format!("fgt{}{pod}", self.id)
    }
    pub fn veth(&self, pod: char) -> String {
        format!("fgv{}{pod}", self.id)
    }
    pub fn v4(&self, host: u8) -> IpAddr {
        format!("10.77.{}.{host}", self.id).parse().unwrap()
    }
    pub fn v6(&self, host: u8) -> IpAddr {
        format!("fd77:{}::{host}", self.id).parse().unwrap()
    }

    pub fn create(id: u32) -> Pods {
        let p = Pods { id };
        p.remove(); // leftovers of a killed run
        sh(&["ip", "link", "add", &p.bridge(), "type", "bridge"]);
        sh(&["ip", "link", "set", &p.bridge(), "up"]);
        for (pod, host) in [('a', 1u8), ('b', 2u8)] {
            let ns = p.ns(pod);
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip",
                "link",
                "add",
                &p.veth(pod),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns,
            ]);
            sh(&[
                "ip",
                "link",
                "set",
                &p.veth(pod),
                "master",
                &p.bridge(),
                "up",
            ]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", p.v4(host)),
                "dev",
                "eth0",
            ]);
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/64", p.v6(host)),
                "dev",
                "eth0",
                "nodad",
            ]);
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        }
        // The "CNI": pod b drops UDP port 7009.
        let nsb = p.ns('b');
        for cmd in [
            "add table inet fgtest",
            "add chain inet fgtest input { type filter hook input priority 0 ; }",
            "add rule inet fgtest input udp dport 7009 drop",
        ] {
            sh(&["ip", "netns", "exec", &nsb, "nft", cmd]);
        }
        p
    }

    pub fn remove(&self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
        for pod in ['a', 'b'] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(pod)])
                .output();
        }
    }

    /// Runs `f` on a thread inside the pod's network namespace.
    pub fn run_in<T: Send + 'static>(
        &self,
        pod: char,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.ns(pod));
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on this thread only; the fd is valid for the call.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Serves the receiver on 127.0.0.1:0; returns its address.
pub fn serve(rt: &tokio::runtime::Runtime, receiver: &Receiver) -> std::net::SocketAddr {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let r = receiver.clone();
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(FlowIngestServer::new(r))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}

/// Programs the kernel has attached to the interface's TCX hooks (this
/// Debian's bpftool predates TCX and does not list them).
pub fn attached(interface: &str) -> Vec<String> {
    use aya::programs::{SchedClassifier, TcAttachType};
    [TcAttachType::Ingress, TcAttachType::Egress]
        .into_iter()
        .flat_map(|hook| {
            SchedClassifier::query_tcx(interface, hook)
                .map(|(_, p)| p)
                .unwrap_or_default()
        })
        .map(|info| String::from_utf8_lossy(info.name()).into_owned())
        .collect()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Probe settings for tests: fast windows, a free metrics port.
pub fn config(
    collector: String,
    interfaces: Vec<String>,
    granularity: flowgate_probe::config::GranularityArg,
    export_interval: std::time::Duration,
) -> flowgate_probe::Config {
    flowgate_probe::Config {
        collector,
        interfaces,
        granularity,
        export_interval,
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        node_name: Some("test-node".into()),
        max_batch_flows: 1000,
        buffer_records: 1_000_000,
        flow_idle_timeout: std::time::Duration::from_secs(30),
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
    }
}

/// A probe running in-process.
pub struct Running {
    pub metrics: Arc<flowgate_probe::metrics::Metrics>,
    pub metrics_addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<flowgate_probe::Summary, flowgate_probe::ProbeError>>,
}

/// Starts the probe and waits until its programs are attached.
pub fn start(rt: &tokio::runtime::Runtime, config: flowgate_probe::Config) -> Running {
    let metrics = Arc::new(flowgate_probe::metrics::Metrics::default());
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let task = rt.spawn(flowgate_probe::run(
        config,
        metrics.clone(),
        move |a| ready_tx.send(a).unwrap(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let metrics_addr = match ready_rx.recv_timeout(std::time::Duration::from_secs(20)) {
        Ok(a) => a,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match rt.block_on(task) {
            Ok(Err(error)) => panic!("the probe failed to start: {error:?}"),
            other => panic!("the probe ended before it was ready: {other:?}"),
        },
        Err(e) => panic!("probe not ready: {e}"),
    };
    Running {
        metrics,
        metrics_addr,
        stop,
        task,
    }
}

impl Running {
    /// Stops the probe (last window exported) and returns its summary.
    pub fn stop(self, rt: &tokio::runtime::Runtime) -> flowgate_probe::Summary {
        self.stop.send(()).unwrap();
        rt.block_on(self.task).unwrap().expect("probe ran")
    }
}
