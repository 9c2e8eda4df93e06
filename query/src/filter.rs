//! Filters on the flow tables as DataFusion expressions, for the API's
//! query parameters: values are literals in an expression tree, so no user
//! text is ever parsed as SQL.

use datafusion::common::ScalarValue;
use datafusion::functions::expr_fn::starts_with;
use datafusion::functions_nested::expr_fn::array_has;
pub use datafusion::logical_expr::Expr;
pub use datafusion::prelude::{col, lit, not};

/// `column = value`.
pub fn eq(column: &str, value: impl Into<String>) -> Expr {
    col(column).eq(lit(value.into()))
}

/// The text column starts with `prefix`.
pub fn prefix(column: &str, prefix: impl Into<String>) -> Expr {
    starts_with(col(column), lit(prefix.into()))
}

/// The list column holds `value`.
pub fn list_has(column: &str, value: impl Into<String>) -> Expr {
    array_has(col(column), lit(value.into()))
}

/// A timestamp literal, ns since the epoch, UTC (the type of `time`).
pub fn timestamp(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

/// All of `filters` (None when empty).
pub fn all(filters: impl IntoIterator<Item = Expr>) -> Option<Expr> {
    filters.into_iter().reduce(Expr::and)
}

/// Any of `filters` (None when empty).
pub fn any(filters: impl IntoIterator<Item = Expr>) -> Option<Expr> {
    filters.into_iter().reduce(Expr::or)
}
