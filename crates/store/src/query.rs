//! List queries in the shape of Buildbot's Data API: `field=value`,
//! `field__op=value`, `order=-field`, `limit`, `offset`. Each resource names
//! the fields it allows; anything else is a [`StoreError::BadQuery`].

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe};

use crate::{Backend, Result, StoreError};

/// The most rows one list call returns, whatever `limit` asks for.
pub const MAX_LIMIT: i64 = 1000;

/// A filter's comparison, the `op` of `field__op=value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `eq` (also a bare `field=value`): equal to one of the values.
    Eq,
    /// `ne`: equal to none of the values.
    Ne,
    /// `lt`: less than.
    Lt,
    /// `le`: at most.
    Le,
    /// `gt`: greater than.
    Gt,
    /// `ge`: at least.
    Ge,
    /// `contains`: text holding one of the values; text fields only.
    Contains,
    /// `in`: equal to one of the values, as `eq`.
    In,
}

impl Op {
    /// The op named `s` in a query string; `None` if there is none.
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

/// One `field__op=value` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The API's field name (`builderid`); the resource must allow it.
    pub field: String,
    /// How the field is compared.
    pub op: Op,
    /// Several values for `eq`/`in` mean "any of them".
    pub values: Vec<String>,
}

/// One `order=` key; the id breaks ties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// The API's field name.
    pub field: String,
    /// `order=-field`: largest first.
    pub descending: bool,
}

/// A Data API list query: filters (all must hold), order, and a page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Conditions that must all hold.
    pub filters: Vec<Filter>,
    /// Sort keys, first one first; the id breaks ties.
    pub order: Vec<Order>,
    /// Rows to return, at most `MAX_LIMIT` (1000), which `None` means.
    pub limit: Option<i64>,
    /// Rows to skip first.
    pub offset: Option<i64>,
    /// Keyset paging: only rows whose id comes after this one, in the
    /// order's direction; the order must be by the id alone (or none).
    pub after_id: Option<i64>,
    /// Leave the rows uncounted: [`Page::total`] is then the page's length.
    pub skip_count: bool,
}

impl ListQuery {
    /// Adds the filter `field=value`.
    pub fn eq(mut self, field: &str, value: impl ToString) -> ListQuery {
        self.filters.push(Filter { field: field.into(), op: Op::Eq, values: vec![value.to_string()] });
        self
    }
    /// Adds a sort key.
    pub fn order_by(mut self, field: &str, descending: bool) -> ListQuery {
        self.order.push(Order { field: field.into(), descending });
        self
    }
    /// Returns at most `n` rows.
    pub fn limit(mut self, n: i64) -> ListQuery {
        self.limit = Some(n);
        self
    }
}

/// One page of a list and the number of rows matching the filters.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The page's rows.
    pub items: Vec<T>,
    /// Rows matching the filters, counted up to [`COUNT_CAP`] + 1.
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
    pub skip_count: bool,
}

fn parse_bool(field: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(StoreError::BadQuery(format!("field {field}: expected true or false, got {v:?}"))),
    }
}

fn bad(message: String) -> StoreError {
    StoreError::BadQuery(message)
}

/// A filter on a flag (`= 1`) or presence (`IS NOT NULL`) field.
fn flag_condition(f: &Field, filter: &Filter) -> Result<String> {
    if !matches!(filter.op, Op::Eq | Op::Ne) || filter.values.len() != 1 {
        return Err(bad(format!("field {}: only one true/false value with eq or ne", f.name)));
    }
    let wanted = parse_bool(f.name, &filter.values[0])? == (filter.op == Op::Eq);
    Ok(match (f.ty, wanted) {
        (FieldType::Flag, true) => format!("{} = 1", f.column),
        (FieldType::Flag, false) => format!("{} = 0", f.column),
        (_, true) => format!("{} IS NOT NULL", f.column),
        (_, false) => format!("{} IS NULL", f.column),
    })
}

/// A filter value as bound: an integer, a text, or a `LIKE` pattern.
fn bind_value(f: &Field, op: Op, value: &str) -> Result<Bind> {
    match (f.ty, op) {
        (FieldType::Int, Op::Contains) => Err(bad(format!("field {}: contains works on text fields", f.name))),
        (FieldType::Int, _) => value
            .parse::<i64>()
            .map(Bind::Int)
            .map_err(|_| bad(format!("field {}: expected an integer, got {value:?}", f.name))),
        (_, Op::Contains) => {
            let escaped = value.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            Ok(Bind::Text(format!("%{escaped}%")))
        }
        _ => Ok(Bind::Text(value.to_string())),
    }
}

/// The SQL of a filter on `col` whose values are bound at `placeholders`.
fn value_condition(f: &Field, op: Op, placeholders: &[String]) -> Result<String> {
    let col = f.column;
    Ok(match op {
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
                return Err(bad(format!("field {}: one value for a comparison", f.name)));
            }
            let sym = match op {
                Op::Lt => "<",
                Op::Le => "<=",
                Op::Gt => ">",
                _ => ">=",
            };
            format!("{col} {sym} {}", placeholders[0])
        }
    })
}

/// The `WHERE` clause of a query's filters; their values go to `binds`.
/// The `pinned` field's one value is written as a closed range (see
/// [`pinned_field`]).
fn where_clause(fields: &[Field], q: &ListQuery, pinned: Option<&str>, binds: &mut Vec<Bind>) -> Result<String> {
    let mut conditions: Vec<String> = Vec::new();
    for filter in &q.filters {
        let f = find_field(fields, &filter.field)?;
        if filter.values.is_empty() {
            return Err(bad(format!("field {}: no value given", f.name)));
        }
        if matches!(f.ty, FieldType::Flag | FieldType::Present) {
            conditions.push(flag_condition(f, filter)?);
            continue;
        }
        let mut placeholders = Vec::new();
        for v in &filter.values {
            binds.push(bind_value(f, filter.op, v)?);
            placeholders.push(format!("${}", binds.len()));
        }
        if pinned == Some(f.name) && placeholders.len() == 1 && matches!(filter.op, Op::Eq | Op::In) {
            let p = &placeholders[0];
            conditions.push(format!("{col} >= {p} AND {col} <= {p}", col = f.column));
            continue;
        }
        conditions.push(value_condition(f, filter.op, &placeholders)?);
    }
    Ok(if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) })
}

fn find_field<'f>(fields: &'f [Field], name: &str) -> Result<&'f Field> {
    fields.iter().find(|f| f.name == name).ok_or_else(|| bad(format!("unknown field {name:?}")))
}

pub(crate) fn compile(fields: &[Field], q: &ListQuery, id_column: &str) -> Result<Compiled> {
    compile_pinned(fields, q, id_column, None)
}

/// A listing's query, compiled for `backend`.
pub(crate) fn compile_listing(listing: &Listing, q: &ListQuery, backend: Backend) -> Result<Compiled> {
    let pinned = match backend {
        Backend::Postgres => pinned_field(listing, q)?,
        // SQLite takes the (field, id) index for an equality by itself, and
        // there the equality also lets the keyset bound start the scan.
        Backend::Sqlite => None,
    };
    compile_pinned(listing.fields, q, listing.id, pinned)
}

/// The field whose one value a query ordered by the id filters on, when the
/// listing has an index on (that field, id). PostgreSQL drops an equality's
/// column from the order, so it may walk the id's own index backwards and
/// filter, betting the value is spread evenly over the ids; when it is not
/// (a branch whose changes are all old), that walk reads most of the table.
/// Written as `col >= v AND col <= v` and ordered by `col, id`, the filter
/// leaves the (field, id) index as the only way to the order.
fn pinned_field(listing: &Listing, q: &ListQuery) -> Result<Option<&'static str>> {
    if id_order(listing.fields, q, listing.id)?.is_none() {
        return Ok(None);
    }
    let single = |f: &&Filter| matches!(f.op, Op::Eq | Op::In) && f.values.len() == 1;
    let pinned = q.filters.iter().filter(single).find_map(|f| listing.with_id.iter().find(|n| **n == f.field));
    Ok(pinned.copied())
}

fn compile_pinned(fields: &[Field], q: &ListQuery, id_column: &str, pinned: Option<&str>) -> Result<Compiled> {
    let mut binds: Vec<Bind> = Vec::new();
    let mut where_sql = where_clause(fields, q, pinned, &mut binds)?;
    if let Some(after) = q.after_id {
        where_sql = keyset_condition(fields, q, id_column, where_sql, after, &mut binds)?;
    }
    let id_dir = q.order.first().is_some_and(|o| o.descending);
    let mut order_parts = Vec::new();
    if let Some(name) = pinned {
        order_parts.push(format!("{} {}", find_field(fields, name)?.column, if id_dir { "DESC" } else { "ASC" }));
    }
    let mut ordered_by_id = false;
    for o in &q.order {
        let f = find_field(fields, &o.field)?;
        ordered_by_id |= f.column == id_column;
        order_parts.push(format!("{} {}", f.column, if o.descending { "DESC" } else { "ASC" }));
    }
    // The id breaks ties, so pages are stable; it follows the first key's direction.
    if !ordered_by_id {
        order_parts.push(format!("{id_column} {}", if id_dir { "DESC" } else { "ASC" }));
    }
    let limit = match q.limit {
        None => MAX_LIMIT,
        Some(n) if n < 0 => return Err(bad("limit cannot be negative".into())),
        Some(n) => n.min(MAX_LIMIT),
    };
    let offset = match q.offset {
        None => 0,
        Some(n) if n < 0 => return Err(bad("offset cannot be negative".into())),
        Some(n) => n,
    };
    let order_sql = format!("ORDER BY {}", order_parts.join(", "));
    Ok(Compiled { where_sql, order_sql, limit, offset, binds, skip_count: q.skip_count })
}

/// `where_sql` narrowed to the rows after `after` in the id's order.
fn keyset_condition(
    fields: &[Field],
    q: &ListQuery,
    id_column: &str,
    where_sql: String,
    after: i64,
    binds: &mut Vec<Bind>,
) -> Result<String> {
    let descending =
        id_order(fields, q, id_column)?.ok_or_else(|| bad("keyset paging needs an order by the id alone".into()))?;
    binds.push(Bind::Int(after));
    let condition = format!("{id_column} {} ${}", if descending { "<" } else { ">" }, binds.len());
    Ok(if where_sql.is_empty() { format!("WHERE {condition}") } else { format!("{where_sql} AND {condition}") })
}

/// Whether the query is in id order (by the id alone, or no order), and
/// then whether descending.
fn id_order(fields: &[Field], q: &ListQuery, id_column: &str) -> Result<Option<bool>> {
    Ok(match q.order.as_slice() {
        [] => Some(false),
        [o] if find_field(fields, &o.field)?.column == id_column => Some(o.descending),
        _ => None,
    })
}

/// Whether `order` can be paged by keyset: by the id alone, or no order.
pub fn keyset_order(order: &[Order], id_field: &str) -> bool {
    match order {
        [] => true,
        [o] => o.field == id_field,
        _ => false,
    }
}

/// Rows counted at most for `meta.total`: counting is the one part of a list
/// that grows with the history; past this, the total reads `COUNT_CAP + 1`
/// ("more than").
pub const COUNT_CAP: i64 = 100_000;

/// Runs the count and the page for a compiled list query.
/// What one of the API's lists reads: its fields, columns and table.
pub(crate) struct Listing {
    pub fields: &'static [Field],
    pub select: String,
    pub from: &'static str,
    /// The id column, the last sort key (and keyset paging's).
    pub id: &'static str,
    /// Fields with an index on (their column, the id).
    pub with_id: &'static [&'static str],
}

/// The statement of one page of a list.
pub(crate) fn page_sql(select: &str, from: &str, compiled: &Compiled) -> String {
    format!(
        "SELECT {select} FROM {from} {} {} LIMIT {} OFFSET {}",
        compiled.where_sql, compiled.order_sql, compiled.limit, compiled.offset
    )
}

/// One page of a listing, and its (capped) count unless the query skips it.
pub(crate) async fn list_page(
    pool: &sqlx::AnyPool,
    backend: Backend,
    listing: &Listing,
    q: &ListQuery,
) -> Result<(Vec<sqlx::any::AnyRow>, i64)> {
    let compiled = compile_listing(listing, q, backend)?;
    fetch_page(pool, &listing.select, listing.from, &compiled).await
}

pub(crate) async fn fetch_page(
    pool: &sqlx::AnyPool,
    select: &str,
    from: &str,
    compiled: &Compiled,
) -> Result<(Vec<sqlx::any::AnyRow>, i64)> {
    let page = bind_all(sqlx::query(AssertSqlSafe(page_sql(select, from, compiled))), &compiled.binds);
    if compiled.skip_count {
        let rows = page.fetch_all(pool).await?;
        let total = rows.len() as i64;
        return Ok((rows, total));
    }
    let count_sql = format!(
        "SELECT COUNT(*) FROM (SELECT 1 AS one FROM {from} {} LIMIT {}) capped",
        compiled.where_sql,
        COUNT_CAP + 1
    );
    let total: i64 = bind_all(sqlx::query(AssertSqlSafe(count_sql)), &compiled.binds)
        .fetch_one(pool)
        .await
        .and_then(|row| sqlx::Row::try_get(&row, 0))?;
    let rows = page.fetch_all(pool).await?;
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
        Filter { field: field.into(), op, values: values.iter().map(std::string::ToString::to_string).collect() }
    }

    #[test]
    fn keyset_paging_follows_the_id_order() {
        let after = |q: ListQuery| compile(FIELDS, &ListQuery { after_id: Some(7), ..q }, "t.id");
        let plain = after(ListQuery::default()).expect("compiles");
        assert_eq!((plain.where_sql.as_str(), plain.binds.len()), ("WHERE t.id > $1", 1));
        let down = after(ListQuery::default().eq("name", "a").order_by("id", true)).expect("compiles");
        assert_eq!(down.where_sql, "WHERE t.name = $1 AND t.id < $2");
        assert!(matches!(after(ListQuery::default().order_by("name", false)), Err(StoreError::BadQuery(_))));
        assert!(keyset_order(&[], "id") && keyset_order(&[Order { field: "id".into(), descending: true }], "id"));
        assert!(!keyset_order(&[Order { field: "name".into(), descending: false }], "id"));
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
            ..Default::default()
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
    fn postgres_orders_an_equality_by_its_field_and_id_index() {
        let listing = Listing { fields: FIELDS, select: "t.id".into(), from: "t", id: "t.id", with_id: &["name"] };
        let newest = ListQuery { after_id: Some(9), ..ListQuery::default().eq("name", "main").order_by("id", true) };
        let pg = compile_listing(&listing, &newest, Backend::Postgres).expect("compiles");
        assert_eq!(pg.where_sql, "WHERE t.name >= $1 AND t.name <= $1 AND t.id < $2");
        assert_eq!(pg.order_sql, "ORDER BY t.name DESC, t.id DESC");
        let sqlite = compile_listing(&listing, &newest, Backend::Sqlite).expect("compiles");
        assert_eq!(sqlite.where_sql, "WHERE t.name = $1 AND t.id < $2");
        assert_eq!(sqlite.order_sql, "ORDER BY t.id DESC");
        // Several values, another order, or a field without the index: as written.
        for q in [
            ListQuery { filters: vec![filter("name", Op::In, &["a", "b"])], ..Default::default() },
            ListQuery::default().eq("name", "main").order_by("name", false),
            ListQuery::default().eq("id", 3),
        ] {
            let c = compile_listing(&listing, &q, Backend::Postgres).expect("compiles");
            assert!(!c.where_sql.contains(" >= "), "{q:?}: {}", c.where_sql);
        }
        let mut twice = ListQuery::default().eq("name", "a");
        twice.filters.insert(0, filter("name", Op::In, &["a", "b"]));
        let c = compile_listing(&listing, &twice, Backend::Postgres).expect("compiles");
        assert_eq!(c.where_sql, "WHERE t.name IN ($1, $2) AND t.name >= $3 AND t.name <= $3");
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
