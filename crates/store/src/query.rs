//! List queries in the shape of Buildbot's Data API: `field=value`,
//! `field__op=value`, `order=-field`, `limit`, `offset`. Each resource names
//! the fields it allows; anything else is a [`StoreError::BadQuery`].

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe};

use crate::{Result, StoreError};

/// The most rows one list call returns, whatever `limit` asks for.
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    In,
}

impl Op {
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "lt" => Op::Lt,
            "le" => Op::Le,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "contains" => Op::Contains,
            "in" => Op::In,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub field: String,
    pub op: Op,
    /// Several values for `eq`/`in` mean "any of them".
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub field: String,
    pub descending: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub filters: Vec<Filter>,
    pub order: Vec<Order>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl ListQuery {
    pub fn eq(mut self, field: &str, value: impl ToString) -> ListQuery {
        self.filters.push(Filter { field: field.into(), op: Op::Eq, values: vec![value.to_string()] });
        self
    }
    pub fn order_by(mut self, field: &str, descending: bool) -> ListQuery {
        self.order.push(Order { field: field.into(), descending });
        self
    }
    pub fn limit(mut self, n: i64) -> ListQuery {
        self.limit = Some(n);
        self
    }
}

/// One page of a list and the number of rows matching the filters.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    Int,
    Text,
    /// A 0/1 column exposed as a boolean.
    Flag,
    /// Exposed as a boolean: whether the column is set.
    Present,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    /// The API's name for it (`builderid`).
    pub name: &'static str,
    /// The SQL expression (`r.builder_id`).
    pub column: &'static str,
    pub ty: FieldType,
}

pub(crate) const fn field(name: &'static str, column: &'static str, ty: FieldType) -> Field {
    Field { name, column, ty }
}

#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Int(i64),
    Text(String),
}

pub(crate) fn bind_all<'q>(mut q: Query<'q, Any, AnyArguments>, binds: &[Bind]) -> Query<'q, Any, AnyArguments> {
    for b in binds {
        q = match b {
            Bind::Int(i) => q.bind(*i),
            Bind::Text(s) => q.bind(s.clone()),
        };
    }
    q
}

/// SQL pieces for one list query.
pub(crate) struct Compiled {
    pub where_sql: String,
    pub order_sql: String,
    pub limit: i64,
    pub offset: i64,
    pub binds: Vec<Bind>,
}

fn parse_bool(field: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(StoreError::BadQuery(format!("field {field}: expected true or false, got {v:?}"))),
    }
}

pub(crate) fn compile(fields: &[Field], q: &ListQuery, id_column: &str) -> Result<Compiled> {
    let find = |name: &str| -> Result<&Field> {
        fields.iter().find(|f| f.name == name).ok_or_else(|| StoreError::BadQuery(format!("unknown field {name:?}")))
    };
    let mut binds: Vec<Bind> = Vec::new();
    let mut conditions: Vec<String> = Vec::new();
    for filter in &q.filters {
        let f = find(&filter.field)?;
        if filter.values.is_empty() {
            return Err(StoreError::BadQuery(format!("field {}: no value given", f.name)));
        }
        match f.ty {
            FieldType::Flag | FieldType::Present => {
                if !matches!(filter.op, Op::Eq | Op::Ne) || filter.values.len() != 1 {
                    return Err(StoreError::BadQuery(format!(
                        "field {}: only one true/false value with eq or ne",
                        f.name
                    )));
                }
                let wanted = parse_bool(f.name, &filter.values[0])? == (filter.op == Op::Eq);
                let sql = match (f.ty, wanted) {
                    (FieldType::Flag, true) => format!("{} = 1", f.column),
                    (FieldType::Flag, false) => format!("{} = 0", f.column),
                    (_, true) => format!("{} IS NOT NULL", f.column),
                    (_, false) => format!("{} IS NULL", f.column),
                };
                conditions.push(sql);
                continue;
            }
            FieldType::Int | FieldType::Text => {}
        }
        let mut placeholders = Vec::new();
        for v in &filter.values {
            let value = v.clone();
            let bind = match (f.ty, filter.op) {
                (FieldType::Int, Op::Contains) => {
                    return Err(StoreError::BadQuery(format!("field {}: contains works on text fields", f.name)));
                }
                (FieldType::Int, _) => Bind::Int(value.parse::<i64>().map_err(|_| {
                    StoreError::BadQuery(format!("field {}: expected an integer, got {value:?}", f.name))
                })?),
                (_, Op::Contains) => {
                    let escaped = value.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                    Bind::Text(format!("%{escaped}%"))
                }
                _ => Bind::Text(value),
            };
            binds.push(bind);
            placeholders.push(format!("${}", binds.len()));
        }
        let col = f.column;
        let sql = match filter.op {
            Op::Eq | Op::In if placeholders.len() == 1 => format!("{col} = {}", placeholders[0]),
            Op::Eq | Op::In => format!("{col} IN ({})", placeholders.join(", ")),
            Op::Ne if placeholders.len() == 1 => format!("{col} <> {}", placeholders[0]),
            Op::Ne => format!("{col} NOT IN ({})", placeholders.join(", ")),
            Op::Contains => {
                let any: Vec<String> = placeholders.iter().map(|p| format!("{col} LIKE {p} ESCAPE '\\'")).collect();
                format!("({})", any.join(" OR "))
            }
            op => {
                if placeholders.len() != 1 {
                    return Err(StoreError::BadQuery(format!("field {}: one value for a comparison", f.name)));
                }
                let sym = match op {
                    Op::Lt => "<",
                    Op::Le => "<=",
                    Op::Gt => ">",
                    _ => ">=",
                };
                format!("{col} {sym} {}", placeholders[0])
            }
        };
        conditions.push(sql);
    }
    let where_sql = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };

    let mut order_parts = Vec::new();
    for o in &q.order {
        let f = find(&o.field)?;
        order_parts.push(format!("{} {}", f.column, if o.descending { "DESC" } else { "ASC" }));
    }
    // The id breaks ties, so pages are stable; it follows the first key's direction.
    let id_dir = q.order.first().map(|o| o.descending).unwrap_or(false);
    order_parts.push(format!("{id_column} {}", if id_dir { "DESC" } else { "ASC" }));

    let limit = match q.limit {
        None => MAX_LIMIT,
        Some(n) if n < 0 => return Err(StoreError::BadQuery("limit cannot be negative".into())),
        Some(n) => n.min(MAX_LIMIT),
    };
    let offset = match q.offset {
        None => 0,
        Some(n) if n < 0 => return Err(StoreError::BadQuery("offset cannot be negative".into())),
        Some(n) => n,
    };
    Ok(Compiled { where_sql, order_sql: format!("ORDER BY {}", order_parts.join(", ")), limit, offset, binds })
}

/// Rows counted at most for `meta.total`: counting is the one part of a list
/// that grows with the history; past this, the total reads `COUNT_CAP + 1`
/// ("more than").
pub const COUNT_CAP: i64 = 100_000;

/// Runs the count and the page for a compiled list query.
pub(crate) async fn fetch_page(
    pool: &sqlx::AnyPool,
    select: &str,
    from: &str,
    compiled: &Compiled,
) -> Result<(Vec<sqlx::any::AnyRow>, i64)> {
    let count_sql = format!(
        "SELECT COUNT(*) FROM (SELECT 1 AS one FROM {from} {} LIMIT {}) capped",
        compiled.where_sql,
        COUNT_CAP + 1
    );
    let total: i64 = bind_all(sqlx::query(AssertSqlSafe(count_sql)), &compiled.binds)
        .fetch_one(pool)
        .await
        .and_then(|row| sqlx::Row::try_get(&row, 0))?;
    let page_sql = format!(
        "SELECT {select} FROM {from} {} {} LIMIT {} OFFSET {}",
        compiled.where_sql, compiled.order_sql, compiled.limit, compiled.offset
    );
    let rows = bind_all(sqlx::query(AssertSqlSafe(page_sql)), &compiled.binds).fetch_all(pool).await?;
    Ok((rows, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[Field] = &[
        field("id", "t.id", FieldType::Int),
        field("name", "t.name", FieldType::Text),
        field("complete", "t.complete", FieldType::Flag),
        field("claimed", "t.claimed_by", FieldType::Present),
    ];

    fn filter(field: &str, op: Op, values: &[&str]) -> Filter {
        Filter { field: field.into(), op, values: values.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn compiles_filters_orders_and_limits() {
        let q = ListQuery {
            filters: vec![
                filter("id", Op::Gt, &["5"]),
                filter("name", Op::Eq, &["a", "b"]),
                filter("complete", Op::Eq, &["false"]),
                filter("claimed", Op::Ne, &["true"]),
                filter("name", Op::Contains, &["50%"]),
            ],
            order: vec![Order { field: "name".into(), descending: true }],
            limit: Some(5000),
            offset: Some(10),
        };
        let c = compile(FIELDS, &q, "t.id").expect("compiles");
        assert_eq!(
            c.where_sql,
            "WHERE t.id > $1 AND t.name IN ($2, $3) AND t.complete = 0 AND t.claimed_by IS NULL AND (t.name LIKE $4 ESCAPE '\\')"
        );
        assert_eq!(c.order_sql, "ORDER BY t.name DESC, t.id DESC");
        assert_eq!(c.limit, MAX_LIMIT);
        assert_eq!(c.offset, 10);
        assert!(matches!(&c.binds[3], Bind::Text(s) if s == "%50\\%%"));
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        for q in [
            ListQuery::default().eq("nope", 1),
            ListQuery::default().eq("id", "abc"),
            ListQuery::default().eq("complete", "maybe"),
            ListQuery::default().order_by("nope", false),
            ListQuery::default().limit(-1),
            ListQuery { filters: vec![filter("id", Op::Contains, &["1"])], ..Default::default() },
        ] {
            assert!(matches!(compile(FIELDS, &q, "t.id"), Err(StoreError::BadQuery(_))), "{q:?}");
        }
    }
}
