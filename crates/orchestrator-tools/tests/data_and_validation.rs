//! data-processing and validation on real data and files.

use orchestrator_tools::data::DataProcessing;
use orchestrator_tools::testing::{TestWorkspace, test_workspace};
use orchestrator_tools::validation::Validation;
use orchestrator_tools::{Tool, ToolContext, ToolError};
use serde_json::{Map, Value, json};

fn ctx() -> (ToolContext, TestWorkspace) {
    let ws = test_workspace();
    (ws.ctx.clone(), ws)
}

async fn data(ctx: &ToolContext, action: &str, p: Value) -> Result<Value, ToolError> {
    DataProcessing
        .execute(
            action,
            &p.as_object().cloned().unwrap_or_else(Map::new),
            ctx,
        )
        .await
}

async fn validation(ctx: &ToolContext, action: &str, p: Value) -> Result<Value, ToolError> {
    Validation
        .execute(
            action,
            &p.as_object().cloned().unwrap_or_else(Map::new),
            ctx,
        )
        .await
}

const SALES: &str =
    "region,product,amount\nnorth,apple,10\nsouth,apple,5\nnorth,pear,7.5\nnorth,apple,2\n";

#[tokio::test]
async fn csv_files_are_filtered_aggregated_and_converted() {
    let (ctx, _ws) = ctx();
    std::fs::write(ctx.workspace.join("sales.csv"), SALES).expect("write");
    let r = data(
        &ctx,
        "filter",
        json!({"path": "sales.csv", "criteria": {"region": "north", "amount": {"gte": 5}}}),
    )
    .await
    .expect("filter");
    assert_eq!(r["count"], 2);
    assert_eq!(r["data"][1]["product"], "pear");
    let r = data(
        &ctx,
        "aggregate",
        json!({"path": "sales.csv", "group_by": "region", "aggregations": {"total": {"op": "sum", "field": "amount"}, "n": "count", "top": {"op": "max", "field": "amount"}, "mean": {"op": "avg", "field": "amount"}}}),
    )
    .await
    .expect("aggregate");
    assert_eq!(
        r["data"],
        json!([
            {"region": "north", "total": 19.5, "n": 3, "top": 10, "mean": 6.5},
            {"region": "south", "total": 5, "n": 1, "top": 5, "mean": 5}
        ])
    );
    let r = data(&ctx, "convert", json!({"data": SALES, "to": "json"}))
        .await
        .expect("convert");
    assert_eq!(r["count"], 4);
    assert_eq!(
        r["data"][0],
        json!({"region": "north", "product": "apple", "amount": "10"})
    );
    let back = data(&ctx, "convert", json!({"data": r["data"], "to": "csv"}))
        .await
        .expect("convert back");
    assert_eq!(back["content"], SALES);
    let t = data(
        &ctx,
        "transform",
        json!({"data": [{"a": 1, "b": 2, "c": 3}], "select": ["a", "c"], "rename": {"c": "see"}}),
    )
    .await
    .expect("transform");
    assert_eq!(t["data"], json!([{"a": 1, "see": 3}]));
}

#[tokio::test]
async fn bad_data_gets_typed_errors() {
    let (ctx, _ws) = ctx();
    let e = data(
        &ctx,
        "convert",
        json!({"data": "a,b\n1,2,3\n", "to": "json"}),
    )
    .await
    .expect_err("ragged csv");
    assert_eq!(e.kind, "DataFormatError");
    let e = data(&ctx, "filter", json!({"data": "[1, 2", "format": "json"}))
        .await
        .expect_err("bad json");
    assert_eq!(e.kind, "DataFormatError");
    let e = data(&ctx, "filter", json!({"path": "missing.csv"}))
        .await
        .expect_err("missing");
    assert_eq!(e.kind, "FileNotFoundError");
    let e = data(&ctx, "filter", json!({"path": "../x.csv"}))
        .await
        .expect_err("escape");
    assert_eq!(e.kind, "PermissionError");
    let e = data(
        &ctx,
        "filter",
        json!({"data": [{"a": 1}], "criteria": {"a": {"like": 1}}}),
    )
    .await
    .expect_err("op");
    assert_eq!(e.kind, "ValidationError");
    let e = data(
        &ctx,
        "aggregate",
        json!({"data": [{"a": 1}], "aggregations": {"x": {"op": "median", "field": "a"}}}),
    )
    .await
    .expect_err("agg");
    assert!(e.message.contains("median"));
}

#[tokio::test]
async fn validation_reads_text_and_rows_as_the_seed_does() {
    let (ctx, _ws) = ctx();
    let row = json!({"type": "object", "required": ["id", "name"], "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "active": {"type": "boolean"}}});
    // JSON text is read as JSON.
    let ok = validation(
        &ctx,
        "validate",
        json!({"schema": row, "data": "{\"id\": 1, \"name\": \"a\"}"}),
    )
    .await
    .expect("json text");
    assert_eq!(ok["valid"], true, "{ok}");
    // CSV rows against an object schema: each row, strict then lenient.
    let csv = "id,name,active\n1,a,true\n2,,false\nx,c,maybe\n";
    let strict = validation(&ctx, "validate", json!({"schema": row, "data": csv}))
        .await
        .expect("csv");
    assert_eq!(strict["valid"], false);
    assert_eq!(strict["rows_validated"], 3);
    let lenient = validation(
        &ctx,
        "validate",
        json!({"schema": row, "data": csv, "mode": "LENIENT"}),
    )
    .await
    .expect("lenient");
    assert_eq!(lenient["mode"], "lenient");
    let rows_with_errors: Vec<i64> = lenient["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["row"].as_i64())
        .collect();
    // Row 3: "x" is no integer and "maybe" no boolean.
    assert_eq!(rows_with_errors, vec![3, 3], "{lenient:#}");
    assert_eq!(
        lenient["data"][0],
        json!({"id": 1, "name": "a", "active": true})
    );
    assert!(
        lenient["warnings"].as_array().is_some_and(|w| w.len() >= 4),
        "{lenient:#}"
    );
    let report = validation(
        &ctx,
        "validate",
        json!({"schema": row, "data": csv, "mode": "report_only"}),
    )
    .await
    .expect("report");
    assert_eq!(report["valid"], true);
    assert!(report["warnings"].as_array().is_some_and(|w| !w.is_empty()));
    // Text the schema wants as text stays text.
    let text = validation(
        &ctx,
        "validate",
        json!({"schema": {"type": "string", "maxLength": 3}, "data": "[1]"}),
    )
    .await
    .expect("text");
    assert_eq!(text["valid"], true, "{text}");
    let e = validation(
        &ctx,
        "validate",
        json!({"schema": row, "data": {}, "mode": "loose"}),
    )
    .await
    .expect_err("unknown mode");
    assert!(e.message.contains("mode 'loose'"), "{}", e.message);
}

#[tokio::test]
async fn validation_reports_every_error_with_its_path() {
    let (ctx, _ws) = ctx();
    let schema = json!({"type": "object", "required": ["name", "age"], "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}, "tags": {"type": "array", "items": {"type": "string"}}}});
    let ok = validation(
        &ctx,
        "validate",
        json!({"schema": schema, "data": {"name": "a", "age": 3}}),
    )
    .await
    .expect("valid");
    assert_eq!(
        ok,
        json!({"valid": true, "errors": [], "warnings": [], "mode": "strict", "data": {"name": "a", "age": 3}})
    );
    let bad = validation(
        &ctx,
        "validate",
        json!({"schema": schema, "data": {"age": -1, "tags": ["x", 2]}}),
    )
    .await
    .expect("answers");
    assert_eq!(bad["valid"], false);
    let paths: Vec<&str> = bad["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(
        paths.contains(&"/") && paths.contains(&"/age") && paths.contains(&"/tags/1"),
        "{paths:?}"
    );
    let e = validation(
        &ctx,
        "validate",
        json!({"schema": schema, "data": {"age": 1}, "fail_on_invalid": true}),
    )
    .await
    .expect_err("fails");
    assert_eq!(e.kind, "SchemaValidationError");
    let e = validation(
        &ctx,
        "validate",
        json!({"schema": {"type": "nonsense"}, "data": 1}),
    )
    .await
    .expect_err("bad schema");
    assert_eq!(e.kind, "ValidationError");
    std::fs::write(ctx.workspace.join("doc.json"), r#"{"name": "x", "age": 1}"#).expect("write");
    let ok = validation(
        &ctx,
        "validate",
        json!({"schema": schema, "path": "doc.json"}),
    )
    .await
    .expect("file");
    assert_eq!(ok["valid"], true);
}

#[tokio::test]
async fn inferred_schemas_accept_their_data() {
    let (ctx, _ws) = ctx();
    let sample = json!([{"id": 1, "name": "a", "score": 1.5}, {"id": 2, "name": "b", "score": 2, "extra": true}]);
    let r = validation(&ctx, "infer_schema", json!({"data": sample}))
        .await
        .expect("infer");
    let schema = &r["schema"];
    assert_eq!(schema["items"]["required"], json!(["id", "name", "score"]));
    assert_eq!(schema["items"]["properties"]["score"]["type"], "number");
    let check = validation(&ctx, "validate", json!({"schema": schema, "data": sample}))
        .await
        .expect("validate");
    assert_eq!(check["valid"], true);
}

/// The seed's form: settings nested under `operation`, and the rows back in
/// the format they came in as `processed_data`.
#[tokio::test]
async fn settings_nested_under_operation_apply_and_rows_come_back_in_their_format() {
    let (ctx, _ws) = ctx();
    let csv = "name,status\nann,active\nbob,inactive\ncid,active\n";
    let out = data(
        &ctx,
        "filter",
        json!({"data": csv, "format": "csv", "operation": {"criteria": {"status": "active"}}}),
    )
    .await
    .expect("filters");
    assert_eq!(out["count"], 2);
    assert_eq!(
        out["processed_data"],
        "name,status\nann,active\ncid,active\n"
    );
    // A key given directly wins over the nested one.
    let out = data(
        &ctx,
        "filter",
        json!({"data": [{"s": 1}, {"s": 2}], "criteria": {"s": 2}, "operation": {"criteria": {"s": 1}}}),
    )
    .await
    .expect("filters");
    assert_eq!(out["processed_data"], json!([{"s": 2}]));
    assert!(
        data(
            &ctx,
            "filter",
            json!({"data": [], "operation": "status=active"})
        )
        .await
        .is_err()
    );
}

/// `profile`: per column missing values, type, numeric summary, outliers
/// and unique values; duplicate rows; the same under `processed_data`.
#[tokio::test]
async fn profiles_describe_each_column_and_the_duplicates() {
    let (ctx, _ws) = ctx();
    let csv = "name,score,joined\nann,10,2024-01-01\nbob,12,2024-02-01\ncid,,2024-03-01\nann,10,2024-01-01\ndan,1000,2024-04-01\neve,11,2024-05-01\nfay,13,2024-06-01\n";
    let out = data(&ctx, "profile", json!({"data": csv, "format": "csv"}))
        .await
        .expect("profiles");
    assert_eq!(
        (out["row_count"].clone(), out["column_count"].clone()),
        (json!(7), json!(3))
    );
    assert_eq!(out["duplicate_rows"], 1);
    let score = &out["columns"]["score"];
    assert_eq!(score["missing_count"], 1);
    assert_eq!(score["data_type"], "numeric", "6 of 7 are numbers");
    assert_eq!(score["min"], 10.0);
    assert_eq!(score["max"], 1000.0);
    assert_eq!(score["median"], 11.5);
    assert_eq!(score["outlier_count"], 1);
    assert_eq!(score["unique_count"], 5);
    assert_eq!(out["columns"]["joined"]["data_type"], "date");
    assert_eq!(out["processed_data"]["row_count"], 7);
    let only = data(
        &ctx,
        "profile",
        json!({"data": csv, "profiling_options": ["missing_values"]}),
    )
    .await
    .expect("profiles");
    assert!(only["columns"]["score"].get("data_type").is_none());
    assert!(only.get("duplicate_rows").is_none());
    let empty = data(&ctx, "profile", json!({"data": []}))
        .await
        .expect("empty");
    assert_eq!(empty["row_count"], 0);
}

/// The seed's reshaping actions: pivot, clean and merge.
#[tokio::test]
async fn rows_are_pivoted_cleaned_and_merged() {
    let (ctx, _ws) = ctx();
    let sales = "region,product,amount\nnorth,a,10\nnorth,a,5\nnorth,b,7\nsouth,a,3\n";
    let out = data(
        &ctx,
        "pivot",
        json!({"data": sales, "index": "region", "columns": "product", "values": "amount", "aggfunc": "sum"}),
    )
    .await
    .expect("pivot");
    assert_eq!(
        out["data"],
        json!([{"region": "north", "a": 15, "b": 7}, {"region": "south", "a": 3, "b": 0}])
    );
    assert!(
        out["processed_data"]
            .as_str()
            .is_some_and(|c| c.starts_with("region,")),
        "{out}"
    );
    let err = data(&ctx, "pivot", json!({"data": sales, "index": "region"}))
        .await
        .expect_err("needs columns and values");
    assert!(err.message.contains("'columns'"), "{err}");

    let messy = json!([
        {"id": 1, "v": 10}, {"id": 1, "v": 10}, {"id": 2, "v": null},
        {"id": 3, "v": 12}, {"id": 4, "v": 11}, {"id": 5, "v": 1000}
    ]);
    let out = data(
        &ctx,
        "clean",
        json!({"data": messy, "handle_missing": "forward_fill", "remove_outliers": true}),
    )
    .await
    .expect("clean");
    assert_eq!(out["removed_duplicates"], 1, "{out}");
    assert_eq!(out["filled_missing"], 1, "{out}");
    assert_eq!(out["removed_outliers"], 1, "{out}");
    assert_eq!(
        out["data"],
        json!([{"id": 1, "v": 10}, {"id": 2, "v": 10}, {"id": 3, "v": 12}, {"id": 4, "v": 11}])
    );
    let out = data(&ctx, "clean", json!({"data": messy}))
        .await
        .expect("drop");
    assert_eq!(
        (out["count"].clone(), out["removed_missing"].clone()),
        (json!(4), json!(1))
    );

    let people = json!([{"id": 1, "name": "ada"}, {"id": 2, "name": "bob"}]);
    let ages = "id,age\n1,36\n3,50\n";
    let out = data(
        &ctx,
        "merge",
        json!({"datasets": [people, ages], "merge_strategy": "join", "join_on": "id"}),
    )
    .await
    .expect("inner join");
    assert_eq!(out["data"], json!([{"id": 1, "name": "ada", "age": "36"}]));
    let out = data(&ctx, "merge", json!({"datasets": [people, ages], "merge_strategy": "join", "join_on": "id", "join_type": "outer"}))
        .await
        .expect("outer join");
    assert_eq!(out["count"], 3, "{out}");
    let out = data(&ctx, "merge", json!({"datasets": [people, [{"id": 9}]]}))
        .await
        .expect("combine");
    assert_eq!(out["count"], 3);
}
