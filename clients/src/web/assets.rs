//! The page and its script and style sheet, built into the binary: no build step, nothing
//! fetched at run time.

use super::api::Reply;

/// The page.
const INDEX_HTML: &str = include_str!("assets/index.html");

/// The page's script.
const APP_JS: &str = include_str!("assets/app.js");

/// The page's style sheet.
const STYLE_CSS: &str = include_str!("assets/style.css");

/// `GET /`: the page.
pub fn page() -> Reply {
    Reply { status: 200, content_type: "text/html; charset=utf-8", body: INDEX_HTML.into() }
}

/// `GET /assets/NAME`: the script or the style sheet.
pub fn file(path: &str) -> Reply {
    match path {
        "/assets/app.js" => Reply {
            status: 200,
            content_type: "text/javascript; charset=utf-8",
            body: APP_JS.into(),
        },
        "/assets/style.css" => {
            Reply { status: 200, content_type: "text/css; charset=utf-8", body: STYLE_CSS.into() }
        }
        _ => Reply::error(404, "no such file"),
    }
}
