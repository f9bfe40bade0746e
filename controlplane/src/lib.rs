//! CodeB control plane: the v1 REST API, the built-in OIDC issuer, storage
//! on SQLite or PostgreSQL, webhook delivery, the scheduler and the gRPC
//! link to switch nodes. The binary is `codeb`; `app()` is the whole HTTP
//! application as a function, so tests drive it without a socket.

/// `eprintln!` without its panic on a closed stderr (a `codeb dev` or
/// `codeb serve` whose terminal or log pipe went away keeps running and
/// stops cleanly).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` without its panic on a closed stdout: `codeb admin users
/// list | head -1` ends quietly, as a Unix tool does.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod dev;
pub mod email;
pub mod metrics;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod store;
pub mod switch_link;
pub mod ui;
pub mod webhooks;

pub use api::app;
