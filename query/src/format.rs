//! Query results as JSON (`{"columns": [...], "rows": [{...}]}`), CSV and
//! Arrow IPC stream.

use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::engine::QueryError;

#[derive(Debug)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// More rows existed than the row limit allowed.
    pub truncated: bool,
    pub elapsed: Duration,
}

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::Internal {
        message: e.to_string(),
    }
}

impl QueryResult {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// `{"columns": ["name", …], "rows": [{"name": value, …}], "truncated": bool}`;
    /// timestamps as RFC 3339 text, lists as arrays, NULL as null.
    pub fn to_json(&self) -> serde_json::Value {
        let columns: Vec<String> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut buf = Vec::new();
        {
            let mut w = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::JsonArray>(&mut buf);
            for b in &self.batches {
                w.write(b)
                    .expect("arrow JSON encodes every type we produce");
            }
            w.finish().expect("finish JSON");
        }
        let rows: serde_json::Value = if buf.is_empty() {
            serde_json::Value::Array(Vec::new())
        } else {
            serde_json::from_slice(&buf).expect("valid JSON")
        };
        serde_json::json!({ "columns": columns, "rows": rows, "truncated": self.truncated })
    }

    pub fn to_csv(&self) -> Result<Vec<u8>, QueryError> {
        let mut buf = Vec::new();
        {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut buf);
            for b in &self.batches {
                w.write(b).map_err(internal)?;
            }
        }
        if self.batches.is_empty() {
            let names: Vec<&str> = self
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            buf.extend_from_slice(format!("{}\n", names.join(",")).as_bytes());
        }
        Ok(buf)
    }

    pub fn to_arrow_ipc(&self) -> Result<Vec<u8>, QueryError> {
        let mut buf = Vec::new();
        {
            let mut w =
                datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut buf, &self.schema)
                    .map_err(internal)?;
            for b in &self.batches {
                w.write(b).map_err(internal)?;
            }
            w.finish().map_err(internal)?;
        }
        Ok(buf)
    }
}
