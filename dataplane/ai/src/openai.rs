//! OpenAI Realtime (GA shapes) as a sans-IO [`Engine`].
//!
//! `wss://…/v1/realtime?model=…` with `Authorization: Bearer`, no
//! `OpenAI-Beta` header. One `session.update` (`type: realtime`, G.711 both
//! ways, server VAD that interrupts responses, input transcription); ready
//! at `session.updated`. Barge-in is `input_audio_buffer.speech_started`:
//! reported as [`EngineEvent::Interrupted`] (the server says it at every
//! caller utterance); when that cut a reply short, the call answers with
//! `Session::truncate(played_ms)`, sent as `conversation.item.truncate` for
//! the last audio item. A `response.create` waits while a response is
//! under way. Usage is summed over `response.done`. There is no
//! resumption: a dropped connection ends the session.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use crate::config::{AudioFormat, Codec, Provider, SessionConfig, openai_format};
use crate::error::EngineError;
use crate::event::{EngineEvent, Usage};
use crate::gemini::MAX_TRANSCRIPT;
use crate::session::{Command, Engine, Step, Target};
use crate::transport::Outbox;

/// OpenAI's input transcription model.
pub const TRANSCRIBE_MODEL: &str = "gpt-4o-mini-transcribe";
/// The `event_id` of our `session.update`, which OpenAI's error for it
/// names.
const SETUP_EVENT: &str = "codeb_setup";

/// OpenAI Realtime session state.
pub struct OpenAiEngine {
    url: Url,
    key: String,
    session: Value,
    kickoff: Option<String>,
    format: AudioFormat,
    ready: bool,
    last_audio_item: Option<String>,
    response_had_output: bool,
    last_error: Option<(Option<String>, String)>,
    /// Function calls of the response under way (`call_id`, `name`), from
    /// `response.output_item.added`: their arguments' `done` is read with
    /// the name from here when it comes without one.
    calls: Vec<(String, String)>,
    /// A response is under way (from `response.created` to its
    /// `response.done`): the server refuses another `response.create`
    /// until it is done.
    responding: bool,
    /// A `response.create` waits for the response under way to be done
    /// (a tool's answer, or text, that came meanwhile).
    create_due: bool,
}

/// Function calls kept per response (a response makes one or two).
const MAX_CALLS: usize = 16;

fn format_json(f: AudioFormat) -> Value {
    match f.codec {
        Codec::Pcmu => json!({"type": "audio/pcmu"}),
        Codec::Pcma => json!({"type": "audio/pcma"}),
        Codec::PcmS16le => json!({"type": "audio/pcm", "rate": 24_000}),
    }
}

impl OpenAiEngine {
    /// An engine for `cfg`.
    pub fn new(cfg: &SessionConfig) -> Self {
        let format = openai_format(cfg.telephony_codec);
        let mut input = json!({
            "format": format_json(format),
            "turn_detection": {"type": "server_vad", "silence_duration_ms": cfg.vad_silence_ms,
                               "create_response": true, "interrupt_response": true}
        });
        if cfg.transcribe_input {
            let mut t = json!({"model": TRANSCRIBE_MODEL});
            if let Some(lang) = cfg
                .language
                .as_deref()
                .and_then(|l| l.split('-').next())
                .filter(|l| !l.is_empty())
            {
                t["language"] = json!(lang.to_ascii_lowercase());
            }
            input["transcription"] = t;
        }
        let mut output = json!({"format": format_json(format)});
        if let Some(v) = &cfg.voice {
            output["voice"] = json!(v);
        }
        let tools: Vec<Value> = cfg
            .tools
            .iter()
            .map(|t| json!({"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}))
            .collect();
        let mut session = json!({
            "type": "realtime",
            "model": cfg.model.model,
            "output_modalities": ["audio"],
            "audio": {"input": input, "output": output},
        });
        if !cfg.instructions.is_empty() {
            session["instructions"] = json!(cfg.instructions);
        }
        if !tools.is_empty() {
            session["tools"] = json!(tools);
            session["tool_choice"] = json!("auto");
        }
        Self {
            url: cfg.endpoints.openai.clone(),
            key: cfg.api_key.clone(),
            session,
            kickoff: cfg.kickoff.clone(),
            format,
            ready: false,
            last_audio_item: None,
            response_had_output: false,
            last_error: None,
            calls: Vec::new(),
            responding: false,
            create_due: false,
        }
    }

    fn user_text(&mut self, text: &str, out: &mut Outbox) {
        out.json(&json!({"type": "conversation.item.create",
                   "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}));
        self.create_response(out);
    }

    /// Asks for a response now, or once the one under way is done (the
    /// server refuses a second with `conversation_already_has_active_response`:
    /// a tool call's arguments come before its response's `response.done`,
    /// and the answer to it may come back before that).
    fn create_response(&mut self, out: &mut Outbox) {
        if self.responding {
            self.create_due = true;
        } else {
            out.json(&json!({"type": "response.create"}));
        }
    }

    /// A chunk of the model's audio (base64 `delta`) of item `item`.
    fn audio_delta(
        &mut self,
        delta: &str,
        item: &str,
        events: &mut Vec<EngineEvent>,
    ) -> Result<(), EngineError> {
        let data = B64
            .decode(delta)
            .map_err(|_| EngineError::Protocol("output audio is not base64".into()))?;
        if !item.is_empty() && item.len() <= 256 {
            self.last_audio_item = Some(item.to_owned());
        }
        self.response_had_output = true;
        events.push(EngineEvent::Audio {
            data: Bytes::from(data),
            format: self.format,
        });
        Ok(())
    }

    fn rejection(&self, code: Option<u16>, reason: &str) -> EngineError {
        let (kind, message) = match &self.last_error {
            Some((k, m)) => (k.clone(), m.clone()),
            None => (None, reason.chars().take(512).collect()),
        };
        let kind =
            kind.or_else(|| (!reason.is_empty()).then(|| reason.chars().take(128).collect()));
        EngineError::Rejected {
            code: code.unwrap_or(1006),
            kind,
            message,
        }
    }
}

/// The fields of an event the audio deltas need (the others are
/// skipped unread). Strings that are missing read as empty, as `s` reads
/// them; one of another type makes this fail (the event is then read as
/// a JSON tree).
#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    item_id: Cow<'a, str>,
    #[serde(borrow, default)]
    delta: Cow<'a, str>,
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

impl Engine for OpenAiEngine {
    fn provider(&self) -> Provider {
        Provider::OpenAi
    }

    fn input_format(&self) -> AudioFormat {
        self.format
    }

    fn target(&self) -> Result<Target, EngineError> {
        let mut u = self.url.clone();
        let model = self
            .session
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("");
        u.query_pairs_mut().clear().append_pair("model", model);
        Ok((u, vec![("authorization", format!("Bearer {}", self.key))]))
    }

    fn on_open(&mut self, out: &mut Outbox) -> Result<(), EngineError> {
        self.calls.clear();
        out.json(
            &json!({"type": "session.update", "event_id": SETUP_EVENT, "session": self.session}),
        );
        Ok(())
    }

    fn on_command(&mut self, cmd: Command, out: &mut Outbox) -> Result<(), EngineError> {
        match cmd {
            Command::Audio(a) => self.on_audio(&a, out)?,
            Command::Text(t) => self.user_text(&t, out),
            Command::ToolResult {
                call_id, output, ..
            } => {
                out.json(&json!({"type": "conversation.item.create",
                           "item": {"type": "function_call_output", "call_id": call_id, "output": output.to_string()}}));
                self.create_response(out);
            }
            Command::Truncate { played_ms } => {
                if let Some(item) = self.last_audio_item.take() {
                    out.json(&json!({"type": "conversation.item.truncate", "item_id": item, "content_index": 0, "audio_end_ms": played_ms}));
                }
            }
            Command::Close => {}
        }
        Ok(())
    }

    fn on_audio(&mut self, audio: &[u8], out: &mut Outbox) -> Result<(), EngineError> {
        out.audio_json(
            r#"{"type":"input_audio_buffer.append","audio":""#,
            audio,
            r#""}"#,
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
        // JSON tree and with its base64 borrowed from the frame; every
        // other message is read whole below.
        if let Ok(d) = serde_json::from_str::<Delta<'_>>(text)
            && matches!(
                &*d.kind,
                "response.output_audio.delta" | "response.audio.delta"
            )
        {
            self.audio_delta(&d.delta, &d.item_id, events)?;
            return Ok(Step::Continue);
        }
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            events.push(EngineEvent::Error {
                code: Some("bad_frame".into()),
                message: "server frame is not JSON".into(),
            });
            return Ok(Step::Continue);
        };
        match s(&msg, "type") {
            "session.updated" if !self.ready => {
                self.ready = true;
                events.push(EngineEvent::Ready);
                if let Some(k) = self.kickoff.clone() {
                    self.user_text(&k, out);
                }
            }
            "input_audio_buffer.speech_started" => events.push(EngineEvent::Interrupted),
            "conversation.item.input_audio_transcription.delta" => {
                let d = s(&msg, "delta");
                if !d.is_empty() {
                    events.push(EngineEvent::InputTranscript {
                        text: d.to_owned(),
                        is_final: false,
                    });
                }
            }
            "conversation.item.input_audio_transcription.completed" => {
                let t: String = s(&msg, "transcript").chars().take(MAX_TRANSCRIPT).collect();
                events.push(EngineEvent::InputTranscript {
                    text: t,
                    is_final: true,
                });
            }
            "response.created" => {
                self.response_had_output = false;
                self.responding = true;
            }
            // `response.audio.*` are the beta names, accepted read-only.
            "response.output_audio.delta" | "response.audio.delta" => {
                self.audio_delta(s(&msg, "delta"), s(&msg, "item_id"), events)?;
            }
            "response.output_audio_transcript.delta" | "response.audio_transcript.delta" => {
                let d = s(&msg, "delta");
                if !d.is_empty() {
                    self.response_had_output = true;
                    events.push(EngineEvent::OutputTranscript {
                        text: d.to_owned(),
                        is_final: false,
                    });
                }
            }
            "response.output_audio_transcript.done" | "response.audio_transcript.done" => {
                let t: String = s(&msg, "transcript").chars().take(MAX_TRANSCRIPT).collect();
                events.push(EngineEvent::OutputTranscript {
                    text: t,
                    is_final: true,
                });
            }
            "response.output_item.added" => {
                let item = msg.get("item").unwrap_or(&Value::Null);
                if s(item, "type") == "function_call" && self.calls.len() < MAX_CALLS {
                    self.calls
                        .push((s(item, "call_id").to_owned(), s(item, "name").to_owned()));
                }
            }
            "response.function_call_arguments.done" => {
                let call_id = s(&msg, "call_id");
                let name = match s(&msg, "name") {
                    "" => self
                        .calls
                        .iter()
                        .find(|(id, _)| id == call_id)
                        .map_or("", |(_, n)| n.as_str()),
                    n => n,
                };
                if name.is_empty() {
                    return Err(EngineError::Protocol("function call without a name".into()));
                }
                let raw = s(&msg, "arguments");
                let args = match serde_json::from_str::<Value>(raw) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({ "arguments": raw }),
                };
                events.push(EngineEvent::ToolCall {
                    call_id: call_id.to_owned(),
                    name: name.to_owned(),
                    args,
                });
            }
            "response.done" => {
                self.calls.clear();
                self.responding = false;
                if std::mem::take(&mut self.create_due) {
                    self.create_response(out);
                }
                // A response that failed, or stopped short (a token limit,
                // a content filter), is said, not passed over in silence.
                let status = msg.pointer("/response/status").and_then(Value::as_str);
                if let Some(st @ ("failed" | "incomplete")) = status {
                    let details = msg.pointer("/response/status_details");
                    let reason = details
                        .and_then(|d| d.pointer("/error/code").or_else(|| d.get("reason")))
                        .and_then(Value::as_str);
                    let message: String = details
                        .and_then(|d| d.pointer("/error/message"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .chars()
                        .take(512)
                        .collect();
                    events.push(EngineEvent::Error {
                        code: Some(format!("response_{st}")),
                        message: match reason {
                            Some(r) if message.is_empty() => r.chars().take(128).collect(),
                            Some(r) => {
                                format!("{}: {message}", r.chars().take(128).collect::<String>())
                            }
                            None => message,
                        },
                    });
                }
                if let Some(u) = msg.pointer("/response/usage") {
                    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
                    events.push(EngineEvent::Usage(Usage {
                        prompt_tokens: n("input_tokens"),
                        response_tokens: n("output_tokens"),
                        total_tokens: n("total_tokens"),
                        ..Usage::default()
                    }));
                }
                if std::mem::take(&mut self.response_had_output) {
                    events.push(EngineEvent::TurnComplete);
                }
            }
            "error" => {
                let e = msg.get("error").cloned().unwrap_or(Value::Null);
                let code = e.get("code").and_then(Value::as_str).map(str::to_owned);
                let message: String = s(&e, "message").chars().take(512).collect();
                self.last_error = Some((code.clone(), message.clone()));
                if code.as_deref() == Some("conversation_already_has_active_response") {
                    // Ours crossed one the server began itself (its voice
                    // detection ends a caller's turn): asked again once
                    // that one is done.
                    self.responding = true;
                    self.create_due = true;
                }
                if !self.ready && e.get("event_id").and_then(Value::as_str) == Some(SETUP_EVENT) {
                    // Our session.update refused (a voice or format the
                    // vendor does not have): OpenAI keeps the connection
                    // open, so the session ends here with the vendor's
                    // words instead of waiting out the setup timeout.
                    return Ok(Step::Close {
                        code: None,
                        error: Some(self.rejection(Some(400), "session.update refused")),
                    });
                }
                events.push(EngineEvent::Error { code, message });
            }
            _ => {}
        }
        Ok(Step::Continue)
    }

    fn on_close(
        &mut self,
        code: Option<u16>,
        reason: &str,
        _events: &mut Vec<EngineEvent>,
    ) -> Step {
        if !self.ready || code.is_some_and(|c| c >= 3000) {
            return Step::Close {
                code,
                error: Some(self.rejection(code, reason)),
            };
        }
        match code {
            Some(1000) => Step::Close { code, error: None },
            _ => Step::Close {
                code,
                error: Some(EngineError::Transport(format!(
                    "connection closed ({}): {}",
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

    fn engine() -> OpenAiEngine {
        let mut c = SessionConfig::new(
            ModelChoice::from_model("openai/gpt-realtime").unwrap(),
            Endpoints::parse("ws://127.0.0.1:1", "ws://127.0.0.1:1").unwrap(),
            "sk-test",
        );
        c.voice = Some("marin".into());
        c.language = Some("de-DE".into());
        c.instructions = "Be brief.".into();
        c.telephony_codec = Codec::Pcma;
        OpenAiEngine::new(&c)
    }

    #[test]
    fn session_update_has_the_ga_shape() {
        let mut e = engine();
        let (u, h) = e.target().unwrap();
        assert_eq!(
            u.as_str(),
            "ws://127.0.0.1:1/v1/realtime?model=gpt-realtime"
        );
        assert_eq!(h, vec![("authorization", "Bearer sk-test".to_owned())]);
        let mut out = Outbox::new();
        e.on_open(&mut out).unwrap();
        let out = out.texts();
        let v: Value = serde_json::from_str(&out[0]).unwrap();
        assert_eq!(v["type"], "session.update");
        let s = &v["session"];
        assert_eq!(s["type"], "realtime");
        assert_eq!(s["audio"]["input"]["format"]["type"], "audio/pcma");
        assert_eq!(s["audio"]["output"]["format"]["type"], "audio/pcma");
        assert_eq!(s["audio"]["output"]["voice"], "marin");
        assert_eq!(s["audio"]["input"]["transcription"]["language"], "de");
        assert_eq!(
            s["audio"]["input"]["turn_detection"]["interrupt_response"],
            true
        );
        assert_eq!(s["tools"][0]["type"], "function");
        assert_eq!(s["tools"][1]["parameters"]["type"], "object");
        assert!(s.get("input_audio_format").is_none() && s.get("voice").is_none());
        assert_eq!(e.input_format(), AudioFormat::PCMA);
    }

    #[test]
    fn events_map_and_function_calls_parse() {
        let mut e = engine();
        let mut ev = Vec::new();
        let mut feed = |e: &mut OpenAiEngine, v: Value| {
            ev.clear();
            let mut out = Outbox::new();
            e.on_message(&v.to_string(), &mut ev, &mut out).unwrap();
            (ev.clone(), out.texts())
        };
        let (ev, out) = feed(&mut e, json!({"type": "session.updated", "session": {}}));
        assert_eq!(ev, vec![EngineEvent::Ready]);
        assert!(out[0].contains("input_text") && out[1].contains("response.create"));
        feed(&mut e, json!({"type": "response.created"}));
        let (ev, _) = feed(
            &mut e,
            json!({"type": "response.output_audio.delta", "item_id": "item_1", "delta": B64.encode([0xd5u8; 160])}),
        );
        assert!(
            matches!(&ev[0], EngineEvent::Audio { data, format } if data.len() == 160 && *format == AudioFormat::PCMA)
        );
        let (ev, _) = feed(
            &mut e,
            json!({"type": "response.function_call_arguments.done", "call_id": "call_9", "name": "end_call", "arguments": "{\"reason\":\"done\"}"}),
        );
        assert_eq!(
            ev[0],
            EngineEvent::ToolCall {
                call_id: "call_9".into(),
                name: "end_call".into(),
                args: json!({"reason": "done"})
            }
        );
        let (ev, _) = feed(
            &mut e,
            json!({"type": "response.done", "response": {"usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}}}),
        );
        assert!(matches!(ev[0], EngineEvent::Usage(u) if u.total_tokens == 15));
        assert_eq!(ev[1], EngineEvent::TurnComplete);
        let (ev, _) = feed(
            &mut e,
            json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 5, "item_id": "item_2"}),
        );
        assert_eq!(ev, vec![EngineEvent::Interrupted]);
        let mut out = Outbox::new();
        e.on_command(Command::Truncate { played_ms: 120 }, &mut out)
            .unwrap();
        let out = out.texts();
        assert!(
            out[0].contains(r#""item_id":"item_1""#) && out[0].contains(r#""audio_end_ms":120"#)
        );
    }

    /// A tool's answer that comes back while the response that called it
    /// is still under way (its arguments come before its `response.done`)
    /// asks for the next response once that one is done, not at once
    /// (the server would refuse it); one refused all the same (a response
    /// the server began itself) is asked again after that one.
    #[test]
    fn a_response_is_asked_for_once_the_one_under_way_is_done() {
        let mut e = engine();
        let feed = |e: &mut OpenAiEngine, v: Value| {
            let mut out = Outbox::new();
            e.on_message(&v.to_string(), &mut Vec::new(), &mut out)
                .unwrap();
            out.texts()
        };
        let creates = |out: &[String]| {
            out.iter()
                .filter(|t| t.contains(r#""type":"response.create""#))
                .count()
        };
        feed(&mut e, json!({"type": "session.updated", "session": {}}));
        feed(&mut e, json!({"type": "response.created"}));
        feed(
            &mut e,
            json!({"type": "response.function_call_arguments.done", "call_id": "call_9", "name": "transfer_to_user", "arguments": "{\"user\":\"bob\"}"}),
        );
        let mut out = Outbox::new();
        e.on_command(
            Command::ToolResult {
                call_id: "call_9".into(),
                name: "transfer_to_user".into(),
                output: json!({"ok": false}),
            },
            &mut out,
        )
        .unwrap();
        let out = out.texts();
        assert!(out[0].contains("function_call_output"), "{out:?}");
        assert_eq!(creates(&out), 0, "the response is still under way");
        let out = feed(&mut e, json!({"type": "response.done", "response": {}}));
        assert_eq!(creates(&out), 1, "{out:?}");
        // Ours crosses one the server began: refused, asked again after.
        let out = feed(
            &mut e,
            json!({"type": "error", "error": {"type": "invalid_request_error", "code": "conversation_already_has_active_response", "message": "busy"}}),
        );
        assert_eq!(creates(&out), 0);
        let out = feed(&mut e, json!({"type": "response.done", "response": {}}));
        assert_eq!(creates(&out), 1);
        // With none under way, at once.
        let mut out = Outbox::new();
        e.on_command(Command::Text("hello".into()), &mut out)
            .unwrap();
        assert_eq!(creates(&out.texts()), 1);
    }

    /// A function call's arguments may come without its name, which the
    /// output item that opened it had; a response that failed or stopped
    /// short is reported, with the vendor's reason.
    #[test]
    fn a_nameless_call_takes_its_items_name_and_a_failed_response_is_said() {
        let mut e = engine();
        let mut feed = |v: Value| {
            let mut ev = Vec::new();
            e.on_message(&v.to_string(), &mut ev, &mut Outbox::new())
                .map(|_| ev)
        };
        feed(json!({"type": "response.created", "response": {"id": "r1"}})).unwrap();
        feed(json!({"type": "response.output_item.added", "item": {"id": "fc_1", "type": "function_call", "call_id": "call_3", "name": "transfer_to_user", "arguments": ""}})).unwrap();
        let ev = feed(json!({"type": "response.function_call_arguments.done", "item_id": "fc_1", "call_id": "call_3", "arguments": "{\"user\":\"alex\"}"})).unwrap();
        assert_eq!(
            ev,
            [EngineEvent::ToolCall {
                call_id: "call_3".into(),
                name: "transfer_to_user".into(),
                args: json!({"user": "alex"})
            }]
        );
        // Unknown call and no name: a protocol error, as before.
        assert!(feed(json!({"type": "response.function_call_arguments.done", "call_id": "call_4", "arguments": "{}"})).is_err());
        let ev = feed(json!({"type": "response.done", "response": {"status": "failed",
            "status_details": {"type": "failed", "error": {"type": "server_error", "code": "rate_limit_exceeded", "message": "Too many requests"}}}})).unwrap();
        assert_eq!(
            ev,
            [EngineEvent::Error {
                code: Some("response_failed".into()),
                message: "rate_limit_exceeded: Too many requests".into()
            }]
        );
        let ev = feed(
            json!({"type": "response.done", "response": {"status": "incomplete",
            "status_details": {"type": "incomplete", "reason": "max_output_tokens"}}}),
        )
        .unwrap();
        assert_eq!(
            ev,
            [EngineEvent::Error {
                code: Some("response_incomplete".into()),
                message: "max_output_tokens".into()
            }]
        );
        let ev = feed(
            json!({"type": "response.done", "response": {"status": "cancelled",
            "status_details": {"type": "cancelled", "reason": "turn_detected"}}}),
        )
        .unwrap();
        assert!(ev.is_empty(), "a barge-in's cancel is no error: {ev:?}");
    }

    #[test]
    fn audio_deltas_read_alike_whichever_way_they_are_read() {
        let g711 = [0xd5u8, 0x55, 0x2a, 0xff, 0x00, 0x7f];
        let data = B64.encode(g711);
        let audio = |text: &str| {
            let mut e = engine();
            let mut ev = Vec::new();
            let r = e.on_message(text, &mut ev, &mut Outbox::new());
            (r.map(|_| ev), e.last_audio_item)
        };
        let want = vec![EngineEvent::Audio {
            data: Bytes::copy_from_slice(&g711),
            format: AudioFormat::PCMA,
        }];
        for msg in [
            json!({"type": "response.output_audio.delta", "event_id": "e1", "response_id": "r", "item_id": "item_7", "output_index": 0, "content_index": 0, "delta": data}),
            json!({"type": "response.audio.delta", "item_id": "item_7", "delta": data}),
            // An odd field type: read as a tree, to the same effect.
            json!({"type": "response.output_audio.delta", "item_id": "item_7", "delta": data, "output_index": "zero"}),
        ] {
            let (ev, item) = audio(&msg.to_string());
            assert_eq!(ev.unwrap(), want, "{msg}");
            assert_eq!(item.as_deref(), Some("item_7"));
        }
        // A JSON escape inside the base64.
        let text = format!(
            r#"{{"type":"response.output_audio.delta","item_id":"item_7","delta":"{}"}}"#,
            data.replace('/', "\\/")
        );
        assert_eq!(audio(&text).0.unwrap(), want);
        // A delta that is not a string reads as empty audio, as before.
        let (ev, _) = audio(r#"{"type":"response.output_audio.delta","delta":5}"#);
        assert!(matches!(&ev.unwrap()[..], [EngineEvent::Audio { data, .. }] if data.is_empty()));
        assert!(
            audio(r#"{"type":"response.output_audio.delta","delta":"***"}"#)
                .0
                .is_err()
        );
    }

    #[test]
    fn a_bad_key_is_a_rejection_with_the_vendor_code() {
        let mut e = engine();
        let mut ev = Vec::new();
        e.on_message(
            r#"{"type":"error","error":{"type":"invalid_request_error","code":"invalid_api_key","message":"Incorrect API key provided"}}"#,
            &mut ev,
            &mut Outbox::new(),
        )
        .unwrap();
        let step = e.on_close(Some(3000), "invalid_request_error.invalid_api_key", &mut ev);
        let Step::Close {
            error: Some(EngineError::Rejected { code, kind, .. }),
            ..
        } = step
        else {
            panic!()
        };
        assert_eq!((code, kind.as_deref()), (3000, Some("invalid_api_key")));
    }
}
