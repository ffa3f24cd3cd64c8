//! CORS for browser subscribers on another origin: the exact origin echoed with credentials,
//! nothing for origins not on the list.

use herald_tests::Herald;
use http::{Method, StatusCode};

const ALLOWED: &str = "http://example.test";

/// True when the answer says it depends on the request's `Origin` (for caches).
fn varies_by_origin(headers: &http::HeaderMap) -> bool {
    headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("Origin"))
}

#[tokio::test]
async fn an_allowed_origin_is_echoed_with_credentials_and_other_origins_get_no_cors_headers() {
    let herald = Herald::start(&["--dev", "--cors-origin", ALLOWED]);

    let allowed = herald
        .events()
        .topic("t")
        .header("origin", ALLOWED)
        .open()
        .await;
    assert_eq!(allowed.header("access-control-allow-origin"), Some(ALLOWED));
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(
        varies_by_origin(allowed.headers()),
        "{:?}",
        allowed.headers()
    );

    for origin in [
        Some("http://evil.test"),
        Some("http://example.test:8080"),
        None,
    ] {
        let mut events = herald.events().topic("t");
        if let Some(o) = origin {
            events = events.header("origin", o);
        }
        let other = events.open().await;
        assert_eq!(
            other.header("access-control-allow-origin"),
            None,
            "{origin:?}"
        );
        assert_eq!(
            other.header("access-control-allow-credentials"),
            None,
            "{origin:?}"
        );
        // Still an answer that depends on the origin, for caches, as through hyper.
        assert!(
            varies_by_origin(other.headers()),
            "{origin:?}: {:?}",
            other.headers()
        );
    }

    // JSON answers (errors included) carry it too, so a page can read why it was refused.
    let error = herald
        .call(Method::GET, "/nowhere")
        .header("origin", ALLOWED)
        .send()
        .await;
    assert_eq!(error.status, StatusCode::NOT_FOUND);
    assert_eq!(error.header("access-control-allow-origin"), Some(ALLOWED));

    // The preflight a browser sends before a cross-origin publish.
    let preflight = herald
        .call(Method::OPTIONS, "/publish")
        .header("origin", ALLOWED)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await;
    assert!(preflight.status.is_success(), "{}", preflight.status);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(ALLOWED)
    );
    assert_eq!(
        preflight.header("access-control-allow-credentials"),
        Some("true")
    );
    let methods = preflight
        .header("access-control-allow-methods")
        .unwrap_or_default();
    assert!(methods.contains("POST"), "{methods}");
    let refused = herald
        .call(Method::OPTIONS, "/publish")
        .header("origin", "http://evil.test")
        .header("access-control-request-method", "POST")
        .send()
        .await;
    assert_eq!(refused.header("access-control-allow-origin"), None);
    // A preflight for a path that is not there is told so.
    let nowhere = herald
        .call(Method::OPTIONS, "/nowhere")
        .header("origin", ALLOWED)
        .header("access-control-request-method", "POST")
        .send()
        .await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    nowhere.error();
}
