//! The admin API's OpenAPI document, fetched from a running hub, is a valid
//! OpenAPI 3.1 document: it passes the official OpenAPI 3.1 JSON Schema
//! (`tests/data/openapi-3.1-schema.json`, see `tests/data/README.md`), and
//! every schema object in it is a valid JSON Schema 2020-12 schema (the
//! 3.1 dialect is 2020-12 plus annotations, which the official schema leaves
//! unchecked: its schema objects are any object or boolean). Beside the
//! schema, the rules of the specification that a JSON Schema cannot state
//! and validators check: operation ids unique, every local `$ref` resolving,
//! every `{param}` of a path declared as a path parameter.

mod common;

use serde_json::Value;

use common::Server;

const OPENAPI_31_SCHEMA: &str = include_str!("data/openapi-3.1-schema.json");

/// Every problem with `doc`, one line each.
fn problems(doc: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(OPENAPI_31_SCHEMA).expect("the vendored schema");
    let validator = jsonschema::draft202012::new(&schema).expect("the official schema compiles");
    let mut out: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    let schemas = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .into_iter()
        .flatten();
    for (name, s) in schemas {
        if let Err(e) = jsonschema::draft202012::meta::validate(s) {
            out.push(format!("/components/schemas/{name}: {e}"));
        }
    }
    out.extend(spec_rules(doc));
    out
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// What the specification requires beyond its JSON Schema.
fn spec_rules(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut ids = std::collections::BTreeMap::<&str, usize>::new();
    let paths = doc["paths"].as_object().into_iter().flatten();
    for (path, item) in paths {
        let templated: Vec<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|s| s.split_once('}').map(|(p, _)| p))
            .collect();
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            if let Some(id) = op["operationId"].as_str() {
                *ids.entry(id).or_default() += 1;
            }
            let declared = |name: &str| {
                [&item["parameters"], &op["parameters"]]
                    .into_iter()
                    .filter_map(Value::as_array)
                    .flatten()
                    .any(|p| p["in"] == "path" && p["name"] == name)
            };
            for name in &templated {
                if !declared(name) {
                    out.push(format!(
                        "{method} {path}: path parameter {name} not declared"
                    ));
                }
            }
            // And the converse: a path parameter the path has no place for.
            let path_params = [&item["parameters"], &op["parameters"]]
                .into_iter()
                .filter_map(Value::as_array)
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str());
            for name in path_params {
                if !templated.contains(&name) {
                    out.push(format!(
                        "{method} {path}: path parameter {name} is not in the path"
                    ));
                }
            }
        }
    }
    for (id, n) in ids {
        if n > 1 {
            out.push(format!("operationId {id:?} is used by {n} operations"));
        }
    }
    let mut refs = Vec::new();
    collect_refs(doc, &mut refs);
    for r in refs {
        match r.strip_prefix('#') {
            Some(pointer) if doc.pointer(pointer).is_some() => {}
            _ => out.push(format!("$ref {r:?} does not resolve in the document")),
        }
    }
    out
}

fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_is_valid_openapi_3_1() {
    let hub = Server::start();
    let (status, text) = hub.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200, "{text}");
    let doc: Value = serde_json::from_str(&text).expect("the document is JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "an OpenAPI 3.1 document: {}",
        doc["openapi"]
    );
    assert!(
        doc["paths"].as_object().is_some_and(|p| p.len() >= 10),
        "the document lists the admin routes"
    );
    let problems = problems(&doc);
    assert!(
        problems.is_empty(),
        "{} OpenAPI 3.1 errors:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The check itself finds what a validator finds: the faults the hub's
/// document once had (responses without a description, operation ids used
/// twice) and others (a bad schema, a dangling `$ref`, an undeclared path
/// parameter).
#[test]
fn the_check_catches_invalid_documents() {
    let doc: Value = serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/x": {"get": {"operationId": "get", "responses": {"200": {
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Gone"}}}
            }}}},
            "/y/{id}": {"get": {"operationId": "get", "responses": {"204": {"description": "ok"}}}},
            "/z": {"post": {"operationId": "z", "parameters": [
                {"name": "minutes", "in": "path", "required": true, "schema": {"type": "integer"}}
            ], "responses": {"204": {"description": "ok"}}}}
        },
        "components": {"schemas": {"Bad": {"type": "no-such-type"}}}
    });
    let problems = problems(&doc);
    assert!(
        problems.iter().any(|p| p.contains("description")),
        "a response without a description: {problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("/components/schemas/Bad")),
        "an invalid schema object: {problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("path parameter minutes is not in the path")),
        "a path parameter the path has no place for: {problems:?}"
    );
}
