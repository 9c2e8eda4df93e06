//! The flow record and the ingest service shared by every flowgate part.
//!
//! Probes build [`v1::Flow`]s and send them in [`v1::FlowBatch`]es over the
//! [`v1::flow_ingest_client::FlowIngestClient`]; the collector serves
//! [`v1::flow_ingest_server::FlowIngest`], enriches each flow and stores it.
//! The schema lives in `proto/flowgate/v1/flow.proto`.

/// `flowgate.v1`: flows, batches, acknowledgements and the ingest service.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("flowgate.v1");
}

/// The collector's default gRPC port.
pub const DEFAULT_GRPC_PORT: u16 = 4245;
/// The collector's default HTTP port (API, dashboard, metrics).
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// gRPC messages up to this size are decoded, by the collector and by
/// clients alike (a full batch of the default 10,000 flows is about 2 MB);
/// a larger one ends its stream with RESOURCE_EXHAUSTED naming this limit.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message;

    #[test]
    fn a_batch_round_trips_on_the_wire() {
        let flow = Flow {
            node: "node-1".into(),
            first_seen_ns: 1,
            last_seen_ns: 2,
            direction: Direction::Egress as i32,
            ip_version: IpVersion::V6 as i32,
            src_ip: vec![0xfd; 16],
            dst_ip: vec![0x20; 16],
            protocol: Protocol::Sctp as i32,
            src_port: 40000,
            dst_port: 3868,
            packets: 3,
            bytes: 300,
            kernel_fate: KernelFate::Dropped as i32,
            drop_reason_code: 6,
            drop_reason: "NETFILTER_DROP".into(),
            ..Default::default()
        };
        let batch = FlowBatch {
            schema_version: SchemaVersion::V1 as i32,
            probe_id: "node-1/1".into(),
            node: "node-1".into(),
            sequence: 7,
            flows: vec![flow],
            losses: Some(LossReport {
                ringbuf_lost_events: 5,
                ..Default::default()
            }),
        };
        let bytes = batch.encode_to_vec();
        assert_eq!(FlowBatch::decode(bytes.as_slice()).unwrap(), batch);
    }

    #[test]
    fn every_enum_reserves_zero_for_unspecified() {
        assert_eq!(SchemaVersion::Unspecified as i32, 0);
        assert_eq!(IpVersion::Unspecified as i32, 0);
        assert_eq!(Protocol::Unspecified as i32, 0);
        assert_eq!(Direction::Unspecified as i32, 0);
        assert_eq!(KernelFate::Unspecified as i32, 0);
        assert_eq!(Verdict::Unspecified as i32, 0);
        assert_eq!(AckStatus::Unspecified as i32, 0);
        // A flow with nothing set decodes as "unspecified", never as TCP/ingress.
        let empty = Flow::decode(&[][..]).unwrap();
        assert_eq!(empty.protocol(), Protocol::Unspecified);
        assert_eq!(empty.direction(), Direction::Unspecified);
    }

    #[test]
    fn tcp_flag_values_match_the_tcp_header() {
        let bits: u32 = [
            TcpFlag::Fin,
            TcpFlag::Syn,
            TcpFlag::Rst,
            TcpFlag::Psh,
            TcpFlag::Ack,
            TcpFlag::Urg,
            TcpFlag::Ece,
            TcpFlag::Cwr,
        ]
        .iter()
        .map(|f| *f as u32)
        .sum();
        assert_eq!(bits, 0xff);
        assert_eq!(TcpFlag::Syn as u32 | TcpFlag::Ack as u32, 0x12);
    }
}
