//! Embeds the SQL migrations (`migrations/{sqlite,postgres}/NNNN_name.sql`)
//! as lists the store hands to sqlx's migrator at run time. This is what
//! `sqlx::migrate!` would do, without its proc-macro, which built a second
//! copy of sqlx, both database drivers and SQLite for the host (about a
//! minute of every clean build and of CI). Versions, descriptions and
//! checksums are sqlx's own rules, so databases migrated by either agree.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let mut code = String::new();
    for (name, dir) in [
        ("SQLITE", "migrations/sqlite"),
        ("POSTGRES", "migrations/postgres"),
    ] {
        println!("cargo:rerun-if-changed={dir}");
        let list = migrations(&root.join(dir));
        let _ = writeln!(code, "pub static {name}: &[(i64, &str, &str)] = &[");
        for (version, description, file) in list {
            // The path is the crate's at compile time, not this script's:
            // its output is reused by a checkout at another path that
            // shares the target directory (a worktree, a moved clone).
            let _ = writeln!(
                code,
                "    ({version}, {description:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), {:?}))),",
                format!("/{dir}/{file}")
            );
        }
        code.push_str("];\n");
    }
    fs::write(out.join("migrations.rs"), code).expect("writing OUT_DIR/migrations.rs");
}

/// The migrations in `dir` (version, description, file name), by
/// version: sqlx's file naming (`<version>_<description>.sql`, underscores
/// in the description read as spaces); other files are ignored, as sqlx
/// ignores them.
fn migrations(dir: &Path) -> Vec<(i64, String, String)> {
    let mut list = Vec::new();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("reading the migrations directory").path();
        if !path.is_file() {
            continue;
        }
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some((version, rest)) = file.split_once('_') else {
            continue;
        };
        let Some(stem) = rest.strip_suffix(".sql") else {
            continue;
        };
        assert!(
            !stem.ends_with(".up") && !stem.ends_with(".down"),
            "{file}: reversible migrations are not used here"
        );
        let version: i64 = version
            .parse()
            .unwrap_or_else(|_| panic!("{file}: the name must start with a version number"));
        list.push((version, stem.replace('_', " "), file.clone()));
    }
    list.sort_by_key(|(v, _, _)| *v);
    for pair in list.windows(2) {
        assert!(
            pair[0].0 != pair[1].0,
            "two migrations numbered {}",
            pair[0].0
        );
    }
    list
}
