//! `codeb-ai-sim`: the Gemini Live and OpenAI Realtime simulators as one
//! process, for `codeb dev` and manual testing. Point the switch at them with
//! `CODEB_GEMINI_URL` / `CODEB_OPENAI_URL` (printed on start).

use std::time::Duration;

use clap::Parser;
use codeb_ai::sim::{Hearing, SimConfig, SimServer, Vendor};

/// Local voice-AI simulators (deterministic script; see `codeb_ai::sim::script`).
#[derive(Debug, Parser)]
#[command(name = "codeb-ai-sim", version)]
struct Args {
    /// Gemini Live simulator listen address.
    #[arg(long, env = "CODEB_SIM_GEMINI_ADDR", default_value = "127.0.0.1:9310")]
    gemini_addr: String,
    /// OpenAI Realtime simulator listen address.
    #[arg(long, env = "CODEB_SIM_OPENAI_ADDR", default_value = "127.0.0.1:9311")]
    openai_addr: String,
    /// The API key both simulators accept; empty: any non-empty key.
    #[arg(long, env = "CODEB_SIM_API_KEY", default_value = "sim-key")]
    api_key: String,
    /// Gemini connection lifetime in ms of caller audio (goAway, then close
    /// 1008); unlimited when unset.
    #[arg(long, env = "CODEB_SIM_CONNECTION_LIFETIME_MS")]
    connection_lifetime_ms: Option<u64>,
    /// Notice `goAway` gives before the lifetime ends, ms.
    #[arg(long, env = "CODEB_SIM_GO_AWAY_NOTICE_MS", default_value_t = 1000)]
    go_away_notice_ms: u64,
    /// Silence that ends a caller utterance, ms, when the client's setup
    /// does not say (clients normally do).
    #[arg(long, env = "CODEB_SIM_END_SILENCE_MS", default_value_t = 500)]
    end_silence_ms: u64,
    /// RMS (0–32767) at or above which caller audio counts as speech.
    #[arg(long, env = "CODEB_SIM_SPEECH_RMS", default_value_t = 500.0)]
    speech_rms: f64,
    /// Send messages as out of order and as piecemeal as the vendors may
    /// (the caller's transcript late and in pieces, the answer's last words
    /// after Gemini's `generationComplete`, an OpenAI function call without
    /// its name), as the real services do; `false`: each in order and
    /// whole.
    #[arg(long, env = "CODEB_SIM_LATE_TRANSCRIPTS", default_value_t = true, action = clap::ArgAction::Set)]
    late_transcripts: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let cfg = SimConfig {
        api_key: a.api_key,
        hearing: Hearing {
            speech_rms: a.speech_rms.clamp(1.0, 32_767.0),
            end_silence: Duration::from_millis(a.end_silence_ms.clamp(50, 10_000)),
            ..Hearing::default()
        },
        connection_lifetime: a.connection_lifetime_ms.map(Duration::from_millis),
        go_away_notice: Duration::from_millis(a.go_away_notice_ms),
        late_transcripts: a.late_transcripts,
        ..SimConfig::default()
    };
    let gemini = SimServer::bind(Vendor::Gemini, &a.gemini_addr, cfg.clone()).await?;
    let openai = SimServer::bind(Vendor::OpenAi, &a.openai_addr, cfg).await?;
    println!(
        "Gemini Live simulator:     CODEB_GEMINI_URL={}",
        gemini.url()
    );
    println!(
        "OpenAI Realtime simulator: CODEB_OPENAI_URL={}",
        openai.url()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
