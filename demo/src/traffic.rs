//! Traffic: echo servers in every pod and external namespace, and clients
//! that open one connection (TCP with data, UDP datagram, ICMP echo) and say
//! whether it got through.
//!
//! Every server and client runs on its own thread moved into the right
//! network namespace ([`enter_netns`]); a dropped packet shows as a timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use flowgate_policy::Protocol;

use crate::DemoError;
use crate::scenario::{Flow, Placed, Target};
use crate::topology::{EXTERNAL_NS, enter_netns, pod_ns, run};

/// How often idle servers look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
const PAYLOAD: &[u8] = b"flowgate-demo\n";

/// Echo servers; dropping stops and joins them.
#[derive(Debug)]
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn netns_of(target: Target) -> String {
    match target {
        Target::Pod(i) => pod_ns(i),
        Target::External(_) => EXTERNAL_NS.to_owned(),
    }
}

impl Servers {
    /// Starts a server for every port each pod declares or is sent traffic on.
    pub fn start(placed: &Placed) -> Result<Servers, DemoError> {
        let mut servers = Servers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        // One server set for the whole external namespace (it binds 0.0.0.0).
        if !placed.scenario.external.addresses.is_empty() {
            let mut ports = Vec::new();
            for &ext in &placed.scenario.external.addresses {
                ports.extend(placed.served_ports(Target::External(ext)));
            }
            ports.sort_by_key(|(p, n)| (p.as_str(), *n));
            ports.dedup();
            servers.spawn(EXTERNAL_NS.to_owned(), ports)?;
        }
        for t in (0..placed.pods.len()).map(Target::Pod) {
            servers.spawn(netns_of(t), placed.served_ports(t))?;
        }
        Ok(servers)
    }

    fn spawn(&mut self, ns: String, ports: Vec<(Protocol, u16)>) -> Result<(), DemoError> {
        for (protocol, port) in ports {
            let stop = self.stop.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
            let ns2 = ns.clone();
            let handle = std::thread::Builder::new()
                .name(format!("srv-{ns}-{port}"))
                .spawn(move || {
                    let bound = enter_netns(&ns2).and_then(|()| bind(protocol, port));
                    match bound {
                        Ok(sock) => {
                            let _ = ready_tx.send(Ok(()));
                            serve(sock, &stop);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })
                .map_err(DemoError::io("spawning a server thread"))?;
            self.threads.push(handle);
            ready_rx.recv().map_err(|_| {
                DemoError::Prerequisite(format!("server thread for {ns} port {port} died"))
            })??;
        }
        Ok(())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

fn bind(protocol: Protocol, port: u16) -> Result<Socket, DemoError> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let what = format!("binding {protocol} port {port}");
    match protocol {
        Protocol::Tcp => {
            let l = TcpListener::bind(addr).map_err(DemoError::io(what.clone()))?;
            l.set_nonblocking(true).map_err(DemoError::io(what))?;
            Ok(Socket::Tcp(l))
        }
        Protocol::Udp => {
            let s = UdpSocket::bind(addr).map_err(DemoError::io(what.clone()))?;
            s.set_read_timeout(Some(POLL))
                .map_err(DemoError::io(what))?;
            Ok(Socket::Udp(s))
        }
        other => Err(DemoError::InvalidScenario(format!("cannot serve {other}"))),
    }
}

fn serve(sock: Socket, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match &sock {
            Socket::Tcp(l) => match l.accept() {
                Ok((mut conn, _)) => {
                    // Echo one message; connections are short, served inline.
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                    if let Ok(n) = conn.read(&mut buf) {
                        let _ = conn.write_all(&buf[..n]);
                    }
                    close_gracefully(&mut conn, &mut buf);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    std::thread::sleep(POLL);
                }
            },
            Socket::Udp(s) => {
                if let Ok((n, peer)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], peer);
                }
            }
        }
    }
}

/// FIN, then read until the peer's FIN: both sides close with empty queues,
/// so the kernel frees no queued packet (it would report QUEUE_PURGE drops).
fn close_gracefully(conn: &mut TcpStream, buf: &mut [u8]) {
    let _ = conn.shutdown(std::net::Shutdown::Write);
    while matches!(conn.read(buf), Ok(n) if n > 0) {}
}

/// One attempt from the calling thread's namespace: true if the server answered.
pub fn attempt(
    dst: Ipv4Addr,
    protocol: Protocol,
    port: u16,
    timeout: Duration,
) -> Result<bool, DemoError> {
    match protocol {
        Protocol::Tcp => {
            let Ok(mut conn) = TcpStream::connect_timeout(&SocketAddr::from((dst, port)), timeout)
            else {
                return Ok(false);
            };
            let _ = conn.set_read_timeout(Some(timeout));
            let mut buf = [0u8; PAYLOAD.len()];
            let ok = conn.write_all(PAYLOAD).is_ok()
                && conn.read_exact(&mut buf).is_ok()
                && buf == PAYLOAD;
            let mut rest = [0u8; 64];
            close_gracefully(&mut conn, &mut rest);
            Ok(ok)
        }
        Protocol::Udp => {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                .map_err(DemoError::io("binding a UDP client"))?;
            s.set_read_timeout(Some(timeout))
                .map_err(DemoError::io("UDP client timeout"))?;
            s.send_to(PAYLOAD, (dst, port))
                .map_err(DemoError::io(format!("sending UDP to {dst}:{port}")))?;
            let mut buf = [0u8; 64];
            Ok(matches!(s.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == PAYLOAD))
        }
        Protocol::Icmp => {
            // iputils ping: -W takes seconds (fractions accepted by current iputils).
            let wait = format!("{:.1}", timeout.as_secs_f64().max(0.1));
            Ok(run(
                "ping",
                &["-c", "1", "-q", "-W", &wait, &dst.to_string()],
                None,
            )
            .is_ok())
        }
        other => Err(DemoError::InvalidScenario(format!(
            "cannot generate {other}"
        ))),
    }
}

/// Runs each flow once, in parallel (a thread per flow, in the source pod's
/// namespace), and returns whether each got through.
pub fn attempt_all(
    placed: &Placed,
    flows: &[Flow],
    timeout: Duration,
) -> Result<Vec<bool>, DemoError> {
    let handles: Vec<_> = flows
        .iter()
        .map(|f| {
            let (ns, dst, f) = (pod_ns(f.from), placed.target_ip(f.to), *f);
            std::thread::spawn(move || {
                enter_netns(&ns)?;
                attempt(dst, f.protocol, f.port, timeout)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| DemoError::Prerequisite("client thread panicked".into()))?
        })
        .collect()
}
