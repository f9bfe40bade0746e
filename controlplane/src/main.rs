use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = codeb::cli::Cli::parse();
    // Not eprintln!: it panics when stderr is a closed pipe.
    let say = |msg: String| {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "codeb: {msg}");
    };
    if let Err(e) = codeb::config::init_logging(&cli.settings) {
        say(e);
        return std::process::ExitCode::FAILURE;
    }
    match codeb::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            say(format!("{e:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}
