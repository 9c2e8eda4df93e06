//! The collector: gRPC ingest, Kubernetes cluster state, policy verdict on every flow, and the HTTP API.
