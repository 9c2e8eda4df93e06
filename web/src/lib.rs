//! The dashboard the collector serves at `/`: flows live, "why blocked",
//! a traffic map, policies and a SQL console.
//!
//! Plain HTML, CSS and JavaScript modules compiled into the binary, so the
//! dashboard needs no build step, no file access at run time and no network
//! beyond the collector's own API (`/api/v1/...`), which it only calls.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("../assets/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Everything under `/assets/`.
const ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("flows.js", JS),
    asset!("why.js", JS),
    asset!("map.js", JS),
    asset!("policies.js", JS),
    asset!("lint.js", JS),
    asset!("sql.js", JS),
    asset!("whatif.js", JS),
    asset!("advise.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

const INDEX: &str = include_str!("../assets/index.html");

/// The dashboard's routes: `/` and `/assets/{file}`. Merge it with the API
/// router; it has no state and calls nothing but the API from the browser.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page is tiny and must pick up a new binary's assets at once.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                // Names are not content-hashed: revalidate rather than cache
                // long, so an upgraded collector never serves stale scripts.
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            a.body,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no dashboard asset named {file:?}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(path: &str) -> (StatusCode, String, String) {
        let response = router()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn the_page_and_every_asset_it_names_are_served() {
        let (status, content_type, html) = get("/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "text/html; charset=utf-8");
        for asset in ASSETS {
            let (status, content_type, body) = get(&format!("/assets/{}", asset.name)).await;
            assert_eq!(status, StatusCode::OK, "{}", asset.name);
            assert_eq!(content_type, asset.content_type);
            assert!(!body.is_empty(), "{} is empty", asset.name);
        }
        // Every script and stylesheet the page or a module loads exists.
        let mut referenced = Vec::new();
        for text in std::iter::once(html.as_str()).chain(ASSETS.iter().map(|a| a.body)) {
            for piece in text.split(['"', '\'']) {
                if let Some(name) = piece
                    .strip_prefix("/assets/")
                    .or_else(|| piece.strip_prefix("./"))
                    .filter(|n| n.ends_with(".js") || n.ends_with(".css") || n.ends_with(".svg"))
                {
                    referenced.push(name.to_owned());
                }
            }
        }
        assert!(referenced.iter().any(|n| n == "app.js"), "{referenced:?}");
        for name in referenced {
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "{name} is referenced but not embedded"
            );
        }
    }

    #[tokio::test]
    async fn nothing_outside_the_embedded_set_is_served() {
        for path in ["/assets/../Cargo.toml", "/assets/nope.js", "/assets/"] {
            let (status, _, _) = get(path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn the_page_loads_nothing_from_the_network() {
        for text in std::iter::once(INDEX).chain(ASSETS.iter().map(|a| a.body)) {
            for scheme in ["http://", "https://", "//cdn"] {
                assert!(
                    !text.contains(&format!("src=\"{scheme}"))
                        && !text.contains(&format!("href=\"{scheme}"))
                        && !text.contains(&format!("from \"{scheme}"))
                        && !text.contains(&format!("import(\"{scheme}")),
                    "an asset loads something from {scheme}"
                );
            }
        }
    }
}
