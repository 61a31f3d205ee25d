//! The few database operations the store's queries need, written once for
//! both backends.
//!
//! sqlx's own generic API asks every function that binds a value or reads a
//! row to repeat a bound per type (`i64: Encode<'_, DB> + Type<DB>`, …),
//! because Rust does not carry such bounds along. Here each of them is
//! stated once, as a supertrait of [`Db`] (the types the store binds) or of
//! [`Rows`] (the rows it reads), and the queries use [`Sql`] and [`Values`]
//! instead of `sqlx::query`/`QueryBuilder`. A backend is a [`Db`] plus a
//! [`crate::dialect::Dialect`] (its statements that differ).
//!
//! A query that binds a new type or reads a new row shape fails to compile
//! until the type is added to the list below.

use std::future::Future;

use serde::Serialize;
use sqlx::error::BoxDynError;
use sqlx::types::Json;
use sqlx::{Arguments, Database, FromRow, Postgres, Sqlite};

use crate::Result;

/// A value the store binds: each kind goes through one of [`Db`]'s
/// `add_*` methods.
pub(crate) trait Arg {
    fn add<DB: Db>(self, args: &mut DB::Arguments) -> Result<(), BoxDynError>;
}

impl Arg for i64 {
    fn add<DB: Db>(self, args: &mut DB::Arguments) -> Result<(), BoxDynError> {
        DB::add_i64(args, Some(self))
    }
}

impl Arg for Option<i64> {
    fn add<DB: Db>(self, args: &mut DB::Arguments) -> Result<(), BoxDynError> {
        DB::add_i64(args, self)
    }
}

impl Arg for f64 {
    fn add<DB: Db>(self, args: &mut DB::Arguments) -> Result<(), BoxDynError> {
        DB::add_f64(args, self)
    }
}

impl Arg for bool {
    fn add<DB: Db>(self, args: &mut DB::Arguments) -> Result<(), BoxDynError> {
        DB::add_bool(args, self)
    }
}

impl Arg for &str {
    fn add<DB: Db>(self, args: &mut DB::Arguments) -> Result<(), BoxDynError> {
        DB::add_str(args, Some(self))
    }
}

impl Arg for Option<&str> {
    fn add<DB: Db>(self, args: &mut DB::Arguments) -> Result<(), BoxDynError> {
        DB::add_str(args, self)
    }
}

impl Arg for &String {
    fn add<DB: Db>(self, args: &mut DB::Arguments) -> Result<(), BoxDynError> {
        DB::add_str(args, Some(self))
    }
}

impl Arg for String {
    fn add<DB: Db>(self, args: &mut DB::Arguments) -> Result<(), BoxDynError> {
        DB::add_str(args, Some(&self))
    }
}

impl Arg for &Option<String> {
    fn add<DB: Db>(self, args: &mut DB::Arguments) -> Result<(), BoxDynError> {
        DB::add_str(args, self.as_deref())
    }
}

impl Arg for Option<String> {
    fn add<DB: Db>(self, args: &mut DB::Arguments) -> Result<(), BoxDynError> {
        DB::add_str(args, self.as_deref())
    }
}

/// A list of strings: a JSON list on SQLite (read with `json_each`), an
/// array on PostgreSQL (read with `ANY`).
pub(crate) struct TextList<'a>(pub &'a [String]);

impl Arg for TextList<'_> {
    fn add<DB: Db>(self, args: &mut DB::Arguments) -> Result<(), BoxDynError> {
        DB::add_text_list(args, self.0)
    }
}

/// A row type the backend can read.
pub(crate) trait Decodes<T>: sqlx::Row {
    fn decode(&self) -> sqlx::Result<T>;
}

impl<R: sqlx::Row, T> Decodes<T> for R
where
    T: for<'r> FromRow<'r, R>,
{
    fn decode(&self) -> sqlx::Result<T> {
        T::from_row(self)
    }
}

/// A JSON document column read back.
type Doc = Json<serde_json::Value>;

/// Every row shape the store reads (named rows and tuples).
pub(crate) trait Rows:
    sqlx::Row
    + Decodes<crate::rows::ExecutionRow>
    + Decodes<crate::rows::StepRow>
    + Decodes<crate::rows::CloseRow>
    + Decodes<crate::rows::FlowRow>
    + Decodes<crate::rows::CheckpointRow>
    + Decodes<crate::rows::ContextRow>
    + Decodes<crate::rows::ResultRow>
    + Decodes<crate::rows::ClaimRow>
    + Decodes<(String,)>
    + Decodes<(i64,)>
    + Decodes<(bool,)>
    + Decodes<(Option<i64>,)>
    + Decodes<(Option<f64>,)>
    + Decodes<(Option<String>,)>
    + Decodes<(String, String)>
    + Decodes<(String, i64)>
    + Decodes<(String, String, bool)>
    + Decodes<(String, i64, i64)>
    + Decodes<(i64, Option<i64>)>
    + Decodes<(Option<String>, Doc, i64)>
    + Decodes<(i64, String, String, String, i64, i64, Doc)>
    + Decodes<crate::rows::DeliveryRow>
    + Decodes<crate::rows::TokenRow>
    + Decodes<crate::rows::ModelTotalsRow>
    + Decodes<crate::rows::UsageRow>
    + Decodes<crate::rows::ModelRow>
    + Decodes<crate::rows::EventRow>
    + Decodes<crate::rows::WebhookRow>
    + Decodes<crate::rows::WaitRow>
    + Decodes<crate::pipelines::PipelineRecord>
    + Decodes<crate::pipelines::PipelineSummary>
    + Decodes<crate::memory::MemoryRow>
    + Decodes<crate::logs::LogLine>
    + Decodes<(Option<String>, Option<String>)>
    + Decodes<(String, Option<Doc>, Option<String>)>
{
}

impl<R> Rows for R where
    R: sqlx::Row
        + Decodes<crate::rows::ExecutionRow>
        + Decodes<crate::rows::StepRow>
        + Decodes<crate::rows::CloseRow>
        + Decodes<crate::rows::FlowRow>
        + Decodes<crate::rows::CheckpointRow>
        + Decodes<crate::rows::ContextRow>
        + Decodes<crate::rows::ResultRow>
        + Decodes<crate::rows::ClaimRow>
        + Decodes<(String,)>
        + Decodes<(i64,)>
        + Decodes<(bool,)>
        + Decodes<(Option<i64>,)>
        + Decodes<(Option<f64>,)>
        + Decodes<(Option<String>,)>
        + Decodes<(String, String)>
        + Decodes<(String, i64)>
        + Decodes<(String, String, bool)>
        + Decodes<(String, i64, i64)>
        + Decodes<(i64, Option<i64>)>
        + Decodes<(Option<String>, Doc, i64)>
        + Decodes<(i64, String, String, String, i64, i64, Doc)>
        + Decodes<crate::rows::DeliveryRow>
        + Decodes<crate::rows::TokenRow>
        + Decodes<crate::rows::ModelTotalsRow>
        + Decodes<crate::rows::UsageRow>
        + Decodes<crate::rows::ModelRow>
        + Decodes<crate::rows::EventRow>
        + Decodes<crate::rows::WebhookRow>
        + Decodes<crate::rows::WaitRow>
        + Decodes<crate::pipelines::PipelineRecord>
        + Decodes<crate::pipelines::PipelineSummary>
        + Decodes<crate::memory::MemoryRow>
        + Decodes<crate::logs::LogLine>
        + Decodes<(Option<String>, Option<String>)>
        + Decodes<(String, Option<Doc>, Option<String>)>
{
}

/// A database the store runs on: the value types it binds, the rows it
/// reads, and statements run on one connection.
pub(crate) trait Db: Database<Row: Rows> {
    fn add_i64(args: &mut Self::Arguments, value: Option<i64>) -> Result<(), BoxDynError>;
    fn add_f64(args: &mut Self::Arguments, value: f64) -> Result<(), BoxDynError>;
    fn add_bool(args: &mut Self::Arguments, value: bool) -> Result<(), BoxDynError>;
    /// Adds text (`NULL` for `None`).
    fn add_str(args: &mut Self::Arguments, value: Option<&str>) -> Result<(), BoxDynError>;
    /// Adds a list of strings (see [`TextList`]).
    fn add_text_list(args: &mut Self::Arguments, value: &[String]) -> Result<(), BoxDynError>;
    /// Adds a JSON document (`NULL` for `None`).
    fn add_json<T: Serialize + ?Sized>(
        args: &mut Self::Arguments,
        value: Option<&T>,
    ) -> Result<(), BoxDynError>;

    /// Runs a statement; the number of rows it changed.
    fn execute(
        conn: &mut Self::Connection,
        sql: sqlx::SqlStr,
        args: Self::Arguments,
    ) -> impl Future<Output = sqlx::Result<u64>> + Send;

    /// Runs a query; all its rows.
    fn fetch_all(
        conn: &mut Self::Connection,
        sql: sqlx::SqlStr,
        args: Self::Arguments,
    ) -> impl Future<Output = sqlx::Result<Vec<Self::Row>>> + Send;

    /// Runs a query; its first row, if any.
    fn fetch_optional(
        conn: &mut Self::Connection,
        sql: sqlx::SqlStr,
        args: Self::Arguments,
    ) -> impl Future<Output = sqlx::Result<Option<Self::Row>>> + Send;
}

impl Db for Sqlite {
    fn add_i64(args: &mut Self::Arguments, value: Option<i64>) -> Result<(), BoxDynError> {
        args.add(value)
    }

    fn add_f64(args: &mut Self::Arguments, value: f64) -> Result<(), BoxDynError> {
        args.add(value)
    }

    fn add_bool(args: &mut Self::Arguments, value: bool) -> Result<(), BoxDynError> {
        args.add(value)
    }

    fn add_str(args: &mut Self::Arguments, value: Option<&str>) -> Result<(), BoxDynError> {
        args.add(value)
    }

    fn add_text_list(args: &mut Self::Arguments, value: &[String]) -> Result<(), BoxDynError> {
        args.add(serde_json::to_string(value)?)
    }

    fn add_json<T: Serialize + ?Sized>(
        args: &mut Self::Arguments,
        value: Option<&T>,
    ) -> Result<(), BoxDynError> {
        args.add(value.map(Json))
    }

    async fn execute(
        conn: &mut Self::Connection,
        sql: sqlx::SqlStr,
        args: Self::Arguments,
    ) -> sqlx::Result<u64> {
        let done = sqlx::query_with(sql, args).execute(conn).await?;
        Ok(done.rows_affected())
    }

    async fn fetch_all(
        conn: &mut Self::Connection,
        sql: sqlx::SqlStr,
        args: Self::Arguments,
    ) -> sqlx::Result<Vec<Self::Row>> {
        sqlx::query_with(sql, args).fetch_all(conn).await
    }

    async fn fetch_optional(
        conn: &mut Self::Connection,
        sql: sqlx::SqlStr,
        args: Self::Arguments,
    ) -> sqlx::Result<Option<Self::Row>> {
        sqlx::query_with(sql, args).fetch_optional(conn).await
    }
}

impl Db for Postgres {
    fn add_i64(args: &mut Self::Arguments, value: Option<i64>) -> Result<(), BoxDynError> {
        args.add(value)
    }

    fn add_f64(args: &mut Self::Arguments, value: f64) -> Result<(), BoxDynError> {
        args.add(value)
    }

    fn add_bool(args: &mut Self::Arguments, value: bool) -> Result<(), BoxDynError> {
        args.add(value)
    }

    fn add_str(args: &mut Self::Arguments, value: Option<&str>) -> Result<(), BoxDynError> {
        args.add(value)
    }

    fn add_text_list(args: &mut Self::Arguments, value: &[String]) -> Result<(), BoxDynError> {
        args.add(value)
    }

    fn add_json<T: Serialize + ?Sized>(
        args: &mut Self::Arguments,
        value: Option<&T>,
    ) -> Result<(), BoxDynError> {
        args.add(value.map(Json))
    }

    async fn execute(
        conn: &mut Self::Connection,
        sql: sqlx::SqlStr,
        args: Self::Arguments,
    ) -> sqlx::Result<u64> {
        let done = sqlx::query_with(sql, args).execute(conn).await?;
        Ok(done.rows_affected())
    }

    async fn fetch_all(
        conn: &mut Self::Connection,
        sql: sqlx::SqlStr,
        args: Self::Arguments,
    ) -> sqlx::Result<Vec<Self::Row>> {
        sqlx::query_with(sql, args).fetch_all(conn).await
    }

    async fn fetch_optional(
        conn: &mut Self::Connection,
        sql: sqlx::SqlStr,
        args: Self::Arguments,
    ) -> sqlx::Result<Option<Self::Row>> {
        sqlx::query_with(sql, args).fetch_optional(conn).await
    }
}

/// A statement with its bound values, as `sqlx::query` builds one.
pub(crate) struct Sql<DB: Db> {
    sql: sqlx::SqlStr,
    args: DB::Arguments,
    /// The first value that failed to encode (reported when run).
    error: Option<BoxDynError>,
}

/// A statement of the store's own text.
pub(crate) fn q<DB: Db>(sql: &'static str) -> Sql<DB> {
    Sql {
        sql: sqlx::SqlSafeStr::into_sql_str(sql),
        args: Default::default(),
        error: None,
    }
}

impl<DB: Db> Sql<DB> {
    /// Binds the next `$n`.
    pub(crate) fn bind(mut self, value: impl Arg) -> Self {
        if let Err(e) = value.add::<DB>(&mut self.args) {
            self.error.get_or_insert(e);
        }
        self
    }

    /// Binds a JSON document.
    pub(crate) fn json<T: Serialize + ?Sized>(self, value: &T) -> Self {
        self.json_opt(Some(value))
    }

    /// Binds a JSON document or `NULL`.
    pub(crate) fn json_opt<T: Serialize + ?Sized>(mut self, value: Option<&T>) -> Self {
        if let Err(e) = DB::add_json(&mut self.args, value) {
            self.error.get_or_insert(e);
        }
        self
    }

    fn ready(self) -> sqlx::Result<(sqlx::SqlStr, DB::Arguments)> {
        match self.error {
            Some(e) => Err(sqlx::Error::Encode(e)),
            None => Ok((self.sql, self.args)),
        }
    }

    /// Runs it; the number of rows changed.
    pub(crate) async fn execute(self, conn: &mut DB::Connection) -> Result<u64> {
        let (sql, args) = self.ready()?;
        Ok(DB::execute(conn, sql, args).await?)
    }

    /// All rows, read as `T`.
    pub(crate) async fn fetch_all<T>(self, conn: &mut DB::Connection) -> Result<Vec<T>>
    where
        DB::Row: Decodes<T>,
    {
        let (sql, args) = self.ready()?;
        let rows = DB::fetch_all(conn, sql, args).await?;
        Ok(rows
            .iter()
            .map(|r| r.decode())
            .collect::<sqlx::Result<_>>()?)
    }

    /// The first row, if any, read as `T`.
    pub(crate) async fn fetch_optional<T>(self, conn: &mut DB::Connection) -> Result<Option<T>>
    where
        DB::Row: Decodes<T>,
    {
        let (sql, args) = self.ready()?;
        let row = DB::fetch_optional(conn, sql, args).await?;
        Ok(row.map(|r| r.decode()).transpose()?)
    }

    /// The first row, read as `T` (`RowNotFound` without one).
    pub(crate) async fn fetch_one<T>(self, conn: &mut DB::Connection) -> Result<T>
    where
        DB::Row: Decodes<T>,
    {
        self.fetch_optional(conn)
            .await?
            .ok_or(crate::StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// The first column of every row.
    pub(crate) async fn scalars<T>(self, conn: &mut DB::Connection) -> Result<Vec<T>>
    where
        DB::Row: Decodes<(T,)>,
    {
        let rows: Vec<(T,)> = self.fetch_all(conn).await?;
        Ok(rows.into_iter().map(|(v,)| v).collect())
    }

    /// The first column of the first row, if any.
    pub(crate) async fn scalar_optional<T>(self, conn: &mut DB::Connection) -> Result<Option<T>>
    where
        DB::Row: Decodes<(T,)>,
    {
        let row: Option<(T,)> = self.fetch_optional(conn).await?;
        Ok(row.map(|(v,)| v))
    }

    /// The first column of the first row (`RowNotFound` without one).
    pub(crate) async fn scalar<T>(self, conn: &mut DB::Connection) -> Result<T>
    where
        DB::Row: Decodes<(T,)>,
    {
        let (v,): (T,) = self.fetch_one(conn).await?;
        Ok(v)
    }
}

/// A statement built piece by piece, for multi-row `VALUES` lists and `IN`
/// lists, with each backend's placeholders (as `sqlx::QueryBuilder`).
pub(crate) struct Values<DB: Db> {
    sql: String,
    args: DB::Arguments,
    error: Option<BoxDynError>,
    /// Values in the current row so far.
    in_row: usize,
    rows: usize,
}

impl<DB: Db> Values<DB> {
    pub(crate) fn new(prefix: &str) -> Self {
        Values {
            sql: prefix.to_string(),
            args: Default::default(),
            error: None,
            in_row: 0,
            rows: 0,
        }
    }

    /// Appends SQL text.
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.close_row();
        self.sql.push_str(sql);
        self
    }

    /// Starts the next `VALUES` row (`VALUES (` before the first, `), (`
    /// between rows).
    pub(crate) fn row(&mut self) -> &mut Self {
        self.close_row();
        self.sql
            .push_str(if self.rows == 0 { "VALUES (" } else { ", (" });
        self.rows += 1;
        self.in_row = 1;
        self
    }

    fn close_row(&mut self) {
        if self.in_row > 0 {
            self.sql.push(')');
            self.in_row = 0;
        }
    }

    fn placeholder(&mut self) {
        if self.in_row > 1 {
            self.sql.push_str(", ");
        }
        if self.in_row > 0 {
            self.in_row += 1;
        }
        // `$n` on PostgreSQL, `?` on SQLite.
        let _ = self.args.format_placeholder(&mut self.sql);
    }

    /// Binds a value in the current row (or, outside rows, where the SQL
    /// so far ends).
    pub(crate) fn bind(&mut self, value: impl Arg) -> &mut Self {
        if let Err(e) = value.add::<DB>(&mut self.args) {
            self.error.get_or_insert(e);
        }
        self.placeholder();
        self
    }

    /// Binds a JSON document or `NULL` in the current row.
    pub(crate) fn json_opt<T: Serialize + ?Sized>(&mut self, value: Option<&T>) -> &mut Self {
        if let Err(e) = DB::add_json(&mut self.args, value) {
            self.error.get_or_insert(e);
        }
        self.placeholder();
        self
    }

    /// Binds a JSON document in the current row.
    pub(crate) fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> &mut Self {
        self.json_opt(Some(value))
    }

    /// The statement, ready to run.
    pub(crate) fn build(mut self) -> Sql<DB> {
        self.close_row();
        Sql {
            sql: sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(self.sql)),
            args: self.args,
            error: self.error,
        }
    }
}
