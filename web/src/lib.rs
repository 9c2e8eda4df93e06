//! The embedded web dashboard served by the collector.
