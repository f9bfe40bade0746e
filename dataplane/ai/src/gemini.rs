//! Gemini Live (`BidiGenerateContent`) as a sans-IO [`Engine`].
//!
//! Client frames are JSON text; the server's JSON may come in text or binary
//! frames (Google sends binary). The key rides in `?key=`. Audio in is base64
//! PCM16 16 kHz, audio out base64 PCM16 24 kHz. Transcripts arrive as
//! fragments without a final flag: the caller's utterance is final when the
//! model turn starts, the AI's when the turn ends (`generationComplete`,
//! `turnComplete` or `interrupted`, whichever comes first; some turns end
//! with `generationComplete` alone). The caller's transcript has no
//! ordering against the rest: pieces that come once the model turn has
//! started are final again at its end (the switch joins them to the
//! utterance, `ai::task`). The output transcript may go on after
//! `generationComplete` until `turnComplete`: such pieces revise the ended
//! turn's text (`OutputRevised`, whole), instead of opening a turn of
//! their own.
//!
//! Resumption: setup always asks for `sessionResumption`; the newest
//! resumable handle is kept. On `goAway` the engine asks the driver for a new
//! connection once a model turn has been answered to its `turnComplete`
//! since (the caller's words before it are then in the session's state,
//! and the turn's usage and last words have come; what it has not answered
//! yet would be lost, so not after a turn the caller cut into), or at once
//! if the server closes first (as it does if no turn ends with a
//! `turnComplete` before the notice runs out: a turn ended by
//! `generationComplete` alone is no point to move at), and the new setup
//! carries the handle, so the conversation goes on where it was.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::Url;

use crate::config::{AudioFormat, Codec, Provider, SessionConfig, ToolDecl};
use crate::error::EngineError;
use crate::event::{EngineEvent, Usage};
use crate::session::{Command, Engine, Step, Target};
use crate::transport::Outbox;

/// Longest transcript kept per utterance/turn; fragments past it are still
/// reported but not appended to the final text.
pub(crate) const MAX_TRANSCRIPT: usize = 16 * 1024;
/// Longest resumption handle we keep.
const MAX_HANDLE: usize = 4096;

/// Gemini Live session state.
pub struct GeminiEngine {
    url: Url,
    key: String,
    setup: Map<String, Value>,
    kickoff: Option<String>,
    /// Ready once (first `setupComplete`); later ones are resumptions.
    ready: bool,
    /// This connection got its `setupComplete`.
    connection_ready: bool,
    handle: Option<String>,
    go_away: bool,
    /// A model turn ended since `goAway`: the caller's words before it
    /// are in the session's state.
    turn_since_go_away: bool,
    in_turn: bool,
    /// The last model turn was cut by the caller (`interrupted`), who is
    /// speaking: no point to move connections at until the next turn.
    cut: bool,
    input_text: String,
    output_text: String,
    /// The text of a turn `generationComplete` ended, while its output
    /// transcript may still come (until `turnComplete`, an interruption
    /// or the next turn's audio).
    revising: Option<String>,
    /// Tool calls of this connection not answered yet, and those of an
    /// earlier connection the session resumed from, which the new one
    /// does not know (a `toolResponse` naming one is refused with 1007):
    /// their answers go as text instead.
    open_calls: Vec<String>,
    stale_calls: Vec<String>,
}

/// Tool calls remembered per session (more are answered as they come).
const MAX_OPEN_CALLS: usize = 16;

impl GeminiEngine {
    /// An engine for `cfg` (nothing is sent until the driver opens a connection).
    pub fn new(cfg: &SessionConfig) -> Self {
        Self {
            url: cfg.endpoints.gemini.clone(),
            key: cfg.api_key.clone(),
            setup: setup_body(cfg),
            kickoff: cfg.kickoff.clone(),
            ready: false,
            connection_ready: false,
            handle: None,
            go_away: false,
            turn_since_go_away: false,
            in_turn: false,
            cut: false,
            input_text: String::new(),
            output_text: String::new(),
            revising: None,
            open_calls: Vec::new(),
            stale_calls: Vec::new(),
        }
    }

    /// The newest resumption handle (for diagnostics and tests).
    pub fn resumption_handle(&self) -> Option<&str> {
        self.handle.as_deref()
    }

    fn flush_input(&mut self, events: &mut Vec<EngineEvent>) {
        if !self.input_text.is_empty() {
            let text = std::mem::take(&mut self.input_text);
            events.push(EngineEvent::InputTranscript {
                text,
                is_final: true,
            });
        }
    }

    fn model_content(&mut self, events: &mut Vec<EngineEvent>) {
        self.flush_input(events);
        self.in_turn = true;
        self.cut = false;
        self.revising = None;
    }

    /// The model turn ends (`revisable`: by `generationComplete`, after
    /// which its output transcript may still come).
    fn end_turn(&mut self, events: &mut Vec<EngineEvent>, revisable: bool) {
        self.flush_input(events);
        if !self.in_turn {
            if !revisable {
                self.revising = None;
            }
            return;
        }
        self.in_turn = false;
        let text = std::mem::take(&mut self.output_text);
        if !text.is_empty() {
            events.push(EngineEvent::OutputTranscript {
                text: text.clone(),
                is_final: true,
            });
        }
        self.revising = revisable.then_some(text);
        events.push(EngineEvent::TurnComplete);
    }

    /// A piece of the model's output transcript.
    fn output_piece(&mut self, t: &str, events: &mut Vec<EngineEvent>) {
        if !self.in_turn
            && let Some(text) = &mut self.revising
        {
            // The ended turn's words, late: its text, whole again.
            push_bounded(text, t);
            events.push(EngineEvent::OutputRevised { text: text.clone() });
            return;
        }
        self.model_content(events);
        push_bounded(&mut self.output_text, t);
        events.push(EngineEvent::OutputTranscript {
            text: t.to_owned(),
            is_final: false,
        });
    }

    /// One `inlineData` part: the model's audio.
    fn inline_audio(
        &mut self,
        mime: &str,
        data: &str,
        events: &mut Vec<EngineEvent>,
    ) -> Result<(), EngineError> {
        let format = audio_format(mime)?;
        let pcm = B64
            .decode(data)
            .map_err(|_| EngineError::Protocol("inlineData is not base64".into()))?;
        if !pcm.len().is_multiple_of(2) {
            return Err(EngineError::Protocol(
                "PCM16 audio with an odd byte count".into(),
            ));
        }
        self.model_content(events);
        events.push(EngineEvent::Audio {
            data: Bytes::from(pcm),
            format,
        });
        Ok(())
    }

    /// What the driver does after a message: after `goAway`, reconnect
    /// once a model turn has come to its `turnComplete` since (answered,
    /// not cut by the caller), with none in flight. Not at
    /// once: the caller may be speaking, and what the model has not
    /// answered yet is not in the state a resumed connection gets, so it
    /// would be lost. The notice is long (about 50 s); a connection that
    /// closes first is resumed then ([`Self::on_close`]).
    fn step(&self) -> Step {
        if self.go_away && self.turn_since_go_away && !self.in_turn && self.handle.is_some() {
            Step::Reconnect
        } else {
            Step::Continue
        }
    }

    fn server_content(
        &mut self,
        sc: &Value,
        events: &mut Vec<EngineEvent>,
    ) -> Result<(), EngineError> {
        if let Some(t) = sc
            .pointer("/inputTranscription/text")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            push_bounded(&mut self.input_text, t);
            events.push(EngineEvent::InputTranscript {
                text: t.to_owned(),
                is_final: false,
            });
            // Between `generationComplete` and `turnComplete` (which may
            // wait for the answer's playback), words are the answered
            // utterance's, late: final at once, so that they join it
            // before the answer's turn is reported. (A barge-in comes
            // after `interrupted`, which ends this window.)
            if !self.in_turn && self.revising.is_some() {
                self.flush_input(events);
            }
        }
        if let Some(parts) = sc.pointer("/modelTurn/parts").and_then(Value::as_array) {
            for part in parts {
                let Some(inline) = part.get("inlineData") else {
                    continue;
                };
                let mime = inline.get("mimeType").and_then(Value::as_str).unwrap_or("");
                let data = inline.get("data").and_then(Value::as_str).unwrap_or("");
                self.inline_audio(mime, data, events)?;
            }
        }
        if let Some(t) = sc
            .pointer("/outputTranscription/text")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            self.output_piece(t, events);
        }
        if sc.get("interrupted").and_then(Value::as_bool) == Some(true) {
            // The words the cut turn answered are final first: they stand
            // before it, and the barge-in's words after.
            self.flush_input(events);
            events.push(EngineEvent::Interrupted);
            self.end_turn(events, false);
            self.cut = true;
        }
        if sc.get("generationComplete").and_then(Value::as_bool) == Some(true) {
            self.end_turn(events, true);
        }
        if sc.get("turnComplete").and_then(Value::as_bool) == Some(true) {
            self.end_turn(events, false);
            // A turn answered to its end (not one the caller cut into,
            // who is speaking now) is a point to move connections at:
            // the turn's usage and last words have come with or before
            // its `turnComplete`, not with `generationComplete`.
            self.turn_since_go_away |= self.go_away && !self.cut;
        }
        Ok(())
    }
}

fn push_bounded(buf: &mut String, piece: &str) {
    if buf.len() + piece.len() <= MAX_TRANSCRIPT {
        buf.push_str(piece);
    }
}

/// `audio/pcm;rate=24000` → PCM16 at that rate (24 kHz when unsaid).
fn audio_format(mime: &str) -> Result<AudioFormat, EngineError> {
    let mut parts = mime.split(';').map(str::trim);
    if !matches!(parts.next(), Some("audio/pcm" | "audio/l16" | "audio/L16")) {
        return Err(EngineError::Protocol(format!(
            "unexpected inlineData type {:?}",
            mime.chars().take(64).collect::<String>()
        )));
    }
    let mut rate = 24_000;
    for p in parts {
        if let Some(r) = p.strip_prefix("rate=") {
            rate = r
                .parse::<u32>()
                .ok()
                .filter(|r| (8_000..=48_000).contains(r))
                .ok_or_else(|| EngineError::Protocol("inlineData rate out of range".into()))?;
        }
    }
    Ok(AudioFormat {
        codec: Codec::PcmS16le,
        rate_hz: rate,
    })
}

/// Proto Duration string (`"50s"`, `"9.5s"`) in ms; bounded to a day.
pub(crate) fn parse_duration_ms(s: &str) -> Option<u64> {
    let secs = s.strip_suffix('s')?;
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, ""));
    if whole.is_empty() || whole.len() > 6 || frac.len() > 9 {
        return None;
    }
    let w: u64 = whole.parse().ok()?;
    let mut ms = w.checked_mul(1000)?;
    let f3: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ms += f3.parse::<u64>().ok()?;
    (ms <= 86_400_000).then_some(ms)
}

/// JSON Schema types upper-cased (`object` → `OBJECT`), as Gemini declares them.
fn gemini_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("type", Value::String(t)) => Value::String(t.to_ascii_uppercase()),
                        _ => gemini_schema(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(gemini_schema).collect()),
        other => other.clone(),
    }
}

fn tools_json(tools: &[ToolDecl]) -> Value {
    let decls: Vec<Value> = tools
        .iter()
        .map(|t| {
            json!({"name": t.name, "description": t.description, "parameters": gemini_schema(&t.parameters)})
        })
        .collect();
    json!([{ "functionDeclarations": decls }])
}

/// The `setup` body without `sessionResumption` (added per connection).
fn setup_body(cfg: &SessionConfig) -> Map<String, Value> {
    let mut speech = Map::new();
    if let Some(v) = &cfg.voice {
        speech.insert(
            "voiceConfig".into(),
            json!({"prebuiltVoiceConfig": {"voiceName": v}}),
        );
    }
    if let Some(l) = &cfg.language {
        speech.insert("languageCode".into(), json!(l));
    }
    let mut gen_cfg = Map::new();
    gen_cfg.insert("responseModalities".into(), json!(["AUDIO"]));
    if !speech.is_empty() {
        gen_cfg.insert("speechConfig".into(), Value::Object(speech));
    }
    let mut s = Map::new();
    s.insert("model".into(), json!(cfg.model.model));
    s.insert("generationConfig".into(), Value::Object(gen_cfg));
    if !cfg.instructions.is_empty() {
        s.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": cfg.instructions}]}),
        );
    }
    if !cfg.tools.is_empty() {
        s.insert("tools".into(), tools_json(&cfg.tools));
    }
    s.insert(
        "realtimeInputConfig".into(),
        json!({
            "automaticActivityDetection": {"disabled": false, "silenceDurationMs": cfg.vad_silence_ms},
            "activityHandling": "START_OF_ACTIVITY_INTERRUPTS",
            "turnCoverage": "TURN_INCLUDES_ONLY_ACTIVITY"
        }),
    );
    if cfg.transcribe_input {
        s.insert("inputAudioTranscription".into(), json!({}));
    }
    if cfg.transcribe_output {
        s.insert("outputAudioTranscription".into(), json!({}));
    }
    // Audio-only sessions end after 15 minutes without compression; calls
    // may run an hour.
    s.insert(
        "contextWindowCompression".into(),
        json!({"slidingWindow": {}}),
    );
    s
}

/// A message of the model's audio and nothing else:
/// `{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":…,"data":…}}]}}}`.
/// Any other field, at any level, makes it not this (it is then read as
/// a JSON tree, like every other message).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AudioOnly<'a> {
    #[serde(borrow)]
    server_content: AudioContent<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AudioContent<'a> {
    #[serde(borrow)]
    model_turn: AudioTurn<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AudioTurn<'a> {
    #[serde(borrow)]
    parts: Vec<AudioPart<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AudioPart<'a> {
    #[serde(borrow)]
    inline_data: InlineData<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InlineData<'a> {
    #[serde(borrow, default)]
    mime_type: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Cow<'a, str>,
}

/// `{"serverContent":{"outputTranscription":{"text":…}}}`: the model's
/// transcript, which comes beside its audio, as often. Any other field
/// makes it not this (it is then read as a JSON tree).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TranscriptOnly<'a> {
    #[serde(borrow)]
    server_content: TranscriptContent<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TranscriptContent<'a> {
    #[serde(borrow)]
    output_transcription: TranscriptText<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TranscriptText<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
}

impl Engine for GeminiEngine {
    fn provider(&self) -> Provider {
        Provider::Gemini
    }

    fn input_format(&self) -> AudioFormat {
        AudioFormat::PCM16_16K
    }

    fn target(&self) -> Result<Target, EngineError> {
        let mut u = self.url.clone();
        u.query_pairs_mut().clear().append_pair("key", &self.key);
        Ok((u, Vec::new()))
    }

    fn on_open(&mut self, out: &mut Outbox) -> Result<(), EngineError> {
        self.connection_ready = false;
        self.go_away = false;
        self.turn_since_go_away = false;
        self.in_turn = false;
        self.output_text.clear();
        self.revising = None;
        let open = std::mem::take(&mut self.open_calls);
        self.stale_calls.extend(open);
        let excess = self.stale_calls.len().saturating_sub(MAX_OPEN_CALLS);
        self.stale_calls.drain(..excess);
        let mut setup = self.setup.clone();
        let resumption = match &self.handle {
            Some(h) => json!({"handle": h}),
            None => json!({}),
        };
        setup.insert("sessionResumption".into(), resumption);
        out.json(&json!({ "setup": setup }));
        Ok(())
    }

    fn on_command(&mut self, cmd: Command, out: &mut Outbox) -> Result<(), EngineError> {
        match cmd {
            Command::Audio(pcm) => self.on_audio(&pcm, out)?,
            Command::Text(t) => out.json(&json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": t}]}], "turnComplete": true}})),
            Command::ToolResult { call_id, name, output } => {
                if let Some(i) = self.stale_calls.iter().position(|c| *c == call_id) {
                    // Called on a connection since replaced: this one has
                    // no such call, so the model is told in words.
                    self.stale_calls.swap_remove(i);
                    let text = format!("(The {name} call you made earlier has finished: {output})");
                    out.json(&json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": true}}));
                    return Ok(());
                }
                self.open_calls.retain(|c| *c != call_id);
                let response = if output.is_object() { output } else { json!({ "result": output }) };
                out.json(&json!({"toolResponse": {"functionResponses": [{"id": call_id, "name": name, "response": response}]}}));
            }
            Command::Truncate { .. } | Command::Close => {}
        }
        Ok(())
    }

    fn on_audio(&mut self, audio: &[u8], out: &mut Outbox) -> Result<(), EngineError> {
        out.audio_json(
            r#"{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":""#,
            audio,
            r#""}}}"#,
        );
        Ok(())
    }

    fn on_message(
        &mut self,
        text: &str,
        events: &mut Vec<EngineEvent>,
        out: &mut Outbox,
    ) -> Result<Step, EngineError> {
        // The model's audio, many messages a second, is read without a
        // JSON tree and with its base64 borrowed from the frame, and so
        // is its transcript; any other message, or one of those with
        // anything more in it, is read whole below.
        if let Ok(m) = serde_json::from_str::<AudioOnly<'_>>(text) {
            for part in &m.server_content.model_turn.parts {
                self.inline_audio(&part.inline_data.mime_type, &part.inline_data.data, events)?;
            }
            return Ok(self.step());
        }
        // Its transcript likewise (what `server_content` does with it).
        if let Ok(m) = serde_json::from_str::<TranscriptOnly<'_>>(text) {
            let t = m.server_content.output_transcription.text;
            if !t.is_empty() {
                self.output_piece(&t, events);
            }
            return Ok(self.step());
        }
        let msg: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                events.push(EngineEvent::Error {
                    code: Some("bad_frame".into()),
                    message: "server frame is not a JSON object".into(),
                });
                return Ok(Step::Continue);
            }
        };
        if msg.get("setupComplete").is_some() {
            self.connection_ready = true;
            if self.ready {
                events.push(EngineEvent::Resumed);
            } else {
                self.ready = true;
                events.push(EngineEvent::Ready);
                if let Some(k) = self.kickoff.clone() {
                    self.on_command(Command::Text(k), out)?;
                }
            }
        }
        if let Some(sc) = msg.get("serverContent") {
            self.server_content(sc, events)?;
        }
        if let Some(calls) = msg
            .pointer("/toolCall/functionCalls")
            .and_then(Value::as_array)
        {
            for c in calls {
                let call_id = c.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                if name.is_empty() {
                    return Err(EngineError::Protocol("toolCall without a name".into()));
                }
                // The caller's words before it are final, as before audio.
                self.model_content(events);
                if self.open_calls.len() < MAX_OPEN_CALLS && !call_id.is_empty() {
                    self.open_calls.push(call_id.clone());
                }
                let args = c.get("args").cloned().unwrap_or_else(|| json!({}));
                events.push(EngineEvent::ToolCall {
                    call_id,
                    name,
                    args,
                });
            }
        }
        if let Some(ids) = msg
            .pointer("/toolCallCancellation/ids")
            .and_then(Value::as_array)
        {
            let ids: Vec<String> = ids
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            self.open_calls.retain(|c| !ids.contains(c));
            events.push(EngineEvent::ToolCallCancelled { ids });
        }
        if let Some(upd) = msg.get("sessionResumptionUpdate") {
            let resumable = upd
                .get("resumable")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if let Some(h) = upd.get("newHandle").and_then(Value::as_str)
                && resumable
                && !h.is_empty()
                && h.len() <= MAX_HANDLE
            {
                self.handle = Some(h.to_owned());
            }
        }
        if let Some(u) = msg.get("usageMetadata") {
            let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            events.push(EngineEvent::Usage(Usage {
                prompt_tokens: n("promptTokenCount"),
                response_tokens: n("responseTokenCount"),
                total_tokens: n("totalTokenCount"),
                ..Usage::default()
            }));
        }
        if let Some(g) = msg.get("goAway") {
            let left = g
                .get("timeLeft")
                .and_then(Value::as_str)
                .and_then(parse_duration_ms)
                .unwrap_or(0);
            events.push(EngineEvent::GoAway { time_left_ms: left });
            self.go_away = true;
        }
        Ok(self.step())
    }

    fn on_close(&mut self, code: Option<u16>, reason: &str, events: &mut Vec<EngineEvent>) -> Step {
        if !self.connection_ready && !self.ready {
            return Step::Close {
                code,
                error: Some(EngineError::Rejected {
                    code: code.unwrap_or(1006),
                    kind: None,
                    message: reason.chars().take(512).collect(),
                }),
            };
        }
        // The turn in flight (if any) is over on this connection.
        self.end_turn(events, false);
        let retiring = self.go_away || matches!(code, None | Some(1001 | 1006 | 1008 | 1011));
        if self.ready && retiring && self.handle.is_some() {
            return Step::Reconnect;
        }
        match code {
            Some(1000) => Step::Close { code, error: None },
            // A 1007 mid-session: the vendor refused something we sent.
            Some(1007) => Step::Close {
                code,
                error: Some(EngineError::Rejected {
                    code: 1007,
                    kind: None,
                    message: reason.chars().take(512).collect(),
                }),
            },
            _ => Step::Close {
                code,
                error: Some(EngineError::Transport(format!(
                    "Gemini closed the session ({}) without a way to resume: {}",
                    code.map_or("no close frame".to_owned(), |c| c.to_string()),
                    reason.chars().take(256).collect::<String>()
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Endpoints, ModelChoice};

    fn cfg() -> SessionConfig {
        let mut c = SessionConfig::new(
            ModelChoice::from_model("").unwrap(),
            Endpoints::parse("ws://127.0.0.1:1", "ws://127.0.0.1:1").unwrap(),
            "k&y",
        );
        c.voice = Some("Aoede".into());
        c.language = Some("de-DE".into());
        c.instructions = "Be brief.".into();
        c
    }

    fn feed(e: &mut GeminiEngine, v: Value) -> (Vec<EngineEvent>, Vec<String>, Step) {
        let (mut ev, mut out) = (Vec::new(), Outbox::new());
        let step = e.on_message(&v.to_string(), &mut ev, &mut out).unwrap();
        (ev, out.texts(), step)
    }

    #[test]
    fn setup_has_the_documented_shape() {
        let mut e = GeminiEngine::new(&cfg());
        let (u, h) = e.target().unwrap();
        assert!(u.as_str().ends_with("BidiGenerateContent?key=k%26y"), "{u}");
        assert!(h.is_empty());
        let mut out = Outbox::new();
        e.on_open(&mut out).unwrap();
        let out = out.texts();
        let v: Value = serde_json::from_str(&out[0]).unwrap();
        let s = &v["setup"];
        assert_eq!(s["model"], GEMINI_DEFAULT_MODEL_JSON);
        assert_eq!(
            s["generationConfig"]["responseModalities"],
            json!(["AUDIO"])
        );
        assert_eq!(
            s["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"],
            "Aoede"
        );
        assert_eq!(
            s["generationConfig"]["speechConfig"]["languageCode"],
            "de-DE"
        );
        assert_eq!(s["systemInstruction"]["parts"][0]["text"], "Be brief.");
        let decls = &s["tools"][0]["functionDeclarations"];
        assert_eq!(decls[0]["name"], "end_call");
        assert_eq!(decls[1]["parameters"]["type"], "OBJECT");
        assert_eq!(
            decls[1]["parameters"]["properties"]["user"]["type"],
            "STRING"
        );
        assert_eq!(s["inputAudioTranscription"], json!({}));
        assert_eq!(s["outputAudioTranscription"], json!({}));
        assert!(
            s["generationConfig"]
                .get("inputAudioTranscription")
                .is_none()
        );
        assert_eq!(s["sessionResumption"], json!({}));
    }

    const GEMINI_DEFAULT_MODEL_JSON: &str = crate::config::GEMINI_DEFAULT_MODEL;

    #[test]
    fn a_turn_becomes_events_and_go_away_waits_for_its_end() {
        let mut e = GeminiEngine::new(&cfg());
        e.on_open(&mut Outbox::new()).unwrap();
        let (ev, out, _) = feed(&mut e, json!({"setupComplete": {}}));
        assert_eq!(ev, vec![EngineEvent::Ready]);
        assert!(out[0].contains("clientContent"));
        feed(
            &mut e,
            json!({"sessionResumptionUpdate": {"newHandle": "h1", "resumable": true}}),
        );
        let (ev, _, _) = feed(
            &mut e,
            json!({"serverContent": {"inputTranscription": {"text": "hi "}}}),
        );
        assert_eq!(
            ev,
            vec![EngineEvent::InputTranscript {
                text: "hi ".into(),
                is_final: false
            }]
        );
        let audio = B64.encode([1u8, 0, 2, 0]);
        let (ev, _, _) = feed(
            &mut e,
            json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": audio}}]}}}),
        );
        assert_eq!(
            ev[0],
            EngineEvent::InputTranscript {
                text: "hi ".into(),
                is_final: true
            }
        );
        assert!(
            matches!(&ev[1], EngineEvent::Audio { data, format } if data.len() == 4 && *format == AudioFormat::PCM16_24K)
        );
        // Its transcript's last piece, after the answer began: final again
        // with the model's next content (the switch joins it to "hi ").
        feed(
            &mut e,
            json!({"serverContent": {"inputTranscription": {"text": "there"}}}),
        );
        let (ev, _, _) = feed(
            &mut e,
            json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": audio}}]}}}),
        );
        assert_eq!(
            ev[0],
            EngineEvent::InputTranscript {
                text: "there".into(),
                is_final: true
            }
        );
        let (ev, _, step) = feed(&mut e, json!({"goAway": {"timeLeft": "9.5s"}}));
        assert_eq!(ev, vec![EngineEvent::GoAway { time_left_ms: 9500 }]);
        assert_eq!(step, Step::Continue, "mid-turn: wait");
        feed(
            &mut e,
            json!({"serverContent": {"outputTranscription": {"text": "Hel"}}}),
        );
        feed(
            &mut e,
            json!({"serverContent": {"outputTranscription": {"text": "lo"}}}),
        );
        let (ev, _, step) = feed(
            &mut e,
            json!({"serverContent": {"turnComplete": true}, "usageMetadata": {"promptTokenCount": 3, "responseTokenCount": 4, "totalTokenCount": 7}}),
        );
        assert_eq!(
            ev[..2],
            [
                EngineEvent::OutputTranscript {
                    text: "Hello".into(),
                    is_final: true
                },
                EngineEvent::TurnComplete
            ]
        );
        assert!(matches!(ev[2], EngineEvent::Usage(u) if u.total_tokens == 7));
        assert_eq!(step, Step::Reconnect);
        let mut out = Outbox::new();
        e.on_open(&mut out).unwrap();
        let out = out.texts();
        assert!(
            out[0].contains(r#""sessionResumption":{"handle":"h1"}"#),
            "{}",
            out[0]
        );
        let (ev, out, _) = feed(&mut e, json!({"setupComplete": {}}));
        assert_eq!(ev, vec![EngineEvent::Resumed]);
        assert!(out.is_empty(), "no second greeting");
    }

    /// A turn `generationComplete` ends may have more of its output
    /// transcript before `turnComplete`: those pieces revise its final
    /// text (sent whole again) and open no turn of their own, so the turn
    /// is counted once; the next turn's audio ends the revising.
    #[test]
    fn output_transcript_after_generation_complete_revises_the_ended_turn() {
        let mut e = GeminiEngine::new(&cfg());
        e.on_open(&mut Outbox::new()).unwrap();
        feed(&mut e, json!({"setupComplete": {}}));
        let audio = B64.encode([1u8, 0, 2, 0]);
        let speak = json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": audio}}]}}});
        let words = |t: &str| json!({"serverContent": {"outputTranscription": {"text": t}}});
        feed(&mut e, speak.clone());
        feed(&mut e, words("See you "));
        let (ev, _, _) = feed(
            &mut e,
            json!({"serverContent": {"generationComplete": true}}),
        );
        assert_eq!(
            ev,
            [
                EngineEvent::OutputTranscript {
                    text: "See you ".into(),
                    is_final: true
                },
                EngineEvent::TurnComplete
            ]
        );
        let (ev, _, _) = feed(&mut e, words("tomorrow."));
        assert_eq!(
            ev,
            [EngineEvent::OutputRevised {
                text: "See you tomorrow.".into(),
            }]
        );
        // The caller's late words meanwhile are final at once.
        let (ev, _, _) = feed(
            &mut e,
            json!({"serverContent": {"inputTranscription": {"text": "ok"}}}),
        );
        assert_eq!(
            ev.last(),
            Some(&EngineEvent::InputTranscript {
                text: "ok".into(),
                is_final: true
            })
        );
        let (ev, _, _) = feed(&mut e, json!({"serverContent": {"turnComplete": true}}));
        assert!(ev.is_empty(), "no second turn: {ev:?}");
        // A turn cut by the caller: the words it answered are final before
        // the cut, and the barge-in's come after.
        feed(&mut e, speak.clone());
        feed(
            &mut e,
            json!({"serverContent": {"inputTranscription": {"text": "and then"}}}),
        );
        let (ev, _, _) = feed(&mut e, json!({"serverContent": {"interrupted": true}}));
        assert_eq!(
            ev[..2],
            [
                EngineEvent::InputTranscript {
                    text: "and then".into(),
                    is_final: true
                },
                EngineEvent::Interrupted
            ]
        );
        // After turnComplete, words open the next turn as before.
        let (ev, _, _) = feed(&mut e, words("Bye"));
        assert_eq!(
            ev,
            [EngineEvent::OutputTranscript {
                text: "Bye".into(),
                is_final: false
            }]
        );
        let (ev, _, _) = feed(
            &mut e,
            json!({"serverContent": {"generationComplete": true}}),
        );
        assert_eq!(ev.last(), Some(&EngineEvent::TurnComplete));
        // The next turn's audio ends the revising: its words are its own.
        feed(&mut e, speak);
        let (ev, _, _) = feed(&mut e, words("Hi"));
        assert_eq!(
            ev,
            [EngineEvent::OutputTranscript {
                text: "Hi".into(),
                is_final: false
            }]
        );
    }

    /// `goAway` while no model turn is in flight does not reconnect at
    /// once (the caller may be mid-sentence, which a resumed connection
    /// would not have): the next model turn's end does, or the close.
    #[test]
    fn go_away_between_turns_waits_for_the_next_turn_to_end() {
        let mut e = GeminiEngine::new(&cfg());
        e.on_open(&mut Outbox::new()).unwrap();
        feed(&mut e, json!({"setupComplete": {}}));
        feed(
            &mut e,
            json!({"sessionResumptionUpdate": {"newHandle": "h1", "resumable": true}}),
        );
        let (_, _, step) = feed(&mut e, json!({"goAway": {"timeLeft": "50s"}}));
        assert_eq!(step, Step::Continue, "the caller may be speaking");
        let (_, _, step) = feed(
            &mut e,
            json!({"serverContent": {"inputTranscription": {"text": "I wanted to ask"}}}),
        );
        assert_eq!(step, Step::Continue);
        let audio = B64.encode([1u8, 0, 2, 0]);
        let (_, _, step) = feed(
            &mut e,
            json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": audio}}]}}}),
        );
        assert_eq!(step, Step::Continue, "mid-turn");
        let (_, _, step) = feed(&mut e, json!({"serverContent": {"turnComplete": true}}));
        assert_eq!(step, Step::Reconnect, "the caller's words are in the state");
        // A connection that goes first is resumed on its close.
        let mut e = GeminiEngine::new(&cfg());
        e.on_open(&mut Outbox::new()).unwrap();
        feed(&mut e, json!({"setupComplete": {}}));
        feed(
            &mut e,
            json!({"sessionResumptionUpdate": {"newHandle": "h2", "resumable": true}}),
        );
        let (_, _, step) = feed(&mut e, json!({"goAway": {"timeLeft": "1s"}}));
        assert_eq!(step, Step::Continue);
        let mut evs = Vec::new();
        assert_eq!(e.on_close(Some(1008), "", &mut evs), Step::Reconnect);
    }

    /// An engine with a resumption handle that has just been told
    /// `goAway`.
    fn resumable_after_go_away() -> GeminiEngine {
        let mut e = GeminiEngine::new(&cfg());
        e.on_open(&mut Outbox::new()).unwrap();
        feed(&mut e, json!({"setupComplete": {}}));
        feed(
            &mut e,
            json!({"sessionResumptionUpdate": {"newHandle": "h1", "resumable": true}}),
        );
        feed(&mut e, json!({"goAway": {"timeLeft": "50s"}}));
        e
    }

    /// After `goAway` the connection moves at a turn's `turnComplete`,
    /// which carries its usage and follows its last words, not at its
    /// `generationComplete`; and not at the end of a turn the caller cut
    /// into (they are speaking), but at the end of the answer to them.
    #[test]
    fn go_away_moves_at_the_end_of_a_whole_answered_turn() {
        let audio = B64.encode([1u8, 0, 2, 0]);
        let model_audio = json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": audio}}]}}});
        let mut e = resumable_after_go_away();
        assert_eq!(feed(&mut e, model_audio.clone()).2, Step::Continue);
        let (_, _, step) = feed(
            &mut e,
            json!({"serverContent": {"generationComplete": true}}),
        );
        assert_eq!(step, Step::Continue, "its usage and last words are to come");
        let (ev, _, step) = feed(
            &mut e,
            json!({"serverContent": {"outputTranscription": {"text": " bye"}}}),
        );
        assert_eq!(step, Step::Continue);
        assert!(
            matches!(&ev[..], [EngineEvent::OutputRevised { .. }]),
            "{ev:?}"
        );
        let (ev, _, step) = feed(
            &mut e,
            json!({"serverContent": {"turnComplete": true}, "usageMetadata": {"totalTokenCount": 907}}),
        );
        assert!(
            ev.iter()
                .any(|e| matches!(e, EngineEvent::Usage(u) if u.total_tokens == 907)),
            "{ev:?}"
        );
        assert_eq!(step, Step::Reconnect);

        // The caller cuts into the first turn after the notice.
        let mut e = resumable_after_go_away();
        feed(&mut e, model_audio.clone());
        let (_, _, step) = feed(&mut e, json!({"serverContent": {"interrupted": true}}));
        assert_eq!(step, Step::Continue, "the caller is speaking");
        let (_, _, step) = feed(&mut e, json!({"serverContent": {"turnComplete": true}}));
        assert_eq!(step, Step::Continue, "the caller is still speaking");
        // The answer to what they said, to its end.
        assert_eq!(feed(&mut e, model_audio).2, Step::Continue);
        let (_, _, step) = feed(&mut e, json!({"serverContent": {"turnComplete": true}}));
        assert_eq!(step, Step::Reconnect);
    }

    /// A tool call still open when the session moves to a new connection
    /// (a transfer ringing across a `goAway`) is unknown to the new one,
    /// which refuses a `toolResponse` naming it: its answer goes as text;
    /// a call made on the new connection is answered as a call.
    #[test]
    fn a_tool_call_from_before_a_resumption_is_answered_in_words() {
        let mut e = GeminiEngine::new(&cfg());
        e.on_open(&mut Outbox::new()).unwrap();
        feed(&mut e, json!({"setupComplete": {}}));
        feed(
            &mut e,
            json!({"toolCall": {"functionCalls": [{"id": "fc-1", "name": "transfer_to_user", "args": {"user": "bob"}}]}}),
        );
        // Resumed on a new connection while bob's phone rings.
        e.on_open(&mut Outbox::new()).unwrap();
        feed(&mut e, json!({"setupComplete": {}}));
        feed(
            &mut e,
            json!({"toolCall": {"functionCalls": [{"id": "fc-2", "name": "end_call", "args": {}}]}}),
        );
        let answer = |e: &mut GeminiEngine, id: &str, name: &str| {
            let mut out = Outbox::new();
            e.on_command(
                Command::ToolResult {
                    call_id: id.into(),
                    name: name.into(),
                    output: json!({"ok": false, "error": "the target is busy"}),
                },
                &mut out,
            )
            .unwrap();
            out.texts()
        };
        let out = answer(&mut e, "fc-1", "transfer_to_user");
        assert_eq!(out.len(), 1);
        let v: Value = serde_json::from_str(&out[0]).unwrap();
        assert!(v.get("toolResponse").is_none(), "{v}");
        let text = v["clientContent"]["turns"][0]["parts"][0]["text"]
            .as_str()
            .unwrap();
        assert!(
            text.contains("transfer_to_user") && text.contains("the target is busy"),
            "{text}"
        );
        let out = answer(&mut e, "fc-2", "end_call");
        let v: Value = serde_json::from_str(&out[0]).unwrap();
        assert_eq!(v["toolResponse"]["functionResponses"][0]["id"], "fc-2");
    }

    #[test]
    fn audio_reads_the_same_alone_or_with_more_in_the_message() {
        let pcm: Vec<u8> = (0..1920u32).map(|i| (i * 7 % 256) as u8).collect();
        let data = B64.encode(&pcm);
        let audio_of = |ev: &[EngineEvent]| -> Vec<(Vec<u8>, AudioFormat)> {
            ev.iter()
                .filter_map(|e| match e {
                    EngineEvent::Audio { data, format } => Some((data.to_vec(), *format)),
                    _ => None,
                })
                .collect()
        };
        let part = json!({"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}});
        let want = vec![(pcm.clone(), AudioFormat::PCM16_24K)];
        for (msg, n) in [
            // Alone (read without a tree), two parts, then with a
            // transcript, a text part or usage beside it (read as a tree).
            (
                json!({"serverContent": {"modelTurn": {"parts": [part]}}}),
                1,
            ),
            (
                json!({"serverContent": {"modelTurn": {"parts": [part, part]}}}),
                2,
            ),
            (
                json!({"serverContent": {"modelTurn": {"parts": [part]}, "outputTranscription": {"text": "Hi"}}}),
                1,
            ),
            (
                json!({"serverContent": {"modelTurn": {"parts": [{"text": "x"}, part]}}}),
                1,
            ),
            (
                json!({"serverContent": {"modelTurn": {"parts": [part]}}, "usageMetadata": {"totalTokenCount": 1}}),
                1,
            ),
        ] {
            let mut e = GeminiEngine::new(&cfg());
            let (ev, _, step) = feed(&mut e, msg.clone());
            let all: Vec<_> = std::iter::repeat_n(want[0].clone(), n).collect();
            assert_eq!(audio_of(&ev), all, "{msg}");
            assert_eq!(step, Step::Continue);
        }
        // JSON escapes in the base64 (`\/` for `/`) are undone.
        let mut e = GeminiEngine::new(&cfg());
        let text = format!(
            r#"{{"serverContent":{{"modelTurn":{{"parts":[{{"inlineData":{{"mimeType":"audio/pcm;rate=24000","data":"{}"}}}}]}}}}}}"#,
            data.replace('/', "\\/")
        );
        assert!(text.contains("\\/"));
        let (mut ev, mut out) = (Vec::new(), Outbox::new());
        e.on_message(&text, &mut ev, &mut out).unwrap();
        assert_eq!(audio_of(&ev), want);
        // Bad audio is an error either way.
        for msg in [
            json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm", "data": "***"}}]}}}),
            json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "video/mp4", "data": data}}]}}}),
            json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"data": data}}]}}}),
            json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm", "data": "AA=="}}]}}, "x": 1}),
        ] {
            let mut e = GeminiEngine::new(&cfg());
            assert!(
                e.on_message(&msg.to_string(), &mut Vec::new(), &mut Outbox::new())
                    .is_err(),
                "{msg}"
            );
        }
    }

    #[test]
    fn transcripts_read_the_same_alone_or_with_more_in_the_message() {
        // Each text alone (read without a tree) and with a field the
        // engine ignores beside it (read as a tree): the same events,
        // through the turn's end.
        for text in [
            json!("Hi, "),
            json!(""),
            json!("a \"quoted\" caf\u{e9} \\ / line\nbreak"),
            json!(17),
            json!(null),
        ] {
            let mut events = Vec::new();
            for extra in [None, Some(json!({"ignored": 1}))] {
                let mut e = GeminiEngine::new(&cfg());
                let (_, _, _) = feed(&mut e, json!({"setupComplete": {}}));
                let mut msg = json!({"serverContent": {"outputTranscription": {"text": text}}});
                if let Some(x) = &extra {
                    msg["other"] = x.clone();
                }
                let (mut ev, out, step) = feed(&mut e, msg.clone());
                assert!(out.is_empty(), "{msg}");
                assert_eq!(step, Step::Continue, "{msg}");
                let (end, _, _) = feed(&mut e, json!({"serverContent": {"turnComplete": true}}));
                ev.extend(end);
                events.push(ev);
            }
            assert_eq!(events[0], events[1], "{text}");
            let said = events[0].iter().any(|e| {
                matches!(
                    e,
                    EngineEvent::OutputTranscript {
                        is_final: false,
                        ..
                    }
                )
            });
            assert_eq!(said, text.as_str().is_some_and(|t| !t.is_empty()), "{text}");
        }
        // A duplicated field, or one more inside, goes the tree's way.
        let mut e = GeminiEngine::new(&cfg());
        let mut ev = Vec::new();
        e.on_message(
            r#"{"serverContent":{"outputTranscription":{"text":"a","text":"b"}}}"#,
            &mut ev,
            &mut Outbox::new(),
        )
        .unwrap();
        assert_eq!(
            ev,
            vec![EngineEvent::OutputTranscript {
                text: "b".into(),
                is_final: false
            }]
        );
        let (ev, _, _) = feed(
            &mut e,
            json!({"serverContent": {"outputTranscription": {"text": "c", "finished": true}}}),
        );
        assert_eq!(
            ev,
            vec![EngineEvent::OutputTranscript {
                text: "c".into(),
                is_final: false
            }]
        );
    }

    #[test]
    fn without_a_handle_a_1008_ends_the_session() {
        let mut e = GeminiEngine::new(&cfg());
        e.on_open(&mut Outbox::new()).unwrap();
        feed(&mut e, json!({"setupComplete": {}}));
        let (_, _, step) = feed(&mut e, json!({"goAway": {"timeLeft": "1s"}}));
        assert_eq!(step, Step::Continue, "nothing to resume with");
        let step = e.on_close(Some(1008), "limit", &mut Vec::new());
        assert!(matches!(
            step,
            Step::Close {
                code: Some(1008),
                error: Some(EngineError::Transport(_))
            }
        ));
    }

    #[test]
    fn close_during_setup_is_a_rejection() {
        let mut e = GeminiEngine::new(&cfg());
        e.on_open(&mut Outbox::new()).unwrap();
        let step = e.on_close(
            Some(1007),
            "API key not valid. Please pass a valid API key.",
            &mut Vec::new(),
        );
        assert!(matches!(
            step,
            Step::Close {
                error: Some(EngineError::Rejected { code: 1007, .. }),
                ..
            }
        ));
    }

    #[test]
    fn durations_and_mime_types() {
        assert_eq!(parse_duration_ms("50s"), Some(50_000));
        assert_eq!(parse_duration_ms("0.25s"), Some(250));
        assert_eq!(parse_duration_ms("9.123456789s"), Some(9_123));
        for bad in ["", "s", "5", "1.xs", "99999999s", "-1s"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
        assert_eq!(audio_format("audio/pcm").unwrap(), AudioFormat::PCM16_24K);
        assert_eq!(
            audio_format("audio/pcm;rate=16000").unwrap(),
            AudioFormat::PCM16_16K
        );
        assert!(audio_format("audio/pcm;rate=1").is_err());
        assert!(audio_format("video/mp4").is_err());
    }
}
