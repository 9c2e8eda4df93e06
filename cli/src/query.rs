//! `flowgate query "SQL"`: run SQL on a running collector and print a table.

use std::process::ExitCode;

use serde_json::Value;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The SQL (read-only; tables: flows, pods, namespaces, policies).
    sql: String,
    #[command(flatten)]
    api: crate::http::CollectorApi,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let answer = args
        .api
        .post("/api/v1/query", serde_json::json!({ "sql": args.sql }))?;
    print!("{}", table(&answer));
    if answer.get("truncated").and_then(Value::as_bool) == Some(true) {
        eprintln!("flowgate: the result was truncated by the server's row limit");
    }
    Ok(ExitCode::SUCCESS)
}

/// `{"columns": [...], "rows": [{...}]}` as an aligned text table.
fn table(answer: &Value) -> String {
    let columns: Vec<String> = answer
        .get("columns")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = answer
        .get("rows")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    columns
                        .iter()
                        .map(|c| match row.get(c) {
                            None | Some(Value::Null) => String::new(),
                            Some(Value::String(s)) => s.clone(),
                            Some(other) => other.to_string(),
                        })
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join(" | ").trim_end())
    };
    let mut out = line(&columns);
    out.push_str(&format!(
        "{}\n",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-")
    ));
    for row in &rows {
        out.push_str(&line(row));
    }
    out.push_str(&format!(
        "({} row{})\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_prints_as_an_aligned_table() {
        let answer = serde_json::json!({
            "columns": ["ns", "flows"],
            "rows": [{"ns": "default", "flows": 3}, {"ns": "kube-system", "flows": null}],
        });
        assert_eq!(
            table(&answer),
            "ns          | flows\n------------+------\ndefault     | 3\nkube-system |\n(2 rows)\n"
        );
    }
}
