//! Remote tools against a real HTTP server on loopback, and the teacher path.

use regrpo_schemas::ExecStatus;
use std::time::Duration;

use axum::Json;
use axum::routing::{get, post};
use regrpo_engine::reflect::TeacherConfig;
use regrpo_engine::tool::remote::{self, RemoteConfig};
use regrpo_engine::{CallContext, EngineConfig, ToolSuite};
use regrpo_schemas::{Action, NearMiss, Rot};
use serde_json::{Value, json};

/// A server on loopback that [`stop`](Server::stop) shuts down with its open connections.
struct Server {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Stops accepting, closes idle keep-alive connections and waits for requests in flight.
    /// (Aborting the serve task alone left its connection tasks answering on the client's
    /// pooled connection, so "the server is down" raced with the next request.)
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// Serves `router` on an ephemeral loopback port; returns the base URL and the server.
async fn serve(router: axum::Router) -> (String, Server) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (format!("http://{addr}"), Server { stop, task })
}

fn openapi() -> Value {
    let body = |props: Value| json!({"content": {"application/json": {"schema": {"type": "object", "properties": props, "required": ["text"]}}}});
    json!({
        "openapi": "3.0.0",
        "paths": {
            "/Echo": {"post": {"summary": "Echo the text", "requestBody": body(json!({"text": {"type": "string"}}))}},
            "/Slow": {"post": {"summary": "Answers late", "requestBody": body(json!({"text": {"type": "string"}}))}},
            "/Garbage": {"post": {"summary": "Answers HTML", "requestBody": body(json!({"text": {"type": "string"}}))}}
        }
    })
}

fn tool_server() -> axum::Router {
    axum::Router::new()
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .route("/Echo", post(|Json(v): Json<Value>| async move { Json(json!({"text": v["text"]})) }))
        .route(
            "/Slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Json(json!({"text": "late"}))
            }),
        )
        .route("/Garbage", post(|| async { "<html>oops</html>" }))
}

async fn call(suite: &ToolSuite, code: &str) -> regrpo_schemas::Execution {
    let a = Action::parse_python(code).unwrap();
    suite.execute(&a.calls[0], &[], &CallContext::new(None)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_tools_answer_and_failures_become_observations() {
    let (url, server) = serve(tool_server()).await;
    let mut config = RemoteConfig::new(&url);
    config.timeout = Duration::from_millis(500);
    let tools = remote::connect(config).await.unwrap();
    let mut suite = ToolSuite::new();
    for t in tools {
        suite.add(t);
    }
    assert_eq!(suite.names(), ["Echo", "Garbage", "Slow"]);

    let e = call(&suite, "Echo(text='hi')").await;
    assert_eq!((e.status, e.text.as_str()), (ExecStatus::Ok, r#"{"text":"hi"}"#));
    let e = call(&suite, "Echo(words='hi')").await;
    assert_eq!(e.status, ExecStatus::SchemaError, "validated before any request: {}", e.text);
    let e = call(&suite, "Slow(text='hi')").await;
    assert_eq!(e.status, ExecStatus::Timeout, "{}", e.text);
    let e = call(&suite, "Garbage(text='hi')").await;
    assert_eq!((e.status, e.error_code.as_deref()), (ExecStatus::ToolError, Some("malformed_response")));

    // The server goes down: connection errors are retried, then observed.
    server.stop().await;
    let e = call(&suite, "Echo(text='hi')").await;
    assert_eq!((e.status, e.error_code.as_deref()), (ExecStatus::ToolError, Some("connection_error")), "{}", e.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_dead_server_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = remote::connect(RemoteConfig::new(format!("http://{addr}"))).await.err().unwrap();
    assert!(err.to_string().contains("openapi.json"), "{err}");
}

/// A teacher that quotes the observation it is shown (`good`) or invents a quote.
fn teacher(good: bool) -> axum::Router {
    axum::Router::new().route(
        "/v1/chat/completions",
        post(move |Json(req): Json<Value>| async move {
            let user = req["messages"][1]["content"].as_str().unwrap_or_default().to_string();
            let obs = user.split("Observation:\n").nth(1).and_then(|r| r.lines().next()).unwrap_or("").to_string();
            let et = user.rsplit("The judged ErrorType is ").next().unwrap_or("").trim_end_matches('.').to_string();
            let quote = if good { obs } else { "something the tool never said".to_string() };
            let content = format!("- ErrorType: {et}\n- Evidence: The tool said '{quote}', which shows the step failed.\n- FixPlan: Redo the call the way the task asks.");
            Json(json!({"choices": [{"message": {"role": "assistant", "content": content}}]}))
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teacher_reflections_pass_the_same_gates() {
    let dir = tempfile::tempdir().unwrap();
    let repo = regrpo_datasets::Repository::init(dir.path().join("r")).await.unwrap();
    regrpo_engine::toolworld::generate_into(&repo, 14, 2, 4, || {}).await.unwrap();
    for good in [true, false] {
        let (url, server) = serve(teacher(good)).await;
        let mut tc = TeacherConfig::from_env(&format!("{url}/v1"));
        tc.model = "test-teacher".into();
        let cfg = EngineConfig { seed: u64::from(good), teacher: Some(tc), ..EngineConfig::default() };
        let report = regrpo_engine::run::run(&repo, &ToolSuite::builtin(), &cfg, None).await.unwrap();
        if good {
            assert!(report.rot_added > 0, "{report:?}");
        } else {
            assert_eq!(report.rot_added, 0, "invented quotes must not pass: {report:?}");
            assert!(report.rejected.keys().any(|r| r.contains("evidence_quote")), "{:?}", report.rejected);
        }
        server.stop().await;
    }
    let rots = repo.read::<Rot>(None).await.unwrap();
    assert!(rots.iter().all(|r| r.generator == "teacher:test-teacher"));
    let near = repo.read::<NearMiss>(None).await.unwrap();
    assert!(near.iter().any(|n| n.reason.as_deref().is_some_and(|r| r.contains("evidence_quote"))));
}
