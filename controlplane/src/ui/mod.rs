//! The admin pages the spec sends integrators to: `/api-keys-admin.html`
//! (mint and revoke API keys), `/webhooks-admin.html` (subscribe, test
//! fire, pause and resume, rotate the secret, the delivery log and its
//! replays) and `/outbound-ai-monitor.html` (calls as they progress, hang
//! up, read the transcript).
//!
//! Each page is a static shell and `admin.js` does the rest: it signs in
//! with the built-in OIDC issuer (password grant, client `codeb-admin`),
//! keeps the tokens in the tab's `sessionStorage`, refreshes them once on a
//! 401, and calls the same v1 API an integrator calls, so the pages hold no
//! privilege of their own. Everything the API returns goes into the DOM as
//! text, never as markup, and the Content-Security-Policy lets the pages
//! load, run and fetch from this origin only.

use std::fmt::Write as _;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use codeb_types::{CallStatus, EventName};

use crate::api::share_page::escape;

const SCRIPT: &str = include_str!("admin.js");
const STYLE: &str = include_str!("admin.css");

/// The pages, in the order of the navigation bar: (path, title, page id).
const PAGES: [(&str, &str, &str); 3] = [
    ("/outbound-ai-monitor.html", "Outbound AI calls", "monitor"),
    ("/webhooks-admin.html", "Webhooks", "webhooks"),
    ("/api-keys-admin.html", "API keys", "api-keys"),
];

/// `GET /outbound-ai-monitor.html`
pub async fn monitor() -> Response {
    let mut statuses = String::new();
    for s in CallStatus::ALL {
        let _ = write!(statuses, "<option>{}</option>", s.as_str());
    }
    page(
        "monitor",
        &format!(
            "<h1>Outbound AI calls</h1>\
             <p class=\"lede\">Calls placed with <code>POST /api.ashx/v1/calls</code>, newest \
             first. The list refreshes every few seconds.</p>\
             <div class=\"bar\"><label>Status <select id=\"status-filter\">\
             <option value=\"\">all</option>{statuses}</select></label>\
             <span id=\"updated\" class=\"muted\"></span></div>\
             <p id=\"error\" class=\"error\" role=\"alert\"></p>\
             <table id=\"calls\"><thead><tr><th>Call</th><th>Phone</th><th>Name</th>\
             <th>Status</th><th>Attempt</th><th>Outcome</th><th>Dispatched</th>\
             <th>Answered</th><th>Ended</th><th>Duration</th><th></th></tr></thead>\
             <tbody id=\"calls-body\"></tbody></table>\
             <p id=\"calls-empty\" class=\"muted\" hidden>No calls yet.</p>\
             <div class=\"bar\"><button type=\"button\" id=\"prev\" disabled>Newer</button>\
             <span id=\"range\" class=\"muted\"></span>\
             <button type=\"button\" id=\"next\" disabled>Older</button></div>\
             <section id=\"transcript\" hidden></section>"
        ),
    )
}

/// `GET /webhooks-admin.html`
pub async fn webhooks() -> Response {
    let mut boxes = String::from(
        "<label class=\"check\"><input type=\"checkbox\" name=\"events\" value=\"*\"> \
         <code>*</code> every event</label>",
    );
    for e in EventName::ALL {
        let _ = write!(
            boxes,
            "<label class=\"check\"><input type=\"checkbox\" name=\"events\" value=\"{e}\"> \
             <code>{e}</code></label>",
            e = escape(e.as_str())
        );
    }
    page(
        "webhooks",
        &format!(
            "<h1>Webhooks</h1>\
             <p class=\"lede\">Each subscription gets the events it names as signed JSON \
             POSTs. Its signing secret is shown once, when it is created or rotated. After 20 \
             failed delivery attempts in a row it is paused until you resume it.</p>\
             <button type=\"button\" id=\"new-webhook\">+ New webhook</button>\
             <form id=\"webhook-form\" class=\"panel\" hidden>\
             <label>Receiver URL <input name=\"url\" type=\"url\" required maxlength=\"2048\" \
             placeholder=\"https://hooks.example.com/codeb\"></label>\
             <fieldset><legend>Events</legend>{boxes}</fieldset>\
             <button type=\"submit\">Create</button> \
             <button type=\"button\" class=\"cancel\">Cancel</button></form>\
             <div id=\"secret\" class=\"secret\" hidden></div>\
             <p id=\"notice\" class=\"notice\" role=\"status\"></p>\
             <p id=\"error\" class=\"error\" role=\"alert\"></p>\
             <table id=\"webhooks\"><thead><tr><th>URL</th><th>Events</th><th>State</th>\
             <th>Last fired</th><th>Failures</th><th></th></tr></thead>\
             <tbody id=\"webhooks-body\"></tbody></table>\
             <p id=\"webhooks-empty\" class=\"muted\" hidden>No subscriptions yet.</p>\
             <section id=\"deliveries\" hidden></section>"
        ),
    )
}

/// `GET /api-keys-admin.html`
pub async fn api_keys() -> Response {
    page(
        "api-keys",
        "<h1>API keys</h1>\
         <p class=\"lede\">An <code>ak_</code> key lets a server call the API without an \
         admin password: send it as <code>Authorization: Bearer ak_…</code>. It is shown once, \
         when it is created; only its SHA-256 is kept. Revoking one leaves the others working.\
         </p>\
         <button type=\"button\" id=\"new-key\">+ New API key</button>\
         <form id=\"key-form\" class=\"panel\" hidden>\
         <label>Name <input name=\"name\" required maxlength=\"64\" placeholder=\"crm-sync\">\
         </label> <button type=\"submit\">Create</button> \
         <button type=\"button\" class=\"cancel\">Cancel</button></form>\
         <div id=\"secret\" class=\"secret\" hidden></div>\
         <p id=\"error\" class=\"error\" role=\"alert\"></p>\
         <table id=\"keys\"><thead><tr><th>Name</th><th>Id</th><th>Created</th><th>By</th>\
         <th>Last used</th><th></th></tr></thead><tbody id=\"keys-body\"></tbody></table>\
         <p id=\"keys-empty\" class=\"muted\" hidden>No API keys yet.</p>",
    )
}

/// `GET /ui/admin.js`
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /ui/admin.css`
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// One page: the shared frame (navigation, sign-in form) around `main`.
fn page(id: &str, main: &str) -> Response {
    let title = PAGES.iter().find(|p| p.2 == id).map_or("Admin", |p| p.1);
    let mut nav = String::new();
    for (path, name, page) in PAGES {
        let current = if page == id {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{path}\"{current}>{name}</a>");
    }
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title} · CodeB admin</title>\
         <link rel=\"stylesheet\" href=\"/ui/admin.css\"><link rel=\"icon\" href=\"data:,\">\
         </head>\
         <body data-page=\"{id}\"><header><strong class=\"brand\">CodeB</strong>\
         <nav>{nav}</nav><span id=\"who\" class=\"muted\"></span>\
         <button type=\"button\" id=\"sign-out\" hidden>Sign out</button></header>\
         <section id=\"sign-in\" hidden><h1>Sign in</h1>\
         <form id=\"sign-in-form\" class=\"panel\">\
         <label>Username <input name=\"username\" autocomplete=\"username\" required></label>\
         <label>Password <input name=\"password\" type=\"password\" \
         autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Sign in</button>\
         <p id=\"sign-in-error\" class=\"error\" role=\"alert\"></p></form></section>\
         <main id=\"app\" hidden>{main}</main>\
         <noscript><p>These pages need JavaScript.</p></noscript>\
         <script src=\"/ui/admin.js\"></script></body></html>"
    );
    contained(html.into_response(), "text/html; charset=utf-8")
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    contained(body.into_response(), content_type)
}

/// Pages and their assets load, run and fetch from this origin only, and
/// are never framed (clickjacking of the buttons that mint and revoke).
/// `Cache-Control: no-store` comes from the router.
fn contained(mut resp: Response, content_type: &'static str) -> Response {
    let headers = resp.headers_mut();
    for (k, v) in [
        (header::CONTENT_TYPE, content_type),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(k, HeaderValue::from_static(v));
    }
    resp
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;

    async fn text(resp: Response) -> String {
        let body = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn every_event_can_be_chosen_and_every_status_filtered() {
        let hooks = text(webhooks().await).await;
        for e in EventName::ALL {
            assert!(
                hooks.contains(&format!("value=\"{}\"", e.as_str())),
                "{e} missing"
            );
        }
        let monitor = text(monitor().await).await;
        for s in CallStatus::ALL {
            assert!(monitor.contains(&format!("<option>{s}</option>")), "{s}");
        }
    }

    #[tokio::test]
    async fn pages_name_themselves_and_load_only_their_own_assets() {
        for (path, title, id) in PAGES {
            let resp = match id {
                "monitor" => monitor().await,
                "webhooks" => webhooks().await,
                _ => api_keys().await,
            };
            let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
            let html = text(resp).await;
            assert!(html.contains(&format!("<title>{title} ·")), "{path}");
            assert!(html.contains(&format!("<a href=\"{path}\" aria-current=\"page\">")));
            assert!(!html.contains("<script>"), "{path}: no inline script");
        }
    }
}
