//! The page and its script and style sheet, built into the binary: no build step, nothing
//! fetched at run time.

use super::api::Reply;

/// The page.
const INDEX_HTML: &str = include_str!("assets/index.html");

/// The page's script.
const APP_JS: &str = include_str!("assets/app.js");

/// The page's style sheet.
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The page's icon, also answered for `/favicon.ico`.
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// `GET /`: the page.
pub fn page() -> Reply {
    Reply::asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /assets/NAME`: the script or the style sheet.
pub fn file(path: &str) -> Reply {
    match path {
        "/assets/app.js" => Reply::asset("text/javascript; charset=utf-8", APP_JS),
        "/assets/style.css" => Reply::asset("text/css; charset=utf-8", STYLE_CSS),
        "/assets/icon.svg" => Reply::asset("image/svg+xml", ICON_SVG),
        _ => Reply::error(404, "no such file"),
    }
}
