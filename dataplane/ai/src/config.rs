//! What a voice-AI session is started with: the provider (chosen by the
//! call's `model` string), endpoints, audio formats, the persona and the tools.

use std::sync::Arc;

use serde_json::{Value, json};
use url::Url;

use crate::error::EngineError;

/// The real Gemini Live endpoint (`CODEB_GEMINI_URL` overrides it).
pub const GEMINI_DEFAULT_URL: &str = "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";
/// The path of [`GEMINI_DEFAULT_URL`]; added to a `CODEB_GEMINI_URL` that has none.
pub const GEMINI_PATH: &str =
    "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";
/// The real OpenAI Realtime endpoint (`CODEB_OPENAI_URL` overrides it).
pub const OPENAI_DEFAULT_URL: &str = "wss://api.openai.com/v1/realtime";
/// The path of [`OPENAI_DEFAULT_URL`]; added to a `CODEB_OPENAI_URL` that has none.
pub const OPENAI_PATH: &str = "/v1/realtime";

/// The Gemini model used when a call names none (the spec's `model` is
/// optional; `live-voice-ai` and a bare `models/` mean "the default").
pub const GEMINI_DEFAULT_MODEL: &str = codeb_types::vendor::GEMINI_DEFAULT_MODEL;
/// The engine's voice detection ends the caller's turn after this much
/// silence ([`SessionConfig::vad_silence_ms`]'s default).
pub const DEFAULT_VAD_SILENCE_MS: u32 = 500;

/// Which vendor protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Google Gemini Live (`BidiGenerateContent`).
    Gemini,
    /// OpenAI Realtime (GA shapes).
    OpenAi,
}

/// A provider and the model name in that vendor's own spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelChoice {
    /// The vendor.
    pub provider: Provider,
    /// `models/…` for Gemini; the bare model (`gpt-realtime`) for OpenAI.
    pub model: String,
}

impl ModelChoice {
    /// Picks the engine from a call's `model` field, by
    /// [`codeb_types::vendor::parse_model`] (the rule the control plane
    /// checks models by).
    pub fn from_model(model: &str) -> Result<Self, EngineError> {
        match codeb_types::vendor::parse_model(model) {
            Some((vendor, model)) => Ok(Self {
                provider: match vendor {
                    codeb_types::Vendor::Gemini => Provider::Gemini,
                    codeb_types::Vendor::OpenAi => Provider::OpenAi,
                },
                model,
            }),
            None => Err(EngineError::UnknownModel(truncate_for_error(model.trim()))),
        }
    }
}

fn truncate_for_error(s: &str) -> String {
    s.chars().take(64).collect()
}

/// How audio bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Signed 16-bit little-endian PCM, mono.
    PcmS16le,
    /// G.711 μ-law (8 kHz).
    Pcmu,
    /// G.711 A-law (8 kHz).
    Pcma,
}

/// An audio format: codec plus sample rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    /// Sample encoding.
    pub codec: Codec,
    /// Samples per second.
    pub rate_hz: u32,
}

impl AudioFormat {
    /// Gemini's input: PCM16 at 16 kHz.
    pub const PCM16_16K: Self = Self {
        codec: Codec::PcmS16le,
        rate_hz: 16_000,
    };
    /// Gemini's output: PCM16 at 24 kHz.
    pub const PCM16_24K: Self = Self {
        codec: Codec::PcmS16le,
        rate_hz: 24_000,
    };
    /// G.711 μ-law, 8 kHz.
    pub const PCMU: Self = Self {
        codec: Codec::Pcmu,
        rate_hz: 8_000,
    };
    /// G.711 A-law, 8 kHz.
    pub const PCMA: Self = Self {
        codec: Codec::Pcma,
        rate_hz: 8_000,
    };

    /// Bytes per sample.
    pub fn bytes_per_sample(self) -> u32 {
        match self.codec {
            Codec::PcmS16le => 2,
            Codec::Pcmu | Codec::Pcma => 1,
        }
    }

    /// Duration of `bytes` of this audio, in microseconds.
    pub fn duration_us(self, bytes: usize) -> u64 {
        let samples = bytes as u64 / u64::from(self.bytes_per_sample());
        samples * 1_000_000 / u64::from(self.rate_hz.max(1))
    }
}

/// A function the model may call (JSON Schema parameters, lower-case types;
/// the Gemini adapter upper-cases them as Gemini expects).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDecl {
    /// Function name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// Name of the tool that ends the call (finish the sentence, drain playout, BYE).
pub const TOOL_END_CALL: &str = "end_call";
/// Name of the tool that transfers the caller to a user.
pub const TOOL_TRANSFER_TO_USER: &str = "transfer_to_user";

impl ToolDecl {
    /// `end_call {reason?}`.
    pub fn end_call() -> Self {
        Self {
            name: TOOL_END_CALL.into(),
            description: "Hang up after saying goodbye. Call it once the conversation is over."
                .into(),
            parameters: json!({"type":"object","properties":{"reason":{"type":"string"}}}),
        }
    }

    /// `transfer_to_user {user}`.
    pub fn transfer_to_user() -> Self {
        Self {
            name: TOOL_TRANSFER_TO_USER.into(),
            description: "Transfer the caller to a human user of this platform.".into(),
            parameters: json!({"type":"object","properties":{"user":{"type":"string"}},"required":["user"]}),
        }
    }

    /// The platform's standard tool set: `end_call` and `transfer_to_user`.
    pub fn standard() -> Vec<Self> {
        vec![Self::end_call(), Self::transfer_to_user()]
    }
}

/// Where the engines live. [`Endpoints::from_env`] reads `CODEB_GEMINI_URL`
/// and `CODEB_OPENAI_URL`; a URL without a path gets the vendor's path.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Gemini Live WebSocket URL (without `?key=`).
    pub gemini: Url,
    /// OpenAI Realtime WebSocket URL (without `?model=`).
    pub openai: Url,
}

impl Endpoints {
    /// The vendors' real endpoints.
    pub fn vendor() -> Self {
        // Both are compile-time constants that parse; this cannot fail.
        Self::parse(GEMINI_DEFAULT_URL, OPENAI_DEFAULT_URL).expect("vendor endpoint constants")
    }

    /// Endpoints from `CODEB_GEMINI_URL` / `CODEB_OPENAI_URL`, defaulting to the vendors'.
    pub fn from_env() -> Result<Self, EngineError> {
        let g = std::env::var("CODEB_GEMINI_URL").unwrap_or_else(|_| GEMINI_DEFAULT_URL.into());
        let o = std::env::var("CODEB_OPENAI_URL").unwrap_or_else(|_| OPENAI_DEFAULT_URL.into());
        Self::parse(&g, &o)
    }

    /// Parses two endpoint URLs (`ws://` or `wss://`).
    pub fn parse(gemini: &str, openai: &str) -> Result<Self, EngineError> {
        Ok(Self {
            gemini: endpoint(gemini, GEMINI_PATH)?,
            openai: endpoint(openai, OPENAI_PATH)?,
        })
    }
}

fn endpoint(s: &str, default_path: &str) -> Result<Url, EngineError> {
    let mut u =
        Url::parse(s.trim()).map_err(|e| EngineError::Config(format!("endpoint {s:?}: {e}")))?;
    if !matches!(u.scheme(), "ws" | "wss") {
        return Err(EngineError::Config(format!(
            "endpoint {s:?}: scheme must be ws or wss"
        )));
    }
    if u.host_str().is_none() {
        return Err(EngineError::Config(format!("endpoint {s:?}: no host")));
    }
    if u.path().is_empty() || u.path() == "/" {
        u.set_path(default_path);
    }
    u.set_query(None);
    Ok(u)
}

/// Everything a session starts with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Vendor and model ([`ModelChoice::from_model`] on the call's `model`).
    pub model: ModelChoice,
    /// Where to connect.
    pub endpoints: Endpoints,
    /// The vendor API key (the call's `apiKey`). Never logged.
    pub api_key: String,
    /// Voice name (Gemini: `Aoede`, `Charon`…; OpenAI: `marin`, `alloy`…).
    pub voice: Option<String>,
    /// BCP-47 language (`en-US`).
    pub language: Option<String>,
    /// System instruction / prompt.
    pub instructions: String,
    /// Functions offered to the model.
    pub tools: Vec<ToolDecl>,
    /// Ask the vendor to transcribe the caller.
    pub transcribe_input: bool,
    /// Ask the vendor to transcribe the AI's speech.
    pub transcribe_output: bool,
    /// A user text turn sent once the session is ready, so that the AI speaks
    /// first (both vendors wait for input otherwise).
    pub kickoff: Option<String>,
    /// OpenAI only: G.711 flavour for both directions (`Pcmu` or `Pcma`).
    pub telephony_codec: Codec,
    /// Server VAD silence that ends the caller's turn.
    pub vad_silence_ms: u32,
    /// TLS client configuration; `None` = the webpki (Mozilla) roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Bound on the time to connect and get the session ready.
    pub connect_timeout: std::time::Duration,
    /// A connection the vendor has sent nothing on for this long (while
    /// the session runs) is pinged; one that stays silent as long again
    /// is taken as lost: resumed where the vendor allows it, else the
    /// session ends (a hung vendor would leave the call silent).
    pub idle_ping: std::time::Duration,
}

impl SessionConfig {
    /// A config with the platform defaults (standard tools, both
    /// transcriptions on, μ-law, 500 ms end-of-speech silence, 10 s connect).
    pub fn new(model: ModelChoice, endpoints: Endpoints, api_key: impl Into<String>) -> Self {
        Self {
            model,
            endpoints,
            api_key: api_key.into(),
            voice: None,
            language: None,
            instructions: String::new(),
            tools: ToolDecl::standard(),
            transcribe_input: true,
            transcribe_output: true,
            kickoff: Some("The call is connected. Greet the caller.".into()),
            telephony_codec: Codec::Pcmu,
            vad_silence_ms: DEFAULT_VAD_SILENCE_MS,
            tls: None,
            connect_timeout: std::time::Duration::from_secs(10),
            idle_ping: std::time::Duration::from_secs(15),
        }
    }

    /// The format the engine wants caller audio in.
    pub fn input_format(&self) -> AudioFormat {
        match self.model.provider {
            Provider::Gemini => AudioFormat::PCM16_16K,
            Provider::OpenAi => openai_format(self.telephony_codec),
        }
    }
}

/// OpenAI's G.711 format for a codec preference (PCM means μ-law here:
/// the OpenAI session is always run in G.711 for telephony).
pub(crate) fn openai_format(codec: Codec) -> AudioFormat {
    match codec {
        Codec::Pcma => AudioFormat::PCMA,
        Codec::Pcmu | Codec::PcmS16le => AudioFormat::PCMU,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_strings_pick_the_engine() {
        let c = ModelChoice::from_model("openai/gpt-realtime").unwrap();
        assert_eq!(
            (c.provider, c.model.as_str()),
            (Provider::OpenAi, "gpt-realtime")
        );
        let c = ModelChoice::from_model("gpt-realtime-mini").unwrap();
        assert_eq!(c.provider, Provider::OpenAi);
        let c = ModelChoice::from_model("gemini-live-2.5-flash").unwrap();
        assert_eq!(c.model, "models/gemini-live-2.5-flash");
        let c = ModelChoice::from_model("models/gemini-2.0-flash-live-001").unwrap();
        assert_eq!(c.model, "models/gemini-2.0-flash-live-001");
        for default in ["", "models/", "live-voice-ai"] {
            let c = ModelChoice::from_model(default).unwrap();
            assert_eq!(c.model, GEMINI_DEFAULT_MODEL);
        }
        for bad in [
            "claude-3",
            "openai/",
            "openai/a b",
            "models/gemini?key=x",
            &"g".repeat(200),
        ] {
            assert!(ModelChoice::from_model(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_get_the_vendor_path_when_given_none() {
        let e = Endpoints::parse("ws://127.0.0.1:9000", "ws://127.0.0.1:9001/").unwrap();
        assert_eq!(e.gemini.path(), GEMINI_PATH);
        assert_eq!(e.openai.as_str(), "ws://127.0.0.1:9001/v1/realtime");
        let e = Endpoints::parse("wss://x.example/custom?key=leak", "ws://h/v1/realtime").unwrap();
        assert_eq!(e.gemini.as_str(), "wss://x.example/custom");
        assert!(Endpoints::parse("http://h", "ws://h").is_err());
        let v = Endpoints::vendor();
        assert_eq!(v.gemini.as_str(), GEMINI_DEFAULT_URL);
        assert_eq!(v.openai.as_str(), OPENAI_DEFAULT_URL);
    }

    #[test]
    fn audio_durations() {
        assert_eq!(AudioFormat::PCM16_16K.duration_us(640), 20_000);
        assert_eq!(AudioFormat::PCMU.duration_us(160), 20_000);
        assert_eq!(AudioFormat::PCM16_24K.duration_us(960), 20_000);
    }
}
